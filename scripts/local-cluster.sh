#!/usr/bin/env bash
# A real single-node Kubernetes on this machine, for the e2e tests (make cluster-up / cluster-down, make test-k8s):
# etcd, kube-apiserver, controller-manager, scheduler, kubelet and kube-proxy run as host processes; pods run in
# Debian's containerd on a bridge of their own; CoreDNS and metrics-server run as pods. Nothing is pulled: the
# binaries are built from the Go module proxy (scripts/cluster/build.sh) and the images with podman.
#
#   local-cluster.sh build          build or reuse the pinned binaries (cached outside the repo)
#   local-cluster.sh up             start (or finish starting) the cluster; kubeconfig in var/kubeconfig
#   local-cluster.sh load IMAGE...  copy podman images into the cluster's containerd (skipped when unchanged)
#   local-cluster.sh status         what runs, node and pods, the containment guard's counters
#   local-cluster.sh down           stop everything and leave the host as it was found
#
# Containment: the guard chain (GUARD_CHAIN in scripts/cluster/config.sh) rejects and counts any packet from or to
# the pod range, and any Service address kube-proxy did not translate, that would leave through an interface other
# than the cluster bridge or lo. The e2e suite asserts its counters stay 0.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cluster_dir="$repo/scripts/cluster"
# shellcheck source=scripts/cluster/config.sh
source "$cluster_dir/config.sh"

KUBECONFIG_OUT="$repo/var/kubeconfig"
LOG_DIR="$STATE_DIR/logs"
PID_DIR="$RUN_DIR/pids"
CONTAINERD_SOCK="$RUN_DIR/containerd/containerd.sock"
KUBELET_ROOT="$STATE_DIR/kubelet"
SYSCTLS=(net.ipv4.ip_forward net.bridge.bridge-nf-call-iptables net.ipv4.conf.all.route_localnet)
started_at=$SECONDS

log() { printf '[cluster %4ds] %s\n' "$((SECONDS - started_at))" "$*"; }
die() { echo "local-cluster: $*" >&2; exit 1; }
kubectl() { "$K8S_BIN/kubectl" --kubeconfig "$STATE_DIR/admin.kubeconfig" "$@"; }
ctr() { command ctr --address "$CONTAINERD_SOCK" --namespace k8s.io "$@"; }

# wait_for <what> <timeout s> <command...>: polls every second, printing progress every 10 s.
wait_for() {
  local what="$1" timeout="$2" since=$SECONDS
  shift 2
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS - since >= timeout)); then
      die "$what not ready after ${timeout}s (logs: $LOG_DIR)"
    fi
    if (((SECONDS - since) % 10 == 9)); then log "waiting for $what ($((SECONDS - since + 1))s)"; fi
    sleep 1
  done
  log "$what ready in $((SECONDS - since))s"
}

# ---------------------------------------------------------------------------------------------------- host checks
need_root() { ((EUID == 0)) || die "must run as root (it starts containerd, the kubelet and iptables rules)"; }

install_packages() {
  local packages=(containerd runc containernetworking-plugins conntrack socat iptables openssl) missing=() pkg
  for pkg in "${packages[@]}"; do
    [[ "$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null)" == *"install ok installed"* ]] || missing+=("$pkg")
  done
  ((${#missing[@]} == 0)) && return
  log "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# The cluster's ranges must not overlap any network the host routes already (the default route aside).
check_ranges() {
  python3 "$cluster_dir/check_ranges.py" "$BRIDGE" "$NODE_IP/32" "$POD_CIDR" "$SERVICE_CIDR" ||
    die "the cluster's address ranges overlap host routes: change them in scripts/cluster/config.sh"
}

# --------------------------------------------------------------------------------------------------------- daemons
pid_of() { [[ -f "$PID_DIR/$1.pid" ]] && cat "$PID_DIR/$1.pid"; }
running() {
  local pid
  pid="$(pid_of "$1")" || return 1
  [[ -n "$pid" && -d "/proc/$pid" && "$(tr '\0' ' ' <"/proc/$pid/cmdline")" == *"$2"* ]]
}

# daemon <name> <binary> <args...>: starts it detached, logging to $LOG_DIR/<name>.log, unless it already runs.
daemon() {
  local name="$1" binary="$2"
  shift 2
  if running "$name" "$binary"; then
    log "$name already running (pid $(pid_of "$name"))"
    return
  fi
  setsid "$binary" "$@" >>"$LOG_DIR/$name.log" 2>&1 </dev/null &
  echo $! >"$PID_DIR/$name.pid"
  log "$name started (pid $!)"
}

stop_daemon() {
  local name="$1" pid
  pid="$(pid_of "$name")" || return 0
  if [[ -n "$pid" && -d "/proc/$pid" ]]; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 30); do [[ -d "/proc/$pid" ]] || break; sleep 0.5; done
    [[ -d "/proc/$pid" ]] && kill -KILL "$pid" 2>/dev/null
    log "$name stopped"
  fi
  rm -f "$PID_DIR/$name.pid"
}

# ------------------------------------------------------------------------------------------------------- host setup
save_sysctls() {
  [[ -f "$STATE_DIR/sysctls.saved" ]] && return
  local key
  for key in "${SYSCTLS[@]}"; do echo "$key=$(sysctl -n "$key")"; done >"$STATE_DIR/sysctls.saved"
  for dir in /var/lib/kubelet /var/log/pods /var/log/containers /tmp/hostpath_pv /var/lib/cni; do
    [[ -e "$dir" ]] && echo "$dir"
  done >"$STATE_DIR/dirs-before" || true
}

setup_network() {
  [[ -e /proc/sys/net/bridge ]] || modprobe br_netfilter 2>/dev/null || true
  sysctl -qw net.ipv4.ip_forward=1 net.bridge.bridge-nf-call-iptables=1
  [[ "$(ip addr show dev lo)" == *"inet $NODE_IP/32"* ]] || ip addr add "$NODE_IP/32" dev lo
  # The bridge exists before the first pod (the CNI plugin adopts it), so the Service range can be routed onto
  # it: a Service address kube-proxy does not translate (a Service without endpoints, which kube-proxy itself
  # rejects) then stays on the bridge instead of following the default route off the machine.
  if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
    ip link add "$BRIDGE" type bridge
    ip addr add "$POD_GATEWAY/${POD_CIDR#*/}" dev "$BRIDGE"
  fi
  ip link set "$BRIDGE" up
  ip route replace "$SERVICE_CIDR" dev "$BRIDGE" src "$POD_GATEWAY"
  install_guard
}

# The containment guard, in two places, because a packet's final interface is known in different hooks: the
# filter table's FORWARD (pod traffic the host routes; REJECT, so a pod fails at once) and the mangle table's
# POSTROUTING (everything, including the host's own packets, whose interface OUTPUT still shows as the one
# before kube-proxy's DNAT re-routed them; only DROP is allowed there). Both are first in their chain.
guard_rules() { # guard_rules <table> <target>
  local table="$1" target="$2"
  iptables -w -t "$table" -N "$GUARD_CHAIN" 2>/dev/null || true
  iptables -w -t "$table" -F "$GUARD_CHAIN"
  iptables -w -t "$table" -A "$GUARD_CHAIN" -o "$BRIDGE" -j RETURN
  iptables -w -t "$table" -A "$GUARD_CHAIN" -o lo -j RETURN
  # What a stopped packet was, in the kernel log (dmesg | grep mnist-guard), before the rules below count it.
  local range
  for range in "-s $POD_CIDR" "-d $POD_CIDR" "-d $SERVICE_CIDR" "-s $NODE_IP"; do
    # shellcheck disable=SC2086
    iptables -w -t "$table" -A "$GUARD_CHAIN" $range -m limit --limit 20/min -j LOG --log-prefix "mnist-guard $table: "
  done
  iptables -w -t "$table" -A "$GUARD_CHAIN" -s "$POD_CIDR" -j "$target" -m comment --comment "pod traffic leaving"
  iptables -w -t "$table" -A "$GUARD_CHAIN" -d "$POD_CIDR" -j "$target" -m comment --comment "pod range off the bridge"
  iptables -w -t "$table" -A "$GUARD_CHAIN" -d "$SERVICE_CIDR" -j "$target" -m comment --comment "untranslated Service"
  iptables -w -t "$table" -A "$GUARD_CHAIN" -s "$NODE_IP" -j "$target" -m comment --comment "node address leaving"
}

install_guard() {
  guard_rules filter REJECT
  guard_rules mangle DROP
  ensure_guard_first
}

GUARD_HOOKS=("filter FORWARD" "mangle POSTROUTING")

ensure_guard_first() {
  local hook table chain
  for hook in "${GUARD_HOOKS[@]}"; do
    read -r table chain <<<"$hook"
    if [[ "$(iptables -w -t "$table" -S "$chain" 2>/dev/null | sed -n 2p)" != "-A $chain -j $GUARD_CHAIN" ]]; then
      while iptables -w -t "$table" -D "$chain" -j "$GUARD_CHAIN" 2>/dev/null; do :; done
      iptables -w -t "$table" -I "$chain" 1 -j "$GUARD_CHAIN"
    fi
  done
}

# write_file <path>: stdin into path, leaving the file untouched when the content is the same (kube-proxy exits
# when its configuration file is written, so `up` on a running cluster must not touch it).
write_file() {
  local tmp
  tmp="$(mktemp "$1.XXXXXX")"
  cat >"$tmp"
  if cmp -s "$tmp" "$1"; then rm -f "$tmp"; else mv "$tmp" "$1"; fi
}

write_configs() {
  mkdir -p "$STATE_DIR/cni/net.d" "$STATE_DIR/cni/ipam" "$KUBELET_ROOT" "$LOG_DIR" "$PID_DIR" "$RUN_DIR/containerd"
  write_file "$STATE_DIR/containerd.toml" <<EOF
version = 2
root = "$STATE_DIR/containerd"
state = "$RUN_DIR/containerd/state"
[grpc]
  address = "$CONTAINERD_SOCK"
[plugins."io.containerd.internal.v1.opt"]
  path = "$STATE_DIR/containerd-opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  # This VM lacks CAP_SYS_RESOURCE: without this every sandbox fails (runc cannot lower oom_score_adj).
  restrict_oom_score_adj = true
  disable_apparmor = true
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$STATE_DIR/cni/net.d"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
EOF
  write_file "$STATE_DIR/cni/net.d/10-mnist-local.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "mnist-local",
  "plugins": [
    {
      "type": "bridge", "bridge": "$BRIDGE", "isGateway": true, "ipMasq": false, "hairpinMode": true,
      "ipam": {
        "type": "host-local", "dataDir": "$STATE_DIR/cni/ipam",
        "ranges": [[{"subnet": "$POD_CIDR", "gateway": "$POD_GATEWAY"}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF
  echo "nameserver $DNS_SERVICE_IP" | write_file "$STATE_DIR/resolv.conf"
  write_file "$STATE_DIR/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $STATE_DIR/pki/ca.crt}
authorization: {mode: Webhook}
tlsCertFile: $STATE_DIR/pki/kubelet-serving.crt
tlsPrivateKeyFile: $STATE_DIR/pki/kubelet-serving.key
containerRuntimeEndpoint: unix://$CONTAINERD_SOCK
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
clusterDNS: [$DNS_SERVICE_IP]
clusterDomain: $CLUSTER_DOMAIN
# Pods with dnsPolicy Default get this file: the cluster DNS again, never the host's resolver.
resolvConf: $STATE_DIR/resolv.conf
# Images are imported, not pulled: never garbage-collect them, and never evict for a busy shared disk.
imageGCHighThresholdPercent: 100
evictionHard: {memory.available: 200Mi, nodefs.available: 1%, imagefs.available: 1%, nodefs.inodesFree: 1%}
serializeImagePulls: false
maxPods: 60
EOF
  write_file "$STATE_DIR/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clientConnection: {kubeconfig: $STATE_DIR/kube-proxy.kubeconfig}
hostnameOverride: $NODE_NAME
clusterCIDR: $POD_CIDR
bindAddress: $NODE_IP
metricsBindAddress: 127.0.0.1:10249
healthzBindAddress: 127.0.0.1:10256
# NodePorts answer on the node address only (never on eth0), and conntrack sysctls are left alone.
nodePortAddresses: [$NODE_IP/32]
conntrack: {maxPerCore: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
EOF
}

# ------------------------------------------------------------------------------------------------------ components
start_control_plane() {
  local pki="$STATE_DIR/pki"
  daemon etcd "$ETCD_BIN/etcd" --name mnist-local --data-dir "$STATE_DIR/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_CLIENT_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_CLIENT_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster "mnist-local=http://127.0.0.1:$ETCD_PEER_PORT" \
    --quota-backend-bytes 2147483648 --log-level warn
  wait_for etcd 60 curl -sf "http://127.0.0.1:$ETCD_CLIENT_PORT/health"

  daemon kube-apiserver "$K8S_BIN/kube-apiserver" \
    --advertise-address "$NODE_IP" --bind-address "$NODE_IP" --secure-port "$API_PORT" \
    --etcd-servers "http://127.0.0.1:$ETCD_CLIENT_PORT" \
    --service-cluster-ip-range "$SERVICE_CIDR" --service-node-port-range 30000-32767 \
    --authorization-mode Node,RBAC --enable-admission-plugins NodeRestriction --allow-privileged=true \
    --client-ca-file "$pki/ca.crt" --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
    --kubelet-client-certificate "$pki/apiserver-kubelet-client.crt" --kubelet-client-key "$pki/apiserver-kubelet-client.key" \
    --kubelet-certificate-authority "$pki/ca.crt" --kubelet-preferred-address-types InternalIP,Hostname \
    --service-account-issuer "https://kubernetes.default.svc.$CLUSTER_DOMAIN" \
    --service-account-key-file "$pki/sa.pub" --service-account-signing-key-file "$pki/sa.key" \
    --requestheader-client-ca-file "$pki/front-proxy-ca.crt" --requestheader-allowed-names front-proxy-client \
    --requestheader-username-headers X-Remote-User --requestheader-group-headers X-Remote-Group \
    --requestheader-extra-headers-prefix X-Remote-Extra- \
    --proxy-client-cert-file "$pki/front-proxy-client.crt" --proxy-client-key-file "$pki/front-proxy-client.key" \
    --enable-aggregator-routing=true --profiling=false --event-ttl 30m
  wait_for kube-apiserver 120 curl -sf --cacert "$pki/ca.crt" --cert "$pki/admin.crt" --key "$pki/admin.key" \
    "https://$NODE_IP:$API_PORT/readyz"

  daemon kube-controller-manager "$K8S_BIN/kube-controller-manager" \
    --kubeconfig "$STATE_DIR/controller-manager.kubeconfig" \
    --authentication-kubeconfig "$STATE_DIR/controller-manager.kubeconfig" \
    --authorization-kubeconfig "$STATE_DIR/controller-manager.kubeconfig" \
    --bind-address 127.0.0.1 --leader-elect=false --use-service-account-credentials=true \
    --cluster-signing-cert-file "$pki/ca.crt" --cluster-signing-key-file "$pki/ca.key" \
    --root-ca-file "$pki/ca.crt" --service-account-private-key-file "$pki/sa.key" \
    --service-cluster-ip-range "$SERVICE_CIDR" --enable-hostpath-provisioner=true --profiling=false
  daemon kube-scheduler "$K8S_BIN/kube-scheduler" --kubeconfig "$STATE_DIR/scheduler.kubeconfig" \
    --authentication-kubeconfig "$STATE_DIR/scheduler.kubeconfig" \
    --authorization-kubeconfig "$STATE_DIR/scheduler.kubeconfig" \
    --bind-address 127.0.0.1 --leader-elect=false --profiling=false
}

start_node() {
  daemon containerd /usr/bin/containerd --config "$STATE_DIR/containerd.toml"
  wait_for containerd 60 ctr version
  import_cluster_images
  daemon kubelet "$K8S_BIN/kubelet" --config "$STATE_DIR/kubelet.yaml" --kubeconfig "$STATE_DIR/kubelet.kubeconfig" \
    --root-dir "$KUBELET_ROOT" --hostname-override "$NODE_NAME" --node-ip "$NODE_IP"
  daemon kube-proxy "$K8S_BIN/kube-proxy" --config "$STATE_DIR/kube-proxy.yaml"
  daemon volume-permissions /bin/bash "$cluster_dir/volume-permissions.sh"
  wait_for "node $NODE_NAME" 120 kubectl wait --for=condition=Ready "node/$NODE_NAME" --timeout=1s
  ensure_guard_first
}

start_addons() {
  local file
  for file in storage coredns metrics-server; do
    CLUSTER_DOMAIN="$CLUSTER_DOMAIN" DNS_SERVICE_IP="$DNS_SERVICE_IP" COREDNS_IMAGE="$COREDNS_IMAGE" \
      METRICS_SERVER_IMAGE="$METRICS_SERVER_IMAGE" \
      envsubst '$CLUSTER_DOMAIN $DNS_SERVICE_IP $COREDNS_IMAGE $METRICS_SERVER_IMAGE' \
      <"$cluster_dir/addons/$file.yaml" | kubectl apply -f - >/dev/null
  done
  log "addons applied (StorageClass, CoreDNS, metrics-server)"
  wait_for CoreDNS 180 kubectl -n kube-system rollout status deployment/coredns --timeout=1s
  wait_for "cluster DNS" 60 python3 "$cluster_dir/dns_check.py" "$DNS_SERVICE_IP" "kubernetes.default.svc.$CLUSTER_DOMAIN"
  wait_for metrics-server 180 kubectl get --raw /apis/metrics.k8s.io/v1beta1/nodes
}

# ---------------------------------------------------------------------------------------------------------- images
# load <podman image>...: saves each as an OCI archive and imports it into containerd's k8s.io namespace, unless
# containerd already holds that very image (same podman image id, remembered in $STATE_DIR/images).
load_images() {
  mkdir -p "$STATE_DIR/images"
  local image id stamp archive
  for image in "$@"; do
    id="$(podman image inspect --format '{{.Id}}' "$image" 2>/dev/null)" ||
      die "podman has no image $image (build it first)"
    stamp="$STATE_DIR/images/$(echo "$image" | tr '/:' '__').id"
    if [[ -f "$stamp" && "$(cat "$stamp")" == "$id" ]] && has_image "$image"; then
      continue
    fi
    local since=$SECONDS
    archive="$(mktemp -p "$STATE_DIR/images" --suffix .tar)"
    podman save --format oci-archive -o "$archive" "$image" >/dev/null 2>&1
    ctr images import --no-unpack=false "$archive" >/dev/null || { rm -f "$archive"; die "ctr import of $image failed"; }
    # podman names an image's archive entry by its full name; short names need the docker.io/library/ prefix.
    has_image "$image" || die "$image was imported under another name: ctr images ls"
    rm -f "$archive"
    echo "$id" >"$stamp"
    log "image $image imported in $((SECONDS - since))s"
  done
}

# has_image <name>: containerd holds it (the list is read whole: `grep -q` on a pipe would SIGPIPE ctr).
has_image() {
  local names
  names="$(ctr images ls -q)"
  grep -qx -- "$1" <<<"$names"
}

# The sandbox, DNS and metrics images: FROM scratch with one static binary each, built once per version.
import_cluster_images() {
  build_scratch_image "$PAUSE_IMAGE" "$PAUSE_BIN/pause" /pause
  build_scratch_image "$COREDNS_IMAGE" "$COREDNS_BIN/coredns" /coredns
  build_scratch_image "$METRICS_SERVER_IMAGE" "$METRICS_SERVER_BIN/metrics-server" /metrics-server
  load_images "$PAUSE_IMAGE" "$COREDNS_IMAGE" "$METRICS_SERVER_IMAGE"
}

build_scratch_image() {
  local image="$1" binary="$2" target="$3" context digest
  digest="$(sha256sum <"$binary" | cut -c1-16)"
  [[ "$(podman image inspect --format '{{index .Labels "binary-sha256"}}' "$image" 2>/dev/null)" == "$digest" ]] && return
  context="$(mktemp -d)"
  cp "$binary" "$context/"
  printf 'FROM scratch\nCOPY %s %s\nUSER 65534:65534\nENTRYPOINT ["%s"]\n' "$(basename "$binary")" "$target" "$target" \
    >"$context/Containerfile"
  flock /var/lock/mnist-podman.lock podman build -q --label "binary-sha256=$digest" -t "$image" "$context" >/dev/null
  rm -rf "$context"
  log "image $image built"
}

# ----------------------------------------------------------------------------------------------------------- verbs
cmd_build() {
  "$cluster_dir/build.sh"
}

cmd_up() {
  need_root
  install_packages
  cmd_build
  check_ranges
  mkdir -p "$STATE_DIR" "$RUN_DIR" "$LOG_DIR" "$PID_DIR"
  save_sysctls
  "$cluster_dir/certs.sh"
  write_configs
  setup_network
  start_control_plane
  start_node
  start_addons
  mkdir -p "$(dirname "$KUBECONFIG_OUT")"
  cp "$STATE_DIR/admin.kubeconfig" "$KUBECONFIG_OUT"
  chmod 600 "$KUBECONFIG_OUT"
  log "cluster up: export KUBECONFIG=$KUBECONFIG_OUT"
}

cmd_load() {
  need_root
  running containerd /usr/bin/containerd || die "the cluster is not up (make cluster-up)"
  load_images "$@"
}

cmd_status() {
  local name
  for name in etcd kube-apiserver kube-controller-manager kube-scheduler containerd kubelet kube-proxy volume-permissions; do
    if [[ -f "$PID_DIR/$name.pid" && -d "/proc/$(pid_of "$name")" ]]; then
      printf '  %-24s running (pid %s)\n' "$name" "$(pid_of "$name")"
    else
      printf '  %-24s stopped\n' "$name"
    fi
  done
  if [[ -f "$STATE_DIR/admin.kubeconfig" ]] && kubectl get --raw /readyz >/dev/null 2>&1; then
    kubectl get nodes -o wide
    kubectl get pods -A -o wide
  fi
  local table
  echo "containment guard ($GUARD_CHAIN): packets stopped per rule (what they were: dmesg | grep mnist-guard)"
  for table in filter mangle; do
    iptables -w -t "$table" -L "$GUARD_CHAIN" -v -n -x 2>/dev/null |
      awk -v t="$table" 'NR > 2 && ($3 == "REJECT" || $3 == "DROP") {
        c = $0; sub(/.*\/\* /, "", c); sub(/ \*\/.*/, "", c); printf "  %-7s %-7s %8d packets  %s\n", t, $3, $1, c }' ||
      echo "  $table: not installed"
  done
}

# guard-counters: the packet count of every stopping rule, one per line (the e2e suite reads these).
cmd_guard_counters() {
  local table
  for table in filter mangle; do
    iptables -w -t "$table" -L "$GUARD_CHAIN" -v -n -x | awk 'NR > 2 && ($3 == "REJECT" || $3 == "DROP") {print $1}'
  done
}

cmd_down() {
  need_root
  local since=$SECONDS
  # No controller may replace the pods we stop, so stop the controllers first and let the kubelet tear the
  # pods down properly (CNI DEL releases their addresses, volumes are unmounted).
  stop_daemon kube-controller-manager
  stop_daemon kube-scheduler
  if running kube-apiserver kube-apiserver && running kubelet kubelet; then
    kubectl delete pods --all --all-namespaces --grace-period=5 --wait=true --timeout=90s >/dev/null 2>&1 ||
      log "some pods did not stop in 90s; they are killed below"
    log "pods deleted"
  fi
  stop_daemon kubelet
  stop_daemon kube-proxy
  stop_daemon volume-permissions
  [[ -x "$K8S_BIN/kube-proxy" ]] && "$K8S_BIN/kube-proxy" --cleanup >/dev/null 2>&1 || true
  stop_daemon kube-apiserver
  stop_daemon etcd
  kill_leftover_containers
  stop_daemon containerd
  clean_host
  log "cluster down in $((SECONDS - since))s; host restored"
}

# After a crash: shims of our containerd and every process still in a kubepods cgroup (both are ours only).
kill_leftover_containers() {
  local pid pids=()
  for pid in /proc/[0-9]*; do
    pid="${pid#/proc/}"
    if [[ "$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)" == *"-address $CONTAINERD_SOCK"* ]]; then pids+=("$pid"); fi
  done
  if [[ -d /sys/fs/cgroup/pids/kubepods ]]; then
    mapfile -t -O "${#pids[@]}" pids < <(find /sys/fs/cgroup/pids/kubepods -name cgroup.procs -exec cat {} + 2>/dev/null)
  fi
  if ((${#pids[@]})); then
    kill -KILL "${pids[@]}" 2>/dev/null || true
    log "killed ${#pids[@]} leftover container processes"
    sleep 1
  fi
}

clean_host() {
  local mount
  # Unmount everything under our state dirs and the kubelet's root, deepest first.
  for mount in $(awk '{print $2}' /proc/mounts | grep -E "^($STATE_DIR|$RUN_DIR|/var/lib/kubelet)/" | sort -r); do
    umount -l "$mount" 2>/dev/null || true
  done
  if ip link show "$BRIDGE" >/dev/null 2>&1; then ip link delete "$BRIDGE"; fi
  if [[ "$(ip addr show dev lo)" == *"inet $NODE_IP/32"* ]]; then ip addr del "$NODE_IP/32" dev lo; fi
  remove_chains
  remove_cgroups
  if [[ -f "$STATE_DIR/sysctls.saved" ]]; then
    while IFS= read -r setting; do sysctl -qw "$setting" || true; done <"$STATE_DIR/sysctls.saved"
  fi
  local dir
  for dir in /var/lib/kubelet /var/log/pods /var/log/containers /tmp/hostpath_pv /var/lib/cni; do
    if [[ -e "$dir" ]] && ! grep -qx "$dir" "$STATE_DIR/dirs-before" 2>/dev/null; then rm -rf "$dir"; fi
  done
  rm -rf "$STATE_DIR" "$RUN_DIR" "$KUBECONFIG_OUT"
}

# iptables chains the kubelet and kube-proxy leave behind (KUBE-*: firewall, canaries), and the guard.
remove_chains() {
  local cmd table chain hook rules
  for cmd in iptables ip6tables; do
    command -v "$cmd" >/dev/null || continue
    for hook in "${GUARD_HOOKS[@]}" "filter OUTPUT"; do
      read -r table chain <<<"$hook"
      while "$cmd" -w -t "$table" -D "$chain" -j "$GUARD_CHAIN" 2>/dev/null; do :; done
    done
    for table in filter nat mangle; do
      "$cmd" -w -t "$table" -F "$GUARD_CHAIN" 2>/dev/null || true
      "$cmd" -w -t "$table" -X "$GUARD_CHAIN" 2>/dev/null || true
      # Drop the rules that jump from a built-in chain to a KUBE- chain, then flush and delete the KUBE- chains.
      rules="$("$cmd" -w -t "$table" -S 2>/dev/null || true)"
      while IFS= read -r rule; do
        [[ "$rule" =~ ^-A\ [A-Z]+\ .*-j\ KUBE- && ! "$rule" =~ ^-A\ KUBE- ]] || continue
        eval "$cmd -w -t $table ${rule/-A /-D }" 2>/dev/null || true # eval: -S quotes the rules' comments
      done <<<"$rules"
      for chain in $(awk '$1 == "-N" && $2 ~ /^KUBE-/ {print $2}' <<<"$rules"); do
        "$cmd" -w -t "$table" -F "$chain" 2>/dev/null || true
      done
      for chain in $(awk '$1 == "-N" && $2 ~ /^KUBE-/ {print $2}' <<<"$rules"); do
        "$cmd" -w -t "$table" -X "$chain" 2>/dev/null || true
      done
    done
  done
}

remove_cgroups() {
  local dir
  for dir in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/*/kubepods.slice; do
    [[ -d "$dir" ]] || continue
    find "$dir" -depth -type d -exec rmdir {} + 2>/dev/null || true
  done
}

case "${1:-}" in
  build) cmd_build ;;
  up) cmd_up ;;
  load) shift; cmd_load "$@" ;;
  status) cmd_status ;;
  guard-counters) cmd_guard_counters ;;
  down) cmd_down ;;
  *) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
