#!/usr/bin/env bash
# `make citus`: the isolation drill on a real Citus cluster. Builds and installs Citus from
# CITUS_SRC (a release supporting this PostgreSQL major: 13.x for 15), starts a coordinator and two
# workers as throwaway clusters (.dev/citus.sh, a fresh `tenantry` database), migrates through the
# coordinator, distributes (.dev/citus_distribute.sql), migrates again, seeds the demo tenants and
# serves them from the coordinator (one server per demo region). `tenantry check` must pass there,
# and must report a shard whose policy was dropped by hand. Then:
#   1. the cross-tenant probe and role matrix over HTTP (.dev/citus_probe.sh);
#   2. the context attacks in SQL, as the app role (.dev/citus_attack.sql): a hand-set verified
#      context and another transaction's seal replayed must admit no row on the workers;
#   3. the pool-bleed probe (.dev/citus_pool_bleed.py): two tenants over a pool of two connections;
#   4. `tenantry audit verify`: the chains the shards' triggers wrote verify;
#   5. a short load on the member list (wrk), with its latency and throughput.
# Never part of `make test`: Citus is not in the OS packages.
#   .dev/citus_drill.sh CITUS_SRC BIN
set -euo pipefail
cd "$(dirname "$0")/.."
SRC=$1; BIN=$2
PORT=${CITUS_PORT:-55440}
OUT=.tenantry/citus-drill
mkdir -p $OUT
ADMIN="postgres://postgres@127.0.0.1:$PORT/tenantry?sslmode=disable"
APP="postgres://tenantry_app@127.0.0.1:$PORT/tenantry?sslmode=disable"
.dev/citus_build.sh "$SRC"
# A fresh database and fresh roles on every run (the clusters themselves are kept).
.dev/citus.sh up > /dev/null
.dev/citus.sh reset
.dev/citus.sh up
echo "== migrate, distribute, migrate again (through the coordinator)"
TENANTRY_LOG=warn TENANTRY_ADMIN_DATABASE_URL="$ADMIN" $BIN migrate
psql -qX "$ADMIN" -f .dev/citus_distribute.sql > $OUT/distribute.log 2>&1 || { tail -20 $OUT/distribute.log; exit 1; }
TENANTRY_LOG=warn TENANTRY_ADMIN_DATABASE_URL="$ADMIN" $BIN migrate
psql -qtAX "$ADMIN" -c "select case partmethod when 'h' then 'distributed' else 'reference' end, count(*), \
  count(distinct colocationid) as colocation_groups from pg_dist_partition group by 1 order by 1"

echo "== tenantry check on the coordinator (distribution, co-location, every shard's policies)"
check() { TENANTRY_LOG=warn TENANTRY_ADMIN_DATABASE_URL="$ADMIN" $BIN check; }
check
# It must see a shard that lost a policy: drop one on one placement, by hand on its worker.
read -r shard node <<<"$(psql -qtAX -F' ' "$ADMIN" -c "select shard_name('public.memberships'::regclass, s.shardid), p.nodeport \
  from pg_dist_shard s join pg_dist_placement pl using (shardid) join pg_dist_node p using (groupid) \
  where s.logicalrelid = 'public.memberships'::regclass order by s.shardid limit 1")"
psql -qX "postgres://postgres@127.0.0.1:$node/tenantry" -c "set citus.enable_ddl_propagation = off" \
  -c "drop policy memberships_select on $shard"
if check > $OUT/check-tampered.txt; then echo "tenantry check missed a shard without its policy" >&2; exit 1; fi
grep "citus_shard_policies_differ" $OUT/check-tampered.txt
[ "$(grep -c citus_shard_policies_differ $OUT/check-tampered.txt)" = 1 ] || { cat $OUT/check-tampered.txt; exit 1; }
TENANTRY_LOG=warn TENANTRY_ADMIN_DATABASE_URL="$ADMIN" $BIN migrate # puts it back
check

TENANTRY_LOG=warn TENANTRY_DATABASE_URL="$APP" $BIN seed --print-tokens > $OUT/tokens.txt

echo "== servers on the coordinator (us on :8291, eu on :8292; us again on :8293 with a pool of 2)"
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT
for r in "us 8291 16" "eu 8292 16" "us 8293 2"; do
  set -- $r
  TENANTRY_REGION=$1 TENANTRY_LISTEN=127.0.0.1:$2 TENANTRY_POOL_SIZE=$3 TENANTRY_RATE_LIMITS__ENABLED=false \
    TENANTRY_DATABASE_URL="$APP" TENANTRY_LOG=warn $BIN serve > $OUT/server-$2.log 2>&1 &
  pids+=($!)
done
for p in 8291 8292 8293; do
  for _ in $(seq 50); do curl -sf "http://127.0.0.1:$p/api/v1/health" >/dev/null 2>&1 && break; sleep 0.2; done
done

echo "== 1. cross-tenant probe and role matrix (HTTP)"
.dev/citus_probe.sh http://127.0.0.1:8291 http://127.0.0.1:8292 $OUT/tokens.txt

echo "== 2. context attacks (SQL, as the app role; rows of Acme's other members seen)"
acme=0a000000-0000-4000-8000-000000000001
alice=$(psql -qtAX "$ADMIN" -c "select id from users where email = 'alice@acme.test'")
got=$(psql -qX -v acme=$acme -v alice="$alice" "$APP" -f .dev/citus_attack.sql | grep -E '^(verified|forged|replayed) ')
echo "$got"
[ "$(echo "$got" | awk '$1 == "verified" {print $2}')" -gt 0 ] || { echo "a verified context saw nothing" >&2; exit 1; }
[ "$(echo "$got" | awk '$1 != "verified" {s += $2} END {print s + 0}')" = 0 ] || { echo "an unverified context was admitted" >&2; exit 1; }

echo "== 3. pool bleed: Acme's owner and a second us tenant's over a pool of two connections"
erin=$(awk 'index($0, "erin@")==1 {getline; print; exit}' $OUT/tokens.txt)
alice_token=$(awk 'index($0, "alice@")==1 {getline; print; exit}' $OUT/tokens.txt)
initech=$(curl -sf -X POST -H "Authorization: Bearer $erin" -H 'Content-Type: application/json' \
  -d '{"name": "Initech", "slug": "initech-drill"}' http://127.0.0.1:8291/api/v1/orgs | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
.dev/citus_pool_bleed.py http://127.0.0.1:8293 "$alice_token" $acme "$erin" "$initech" ${CITUS_BLEED_REQUESTS:-2000}

echo "== 4. every audit chain written on the shards verifies (tenantry audit verify)"
TENANTRY_LOG=warn TENANTRY_ADMIN_DATABASE_URL="$ADMIN" $BIN audit verify
psql -qtAX "$ADMIN" -c "select 'audit entries: ' || count(*) || ' in ' || count(distinct organization_id) || ' chains' from audit_events"

echo "== 5. the member list under load (wrk, 10 s, 4 connections)"
source .dev/load.sh
load_tools
token=$(awk 'index($0, "alice@")==1 {getline; print; exit}' $OUT/tokens.txt)
wrk -t2 -c4 -d${CITUS_BENCH_SECONDS:-10}s --latency -H "Authorization: Bearer $token" \
  "http://127.0.0.1:8291/api/v1/orgs/$acme/members" | tee $OUT/wrk.txt | grep -E "Requests/sec|50%|99%|Non-2xx" || true
grep -q "Non-2xx" $OUT/wrk.txt && { echo "errors under load" >&2; exit 1; }
echo "make citus: the drill passed (logs in $OUT)"
