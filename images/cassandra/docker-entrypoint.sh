#!/bin/bash
# The container's entrypoint, with the contract of the official `cassandra` image's docker-entrypoint.sh (this
# is a separate implementation of that behaviour, see docs/cassandra-image.md):
#
#   - no arguments, or a first argument starting with "-": run `cassandra -f <those arguments>`;
#   - `cassandra ...` as root: give the data, log and config folders to the cassandra user (999) and run as it;
#   - `cassandra ...`: write the CASSANDRA_* environment into $CASSANDRA_CONF/cassandra.yaml and
#     cassandra-rackdc.properties, then exec the command (anything else is exec'd unchanged, e.g. bash).
#
# Environment (empty or unset leaves the file's value): CASSANDRA_LISTEN_ADDRESS ("auto" = the container's
# first non-loopback IPv4 address, the default), CASSANDRA_BROADCAST_ADDRESS (default: the listen address;
# "auto" as above), CASSANDRA_RPC_ADDRESS (default 0.0.0.0), CASSANDRA_BROADCAST_RPC_ADDRESS (default: the
# broadcast address), CASSANDRA_SEEDS (default: the broadcast address, i.e. a cluster of one), CASSANDRA_CLUSTER_NAME,
# CASSANDRA_ENDPOINT_SNITCH, CASSANDRA_NUM_TOKENS, CASSANDRA_DC, CASSANDRA_RACK. Heap and JVM options
# (MAX_HEAP_SIZE, HEAP_NEWSIZE, JVM_OPTS, JVM_EXTRA_OPTS) are read by the `cassandra` launcher.
set -euo pipefail

CONF="${CASSANDRA_CONF:-/etc/cassandra}"

if [[ $# -eq 0 || "${1:0:1}" == "-" ]]; then
  set -- cassandra -f "$@"
fi

if [[ "$1" == cassandra && "$(id -u)" == 0 ]]; then
  # Volumes mounted by root (a fresh PVC, a bind mount) become the cassandra user's before it starts.
  find /var/lib/cassandra /var/log/cassandra "$CONF" ! -user cassandra -exec chown cassandra:cassandra {} +
  exec setpriv --reuid=cassandra --regid=cassandra --init-groups "$0" "$@"
fi

# first_address: the first IPv4 address of an interface other than lo (the pod's or container's own).
first_address() {
  ip -o -4 address show | awk '$2 != "lo" { sub(/\/.*/, "", $4); print $4; exit }'
}

# rewrite FILE AWK_PROGRAM: FILE's content through awk (values passed in the environment), written back in
# place: no rename, so a file bind-mounted from a ConfigMap or an init container's volume works too.
rewrite() {
  local file="$1" program="$2" edited
  edited="$(awk "$program" "$file")"
  printf '%s\n' "$edited" >"$file"
}

# set_yaml KEY VALUE: the top-level `KEY:` line of cassandra.yaml (commented out or not) becomes `KEY: VALUE`;
# appended when the file has no such line.
set_yaml() {
  KEY="$1" VALUE="$2" rewrite "$CONF/cassandra.yaml" '
    BEGIN { key = ENVIRON["KEY"]; line = key ": " ENVIRON["VALUE"] }
    !done && (index($0, key ":") == 1 || index($0, "# " key ":") == 1) { print line; done = 1; next }
    { print }
    END { if (!done) print line }'
}

# set_seeds LIST: the seeds parameter of the seed provider.
set_seeds() {
  VALUE="$1" rewrite "$CONF/cassandra.yaml" '
    /^[[:space:]]*- seeds:/ { sub(/- seeds:.*/, "- seeds: \"" ENVIRON["VALUE"] "\"") }
    { print }'
}

# set_property FILE KEY VALUE: `KEY=VALUE` in a .properties file (replaced, or appended).
set_property() {
  KEY="$2" VALUE="$3" rewrite "$1" '
    BEGIN { key = ENVIRON["KEY"]; line = key "=" ENVIRON["VALUE"] }
    !done && index($0, key "=") == 1 { print line; done = 1; next }
    { print }
    END { if (!done) print line }'
}

if [[ "$1" == cassandra ]]; then
  CASSANDRA_RPC_ADDRESS="${CASSANDRA_RPC_ADDRESS-0.0.0.0}"
  CASSANDRA_LISTEN_ADDRESS="${CASSANDRA_LISTEN_ADDRESS-auto}"
  if [[ "$CASSANDRA_LISTEN_ADDRESS" == auto ]]; then
    CASSANDRA_LISTEN_ADDRESS="$(first_address)"
  fi
  CASSANDRA_BROADCAST_ADDRESS="${CASSANDRA_BROADCAST_ADDRESS-$CASSANDRA_LISTEN_ADDRESS}"
  if [[ "$CASSANDRA_BROADCAST_ADDRESS" == auto ]]; then
    CASSANDRA_BROADCAST_ADDRESS="$(first_address)"
  fi
  CASSANDRA_BROADCAST_RPC_ADDRESS="${CASSANDRA_BROADCAST_RPC_ADDRESS:-$CASSANDRA_BROADCAST_ADDRESS}"
  CASSANDRA_SEEDS="${CASSANDRA_SEEDS:-$CASSANDRA_BROADCAST_ADDRESS}"

  set_seeds "$CASSANDRA_SEEDS"
  for key in listen_address broadcast_address rpc_address broadcast_rpc_address cluster_name endpoint_snitch \
    num_tokens; do
    var="CASSANDRA_${key^^}"
    if [[ -n "${!var:-}" ]]; then
      set_yaml "$key" "${!var}"
    fi
  done
  for key in dc rack; do
    var="CASSANDRA_${key^^}"
    if [[ -n "${!var:-}" ]]; then
      set_property "$CONF/cassandra-rackdc.properties" "$key" "${!var}"
    fi
  done
fi

exec "$@"
