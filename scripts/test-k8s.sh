#!/usr/bin/env bash
# `make test-k8s`: the e2e suite (tests/e2e) on the local cluster. Brings the cluster up when it is not, and then
# down again at the end so the host is left as it was (KEEP_CLUSTER=1 keeps it); a cluster that was already up
# stays up.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/cluster/config.sh
source scripts/cluster/config.sh
export PATH="$K8S_BIN:$PATH" # kubectl of the cluster's own version
started=$SECONDS
brought_up=0
if [[ "$(scripts/local-cluster.sh status 2>/dev/null)" != *"kube-apiserver           running"* ]]; then
  echo "test-k8s: the local cluster is not up; starting it"
  scripts/local-cluster.sh up
  brought_up=1
else
  scripts/local-cluster.sh up # finishes a half-started cluster, refreshes var/kubeconfig; fast when all runs
fi
rc=0
KUBECONFIG="$PWD/var/kubeconfig" E2E_LOCAL_CLUSTER=1 .venv/bin/pytest -m k8s tests/e2e "$@" || rc=$?
if ((brought_up)) && [[ "${KEEP_CLUSTER:-0}" != 1 ]]; then
  scripts/local-cluster.sh down
fi
echo "test-k8s: ${SECONDS}s in all (pytest exit $rc)"
exit "$rc"
