# shellcheck shell=bash
# scripts/lib/dev.sh: helpers shared by scripts/dev and scripts/test: the Cargo
# target dir, the dev JWT signing key, and the five service processes.
# Sourced; needs scripts/lib/infra.sh (sourced here).

if [[ -n "${TS_DEV_LIB_LOADED:-}" ]]; then
  return 0
fi
TS_DEV_LIB_LOADED=1

# shellcheck source=scripts/lib/infra.sh
source "$(dirname "${BASH_SOURCE[0]}")/infra.sh"

TS_SERVICES=(auth command-api query-api projector notifier)
TS_SERVICE_READY_TIMEOUT=120

dev_log() { printf '[dev] %s\n' "$*" >&2; }

# dev_use_cargo: make cargo reachable and default CARGO_TARGET_DIR to the cache,
# so fresh clones (CI) reuse earlier builds.
dev_use_cargo() {
  if ! command -v cargo >/dev/null 2>&1 && [[ -f "$HOME/.cargo/env" ]]; then
    # shellcheck source=/dev/null
    source "$HOME/.cargo/env"
  fi
  command -v cargo >/dev/null 2>&1 || infra_die "cargo not found; install Rust with rustup"
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$TS_CACHE/target}"
}

dev_signing_key_path() { printf '%s/jwt-signing.pem\n' "$TS_DEV"; }

# dev_ensure_signing_key: a dev Ed25519 key (PKCS#8 PEM) in .dev/jwt-signing.pem.
dev_ensure_signing_key() {
  local key
  key="$(dev_signing_key_path)"
  [[ -s "$key" ]] && return 0
  infra_need_cmd openssl openssl
  mkdir -p "$TS_DEV"
  (umask 077 && openssl genpkey -algorithm ed25519 -out "$key.tmp") ||
    infra_die "openssl genpkey failed"
  mv "$key.tmp" "$key"
  dev_log "generated the dev JWT signing key $key"
}

# dev_export_service_env: settings for the services. The services' own defaults
# already match the default ports; exporting keeps TASKSTREAM_*_PORT overrides
# consistent. Variables already set in the environment win.
dev_export_service_env() {
  local pg="postgres://taskstream:taskstream@127.0.0.1:$TS_PG_PORT/taskstream"
  local kafka="127.0.0.1:$TS_KAFKA_PORT"
  local mongo="mongodb://127.0.0.1:$TS_MONGO_PORT/?retryWrites=false"
  local jwks
  export AUTH_SIGNING_KEY_PATH="${AUTH_SIGNING_KEY_PATH:-$(dev_signing_key_path)}"
  export AUTH_DATABASE_URL="${AUTH_DATABASE_URL:-$pg}"
  export AUTH_KAFKA_BROKERS="${AUTH_KAFKA_BROKERS:-$kafka}"
  jwks="http://$(dev_service_http_addr auth)/.well-known/jwks.json"
  export COMMAND_API_DATABASE_URL="${COMMAND_API_DATABASE_URL:-$pg}"
  export COMMAND_API_KAFKA_BROKERS="${COMMAND_API_KAFKA_BROKERS:-$kafka}"
  export COMMAND_API_JWKS_URL="${COMMAND_API_JWKS_URL:-$jwks}"
  export QUERY_API_MONGODB_URL="${QUERY_API_MONGODB_URL:-$mongo}"
  export QUERY_API_DATABASE_URL="${QUERY_API_DATABASE_URL:-$pg}"
  export QUERY_API_JWKS_URL="${QUERY_API_JWKS_URL:-$jwks}"
  export PROJECTOR_KAFKA_BROKERS="${PROJECTOR_KAFKA_BROKERS:-$kafka}"
  export PROJECTOR_MONGODB_URL="${PROJECTOR_MONGODB_URL:-$mongo}"
  export NOTIFIER_DATABASE_URL="${NOTIFIER_DATABASE_URL:-$pg}"
  export NOTIFIER_KAFKA_BROKERS="${NOTIFIER_KAFKA_BROKERS:-$kafka}"
  export NOTIFIER_JWKS_URL="${NOTIFIER_JWKS_URL:-$jwks}"
  # The object store scripts/infra runs, with its development credentials
  # (presigned URLs name the same address: no proxy in front of it here).
  export COMMAND_API_S3_URL="${COMMAND_API_S3_URL:-http://127.0.0.1:$TS_S3_PORT}"
  export COMMAND_API_S3_ACCESS_KEY="${COMMAND_API_S3_ACCESS_KEY:-$TS_S3_ACCESS_KEY}"
  export COMMAND_API_S3_SECRET_KEY="${COMMAND_API_S3_SECRET_KEY:-$TS_S3_SECRET_KEY}"
  export QUERY_API_S3_URL="${QUERY_API_S3_URL:-http://127.0.0.1:$TS_S3_PORT}"
  export QUERY_API_S3_ACCESS_KEY="${QUERY_API_S3_ACCESS_KEY:-$TS_S3_ACCESS_KEY}"
  export QUERY_API_S3_SECRET_KEY="${QUERY_API_S3_SECRET_KEY:-$TS_S3_SECRET_KEY}"
  # The gateway on this machine is the one proxy whose X-Forwarded-For the
  # services believe.
  export AUTH_TRUSTED_PROXIES="${AUTH_TRUSTED_PROXIES:-127.0.0.1/32}"
  export COMMAND_API_TRUSTED_PROXIES="${COMMAND_API_TRUSTED_PROXIES:-127.0.0.1/32}"
  export QUERY_API_TRUSTED_PROXIES="${QUERY_API_TRUSTED_PROXIES:-127.0.0.1/32}"
  export NOTIFIER_TRUSTED_PROXIES="${NOTIFIER_TRUSTED_PROXIES:-127.0.0.1/32}"
  # A local run: secrets left unset take their development values.
  export TASKSTREAM_DEVELOPMENT="${TASKSTREAM_DEVELOPMENT:-1}"
}

# dev_service_listen_addr NAME: the service's listen address (its env var or default).
dev_service_listen_addr() {
  case "$1" in
    auth) echo "${AUTH_LISTEN_ADDR:-127.0.0.1:8081}" ;;
    command-api) echo "${COMMAND_API_LISTEN_ADDR:-127.0.0.1:8082}" ;;
    query-api) echo "${QUERY_API_LISTEN_ADDR:-127.0.0.1:8083}" ;;
    projector) echo "${PROJECTOR_LISTEN_ADDR:-127.0.0.1:8084}" ;;
    notifier) echo "${NOTIFIER_LISTEN_ADDR:-127.0.0.1:8085}" ;;
    *) infra_die "unknown service $1" ;;
  esac
}

# dev_service_http_addr NAME: host:port to reach the service from this machine.
dev_service_http_addr() {
  local addr
  addr="$(dev_service_listen_addr "$1")"
  printf '%s\n' "${addr/#0.0.0.0:/127.0.0.1:}"
}

dev_service_bin() { printf '%s/debug/%s\n' "$CARGO_TARGET_DIR" "$1"; }

# dev_service_pid NAME: pid of our running NAME service, if any.
dev_service_pid() {
  local pid
  pid="$(infra_read_pid "$(infra_pidfile "$1")")" || return 1
  infra_pid_is "$pid" "debug/$1" || return 1
  printf '%s\n' "$pid"
}

# dev_service_stale PID: the binary was rebuilt since PID started.
dev_service_stale() {
  [[ "$(readlink "/proc/$1/exe" 2>/dev/null)" == *" (deleted)" ]]
}

# dev_service_code NAME: HTTP status of GET /readyz ("000" when unreachable).
dev_service_code() {
  curl -s -o /dev/null -m 5 -w '%{http_code}' "http://$(dev_service_http_addr "$1")/readyz" 2>/dev/null || true
}

dev_service_start() {
  local name=$1 bin pid port
  bin="$(dev_service_bin "$name")"
  if pid="$(dev_service_pid "$name")"; then
    if dev_service_stale "$pid"; then
      dev_log "$name (pid $pid) runs an old binary; restarting"
      dev_service_stop "$name"
    else
      dev_log "$name already running (pid $pid)"
      return 0
    fi
  fi
  [[ -x "$bin" ]] || infra_die "$bin not found; did cargo build --workspace --bins succeed?"
  port="$(dev_service_http_addr "$name")"
  port="${port##*:}"
  infra_require_free_port "$name" "$port" "$(echo "${name^^}" | tr - _)_LISTEN_ADDR"
  : >"$(infra_logfile "$name")"
  dev_log "starting $name (log: $(infra_logfile "$name"))"
  infra_spawn "$(infra_pidfile "$name")" "$(infra_logfile "$name")" "$TS_ROOT" "$bin"
}

dev_service_wait() {
  local name=$1 deadline=$((SECONDS + TS_SERVICE_READY_TIMEOUT)) t0=$EPOCHREALTIME code=000
  while ((SECONDS < deadline)); do
    code="$(dev_service_code "$name")"
    if [[ "$code" == 200 ]]; then
      dev_log "$name is ready (waited $(infra_elapsed "$t0"))"
      return 0
    fi
    dev_service_pid "$name" >/dev/null ||
      infra_fail_with_log "$name" "the process exited while starting" "$(infra_logfile "$name")"
    sleep 0.5
  done
  infra_fail_with_log "$name" "GET /readyz answered $code, not 200, after ${TS_SERVICE_READY_TIMEOUT}s" "$(infra_logfile "$name")"
}

dev_service_stop() {
  local name=$1 pid
  if pid="$(dev_service_pid "$name")"; then
    infra_stop_pid "$name" "$pid" 30
    dev_log "$name stopped"
  fi
  rm -f "$(infra_pidfile "$name")"
}

dev_services_up() {
  local name
  infra_need_cmd curl curl
  dev_export_service_env
  # auth first: the APIs fetch its JWKS.
  dev_service_start auth
  dev_service_wait auth
  for name in command-api query-api projector notifier; do dev_service_start "$name"; done
  for name in command-api query-api projector notifier; do dev_service_wait "$name"; done
}

dev_services_down() {
  local i
  for ((i = ${#TS_SERVICES[@]} - 1; i >= 0; i--)); do dev_service_stop "${TS_SERVICES[i]}"; done
}

dev_services_status() {
  local name pid code rc=0
  for name in "${TS_SERVICES[@]}"; do
    if pid="$(dev_service_pid "$name")"; then
      code="$(dev_service_code "$name")"
      [[ "$code" == 200 ]] || rc=1
      printf '%-11s %-9s http://%-16s pid %-8s readyz %s\n' "$name" up "$(dev_service_http_addr "$name")" "$pid" "$code"
    else
      printf '%-11s %-9s http://%s\n' "$name" down "$(dev_service_http_addr "$name")"
      rc=1
    fi
  done
  return "$rc"
}
