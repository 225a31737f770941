#!/usr/bin/env bash
# Debian packages the tests need: podman for the image, Chromium for the browser tests, Prometheus, wrk.
# Installs only what is missing (as root, else through sudo) and says what; `make test` runs it first.
#   --check   list the missing packages and exit 1 if there are any, install nothing
set -euo pipefail
# openjdk-17-jre-headless and maven: scripts/cassandra.sh runs Apache Cassandra from Maven Central's jars;
# openssl: it makes the dev node's TLS certificates.
packages=(
  podman runc debootstrap uidmap slirp4netns fuse-overlayfs
  chromium prometheus wrk
  openjdk-17-jre-headless maven openssl
)
missing=()
for pkg in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]} == 0)); then
  echo "system packages: all ${#packages[@]} present"
  exit 0
fi
if [[ "${1:-}" == "--check" ]]; then
  echo "system packages missing: ${missing[*]} (run scripts/install-system-deps.sh)"
  exit 1
fi
as_root=()
if ((EUID != 0)); then
  command -v sudo >/dev/null || {
    echo "system packages missing: ${missing[*]}; run scripts/install-system-deps.sh as root" >&2
    exit 1
  }
  as_root=(sudo)
fi
echo "installing system packages${as_root:+ through sudo}: ${missing[*]}"
started=$SECONDS
"${as_root[@]}" apt-get update -qq
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
echo "installed ${#missing[@]} system packages in $((SECONDS - started))s"
