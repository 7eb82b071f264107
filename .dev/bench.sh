#!/usr/bin/env bash
# make bench: the API under load against the SQL it runs, on a seeded throwaway database.
#
# For each of list, get and create (workspaces) it measures:
#   - HTTP through the release server (wrk, 64 connections, 2 workers, pool 16);
#   - pgbench running the equivalent SQL transaction as the app role, RLS enforced:
#       BEGIN; set_config(user, org, session, key, region); principal check; the statement(s); COMMIT
#   - the same pgbench run with RLS disabled on the tables and explicit
#     `WHERE organization_id = ...` clauses instead: the cost of RLS itself (runs in the
#     order RLS, WHERE, WHERE, RLS, averaged).
# And the floor of a tenant read: the same list as a superuser (no policies), with an explicit
# WHERE, one set_config and no principal check. The server's own SQL against it is the price of
# verified isolation in the database.
# Then the cost of writing the event: the create path with the workspace's event trigger and
# without it (HTTP and SQL), in interleaved pairs of short runs.
# Then the cost of tracing: a server exporting every span (OTLP to a local sink) against one
# without tracing, in interleaved rounds of list and create.
# Then flag evaluation (POST /orgs/{org}/flags/evaluate) with its server-side latency.
# 100 organizations in rotation; req/s, p50/p99, ratios and the server's peak RSS are printed.
set -euo pipefail
cd "$(dirname "$0")/.."
source .dev/load.sh

ORGS=${BENCH_ORGS:-1000}          # organizations seeded
ROWS=${BENCH_ROWS:-50}            # workspaces per organization
HOT=${BENCH_HOT_ORGS:-100}        # organizations the load rotates through
DURATION=${BENCH_DURATION:-15}
CONNS=${BENCH_CONNECTIONS:-64}
PORT=${BENCH_PG_PORT:-55434}
HTTP_PORT=${BENCH_HTTP_PORT:-18080}
OUT=.tenantry/bench
PGBENCH=$(.dev/pg.sh bindir)/pgbench

mkdir -p $OUT
rm -f $OUT/*.txt $OUT/pgbench_log*
load_prepare .tenantry/pg-bench $PORT bench $ORGS $ROWS
echo "== starting the server (release, 2 workers, pool 16)"
load_serve $HTTP_PORT $OUT
trap 'kill $SERVER 2>/dev/null || true' EXIT
load_targets $HOT $OUT

load_script list "'GET'" "t.org .. '/workspaces?limit=20'" nil "status == 200" $OUT
load_script get "'GET'" "t.workspace" nil "status == 200" $OUT
load_script create "'POST'" "t.org .. '/workspaces'" \
  "'{\"name\":\"load-' .. run .. '-' .. id .. '-' .. counter .. '\"}'" "status == 201" $OUT

for scenario in list get create; do
  echo "== HTTP $scenario: wrk -t2 -c$CONNS -d${DURATION}s (after a 3 s warm-up)"
  wrk -t2 -c$CONNS -d3s -s $OUT/$scenario.lua "http://127.0.0.1:$HTTP_PORT" >/dev/null
  wrk -t2 -c$CONNS -d${DURATION}s --latency -s $OUT/$scenario.lua "http://127.0.0.1:$HTTP_PORT" > $OUT/wrk-$scenario.txt
done
RSS_KB=$(awk '/VmHWM/ {print $2}' /proc/$SERVER/status)

# The SQL of each scenario, with RLS (as the server runs it) and with explicit WHERE clauses.
CONTEXT="select set_config('app.current_user_id', md5('user' || :n)::uuid::text, true), set_config('app.current_organization_id', md5('org' || :n)::uuid::text, true), set_config('app.current_session_id', '', true), set_config('app.current_api_key_id', '', true), set_config('app.current_region', 'us', true), set_config('app.current_run_claim', '', true), set_config('app.current_webhook_token', '', true), set_config('app.current_delivery_claim', '', true);
select active, role, permissions, home_region, suspended from app.current_principal();"
COLUMNS="organization_id, id, name, region, created_at, updated_at"
write_sql() { # name, statement(s)
  printf '\\set n random(1, %s)\nBEGIN;\n%s\n%s\nCOMMIT;\n' "$HOT" "$CONTEXT" "$2" > $OUT/$1.sql
}
AUDIT="insert into audit_events (organization_id, id, actor_type, actor_id, action, target_type, target_id, outcome, request_id, details, prev_hash, hash) values (md5('org' || :n)::uuid, gen_random_uuid(), 'user', md5('user' || :n)::uuid, 'workspace.create', 'workspace', gen_random_uuid()::text, 'allowed', gen_random_uuid()::text, '{}', '\\\\x', '\\\\x');"
write_sql list-rls "select $COLUMNS from workspaces where id > '00000000-0000-0000-0000-000000000000' order by id limit 21;"
write_sql list-where "select $COLUMNS from workspaces where organization_id = md5('org' || :n)::uuid and id > '00000000-0000-0000-0000-000000000000' order by id limit 21;"
write_sql get-rls "select $COLUMNS from workspaces where id = md5('ws' || :n || '-1')::uuid;"
write_sql get-where "select $COLUMNS from workspaces where organization_id = md5('org' || :n)::uuid and id = md5('ws' || :n || '-1')::uuid;"
CREATE="insert into workspaces (organization_id, id, name, region) values (md5('org' || :n)::uuid, gen_random_uuid(), 'sql-' || gen_random_uuid(), 'us') returning $COLUMNS;
$AUDIT"
write_sql create-rls "$CREATE"
write_sql create-where "$CREATE"

printf '\\set n random(1, %s)\nBEGIN;\n%s\n%s\nCOMMIT;\n' "$HOT" \
  "select set_config('app.current_organization_id', md5('org' || :n)::uuid::text, true);" \
  "select $COLUMNS from workspaces where organization_id = md5('org' || :n)::uuid and id > '00000000-0000-0000-0000-000000000000' order by id limit 21;" \
  > $OUT/list-floor.sql

run_pgbench() { # name [role]: appends its tps and latencies (one run of DURATION)
  rm -f $OUT/pgbench_log*
  (cd $OUT && "$PGBENCH" -n -h 127.0.0.1 -p $PORT -U "${2:-tenantry_app}" -c 16 -j 2 -T $DURATION -M prepared \
     -l --log-prefix=pgbench_log -f $1.sql bench > pgbench-run.txt 2>&1) || { cat $OUT/pgbench-run.txt >&2; exit 1; }
  grep -o "tps = [0-9.]*" $OUT/pgbench-run.txt >> $OUT/pgbench-$1.txt
  cat $OUT/pgbench_log* | awk '{print $3}' >> $OUT/pgbench-$1-latency.txt
}
rls() { # on|off: RLS enforced on the scenario tables, or disabled (the WHERE variant runs then)
  local action=enable; [ "$1" = off ] && action=disable
  psql "$LOAD_DB" -qc "alter table workspaces $action row level security" \
    -qc "alter table audit_events $action row level security"
}
# RLS and WHERE in the order A B B A, so that drift of the machine and the rows the creates add
# weigh on both alike; creates last, as they grow the tables the reads scan.
for scenario in list get create; do
  echo "== SQL $scenario: pgbench -c16 -j2 -T$DURATION -M prepared, with RLS / RLS off + WHERE / WHERE / RLS"
  run_pgbench $scenario-rls
  rls off; run_pgbench $scenario-where; run_pgbench $scenario-where; rls on
  run_pgbench $scenario-rls
  if [ $scenario = list ]; then
    echo "== SQL list, the floor: as a superuser, explicit WHERE, no policies, no principal check (twice)"
    run_pgbench list-floor postgres; run_pgbench list-floor postgres
  fi
done

# The cost of writing the event (issue 15): the same create over HTTP and in SQL, with the
# workspace's event trigger enabled and disabled. This machine drifts by 20 % within a minute, so
# it is measured as EVENT_ROUNDS adjacent pairs of short runs (with/without, then without/with)
# and each round's cost is read from its own pair; the report gives their median.
EVENT_ROUNDS=${BENCH_EVENT_ROUNDS:-6}; EVENT_DURATION=${BENCH_EVENT_DURATION:-5}
cp $OUT/create-rls.sql $OUT/create-event.sql
event_trigger() { psql "$LOAD_DB" -qc "alter table workspaces $1 trigger workspaces_events"; }
event_run() { # with|without round: one HTTP run and one SQL run in that state
  [ "$1" = with ] && event_trigger enable || event_trigger disable
  wrk -t2 -c$CONNS -d${EVENT_DURATION}s --latency -s $OUT/create.lua "http://127.0.0.1:$HTTP_PORT" > $OUT/wrk-event-$1-$2.txt
  (cd $OUT && "$PGBENCH" -n -h 127.0.0.1 -p $PORT -U tenantry_app -c 16 -j 2 -T $EVENT_DURATION -M prepared \
     -f create-event.sql bench > pgbench-event-$1-$2.txt 2>&1) || { cat $OUT/pgbench-event-$1-$2.txt >&2; exit 1; }
}
trap 'event_trigger enable 2>/dev/null || true; kill $SERVER 2>/dev/null || true' EXIT
echo "== the event's cost: $EVENT_ROUNDS rounds of create with its event and without (trigger disabled), ${EVENT_DURATION} s runs"
for r in $(seq 1 $EVENT_ROUNDS); do
  if [ $((r % 2)) = 1 ]; then event_run with $r; event_run without $r; else event_run without $r; event_run with $r; fi
done
event_trigger enable
[ "$(psql "$LOAD_DB" -tAc "select tgenabled from pg_trigger where tgname = 'workspaces_events'")" = O ] \
  || { echo "the workspace event trigger was left disabled" >&2; exit 1; }
trap 'kill $SERVER 2>/dev/null || true' EXIT

# The cost of tracing (issue 16): a second server exporting every request's spans (sampling
# 100 %) to a local OTLP sink, against the server without tracing, in interleaved rounds of list
# and create on the same database.
TRACE_ROUNDS=${BENCH_TRACE_ROUNDS:-6}; TRACE_DURATION=${BENCH_TRACE_DURATION:-5}
TRACED_PORT=$((HTTP_PORT + 1)); SINK_PORT=$((HTTP_PORT + 2))
python3 .dev/otlp_sink.py $SINK_PORT $OUT/otlp-sink.txt & SINK=$!
OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:$SINK_PORT" OTEL_BSP_MAX_QUEUE_SIZE=65536 \
  TENANTRY_TELEMETRY__SAMPLE_RATIO=1.0 TENANTRY_LISTEN="127.0.0.1:$TRACED_PORT" \
  $BIN serve > $OUT/server-traced.log 2>&1 &
TRACED=$!
trap 'kill $SERVER $TRACED $SINK 2>/dev/null || true' EXIT
for _ in $(seq 1 50); do curl -fs "http://127.0.0.1:$TRACED_PORT/api/v1/health" >/dev/null && break; sleep 0.2; done
trace_run() { # traced|untraced round
  local port=$HTTP_PORT; [ "$1" = traced ] && port=$TRACED_PORT
  for scenario in list create; do
    wrk -t2 -c$CONNS -d${TRACE_DURATION}s --latency -s $OUT/$scenario.lua "http://127.0.0.1:$port" > $OUT/wrk-trace-$scenario-$1-$2.txt
  done
}
echo "== tracing's cost: $TRACE_ROUNDS rounds of list and create, exporting every span and not, ${TRACE_DURATION} s runs"
wrk -t2 -c$CONNS -d3s -s $OUT/list.lua "http://127.0.0.1:$TRACED_PORT" >/dev/null
for r in $(seq 1 $TRACE_ROUNDS); do
  if [ $((r % 2)) = 1 ]; then trace_run traced $r; trace_run untraced $r; else trace_run untraced $r; trace_run traced $r; fi
done
TRACED_RSS_KB=$(awk '/VmHWM/ {print $2}' /proc/$TRACED/status)
kill -TERM $TRACED; wait $TRACED 2>/dev/null || true
kill -TERM $SINK; wait $SINK 2>/dev/null || true
echo "$TRACED_RSS_KB" > $OUT/traced-rss.txt
grep -h "dropped" $OUT/server-traced.log > $OUT/traced-dropped.txt || true
trap 'kill $SERVER 2>/dev/null || true' EXIT

echo "== flags: 20 platform flags, each of the $HOT organizations configures 10 (percentages, allow/deny lists)"
psql "$LOAD_DB" -q <<SQL
insert into feature_flags (key, description, default_enabled, kill_switch)
  select 'flag-' || f, 'bench flag ' || f, f % 3 = 0, f = 20 from generate_series(1, 20) f;
insert into organization_flags (organization_id, flag_key, enabled, rollout_percentage, allow_users, deny_users)
  select md5('org' || n)::uuid, 'flag-' || f, case when f % 5 = 0 then true end, (f * 7) % 101,
         array[md5('user' || n)::uuid], array[gen_random_uuid()]
  from generate_series(1, $HOT) n, generate_series(1, 10) f;
SQL
# Every response's Server-Timing (the time spent in the server, database included) goes to a
# file per wrk thread.
load_script flags "'POST'" "t.org .. '/flags/evaluate'" nil "status == 200" $OUT
cat >> $OUT/flags.lua <<LUA
local timings
local check = response
response = function(status, headers, body)
  check(status, headers, body)
  if not timings then timings = io.open("$OUT/flags-timing-" .. id .. ".txt", "w") end
  local t = headers["server-timing"] or headers["Server-Timing"]
  if t then timings:write(t:match("dur=([%d.]+)"), "\n") end
end
LUA
for c in 8 $CONNS; do
  echo "== flags: wrk -t2 -c$c -d${DURATION}s POST /orgs/{org}/flags/evaluate (after a 3 s warm-up)"
  wrk -t2 -c$c -d3s -s $OUT/flags.lua "http://127.0.0.1:$HTTP_PORT" >/dev/null
  rm -f $OUT/flags-timing-*.txt
  wrk -t2 -c$c -d${DURATION}s --latency -s $OUT/flags.lua "http://127.0.0.1:$HTTP_PORT" > $OUT/flags-wrk-c$c.txt
  cat $OUT/flags-timing-*.txt > $OUT/flags-server-c$c.txt
done

python3 .dev/bench_report.py "$OUT" "$RSS_KB" "$CONNS"
