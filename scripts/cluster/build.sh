#!/usr/bin/env bash
# Builds the local cluster's binaries from the Go module proxy into a cache outside the repo, keyed by version, so
# a fresh clone (CI) reuses them: Kubernetes (apiserver, controller-manager, scheduler, kubelet, kube-proxy,
# kubectl), etcd, CoreDNS, metrics-server and the pod sandbox's pause. A directory is complete only once its
# .complete stamp exists, so a build killed half-way is redone, never half-used.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=scripts/cluster/config.sh
source "$here/config.sh"

command -v go >/dev/null || { echo "go is required to build the cluster (apt-get install golang)" >&2; exit 1; }
export CGO_ENABLED=0 GOWORK=off GOFLAGS=-buildvcs=false

log() { printf '[build %4ds] %s\n' "$SECONDS" "$*"; }

# cached <dir> <stamp text>: true when <dir> was completely built from exactly <stamp text>.
cached() { [[ -f "$1/.complete" && "$(cat "$1/.complete")" == "$2" ]]; }
finish() { echo "$2" >"$1/.complete"; }

build_kubernetes() {
  local out="$K8S_BIN" stamp="kubernetes $K8S_VERSION $K8S_COMMANDS"
  if cached "$out" "$stamp"; then log "kubernetes $K8S_VERSION: cached in $out"; return; fi
  local started=$SECONDS src
  log "kubernetes $K8S_VERSION: downloading the source module"
  src="$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')"
  # The module as published points its k8s.io/* dependencies at ./staging, which the module zip leaves out:
  # build from a writable copy that requires the published staging modules (v0.N.M for v1.N.M) instead.
  local work="$CLUSTER_CACHE/src/kubernetes-$K8S_VERSION"
  rm -rf "$work" && mkdir -p "$(dirname "$work")"
  cp -r "$src" "$work" && chmod -R u+w "$work"
  rm -rf "$work/vendor" "$work/go.work" "$work/go.work.sum" "$work/staging"
  local staging_version="v0.${K8S_VERSION#v1.}" edits=() mod
  for mod in $(sed -n 's|^\t\(k8s.io/[^ ]*\) => ./staging/.*|\1|p' "$work/go.mod"); do
    edits+=("-dropreplace=$mod" "-require=$mod@$staging_version")
  done
  (cd "$work" && go mod edit "${edits[@]}")
  log "kubernetes $K8S_VERSION: ${#edits[@]} go.mod edits done; downloading dependencies"
  (cd "$work" && GOFLAGS=-mod=mod go mod download)
  log "kubernetes $K8S_VERSION: compiling $K8S_COMMANDS"
  mkdir -p "$out"
  local cmd pkgs=()
  for cmd in $K8S_COMMANDS; do pkgs+=("./cmd/$cmd"); done
  (cd "$work" && GOFLAGS=-mod=mod go build -trimpath -o "$out/" \
    -ldflags "-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$(echo "$K8S_VERSION" | cut -d. -f2)" \
    "${pkgs[@]}")
  rm -rf "$work"
  finish "$out" "$stamp"
  log "kubernetes $K8S_VERSION: built in $((SECONDS - started))s ($(du -sh "$out" | cut -f1))"
}

# build_go_main <name> <dir> <stamp> <package dir>: `go build` of a main package in this repo.
build_repo_main() {
  local name="$1" out="$2" stamp="$3" pkg="$4"
  if cached "$out" "$stamp"; then log "$name: cached in $out"; return; fi
  local started=$SECONDS
  mkdir -p "$out"
  (cd "$pkg" && go build -trimpath -ldflags "-s -w" -o "$out/$name" .)
  finish "$out" "$stamp"
  log "$name: built in $((SECONDS - started))s"
}

# go_install <name> <dir> <module/cmd@version> <ldflags>
go_install() {
  local name="$1" out="$2" target="$3" ldflags="$4" stamp="$3 $4"
  if cached "$out" "$stamp"; then log "$name: cached in $out"; return; fi
  local started=$SECONDS
  log "$name: go install $target"
  mkdir -p "$out"
  GOBIN="$out" go install -trimpath -ldflags "$ldflags" "$target"
  finish "$out" "$stamp"
  log "$name: built in $((SECONDS - started))s"
}

build_repo_main etcd "$ETCD_BIN" "etcd $ETCD_VERSION $(cat "$here/etcd/go.mod" "$here/etcd/main.go" | sha256sum | cut -c1-16)" "$here/etcd"
build_repo_main pause "$PAUSE_BIN" "pause $(sha256sum <"$here/pause/main.go" | cut -c1-16)" "$here/pause"
go_install coredns "$COREDNS_BIN" "github.com/coredns/coredns@$COREDNS_VERSION" "-s -w"
go_install metrics-server "$METRICS_SERVER_BIN" "sigs.k8s.io/metrics-server/cmd/metrics-server@$METRICS_SERVER_VERSION" \
  "-s -w -X sigs.k8s.io/metrics-server/pkg/version.gitVersion=$METRICS_SERVER_VERSION"
build_kubernetes
log "all binaries ready under $CLUSTER_CACHE"
