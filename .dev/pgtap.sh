#!/usr/bin/env bash
# Runs the pgTAP policy tests (policies/tests/*.sql) and `tenantry check` against a freshly
# migrated scratch database on the test cluster. Installs pgTAP and pg_prove from the OS
# packages when missing and running as root.
#   .dev/pgtap.sh ADMIN_URL_TO_POSTGRES_DB PORT TENANTRY_BIN
set -euo pipefail
ADMIN_URL=$1; PORT=$2; BIN=$3
BASE=${ADMIN_URL%/*}
DB="pgtap_$$"

need_install() {
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "pgtap.sh: installing $*" >&2
    (apt-get install -y -qq "$@" >/dev/null 2>&1) || { apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null; }
  else
    echo "pgtap.sh: missing $*; install them (e.g. sudo apt-get install $*)" >&2; exit 1
  fi
}

MAJOR=$(psql "$ADMIN_URL" -qtAc "select current_setting('server_version_num')::int / 10000")
if [ "$(psql "$ADMIN_URL" -qtAc "select count(*) from pg_available_extensions where name = 'pgtap'")" != 1 ]; then
  need_install "postgresql-$MAJOR-pgtap"
fi
command -v pg_prove >/dev/null || need_install libtap-parser-sourcehandler-pgtap-perl

cleanup() { psql "$ADMIN_URL" -qc "drop database if exists $DB with (force)" >/dev/null 2>&1 || true; }
trap cleanup EXIT
psql "$ADMIN_URL" -qc "create database $DB"
TENANTRY_ADMIN_DATABASE_URL="$BASE/$DB" TENANTRY_LOG=warn "$BIN" migrate
echo "tenantry check on a freshly migrated database:"
TENANTRY_ADMIN_DATABASE_URL="$BASE/$DB" TENANTRY_LOG=warn "$BIN" check
psql "$BASE/$DB" -qc "create extension pgtap"
pg_prove -h 127.0.0.1 -p "$PORT" -U postgres -d "$DB" policies/tests/*.sql
