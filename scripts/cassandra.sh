#!/usr/bin/env bash
# A real Apache Cassandra for development and tests, without Docker: the jars come from Maven Central
# through mvn (cached in ~/.m2), the JVM is the installed Java 17, config is written here.
#
#   scripts/cassandra.sh up             one node on 127.0.0.1:9042 (PasswordAuthenticator, cassandra/cassandra;
#                                       TLS optional, CA in $CASSANDRA_STATE/tls/ca.pem, a client certificate
#                                       it signed in tls/client.pem + tls/client.key)
#   scripts/cassandra.sh down           stop it (SIGTERM: Cassandra drains, then exits)
#   scripts/cassandra.sh kill           SIGKILL it (for fault tests; `up` restarts on the same data)
#   scripts/cassandra.sh cluster-up     three nodes on 127.0.0.1, 127.0.0.2, 127.0.0.3 (same port); returns
#                                       once every node reports every node Up and Normal (nodetool status)
#   scripts/cassandra.sh cluster-start  the same, but returns once node 1 accepts CQL (2 and 3 still joining)
#   scripts/cassandra.sh cluster-down   stop them (cluster-kill: SIGKILL them)
#   scripts/cassandra.sh stop-node N    stop node N of the cluster (1..3); cluster-up starts it again
#   scripts/cassandra.sh status         which nodes run, and where
#   scripts/cassandra.sh wipe           stop everything and delete all data
#   scripts/cassandra.sh classpath      resolve the jars (once) and print their classpath (the image build uses it)
#
# Environment: CASSANDRA_VERSION (5.0.9), CASSANDRA_STATE (./var/cassandra), CASSANDRA_HEAP (1G; 512M per
# cluster node), CASSANDRA_PORT (CQL, 9042), CASSANDRA_STORAGE_PORT (between nodes, 7000),
# CASSANDRA_COMMITLOG_SYNC (batch; periodic is faster but loses acknowledged writes on a crash),
# CASSANDRA_CLIENT_AUTH (empty; `required`: the node takes TLS connections only, each with a client
# certificate signed by the CA), CASSANDRA_START_TIMEOUT (180 s), CASSANDRA_JMX_PORT (7199: cluster node N listens on 127.0.0.1:7199+N
# for nodetool).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VERSION="${CASSANDRA_VERSION:-5.0.9}"
STATE="${CASSANDRA_STATE:-$ROOT/var/cassandra}"
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/mnist-service"
PORT="${CASSANDRA_PORT:-9042}"
STORAGE_PORT="${CASSANDRA_STORAGE_PORT:-7000}"
COMMITLOG_SYNC="${CASSANDRA_COMMITLOG_SYNC:-batch}"
START_TIMEOUT="${CASSANDRA_START_TIMEOUT:-180}"
JMX_PORT="${CASSANDRA_JMX_PORT:-7199}"
CLIENT_AUTH="${CASSANDRA_CLIENT_AUTH:-}"
[[ -z "$CLIENT_AUTH" || "$CLIENT_AUTH" == required ]] || {
  echo "cassandra: error: CASSANDRA_CLIENT_AUTH=$CLIENT_AUTH: use required, or leave it empty" >&2
  exit 2
}
DEPENDENCY_PLUGIN="org.apache.maven.plugins:maven-dependency-plugin:3.8.1"
CLASSPATH_FILE="$CACHE/cassandra-$VERSION.classpath"
JVM_OPTIONS_FILE="$ROOT/images/cassandra/conf/jvm17-server.options"

log() { echo "cassandra: $*" >&2; }
die() { log "error: $*"; exit 1; }

# --- download (once) -------------------------------------------------------------------------------------

# Maven Central publishes no binary tarball of Cassandra, only cassandra-all and its dependencies; mvn resolves
# them into ~/.m2 and writes the classpath, which is cached so a second start skips mvn entirely.
resolve_classpath() {
  if [[ -s "$CLASSPATH_FILE" ]] && classpath_complete; then
    return
  fi
  command -v mvn >/dev/null || die "mvn is not installed (apt-get install maven)"
  mkdir -p "$CACHE"
  local work
  work="$(mktemp -d)"
  cat >"$work/pom.xml" <<EOF
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.mnist-service</groupId>
  <artifactId>cassandra-runtime</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.cassandra</groupId>
      <artifactId>cassandra-all</artifactId>
      <version>$VERSION</version>
    </dependency>
  </dependencies>
</project>
EOF
  log "resolving org.apache.cassandra:cassandra-all:$VERSION and its runtime dependencies with mvn (~70 MB, once)"
  if ! (cd "$work" && mvn -B -ntp "$DEPENDENCY_PLUGIN:build-classpath" -DincludeScope=runtime \
      -Dmdep.outputFile="$CLASSPATH_FILE.tmp" >"$work/mvn.log" 2>&1); then
    tail -30 "$work/mvn.log" >&2
    die "mvn could not resolve cassandra-all $VERSION (log above)"
  fi
  mv "$CLASSPATH_FILE.tmp" "$CLASSPATH_FILE"
  rm -rf "$work"
  log "cached the classpath in $CLASSPATH_FILE"
}

classpath_complete() {
  local jar
  IFS=: read -r -a jars <"$CLASSPATH_FILE"
  for jar in "${jars[@]}"; do [[ -f "$jar" ]] || return 1; done
}

# --- configuration -----------------------------------------------------------------------------------------

# node_dir N -> the folder holding node N's config, data, logs and pid ("single" for the one-node setup).
node_dir() { echo "$STATE/$1"; }

# TLS for clients (optional: the port takes TLS and plaintext connections alike, unless CASSANDRA_CLIENT_AUTH
# is required). One CA per state folder, `$STATE/tls/ca.pem` for clients (MNIST_CASSANDRA_TLS_CA); a node
# certificate valid for 127.0.0.1-3; a client certificate (MNIST_CASSANDRA_TLS_CERT / _KEY) and the
# truststore with the CA that the node checks client certificates against.
ensure_tls() {
  local tls="$STATE/tls"
  ensure_node_tls "$tls"
  ensure_client_tls "$tls"
}

ensure_node_tls() {
  local tls="$1"
  [[ -s "$tls/node.p12" && -s "$tls/ca.pem" ]] && return
  command -v openssl >/dev/null || die "openssl is not installed (apt-get install openssl)"
  mkdir -p "$tls"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 -subj "/CN=mnist-dev-ca" \
    -keyout "$tls/ca.key" -out "$tls/ca.pem" 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=cassandra" \
    -keyout "$tls/node.key" -out "$tls/node.csr" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1,IP:127.0.0.2,IP:127.0.0.3,DNS:localhost\n' >"$tls/san.ext"
  openssl x509 -req -in "$tls/node.csr" -CA "$tls/ca.pem" -CAkey "$tls/ca.key" -CAcreateserial -days 3650 \
    -extfile "$tls/san.ext" -out "$tls/node.pem" 2>/dev/null
  openssl pkcs12 -export -in "$tls/node.pem" -inkey "$tls/node.key" -certfile "$tls/ca.pem" -name cassandra \
    -passout pass:cassandra -out "$tls/node.p12"
}

ensure_client_tls() {
  local tls="$1"
  [[ -s "$tls/client.pem" && -s "$tls/client.key" && -s "$tls/truststore.p12" ]] && return
  command -v keytool >/dev/null || die "keytool is not installed (it comes with openjdk-17-jre-headless)"
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=mnist-service" \
    -keyout "$tls/client.key" -out "$tls/client.csr" 2>/dev/null
  printf 'extendedKeyUsage=clientAuth\n' >"$tls/client.ext"
  openssl x509 -req -in "$tls/client.csr" -CA "$tls/ca.pem" -CAkey "$tls/ca.key" -CAcreateserial -days 3650 \
    -extfile "$tls/client.ext" -out "$tls/client.pem" 2>/dev/null
  chmod 600 "$tls/client.key"
  rm -f "$tls/truststore.p12"
  keytool -importcert -noprompt -alias mnist-dev-ca -file "$tls/ca.pem" -keystore "$tls/truststore.p12" \
    -storetype PKCS12 -storepass cassandra >/dev/null 2>&1
}

# client_encryption_options: TLS optional for everyone, or (CASSANDRA_CLIENT_AUTH=required) TLS only, with a
# client certificate the CA signed.
client_encryption() {
  if [[ "$CLIENT_AUTH" == required ]]; then
    printf '  optional: false\n  require_client_auth: true\n  truststore: %s\n  truststore_password: cassandra\n' \
      "$STATE/tls/truststore.p12"
  else
    printf '  optional: true\n'
  fi
}

# write_config DIR ADDRESS SEEDS CLUSTER_NAME INITIAL_TOKEN AUTHENTICATOR
write_config() {
  local dir="$1" address="$2" seeds="$3" cluster="$4" token="$5" authenticator="$6"
  mkdir -p "$dir"/{conf,data,commitlog,saved_caches,hints,cdc_raw,logs}
  # Only what differs from Cassandra's defaults, plus what makes a test node start and stop fast.
  cat >"$dir/conf/cassandra.yaml" <<EOF
cluster_name: $cluster
num_tokens: 1
initial_token: $token
partitioner: org.apache.cassandra.dht.Murmur3Partitioner
endpoint_snitch: SimpleSnitch
seed_provider:
  - class_name: org.apache.cassandra.locator.SimpleSeedProvider
    parameters:
      - seeds: "$seeds"
listen_address: $address
rpc_address: $address
native_transport_port: $PORT
storage_port: $STORAGE_PORT
start_native_transport: true
client_encryption_options:
  enabled: true
$(client_encryption)
  keystore: $STATE/tls/node.p12
  keystore_password: cassandra
  store_type: PKCS12
authenticator: $authenticator
authorizer: AllowAllAuthorizer
role_manager: CassandraRoleManager
data_file_directories:
  - $dir/data
commitlog_directory: $dir/commitlog
saved_caches_directory: $dir/saved_caches
hints_directory: $dir/hints
cdc_raw_directory: $dir/cdc_raw
# Acknowledge a write only once its commit log entry is fsynced: with the default (periodic, 10 s) a
# SIGKILLed node forgets the writes of its last seconds, and one node has no replica to repair them from.
commitlog_sync: $COMMITLOG_SYNC
$([[ "$COMMITLOG_SYNC" == periodic ]] && echo "commitlog_sync_period: 10000ms")
commitlog_segment_size: 16MiB
storage_compatibility_mode: NONE
# Tests create and drop keyspaces all the time: no snapshot on drop/truncate.
auto_snapshot: false
concurrent_compactors: 1
materialized_views_enabled: false
sasi_indexes_enabled: false
user_defined_functions_enabled: false
EOF
  cat >"$dir/conf/logback.xml" <<EOF
<configuration scan="false">
  <appender name="FILE" class="ch.qos.logback.core.FileAppender">
    <file>$dir/logs/system.log</file>
    <encoder><pattern>%-5level [%thread] %date{ISO8601} %F:%L - %msg%n</pattern></encoder>
  </appender>
  <root level="INFO"><appender-ref ref="FILE"/></root>
  <logger name="org.apache.cassandra" level="INFO"/>
</configuration>
EOF
}

# --- processes -------------------------------------------------------------------------------------------

pid_of() {
  local pidfile="$1/cassandra.pid"
  [[ -f "$pidfile" ]] || return 1
  local pid
  pid="$(cat "$pidfile")"
  [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null && grep -q CassandraDaemon "/proc/$pid/cmdline" 2>/dev/null \
    && echo "$pid"
}

# start_node DIR ADDRESS HEAP [extra -D options...]
start_node() {
  local dir="$1" address="$2" heap="$3"
  shift 3
  if pid_of "$dir" >/dev/null; then
    log "$address already running (pid $(pid_of "$dir"))"
    return
  fi
  if port_open "$address" "$PORT"; then
    die "something else already listens on $address:$PORT"
  fi
  local classpath jamm
  classpath="$dir/conf:$(cat "$CLASSPATH_FILE")"
  jamm="$(tr : '\n' <"$CLASSPATH_FILE" | grep '/jamm-[^/]*\.jar$' | head -1)"
  # The JPMS, GC and JVM flags: one file for these nodes and the mnist-cassandra image.
  local jvm_flags
  mapfile -t jvm_flags < <(grep -E '^-' "$JVM_OPTIONS_FILE")
  local opts=(
    "${jvm_flags[@]}"
    -XX:HeapDumpPath="$dir/logs"
    "-Xms$heap" "-Xmx$heap"
    -javaagent:"$jamm"
    -Dcassandra.config="file://$dir/conf/cassandra.yaml"
    -Dlogback.configurationFile="$dir/conf/logback.xml"
    -Dcassandra.logdir="$dir/logs"
    -Dcassandra.storagedir="$dir"
    -Dcassandra-foreground=yes
    # Test-node shortcuts: no 30 s gossip settling or ring delay, the default superuser created at once.
    -Dcassandra.skip_wait_for_gossip_to_settle=0
    -Dcassandra.ring_delay_ms=1000
    -Dcassandra.superuser_setup_delay_ms=0
    "$@"
  )
  log "starting $address:$PORT (heap $heap, log $dir/logs/system.log)"
  # setsid: the node must outlive the shell (and the test process) that started it.
  setsid java "${opts[@]}" -cp "$classpath" org.apache.cassandra.service.CassandraDaemon \
    >"$dir/logs/stdout.log" 2>&1 </dev/null &
  echo $! >"$dir/cassandra.pid"
}

port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

# nodetool JMX_PORT ARGS...: Cassandra's own nodetool (in cassandra-all), against a node's local JMX port;
# the flags are the ones of Cassandra's jvm17-clients.options it needs, its history file stays in $STATE.
nodetool() {
  local port="$1"
  shift
  local quiet="$STATE/logback-tools.xml"
  [[ -s "$quiet" ]] || echo '<configuration><root level="WARN"/></configuration>' >"$quiet"
  java -Xmx128m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Duser.home="$STATE" \
    -Dlogback.configurationFile="$quiet" --add-exports java.base/sun.nio.ch=ALL-UNNAMED \
    --add-exports java.base/jdk.internal.misc=ALL-UNNAMED --add-exports java.base/jdk.internal.ref=ALL-UNNAMED \
    -cp "$(cat "$CLASSPATH_FILE")" org.apache.cassandra.tools.NodeTool -h 127.0.0.1 -p "$port" "$@"
}

# ring_view N: node N's `nodetool status` as "state address" lines (UN 127.0.0.2 = Up, Normal); empty while
# its JMX port is not open yet.
ring_view() {
  { nodetool "$((JMX_PORT + $1))" status 2>/dev/null || true; } | awk '$1 ~ /^[UD][NLJM]$/ {print $1, $2}' | sort
}

# wait_for_ring: until each of the three nodes reports all three Up and Normal. Accepting CQL is not
# enough: a node whose peers have not yet gossiped it alive answers a quorum write with Unavailable.
wait_for_ring() {
  local start=$SECONDS want n view said=-10
  want="$(printf 'UN 127.0.0.%s\n' 1 2 3)"
  while true; do
    local ready=0 report=()
    for n in 1 2 3; do
      view="$(ring_view "$n")"
      [[ "$view" == "$want" ]] && ready=$((ready + 1))
      report+=("node$n sees [$(echo "$view" | paste -sd, -)]")
    done
    if ((ready == 3)); then
      log "every node reports every node Up and Normal after $((SECONDS - start))s"
      return
    fi
    if ((SECONDS - start > START_TIMEOUT)); then
      die "the nodes did not all see each other Up and Normal within ${START_TIMEOUT}s: ${report[*]}"
    fi
    if ((SECONDS - said >= 10)); then
      log "waiting for the ring ($((SECONDS - start))s): ${report[*]}"
      said=$SECONDS
    fi
    sleep 1
  done
}

# wait_for_cql DIR ADDRESS: until the native port accepts connections (Cassandra opens it last).
wait_for_cql() {
  local dir="$1" address="$2" start=$SECONDS
  until port_open "$address" "$PORT"; do
    # kill -0, not pid_of: just after the fork the child may not have exec'd java yet.
    if ! kill -0 "$(cat "$dir/cassandra.pid")" 2>/dev/null; then
      tail -20 "$dir/logs/stdout.log" >&2 || true
      grep -E "ERROR|Exception" "$dir/logs/system.log" 2>/dev/null | tail -10 >&2 || true
      die "the node at $address exited during startup (logs in $dir/logs)"
    fi
    if ((SECONDS - start > START_TIMEOUT)); then
      die "$address:$PORT did not accept CQL connections within ${START_TIMEOUT}s (logs in $dir/logs)"
    fi
    if (((SECONDS - start) % 10 == 0 && SECONDS > start)); then
      log "waiting for $address:$PORT ... $((SECONDS - start))s"
    fi
    sleep 1
  done
  log "$address:$PORT accepts CQL connections after $((SECONDS - start))s"
}

stop_node() {
  local dir="$1" signal="${2:-TERM}" pid
  if ! pid="$(pid_of "$dir")"; then
    rm -f "$dir/cassandra.pid"
    return
  fi
  log "stopping pid $pid with SIG$signal"
  kill "-$signal" "$pid"
  local waited=0
  while kill -0 "$pid" 2>/dev/null; do
    sleep 0.5
    waited=$((waited + 1))
    if ((waited == 120)); then
      log "pid $pid still running after 60s; SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  done
  rm -f "$dir/cassandra.pid"
}

# Balanced Murmur3 tokens for N nodes with one token each: -2^63 + i * 2^64 / N.
token_for() {
  python3 -c "print(-2**63 + ($1 - 1) * 2**64 // $2)"
}

# --- commands --------------------------------------------------------------------------------------------

cluster_running() {
  local n
  for n in 1 2 3; do pid_of "$(node_dir "node$n")" >/dev/null && return 0; done
  return 1
}

cmd_up() {
  command -v java >/dev/null || die "java is not installed (Java 17: apt-get install openjdk-17-jre-headless)"
  cluster_running && die "the 3-node cluster is running on the same addresses; run: $0 cluster-down"
  resolve_classpath
  ensure_tls
  local dir
  dir="$(node_dir single)"
  local started=$SECONDS
  if ! pid_of "$dir" >/dev/null; then
    write_config "$dir" 127.0.0.1 127.0.0.1 mnist-dev "$(token_for 1 1)" PasswordAuthenticator
  fi
  start_node "$dir" 127.0.0.1 "${CASSANDRA_HEAP:-1G}"
  wait_for_cql "$dir" 127.0.0.1
  log "up in $((SECONDS - started))s: cassandra://cassandra:cassandra@127.0.0.1:$PORT/<keyspace>"
}

# cmd_cluster_up [ring|seed]: ring (cluster-up) returns once the ring is complete; seed (cluster-start) as
# soon as node 1 accepts CQL, nodes 2 and 3 still starting (to test what runs while a cluster forms).
cmd_cluster_up() {
  local until="${1:-ring}"
  command -v java >/dev/null || die "java is not installed (Java 17: apt-get install openjdk-17-jre-headless)"
  pid_of "$(node_dir single)" >/dev/null && die "the single node runs on 127.0.0.1:$PORT; run: $0 down"
  resolve_classpath
  ensure_tls
  local started=$SECONDS n address dir
  # The seed first; the others join it together (fixed tokens, no bootstrap streaming on an empty cluster).
  for n in 1 2 3; do
    address="127.0.0.$n"
    dir="$(node_dir "node$n")"
    # AllowAllAuthenticator: with system_auth at RF=1 a stopped node would take logins down with it.
    pid_of "$dir" >/dev/null || write_config "$dir" "$address" 127.0.0.1 mnist-cluster "$(token_for "$n" 3)" \
      AllowAllAuthenticator
    start_node "$dir" "$address" "${CASSANDRA_HEAP:-512M}" -Dcassandra.consistent.rangemovement=false \
      -Dcassandra.auto_bootstrap=false -Dcassandra.jmx.local.port="$((JMX_PORT + n))"
    if ((n == 1)); then wait_for_cql "$dir" "$address"; fi
  done
  if [[ "$until" == seed ]]; then
    log "node 1 up after $((SECONDS - started))s; nodes 2 and 3 still starting"
    return
  fi
  for n in 2 3; do wait_for_cql "$(node_dir "node$n")" "127.0.0.$n"; done
  wait_for_ring
  log "cluster up in $((SECONDS - started))s: cassandra://127.0.0.1,127.0.0.2,127.0.0.3:$PORT/<keyspace>"
}

cmd_status() {
  local name dir pid any=0
  for name in single node1 node2 node3; do
    dir="$(node_dir "$name")"
    if pid="$(pid_of "$dir")"; then
      local address
      address="$(awk '/^listen_address:/ {print $2}' "$dir/conf/cassandra.yaml")"
      if port_open "$address" "$PORT"; then
        echo "$name: running (pid $pid), CQL on $address:$PORT"
      else
        echo "$name: starting (pid $pid), CQL not yet on $address:$PORT"
      fi
      any=1
    fi
  done
  ((any)) || echo "no Cassandra node running (state in $STATE)"
}

case "${1:-}" in
  up) cmd_up ;;
  down) stop_node "$(node_dir single)" TERM ;;
  kill) stop_node "$(node_dir single)" KILL ;;
  cluster-up) cmd_cluster_up ring ;;
  cluster-start) cmd_cluster_up seed ;;
  cluster-down) for n in 3 2 1; do stop_node "$(node_dir "node$n")" TERM; done ;;
  cluster-kill) for n in 3 2 1; do stop_node "$(node_dir "node$n")" KILL; done ;;
  stop-node)
    [[ "${2:-}" =~ ^[123]$ ]] || die "usage: $0 stop-node 1|2|3"
    stop_node "$(node_dir "node$2")" TERM
    ;;
  status) cmd_status ;;
  classpath)
    resolve_classpath
    cat "$CLASSPATH_FILE"
    ;;
  wipe)
    stop_node "$(node_dir single)" TERM
    for n in 3 2 1; do stop_node "$(node_dir "node$n")" TERM; done
    rm -rf "$STATE"
    log "removed $STATE"
    ;;
  *)
    awk 'NR > 1 && !/^#/ {exit} NR > 1 {sub(/^# ?/, ""); print}' "$0"
    exit 2
    ;;
esac
