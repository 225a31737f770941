{{/* Names, labels and computed settings shared by every template. */}}

{{/* Chart name, overridable. */}}
{{- define "mnist.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name "<release>-<chart>", or the release name when it already contains the chart name; 63 chars max
     because it becomes DNS labels. */}}
{{- define "mnist.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* "name-version" for the helm.sh/chart label. */}}
{{- define "mnist.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object; pass (dict "ctx" $ "component" "api"). */}}
{{- define "mnist.labels" -}}
helm.sh/chart: {{ include "mnist.chart" .ctx }}
{{ include "mnist.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/part-of: {{ .ctx.Values.partOf }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
{{- with .ctx.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* The immutable subset used in selectors; pass (dict "ctx" $ "component" "api"). */}}
{{- define "mnist.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mnist.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* Annotations on every object (commonAnnotations), as a block to nest under metadata.annotations. */}}
{{- define "mnist.annotations" -}}
{{- with .Values.commonAnnotations }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Service image reference: digest wins over tag, tag defaults to appVersion. */}}
{{- define "mnist.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{- define "mnist.trainerImage" -}}
{{- printf "%s:%s" .Values.retrain.image.repository (default .Chart.AppVersion .Values.retrain.image.tag) }}
{{- end }}

{{- define "mnist.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "mnist.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Label that lets a pod through the Cassandra NetworkPolicy. */}}
{{- define "mnist.cassandraClientLabel" -}}
{{ include "mnist.fullname" . }}-cassandra-client: "true"
{{- end }}

{{/* Cassandra object names: the client Service, and the headless Service that gives pods stable DNS for seeds. */}}
{{- define "mnist.cassandra.fullname" -}}
{{- printf "%s-cassandra" (include "mnist.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "mnist.cassandra.headless" -}}
{{- printf "%s-cassandra-headless" (include "mnist.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Comma-separated seed addresses: the first seedCount pods by their stable headless DNS names. */}}
{{- define "mnist.cassandra.seeds" -}}
{{- $fullname := include "mnist.cassandra.fullname" . }}
{{- $headless := include "mnist.cassandra.headless" . }}
{{- $seeds := list }}
{{- range $i := until (int (min .Values.cassandra.seedCount .Values.cassandra.replicaCount)) }}
{{- $seeds = append $seeds (printf "%s-%d.%s.%s.svc.%s" $fullname $i $headless $.Release.Namespace $.Values.clusterDomain) }}
{{- end }}
{{- join "," $seeds }}
{{- end }}

{{/* Cassandra contact points, port and local datacenter, from the in-chart StatefulSet or externalCassandra. */}}
{{- define "mnist.cassandra.hosts" -}}
{{- if .Values.cassandra.enabled }}
{{- include "mnist.cassandra.fullname" . }}
{{- else }}
{{- join "," .Values.externalCassandra.hosts }}{{/* mnist.validateValues fails the render when empty */}}
{{- end }}
{{- end }}

{{- define "mnist.cassandra.port" -}}
{{- if .Values.cassandra.enabled }}9042{{ else }}{{ .Values.externalCassandra.port }}{{ end }}
{{- end }}

{{- define "mnist.cassandra.datacenter" -}}
{{- if .Values.cassandra.enabled }}{{ .Values.cassandra.datacenter }}{{ else }}{{ .Values.externalCassandra.datacenter }}{{ end }}
{{- end }}

{{/* MNIST_STORE_URL: cassandra://host1,host2:port/keyspace?dc=..&consistency=..&replication=.. (credentials come
     from the Secret). The replication is the Job's too: a service pod that reaches Cassandra before the
     keyspace-init Job creates the same keyspace. */}}
{{- define "mnist.storeUrl" -}}
{{- printf "cassandra://%s:%s/%s?dc=%s&consistency=%s&replication=%s" (include "mnist.cassandra.hosts" .) (include "mnist.cassandra.port" .) .Values.store.keyspace (include "mnist.cassandra.datacenter" .) .Values.store.consistency (include "mnist.replication" .) }}
{{- end }}

{{/* Keyspace replication in `mnist db init --replication` form, "dc1:3,dc2:3": store.replication, else the local
     DC with min(nodes, 3) replicas. */}}
{{- define "mnist.replication" -}}
{{- $replication := include "mnist.replicationMap" . | fromJson }}
{{- $parts := list }}
{{- range $dc := keys $replication | sortAlpha }}
{{- $parts = append $parts (printf "%s:%v" $dc (get $replication $dc)) }}
{{- end }}
{{- join "," $parts }}
{{- end }}

{{/* Name of the Secret with Cassandra credentials, or "" when there are none. */}}
{{- define "mnist.secretName" -}}
{{- if .Values.auth.existingSecret }}
{{- .Values.auth.existingSecret }}
{{- else if .Values.auth.username }}
{{- include "mnist.fullname" . }}
{{- end }}
{{- end }}

{{/* Name of the Secret with the admin token of the model repository routes, or "" when they are off. */}}
{{- define "mnist.adminSecretName" -}}
{{- with .Values.models.admin }}
{{- if .existingSecret }}
{{- .existingSecret }}
{{- else if or .token .generate }}
{{- printf "%s-admin" (include "mnist.fullname" $) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* MNIST_ADMIN_TOKEN from that Secret: the service pods only (no Job needs the repository routes). */}}
{{- define "mnist.adminEnv" -}}
{{- with include "mnist.adminSecretName" . }}
- name: MNIST_ADMIN_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $.Values.models.admin.tokenKey }}
{{- end }}
{{- end }}

{{/* Environment shared by the service and the keyspace-init Job: settings from the ConfigMap, credentials from
     the Secret. */}}
{{- define "mnist.env" -}}
{{- with .Values.tracing }}
{{- if .otlpEndpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ .otlpEndpoint | quote }}
- name: OTEL_EXPORTER_OTLP_INSECURE
  value: {{ .insecure | quote }}
- name: OTEL_SERVICE_NAME
  value: {{ .serviceName | quote }}
- name: OTEL_TRACES_SAMPLER
  value: {{ .sampler | quote }}
- name: OTEL_TRACES_SAMPLER_ARG
  value: {{ .samplerArg | quote }}
{{- end }}
{{- end }}
{{- $secret := include "mnist.secretName" . }}
{{- if $secret }}
- name: MNIST_CASSANDRA_USERNAME
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ .Values.auth.usernameKey }}
- name: MNIST_CASSANDRA_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ .Values.auth.passwordKey }}
{{- end }}
{{- with .Values.auth.tls }}
{{- if and .enabled .keyPasswordKey }}
- name: MNIST_CASSANDRA_TLS_KEY_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .existingSecret }}
      key: {{ .keyPasswordKey }}
{{- end }}
{{- end }}
{{- end }}

{{/* Where the service and the keyspace-init Job find auth.tls.existingSecret's files (MNIST_CASSANDRA_TLS_*). */}}
{{- define "mnist.cassandraTlsDir" -}}
/etc/mnist/cassandra-tls
{{- end }}

{{- define "mnist.cassandraTlsVolumeMount" -}}
{{- if .Values.auth.tls.enabled }}
- name: cassandra-tls
  mountPath: {{ include "mnist.cassandraTlsDir" . }}
  readOnly: true
{{- end }}
{{- end }}

{{/* 0440 with the pod's fsGroup: the service user reads the key, nobody else in the pod can. */}}
{{- define "mnist.cassandraTlsVolume" -}}
{{- if .Values.auth.tls.enabled }}
- name: cassandra-tls
  secret:
    secretName: {{ .Values.auth.tls.existingSecret }}
    defaultMode: 0440
{{- end }}
{{- end }}

{{/* Where the model claim is mounted (MNIST_MODEL_DIR when models.persistence is on), and its name. */}}
{{- define "mnist.modelsPath" -}}
/var/lib/mnist-models
{{- end }}

{{- define "mnist.modelsClaim" -}}
{{- default (printf "%s-models" (include "mnist.fullname" .)) .Values.models.persistence.existingClaim }}
{{- end }}

{{/* Seconds the kubelet waits after SIGTERM: the preStop sleep, gunicorn's graceful timeout, and a margin for
     the final write-queue drain and process exit. */}}
{{- define "mnist.terminationGracePeriodSeconds" -}}
{{- add .Values.preStopSleepSeconds .Values.config.gracefulTimeoutSeconds .Values.config.spoolDrainSeconds 10 }}
{{- end }}

{{/* ---------------------------------------------------------------------------------------------------------
     Values validation (Bitnami style). values.schema.json checks each value on its own; these checks catch
     values that contradict each other. Each mnist.validateValues.* helper prints its messages, one a line,
     or nothing; mnist.validateValues, included at the end of NOTES.txt, fails the render with all of them at
     once, so a user fixes every contradiction in one round.
     --------------------------------------------------------------------------------------------------------- */}}
{{- define "mnist.validateValues" -}}
{{- $checks := list
  "externalCassandra" "autoscaling.range" "autoscaling.replicaCount" "podDisruptionBudget" "updateStrategy"
  "replication.inChart" "replication.localDatacenter" "consistency" "auth.existingSecret" "auth.pair" "auth.tls"
  "keyspaceInit" "spool" "cassandra.heap" "serviceMonitor" "ingress" "service.nodePort" "networkPolicy"
  "retrain.persistence" "models.admin" }}
{{- $messages := list }}
{{- range $check := $checks }}
{{- range $line := include (printf "mnist.validateValues.%s" $check) $ | splitList "\n" }}
{{- $messages = append $messages (trim $line) }}
{{- end }}
{{- end }}
{{- $messages = without $messages "" }}
{{- if $messages }}
{{- printf "\n\nVALUES VALIDATION: %d setting(s) contradict the rest of the values:\n- %s" (len $messages) (join "\n- " $messages) | fail }}
{{- end }}
{{- end }}

{{/* Bytes of a Kubernetes quantity ("512Mi", "1G", 268435456); "" when the form is not recognised. */}}
{{- define "mnist.quantityBytes" -}}
{{- $factors := dict "" 1 "k" 1e3 "M" 1e6 "G" 1e9 "T" 1e12 "Ki" 1024 "Mi" 1048576 "Gi" 1073741824 "Ti" 1099511627776 }}
{{- $text := toString . }}
{{- if not (kindIs "string" .) }}{{ $text = printf "%.0f" (float64 .) }}{{ end }}
{{- if regexMatch "^[0-9]+(\\.[0-9]+)?[A-Za-z]*$" $text }}
{{- $number := regexFind "^[0-9]+(\\.[0-9]+)?" $text }}
{{- $unit := trimPrefix $number $text }}
{{- if hasKey $factors $unit }}{{ printf "%.0f" (mulf $number (get $factors $unit)) }}{{ end }}
{{- end }}
{{- end }}

{{/* Bytes of a JVM size (-Xmx form: "1024M", "4G"; the JVM's units are binary). */}}
{{- define "mnist.jvmBytes" -}}
{{- $factors := dict "" 1 "k" 1024 "K" 1024 "m" 1048576 "M" 1048576 "g" 1073741824 "G" 1073741824 }}
{{- if regexMatch "^[0-9]+[kKmMgG]?$" (toString .) }}
{{- $number := regexFind "^[0-9]+" (toString .) }}
{{- printf "%.0f" (mulf $number (get $factors (trimPrefix $number (toString .)))) }}
{{- end }}
{{- end }}

{{/* Milliseconds of a Prometheus duration ("15s", "1m", "500ms"); "" for other forms. */}}
{{- define "mnist.durationMs" -}}
{{- $factors := dict "ms" 1 "s" 1000 "m" 60000 "h" 3600000 }}
{{- if regexMatch "^[0-9]+(ms|s|m|h)$" (toString .) }}
{{- $number := regexFind "^[0-9]+" (toString .) }}
{{- printf "%.0f" (mulf $number (get $factors (trimPrefix $number (toString .)))) }}
{{- end }}
{{- end }}

{{/* The keyspace replication the chart uses, {datacenter: replicas}, as JSON (numbers become floats). */}}
{{- define "mnist.replicationMap" -}}
{{- $replication := .Values.store.replication }}
{{- if not $replication }}
{{- if .Values.cassandra.enabled }}
{{- $replication = dict .Values.cassandra.datacenter (min (int .Values.cassandra.replicaCount) 3) }}
{{- else }}
{{- $replication = dict .Values.externalCassandra.datacenter 3 }}
{{- end }}
{{- end }}
{{- toJson $replication }}
{{- end }}

{{- define "mnist.validateValues.externalCassandra" -}}
{{- if and (not .Values.cassandra.enabled) (empty .Values.externalCassandra.hosts) }}
externalCassandra.hosts: cassandra.enabled=false deploys no Cassandra, so the service needs the contact points of an existing cluster (--set 'externalCassandra.hosts={cassandra-0.db,cassandra-1.db}'), or keep cassandra.enabled=true.
{{- end }}
{{- end }}

{{- define "mnist.validateValues.autoscaling.range" -}}
{{- $hpa := .Values.autoscaling }}
{{- if and $hpa.enabled (gt (int $hpa.minReplicas) (int $hpa.maxReplicas)) }}
autoscaling.minReplicas ({{ $hpa.minReplicas }}) is above autoscaling.maxReplicas ({{ $hpa.maxReplicas }}): the HorizontalPodAutoscaler has no pod count to choose; raise maxReplicas or lower minReplicas.
{{- end }}
{{- end }}

{{- define "mnist.validateValues.autoscaling.replicaCount" -}}
{{- $hpa := .Values.autoscaling }}
{{- if and $hpa.enabled (gt (int .Values.replicaCount) (int $hpa.maxReplicas)) }}
replicaCount ({{ .Values.replicaCount }}) is above autoscaling.maxReplicas ({{ $hpa.maxReplicas }}): with the HPA on, replicaCount is ignored and the HPA keeps at most maxReplicas pods; lower replicaCount or raise maxReplicas.
{{- end }}
{{- end }}

{{- define "mnist.validateValues.podDisruptionBudget" -}}
{{- $pdb := .Values.podDisruptionBudget }}
{{- if and $pdb.enabled (has (toString $pdb.maxUnavailable) (list "0" "0%")) }}
podDisruptionBudget.maxUnavailable is {{ $pdb.maxUnavailable }}: the budget then requires every service pod to stay up (minAvailable = replicas), so no pod can ever be evicted and every node drain blocks; use 1 or more, or podDisruptionBudget.enabled=false.
{{- end }}
{{- end }}

{{- define "mnist.validateValues.updateStrategy" -}}
{{- $rolling := .Values.updateStrategy.rollingUpdate | default dict }}
{{- if and (eq (toString .Values.updateStrategy.type) "RollingUpdate") (hasKey $rolling "maxSurge") (hasKey $rolling "maxUnavailable") }}
{{- if and (has (toString $rolling.maxSurge) (list "0" "0%")) (has (toString $rolling.maxUnavailable) (list "0" "0%")) }}
updateStrategy.rollingUpdate: maxSurge and maxUnavailable are both 0, so a rollout could neither add nor remove a pod (Kubernetes rejects the Deployment); set maxSurge to 1.
{{- end }}
{{- end }}
{{- end }}

{{/* The in-chart Cassandra is one datacenter of cassandra.replicaCount nodes. */}}
{{- define "mnist.validateValues.replication.inChart" -}}
{{- if .Values.cassandra.enabled }}
{{- $nodes := int .Values.cassandra.replicaCount }}
{{- range $dc, $replicas := .Values.store.replication }}
{{- if ne $dc $.Values.cassandra.datacenter }}
store.replication.{{ $dc }}: the in-chart Cassandra has the one datacenter cassandra.datacenter={{ $.Values.cassandra.datacenter }}, so replicas in "{{ $dc }}" can never be placed; name that datacenter instead.
{{ else if gt (int $replicas) $nodes }}
store.replication.{{ $dc }} ({{ $replicas }}) is above cassandra.replicaCount ({{ $nodes }}): Cassandra cannot place more replicas than nodes, so QUORUM reads and writes fail; lower the replication or add nodes.
{{ end }}
{{- end }}
{{- end }}
{{- end }}

{{/* The driver routes to externalCassandra.datacenter; LOCAL_* consistency needs replicas there. */}}
{{- define "mnist.validateValues.replication.localDatacenter" -}}
{{- $local := .Values.externalCassandra.datacenter }}
{{- if and (not .Values.cassandra.enabled) .Values.store.replication (not (hasKey .Values.store.replication $local)) }}
store.replication ({{ include "mnist.replication" . }}) places no replicas in externalCassandra.datacenter={{ $local }}, the datacenter the service reads and writes through, so LOCAL_QUORUM and LOCAL_ONE requests fail; add {{ $local }} to store.replication or fix externalCassandra.datacenter.
{{- end }}
{{- end }}

{{/* ONE/TWO/THREE count replicas across the whole cluster. */}}
{{- define "mnist.validateValues.consistency" -}}
{{- $needed := get (dict "TWO" 2 "THREE" 3) .Values.store.consistency }}
{{- if $needed }}
{{- $total := 0 }}
{{- range $dc, $replicas := include "mnist.replicationMap" . | fromJson }}
{{- $total = add $total (int $replicas) }}
{{- end }}
{{- if lt (int $total) (int $needed) }}
store.consistency={{ .Values.store.consistency }} needs {{ $needed }} replicas of every row, but the keyspace replication ({{ include "mnist.replication" . }}) keeps {{ $total }}, so every read and write fails; raise store.replication (or cassandra.replicaCount) or lower the consistency.
{{- end }}
{{- end }}
{{- end }}

{{- define "mnist.validateValues.models.admin" -}}
{{- with .Values.models.admin }}
{{- if and .existingSecret (or .token .generate) }}
models.admin.existingSecret and models.admin.token/generate are both set: the token then comes from Secret "{{ .existingSecret }}" and the other would be silently ignored; set only one of them.
{{- end }}
{{- end }}
{{- end }}

{{- define "mnist.validateValues.auth.existingSecret" -}}
{{- $auth := .Values.auth }}
{{- if and $auth.existingSecret (or $auth.username $auth.password) }}
auth.username/auth.password and auth.existingSecret are both set: the credentials then come from Secret "{{ $auth.existingSecret }}" and the given ones would be silently ignored; set only one of them.
{{- end }}
{{- end }}

{{- define "mnist.validateValues.auth.tls" -}}
{{- with .Values.auth.tls }}
{{- if and .enabled (not .existingSecret) }}
auth.tls.existingSecret is empty while auth.tls.enabled is true: name the Secret with the CA bundle (and the client certificate and key).
{{- end }}
{{- if ne (empty .certKey) (empty .keyKey) }}
auth.tls.certKey and auth.tls.keyKey must both be set (mutual TLS) or both be empty (TLS without a client certificate).
{{- end }}
{{- if and .keyPasswordKey (not .keyKey) }}
auth.tls.keyPasswordKey is set without auth.tls.keyKey: a passphrase needs the key it unlocks.
{{- end }}
{{- end }}
{{- end }}

{{- define "mnist.validateValues.auth.pair" -}}
{{- $auth := .Values.auth }}
{{- if and (not $auth.existingSecret) (ne (empty $auth.username) (empty $auth.password)) }}
{{- if $auth.username }}
auth.password is empty while auth.username is set: Cassandra authentication needs both; set auth.password (or auth.existingSecret).
{{- else }}
auth.username is empty while auth.password is set: without a user name the chart creates no credentials at all; set auth.username too.
{{- end }}
{{- end }}
{{- end }}

{{- define "mnist.validateValues.keyspaceInit" -}}
{{- $job := .Values.keyspaceInit }}
{{- if and $job.enabled (ge (int $job.waitSeconds) (int $job.activeDeadlineSeconds)) }}
keyspaceInit.waitSeconds ({{ $job.waitSeconds }}) is not below keyspaceInit.activeDeadlineSeconds ({{ $job.activeDeadlineSeconds }}): Kubernetes would kill the Job before `mnist db init` can report that Cassandra never answered; lower waitSeconds or raise activeDeadlineSeconds.
{{- end }}
{{- end }}

{{- define "mnist.validateValues.spool" -}}
{{- $limit := include "mnist.quantityBytes" .Values.volumes.spoolSizeLimit }}
{{- if and $limit (le (float64 $limit) (float64 .Values.config.spoolMaxBytes)) }}
volumes.spoolSizeLimit ({{ .Values.volumes.spoolSizeLimit }}) is not above config.spoolMaxBytes ({{ .Values.config.spoolMaxBytes | int64 }} bytes): a spool filled during a Cassandra outage would outgrow its emptyDir and the kubelet would evict the pod; keep the volume larger than the spool.
{{- end }}
{{- end }}

{{- define "mnist.validateValues.cassandra.heap" -}}
{{- if .Values.cassandra.enabled }}
{{- $jvm := .Values.cassandra.jvm }}
{{- $heap := include "mnist.jvmBytes" $jvm.maxHeapSize }}
{{- $young := include "mnist.jvmBytes" $jvm.heapNewSize }}
{{- $limit := include "mnist.quantityBytes" (dig "limits" "memory" "" .Values.cassandra.resources) }}
{{- if and $heap $limit (ge (float64 $heap) (float64 $limit)) }}
cassandra.jvm.maxHeapSize ({{ $jvm.maxHeapSize }}) is not below cassandra.resources.limits.memory ({{ .Values.cassandra.resources.limits.memory }}): the heap alone fills the container's memory limit, so Cassandra is OOM-killed under load; keep the heap at most half of the limit.
{{ end }}
{{- if and $heap $young (ge (float64 $young) (float64 $heap)) }}
cassandra.jvm.heapNewSize ({{ $jvm.heapNewSize }}) is not below cassandra.jvm.maxHeapSize ({{ $jvm.maxHeapSize }}): the young generation is part of the heap; the JVM refuses to start.
{{ end }}
{{- end }}
{{- end }}

{{- define "mnist.validateValues.serviceMonitor" -}}
{{- $monitor := .Values.metrics.serviceMonitor }}
{{- $interval := include "mnist.durationMs" $monitor.interval }}
{{- $timeout := include "mnist.durationMs" $monitor.scrapeTimeout }}
{{- if and $monitor.enabled $interval $timeout (gt (float64 $timeout) (float64 $interval)) }}
metrics.serviceMonitor.scrapeTimeout ({{ $monitor.scrapeTimeout }}) is above metrics.serviceMonitor.interval ({{ $monitor.interval }}): Prometheus rejects a scrape config whose timeout exceeds its interval; lower the timeout.
{{- end }}
{{- end }}

{{- define "mnist.validateValues.ingress" -}}
{{- if and .Values.ingress.enabled (empty .Values.ingress.hosts) }}
ingress.hosts is empty while ingress.enabled is true: an Ingress without rules or a default backend is rejected by Kubernetes; list at least one host.
{{- end }}
{{- end }}

{{- define "mnist.validateValues.service.nodePort" -}}
{{- if and .Values.service.nodePort (eq .Values.service.type "ClusterIP") }}
service.nodePort ({{ .Values.service.nodePort }}) is set but service.type is ClusterIP, which opens no node port, so the value would be silently ignored; add --set service.type=NodePort.
{{- end }}
{{- end }}

{{- define "mnist.validateValues.networkPolicy" -}}
{{- $policy := .Values.networkPolicy }}
{{- if and $policy.enabled (not $policy.allowExternal) .Values.ingress.enabled (empty $policy.extraIngressFrom) }}
networkPolicy.allowExternal=false with ingress.enabled=true but no networkPolicy.extraIngressFrom: the NetworkPolicy would block the Ingress controller from the service port; add the controller's namespaceSelector to extraIngressFrom.
{{- end }}
{{- end }}

{{- define "mnist.validateValues.retrain.persistence" -}}
{{- if and .Values.retrain.enabled (not .Values.models.persistence.enabled) }}
retrain.enabled is true but models.persistence.enabled is false: the retraining Job writes the new version onto the models claim the service reads; enable models.persistence (or turn retrain off).
{{- end }}
{{- end }}
