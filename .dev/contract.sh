#!/usr/bin/env bash
# Contract test: schemathesis (from PyPI, pinned) against the served OpenAPI document, with an
# owner's token, on a freshly migrated and seeded database of the test cluster. Fails on any
# 5xx and on any response that does not match the documented schema.
#   .dev/contract.sh ADMIN_URL_TO_POSTGRES_DB PORT TENANTRY_BIN
set -euo pipefail
ADMIN_URL=$1; PORT=$2; BIN=$3
SCHEMATHESIS_VERSION=4.32.5
VENV=${TENANTRY_TOOLS_DIR:-$HOME/.cache/tenantry}/schemathesis-$SCHEMATHESIS_VERSION
EXAMPLES=${CONTRACT_MAX_EXAMPLES:-25}

if [ ! -x "$VENV/bin/schemathesis" ]; then
  echo "contract.sh: installing schemathesis $SCHEMATHESIS_VERSION into $VENV" >&2
  python3 -m venv "$VENV" 2>/dev/null || {
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      (apt-get install -y -qq python3-venv >/dev/null 2>&1) || { apt-get update -qq >/dev/null && apt-get install -y -qq python3-venv >/dev/null; }
      python3 -m venv "$VENV"
    else echo "contract.sh: python3-venv is required" >&2; exit 1; fi
  }
  "$VENV/bin/pip" install -q "schemathesis==$SCHEMATHESIS_VERSION"
fi

source "$(dirname "$0")/scratch.sh"
scratch_database contract
TOKEN=$("$BIN" token --email alice@acme.test --ttl 30m)
scratch_serve
echo "contract: schemathesis $SCHEMATHESIS_VERSION, $EXAMPLES examples per operation"
# Not fuzzed: the caller's own deletion and sign-in/session flows (they end the token under test),
# and deleting the organization (it ends every later case).
"$VENV/bin/schemathesis" run "http://127.0.0.1:$HTTP_PORT/api/v1/openapi.json" \
  -H "Authorization: Bearer $TOKEN" \
  --checks not_a_server_error,response_schema_conformance \
  --max-examples "$EXAMPLES" --workers 2 --seed 1 \
  --exclude-path-regex '/auth/|/me$|^/api/v1/orgs/\{org_id\}$' \
  --no-color > "$DIR/schemathesis.log" 2>&1 || { cat "$DIR/schemathesis.log"; echo "--- server log"; tail -50 "$DIR/server.log"; exit 1; }
grep -E "generated|passed" "$DIR/schemathesis.log" | tail -2

# A client generated from the served document (openapi-python-client, pinned), and a scenario
# through it: create, list with a filter and a sort, page, update with If-Match, 412 when stale.
CLIENT_VERSION=0.29.1
CLIENT_VENV=${TENANTRY_TOOLS_DIR:-$HOME/.cache/tenantry}/openapi-python-client-$CLIENT_VERSION
if [ ! -x "$CLIENT_VENV/bin/openapi-python-client" ]; then
  echo "contract.sh: installing openapi-python-client $CLIENT_VERSION into $CLIENT_VENV" >&2
  python3 -m venv "$CLIENT_VENV"
  "$CLIENT_VENV/bin/pip" install -q "openapi-python-client==$CLIENT_VERSION"
fi
curl -fs "http://127.0.0.1:$HTTP_PORT/api/v1/openapi.json" > "$DIR/openapi.json"
(cd "$DIR" && "$CLIENT_VENV/bin/openapi-python-client" generate --path openapi.json --meta none \
   --output-path tenantry_client > client-generate.log 2>&1) || { cat "$DIR/client-generate.log"; exit 1; }
PYTHONPATH="$DIR" "$CLIENT_VENV/bin/python" .dev/client_scenario.py "http://127.0.0.1:$HTTP_PORT" "$TOKEN" \
  || { echo "--- server log"; tail -30 "$DIR/server.log"; exit 1; }
