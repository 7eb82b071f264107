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
-- Rate limits stay on (their cost is part of the figures) but far above the load.
update plans set limits = jsonb_set(limits, '{requests_per_minute}', '100000000');
vacuum analyze;
SQL

echo "== starting the server (release, 2 workers, pool 16)"
export TENANTRY_DATABASE_URL="postgres://tenantry_app@127.0.0.1:$PORT/bench"
export TENANTRY_LISTEN="127.0.0.1:$HTTP_PORT" TENANTRY_LOG=warn TENANTRY_WORKERS=2 TENANTRY_POOL_SIZE=16
export TENANTRY_RATE_LIMITS__PER_PRINCIPAL_PER_MINUTE=100000000 TENANTRY_RATE_LIMITS__DEFAULT_ORG_PER_MINUTE=100000000
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

echo "== flags: 20 platform flags, each of the $HOT organizations configures 10 (percentages, allow/deny lists)"
psql "$ADMIN/bench" -q <<SQL
insert into feature_flags (key, description, default_enabled, kill_switch)
  select 'flag-' || f, 'bench flag ' || f, f % 3 = 0, f = 20 from generate_series(1, 20) f;
insert into organization_flags (organization_id, flag_key, enabled, rollout_percentage, allow_users, deny_users)
  select md5('org' || n)::uuid, 'flag-' || f, case when f % 5 = 0 then true end, (f * 7) % 101,
         array[md5('user' || n)::uuid], array[gen_random_uuid()]
  from generate_series(1, $HOT) n, generate_series(1, 10) f;
SQL
# The same tokens, on POST /orgs/{org}/flags/evaluate; every response's Server-Timing (the time
# spent in the server, database included) goes to a file per wrk thread.
sed -e 's#/workspaces?limit=20#/flags/evaluate#' -e "s#wrk.format('GET'#wrk.format('POST'#" $OUT/requests.lua \
  | sed '/^response = function/,$d' > $OUT/flags.lua
cat >> $OUT/flags.lua <<LUA
threads = {}
setup = function(thread)
  table.insert(threads, thread)
  thread:set("id", #threads)
end
local timings
response = function(status, headers, body)
  if status ~= 200 then error("unexpected status " .. status) end
  if not timings then timings = io.open("$OUT/flags-timing-" .. id .. ".txt", "w") end
  local t = headers["server-timing"] or headers["Server-Timing"]
  if t then timings:write(t:match("dur=([%d.]+)"), "\n") end
end
LUA
for c in 8 $CONNS; do
  rm -f $OUT/flags-timing-*.txt
  echo "== flags: wrk -t2 -c$c -d${DURATION}s POST /orgs/{org}/flags/evaluate (after a 3 s warm-up)"
  wrk -t2 -c$c -d3s -s $OUT/flags.lua "http://127.0.0.1:$HTTP_PORT" >/dev/null
  rm -f $OUT/flags-timing-*.txt
  wrk -t2 -c$c -d${DURATION}s --latency -s $OUT/flags.lua "http://127.0.0.1:$HTTP_PORT" > $OUT/flags-wrk-c$c.txt
  cat $OUT/flags-timing-*.txt > $OUT/flags-server-c$c.txt
done

python3 - "$OUT" "$RSS_KB" "$CONNS" <<'PY'
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
print()
print("| flags: POST /orgs/{org}/flags/evaluate (20 flags) | throughput   | client p50 | client p99 | server p50 | server p99 | server p99.9 |")
print("|----------------------------------------------------|--------------|------------|------------|------------|------------|--------------|")
for c in (8, int(sys.argv[3])):
    w = open(f"{out}/flags-wrk-c{c}.txt").read()
    frps = float(re.search(r"Requests/sec:\s+([\d.]+)", w).group(1))
    def fms(label):
        v, unit = re.search(rf"\s{label}%\s+([\d.]+)(us|ms|s)", w).groups()
        return float(v) * {"us": 0.001, "ms": 1, "s": 1000}[unit]
    t = sorted(float(x) for x in open(f"{out}/flags-server-c{c}.txt") if x.strip())
    q = lambda p: t[min(len(t) - 1, int(len(t) * p))]
    ferr = re.search(r"Non-2xx or 3xx responses: (\d+)", w)
    print(f"| wrk -t2 -c{c:<3} (2 workers, pool 16, {len(t)} samples)     | {frps:8.0f} req/s | {fms(50):7.3f} ms | {fms(99):7.3f} ms | "
          f"{q(0.5):7.3f} ms | {q(0.99):7.3f} ms | {q(0.999):9.3f} ms |" + (f" errors: {ferr.group(1)}" if ferr else ""))
PY
