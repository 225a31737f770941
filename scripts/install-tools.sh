#!/usr/bin/env bash
# Builds the chart tools (helm, kubeconform) from source with `go install` into .cache/bin, once per machine:
# a binary built from the same module version and flags is kept, so CI pays the minutes of compiling only on a
# fresh host. Jaeger (the tracing test's OTLP receiver and query API) goes to ~/.cache/mnist-service/bin, outside
# the repo, so CI's fresh clone finds it built; `scripts/install-tools.sh jaeger` builds only that.
set -euo pipefail
cd "$(dirname "$0")/.."

HELM_VERSION="${HELM_VERSION:-v3.22.0}"
KUBECONFORM_VERSION="${KUBECONFORM_VERSION:-v0.8.0}"
JAEGER_VERSION="${JAEGER_VERSION:-v1.76.0}"
BIN_DIR="${TOOLS_BIN:-$PWD/.cache/bin}"
JAEGER_BIN_DIR="${JAEGER_BIN:-$HOME/.cache/mnist-service/bin}"
mkdir -p "$BIN_DIR" "$JAEGER_BIN_DIR"

command -v go >/dev/null || { echo "go is required to build helm and kubeconform (apt-get install golang)" >&2; exit 1; }

# install <binary> <module@version/package> <ldflags> [bin dir]: builds unless the stamp next to the binary says
# it was built from exactly this package, version and flags.
install() {
  local name="$1" target="$2" ldflags="$3" dir="${4:-$BIN_DIR}"
  local stamp="$dir/.$name.stamp" want="$target $ldflags"
  if [[ -x "$dir/$name" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    echo "$name: cached in $dir ($target)"
    return
  fi
  echo "building $name (go install $target) ..."
  local started=$SECONDS
  GOBIN="$dir" CGO_ENABLED=0 go install -trimpath -ldflags "$ldflags" "$target"
  echo "$want" >"$stamp"
  echo "$name built in $((SECONDS - started))s"
}

# Jaeger v1's all-in-one: collector (OTLP gRPC/HTTP), in-memory storage and the query API in one binary.
# `go install pkg@version` refuses a module whose go.mod has replace directives, as Jaeger's has: download the
# module (the Go module proxy, verified against go.sum's database) and build inside it as the main module.
install_jaeger() {
  local name=jaeger-all-in-one target="github.com/jaegertracing/jaeger@$JAEGER_VERSION/cmd/all-in-one"
  local stamp="$JAEGER_BIN_DIR/.$name.stamp"
  if [[ -x "$JAEGER_BIN_DIR/$name" && -f "$stamp" && "$(cat "$stamp")" == "$target" ]]; then
    echo "$name: cached in $JAEGER_BIN_DIR ($target)"
    return
  fi
  echo "building $name ($target) ..."
  local started=$SECONDS src
  src="$(go mod download -json "github.com/jaegertracing/jaeger@$JAEGER_VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')"
  (cd "$src" && CGO_ENABLED=0 GOFLAGS=-mod=readonly go build -trimpath -ldflags "-s -w" \
    -o "$JAEGER_BIN_DIR/$name" ./cmd/all-in-one)
  echo "$target" >"$stamp"
  echo "$name built in $((SECONDS - started))s"
}
if [[ "${1:-}" == "jaeger" ]]; then
  install_jaeger
  exit 0
fi

# Helm's Makefile stamps its version and the Kubernetes minor it was built against (client-go v0.N -> 1.N); the
# latter is the default cluster version of `helm template` and `helm lint`, which otherwise assume 1.20.
helm_gomod="$(go mod download -json "helm.sh/helm/v3@$HELM_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')"
client_go="$(awk '$1 == "k8s.io/client-go" {print $2}' "$helm_gomod")"
k8s_minor="${client_go#v0.}"
k8s_minor="${k8s_minor%%.*}"
helm_ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
for pkg in helm.sh/helm/v3/pkg/chartutil helm.sh/helm/v3/pkg/lint/rules; do
  helm_ldflags+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$k8s_minor"
done

install helm "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" "$helm_ldflags"
install kubeconform "github.com/yannh/kubeconform/cmd/kubeconform@$KUBECONFORM_VERSION" \
  "-s -w -X main.version=$KUBECONFORM_VERSION"
echo "helm $("$BIN_DIR/helm" version --short), kubeconform $("$BIN_DIR/kubeconform" -v)"
install_jaeger
