#!/usr/bin/env bash
# Builds the service image with podman on a Debian base made here with debootstrap (no registry pulls needed):
#
#   1. base: Debian <codename> minbase + python3, python3-venv, ca-certificates (scripts/lib/image-base.sh);
#   2. the Dockerfile, with --build-arg BASE_IMAGE=<that base>, tagged $IMAGE (localhost/mnist-service:<version>).
#
# Environment: IMAGE (default localhost/mnist-service:<pyproject version>), BASE_IMAGE (skip step 1 and use
# this image instead, e.g. an official python:3.11-slim where pulls work), REBUILD_BASE=1 (make the base again),
# TARGET (a Dockerfile stage: production, the default, or trainer = the service plus TensorFlow, tagged
# localhost/mnist-service-trainer:<version> unless IMAGE says otherwise).
set -euo pipefail
cd "$(dirname "$0")/.."

log() { echo "build-image: $*" >&2; }
die() { log "error: $*"; exit 1; }
# shellcheck source=scripts/lib/image-base.sh
. scripts/lib/image-base.sh

VERSION="$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml | head -1)"
TARGET="${TARGET:-production}"
case "$TARGET" in
  production) IMAGE="${IMAGE:-localhost/mnist-service:$VERSION}" ;;
  trainer) IMAGE="${IMAGE:-localhost/mnist-service-trainer:$VERSION}" ;;
  *) die "TARGET=$TARGET: want production or trainer" ;;
esac

if [[ -z "${BASE_IMAGE:-}" ]]; then
  build_base
fi

host_build_mounts
log "building $IMAGE on $BASE_IMAGE"
started=$SECONDS
# --format docker: the OCI format has no HEALTHCHECK; --layers: reuse cached steps across builds.
podman_locked build --format docker --layers --network host "${ULIMITS[@]}" "${BUILD_MOUNTS[@]}" \
  --build-arg BASE_IMAGE="$BASE_IMAGE" --build-arg VERSION="$VERSION" --target "$TARGET" --tag "$IMAGE" \
  --file Dockerfile .
log "built $IMAGE in $((SECONDS - started))s, size $(image_size "$IMAGE")"
