#!/usr/bin/env bash
# Fails when compose/docker-compose.yml sets, for one of the four taskstream
# services, an environment variable (a NAME_WITH_UNDERSCORES) that no Rust
# source file under */src mentions: a misspelt or dead setting.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
COMPOSE="$ROOT/compose/docker-compose.yml"
SERVICES="auth command-api query-api projector"

# compose_env_names: the variable names set under `environment:` of $SERVICES,
# in map form (`NAME: value`) or list form (`- NAME=value`), one per line.
compose_env_names() {
  awk -v wanted=" $SERVICES " '
    /^[^ #]/ { top = $1; service = ""; in_env = 0; next }
    top == "services:" && /^  [A-Za-z0-9_.-]+:/ {
      service = $1; sub(/:.*/, "", service); in_env = 0; next
    }
    service != "" && /^    [A-Za-z_]/ { in_env = ($1 == "environment:"); next }
    in_env && index(wanted, " " service " ") {
      line = $0
      sub(/^ +(- +)?/, "", line)
      if (match(line, /^[A-Za-z_][A-Za-z0-9_]*/)) {
        name = substr(line, RSTART, RLENGTH)
        if (name ~ /_/) print name
      }
    }
  ' "$COMPOSE" | sort -u
}

main() {
  local names=() sources=() missing=() name
  mapfile -t names < <(compose_env_names)
  ((${#names[@]})) || {
    echo "check-env: no environment variables found for $SERVICES in $COMPOSE" >&2
    exit 1
  }
  shopt -s nullglob
  sources=("$ROOT"/*/src)
  ((${#sources[@]})) || {
    echo "check-env: no Rust sources (*/src) under $ROOT" >&2
    exit 1
  }
  for name in "${names[@]}"; do
    grep -rqF --include='*.rs' -- "$name" "${sources[@]}" || missing+=("$name")
  done
  if ((${#missing[@]})); then
    echo "check-env: set in $COMPOSE but not mentioned in any */src/**/*.rs:" >&2
    printf '  %s\n' "${missing[@]}" >&2
    exit 1
  fi
  echo "check-env: all ${#names[@]} variables are read by the Rust sources"
}

main "$@"
