#!/usr/bin/env bash
# The Citus drill's cluster: a coordinator and two workers as throwaway local clusters, each with
# the `tenantry` database and the citus extension, the workers added to the coordinator.
#   .dev/citus.sh up      start (initdb first if needed) and join them; idempotent
#   .dev/citus.sh down    stop all three
#   .dev/citus.sh reset   drop the `tenantry` database and roles on all three (`up` makes it anew)
# Ports: CITUS_PORT (coordinator, 55440), +1 and +2 (workers). Needs Citus installed
# (.dev/citus_build.sh). max_worker_processes and max_connections: a test run (make citus-test)
# has a database per test, each with its maintenance daemon and its servers' pools.
set -euo pipefail
cd "$(dirname "$0")/.."
BASE=${CITUS_PORT:-55440}
DIR=.tenantry/citus
NODES=(coordinator worker1 worker2)
psql_on() { psql -qtAX -v ON_ERROR_STOP=1 "postgres://postgres@127.0.0.1:$1/$2" -c "$3"; }

case "${1:-}" in
  up)
    [ -f "$(pg_config --pkglibdir)/citus.so" ] || { echo "citus.sh: Citus is not installed; run .dev/citus_build.sh CITUS_SRC" >&2; exit 1; }
    for i in 0 1 2; do
      PG_EXTRA_OPTS="-c shared_preload_libraries=citus -c max_prepared_transactions=100 -c max_worker_processes=300 -c max_connections=2000" \
        .dev/pg.sh start "$DIR/${NODES[$i]}" $((BASE + i)) fast
      port=$((BASE + i))
      psql_on "$port" postgres "select 1 from pg_database where datname = 'tenantry'" | grep -q 1 \
        || psql_on "$port" postgres "create database tenantry"
      psql_on "$port" tenantry "create extension if not exists citus"
    done
    psql_on "$BASE" tenantry "select citus_set_coordinator_host('127.0.0.1', $BASE)" >/dev/null
    for i in 1 2; do
      psql_on "$BASE" tenantry "select 1 from pg_dist_node where nodeport = $((BASE + i))" | grep -q 1 \
        || psql_on "$BASE" tenantry "select citus_add_node('127.0.0.1', $((BASE + i)))" >/dev/null
    done
    echo "citus: coordinator on 127.0.0.1:$BASE, workers on $((BASE + 1)) and $((BASE + 2))"
    psql_on "$BASE" tenantry "select nodename || ':' || nodeport || ' ' || noderole from pg_dist_node order by nodeport"
    ;;
  reset)
    # A distributed database is dropped node by node, the coordinator first; the roles go too,
    # since Citus propagates a role only when it creates it (a role that predates the database is
    # unknown to its metadata, and the owner may not re-create it on the workers).
    for i in 0 1 2; do
      psql_on $((BASE + i)) postgres "drop database if exists tenantry with (force)"
      for role in tenantry_app tenantry_definer tenantry_backup tenantry_owner; do
        psql_on $((BASE + i)) postgres "drop role if exists $role"
      done
    done ;;
  down)
    for node in "${NODES[@]}"; do .dev/pg.sh stop "$DIR/$node"; done ;;
  *) echo "usage: .dev/citus.sh up|down|reset" >&2; exit 2 ;;
esac
