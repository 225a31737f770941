#!/usr/bin/env bash
# Debian packages the tests need: podman for the image, Chromium for the browser tests, Prometheus, wrk.
set -euo pipefail
# openjdk-17-jre-headless and maven: scripts/cassandra.sh runs Apache Cassandra from Maven Central's jars.
packages=(podman runc debootstrap uidmap slirp4netns fuse-overlayfs chromium prometheus wrk openjdk-17-jre-headless maven)
missing=()
for pkg in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "all system packages present"
fi
