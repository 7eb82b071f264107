# Sourced by the scripts that drive a real server on a scratch database of the test cluster
# (contract.sh, export_rss.sh). Needs ADMIN_URL (the cluster's postgres database, as a
# superuser), PORT (the cluster's) and BIN (the tenantry binary).
#   scratch_database PREFIX  a new database, migrated and seeded, dropped on exit; sets DB, DIR
#                            and the server's environment (extra settings can be exported after)
#   scratch_serve            starts the server on a free port and waits for it; sets HTTP_PORT, SERVER
SERVER=
scratch_cleanup() {
  [ -n "$SERVER" ] && kill "$SERVER" 2>/dev/null && wait "$SERVER" 2>/dev/null || true
  psql "$ADMIN_URL" -qc "drop database if exists $DB with (force)" >/dev/null 2>&1 || true
  rm -rf "$DIR"
}

scratch_database() {
  DB="$1_$$"
  DIR=$(mktemp -d)
  trap scratch_cleanup EXIT
  local base=${ADMIN_URL%/*}
  psql "$ADMIN_URL" -qc "create database $DB"
  export TENANTRY_ADMIN_DATABASE_URL="$base/$DB"
  export TENANTRY_DATABASE_URL="postgres://tenantry_app@127.0.0.1:$PORT/$DB"
  export TENANTRY_AUTH__SIGNING_KEY_FILE="$DIR/signing-key.pem"
  export TENANTRY_PROVIDER_KEYS__MASTER_KEYS_FILE="$DIR/master-keys"
  # Thousands of requests in seconds from one principal: limits would answer most of them 429.
  export TENANTRY_LOG=warn TENANTRY_CONFIG=/nonexistent TENANTRY_RATE_LIMITS__ENABLED=false
  "$BIN" migrate
  "$BIN" seed >/dev/null
}

scratch_serve() {
  HTTP_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  TENANTRY_LISTEN="127.0.0.1:$HTTP_PORT" "$BIN" serve > "$DIR/server.log" 2>&1 &
  SERVER=$!
  for _ in $(seq 1 50); do
    curl -fs "http://127.0.0.1:$HTTP_PORT/api/v1/health" >/dev/null && return 0
    sleep 0.2
  done
  echo "the server did not start; see its log:" >&2; tail -20 "$DIR/server.log" >&2; exit 1
}
