#!/usr/bin/env bash
# make bench: throughput and latency of GET /api/v1/orgs/{org}/workspaces (RLS, pipelined tenant
# transaction) against pgbench running the equivalent SQL transaction on the same database:
#   BEGIN; set_config(user, org, session, key, region); principal check; SELECT ... LIMIT 21; COMMIT
# Both use 100 organizations in rotation. Prints req/s, p50/p99 and the HTTP/pgbench ratio.
set -euo pipefail
cd "$(dirname "$0")/.."

ORGS=${BENCH_ORGS:-1000}          # organizations seeded
ROWS=${BENCH_ROWS:-50}            # workspaces per organization
HOT=${BENCH_HOT_ORGS:-100}        # organizations the load rotates through
DURATION=${BENCH_DURATION:-15}
CONNS=${BENCH_CONNECTIONS:-64}
PORT=${BENCH_PG_PORT:-55434}
HTTP_PORT=${BENCH_HTTP_PORT:-18080}
DIR=.tenantry/pg-bench
OUT=.tenantry/bench
TARGET_DIR=${CARGO_TARGET_DIR:-target}
BIN=$TARGET_DIR/release/tenantry
ADMIN="postgres://postgres@127.0.0.1:$PORT"

for tool in wrk; do
  if ! command -v $tool >/dev/null; then
    if [ "$(id -u)" = 0 ]; then apt-get install -y -qq $tool >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq $tool >/dev/null; }
    else echo "bench: $tool is required (sudo apt-get install $tool)" >&2; exit 1; fi
  fi
done
BINDIR=$(.dev/pg.sh bindir)
PGBENCH=$BINDIR/pgbench

echo "== building the release binary"
cargo build --release --bin tenantry >/dev/null
mkdir -p $OUT
.dev/pg.sh start $DIR $PORT
psql "$ADMIN/postgres" -qc "drop database if exists bench with (force)" -qc "create database bench"
TENANTRY_ADMIN_DATABASE_URL="$ADMIN/bench" TENANTRY_LOG=warn $BIN migrate

echo "== seeding $ORGS organizations x $ROWS workspaces"
psql "$ADMIN/bench" -q <<SQL
insert into users (id, issuer, subject, email)
  select md5('user' || n)::uuid, 'tenantry', 'owner' || n || '@bench.test', 'owner' || n || '@bench.test'
  from generate_series(1, $ORGS) n;
insert into organizations (id, name, slug)
  select md5('org' || n)::uuid, 'Org ' || n, 'bench-' || n from generate_series(1, $ORGS) n;
insert into memberships (organization_id, user_id, role)
  select md5('org' || n)::uuid, md5('user' || n)::uuid, 'owner' from generate_series(1, $ORGS) n;
insert into workspaces (organization_id, id, name, region)
  select md5('org' || n)::uuid, gen_random_uuid(), 'ws-' || n || '-' || w, 'us'
  from generate_series(1, $ORGS) n, generate_series(1, $ROWS) w;
vacuum analyze;
SQL

echo "== starting the server (release, 2 workers, pool 16)"
export TENANTRY_DATABASE_URL="postgres://tenantry_app@127.0.0.1:$PORT/bench"
export TENANTRY_LISTEN="127.0.0.1:$HTTP_PORT" TENANTRY_LOG=warn TENANTRY_WORKERS=2 TENANTRY_POOL_SIZE=16
export TENANTRY_AUTH__SIGNING_KEY_FILE=$OUT/signing-key.pem
rm -f $OUT/signing-key.pem
$BIN serve > $OUT/server.log 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 1 50); do curl -fs "http://127.0.0.1:$HTTP_PORT/api/v1/health" >/dev/null && break; sleep 0.2; done

echo "== minting tokens for $HOT organizations"
{
  echo "targets = {}"
  for n in $(seq 1 $HOT); do
    org=$(psql "$ADMIN/bench" -qtAc "select md5('org' || $n)::uuid")
    token=$($BIN token --email "owner$n@bench.test" --ttl 2h)
    echo "targets[$n] = {'/api/v1/orgs/$org/workspaces?limit=20', 'Bearer $token'}"
  done
  cat <<'LUA'
-- Built in init(): wrk.host (for the Host header) is not known when the script loads.
requests = {}
init = function(args)
  for i, t in ipairs(targets) do
    requests[i] = wrk.format('GET', t[1], {['Authorization'] = t[2]})
  end
end
counter = 0
request = function()
  counter = counter + 1
  return requests[(counter % #requests) + 1]
end
response = function(status, headers, body)
  if status ~= 200 then error("unexpected status " .. status) end
end
LUA
} > $OUT/requests.lua

echo "== HTTP: wrk -t2 -c$CONNS -d${DURATION}s (after a 3 s warm-up)"
wrk -t2 -c$CONNS -d3s -s $OUT/requests.lua "http://127.0.0.1:$HTTP_PORT" >/dev/null
wrk -t2 -c$CONNS -d${DURATION}s --latency -s $OUT/requests.lua "http://127.0.0.1:$HTTP_PORT" > $OUT/wrk.txt
RSS_KB=$(awk '/VmHWM/ {print $2}' /proc/$SERVER/status)

echo "== SQL: pgbench -c16 -j2 -T${DURATION} -M prepared, the same transaction as the app role"
cat > $OUT/list.sql <<SQL
\set n random(1, $HOT)
BEGIN;
select set_config('app.current_user_id', md5('user' || :n)::uuid::text, true), set_config('app.current_organization_id', md5('org' || :n)::uuid::text, true), set_config('app.current_session_id', '', true), set_config('app.current_api_key_id', '', true), set_config('app.current_region', 'us', true);
select active, role, permissions, home_region from app.current_principal();
select organization_id, id, name, region, created_at, updated_at from workspaces where id > '00000000-0000-0000-0000-000000000000' order by id limit 21;
COMMIT;
SQL
rm -f $OUT/pgbench_log*
(cd $OUT && "$PGBENCH" -n -h 127.0.0.1 -p $PORT -U tenantry_app -c 16 -j 2 -T $DURATION -M prepared -l --log-prefix=pgbench_log -f list.sql bench > pgbench.txt 2>&1)

python3 - "$OUT" "$RSS_KB" <<'PY'
import glob, re, sys
out, rss = sys.argv[1], int(sys.argv[2])
wrk = open(f"{out}/wrk.txt").read()
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", wrk).group(1))
def ms(label):
    v, unit = re.search(rf"\s{label}%\s+([\d.]+)(us|ms|s)", wrk).groups()
    return float(v) * {"us": 0.001, "ms": 1, "s": 1000}[unit]
errors = re.search(r"Non-2xx or 3xx responses: (\d+)", wrk)
pg = open(f"{out}/pgbench.txt").read()
tps = float(re.search(r"tps = ([\d.]+)", pg).group(1))
lat = sorted(int(line.split()[2]) for f in glob.glob(f"{out}/pgbench_log*") for line in open(f))
pct = lambda p: lat[min(len(lat) - 1, int(len(lat) * p))] / 1000.0
print()
print("| what (100 organizations in rotation, 20 rows per page)        | throughput   | p50      | p99      |")
print("|----------------------------------------------------------------|--------------|----------|----------|")
print(f"| HTTP GET /orgs/{{org}}/workspaces (wrk -c64, 2 workers, pool 16)  | {rps:8.0f} req/s | {ms(50):5.2f} ms | {ms(99):5.2f} ms |")
print(f"| pgbench, same SQL transaction (-c16 -j2, prepared)             | {tps:8.0f} tx/s  | {pct(0.50):5.2f} ms | {pct(0.99):5.2f} ms |")
print(f"\nratio HTTP / pgbench: {rps / tps:.2f}   server peak RSS: {rss / 1024:.1f} MiB   "
      f"HTTP errors: {errors.group(1) if errors else 0}")
PY
