#!/usr/bin/env bash
# Builds the service image with podman on a Debian base made here with debootstrap (no registry pulls needed):
#
#   1. base: Debian <codename> minbase + python3, python3-venv, ca-certificates, from the mirror this machine's apt
#      sources name; built once, kept in podman storage and as a tarball in .cache/images (CI restores either);
#   2. the Dockerfile, with --build-arg BASE_IMAGE=<that base>, tagged $IMAGE (localhost/mnist-service:<version>).
#
# Environment: IMAGE (default localhost/mnist-service:<pyproject version>), BASE_IMAGE (skip step 1 and use
# this image instead, e.g. an official python:3.11-slim where pulls work), REBUILD_BASE=1 (make the base again).
set -euo pipefail
cd "$(dirname "$0")/.."

log() { echo "build-image: $*" >&2; }
die() { log "error: $*"; exit 1; }

VERSION="$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml | head -1)"
IMAGE="${IMAGE:-localhost/mnist-service:$VERSION}"
CACHE_DIR="$PWD/.cache/images"
# What podman can do on this kind of host: runc (crun fails), host network, bounded ulimits.
PODMAN=(podman --runtime runc)
ULIMITS=(--ulimit nofile=1024:1024 --ulimit nproc=1000:1000)

# --- which Debian, from where ------------------------------------------------------------------------------------

# apt_mirror: the first deb URI of the main Debian archive in this machine's apt sources (deb822 *.sources first,
# then one-line sources.list), skipping security and update suites.
apt_mirror() {
  local file uri
  for file in /etc/apt/sources.list.d/*.sources; do
    [[ -f "$file" ]] || continue
    uri="$(awk '
      BEGIN { RS = ""; FS = "\n" }
      {
        types = ""; uris = ""; suites = ""
        for (i = 1; i <= NF; i++) {
          if ($i ~ /^[ \t]*#/) continue
          if ($i ~ /^Types:/) types = $i
          if ($i ~ /^URIs:/) { uris = $i; sub(/^URIs:[ \t]*/, "", uris) }
          if ($i ~ /^Suites:/) suites = $i
        }
        if (types ~ /(^|[ \t])deb([ \t]|$)/ && suites !~ /-security/ && uris != "") { split(uris, u, " "); print u[1]; exit }
      }' "$file")"
    [[ -n "$uri" ]] && { echo "$uri"; return; }
  done
  for file in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [[ -f "$file" ]] || continue
    uri="$(awk '$1 == "deb" && $0 !~ /-security/ {
      for (i = 2; i <= NF; i++) if ($i !~ /^\[/ && $i !~ /\]$/) { print $i; exit }
    }' "$file")"
    [[ -n "$uri" ]] && { echo "$uri"; return; }
  done
  return 1
}

# --- 1. the base image -----------------------------------------------------------------------------------------

build_base() {
  local codename mirror tag tarball rootfs
  codename="$(. /etc/os-release && echo "${VERSION_CODENAME:?}")"
  mirror="$(apt_mirror)" || die "no Debian mirror found in /etc/apt/sources.list{,.d/}"
  tag="localhost/mnist-debian-base:$codename"
  tarball="$CACHE_DIR/mnist-debian-base-$codename.tar.gz"
  BASE_IMAGE="$tag"

  if [[ "${REBUILD_BASE:-0}" != 1 ]]; then
    if "${PODMAN[@]}" image exists "$tag"; then
      log "base $tag: in podman storage"
      return
    fi
    if [[ -f "$tarball" ]]; then
      log "base $tag: importing cached $tarball"
      "${PODMAN[@]}" import --change 'CMD ["/bin/bash"]' "$tarball" "$tag" >/dev/null
      return
    fi
  fi

  command -v debootstrap >/dev/null || die "debootstrap is missing (scripts/install-system-deps.sh installs it)"
  log "base $tag: debootstrap $codename from $mirror (a few minutes, once)"
  local started=$SECONDS
  rootfs="$(mktemp -d /var/tmp/mnist-rootfs.XXXXXX)"
  trap 'rm -rf "$rootfs"' EXIT
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    "$codename" "$rootfs" "$mirror" >&2
  # Leave apt pointed at the same mirror (plus security updates) for anyone extending the image; drop caches.
  cat >"$rootfs/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $mirror
Suites: $codename $codename-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  rm -f "$rootfs/etc/apt/sources.list"
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb \
    "$rootfs"/var/log/* "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/tmp/*
  mkdir -p "$CACHE_DIR"
  tar --numeric-owner -C "$rootfs" -czf "$tarball.partial" .
  mv "$tarball.partial" "$tarball"
  "${PODMAN[@]}" import --change 'CMD ["/bin/bash"]' "$tarball" "$tag" >/dev/null
  rm -rf "$rootfs"
  trap - EXIT
  log "base $tag: built in $((SECONDS - started))s ($(du -h "$tarball" | cut -f1) compressed)"
}

if [[ -z "${BASE_IMAGE:-}" ]]; then
  build_base
fi

# --- 2. the service image ------------------------------------------------------------------------------------------

# pip inside the build uses the host's CA bundle and pip configuration (an index mirror, find-links); a
# find-links directory named there is mounted too when it exists.
mounts=()
[[ -f /etc/ssl/certs/ca-certificates.crt ]] && mounts+=(-v /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro)
if [[ -f /etc/pip.conf ]]; then
  mounts+=(-v /etc/pip.conf:/etc/pip.conf:ro)
  while read -r dir; do
    [[ -d "$dir" ]] && mounts+=(-v "$dir:$dir:ro")
  done < <(sed -n 's/^[[:space:]]*find-links[[:space:]]*=[[:space:]]*//p' /etc/pip.conf | tr ' ' '\n' | grep '^/' || true)
fi

log "building $IMAGE on $BASE_IMAGE"
started=$SECONDS
# --format docker: the OCI format has no HEALTHCHECK; --layers: reuse cached steps across builds.
"${PODMAN[@]}" build --format docker --layers --network host "${ULIMITS[@]}" "${mounts[@]}" \
  --build-arg BASE_IMAGE="$BASE_IMAGE" --build-arg VERSION="$VERSION" --tag "$IMAGE" --file Dockerfile .
log "built $IMAGE in $((SECONDS - started))s, size $("${PODMAN[@]}" image inspect --format '{{.Size}}' "$IMAGE" | numfmt --to=iec)"
