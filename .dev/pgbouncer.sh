#!/usr/bin/env bash
# A throwaway PgBouncer in transaction pooling mode in front of a local PostgreSQL, for the
# tests that run the isolation and pool-bleed suites through it, and for trying scale-out by hand.
#
#   .dev/pgbouncer.sh start DIR PORT PG_PORT   start it (idempotent)
#   .dev/pgbouncer.sh stop DIR                 stop it if it runs
#
# Every database on 127.0.0.1:PG_PORT is served under its own name, to tenantry_app only, with
# `trust` authentication on 127.0.0.1: never use this for real data. As root, PgBouncer (which
# refuses to run as root) runs as the `postgres` OS user; missing packages are installed.
#
# Debian 12 ships PgBouncer 1.18, which does not carry prepared statements across transactions:
# the server runs with database_statement_cache = "transaction", and PgBouncer deallocates every
# statement when a transaction hands its server connection back (server_reset_query_always).
set -euo pipefail

die() { echo "pgbouncer.sh: $*" >&2; exit 1; }

as_owner() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

cmd=${1:-}; shift || true
case "$cmd" in
  start)
    DIR=${1:?DIR}; PORT=${2:?PORT}; PG_PORT=${3:?PG_PORT}
    .dev/tools.sh pgbouncer
    mkdir -p "$DIR"
    DIR=$(cd "$DIR" && pwd)
    [ "$(id -u)" = 0 ] && chown postgres: "$DIR"
    if [ -f "$DIR/pgbouncer.pid" ] && kill -0 "$(cat "$DIR/pgbouncer.pid")" 2>/dev/null; then
      exit 0
    fi
    as_owner tee "$DIR/userlist.txt" >/dev/null <<<'"tenantry_app" ""'
    as_owner tee "$DIR/pgbouncer.ini" >/dev/null <<EOF
[databases]
* = host=127.0.0.1 port=$PG_PORT

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $PORT
unix_socket_dir =
auth_type = trust
auth_file = $DIR/userlist.txt
pool_mode = transaction
default_pool_size = 8
max_client_conn = 1000
# Every test has its own database, so its pool outlives it: close idle server connections soon,
# or a run's dead pools fill max_connections (the default keeps them 600 s).
server_idle_timeout = 3
server_reset_query = DEALLOCATE ALL
server_reset_query_always = 1
ignore_startup_parameters = extra_float_digits
logfile = $DIR/pgbouncer.log
pidfile = $DIR/pgbouncer.pid
EOF
    as_owner pgbouncer -d -q "$DIR/pgbouncer.ini" || { tail -n 20 "$DIR/pgbouncer.log" >&2 || true; die "PgBouncer did not start"; }
    for _ in $(seq 1 100); do
      (echo > "/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && exit 0
      sleep 0.05
    done
    tail -n 20 "$DIR/pgbouncer.log" >&2 || true
    die "PgBouncer is not listening on port $PORT"
    ;;
  stop)
    DIR=${1:?DIR}
    [ -f "$DIR/pgbouncer.pid" ] || exit 0
    pid=$(cat "$DIR/pgbouncer.pid")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || exit 0; sleep 0.05; done
    kill -9 "$pid" 2>/dev/null || true
    ;;
  *)
    sed -n '2,13p' "$0" >&2; exit 2 ;;
esac
