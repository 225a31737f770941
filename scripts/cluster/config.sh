# The local cluster's settings in one place: pinned versions, where binaries are cached (outside the repo, keyed by
# version, so CI's fresh clone reuses them), host paths, and the addresses. Sourced by build.sh and
# scripts/local-cluster.sh.
K8S_VERSION="${K8S_VERSION:-v1.34.2}"
ETCD_VERSION="v3.6.16" # keep in step with scripts/cluster/etcd/go.mod
COREDNS_VERSION="${COREDNS_VERSION:-v1.14.7}"
METRICS_SERVER_VERSION="${METRICS_SERVER_VERSION:-v0.8.0}"
K8S_COMMANDS="kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl"

CLUSTER_CACHE="${MNIST_CLUSTER_CACHE:-$HOME/.cache/mnist-service}"
K8S_BIN="$CLUSTER_CACHE/k8s/$K8S_VERSION"
ETCD_BIN="$CLUSTER_CACHE/etcd/$ETCD_VERSION"
COREDNS_BIN="$CLUSTER_CACHE/coredns/$COREDNS_VERSION"
METRICS_SERVER_BIN="$CLUSTER_CACHE/metrics-server/$METRICS_SERVER_VERSION"
PAUSE_BIN="$CLUSTER_CACHE/pause"

# Everything the running cluster writes on the host lives under these two directories (down removes them),
# except what the kubelet and the CNI plugins hard-code (cleaned up by name in `down`).
STATE_DIR=/var/lib/mnist-cluster
RUN_DIR=/run/mnist-cluster

# Addresses. The node address sits on lo (this VM has no dummy links); pods live on their own bridge. None of
# these ranges may overlap a route the host already has: `up` checks that against `ip route` and stops if so.
NODE_NAME=mnist-local
NODE_IP=10.213.255.254
POD_CIDR=10.213.0.0/20
POD_GATEWAY=10.213.0.1
SERVICE_CIDR=10.213.16.0/20
API_SERVICE_IP=10.213.16.1
DNS_SERVICE_IP=10.213.16.10
BRIDGE=mnistbr0
CLUSTER_DOMAIN=cluster.local
API_PORT=6443
ETCD_CLIENT_PORT=12379
ETCD_PEER_PORT=12380
GUARD_CHAIN=MNIST-CLUSTER-GUARD

# Images the cluster needs besides the app's; built locally with podman (nothing can be pulled).
PAUSE_IMAGE=localhost/mnist-cluster/pause:1
COREDNS_IMAGE=localhost/mnist-cluster/coredns:$COREDNS_VERSION
METRICS_SERVER_IMAGE=localhost/mnist-cluster/metrics-server:$METRICS_SERVER_VERSION
