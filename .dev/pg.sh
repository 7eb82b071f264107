#!/usr/bin/env bash
# A throwaway local PostgreSQL cluster for development and tests.
#
#   .dev/pg.sh start DIR PORT [fast]   start (initdb first if needed); idempotent
#   .dev/pg.sh stop DIR                stop it if it runs
#   .dev/pg.sh bindir                  print the PostgreSQL bin directory
#
# As root the server runs as the unprivileged `postgres` OS user (initdb and postgres refuse
# to run as root); as a normal user it runs as that user. The superuser inside the cluster is
# always `postgres`, authentication is `trust` on 127.0.0.1 only: never use this for real data.
set -euo pipefail

die() { echo "pg.sh: $*" >&2; exit 1; }

find_bindir() {
  if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1 \
      && [ "$(dirname "$(readlink -f "$(command -v initdb)")")" = "$(dirname "$(readlink -f "$(command -v pg_ctl)")")" ]; then
    dirname "$(readlink -f "$(command -v initdb)")"; return 0
  fi
  local d
  d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
  [ -n "$d" ] && [ -x "$d/initdb" ] && { echo "$d"; return 0; }
  return 1
}

ensure_bindir() {
  if ! BIN=$(find_bindir); then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      echo "pg.sh: no PostgreSQL binaries found; installing them from the OS packages" >&2
      apt-get update -qq >/dev/null
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
      BIN=$(find_bindir) || die "PostgreSQL was installed but initdb was not found"
    else
      die "no PostgreSQL binaries (initdb, pg_ctl) found on PATH or under /usr/lib/postgresql/*/bin.
Install them, e.g. 'sudo apt-get install postgresql' (Debian/Ubuntu) or 'brew install postgresql@15',
or point TENANTRY_DATABASE_URL / TENANTRY_ADMIN_DATABASE_URL at an existing server."
    fi
  fi
}

# Run a PostgreSQL binary as the OS user that owns the cluster.
as_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

cmd=${1:-}; shift || true
case "$cmd" in
  bindir)
    ensure_bindir; echo "$BIN" ;;
  start)
    DIR=${1:?DIR}; PORT=${2:?PORT}; MODE=${3:-}
    ensure_bindir
    mkdir -p "$DIR"
    DIR=$(cd "$DIR" && pwd)
    if [ "$(id -u)" = 0 ]; then
      id postgres >/dev/null 2>&1 || useradd --system --home-dir /var/lib/postgresql --shell /bin/sh postgres
      chown postgres: "$DIR"
      runuser -u postgres -- test -w "$DIR" \
        || die "the postgres OS user cannot write $DIR (a parent directory is not traversable); clone the repository elsewhere"
    fi
    chmod 0700 "$DIR"
    DATA="$DIR/data"; SOCK="$DIR/sock"; LOG="$DIR/postgres.log"
    if [ ! -f "$DATA/PG_VERSION" ]; then
      as_pg mkdir -p "$SOCK"
      as_pg "$BIN/initdb" -D "$DATA" --auth=trust -U postgres -E UTF8 --locale=C.UTF-8 >"$DIR/initdb.log" 2>&1 \
        || { cat "$DIR/initdb.log" >&2; die "initdb failed"; }
    fi
    if as_pg "$BIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1; then
      exit 0
    fi
    OPTS="-p $PORT -k $SOCK -c listen_addresses=127.0.0.1 -c max_connections=300 -c shared_buffers=256MB"
    if [ "$MODE" = fast ]; then
      # Tests only: durability is worthless for a cluster that is thrown away.
      OPTS="$OPTS -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    fi
    # PG_EXTRA_OPTS: more server options (the Citus drill preloads its library).
    OPTS="$OPTS ${PG_EXTRA_OPTS:-}"
    as_pg "$BIN/pg_ctl" -D "$DATA" -l "$LOG" -w -t 60 -o "$OPTS" start >/dev/null \
      || { tail -n 20 "$LOG" >&2; die "PostgreSQL did not start on port $PORT (is the port in use?)"; }
    ;;
  stop)
    DIR=${1:?DIR}
    [ -f "$DIR/data/PG_VERSION" ] || exit 0
    ensure_bindir
    if as_pg "$BIN/pg_ctl" -D "$DIR/data" status >/dev/null 2>&1; then
      as_pg "$BIN/pg_ctl" -D "$DIR/data" -m fast -w stop >/dev/null
    fi
    ;;
  *)
    sed -n '2,10p' "$0" >&2; exit 2 ;;
esac
