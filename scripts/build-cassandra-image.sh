#!/usr/bin/env bash
# Builds localhost/mnist-cassandra:<Cassandra version> with podman, for clusters that cannot pull the official
# `cassandra` image (docs/cassandra-image.md):
#
#   1. base: the same debootstrap Debian as the service image (scripts/lib/image-base.sh);
#   2. jars: cassandra-all and its runtime dependencies, resolved from Maven Central by `scripts/cassandra.sh
#      classpath` (mvn, cached in ~/.m2), copied into a build context under .cache/cassandra-image;
#   3. images/cassandra/Containerfile: Debian's Java 17, cqlsh (the version pinned in pyproject.toml), the
#      entrypoint, the launcher and nodetool, the configuration.
#
# Environment: CASSANDRA_VERSION (5.0.9), IMAGE (default localhost/mnist-cassandra:$CASSANDRA_VERSION),
# BASE_IMAGE (skip step 1 and use this image), REBUILD_BASE=1 (make the base again).
set -euo pipefail
cd "$(dirname "$0")/.."

log() { echo "build-cassandra-image: $*" >&2; }
die() { log "error: $*"; exit 1; }
# shellcheck source=scripts/lib/image-base.sh
. scripts/lib/image-base.sh

export CASSANDRA_VERSION="${CASSANDRA_VERSION:-5.0.9}"
IMAGE="${IMAGE:-localhost/mnist-cassandra:$CASSANDRA_VERSION}"
CONTEXT="$PWD/.cache/cassandra-image/context"

# pinned VERSION_OF NAME: the version pyproject.toml pins for a Python package, so the image's cqlsh is the one
# the tests use.
pinned() {
  sed -n "s/^[[:space:]]*\"$1==\([^\"]*\)\".*/\1/p" pyproject.toml | head -1 | grep . \
    || die "pyproject.toml pins no $1"
}

started=$SECONDS
cqlsh_version="$(pinned cqlsh)"
driver_version="$(pinned cassandra-driver)"
log "resolving cassandra-all $CASSANDRA_VERSION"
classpath="$(scripts/cassandra.sh classpath)"

log "build context $CONTEXT"
rm -rf "$CONTEXT"
mkdir -p "$CONTEXT/lib"
cp -r images/cassandra/. "$CONTEXT/"
IFS=: read -r -a jars <<<"$classpath"
# cp -p keeps the jars' times: an unchanged jar set gives an unchanged layer.
cp -p "${jars[@]}" "$CONTEXT/lib/"
log "${#jars[@]} jars, $(du -sh "$CONTEXT/lib" | cut -f1)"

if [[ -z "${BASE_IMAGE:-}" ]]; then
  build_base
fi

host_build_mounts
log "building $IMAGE on $BASE_IMAGE"
build_started=$SECONDS
podman_locked build --format docker --layers --network host "${ULIMITS[@]}" "${BUILD_MOUNTS[@]}" \
  --build-arg BASE_IMAGE="$BASE_IMAGE" --build-arg CASSANDRA_VERSION="$CASSANDRA_VERSION" \
  --build-arg CQLSH_VERSION="$cqlsh_version" --build-arg CASSANDRA_DRIVER_VERSION="$driver_version" \
  --tag "$IMAGE" --file "$CONTEXT/Containerfile" "$CONTEXT"
log "built $IMAGE in $((SECONDS - build_started))s ($((SECONDS - started))s in all), size $(image_size "$IMAGE")"
