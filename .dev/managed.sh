#!/usr/bin/env bash
# A throwaway PostgreSQL shaped like a managed database (RDS/Aurora, Cloud SQL, Azure): TLS only
# (pg_hba allows `hostssl` alone, with a certificate from .dev/tls.sh's throwaway CA), password
# (SCRAM) or client-certificate authentication, and an admin that is NOSUPERUSER CREATEROLE
# CREATEDB. The cluster's superuser is used only as the provider would use it: to create that
# admin, to offer the pgTAP extension, and (in tests) to look at raw rows.
#   .dev/managed.sh start DIR PORT TLS_DIR   start (create first if needed); idempotent
#   .dev/managed.sh stop DIR
# DIR/admin.password and DIR/superuser.password hold the throwaway passwords.
set -euo pipefail
die() { echo "managed.sh: $*" >&2; exit 1; }
cmd=${1:-}; shift || true
case "$cmd" in
  start)
    DIR=${1:?DIR}; PORT=${2:?PORT}; TLS=${3:?TLS_DIR}
    mkdir -p "$DIR"; DIR=$(cd "$DIR" && pwd); TLS=$(cd "$TLS" && pwd)
    .dev/pg.sh start "$DIR" "$PORT" fast
    DATA="$DIR/data"; SOCK="$DIR/sock"
    su() { psql -h "$SOCK" -p "$PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 -qtA "$@"; }
    if [ ! -f "$DIR/configured" ]; then
      umask 077
      head -c 18 /dev/urandom | base64 | tr '+/' 'xy' > "$DIR/admin.password"
      head -c 18 /dev/urandom | base64 | tr '+/' 'xy' > "$DIR/superuser.password"
      # What the provider does: a password for its superuser, and the customer's admin.
      su -c "alter role postgres password '$(cat "$DIR/superuser.password")'"
      su -c "create role tenantry_admin login createrole createdb password '$(cat "$DIR/admin.password")'"
      cp "$TLS/server.crt" "$TLS/server.key" "$TLS/ca.crt" "$DATA/"
      [ "$(id -u)" = 0 ] && chown postgres: "$DATA/server.crt" "$DATA/server.key" "$DATA/ca.crt"
      chmod 0600 "$DATA/server.key"
      cat >> "$DATA/postgresql.conf" <<CONF
# managed.sh: TLS only, as a managed database
ssl = on
ssl_cert_file = 'server.crt'
ssl_key_file = 'server.key'
ssl_ca_file = 'ca.crt'
password_encryption = 'scram-sha-256'
CONF
      # Local socket for the provider's superuser only; over TCP, TLS or nothing. The app role
      # authenticates with its client certificate (CN=tenantry_app), everyone else by password.
      cat > "$DATA/pg_hba.conf" <<HBA
local   all  postgres                     trust
hostssl all  tenantry_app  127.0.0.1/32   cert
hostssl all  tenantry_app  ::1/128        cert
hostssl all  all           127.0.0.1/32   scram-sha-256
hostssl all  all           ::1/128        scram-sha-256
HBA
      touch "$DIR/configured"
      .dev/pg.sh stop "$DIR"
      .dev/pg.sh start "$DIR" "$PORT" fast
    fi
    [ "$(su -c 'show ssl')" = on ] || die "ssl is not on"
    ;;
  stop)
    .dev/pg.sh stop "${1:?DIR}" ;;
  *)
    sed -n '2,9p' "$0" >&2; exit 2 ;;
esac
