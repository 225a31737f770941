# Shared by the podman image builds (scripts/build-image.sh, scripts/build-cassandra-image.sh): how podman runs
# on this kind of host, the machine-wide build lock, the Debian base made here with debootstrap (no registry
# pulls), and the pip configuration a build step may use. Source it after defining log() and die().
#
# Environment: REBUILD_BASE=1 (make the base again even if podman storage or the cached tarball has it),
# BASE_CACHE_DIR (where the base tarball is kept; .cache/images).

# What podman can do on this kind of host: runc (crun fails), host network, bounded ulimits.
PODMAN=(podman --runtime runc)
ULIMITS=(--ulimit nofile=1024:1024 --ulimit nproc=1000:1000)
# podman's image store is shared by everything on the machine; two concurrent writers corrupted it once.
PODMAN_LOCK=/var/lock/mnist-podman.lock
BASE_CACHE_DIR="${BASE_CACHE_DIR:-$PWD/.cache/images}"

# podman_locked ARGS...: one podman command that writes the image store, under the machine-wide lock.
podman_locked() {
  flock "$PODMAN_LOCK" "${PODMAN[@]}" "$@"
}

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

# --- the base image -----------------------------------------------------------------------------------------------

# build_base: Debian <this machine's codename> minbase + python3, python3-venv, ca-certificates, from the mirror
# this machine's apt sources name; built once, kept in podman storage and as a tarball in $BASE_CACHE_DIR (CI
# restores either). Sets BASE_IMAGE to its tag.
build_base() {
  local codename mirror tag tarball rootfs
  codename="$(. /etc/os-release && echo "${VERSION_CODENAME:?}")"
  mirror="$(apt_mirror)" || die "no Debian mirror found in /etc/apt/sources.list{,.d/}"
  tag="localhost/mnist-debian-base:$codename"
  tarball="$BASE_CACHE_DIR/mnist-debian-base-$codename.tar.gz"
  BASE_IMAGE="$tag"

  if [[ "${REBUILD_BASE:-0}" != 1 ]]; then
    if "${PODMAN[@]}" image exists "$tag"; then
      log "base $tag: in podman storage"
      return
    fi
    if [[ -f "$tarball" ]]; then
      log "base $tag: importing cached $tarball"
      podman_locked import --change 'CMD ["/bin/bash"]' "$tarball" "$tag" >/dev/null
      return
    fi
  fi

  command -v debootstrap >/dev/null || die "debootstrap is missing (scripts/install-system-deps.sh installs it)"
  log "base $tag: debootstrap $codename from $mirror (a few minutes, once)"
  local started=$SECONDS
  rootfs="$(mktemp -d /var/tmp/mnist-rootfs.XXXXXX)"
  # shellcheck disable=SC2064  # expand now: the trap must remove this very folder
  trap "rm -rf '$rootfs'" EXIT
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
  mkdir -p "$BASE_CACHE_DIR"
  tar --numeric-owner -C "$rootfs" -czf "$tarball.partial" .
  mv "$tarball.partial" "$tarball"
  podman_locked import --change 'CMD ["/bin/bash"]' "$tarball" "$tag" >/dev/null
  rm -rf "$rootfs"
  trap - EXIT
  log "base $tag: built in $((SECONDS - started))s ($(du -h "$tarball" | cut -f1) compressed)"
}

# --- what a build step needs from the host -------------------------------------------------------------------------

# host_build_mounts: sets BUILD_MOUNTS to `podman build -v` options so that pip (and apt) inside the build use the
# host's CA bundle and pip configuration (an index mirror, find-links); a find-links directory named there is
# mounted too when it exists.
host_build_mounts() {
  BUILD_MOUNTS=()
  [[ -f /etc/ssl/certs/ca-certificates.crt ]] \
    && BUILD_MOUNTS+=(-v /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro)
  if [[ -f /etc/pip.conf ]]; then
    BUILD_MOUNTS+=(-v /etc/pip.conf:/etc/pip.conf:ro)
    local dir
    while read -r dir; do
      [[ -d "$dir" ]] && BUILD_MOUNTS+=(-v "$dir:$dir:ro")
    done < <(sed -n 's/^[[:space:]]*find-links[[:space:]]*=[[:space:]]*//p' /etc/pip.conf | tr ' ' '\n' | grep '^/' || true)
  fi
}

# image_size TAG: the image's size, human-readable.
image_size() {
  "${PODMAN[@]}" image inspect --format '{{.Size}}' "$1" | numfmt --to=iec
}
