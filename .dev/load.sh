# Shared by make bench and make soak (sourced, not run): a throwaway cluster with a seeded
# database, the release server on it, and the wrk request scripts.
#
#   load_prepare DIR PORT DB ORGS ROWS  build, start the cluster, (re)create DB, migrate, seed
#   load_seed DB_URL ORGS ROWS          the seed alone (make bench's data)
#   load_serve HTTP_PORT OUT            start the release server in the background (SERVER=pid)
#   load_targets HOT OUT                write OUT/targets.lua: per hot organization its workspaces
#                                       path, one workspace's path and an owner's bearer token
#
# Seeded: ORGS organizations with an owner each (ownerN@bench.test) and ROWS workspaces each.
# Rate limits stay on (their cost is part of the figures) but far above any load.

TARGET_DIR=${CARGO_TARGET_DIR:-target}
BIN=$TARGET_DIR/release/tenantry

load_tools() {
  if ! command -v wrk >/dev/null; then
    if [ "$(id -u)" = 0 ]; then
      apt-get install -y -qq wrk >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
    else
      echo "wrk is required (sudo apt-get install wrk)" >&2; exit 1
    fi
  fi
}

load_prepare() {
  local dir=$1 port=$2 db=$3 orgs=$4 rows=$5
  load_tools
  echo "== building the release binary"
  cargo build --release --bin tenantry >/dev/null
  ADMIN="postgres://postgres@127.0.0.1:$port"
  LOAD_DB="$ADMIN/$db"
  .dev/pg.sh start "$dir" "$port"
  psql "$ADMIN/postgres" -qc "drop database if exists $db with (force)" -qc "create database $db"
  TENANTRY_ADMIN_DATABASE_URL="$LOAD_DB" TENANTRY_LOG=warn $BIN migrate
  load_seed "$LOAD_DB" "$orgs" "$rows"
  export TENANTRY_DATABASE_URL="postgres://tenantry_app@127.0.0.1:$port/$db"
}

# Seeds DB_URL with ORGS organizations, an owner each (ownerN@bench.test) and ROWS workspaces each.
load_seed() {
  local url=$1 orgs=$2 rows=$3
  echo "== seeding $orgs organizations x $rows workspaces"
  psql "$url" -q <<SQL
insert into users (id, issuer, subject, email)
  select md5('user' || n)::uuid, 'tenantry', 'owner' || n || '@bench.test', 'owner' || n || '@bench.test'
  from generate_series(1, $orgs) n;
insert into organizations (id, name, slug)
  select md5('org' || n)::uuid, 'Org ' || n, 'bench-' || n from generate_series(1, $orgs) n;
insert into memberships (organization_id, user_id, role)
  select md5('org' || n)::uuid, md5('user' || n)::uuid, 'owner' from generate_series(1, $orgs) n;
insert into workspaces (organization_id, id, name, region)
  select md5('org' || n)::uuid, md5('ws' || n || '-' || w)::uuid, 'ws-' || n || '-' || w, 'us'
  from generate_series(1, $orgs) n, generate_series(1, $rows) w;
update plans set limits = jsonb_set(limits, '{requests_per_minute}', '100000000');
vacuum analyze;
SQL
}

load_serve() {
  local http_port=$1 out=$2
  export TENANTRY_LISTEN="127.0.0.1:$http_port" TENANTRY_LOG=warn TENANTRY_WORKERS=2 TENANTRY_POOL_SIZE=16
  export TENANTRY_RATE_LIMITS__PER_PRINCIPAL_PER_MINUTE=100000000 TENANTRY_RATE_LIMITS__DEFAULT_ORG_PER_MINUTE=100000000
  export TENANTRY_AUTH__SIGNING_KEY_FILE=$out/signing-key.pem
  rm -f "$out/signing-key.pem"
  $BIN serve > "$out/server.log" 2>&1 &
  SERVER=$!
  for _ in $(seq 1 50); do curl -fs "http://127.0.0.1:$http_port/api/v1/health" >/dev/null && return 0; sleep 0.2; done
  echo "the server did not start; see $out/server.log" >&2
  exit 1
}

load_targets() {
  local hot=$1 out=$2
  echo "== minting tokens for $hot organizations"
  {
    echo "targets = {}"
    for n in $(seq 1 "$hot"); do
      org=$(psql "$LOAD_DB" -qtAc "select md5('org' || $n)::uuid")
      ws=$(psql "$LOAD_DB" -qtAc "select md5('ws' || $n || '-1')::uuid")
      token=$($BIN token --email "owner$n@bench.test" --ttl 2h)
      echo "targets[$n] = {org = '/api/v1/orgs/$org', workspace = '/api/v1/orgs/$org/workspaces/$ws', auth = 'Bearer $token'}"
    done
  } > "$out/targets.lua"
}

# wrk's script for one scenario: METHOD, PATH and BODY are Lua expressions over `t` (one
# target) and `counter` (BODY may be nil); OK is one over `status`. Requests rotate over the
# targets; statuses that are not OK go, one per line, to OUT/status-<thread>.txt (wrk itself
# counts only non-2xx).
load_script() {
  local name=$1 method=$2 path=$3 body=$4 ok=$5 out=$6
  {
    cat "$out/targets.lua"
    cat <<LUA
-- Distinct per run (names of created workspaces must not collide across runs).
run = os.time()
local threads = {}
setup = function(thread)
  table.insert(threads, thread)
  thread:set("id", #threads)
end
counter = 0
request = function()
  counter = counter + 1
  local t = targets[(counter % #targets) + 1]
  local body = $body
  local headers = {['Authorization'] = t.auth}
  if body then headers['Content-Type'] = 'application/json' end
  return wrk.format($method, $path, headers, body)
end
local statuses
response = function(status, headers, body)
  if not ($ok) then
    if not statuses then statuses = io.open("$out/status-" .. id .. ".txt", "a") end
    statuses:write(status, "\n")
    statuses:flush()
  end
end
LUA
  } > "$out/$name.lua"
}
