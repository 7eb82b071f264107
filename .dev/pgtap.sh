#!/usr/bin/env bash
# Runs the pgTAP policy tests (policies/tests/*.sql) and `tenantry check` against a freshly
# migrated scratch database on the test cluster. Installs pgTAP and pg_prove from the OS
# packages when missing and running as root.
#   .dev/pgtap.sh SUPERUSER_URL TENANTRY_BIN [INSTALLER_URL]
# URLs name the database as {db} (e.g. postgres://postgres@127.0.0.1:55433/{db}). INSTALLER_URL
# (default: the superuser) creates and migrates the database, as a managed database's admin
# would; the superuser offers the pgtap extension and runs the tests (they arrange rows as it).
set -euo pipefail
SUPERUSER=$1; BIN=$2; INSTALLER=${3:-$1}
DB="pgtap_$$"
url() { local template=$1; echo "${template//\{db\}/$2}"; }

need_install() {
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "pgtap.sh: installing $*" >&2
    (apt-get install -y -qq "$@" >/dev/null 2>&1) || { apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null; }
  else
    echo "pgtap.sh: missing $*; install them (e.g. sudo apt-get install $*)" >&2; exit 1
  fi
}

MAJOR=$(psql "$(url "$SUPERUSER" postgres)" -qtAc "select current_setting('server_version_num')::int / 10000")
if [ "$(psql "$(url "$SUPERUSER" postgres)" -qtAc "select count(*) from pg_available_extensions where name = 'pgtap'")" != 1 ]; then
  need_install "postgresql-$MAJOR-pgtap"
fi
command -v pg_prove >/dev/null || need_install libtap-parser-sourcehandler-pgtap-perl

cleanup() { psql "$(url "$SUPERUSER" postgres)" -qc "drop database if exists $DB with (force)" >/dev/null 2>&1 || true; }
trap cleanup EXIT
psql "$(url "$INSTALLER" postgres)" -qc "create database $DB"
TENANTRY_ADMIN_DATABASE_URL="$(url "$INSTALLER" "$DB")" TENANTRY_LOG=warn "$BIN" migrate
echo "tenantry check on a freshly migrated database:"
TENANTRY_ADMIN_DATABASE_URL="$(url "$INSTALLER" "$DB")" TENANTRY_LOG=warn "$BIN" check
psql "$(url "$SUPERUSER" "$DB")" -qc "create extension pgtap"
# pg_prove splits its options at '=', so a URL's query (the TLS parameters) travels as libpq's
# environment variables instead.
prove=$(url "$SUPERUSER" "$DB")
if [[ $prove == *\?* ]]; then
  IFS='&' read -ra params <<< "${prove#*\?}"
  for kv in "${params[@]}"; do
    case $kv in
      sslmode=*) export PGSSLMODE=${kv#*=} ;;
      sslrootcert=*) export PGSSLROOTCERT=${kv#*=} ;;
      sslcert=*) export PGSSLCERT=${kv#*=} ;;
      sslkey=*) export PGSSLKEY=${kv#*=} ;;
    esac
  done
fi
pg_prove -d "${prove%%\?*}" policies/tests/*.sql
