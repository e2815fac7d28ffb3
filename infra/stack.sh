#!/usr/bin/env bash
# Local data-platform services without Docker: a single-node Apache Kafka (KRaft, broker+controller)
# run from the official Maven Central jars on the machine's JDK, and a MinIO S3 server built from its
# Go module. Everything binds to 127.0.0.1; all state lives under one data folder.
#
# usage: infra/stack.sh COMMAND
#   install                 fetch the Kafka jars (mvn) and build MinIO (go install) if missing, and
#                           build the Kafka bridge (qrsdp_sim/kafka/bridge) when its source is newer
#   bridge-build            (re)build the Kafka bridge binary infra/.build/bin/qrsdp-kafka-bridge
#   up                      install if needed, start Kafka and MinIO, wait until healthy,
#                           create topics exchange.events / exchange.events.dlq and bucket exchange-data
#   down                    stop both (SIGTERM, wait, then SIGKILL); fine when nothing runs
#   status                  what runs, and whether it answers (exit 0 only when both are healthy)
#   env                     print export lines for clients (brokers, S3 endpoint, credentials)
#   kafka-start|kafka-stop  start or stop Kafka alone ("kafka-stop kill" sends SIGKILL at once)
#   minio-start|minio-stop  start or stop MinIO alone ("minio-stop kill" sends SIGKILL at once)
#   itch-start|itch-stop    start or stop the ITCH streamer (`qrsdp itch-stream`) as a supervised
#                           background process consuming the stack's Kafka ("itch-stop kill": SIGKILL)
#   kafka-run-class CLASS [ARGS...]   run a Kafka tool class on the installed classpath
#   compose-check           validate infra/docker-compose.yml with compose-go (the library behind
#                           `docker compose config`; no Docker needed) and print the normalized file
#   kafka-perf [RECORDS [PROP=VALUE...]]  Kafka's ProducerPerformance at 26-byte records
#                           (acks=all, linger.ms=5, lz4; extra producer properties may follow)
#
# environment (all optional):
#   QRSDP_STACK_DIR              data folder               (default <project>/data/stack)
#   QRSDP_KAFKA_PORT             Kafka client port         (default 9092)
#   QRSDP_KAFKA_CONTROLLER_PORT  KRaft controller port     (default Kafka port + 1)
#   QRSDP_MINIO_PORT             MinIO S3 port             (default 9000)
#   MINIO_ROOT_USER / MINIO_ROOT_PASSWORD   S3 credentials (default qrsdp / qrsdp-secret)
#   QRSDP_KAFKA_PARTITIONS       partitions of exchange.events (default 6, see docs)
#   QRSDP_KAFKA_HEAP             broker max heap           (default 512m)
#   QRSDP_STACK_TIMEOUT          seconds to wait for health (default 90)
#   QRSDP_PYTHON                 Python with confluent_kafka + boto3 (default: uv run python)
#   QRSDP_STACK_ITCH             1: up/down/status also start/stop/report the ITCH streamer (default 0:
#                                opt-in, so private test stacks never put a feed on the multicast group)
#   QRSDP_ITCH_ARGS              extra `qrsdp itch-stream` options, word-split (e.g. "--unicast H:P")
#   QRSDP_ITCH_TOPIC             topic the streamer consumes (default exchange.events)
#   QRSDP_ITCH_GROUP             its consumer group           (default itch-streamer)
#   JAVA                         java binary               (default java on PATH, needs >= 17)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
INFRA="$ROOT/infra"
BUILD="$INFRA/.build"
RUN_DIR="$INFRA/.run"
LIBS="$BUILD/kafka/libs"
MINIO_BIN="$BUILD/bin/minio"
BRIDGE_SRC="$ROOT/qrsdp_sim/kafka/bridge"
BRIDGE_BIN="$BUILD/bin/qrsdp-kafka-bridge"
BRIDGE_MIN_GO_MINOR=26   # franz-go v1.22 needs Go >= 1.26

STACK_DIR="${QRSDP_STACK_DIR:-$ROOT/data/stack}"
KAFKA_PORT="${QRSDP_KAFKA_PORT:-9092}"
CONTROLLER_PORT="${QRSDP_KAFKA_CONTROLLER_PORT:-$((KAFKA_PORT + 1))}"
MINIO_PORT="${QRSDP_MINIO_PORT:-9000}"
export MINIO_ROOT_USER="${MINIO_ROOT_USER:-qrsdp}"
export MINIO_ROOT_PASSWORD="${MINIO_ROOT_PASSWORD:-qrsdp-secret}"
PARTITIONS="${QRSDP_KAFKA_PARTITIONS:-6}"
HEAP="${QRSDP_KAFKA_HEAP:-512m}"
TIMEOUT="${QRSDP_STACK_TIMEOUT:-90}"
JAVA="${JAVA:-java}"

EVENTS_TOPIC="exchange.events"
DLQ_TOPIC="exchange.events.dlq"
BUCKET="exchange-data"

KAFKA_DIR="$STACK_DIR/kafka"
KAFKA_DATA="$KAFKA_DIR/data"
KAFKA_LOGS="$KAFKA_DIR/logs"
KAFKA_CONF="$KAFKA_DIR/server.properties"
MINIO_DIR="$STACK_DIR/minio"
MINIO_DATA="$MINIO_DIR/data"
MINIO_LOGS="$MINIO_DIR/logs"
KAFKA_PID="$RUN_DIR/kafka-$KAFKA_PORT.pid"
ITCH_ENABLED="${QRSDP_STACK_ITCH:-0}"
ITCH_TOPIC="${QRSDP_ITCH_TOPIC:-exchange.events}"
ITCH_GROUP="${QRSDP_ITCH_GROUP:-itch-streamer}"
ITCH_DIR="$STACK_DIR/itch"
ITCH_LOG="$ITCH_DIR/itch-stream.log"
ITCH_PID="$RUN_DIR/itch-$KAFKA_PORT.pid"   # keyed by the broker it consumes from
MINIO_PID="$RUN_DIR/minio-$MINIO_PORT.pid"
BOOTSTRAP="127.0.0.1:$KAFKA_PORT"
S3_ENDPOINT="http://127.0.0.1:$MINIO_PORT"

log() { printf '%s\n' "$*"; }
die() { printf 'stack: error: %s\n' "$*" >&2; exit 1; }

# Last lines of a log file, to stderr, when a service fails.
tail_log() {
  local file="$1"
  if [[ -s "$file" ]]; then
    printf -- '--- last lines of %s ---\n' "$file" >&2
    tail -n 40 "$file" >&2
    printf -- '--- end ---\n' >&2
  fi
}

python_cmd() {
  if [[ -n "${QRSDP_PYTHON:-}" ]]; then
    "$QRSDP_PYTHON" "$@"
  elif command -v uv >/dev/null 2>&1; then
    uv run --project "$ROOT" --quiet python "$@"
  else
    python3 "$@"
  fi
}

probe() { python_cmd "$INFRA/probe.py" "$@"; }

kafka_version() { sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$INFRA/kafka/pom.xml"; }

# ---------------------------------------------------------------- processes

# pid from a pid file when that process is alive and is the expected program, else nothing.
live_pid() {
  local pidfile="$1" marker="$2" pid
  [[ -f "$pidfile" ]] || return 0
  pid="$(cat "$pidfile" 2>/dev/null || true)"
  if [[ "$pid" =~ ^[0-9]+$ ]] && alive "$pid" \
     && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$marker"; then
    printf '%s' "$pid"
  else
    rm -f "$pidfile"   # stale
  fi
}
kafka_pid() { live_pid "$KAFKA_PID" "kafka.Kafka $KAFKA_CONF"; }
minio_pid() { live_pid "$MINIO_PID" "server --quiet --address 127.0.0.1:$MINIO_PORT"; }
itch_pid() { live_pid "$ITCH_PID" "itch-stream --kafka-brokers 127.0.0.1:$KAFKA_PORT "; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Start a command detached in its own session; its pid (same process after exec) goes to $pidfile.
spawn() {
  local pidfile="$1" out="$2" _
  shift 2
  rm -f "$pidfile"
  # shellcheck disable=SC2016  # $$ and $@ belong to the inner shell
  setsid -f bash -c 'echo $$ >"$1"; shift; exec "$@"' spawn "$pidfile" "$@" >>"$out" 2>&1 </dev/null
  for _ in $(seq 1 50); do
    [[ -s "$pidfile" ]] && return 0
    sleep 0.1
  done
  die "process did not start: $*"
}

# Alive and not a zombie (a detached child whose reaper is slow still counts as gone).
alive() {
  kill -0 "$1" 2>/dev/null || return 1
  local state
  state="$(sed -n 's/^[0-9]* (.*) \([A-Z]\).*/\1/p' "/proc/$1/stat" 2>/dev/null || true)"
  [[ "$state" != "Z" ]]
}

# SIGTERM, wait up to $3 seconds, then SIGKILL. $4 = "kill" sends SIGKILL straight away.
stop_pid() {
  local name="$1" pid="$2" grace="$3" mode="${4:-}" _
  if [[ "$mode" == "kill" ]]; then
    kill -KILL "$pid" 2>/dev/null || true
  else
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 $((grace * 10))); do
      alive "$pid" || break
      sleep 0.1
    done
    if alive "$pid"; then
      log "$name: still running after ${grace}s, sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  for _ in $(seq 1 50); do
    alive "$pid" || return 0
    sleep 0.1
  done
  die "$name (pid $pid) did not exit"
}

# ---------------------------------------------------------------- install

# Java, Maven and Go from the machine, else from apt / the Go module proxy (infra/ensure-tools.sh).
ensure_tools() {
  [[ -n "${_QRSDP_TOOLS_OK:-}" ]] && return 0
  local exports
  exports="$("$INFRA/ensure-tools.sh")" || die "could not install the toolchains the services need (see above)"
  eval "$exports"
  _QRSDP_TOOLS_OK=1
}

install_kafka() {
  local version; version="$(kafka_version)"
  if [[ -f "$LIBS/kafka_2.13-$version.jar" && -f "$LIBS/kafka-tools-$version.jar" ]]; then
    return 0
  fi
  ensure_tools
  command -v mvn >/dev/null 2>&1 || die "mvn not found (apt-get install maven)"
  log "kafka: fetching Apache Kafka $version jars with mvn into $LIBS"
  rm -rf "$LIBS"; mkdir -p "$LIBS"
  mvn -q -B -f "$INFRA/kafka/pom.xml" dependency:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$LIBS" \
    || die "mvn could not fetch the Kafka jars"
  [[ -f "$LIBS/kafka_2.13-$version.jar" ]] || die "kafka_2.13-$version.jar missing after mvn"
}

install_minio() {
  [[ -x "$MINIO_BIN" ]] && return 0
  ensure_tools
  "$INFRA/minio/build.sh"
}

# The Kafka bridge (Go, franz-go) is rebuilt when a source file is newer than the binary.
bridge_stale() {
  [[ -x "$BRIDGE_BIN" ]] || return 0
  [[ -n "$(find "$BRIDGE_SRC" -maxdepth 1 \( -name '*.go' -o -name go.mod -o -name go.sum \) \
           -newer "$BRIDGE_BIN" -print -quit)" ]]
}

build_bridge() {
  local minor=""
  command -v go >/dev/null 2>&1 && minor="$(go env GOVERSION 2>/dev/null | sed -n 's/^go1\.\([0-9]*\).*/\1/p')"
  # A Go older than the module needs is upgraded by the go command itself (GOTOOLCHAIN=auto fetches
  # golang.org/toolchain from the Go module proxy); ensure-tools provides some Go first.
  [[ -n "$minor" && "$minor" -ge $BRIDGE_MIN_GO_MINOR ]] || ensure_tools
  command -v go >/dev/null 2>&1 || { log "bridge: 'go' not found"; return 1; }
  mkdir -p "$BUILD/bin"
  log "bridge: building qrsdp-kafka-bridge from $BRIDGE_SRC into $BUILD/bin"
  (cd "$BRIDGE_SRC" && CGO_ENABLED=0 GOBIN="$BUILD/bin" GOTOOLCHAIN=auto GOFLAGS="${GOFLAGS:-} -trimpath" \
    nice -n 10 go install .) || return 1
  touch "$BRIDGE_BIN"   # an unchanged build keeps the old file: mark it current
}

# Optional service part: a failed bridge build warns (Python falls back to confluent-kafka).
install_bridge() {
  bridge_stale || return 0
  build_bridge || log "bridge: WARNING: could not build qrsdp-kafka-bridge (see above); Kafka clients use confluent-kafka"
}

check_java() {
  command -v "$JAVA" >/dev/null 2>&1 || ensure_tools
  command -v "$JAVA" >/dev/null 2>&1 || die "java not found (needs JDK/JRE >= 17)"
  local v
  v="$("$JAVA" -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -1)"
  [[ -n "$v" && "$v" -ge 17 ]] || die "java >= 17 needed, found: $("$JAVA" -version 2>&1 | head -1)"
}

# ---------------------------------------------------------------- kafka

KAFKA_JVM=(-Xms128m "-Xmx$HEAP" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:+ExitOnOutOfMemoryError
  -Djava.awt.headless=true "-Dlog4j2.configurationFile=$INFRA/kafka/log4j2.yaml"
  "-Dkafka.logs.dir=$KAFKA_LOGS" -cp "$LIBS/*")

kafka_java() { "$JAVA" "${KAFKA_JVM[@]}" "$@"; }

kafka_prepare() {
  mkdir -p "$KAFKA_DATA" "$KAFKA_LOGS" "$RUN_DIR"
  sed -e "s|@KAFKA_PORT@|$KAFKA_PORT|g" -e "s|@CONTROLLER_PORT@|$CONTROLLER_PORT|g" \
      -e "s|@LOG_DIRS@|$KAFKA_DATA|g" "$INFRA/kafka/server.properties.template" >"$KAFKA_CONF.tmp"
  mv "$KAFKA_CONF.tmp" "$KAFKA_CONF"
  if [[ ! -f "$KAFKA_DATA/meta.properties" ]]; then
    if [[ ! -s "$KAFKA_DIR/cluster.id" ]]; then
      kafka_java kafka.tools.StorageTool random-uuid 2>>"$KAFKA_LOGS/format.log" \
        | tail -n 1 >"$KAFKA_DIR/cluster.id"
    fi
    local cid; cid="$(cat "$KAFKA_DIR/cluster.id")"
    [[ -n "$cid" ]] || { tail_log "$KAFKA_LOGS/format.log"; die "kafka: could not generate a cluster id"; }
    log "kafka: formatting KRaft storage in $KAFKA_DATA (cluster $cid)"
    kafka_java kafka.tools.StorageTool format -t "$cid" -c "$KAFKA_CONF" --ignore-formatted \
      >>"$KAFKA_LOGS/format.log" 2>&1 || { tail_log "$KAFKA_LOGS/format.log"; die "kafka: storage format failed"; }
  fi
}

# Start the broker process if it does not run; does not wait.
kafka_launch() {
  local pid; pid="$(kafka_pid)"
  if [[ -n "$pid" ]]; then
    log "kafka: already running (pid $pid) on $BOOTSTRAP"
    return 0
  fi
  install_kafka
  check_java
  port_open "$KAFKA_PORT" && die "port $KAFKA_PORT is in use by another process (set QRSDP_KAFKA_PORT)"
  port_open "$CONTROLLER_PORT" && die "port $CONTROLLER_PORT is in use by another process (set QRSDP_KAFKA_CONTROLLER_PORT)"
  kafka_prepare
  printf '\n=== start %s ===\n' "$(date -u +%FT%TZ)" >>"$KAFKA_LOGS/kafka.out"
  spawn "$KAFKA_PID" "$KAFKA_LOGS/kafka.out" "$JAVA" "${KAFKA_JVM[@]}" kafka.Kafka "$KAFKA_CONF"
  log "kafka: started pid $(cat "$KAFKA_PID") on $BOOTSTRAP (controller 127.0.0.1:$CONTROLLER_PORT)"
}

kafka_ready() {
  local pid; pid="$(kafka_pid)"
  [[ -n "$pid" ]] || { tail_log "$KAFKA_LOGS/kafka.out"; die "kafka is not running"; }
  if ! probe kafka-wait --bootstrap "$BOOTSTRAP" --timeout "$TIMEOUT" --pid "$pid"; then
    tail_log "$KAFKA_LOGS/kafka.out"
    tail_log "$KAFKA_LOGS/server.log"
    die "kafka did not become healthy (logs in $KAFKA_LOGS)"
  fi
  probe kafka-topics --bootstrap "$BOOTSTRAP" --timeout 30 \
    "$EVENTS_TOPIC:$PARTITIONS" "$DLQ_TOPIC:1" || die "kafka: topic creation failed"
  log "kafka: healthy on $BOOTSTRAP"
}

kafka_stop() {
  local pid; pid="$(kafka_pid)"
  if [[ -z "$pid" ]]; then
    log "kafka: not running"
    return 0
  fi
  log "kafka: stopping pid $pid"
  stop_pid kafka "$pid" 60 "${1:-}"
  rm -f "$KAFKA_PID"
  log "kafka: stopped"
}

# ---------------------------------------------------------------- minio

minio_launch() {
  local pid; pid="$(minio_pid)"
  if [[ -n "$pid" ]]; then
    log "minio: already running (pid $pid) on $S3_ENDPOINT"
    return 0
  fi
  install_minio
  port_open "$MINIO_PORT" && die "port $MINIO_PORT is in use by another process (set QRSDP_MINIO_PORT)"
  mkdir -p "$MINIO_DATA" "$MINIO_LOGS" "$RUN_DIR"
  printf '\n=== start %s ===\n' "$(date -u +%FT%TZ)" >>"$MINIO_LOGS/minio.log"
  # The console is off (MINIO_BROWSER=off); its address is pinned to loopback anyway.
  MINIO_BROWSER=off MINIO_UPDATE=off MINIO_CI_CD=1 \
    spawn "$MINIO_PID" "$MINIO_LOGS/minio.log" \
    "$MINIO_BIN" server --quiet --address "127.0.0.1:$MINIO_PORT" \
    --console-address "127.0.0.1:$((MINIO_PORT + 1))" "$MINIO_DATA"
  log "minio: started pid $(cat "$MINIO_PID") on $S3_ENDPOINT"
}

minio_ready() {
  local pid; pid="$(minio_pid)"
  [[ -n "$pid" ]] || { tail_log "$MINIO_LOGS/minio.log"; die "minio is not running"; }
  if ! probe minio-wait --endpoint "$S3_ENDPOINT" --timeout "$TIMEOUT" --pid "$pid"; then
    tail_log "$MINIO_LOGS/minio.log"
    die "minio did not become healthy (log in $MINIO_LOGS/minio.log)"
  fi
  probe minio-bucket --endpoint "$S3_ENDPOINT" --timeout 10 "$BUCKET" || die "minio: bucket creation failed"
  log "minio: healthy on $S3_ENDPOINT"
}

minio_stop() {
  local pid; pid="$(minio_pid)"
  if [[ -z "$pid" ]]; then
    log "minio: not running"
    return 0
  fi
  log "minio: stopping pid $pid"
  stop_pid minio "$pid" 20 "${1:-}"
  rm -f "$MINIO_PID"
  log "minio: stopped"
}

# ---------------------------------------------------------------- itch streamer

# The streamer as a program: the project's console script `qrsdp` (no uv process in between, so the
# pid file holds the streamer itself and SIGTERM reaches it), else `uv run --no-sync qrsdp`.
itch_program() {
  if [[ -x "$ROOT/.venv/bin/qrsdp" ]]; then
    ITCH_PROG=("$ROOT/.venv/bin/qrsdp")
  elif [[ -n "${QRSDP_PYTHON:-}" && -x "$(dirname "$QRSDP_PYTHON")/qrsdp" ]]; then
    ITCH_PROG=("$(dirname "$QRSDP_PYTHON")/qrsdp")
  elif command -v uv >/dev/null 2>&1; then
    ITCH_PROG=(uv run --project "$ROOT" --no-sync qrsdp)
  else
    die "itch: cannot find the qrsdp program (run 'uv sync' first)"
  fi
}

itch_start() {
  local pid; pid="$(itch_pid)"
  if [[ -n "$pid" ]]; then
    log "itch: already running (pid $pid), consuming $ITCH_TOPIC on $BOOTSTRAP"
    return 0
  fi
  [[ -n "$(kafka_pid)" ]] || die "itch: kafka is not running on $BOOTSTRAP (infra/stack.sh kafka-start)"
  mkdir -p "$ITCH_DIR" "$RUN_DIR"
  local extra=()
  itch_program
  # shellcheck disable=SC2206  # word-splitting of the extra options is intended
  [[ -n "${QRSDP_ITCH_ARGS:-}" ]] && extra=(${QRSDP_ITCH_ARGS})
  set -- "${ITCH_PROG[@]}" itch-stream --kafka-brokers "$BOOTSTRAP" --kafka-topic "$ITCH_TOPIC" \
    --consumer-group "$ITCH_GROUP" --verbose "${extra[@]}"
  printf '\n=== start %s ===\n' "$(date -u +%FT%TZ)" >>"$ITCH_LOG"
  spawn "$ITCH_PID" "$ITCH_LOG" "$@"
  pid="$(cat "$ITCH_PID")"
  # It must survive its start-up (imports, Kafka connection, group join); a bad option or an
  # unusable interface ends it within a few seconds.
  local _
  for _ in $(seq 1 30); do
    alive "$pid" || { tail_log "$ITCH_LOG"; rm -f "$ITCH_PID"; die "itch: streamer exited during start-up (log $ITCH_LOG)"; }
    sleep 0.1
  done
  log "itch: started pid $pid, consuming $ITCH_TOPIC on $BOOTSTRAP as group $ITCH_GROUP (log $ITCH_LOG)"
}

itch_stop() {
  local pid; pid="$(itch_pid)"
  if [[ -z "$pid" ]]; then
    log "itch: not running"
    return 0
  fi
  log "itch: stopping pid $pid"
  # SIGTERM: it finishes the packet being sent, commits and exits; re-requests stop being answered.
  stop_pid itch "$pid" 20 "${1:-}"
  rm -f "$ITCH_PID"
  log "itch: stopped"
}

itch_enabled() { [[ "$ITCH_ENABLED" == "1" || "$ITCH_ENABLED" == "true" || "$ITCH_ENABLED" == "yes" ]]; }

# ---------------------------------------------------------------- commands

cmd_status() {
  local rc=0 pid health
  pid="$(kafka_pid)"
  if [[ -n "$pid" ]]; then
    if probe kafka-health --bootstrap "$BOOTSTRAP" --timeout 3 2>/dev/null; then health=healthy
    else health=unhealthy; rc=3; fi
    log "kafka running pid=$pid address=$BOOTSTRAP health=$health"
  else
    log "kafka stopped address=$BOOTSTRAP"; rc=3
  fi
  pid="$(minio_pid)"
  if [[ -n "$pid" ]]; then
    if probe minio-health --endpoint "$S3_ENDPOINT" --timeout 3 2>/dev/null; then health=healthy
    else health=unhealthy; rc=3; fi
    log "minio running pid=$pid address=$S3_ENDPOINT health=$health"
  else
    log "minio stopped address=$S3_ENDPOINT"; rc=3
  fi
  if itch_enabled; then
    pid="$(itch_pid)"
    if [[ -n "$pid" ]]; then
      log "itch running pid=$pid address=$BOOTSTRAP/$ITCH_TOPIC group=$ITCH_GROUP"
    else
      log "itch stopped address=$BOOTSTRAP/$ITCH_TOPIC group=$ITCH_GROUP"; rc=3
    fi
  fi
  log "data $STACK_DIR"
  return $rc
}

cmd_env() {
  cat <<EOF
export QRSDP_KAFKA_BROKERS=$BOOTSTRAP
export QRSDP_KAFKA_TOPIC=$EVENTS_TOPIC
export QRSDP_KAFKA_DLQ_TOPIC=$DLQ_TOPIC
export QRSDP_S3_ENDPOINT=$S3_ENDPOINT
export QRSDP_S3_BUCKET=$BUCKET
export AWS_ACCESS_KEY_ID=$MINIO_ROOT_USER
export AWS_SECRET_ACCESS_KEY=$MINIO_ROOT_PASSWORD
export AWS_REGION=us-east-1
EOF
}

cmd_perf() {
  local records="${1:-5000000}" topic="qrsdp.perf"
  [[ $# -gt 0 ]] && shift
  install_kafka
  [[ -n "$(kafka_pid)" ]] || die "kafka is not running (infra/stack.sh kafka-start)"
  probe kafka-topics --bootstrap "$BOOTSTRAP" --timeout 30 "$topic:$PARTITIONS" >/dev/null
  # Extra arguments are more producer properties (key=value), e.g. batch.size=262144.
  local props=("bootstrap.servers=$BOOTSTRAP" acks=all linger.ms=5 compression.type=lz4 "$@")
  log "+ java -cp 'infra/.build/kafka/libs/*' org.apache.kafka.tools.ProducerPerformance --topic $topic" \
      "--num-records $records --record-size 26 --throughput -1 --command-property ${props[*]}"
  local rc=0
  kafka_java org.apache.kafka.tools.ProducerPerformance --topic "$topic" --num-records "$records" \
    --record-size 26 --throughput -1 --command-property "${props[@]}" || rc=$?
  # Drop the benchmark data (millions of records) so it does not fill the data folder.
  kafka_java org.apache.kafka.tools.TopicCommand --bootstrap-server "$BOOTSTRAP" --delete --topic "$topic" \
    || log "kafka-perf: could not delete topic $topic"
  return $rc
}

cmd_compose_check() {
  local bin="$BUILD/bin/compose-check"
  if [[ ! -x "$bin" || "$INFRA/compose-check/main.go" -nt "$bin" || "$INFRA/compose-check/go.mod" -nt "$bin" ]]; then
    command -v go >/dev/null 2>&1 || die "'go' not found on PATH"
    mkdir -p "$BUILD/bin"
    (cd "$INFRA/compose-check" && CGO_ENABLED=0 GOBIN="$BUILD/bin" GOFLAGS="${GOFLAGS:-} -p=1" nice -n 19 go install .) \
      || die "could not build compose-check"
  fi
  "$bin" "$INFRA/docker-compose.yml" "$@"
}

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'; }

main() {
  local cmd="${1:-}"
  [[ $# -gt 0 ]] && shift
  case "$cmd" in
    install)
      install_kafka; install_minio; install_bridge
      log "installed: kafka $(kafka_version) in $LIBS, minio $MINIO_BIN, bridge $BRIDGE_BIN" ;;
    bridge-build) build_bridge || die "could not build qrsdp-kafka-bridge"; log "built $BRIDGE_BIN" ;;
    up)
      install_kafka; install_minio; install_bridge
      kafka_launch; minio_launch
      kafka_ready; minio_ready
      if itch_enabled; then itch_start; fi
      log "stack up: kafka $BOOTSTRAP, minio $S3_ENDPOINT, data $STACK_DIR" ;;
    down)
      # The streamer first (it commits its position to Kafka on the way out); then the services.
      if itch_enabled || [[ -n "$(itch_pid)" ]]; then itch_stop; fi
      kafka_stop; minio_stop ;;
    status) cmd_status ;;
    env) cmd_env ;;
    kafka-start) kafka_launch; kafka_ready ;;
    kafka-stop) kafka_stop "${1:-}" ;;
    minio-start) minio_launch; minio_ready ;;
    minio-stop) minio_stop "${1:-}" ;;
    itch-start) itch_start ;;
    itch-stop) itch_stop "${1:-}" ;;
    kafka-run-class) install_kafka; [[ $# -gt 0 ]] || die "kafka-run-class needs a class name"; kafka_java "$@" ;;
    kafka-perf) cmd_perf "$@" ;;
    compose-check) cmd_compose_check "$@" ;;
    -h|--help|help) usage ;;
    "") usage; exit 2 ;;
    *) printf 'stack: unknown command: %s\n\n' "$cmd" >&2; usage >&2; exit 2 ;;
  esac
}

main "$@"
