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
{{- required "externalCassandra.hosts is required when cassandra.enabled is false" (join "," .Values.externalCassandra.hosts) }}
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
{{- $replication := .Values.store.replication }}
{{- if not $replication }}
{{- if .Values.cassandra.enabled }}
{{- $replication = dict .Values.cassandra.datacenter (min (int .Values.cassandra.replicaCount) 3) }}
{{- else }}
{{- $replication = dict .Values.externalCassandra.datacenter 3 }}
{{- end }}
{{- end }}
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
{{- end }}

{{/* Seconds the kubelet waits after SIGTERM: the preStop sleep, gunicorn's graceful timeout, and a margin for
     the final write-queue drain and process exit. */}}
{{- define "mnist.terminationGracePeriodSeconds" -}}
{{- add .Values.preStopSleepSeconds .Values.config.gracefulTimeoutSeconds 10 }}
{{- end }}
