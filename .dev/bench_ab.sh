#!/usr/bin/env bash
# An A/B of the tenant list between two builds, interleaved so that this machine's drift (often
# 30 % within minutes) weighs on both alike:
#   .dev/bench_ab.sh BASE_BIN NEW_BIN [ROUNDS]
# AB_SCENARIO=create measures creating a workspace instead (the insert and its audit entry, and
# whatever triggers the schema adds, such as its event) on both sides.
# Each binary migrates its own database in the bench cluster (same seed as make bench). Then, per
# round and in turn: the server's list SQL transaction on A and on B (pgbench, as the app role),
# the floor (superuser, explicit WHERE, no policies, no principal check), and HTTP on A and on B
# (wrk against each build's release server). Prints the medians, each build's cost over the
# floor and its HTTP / SQL ratio.
set -euo pipefail
cd "$(dirname "$0")/.."
BASE_BIN=$1; NEW_BIN=$2; ROUNDS=${3:-5}
PORT=${BENCH_PG_PORT:-55434}; ORGS=1000; ROWS=50; HOT=100; DURATION=${AB_DURATION:-10}
OUT=.tenantry/bench-ab; PGBENCH=$(.dev/pg.sh bindir)/pgbench
source .dev/load.sh
load_tools
mkdir -p $OUT
.dev/pg.sh start .tenantry/pg-bench $PORT
ADMIN="postgres://postgres@127.0.0.1:$PORT"

prepare() { # db bin
  psql "$ADMIN/postgres" -qc "drop database if exists $1 with (force)" -qc "create database $1"
  TENANTRY_ADMIN_DATABASE_URL="$ADMIN/$1" TENANTRY_LOG=warn $2 migrate
  load_seed "$ADMIN/$1" $ORGS $ROWS
}
echo "== two databases: ab_base migrated by $BASE_BIN, ab_new by $NEW_BIN"
prepare ab_base "$BASE_BIN"; prepare ab_new "$NEW_BIN"
# Roles belong to the cluster. A base from before issue 13 needs the definer's BYPASSRLS (its
# database has no definer policies), which the new build's migrate dropped: give it back, so the
# base runs as it did. The new build then runs with it too ("new"), and once per round, by
# pgbench on fresh connections, without it, through its policies alone ("new, policies").
has_definer_policies() { psql "$ADMIN/$1" -tAc "select count(*) > 0 from pg_policy where polname = 'definer_across_tenants'"; }
definer() { psql "$ADMIN/postgres" -qc "alter role tenantry_definer $1"; }
SPLIT=no
if [ "$(has_definer_policies ab_base)" = f ] && [ "$(has_definer_policies ab_new)" = t ]; then
  SPLIT=yes; definer bypassrls; trap 'definer nobypassrls' EXIT
fi

COLUMNS="organization_id, id, name, region, created_at, updated_at"
printf '\\set n random(1, %s)\nBEGIN;\n%s\n%s\n%s\nCOMMIT;\n' "$HOT" \
  "select set_config('app.current_user_id', md5('user' || :n)::uuid::text, true), set_config('app.current_organization_id', md5('org' || :n)::uuid::text, true), set_config('app.current_session_id', '', true), set_config('app.current_api_key_id', '', true), set_config('app.current_region', 'us', true), set_config('app.current_run_claim', '', true), set_config('app.current_webhook_token', '', true), set_config('app.current_delivery_claim', '', true);" \
  "select active, role, permissions, home_region, suspended from app.current_principal();" \
  "select $COLUMNS from workspaces where id > '00000000-0000-0000-0000-000000000000' order by id limit 21;" > $OUT/list.sql
# The new build's own list statement, when it differs (AB_NEW_LIST: the first page as it issues
# it, a NULL filter written as null::text); otherwise both run the base's. Each build checks its
# principal with the call its server makes: app.enter_context() where the schema has it (it
# seals the context the policies read; without it they admit nothing).
principal_call() { # db
  if [ "$(psql "$ADMIN/$1" -tAc "select to_regprocedure('app.enter_context()') is not null")" = t ]; then
    echo "select active, role, permissions, home_region, suspended from app.enter_context();"
  else
    echo "select active, role, permissions, home_region, suspended from app.current_principal();"
  fi
}
sed -i "4s/.*/$(principal_call ab_base)/" $OUT/list.sql
printf '\\set n random(1, %s)\nBEGIN;\n%s\n%s\n%s\nCOMMIT;\n' "$HOT" \
  "$(sed -n 3p $OUT/list.sql)" "$(principal_call ab_new)" \
  "${AB_NEW_LIST:-$(sed -n 5p $OUT/list.sql)}" > $OUT/list-new.sql
if [ "${AB_SCENARIO:-list}" = create ]; then
  # The insert and the audit entry the handler writes, as in make bench; both builds run the same
  # statements, each after its own principal call.
  CONTEXT_LINE=$(sed -n 3p $OUT/list.sql)
  create_script() { # principal_call
    printf '\\set n random(1, %s)\nBEGIN;\n%s\n%s\n%s\n%s\nCOMMIT;\n' "$HOT" \
      "$CONTEXT_LINE" "$1" \
      "insert into workspaces (organization_id, id, name, region) values (md5('org' || :n)::uuid, gen_random_uuid(), 'sql-' || gen_random_uuid(), 'us') returning $COLUMNS;" \
      "insert into audit_events (organization_id, id, actor_type, actor_id, action, target_type, target_id, outcome, request_id, details, prev_hash, hash) values (md5('org' || :n)::uuid, gen_random_uuid(), 'user', md5('user' || :n)::uuid, 'workspace.create', 'workspace', gen_random_uuid()::text, 'allowed', gen_random_uuid()::text, '{}', '\\\\x', '\\\\x');"
  }
  create_script "$(principal_call ab_new)" > $OUT/list-new.sql
  create_script "$(principal_call ab_base)" > $OUT/list.sql
fi
printf '\\set n random(1, %s)\nBEGIN;\n%s\n%s\nCOMMIT;\n' "$HOT" \
  "select set_config('app.current_organization_id', md5('org' || :n)::uuid::text, true);" \
  "select $COLUMNS from workspaces where organization_id = md5('org' || :n)::uuid and id > '00000000-0000-0000-0000-000000000000' order by id limit 21;" > $OUT/floor.sql

# Both servers sign and verify with one key, so the same tokens serve both.
export TENANTRY_AUTH__SIGNING_KEY_FILE=$OUT/signing-key.pem TENANTRY_LOG=warn TENANTRY_WORKERS=2 TENANTRY_POOL_SIZE=16
export TENANTRY_RATE_LIMITS__PER_PRINCIPAL_PER_MINUTE=100000000 TENANTRY_RATE_LIMITS__DEFAULT_ORG_PER_MINUTE=100000000
serve() { # bin db http_port [VAR=value...]: starts it (SERVED=pid) and waits until it answers
  env TENANTRY_DATABASE_URL="postgres://tenantry_app@127.0.0.1:$PORT/$2" TENANTRY_LISTEN="127.0.0.1:$3" "${@:4}" \
    $1 serve > $OUT/server-$3.log 2>&1 &
  SERVED=$!
  for _ in $(seq 1 50); do curl -fs "http://127.0.0.1:$3/api/v1/health" >/dev/null && return 0; sleep 0.2; done
  echo "the server on $3 did not start; see $OUT/server-$3.log" >&2; exit 1
}
rm -f $OUT/signing-key.pem
serve "$BASE_BIN" ab_base 18081; A_PID=$SERVED
trap 'kill $A_PID 2>/dev/null || true; [ $SPLIT = no ] || definer nobypassrls' EXIT
# Only builds that have the per-address limit know (and accept) its setting; set high, it never
# refuses the first request of a token.
serve "$NEW_BIN" ab_new 18082 TENANTRY_RATE_LIMITS__UNAUTHENTICATED_PER_MINUTE=100000000; B_PID=$SERVED
trap 'kill $A_PID $B_PID 2>/dev/null || true; [ $SPLIT = no ] || definer nobypassrls' EXIT
LOAD_DB="$ADMIN/ab_new"; BIN=$NEW_BIN load_targets $HOT $OUT
if [ "${AB_SCENARIO:-list}" = create ]; then
  load_script list "'POST'" "t.org .. '/workspaces'" \
    "'{\"name\":\"ab-' .. run .. '-' .. id .. '-' .. counter .. '\"}'" "status == 201" $OUT
else
  load_script list "'GET'" "t.org .. '/workspaces?limit=20'" nil "status == 200" $OUT
fi

tps() { # db role file
  (cd $OUT && "$PGBENCH" -n -h 127.0.0.1 -p $PORT -U $2 -c 16 -j 2 -T $DURATION -M prepared -f $3 $1 2>/dev/null) \
    | grep -o "tps = [0-9.]*" | grep -o "[0-9.]*$"
}
rps() { # http_port
  wrk -t2 -c64 -d${DURATION}s -s $OUT/list.lua "http://127.0.0.1:$1" | grep -o "Requests/sec: *[0-9.]*" | grep -o "[0-9.]*$"
}
: > $OUT/ab.txt
for p in 18081 18082; do wrk -t2 -c64 -d3s -s $OUT/list.lua "http://127.0.0.1:$p" >/dev/null; done
for r in $(seq 1 "$ROUNDS"); do
  # A B in odd rounds, B A in even ones: neither build always runs first.
  if [ $((r % 2)) = 1 ]; then
    a=$(tps ab_base tenantry_app list.sql); b=$(tps ab_new tenantry_app list-new.sql); f=$(tps ab_new postgres floor.sql)
    ha=$(rps 18081); hb=$(rps 18082)
  else
    f=$(tps ab_new postgres floor.sql); b=$(tps ab_new tenantry_app list-new.sql); a=$(tps ab_base tenantry_app list.sql)
    hb=$(rps 18082); ha=$(rps 18081)
  fi
  p=$b
  if [ $SPLIT = yes ]; then definer nobypassrls; p=$(tps ab_new tenantry_app list-new.sql); definer bypassrls; fi
  echo "round $r: SQL base $a, new $b, new with policies $p, floor $f tx/s; HTTP base $ha, new $hb req/s"
  echo "$a $b $f $ha $hb $p" >> $OUT/ab.txt
done
python3 - "$OUT/ab.txt" <<'PY'
import statistics, sys
rows = [list(map(float, l.split())) for l in open(sys.argv[1]) if l.strip()]
med = lambda i: statistics.median(r[i] for r in rows)
a, b, f, ha, hb, p = (med(i) for i in range(6))
print(f"\nmedians over {len(rows)} rounds: SQL base {a:,.0f} / new {b:,.0f} tx/s, floor {f:,.0f} tx/s; "
      f"HTTP base {ha:,.0f} / new {hb:,.0f} req/s")
print(f"cost over the floor: base {f / a:.2f}x, new {f / b:.2f}x ({(f / b) / (f / a) * 100 - 100:+.1f} %)")
print(f"HTTP / SQL: base {ha / a:.2f}, new {hb / b:.2f}")
if p != b:
    print(f"the definer through its policies instead of BYPASSRLS: {p:,.0f} tx/s ({p / b * 100 - 100:+.1f} % vs new)")
PY
