#!/usr/bin/env bash
# Local data-platform services without Docker: a single-node Apache Kafka (KRaft, broker+controller)
# run from the official Maven Central jars on the machine's JDK, and a MinIO S3 server built from its
# Go module; with the distributed profile also PostgreSQL and Redis (Debian packages, installed with
# apt-get when missing) and the Dagster code server, webserver, daemon and Celery workers. Everything
# binds to 127.0.0.1; all state lives under one data folder.
#
# usage: infra/stack.sh COMMAND
#   install                 fetch the Kafka jars (mvn) and build MinIO (go install) if missing, and
#                           build the Kafka bridge (qrsdp_sim/kafka/bridge) when its source is newer
#   bridge-build            (re)build the Kafka bridge binary infra/.build/bin/qrsdp-kafka-bridge
#   up                      install if needed, start Kafka and MinIO, wait until healthy,
#                           create topics exchange.events / exchange.events.dlq and bucket exchange-data;
#                           with QRSDP_STACK_DISTRIBUTED=1 also PostgreSQL (databases qrsdp_dagster,
#                           qrsdp_lake), Redis and the Dagster processes (see dagster-start); the
#                           profile is remembered in the data folder until `down`
#   down                    stop everything that runs (SIGTERM, wait, then SIGKILL); fine when nothing runs
#   status                  what runs, and whether it answers (exit 0 only when all listed are healthy)
#   env                     print export lines for clients (brokers, S3 endpoint, credentials)
#   kafka-start|kafka-stop  start or stop Kafka alone ("kafka-stop kill" sends SIGKILL at once)
#   minio-start|minio-stop  start or stop MinIO alone ("minio-stop kill" sends SIGKILL at once)
#   itch-start|itch-stop    start or stop the ITCH streamer (`qrsdp itch-stream`) as a supervised
#                           background process consuming the stack's Kafka ("itch-stop kill": SIGKILL)
#   postgres-start|postgres-stop  PostgreSQL alone ("postgres-stop kill": SIGKILL)
#   redis-start|redis-stop  Redis alone ("redis-stop kill": SIGKILL)
#   dagster-start|dagster-stop    the distributed Dagster processes: code server, webserver,
#                           daemon and QRSDP_WORKERS Celery workers ("dagster-stop kill": SIGKILL)
#   worker-start N|worker-stop N [kill]   one Celery worker (fault tests)
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
#   QRSDP_STACK_DISTRIBUTED      1: the distributed profile (PostgreSQL, Redis, Dagster processes)
#   QRSDP_PG_PORT / QRSDP_REDIS_PORT   private ports (default 15432 / 16379: clear of system services)
#   QRSDP_PG_USER / QRSDP_PG_PASSWORD  PostgreSQL superuser role (default qrsdp / qrsdp-secret; set
#                                at the first start only)
#   QRSDP_PG_DIR                 PostgreSQL folder (default <data>/postgres; as root it must be
#                                reachable by QRSDP_PG_OS_USER, default postgres)
#   QRSDP_PG_BIN                 PostgreSQL bin folder     (default newest /usr/lib/postgresql/*/bin)
#   QRSDP_DAGSTER_PORT / QRSDP_CODE_SERVER_PORT  webserver / code server (default 3000 / 4000)
#   QRSDP_DAGSTER_CODE           code location arguments   (default "-m qrsdp_dagster.definitions")
#   QRSDP_WORKERS                Celery worker processes   (default 2)
#   QRSDP_RUN_* / QRSDP_WORKER_HEARTBEAT_TTL_S  instance settings: qrsdp_sim/distributed/profile.py
#   QRSDP_POOLS                  pools whose limits are created at start (default qrsdp_duckdb;
#                                qrsdp_sim/distributed/pools.py)
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

# Distributed profile (opt-in: `up` with QRSDP_STACK_DISTRIBUTED=1, or `qrsdp stack up --distributed`).
PG_PORT="${QRSDP_PG_PORT:-15432}"
export QRSDP_PG_USER="${QRSDP_PG_USER:-qrsdp}"
export QRSDP_PG_PASSWORD="${QRSDP_PG_PASSWORD:-qrsdp-secret}"
export QRSDP_PG_DAGSTER_DB="${QRSDP_PG_DAGSTER_DB:-qrsdp_dagster}"
export QRSDP_PG_LAKE_DB="${QRSDP_PG_LAKE_DB:-qrsdp_lake}"
PG_DIR="${QRSDP_PG_DIR:-$STACK_DIR/postgres}"
PG_DATA="$PG_DIR/data"
PG_LOGS="$PG_DIR/logs"
PG_SOCK="$PG_DIR/run"
PG_PID="$RUN_DIR/postgres-$PG_PORT.pid"
REDIS_PORT="${QRSDP_REDIS_PORT:-16379}"
REDIS_DIR="$STACK_DIR/redis"
REDIS_PID="$RUN_DIR/redis-$REDIS_PORT.pid"
DISTRIBUTED="${QRSDP_STACK_DISTRIBUTED:-}"
PROFILE_FILE="$STACK_DIR/profile"
DAGSTER_DIR="$STACK_DIR/dagster"
DAGSTER_HOME_DIR="$DAGSTER_DIR/home"
WORKSPACE="$DAGSTER_DIR/workspace.yaml"
DAGSTER_LOGS="$DAGSTER_DIR/logs"
CODE_PORT="${QRSDP_CODE_SERVER_PORT:-4000}"
WEB_PORT="${QRSDP_DAGSTER_PORT:-3000}"
WORKERS="${QRSDP_WORKERS:-2}"
WORKERS_DIR="$STACK_DIR/workers"
WORKER_HOST="${QRSDP_WORKER_HOST:-$(hostname)}"
CELERY_QUEUE="${QRSDP_CELERY_QUEUE:-dagster}"
CODE_TARGET="${QRSDP_DAGSTER_CODE:--m qrsdp_dagster.definitions}"
CODE_PID="$RUN_DIR/code-server-$CODE_PORT.pid"
WEB_PID="$RUN_DIR/webserver-$WEB_PORT.pid"
DAEMON_PID="$RUN_DIR/daemon-$PG_PORT.pid"    # one daemon per instance (= per PostgreSQL)

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
  if [[ "$pid" =~ ^[0-9]+$ ]] && alive "$pid"; then
    # A live process whose command line lacks the marker is not this configuration's (another stack
    # folder on the same port, a path spelled differently, a reused pid): not ours, but its pid file
    # is left alone -- deleting it would orphan a running service from the caller that owns it.
    if tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$marker"; then
      printf '%s' "$pid"
    fi
  else
    rm -f "$pidfile"   # stale: nothing runs under that pid
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
  local state tasks
  state="$(sed -n 's/^[0-9]* (.*) \([A-Z]\).*/\1/p' "/proc/$1/stat" 2>/dev/null || true)"
  [[ "$state" != "Z" ]] && return 0
  # A zombie leader is dead only once its other threads are gone too. After SIGKILL a multi-threaded
  # process (MinIO, the JVM) shows its leader as Z while the other threads still exit and its sockets
  # still listen: a restart at that moment found its own port "in use by another process".
  tasks=("/proc/$1/task/"*)
  (( ${#tasks[@]} > 1 ))
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

# ---------------------------------------------------------------- postgresql

# The newest PostgreSQL installed from Debian's packages (QRSDP_PG_BIN overrides), as its bin folder.
pg_bindir() {
  if [[ -n "${QRSDP_PG_BIN:-}" ]]; then printf '%s' "$QRSDP_PG_BIN"; return 0; fi
  local d
  d="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
  if [[ -n "$d" && -x "$d/pg_ctl" ]]; then
    printf '%s' "$d"
  elif command -v pg_ctl >/dev/null 2>&1; then
    dirname "$(command -v pg_ctl)"
  fi
}

install_postgres() {
  [[ -n "$(pg_bindir)" ]] && return 0
  "$INFRA/ensure-tools.sh" postgres >/dev/null || die "could not install PostgreSQL (see above)"
  [[ -n "$(pg_bindir)" ]] || die "PostgreSQL is installed but pg_ctl was not found (set QRSDP_PG_BIN)"
}

# initdb refuses to run as root: as root the server runs as an unprivileged system user
# (QRSDP_PG_OS_USER, default postgres, created when missing); otherwise as the caller.
PG_RUNAS=()
pg_runas() {
  [[ $(id -u) -eq 0 ]] || { PG_RUNAS=(); return 0; }
  local user="${QRSDP_PG_OS_USER:-postgres}"
  if ! id -u "$user" >/dev/null 2>&1; then
    log "postgres: creating system user $user"
    useradd --system --no-create-home --shell /usr/sbin/nologin "$user" || die "could not create user $user"
  fi
  PG_RUNAS=(setpriv "--reuid=$user" "--regid=$(id -g "$user")" --init-groups --)
}

pg_owner() { if [[ $(id -u) -eq 0 ]]; then printf '%s' "${QRSDP_PG_OS_USER:-postgres}"; else id -un; fi; }

pg_pid() { live_pid "$PG_PID" "-D $PG_DATA"; }

pg_opts() {
  printf '%s ' -p "$PG_PORT" -c listen_addresses=127.0.0.1 -k "$PG_SOCK" \
    -c "max_connections=${QRSDP_PG_MAX_CONNECTIONS:-200}" -c shared_buffers=128MB \
    -c log_min_messages=warning -c log_min_error_statement=error
}

pg_prepare() {
  pg_runas
  local owner; owner="$(pg_owner)"
  mkdir -p "$PG_DIR" "$PG_LOGS" "$PG_SOCK" "$RUN_DIR"
  [[ $(id -u) -eq 0 ]] && chown "$owner:" "$PG_DIR" "$PG_LOGS" "$PG_SOCK"
  if ! (cd / && "${PG_RUNAS[@]}" test -w "$PG_DIR"); then
    die "postgres: user $owner cannot write $PG_DIR: a parent folder is closed to it (a 0700 home or temp folder); set QRSDP_PG_DIR to a folder it can reach"
  fi
  if [[ ! -s "$PG_DATA/PG_VERSION" ]]; then
    local pwfile="$PG_DIR/.initdb-password"
    (umask 077; printf '%s\n' "$QRSDP_PG_PASSWORD" >"$pwfile")
    [[ $(id -u) -eq 0 ]] && chown "$owner:" "$pwfile"
    log "postgres: initdb $PG_DATA (superuser $QRSDP_PG_USER, scram-sha-256, run as $owner)"
    local rc=0
    (cd "$PG_DIR" && "${PG_RUNAS[@]}" "$(pg_bindir)/initdb" -D "$PG_DATA" -U "$QRSDP_PG_USER" --pwfile="$pwfile" \
      -A scram-sha-256 -E UTF8 --no-locale) >>"$PG_LOGS/initdb.log" 2>&1 || rc=$?
    rm -f "$pwfile"
    [[ $rc -eq 0 ]] || { tail_log "$PG_LOGS/initdb.log"; die "postgres: initdb failed (log $PG_LOGS/initdb.log)"; }
  fi
}

postgres_launch() {
  local pid; pid="$(pg_pid)"
  if [[ -n "$pid" ]]; then
    log "postgres: already running (pid $pid) on 127.0.0.1:$PG_PORT"
    return 0
  fi
  install_postgres
  port_open "$PG_PORT" && die "port $PG_PORT is in use by another process (set QRSDP_PG_PORT)"
  pg_prepare
  # A crashed (SIGKILLed) server leaves its lock files behind; its pid may even linger as a zombie
  # (an unreaped orphan), which PostgreSQL would take for a live server.
  local lock old
  for lock in "$PG_DATA/postmaster.pid" "$PG_SOCK/.s.PGSQL.$PG_PORT.lock"; do
    old="$(head -n 1 "$lock" 2>/dev/null || true)"
    if [[ "$old" =~ ^[0-9]+$ ]] && ! alive "$old"; then
      log "postgres: removing $(basename "$lock") of crashed pid $old"
      rm -f "$lock" "${lock%.lock}"
    fi
  done
  local logf="$PG_LOGS/postgres.log"
  printf '\n=== start %s ===\n' "$(date -u +%FT%TZ)" >>"$logf"
  [[ $(id -u) -eq 0 ]] && chown "$(pg_owner):" "$logf"
  # pg_ctl -w returns once the server accepts connections; setsid detaches it from our session.
  # shellcheck disable=SC2046  # pg_opts is one -o string for pg_ctl
  if ! (cd "$PG_DIR" && setsid -w "${PG_RUNAS[@]}" "$(pg_bindir)/pg_ctl" -D "$PG_DATA" -l "$logf" -w \
        -t "$TIMEOUT" -o "$(pg_opts)" start) >>"$PG_LOGS/pg_ctl.log" 2>&1 </dev/null; then
    tail_log "$logf"; tail_log "$PG_LOGS/pg_ctl.log"
    die "postgres did not start (logs in $PG_LOGS)"
  fi
  head -n 1 "$PG_DATA/postmaster.pid" >"$PG_PID"
  log "postgres: started pid $(cat "$PG_PID") on 127.0.0.1:$PG_PORT (data $PG_DATA)"
}

pg_url() { printf 'postgresql://%s:%s@127.0.0.1:%s/%s' "$QRSDP_PG_USER" "$QRSDP_PG_PASSWORD" "$PG_PORT" "${1:-postgres}"; }

postgres_ready() {
  local pid _; pid="$(pg_pid)"
  [[ -n "$pid" ]] || { tail_log "$PG_LOGS/postgres.log"; die "postgres is not running"; }
  for _ in $(seq 1 $((TIMEOUT * 2))); do
    "$(pg_bindir)/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" -t 2 && break
    alive "$pid" || { tail_log "$PG_LOGS/postgres.log"; die "postgres exited during start-up"; }
    sleep 0.5
  done
  "$(pg_bindir)/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" -t 2 \
    || { tail_log "$PG_LOGS/postgres.log"; die "postgres did not accept connections within ${TIMEOUT}s"; }
  probe pg-databases --endpoint "$(pg_url postgres)" --timeout 30 "$QRSDP_PG_DAGSTER_DB" "$QRSDP_PG_LAKE_DB" \
    | sed 's/^/postgres: /' || die "postgres: could not create the databases"
  log "postgres: healthy on 127.0.0.1:$PG_PORT (databases $QRSDP_PG_DAGSTER_DB, $QRSDP_PG_LAKE_DB)"
}

postgres_stop() {
  local pid; pid="$(pg_pid)"
  if [[ -z "$pid" ]]; then
    log "postgres: not running"
    return 0
  fi
  log "postgres: stopping pid $pid"
  if [[ "${1:-}" == "kill" ]]; then
    # A crash of the whole server (postmaster and its backends: one process group).
    kill -KILL -- "-$pid" 2>/dev/null || true
    stop_pid postgres "$pid" 0 kill
  else
    pg_runas
    # fast shutdown: clients (daemon, workers) are disconnected instead of waited for
    (cd "$PG_DIR" && "${PG_RUNAS[@]}" "$(pg_bindir)/pg_ctl" -D "$PG_DATA" -m fast -w -t 60 stop) \
      >>"$PG_LOGS/pg_ctl.log" 2>&1 || stop_pid postgres "$pid" 10
  fi
  rm -f "$PG_PID"
  log "postgres: stopped"
}

# ---------------------------------------------------------------- redis

install_redis() {
  command -v redis-server >/dev/null 2>&1 && command -v redis-cli >/dev/null 2>&1 && return 0
  "$INFRA/ensure-tools.sh" redis >/dev/null || die "could not install Redis (see above)"
}

redis_pid() { live_pid "$REDIS_PID" "redis-server 127.0.0.1:$REDIS_PORT"; }
redis_cli() { redis-cli -h 127.0.0.1 -p "$REDIS_PORT" "$@"; }

redis_launch() {
  local pid; pid="$(redis_pid)"
  if [[ -n "$pid" ]]; then
    log "redis: already running (pid $pid) on 127.0.0.1:$REDIS_PORT"
    return 0
  fi
  install_redis
  port_open "$REDIS_PORT" && die "port $REDIS_PORT is in use by another process (set QRSDP_REDIS_PORT)"
  mkdir -p "$REDIS_DIR/data" "$REDIS_DIR/logs" "$RUN_DIR"
  printf '\n=== start %s ===\n' "$(date -u +%FT%TZ)" >>"$REDIS_DIR/logs/redis.log"
  # The broker's queue must survive a restart (append-only file) and never be evicted (noeviction).
  spawn "$REDIS_PID" "$REDIS_DIR/logs/redis.log" "$(command -v redis-server)" --port "$REDIS_PORT" \
    --bind 127.0.0.1 --protected-mode yes --daemonize no --dir "$REDIS_DIR/data" --save "" \
    --appendonly yes --appendfsync everysec --maxmemory-policy noeviction --loglevel warning --logfile ""
  log "redis: started pid $(cat "$REDIS_PID") on 127.0.0.1:$REDIS_PORT"
}

# Until Redis has set its process title ("redis-server 127.0.0.1:PORT", what redis_pid looks for) its
# command line is the launch's, and redis_pid would call the fresh process stale and drop its pid
# file (orphaning it): during start-up, follow the pid that spawn wrote; once Redis answers PING its
# title is set (it sets it before listening).
redis_ready() {
  local pid _; pid="$(cat "$REDIS_PID" 2>/dev/null || true)"
  [[ "$pid" =~ ^[0-9]+$ ]] && alive "$pid" || { tail_log "$REDIS_DIR/logs/redis.log"; die "redis is not running"; }
  for _ in $(seq 1 $((TIMEOUT * 5))); do
    [[ "$(redis_cli ping 2>/dev/null)" == "PONG" ]] && { log "redis: healthy on 127.0.0.1:$REDIS_PORT"; return 0; }
    alive "$pid" || { tail_log "$REDIS_DIR/logs/redis.log"; die "redis exited during start-up"; }
    sleep 0.2
  done
  tail_log "$REDIS_DIR/logs/redis.log"
  die "redis did not answer PING within ${TIMEOUT}s"
}

# SIGTERM: Redis flushes its append-only file and exits.
redis_stop() { stop_named redis "$(redis_pid)" "$REDIS_PID" 20 "${1:-}"; }

# ---------------------------------------------------------------- dagster (distributed profile)

# A console script of the project's environment, run directly (no uv in between, so pid files
# hold the program itself and signals reach it).
venv_bin() {
  local name="$1"
  if [[ -x "$ROOT/.venv/bin/$name" ]]; then
    printf '%s' "$ROOT/.venv/bin/$name"
  elif [[ -n "${QRSDP_PYTHON:-}" && -x "$(dirname "$QRSDP_PYTHON")/$name" ]]; then
    printf '%s' "$(dirname "$QRSDP_PYTHON")/$name"
  else
    die "cannot find $name in the project's environment (run 'uv sync' first)"
  fi
}

distributed_enabled() {
  [[ "$DISTRIBUTED" == "1" || "$DISTRIBUTED" == "true" || "$DISTRIBUTED" == "yes" ]] && return 0
  [[ -z "$DISTRIBUTED" && "$(cat "$PROFILE_FILE" 2>/dev/null)" == "distributed" ]]
}

# What every Dagster process of the profile reads (qrsdp_sim.distributed.profile, settings.py).
dagster_env() {
  export QRSDP_PG_HOST=127.0.0.1 QRSDP_PG_PORT="$PG_PORT" QRSDP_REDIS_URL="redis://127.0.0.1:$REDIS_PORT"
  export QRSDP_S3_ENDPOINT="$S3_ENDPOINT" QRSDP_S3_BUCKET="$BUCKET"
  export QRSDP_S3_ACCESS_KEY="$MINIO_ROOT_USER" QRSDP_S3_SECRET_KEY="$MINIO_ROOT_PASSWORD"
  export AWS_ACCESS_KEY_ID="$MINIO_ROOT_USER" AWS_SECRET_ACCESS_KEY="$MINIO_ROOT_PASSWORD" AWS_REGION=us-east-1
  export QRSDP_LAKE_URI="${QRSDP_LAKE_URI:-s3://$BUCKET}"
  # shared state: sessions on S3, the marts in a DuckLake (catalog in PostgreSQL, data on S3)
  export QRSDP_SESSIONS_URI="${QRSDP_SESSIONS_URI:-s3://$BUCKET/sessions}"
  export QRSDP_WAREHOUSE="${QRSDP_WAREHOUSE:-ducklake}"
  export QRSDP_DUCKLAKE_DATA_PATH="${QRSDP_DUCKLAKE_DATA_PATH:-s3://$BUCKET/ducklake/}"
  export QRSDP_WORKERS="$WORKERS" QRSDP_CELERY_QUEUE="$CELERY_QUEUE"
}

write_dagster_home() {
  "$(venv_bin python)" -m qrsdp_sim.distributed.profile write "$1" >/dev/null \
    || die "could not write $1/dagster.yaml (see above)"
}

code_pid() { live_pid "$CODE_PID" "code-server start -h 127.0.0.1 -p $CODE_PORT "; }
web_pid() { live_pid "$WEB_PID" "-h 127.0.0.1 -p $WEB_PORT -w $WORKSPACE"; }
daemon_pid() { live_pid "$DAEMON_PID" "run -w $WORKSPACE"; }
worker_dir() { printf '%s' "$WORKERS_DIR/w$1"; }
worker_name() { printf 'qrsdp-w%s@%s' "$1" "$WORKER_HOST"; }
worker_pidfile() { printf '%s' "$RUN_DIR/worker-$REDIS_PORT-$1.pid"; }
worker_pid() { live_pid "$(worker_pidfile "$1")" "--workdir $(worker_dir "$1") worker"; }
worker_alive_key() { redis_cli -n 1 exists "qrsdp:celery-worker:$(worker_name "$1")" 2>/dev/null; }

# Instance tables created once, before several processes would race to create them.
dagster_init() {
  mkdir -p "$DAGSTER_HOME_DIR" "$DAGSTER_LOGS" "$RUN_DIR"
  write_dagster_home "$DAGSTER_HOME_DIR"
  cat >"$WORKSPACE" <<YAML
# Written by infra/stack.sh: the webserver and daemon load code from the code server.
load_from:
  - grpc_server:
      host: 127.0.0.1
      port: $CODE_PORT
      location_name: qrsdp
YAML
  DAGSTER_HOME="$DAGSTER_HOME_DIR" "$(venv_bin dagster)" instance migrate >>"$DAGSTER_LOGS/migrate.log" 2>&1 \
    || { tail_log "$DAGSTER_LOGS/migrate.log"; die "dagster: could not create the instance tables in PostgreSQL"; }
  # The pools' rows, before any run could race to create them (qrsdp_sim/distributed/pools.py).
  (cd "$ROOT" && DAGSTER_HOME="$DAGSTER_HOME_DIR" "$(venv_bin python)" -m qrsdp_sim.distributed.pools) \
    >>"$DAGSTER_LOGS/migrate.log" 2>&1 \
    || { tail_log "$DAGSTER_LOGS/migrate.log"; die "dagster: could not create the pools' concurrency limits"; }
}

code_server_start() {
  local pid _; pid="$(code_pid)"
  if [[ -n "$pid" ]]; then log "code-server: already running (pid $pid) on 127.0.0.1:$CODE_PORT"; return 0; fi
  port_open "$CODE_PORT" && die "port $CODE_PORT is in use by another process (set QRSDP_CODE_SERVER_PORT)"
  local logf="$DAGSTER_LOGS/code-server.log"
  printf '\n=== start %s ===\n' "$(date -u +%FT%TZ)" >>"$logf"
  mkdir -p "$DAGSTER_DIR/code-data"
  # shellcheck disable=SC2086  # CODE_TARGET is word-split on purpose (-m MODULE / -f FILE ...)
  (cd "$ROOT" && DAGSTER_HOME="$DAGSTER_HOME_DIR" QRSDP_DATA_DIR="$DAGSTER_DIR/code-data" \
    spawn "$CODE_PID" "$logf" "$(venv_bin dagster)" code-server start -h 127.0.0.1 -p "$CODE_PORT" \
    --location-name qrsdp $CODE_TARGET)
  pid="$(cat "$CODE_PID")"
  for _ in $(seq 1 $((TIMEOUT * 2))); do
    alive "$pid" || { tail_log "$logf"; die "code-server exited during start-up (log $logf)"; }
    "$(venv_bin dagster)" api grpc-health-check -h 127.0.0.1 -p "$CODE_PORT" >/dev/null 2>&1 && break
    sleep 0.5
  done
  "$(venv_bin dagster)" api grpc-health-check -h 127.0.0.1 -p "$CODE_PORT" >/dev/null 2>&1 \
    || { tail_log "$logf"; die "code-server did not answer within ${TIMEOUT}s"; }
  log "code-server: healthy pid $pid on 127.0.0.1:$CODE_PORT ($CODE_TARGET)"
}

webserver_start() {
  local pid; pid="$(web_pid)"
  if [[ -n "$pid" ]]; then log "webserver: already running (pid $pid) on http://127.0.0.1:$WEB_PORT"; return 0; fi
  port_open "$WEB_PORT" && die "port $WEB_PORT is in use by another process (set QRSDP_DAGSTER_PORT)"
  local logf="$DAGSTER_LOGS/webserver.log"
  printf '\n=== start %s ===\n' "$(date -u +%FT%TZ)" >>"$logf"
  (cd "$DAGSTER_DIR" && DAGSTER_HOME="$DAGSTER_HOME_DIR" spawn "$WEB_PID" "$logf" \
    "$(venv_bin dagster-webserver)" -h 127.0.0.1 -p "$WEB_PORT" -w "$WORKSPACE")
  pid="$(cat "$WEB_PID")"
  probe http-wait --endpoint "http://127.0.0.1:$WEB_PORT/server_info" --timeout "$TIMEOUT" --pid "$pid" \
    || { tail_log "$logf"; die "webserver did not answer within ${TIMEOUT}s (log $logf)"; }
  log "webserver: healthy pid $pid on http://127.0.0.1:$WEB_PORT"
}

daemon_start() {
  local pid _; pid="$(daemon_pid)"
  if [[ -n "$pid" ]]; then log "daemon: already running (pid $pid)"; return 0; fi
  local logf="$DAGSTER_LOGS/daemon.log"
  printf '\n=== start %s ===\n' "$(date -u +%FT%TZ)" >>"$logf"
  (cd "$DAGSTER_DIR" && DAGSTER_HOME="$DAGSTER_HOME_DIR" spawn "$DAEMON_PID" "$logf" \
    "$(venv_bin dagster-daemon)" run -w "$WORKSPACE")
  pid="$(cat "$DAEMON_PID")"
  for _ in $(seq 1 30); do
    alive "$pid" || { tail_log "$logf"; die "daemon exited during start-up (log $logf)"; }
    sleep 0.1
  done
  log "daemon: started pid $pid (queue, run monitoring, retries, sensors, schedules, backfills)"
}

# Worker i: its own working directory, Dagster home, data folder and temp folder; what it
# shares with the other workers is PostgreSQL, Redis and S3 only.
worker_start() {
  local i="$1" pid _ dir; dir="$(worker_dir "$i")"; pid="$(worker_pid "$i")"
  if [[ -n "$pid" ]]; then log "worker-$i: already running (pid $pid) as $(worker_name "$i")"; return 0; fi
  mkdir -p "$dir/home" "$dir/data" "$dir/tmp" "$RUN_DIR"
  write_dagster_home "$dir/home"
  local logf="$dir/worker.log"
  printf '\n=== start %s ===\n' "$(date -u +%FT%TZ)" >>"$logf"
  (cd "$dir" && DAGSTER_HOME="$dir/home" QRSDP_DATA_DIR="$dir/data" TMPDIR="$dir/tmp" \
    spawn "$(worker_pidfile "$i")" "$logf" "$(venv_bin celery)" -A qrsdp_sim.distributed.worker \
    --workdir "$dir" worker -n "$(worker_name "$i")" -Q "$CELERY_QUEUE" --pool prefork --concurrency 1 \
    --max-tasks-per-child 1 --without-gossip --without-mingle --loglevel INFO)
  pid="$(cat "$(worker_pidfile "$i")")"
  for _ in $(seq 1 $((TIMEOUT * 2))); do
    alive "$pid" || { tail_log "$logf"; die "worker-$i exited during start-up (log $logf)"; }
    [[ "$(worker_alive_key "$i")" == "1" ]] && break
    sleep 0.5
  done
  [[ "$(worker_alive_key "$i")" == "1" ]] || { tail_log "$logf"; die "worker-$i sent no heartbeat within ${TIMEOUT}s"; }
  log "worker-$i: healthy pid $pid as $(worker_name "$i") in $dir"
}

stop_named() {
  local name="$1" pid="$2" pidfile="$3" grace="$4" mode="${5:-}"
  if [[ -z "$pid" ]]; then log "$name: not running"; return 0; fi
  log "$name: stopping pid $pid"
  stop_pid "$name" "$pid" "$grace" "$mode"
  rm -f "$pidfile"
  log "$name: stopped"
}

# A worker is its process group (main process, pool process running the run, the run's step
# processes): SIGTERM to the main process is Celery's warm shutdown (the running run may finish
# within the grace period); SIGKILL goes to the whole group, as when its machine or container dies.
worker_stop() {
  local i="$1" mode="${2:-}" pid _; pid="$(worker_pid "$i")"
  if [[ -z "$pid" ]]; then log "worker-$i: not running"; return 0; fi
  log "worker-$i: stopping pid $pid${mode:+ ($mode)}"
  if [[ "$mode" != "kill" ]]; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 300); do alive "$pid" || break; sleep 0.1; done
  fi
  if alive "$pid"; then
    [[ "$mode" == "kill" ]] || log "worker-$i: still running after 30s, sending SIGKILL to its process group"
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
  fi
  for _ in $(seq 1 50); do alive "$pid" || break; sleep 0.1; done
  alive "$pid" && die "worker-$i (pid $pid) did not exit"
  rm -f "$(worker_pidfile "$i")"
  log "worker-$i: stopped"
}

dagster_start() {
  [[ "$WORKERS" =~ ^[1-9][0-9]*$ ]] || die "QRSDP_WORKERS must be a positive number (got '$WORKERS')"
  dagster_env
  dagster_init
  code_server_start
  webserver_start
  daemon_start
  local i
  for i in $(seq 1 "$WORKERS"); do worker_start "$i"; done
}

dagster_stop() {
  local i mode="${1:-}"
  # The daemon first (it launches runs), then the workers (a warm stop lets a run finish, up to 30 s).
  stop_named daemon "$(daemon_pid)" "$DAEMON_PID" 20 "$mode"
  for i in $(seq 1 "$WORKERS"); do worker_stop "$i" "$mode"; done
  stop_named webserver "$(web_pid)" "$WEB_PID" 20 "$mode"
  stop_named code-server "$(code_pid)" "$CODE_PID" 20 "$mode"
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

STATUS_RC=0
# One status line: "NAME running pid=P address=A health=healthy|unhealthy" or "NAME stopped address=A";
# the health command runs only for a running service.
report() {
  local name="$1" pid="$2" address="$3" health
  shift 3
  if [[ -n "$pid" ]]; then
    if "$@" >/dev/null 2>&1; then health=healthy; else health=unhealthy; STATUS_RC=3; fi
    log "$name running pid=$pid address=$address health=$health"
  else
    log "$name stopped address=$address"; STATUS_RC=3
  fi
}

redis_ping() { [[ "$(redis_cli ping 2>/dev/null)" == "PONG" ]]; }
pg_ready() { [[ -n "$(pg_bindir)" ]] && "$(pg_bindir)/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" -t 3; }
worker_ok() { [[ "$(worker_alive_key "$1")" == "1" ]]; }

cmd_status() {
  STATUS_RC=0
  local pid i dist=0
  distributed_enabled && dist=1
  report kafka "$(kafka_pid)" "$BOOTSTRAP" probe kafka-health --bootstrap "$BOOTSTRAP" --timeout 3
  report minio "$(minio_pid)" "$S3_ENDPOINT" probe minio-health --endpoint "$S3_ENDPOINT" --timeout 3
  if itch_enabled; then
    pid="$(itch_pid)"
    if [[ -n "$pid" ]]; then
      log "itch running pid=$pid address=$BOOTSTRAP/$ITCH_TOPIC group=$ITCH_GROUP"
    else
      log "itch stopped address=$BOOTSTRAP/$ITCH_TOPIC group=$ITCH_GROUP"; STATUS_RC=3
    fi
  fi
  # The distributed profile's services: listed when it is on, or when one of them runs anyway.
  pid="$(pg_pid)"
  if [[ $dist -eq 1 || -n "$pid" ]]; then report postgres "$pid" "127.0.0.1:$PG_PORT" pg_ready; fi
  pid="$(redis_pid)"
  if [[ $dist -eq 1 || -n "$pid" ]]; then report redis "$pid" "127.0.0.1:$REDIS_PORT" redis_ping; fi
  pid="$(code_pid)"
  if [[ $dist -eq 1 || -n "$pid" ]]; then report code-server "$pid" "127.0.0.1:$CODE_PORT" port_open "$CODE_PORT"; fi
  pid="$(web_pid)"
  if [[ $dist -eq 1 || -n "$pid" ]]; then
    report webserver "$pid" "http://127.0.0.1:$WEB_PORT" \
      probe http-health --endpoint "http://127.0.0.1:$WEB_PORT/server_info" --timeout 3
  fi
  pid="$(daemon_pid)"
  if [[ $dist -eq 1 || -n "$pid" ]]; then report daemon "$pid" "$WORKSPACE" true; fi
  for i in $(seq 1 "$WORKERS"); do
    pid="$(worker_pid "$i")"
    if [[ $dist -eq 1 || -n "$pid" ]]; then report "worker-$i" "$pid" "$(worker_name "$i")" worker_ok "$i"; fi
  done
  log "data $STACK_DIR"
  return $STATUS_RC
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
  if distributed_enabled; then
    cat <<EOF
export QRSDP_PG_HOST=127.0.0.1
export QRSDP_PG_PORT=$PG_PORT
export QRSDP_PG_USER=$QRSDP_PG_USER
export QRSDP_PG_PASSWORD=$QRSDP_PG_PASSWORD
export QRSDP_PG_DAGSTER_DB=$QRSDP_PG_DAGSTER_DB
export QRSDP_PG_LAKE_DB=$QRSDP_PG_LAKE_DB
export QRSDP_REDIS_URL=redis://127.0.0.1:$REDIS_PORT
export QRSDP_LAKE_URI=${QRSDP_LAKE_URI:-s3://$BUCKET}
export QRSDP_SESSIONS_URI=${QRSDP_SESSIONS_URI:-s3://$BUCKET/sessions}
export QRSDP_WAREHOUSE=${QRSDP_WAREHOUSE:-ducklake}
export QRSDP_DUCKLAKE_DATA_PATH=${QRSDP_DUCKLAKE_DATA_PATH:-s3://$BUCKET/ducklake/}
export DAGSTER_HOME=$DAGSTER_HOME_DIR
EOF
  fi
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
      if distributed_enabled; then install_postgres; install_redis; fi
      log "installed: kafka $(kafka_version) in $LIBS, minio $MINIO_BIN, bridge $BRIDGE_BIN" ;;
    bridge-build) build_bridge || die "could not build qrsdp-kafka-bridge"; log "built $BRIDGE_BIN" ;;
    up)
      install_kafka; install_minio; install_bridge
      if distributed_enabled; then
        install_postgres; install_redis
        mkdir -p "$STACK_DIR" && echo distributed >"$PROFILE_FILE"
      fi
      kafka_launch; minio_launch
      if distributed_enabled; then postgres_launch; redis_launch; fi
      kafka_ready; minio_ready
      if distributed_enabled; then postgres_ready; redis_ready; dagster_start; fi
      if itch_enabled; then itch_start; fi
      if distributed_enabled; then
        log "stack up (distributed): kafka $BOOTSTRAP, minio $S3_ENDPOINT, postgres 127.0.0.1:$PG_PORT," \
            "redis 127.0.0.1:$REDIS_PORT, dagster http://127.0.0.1:$WEB_PORT, $WORKERS workers, data $STACK_DIR"
      else
        log "stack up: kafka $BOOTSTRAP, minio $S3_ENDPOINT, data $STACK_DIR"
      fi ;;
    down)
      # Dagster's processes first (they use the others), then the streamer (it commits its position
      # to Kafka on the way out), then the services; PostgreSQL last.
      dagster_stop
      if itch_enabled || [[ -n "$(itch_pid)" ]]; then itch_stop; fi
      kafka_stop; minio_stop; redis_stop; postgres_stop
      rm -f "$PROFILE_FILE" ;;
    status) cmd_status ;;
    env) cmd_env ;;
    kafka-start) kafka_launch; kafka_ready ;;
    kafka-stop) kafka_stop "${1:-}" ;;
    minio-start) minio_launch; minio_ready ;;
    minio-stop) minio_stop "${1:-}" ;;
    itch-start) itch_start ;;
    itch-stop) itch_stop "${1:-}" ;;
    postgres-start) postgres_launch; postgres_ready ;;
    postgres-stop) postgres_stop "${1:-}" ;;
    redis-start) redis_launch; redis_ready ;;
    redis-stop) redis_stop "${1:-}" ;;
    dagster-start) dagster_start ;;
    dagster-stop) dagster_stop "${1:-}" ;;
    worker-start) [[ "${1:-}" =~ ^[1-9][0-9]*$ ]] || die "worker-start needs a worker number"; dagster_env; worker_start "$1" ;;
    worker-stop) [[ "${1:-}" =~ ^[1-9][0-9]*$ ]] || die "worker-stop needs a worker number"; worker_stop "$1" "${2:-}" ;;
    kafka-run-class) install_kafka; [[ $# -gt 0 ]] || die "kafka-run-class needs a class name"; kafka_java "$@" ;;
    kafka-perf) cmd_perf "$@" ;;
    compose-check) cmd_compose_check "$@" ;;
    -h|--help|help) usage ;;
    "") usage; exit 2 ;;
    *) printf 'stack: unknown command: %s\n\n' "$cmd" >&2; usage >&2; exit 2 ;;
  esac
}

main "$@"
