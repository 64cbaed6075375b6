# shellcheck shell=bash
# scripts/lib/infra.sh: install, start, check and stop the local servers that
# taskstream needs (PostgreSQL, Apache Kafka in KRaft mode, SecantusDB as the
# MongoDB-wire server, HAProxy as the gateway, Mailpit as the SMTP server
# with an API to read what arrived, and versitygw as the S3-compatible object
# store). Sourced by scripts/infra, scripts/dev, scripts/test.
#
# State (data, config, logs, pids) lives in the checkout's ignored .dev/;
# downloads (Maven jars, the Python venv) live outside the checkout in
# ${TASKSTREAM_CACHE:-$HOME/.cache/taskstream} so fresh clones start fast.
# Every server binds to 127.0.0.1 only.
#
# Settings (environment):
#   TASKSTREAM_CACHE                  download cache    ($HOME/.cache/taskstream)
#   TASKSTREAM_PG_PORT                PostgreSQL port   (55432)
#   TASKSTREAM_KAFKA_PORT             Kafka client port (9092)
#   TASKSTREAM_KAFKA_CONTROLLER_PORT  KRaft controller  (9093)
#   TASKSTREAM_MONGO_PORT             SecantusDB port   (27017)
#   TASKSTREAM_MONGO_STORAGE          SecantusDB storage path or :memory: (.dev/mongo/data)
#   TASKSTREAM_PG_BIN                 PostgreSQL bin dir (newest /usr/lib/postgresql/*/bin, 15 preferred)
#   TASKSTREAM_GATEWAY_PORT           the gateway's API port (8080)
#   TASKSTREAM_GATEWAY_METRICS_PORT   the gateway's Prometheus port (8405)
#   GATEWAY_*                         the gateway's own settings (gateway/haproxy.cfg)
#   TASKSTREAM_SMTP_PORT              Mailpit's SMTP port (1025)
#   TASKSTREAM_MAILPIT_PORT           Mailpit's HTTP API port (8025)
#   TASKSTREAM_S3_PORT                the object store's S3 port (9000)

if [[ -n "${TS_INFRA_LIB_LOADED:-}" ]]; then
  return 0
fi
TS_INFRA_LIB_LOADED=1

TS_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd -P)"
TS_DEV="$TS_ROOT/.dev"
TS_CACHE="${TASKSTREAM_CACHE:-$HOME/.cache/taskstream}"
TS_SERVERS=(postgres kafka mongo gateway mailpit s3)

TS_PG_PORT="${TASKSTREAM_PG_PORT:-55432}"
TS_PG_BASE="$TS_DEV/postgres"              # a directory, or a symlink (see infra_pg_prepare_base)
TS_PG_PWFILE="$TS_DEV/postgres-superuser.pw"

TS_KAFKA_PORT="${TASKSTREAM_KAFKA_PORT:-9092}"
TS_KAFKA_CONTROLLER_PORT="${TASKSTREAM_KAFKA_CONTROLLER_PORT:-9093}"
TS_KAFKA_POM="$TS_ROOT/scripts/kafka/pom.xml"
TS_KAFKA_VERSION="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$TS_KAFKA_POM" 2>/dev/null || true)"
TS_KAFKA_HOME="$TS_CACHE/kafka-${TS_KAFKA_VERSION:-unknown}"
TS_KAFKA_LIBS="$TS_KAFKA_HOME/libs"
TS_KAFKA_DIR="$TS_DEV/kafka"

TS_MONGO_PORT="${TASKSTREAM_MONGO_PORT:-27017}"
TS_SECANTUS_VERSION="0.7.0b3"
TS_PYMONGO_VERSION="4.20.0"
TS_MONGO_VENV="$TS_CACHE/secantusdb-$TS_SECANTUS_VERSION/venv"
TS_MONGO_DIR="$TS_DEV/mongo"

TS_GATEWAY_PORT="${TASKSTREAM_GATEWAY_PORT:-8080}"
TS_GATEWAY_METRICS_PORT="${TASKSTREAM_GATEWAY_METRICS_PORT:-8405}"
TS_GATEWAY_CONFIG="$TS_ROOT/gateway/haproxy.cfg"

TS_SMTP_PORT="${TASKSTREAM_SMTP_PORT:-1025}"
TS_MAILPIT_PORT="${TASKSTREAM_MAILPIT_PORT:-8025}"
TS_MAILPIT_VERSION="v1.33.1"
TS_MAILPIT_BIN="$TS_CACHE/mailpit-$TS_MAILPIT_VERSION/bin/mailpit"
TS_MAILPIT_DIR="$TS_DEV/mailpit"

TS_S3_PORT="${TASKSTREAM_S3_PORT:-9000}"
TS_VERSITYGW_VERSION="v1.8.0"
TS_VERSITYGW_BIN="$TS_CACHE/versitygw-$TS_VERSITYGW_VERSION/bin/versitygw"
TS_S3_DIR="$TS_DEV/s3"
# Development credentials and bucket: the services' development defaults
# (objects::S3Settings) are the same values.
TS_S3_ACCESS_KEY="taskstream"
TS_S3_SECRET_KEY="taskstream-dev-secret"
TS_S3_REGION="us-east-1"
TS_S3_BUCKET="taskstream-attachments"

# ---------------------------------------------------------------- helpers

infra_log() { printf '[infra] %s\n' "$*" >&2; }
infra_warn() { printf '[infra] warning: %s\n' "$*" >&2; }
infra_die() {
  printf '[infra] error: %s\n' "$*" >&2
  exit 1
}

# infra_elapsed START: seconds since START (an $EPOCHREALTIME value), e.g. "3.2s".
infra_elapsed() {
  LC_ALL=C awk -v s="$1" -v e="$EPOCHREALTIME" 'BEGIN { printf "%.1fs", e - s }'
}

infra_is_root() { [[ "$(id -u)" -eq 0 ]]; }

# infra_as_root CMD...: run CMD as root (directly, or through sudo).
infra_as_root() {
  if infra_is_root; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    infra_die "need root (or sudo) to run: $*"
  fi
}

# infra_apt_install PKG...: install Debian packages, refreshing the index if needed.
infra_apt_install() {
  local log="$TS_DEV/apt.log" t0=$EPOCHREALTIME
  command -v apt-get >/dev/null 2>&1 || infra_die "apt-get not found; install manually: $*"
  mkdir -p "$TS_DEV"
  infra_log "installing Debian packages: $* (log: $log)"
  export DEBIAN_FRONTEND=noninteractive
  if ! infra_as_root apt-get install -y -q --no-install-recommends "$@" >"$log" 2>&1; then
    infra_as_root apt-get update -q >>"$log" 2>&1 || true
    if ! infra_as_root apt-get install -y -q --no-install-recommends "$@" >>"$log" 2>&1; then
      tail -n 20 "$log" >&2
      infra_die "apt-get install $* failed (log: $log)"
    fi
  fi
  infra_log "installed $* in $(infra_elapsed "$t0")"
}

# infra_need_cmd CMD PKG: make sure CMD exists, installing PKG if it does not.
infra_need_cmd() {
  command -v "$1" >/dev/null 2>&1 || infra_apt_install "$2"
  command -v "$1" >/dev/null 2>&1 || infra_die "$1 still missing after installing $2"
}

# infra_port_open PORT: true when something accepts TCP connections on 127.0.0.1:PORT.
infra_port_open() {
  # shellcheck disable=SC2016 # expanded by the inner bash
  timeout 2 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$0"' "$1" 2>/dev/null
}

# infra_port_owner PORT: best-effort description of the listener on PORT.
infra_port_owner() {
  local out=""
  if command -v ss >/dev/null 2>&1; then
    out="$(ss -Hltnp "( sport = :$1 )" 2>/dev/null | awk '{ print $4, $6 }' | head -n 3)"
  fi
  printf '%s\n' "${out:-an unknown process}"
}

# infra_require_free_port NAME PORT VAR: fail fast when a foreign process holds PORT.
infra_require_free_port() {
  local name=$1 port=$2 var=$3
  if infra_port_open "$port"; then
    infra_die "port $port, needed by $name, is already in use by something that is not ours:
$(infra_port_owner "$port")
Stop that process, or choose another port with $var=<port>."
  fi
}

# infra_logfiles NAME: every log worth showing when NAME fails, one per line.
infra_logfiles() {
  infra_logfile "$1"
  if [[ "$1" == kafka ]]; then printf '%s\n' "$TS_KAFKA_DIR/logs/server.log"; fi
}

infra_pidfile() { printf '%s/%s.pid\n' "$TS_DEV" "$1"; }
infra_logfile() {
  case "$1" in
    postgres) printf '%s/postgres.log\n' "$TS_PG_BASE" ;;
    *) printf '%s/%s.log\n' "$TS_DEV" "$1" ;;
  esac
}

# infra_read_pid FILE: print the pid stored in FILE (first line), if any.
infra_read_pid() {
  local pid=""
  [[ -s "$1" ]] || return 1
  read -r pid <"$1" || true
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  printf '%s\n' "$pid"
}

# infra_pid_alive PID: PID exists and is not a zombie (an exited process that
# its new parent, often pid 1 in containers, has not reaped yet).
infra_pid_alive() {
  local state
  kill -0 "$1" 2>/dev/null || return 1
  state="$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1)"
  [[ -n "$state" && "$state" != Z ]]
}

# infra_pid_is PID MARKER: PID is alive and its command line contains MARKER.
infra_pid_is() {
  infra_pid_alive "$1" || return 1
  grep -qaF -- "$2" "/proc/$1/cmdline" 2>/dev/null
}

# infra_spawn PIDFILE LOGFILE DIR CMD...: start CMD detached (own session, no
# stdin, output to LOGFILE, no inherited lock fd) and record its pid.
infra_spawn() {
  local pidfile=$1 logfile=$2 dir=$3
  shift 3
  rm -f "$pidfile"
  (
    cd "$dir" || exit 1
    # shellcheck disable=SC2016 # expanded by the inner bash
    setsid bash -c 'echo "$$" >"$0"; exec "$@"' "$pidfile" "$@" \
      </dev/null >>"$logfile" 2>&1 9>&- &
  )
  local i
  for ((i = 0; i < 50; i++)); do
    [[ -s "$pidfile" ]] && return 0
    sleep 0.1
  done
  infra_die "could not start: $* (log: $logfile)"
}

# infra_stop_pid NAME PID TIMEOUT: TERM, wait up to TIMEOUT seconds, then KILL.
infra_stop_pid() {
  local name=$1 pid=$2 timeout=$3 i
  kill -TERM "$pid" 2>/dev/null || return 0
  for ((i = 0; i < timeout * 10; i++)); do
    infra_pid_alive "$pid" || return 0
    sleep 0.1
  done
  infra_warn "$name (pid $pid) did not stop within ${timeout}s; sending KILL"
  kill -KILL "$pid" 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do
    infra_pid_alive "$pid" || return 0
    sleep 0.1
  done
}

# infra_fail_with_log NAME MESSAGE LOGFILE...: print the tail of each log, then die.
infra_fail_with_log() {
  local name=$1 msg=$2 f
  shift 2
  for f in "$@"; do
    [[ -s "$f" ]] || continue
    printf -- '----- last lines of %s -----\n' "$f" >&2
    tail -n 40 "$f" >&2
    printf -- '-----\n' >&2
  done
  infra_die "$name: $msg (log: $*)"
}

# infra_wait_ready NAME TIMEOUT: poll infra_NAME_ready until it answers, the
# process dies, or TIMEOUT seconds pass.
infra_wait_ready() {
  local name=$1 timeout=$2 t0=$EPOCHREALTIME deadline=$((SECONDS + $2)) logs
  mapfile -t logs < <(infra_logfiles "$name")
  while ((SECONDS < deadline)); do
    if "infra_${name}_ready"; then
      infra_log "$name is ready on 127.0.0.1:$(infra_port "$name") (waited $(infra_elapsed "$t0"))"
      return 0
    fi
    if ! infra_running_pid "$name" >/dev/null; then
      infra_fail_with_log "$name" "the process exited while starting" "${logs[@]}"
    fi
    sleep 0.5
  done
  infra_fail_with_log "$name" "not answering after ${timeout}s" "${logs[@]}"
}

infra_port() {
  case "$1" in
    postgres) echo "$TS_PG_PORT" ;;
    kafka) echo "$TS_KAFKA_PORT" ;;
    mongo) echo "$TS_MONGO_PORT" ;;
    gateway) echo "$TS_GATEWAY_PORT" ;;
    mailpit) echo "$TS_SMTP_PORT" ;;
    s3) echo "$TS_S3_PORT" ;;
    *) return 1 ;;
  esac
}

# infra_ready_timeout NAME: seconds to wait for NAME to answer after a start.
infra_ready_timeout() {
  case "$1" in
    postgres) echo 60 ;;
    kafka) echo 120 ;;
    mongo) echo 60 ;;
    gateway) echo 20 ;;
    mailpit) echo 30 ;;
    s3) echo 30 ;;
  esac
}

infra_port_var() {
  case "$1" in
    postgres) echo TASKSTREAM_PG_PORT ;;
    kafka) echo TASKSTREAM_KAFKA_PORT ;;
    mongo) echo TASKSTREAM_MONGO_PORT ;;
    gateway) echo TASKSTREAM_GATEWAY_PORT ;;
    mailpit) echo TASKSTREAM_SMTP_PORT ;;
    s3) echo TASKSTREAM_S3_PORT ;;
  esac
}

# infra_running_pid NAME: print the pid of our running NAME server, if any.
infra_running_pid() {
  "infra_${1}_pid"
}

# Serialise concurrent `up`/`down` calls from several shells on one checkout.
infra_lock() {
  mkdir -p "$TS_DEV"
  exec 9>"$TS_DEV/.infra.lock"
  if ! flock -w 600 9; then
    infra_die "another scripts/infra is still running (lock: $TS_DEV/.infra.lock)"
  fi
}

infra_prepare_dev_dir() {
  mkdir -p "$TS_DEV"
  chmod 755 "$TS_DEV"
}

# ---------------------------------------------------------------- PostgreSQL

infra_pg_bindir() {
  local d
  if [[ -n "${TASKSTREAM_PG_BIN:-}" ]]; then
    printf '%s\n' "$TASKSTREAM_PG_BIN"
    return 0
  fi
  if [[ -x /usr/lib/postgresql/15/bin/initdb ]]; then
    echo /usr/lib/postgresql/15/bin
    return 0
  fi
  d="$(find /usr/lib/postgresql -mindepth 3 -maxdepth 3 -path '*/bin/initdb' 2>/dev/null | sort -V | tail -n 1)"
  [[ -n "$d" ]] || return 1
  dirname "$d"
}

infra_postgres_install() {
  if ! infra_pg_bindir >/dev/null; then
    infra_apt_install postgresql
  fi
  infra_pg_bindir >/dev/null || infra_die "no PostgreSQL found under /usr/lib/postgresql/*/bin after installing"
  if infra_is_root && ! id postgres >/dev/null 2>&1; then
    infra_die "the postgres system user is missing (it comes with Debian's postgresql-common package)"
  fi
}

# infra_pg_as_server CMD...: run CMD as the user that owns the cluster, from "/"
# (postgres refuses to run as root; the caller's cwd may be unreadable to it).
infra_pg_as_server() {
  if infra_is_root; then
    (cd / && runuser -u postgres -- "$@")
  else
    (cd / && "$@")
  fi
}

# The cluster lives in .dev/postgres when the postgres user can traverse the
# checkout's path. When it cannot (a checkout under /root, say), the cluster
# goes to /var/lib/taskstream/<hash of the checkout path>, and .dev/postgres
# becomes a symlink to it. Prints the real directory.
infra_pg_prepare_base() {
  local fallback hash
  if [[ -L "$TS_PG_BASE" ]]; then
    readlink -f "$TS_PG_BASE"
    return 0
  fi
  mkdir -p "$TS_PG_BASE"
  if infra_is_root; then
    chown postgres: "$TS_PG_BASE"
    chmod 700 "$TS_PG_BASE"
    if ! infra_pg_as_server test -x "$TS_PG_BASE" 2>/dev/null; then
      [[ -z "$(ls -A "$TS_PG_BASE")" ]] ||
        infra_die "the postgres user cannot reach $TS_PG_BASE, which is not empty; remove it"
      hash="$(printf '%s' "$TS_ROOT" | sha256sum | cut -c1-12)"
      fallback="/var/lib/taskstream/$hash/postgres"
      infra_log "the postgres user cannot traverse $TS_ROOT; keeping the cluster in $fallback (symlinked from $TS_PG_BASE)"
      mkdir -p "$fallback"
      chmod 755 /var/lib/taskstream "/var/lib/taskstream/$hash"
      chown postgres: "$fallback"
      chmod 700 "$fallback"
      rmdir "$TS_PG_BASE"
      ln -s "$fallback" "$TS_PG_BASE"
    fi
  fi
  readlink -f "$TS_PG_BASE"
}

infra_pg_datadir() { printf '%s/data\n' "$(readlink -f "$TS_PG_BASE")"; }

infra_postgres_pid() {
  local data pid
  [[ -e "$TS_PG_BASE" ]] || return 1
  data="$(infra_pg_datadir)"
  pid="$(infra_read_pid "$data/postmaster.pid" 2>/dev/null)" || return 1
  infra_pid_is "$pid" "$data" || return 1
  printf '%s\n' "$pid"
}

infra_pg_psql() { # infra_pg_psql USER PASSWORD DB ARGS...
  local user=$1 password=$2 db=$3 bindir
  shift 3
  bindir="$(infra_pg_bindir)"
  PGPASSWORD="$password" PGCONNECT_TIMEOUT=5 "$bindir/psql" -X -q -v ON_ERROR_STOP=1 \
    -h 127.0.0.1 -p "$TS_PG_PORT" -U "$user" -d "$db" "$@"
}

infra_postgres_ready() {
  [[ -s "$TS_PG_PWFILE" ]] || return 1
  [[ "$(infra_pg_psql postgres "$(<"$TS_PG_PWFILE")" postgres -tA -c 'select 1' 2>/dev/null)" == 1 ]]
}

infra_pg_initdb() {
  local base=$1 data=$1/data bindir tmp_pw t0=$EPOCHREALTIME
  bindir="$(infra_pg_bindir)"
  [[ -f "$data/PG_VERSION" ]] && return 0
  [[ -s "$TS_PG_PWFILE" ]] || (umask 077 && od -An -tx1 -N16 /dev/urandom | tr -d ' \n' >"$TS_PG_PWFILE")
  tmp_pw="$base/.initdb-pw"
  install -m 600 /dev/null "$tmp_pw"
  cat "$TS_PG_PWFILE" >"$tmp_pw"
  if infra_is_root; then chown postgres: "$tmp_pw"; fi
  infra_log "initdb $data"
  if ! infra_pg_as_server "$bindir/initdb" -D "$data" -U postgres --pwfile="$tmp_pw" \
    --auth-local=scram-sha-256 --auth-host=scram-sha-256 -E UTF8 --locale=C.UTF-8 \
    >"$base/initdb.log" 2>&1; then
    rm -f "$tmp_pw"
    infra_fail_with_log postgres "initdb failed" "$base/initdb.log"
  fi
  rm -f "$tmp_pw"
  printf "\ninclude_if_exists = 'taskstream.conf'\n" | infra_pg_as_server tee -a "$data/postgresql.conf" >/dev/null
  infra_log "initdb done in $(infra_elapsed "$t0")"
}

infra_pg_write_conf() {
  local data=$1
  infra_pg_as_server tee "$data/taskstream.conf" >/dev/null <<EOF
# Written by scripts/lib/infra.sh on every 'up'; edits are overwritten.
listen_addresses = '127.0.0.1'
port = $TS_PG_PORT
unix_socket_directories = ''
max_connections = 300
logging_collector = off
log_min_messages = warning
log_line_prefix = '%m [%p] %q%u@%d '
EOF
}

infra_postgres_start() {
  local base data bindir log
  [[ -s "$TS_PG_PWFILE" || ! -e "$TS_PG_BASE/data/PG_VERSION" ]] ||
    infra_die "$TS_PG_PWFILE is missing but a cluster exists in $TS_PG_BASE/data; remove $TS_PG_BASE to start over"
  base="$(infra_pg_prepare_base)"
  data="$base/data"
  bindir="$(infra_pg_bindir)"
  infra_pg_initdb "$base"
  infra_pg_write_conf "$data"
  log="$base/postgres.log"
  if infra_is_root; then
    touch "$log"
    chown postgres: "$log"
  fi
  infra_log "starting PostgreSQL ($("$bindir/postgres" --version | awk '{ print $3 }')) on 127.0.0.1:$TS_PG_PORT"
  if ! infra_pg_as_server "$bindir/pg_ctl" start -D "$data" -l "$log" -w -t "$(infra_ready_timeout postgres)" -s 9>&-; then
    infra_fail_with_log postgres "pg_ctl start failed" "$log"
  fi
}

infra_pg_bootstrap() {
  infra_pg_psql postgres "$(<"$TS_PG_PWFILE")" postgres <<'SQL' >/dev/null
DO $$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'taskstream') THEN
    CREATE ROLE taskstream LOGIN CREATEDB PASSWORD 'taskstream';
  ELSE
    ALTER ROLE taskstream LOGIN CREATEDB PASSWORD 'taskstream';
  END IF;
END
$$;
SELECT 'CREATE DATABASE taskstream OWNER taskstream'
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'taskstream')
\gexec
SQL
}

infra_postgres_after_ready() {
  local pid
  infra_pg_bootstrap || infra_die "could not create the taskstream role and database"
  pid="$(infra_postgres_pid)" && echo "$pid" >"$(infra_pidfile postgres)"
}

infra_postgres_stop() {
  local bindir data
  if ! infra_postgres_pid >/dev/null; then
    rm -f "$(infra_pidfile postgres)"
    return 1
  fi
  bindir="$(infra_pg_bindir)"
  data="$(infra_pg_datadir)"
  infra_pg_as_server "$bindir/pg_ctl" stop -D "$data" -m fast -w -t 60 -s ||
    infra_die "pg_ctl stop failed (log: $(infra_logfile postgres))"
  rm -f "$(infra_pidfile postgres)"
}

# ---------------------------------------------------------------- Kafka

# infra_java_major: the major version of `java` on PATH (0 when unknown).
infra_java_major() {
  local v=""
  if command -v java >/dev/null 2>&1; then
    v="$(java -XshowSettings:properties -version 2>&1 |
      sed -n 's/^ *java\.specification\.version = \([0-9]*\).*/\1/p')"
  fi
  echo "${v:-0}"
}

infra_kafka_install() {
  local stamp="$TS_KAFKA_HOME/.complete" sum tmp log t0=$EPOCHREALTIME
  [[ -n "$TS_KAFKA_VERSION" ]] || infra_die "cannot read <kafka.version> from $TS_KAFKA_POM"
  if (($(infra_java_major) < 17)); then
    infra_apt_install default-jre-headless
  fi
  (($(infra_java_major) >= 17)) || infra_die "Kafka $TS_KAFKA_VERSION needs Java 17 or newer; java on PATH is $(infra_java_major)"
  sum="$(sha256sum "$TS_KAFKA_POM" | cut -c1-64)"
  if [[ -f "$stamp" && "$(<"$stamp")" == "$sum" ]] && compgen -G "$TS_KAFKA_LIBS/kafka_2.13-*.jar" >/dev/null; then
    return 0
  fi
  infra_need_cmd mvn maven
  mkdir -p "$TS_KAFKA_HOME"
  tmp="$TS_KAFKA_HOME/libs.tmp.$$"
  log="$TS_KAFKA_HOME/mvn.log"
  rm -rf "$tmp"
  infra_log "downloading Kafka $TS_KAFKA_VERSION jars from Maven Central into $TS_KAFKA_LIBS (log: $log)"
  if ! mvn -B -q -Dstyle.color=never -f "$TS_KAFKA_POM" -Dmaven.repo.local="$TS_CACHE/m2" \
    dependency:copy-dependencies -DoutputDirectory="$tmp" -DincludeScope=runtime >"$log" 2>&1; then
    rm -rf "$tmp"
    infra_fail_with_log kafka "mvn dependency:copy-dependencies failed" "$log"
  fi
  rm -rf "$TS_KAFKA_LIBS"
  mv "$tmp" "$TS_KAFKA_LIBS"
  echo "$sum" >"$stamp"
  infra_log "Kafka jars ready ($(find "$TS_KAFKA_LIBS" -name '*.jar' | wc -l) jars) in $(infra_elapsed "$t0")"
}

infra_kafka_write_config() {
  mkdir -p "$TS_KAFKA_DIR/data" "$TS_KAFKA_DIR/logs"
  cat >"$TS_KAFKA_DIR/server.properties" <<EOF
# Written by scripts/lib/infra.sh on every 'up'; edits are overwritten.
# Single-node KRaft: this process is both broker and controller.
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:$TS_KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$TS_KAFKA_PORT,CONTROLLER://127.0.0.1:$TS_KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$TS_KAFKA_PORT,CONTROLLER://127.0.0.1:$TS_KAFKA_CONTROLLER_PORT
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$TS_KAFKA_DIR/data
num.partitions=3
auto.create.topics.enable=true
offsets.topic.replication.factor=1
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
num.network.threads=2
num.io.threads=4
EOF
  cat >"$TS_KAFKA_DIR/log4j2.properties" <<'EOF'
# Written by scripts/lib/infra.sh. Broker logs go to ${kafka.logs.dir}/server.log.
status = warn
name = taskstream-kafka
appender.server.type = RollingFile
appender.server.name = server
appender.server.fileName = ${sys:kafka.logs.dir}/server.log
appender.server.filePattern = ${sys:kafka.logs.dir}/server.log.%i
appender.server.layout.type = PatternLayout
appender.server.layout.pattern = [%d] %p %m (%c)%n
appender.server.policies.type = Policies
appender.server.policies.size.type = SizeBasedTriggeringPolicy
appender.server.policies.size.size = 50MB
appender.server.strategy.type = DefaultRolloverStrategy
appender.server.strategy.max = 3
rootLogger.level = INFO
rootLogger.appenderRef.server.ref = server
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.state.name = state.change.logger
logger.state.level = WARN
EOF
  cat >"$TS_KAFKA_DIR/tools-log4j2.properties" <<'EOF'
# Written by scripts/lib/infra.sh. Command-line tools log warnings to stderr.
status = warn
appender.stderr.type = Console
appender.stderr.name = stderr
appender.stderr.target = SYSTEM_ERR
appender.stderr.layout.type = PatternLayout
appender.stderr.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.stderr.ref = stderr
EOF
  cat >"$TS_KAFKA_DIR/client.properties" <<'EOF'
# Admin client settings for the readiness probe: fail fast instead of waiting 60 s.
request.timeout.ms=5000
default.api.timeout.ms=10000
socket.connection.setup.timeout.ms=2000
EOF
}

# infra_kafka_tool CLASS ARGS...: run a Kafka command-line class on the cached
# classpath, killed after 30 s.
infra_kafka_tool() {
  local class=$1
  shift
  timeout 30 java -Xmx256m -XX:TieredStopAtLevel=1 -XX:+UseSerialGC \
    -Dlog4j2.configurationFile="file:$TS_KAFKA_DIR/tools-log4j2.properties" \
    -cp "$TS_KAFKA_LIBS/*" "$class" "$@"
}

infra_kafka_format() {
  local cluster_id log="$TS_KAFKA_DIR/format.log"
  [[ -f "$TS_KAFKA_DIR/data/meta.properties" ]] && return 0
  cluster_id="$(infra_kafka_tool kafka.tools.StorageTool random-uuid 2>>"$log")" ||
    infra_fail_with_log kafka "StorageTool random-uuid failed" "$log"
  infra_log "formatting Kafka storage (cluster id $cluster_id)"
  infra_kafka_tool kafka.tools.StorageTool format -t "$cluster_id" \
    -c "$TS_KAFKA_DIR/server.properties" --standalone >>"$log" 2>&1 ||
    infra_fail_with_log kafka "StorageTool format failed" "$log"
}

infra_kafka_pid() {
  local pid
  pid="$(infra_read_pid "$(infra_pidfile kafka)")" || return 1
  infra_pid_is "$pid" "$TS_KAFKA_DIR/server.properties" || return 1
  printf '%s\n' "$pid"
}

infra_kafka_start() {
  infra_kafka_write_config
  infra_kafka_format
  infra_log "starting Kafka $TS_KAFKA_VERSION (KRaft) on 127.0.0.1:$TS_KAFKA_PORT"
  infra_spawn "$(infra_pidfile kafka)" "$(infra_logfile kafka)" "$TS_KAFKA_DIR" \
    java -Xms256m -Xmx1536m -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="file:$TS_KAFKA_DIR/log4j2.properties" \
    -Dkafka.logs.dir="$TS_KAFKA_DIR/logs" \
    -cp "$TS_KAFKA_LIBS/*" kafka.Kafka "$TS_KAFKA_DIR/server.properties"
}

# Ready = the broker answers a real Metadata request (TopicCommand --list).
infra_kafka_ready() {
  infra_port_open "$TS_KAFKA_PORT" || return 1
  infra_kafka_tool org.apache.kafka.tools.TopicCommand \
    --bootstrap-server "127.0.0.1:$TS_KAFKA_PORT" \
    --command-config "$TS_KAFKA_DIR/client.properties" --list >/dev/null 2>&1
}

infra_kafka_stop() {
  local pid
  pid="$(infra_kafka_pid)" || {
    rm -f "$(infra_pidfile kafka)"
    return 1
  }
  infra_stop_pid kafka "$pid" 60
  rm -f "$(infra_pidfile kafka)"
}

# ---------------------------------------------------------------- SecantusDB (MongoDB wire)

infra_mongo_storage() {
  local s="${TASKSTREAM_MONGO_STORAGE:-$TS_MONGO_DIR/data}"
  if [[ "$s" != ":memory:" && "$s" != /* ]]; then
    s="$TS_ROOT/$s"
  fi
  printf '%s\n' "$s"
}

# infra_python_for_venv: print a python3 that can create virtual environments.
infra_python_for_venv() {
  local py
  for py in python3 /usr/bin/python3; do
    if command -v "$py" >/dev/null 2>&1 && "$py" -c 'import ensurepip, venv' >/dev/null 2>&1; then
      command -v "$py"
      return 0
    fi
  done
  return 1
}

infra_mongo_install() {
  local home stamp want py log t0=$EPOCHREALTIME
  home="$(dirname "$TS_MONGO_VENV")"
  stamp="$home/.complete"
  want="secantusdb==$TS_SECANTUS_VERSION pymongo==$TS_PYMONGO_VERSION"
  if [[ -f "$stamp" && "$(<"$stamp")" == "$want" && -x "$TS_MONGO_VENV/bin/secantusd-py" ]] &&
    "$TS_MONGO_VENV/bin/python" -c 'import secantus, pymongo' >/dev/null 2>&1; then
    return 0
  fi
  py="$(infra_python_for_venv)" || {
    infra_apt_install python3 python3-venv
    py="$(infra_python_for_venv)" || infra_die "no python3 with venv support found"
  }
  mkdir -p "$home"
  log="$home/pip.log"
  infra_log "installing $want into $TS_MONGO_VENV with $py ($("$py" --version 2>&1)) (log: $log)"
  rm -rf "$TS_MONGO_VENV" "$stamp"
  "$py" -m venv "$TS_MONGO_VENV" >"$log" 2>&1 || infra_fail_with_log mongo "python -m venv failed" "$log"
  # shellcheck disable=SC2086 # $want is a list of requirement specifiers
  "$TS_MONGO_VENV/bin/pip" install --disable-pip-version-check -q $want >>"$log" 2>&1 ||
    infra_fail_with_log mongo "pip install $want failed" "$log"
  echo "$want" >"$stamp"
  infra_log "SecantusDB ready in $(infra_elapsed "$t0")"
}

infra_mongo_pid() {
  local pid
  pid="$(infra_read_pid "$(infra_pidfile mongo)")" || return 1
  infra_pid_is "$pid" "secantusd-py" || return 1
  printf '%s\n' "$pid"
}

infra_mongo_start() {
  local storage
  storage="$(infra_mongo_storage)"
  mkdir -p "$TS_MONGO_DIR"
  [[ "$storage" == ":memory:" ]] || mkdir -p "$storage"
  infra_log "starting SecantusDB $TS_SECANTUS_VERSION on 127.0.0.1:$TS_MONGO_PORT (storage: $storage)"
  infra_spawn "$(infra_pidfile mongo)" "$(infra_logfile mongo)" "$TS_MONGO_DIR" \
    "$TS_MONGO_VENV/bin/secantusd-py" --host 127.0.0.1 --port "$TS_MONGO_PORT" --storage-path "$storage"
}

# Ready = the server answers the `ping` command through pymongo.
infra_mongo_ready() {
  infra_port_open "$TS_MONGO_PORT" || return 1
  [[ -x "$TS_MONGO_VENV/bin/python" ]] || return 1
  timeout 15 "$TS_MONGO_VENV/bin/python" - "$TS_MONGO_PORT" <<'PY' >/dev/null 2>&1
import sys
import pymongo
client = pymongo.MongoClient(
    f"mongodb://127.0.0.1:{sys.argv[1]}/?retryWrites=false&directConnection=true",
    serverSelectionTimeoutMS=3000, connectTimeoutMS=2000)
assert client.admin.command("ping").get("ok") == 1
PY
}

infra_mongo_stop() {
  local pid
  pid="$(infra_mongo_pid)" || {
    rm -f "$(infra_pidfile mongo)"
    return 1
  }
  infra_stop_pid mongo "$pid" 20
  rm -f "$(infra_pidfile mongo)"
}

# ---------------------------------------------------------------- HAProxy (the gateway)

infra_gateway_install() {
  infra_need_cmd curl curl
  command -v haproxy >/dev/null 2>&1 || [[ -x /usr/sbin/haproxy ]] || infra_apt_install haproxy
  [[ -x "$(infra_haproxy)" ]] || infra_die "haproxy still missing after installing it"
}

# The haproxy binary (Debian installs it in /usr/sbin, not always on PATH).
infra_haproxy() {
  command -v haproxy 2>/dev/null || echo /usr/sbin/haproxy
}

infra_gateway_pid() {
  local pid
  pid="$(infra_read_pid "$(infra_pidfile gateway)")" || return 1
  infra_pid_is "$pid" "$TS_GATEWAY_CONFIG" || return 1
  printf '%s\n' "$pid"
}

# The gateway's environment: its listen addresses from the TASKSTREAM_*
# ports; everything else is gateway/haproxy.cfg's default unless set.
infra_gateway_env() {
  export GATEWAY_LISTEN="${GATEWAY_LISTEN:-127.0.0.1:$TS_GATEWAY_PORT}"
  export GATEWAY_METRICS_LISTEN="${GATEWAY_METRICS_LISTEN:-127.0.0.1:$TS_GATEWAY_METRICS_PORT}"
}

# infra_gateway_sum: a checksum of everything HAProxy loads from gateway/.
infra_gateway_sum() {
  (cd "$TS_ROOT/gateway" && cat haproxy.cfg ./*.map ./*.lua openapi.json trusted-proxies.lst errors/* 2>/dev/null) |
    sha256sum | cut -c1-64
}

infra_gateway_start() {
  local log
  log="$(infra_logfile gateway)"
  infra_gateway_sum >"$TS_DEV/gateway.sum"
  infra_gateway_env
  "$(infra_haproxy)" -dW -c -q -f "$TS_GATEWAY_CONFIG" >"$TS_DEV/gateway-check.log" 2>&1 ||
    infra_fail_with_log gateway "haproxy -c rejected $TS_GATEWAY_CONFIG" "$TS_DEV/gateway-check.log"
  infra_log "starting the gateway ($("$(infra_haproxy)" -v | awk 'NR == 1 { print $1, $3 }')) on 127.0.0.1:$TS_GATEWAY_PORT (metrics :$TS_GATEWAY_METRICS_PORT)"
  # Each start begins a fresh access log (HAProxy writes it from offset 0).
  : >"$log"
  infra_spawn "$(infra_pidfile gateway)" "$log" "$TS_ROOT" "$(infra_haproxy)" -db -f "$TS_GATEWAY_CONFIG"
}

# Ready = the gateway answers its own GET /healthz.
infra_gateway_ready() {
  [[ "$(curl -s -o /dev/null -m 2 -w '%{http_code}' "http://127.0.0.1:$TS_GATEWAY_PORT/healthz" 2>/dev/null)" == 200 ]]
}

infra_gateway_stop() {
  local pid
  pid="$(infra_gateway_pid)" || {
    rm -f "$(infra_pidfile gateway)"
    return 1
  }
  infra_stop_pid gateway "$pid" 10
  rm -f "$(infra_pidfile gateway)"
}

# ---------------------------------------------------------------- Mailpit (SMTP)

# infra_go: the go command (Debian's golang-go when none is installed).
infra_go() {
  if command -v go >/dev/null 2>&1; then
    command -v go
  elif [[ -x /usr/local/go/bin/go ]]; then
    echo /usr/local/go/bin/go
  else
    infra_apt_install golang-go >/dev/null
    command -v go
  fi
}

# infra_go_install NAME LABEL PACKAGE@VERSION BIN: builds a Go program from
# source with `go install` (the module proxy) into BIN's directory, once per
# version; the module and build caches live in the cache too.
infra_go_install() {
  local name=$1 label=$2 package=$3 bin=$4 go log t0=$EPOCHREALTIME
  [[ -x "$bin" ]] && return 0
  go="$(infra_go)" || infra_die "no go command to build $label with"
  mkdir -p "$(dirname "$bin")"
  log="$(dirname "$(dirname "$bin")")/go-install.log"
  infra_log "building $label with $("$go" version | awk '{ print $3 }') (log: $log)"
  if ! GOPATH="$TS_CACHE/go" GOBIN="$(dirname "$bin")" GOCACHE="$TS_CACHE/go/build-cache" \
    GOFLAGS=-mod=mod "$go" install "$package" >"$log" 2>&1; then
    infra_fail_with_log "$name" "go install $package failed" "$log"
  fi
  infra_log "$label ready in $(infra_elapsed "$t0")"
}

infra_mailpit_install() {
  infra_go_install mailpit "Mailpit $TS_MAILPIT_VERSION" \
    "github.com/axllent/mailpit@$TS_MAILPIT_VERSION" "$TS_MAILPIT_BIN"
}

infra_mailpit_pid() {
  local pid
  pid="$(infra_read_pid "$(infra_pidfile mailpit)")" || return 1
  infra_pid_is "$pid" "$TS_MAILPIT_BIN" || return 1
  printf '%s\n' "$pid"
}

infra_mailpit_start() {
  mkdir -p "$TS_MAILPIT_DIR"
  infra_require_free_port mailpit-api "$TS_MAILPIT_PORT" TASKSTREAM_MAILPIT_PORT
  infra_log "starting Mailpit $TS_MAILPIT_VERSION: SMTP 127.0.0.1:$TS_SMTP_PORT, API http://127.0.0.1:$TS_MAILPIT_PORT/api/v1/"
  infra_spawn "$(infra_pidfile mailpit)" "$(infra_logfile mailpit)" "$TS_MAILPIT_DIR" \
    "$TS_MAILPIT_BIN" --smtp "127.0.0.1:$TS_SMTP_PORT" --listen "127.0.0.1:$TS_MAILPIT_PORT" \
    --database "$TS_MAILPIT_DIR/mailpit.db" --max 10000 --disable-version-check
}

# Ready = the API answers and the SMTP port accepts connections.
infra_mailpit_ready() {
  infra_port_open "$TS_SMTP_PORT" &&
    [[ "$(curl -s -o /dev/null -m 2 -w '%{http_code}' "http://127.0.0.1:$TS_MAILPIT_PORT/api/v1/info" 2>/dev/null)" == 200 ]]
}

infra_mailpit_stop() {
  local pid
  pid="$(infra_mailpit_pid)" || {
    rm -f "$(infra_pidfile mailpit)"
    return 1
  }
  infra_stop_pid mailpit "$pid" 10
  rm -f "$(infra_pidfile mailpit)"
}

# ---------------------------------------------------------------- versitygw (S3)

# Built from source like Mailpit (shared module and build caches).
infra_s3_install() {
  infra_go_install s3 "versitygw $TS_VERSITYGW_VERSION" \
    "github.com/versity/versitygw/cmd/versitygw@$TS_VERSITYGW_VERSION" "$TS_VERSITYGW_BIN"
}

infra_s3_pid() {
  local pid
  pid="$(infra_read_pid "$(infra_pidfile s3)")" || return 1
  infra_pid_is "$pid" "$TS_VERSITYGW_BIN" || return 1
  printf '%s\n' "$pid"
}

# The posix backend: every directory under .dev/s3/data is a bucket.
infra_s3_start() {
  mkdir -p "$TS_S3_DIR/data"
  infra_log "starting versitygw $TS_VERSITYGW_VERSION: S3 http://127.0.0.1:$TS_S3_PORT (bucket $TS_S3_BUCKET)"
  ROOT_ACCESS_KEY="$TS_S3_ACCESS_KEY" ROOT_SECRET_KEY="$TS_S3_SECRET_KEY" \
    infra_spawn "$(infra_pidfile s3)" "$(infra_logfile s3)" "$TS_S3_DIR" \
    "$TS_VERSITYGW_BIN" --port "127.0.0.1:$TS_S3_PORT" --region "$TS_S3_REGION" --quiet \
    posix "$TS_S3_DIR/data"
}

# infra_s3_curl ARGS...: curl with an AWS SigV4 signature of the dev credentials.
infra_s3_curl() {
  curl -s -m 5 --aws-sigv4 "aws:amz:$TS_S3_REGION:s3" -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" \
    --user "$TS_S3_ACCESS_KEY:$TS_S3_SECRET_KEY" "$@"
}

# Ready = a signed ListBuckets answers 200; then the bucket exists (the
# services also create it when missing, so this is for convenience).
infra_s3_ready() {
  [[ "$(infra_s3_curl -o /dev/null -w '%{http_code}' "http://127.0.0.1:$TS_S3_PORT/" 2>/dev/null)" == 200 ]] || return 1
  [[ -d "$TS_S3_DIR/data/$TS_S3_BUCKET" ]] ||
    infra_s3_curl -o /dev/null -X PUT "http://127.0.0.1:$TS_S3_PORT/$TS_S3_BUCKET" || true
}

infra_s3_stop() {
  local pid
  pid="$(infra_s3_pid)" || {
    rm -f "$(infra_pidfile s3)"
    return 1
  }
  infra_stop_pid s3 "$pid" 10
  rm -f "$(infra_pidfile s3)"
}

# ---------------------------------------------------------------- commands

infra_check_names() {
  local n s ok
  for n in "$@"; do
    ok=""
    for s in "${TS_SERVERS[@]}"; do [[ "$n" == "$s" ]] && ok=1; done
    [[ -n "$ok" ]] || infra_die "unknown server '$n' (known: ${TS_SERVERS[*]})"
  done
}

# infra_up [NAME...]: install what is missing, start what is not running, and
# wait until every server answers a real query. Running servers are left alone.
infra_up() {
  local names=("$@") n pid t0=$EPOCHREALTIME
  ((${#names[@]})) || names=("${TS_SERVERS[@]}")
  infra_check_names "${names[@]}"
  infra_prepare_dev_dir
  infra_lock
  local to_start=() to_wait=()
  for n in "${names[@]}"; do
    # HAProxy reads its maps and document once: a changed gateway/ means a
    # restart.
    if [[ "$n" == gateway ]] && infra_gateway_pid >/dev/null &&
      [[ "$(cat "$TS_DEV/gateway.sum" 2>/dev/null)" != "$(infra_gateway_sum)" ]]; then
      infra_log "gateway/ changed since the gateway started; restarting it"
      infra_gateway_stop || true
    fi
    if pid="$(infra_running_pid "$n")"; then
      if "infra_${n}_ready"; then
        infra_log "$n already running (pid $pid, 127.0.0.1:$(infra_port "$n"))"
      else
        infra_log "$n is running (pid $pid) but not answering yet; waiting"
        to_wait+=("$n")
      fi
    else
      infra_require_free_port "$n" "$(infra_port "$n")" "$(infra_port_var "$n")"
      if [[ "$n" == kafka ]]; then
        infra_require_free_port kafka-controller "$TS_KAFKA_CONTROLLER_PORT" TASKSTREAM_KAFKA_CONTROLLER_PORT
      fi
      to_start+=("$n")
    fi
  done
  for n in "${to_start[@]}"; do "infra_${n}_install"; done
  for n in "${to_start[@]}"; do "infra_${n}_start"; done
  for n in "${to_start[@]}" "${to_wait[@]}"; do
    infra_wait_ready "$n" "$(infra_ready_timeout "$n")"
  done
  for n in "${names[@]}"; do
    if [[ "$n" == postgres ]]; then infra_postgres_after_ready; fi
  done
  infra_log "infra up in $(infra_elapsed "$t0")"
}

# infra_install [NAME...]: install what is missing, start nothing.
infra_install() {
  local names=("$@") n
  ((${#names[@]})) || names=("${TS_SERVERS[@]}")
  infra_check_names "${names[@]}"
  infra_prepare_dev_dir
  infra_lock
  for n in "${names[@]}"; do "infra_${n}_install"; done
}

# infra_down [NAME...]: stop our servers (in reverse order).
infra_down() {
  local names=("$@") n i
  ((${#names[@]})) || names=("${TS_SERVERS[@]}")
  infra_check_names "${names[@]}"
  [[ -d "$TS_DEV" ]] || {
    infra_log "nothing to stop (no $TS_DEV)"
    return 0
  }
  infra_lock
  for ((i = ${#names[@]} - 1; i >= 0; i--)); do
    n="${names[i]}"
    if "infra_${n}_stop"; then
      infra_log "$n stopped"
    else
      infra_log "$n was not running"
    fi
  done
}

# infra_clean: stop every server and delete its state (data, config, logs).
# A TASKSTREAM_MONGO_STORAGE outside .dev/ is left alone.
infra_clean() {
  local n
  infra_down "${TS_SERVERS[@]}"
  if [[ -L "$TS_PG_BASE" ]]; then rm -rf "$(readlink -f "$TS_PG_BASE")"; fi
  rm -rf "$TS_PG_BASE" "$TS_PG_PWFILE" "$TS_KAFKA_DIR" "$TS_MONGO_DIR" "$TS_MAILPIT_DIR" "$TS_S3_DIR"
  for n in "${TS_SERVERS[@]}"; do rm -f "$(infra_pidfile "$n")" "$TS_DEV/$n.log"; done
  infra_log "removed the servers' state from $TS_DEV"
}

# infra_status: one line per server; exit status 0 only when all are up.
infra_status() {
  local n pid state rc=0
  for n in "${TS_SERVERS[@]}"; do
    if pid="$(infra_running_pid "$n")"; then
      if "infra_${n}_ready"; then state="up"; else
        state="starting"
        rc=1
      fi
      printf '%-9s %-9s 127.0.0.1:%-6s pid %-8s log %s\n' "$n" "$state" "$(infra_port "$n")" "$pid" "$(infra_logfile "$n")"
    else
      printf '%-9s %-9s 127.0.0.1:%-6s\n' "$n" "down" "$(infra_port "$n")"
      rc=1
    fi
  done
  return "$rc"
}

# infra_env: the connection settings for tests, as shell exports (and the
# Kafka installation, for tests that run a broker of their own).
infra_env() {
  cat <<EOF
export TASKSTREAM_TEST_DATABASE_URL='postgres://taskstream:taskstream@127.0.0.1:$TS_PG_PORT/postgres'
export TASKSTREAM_TEST_KAFKA_BROKERS='127.0.0.1:$TS_KAFKA_PORT'
export TASKSTREAM_TEST_MONGODB_URL='mongodb://127.0.0.1:$TS_MONGO_PORT/?retryWrites=false'
export TASKSTREAM_KAFKA_HOME='$TS_KAFKA_HOME'
export TASKSTREAM_TEST_SMTP='127.0.0.1:$TS_SMTP_PORT'
export TASKSTREAM_TEST_MAILPIT_URL='http://127.0.0.1:$TS_MAILPIT_PORT'
export TASKSTREAM_MAILPIT_BIN='$TS_MAILPIT_BIN'
export TASKSTREAM_TEST_S3_URL='http://127.0.0.1:$TS_S3_PORT'
export TASKSTREAM_TEST_S3_ACCESS_KEY='$TS_S3_ACCESS_KEY'
export TASKSTREAM_TEST_S3_SECRET_KEY='$TS_S3_SECRET_KEY'
EOF
}
