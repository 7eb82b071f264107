#!/usr/bin/env bash
# The web console in a real browser: Debian's headless Chromium driven by Playwright (PyPI,
# pinned, in a venv; its own browsers are never downloaded), against a real server and worker on
# a scratch database of the test cluster, signing in through the real test OpenID provider.
# Screenshots of the main pages go to .tenantry/console-screenshots/.
#   .dev/console.sh ADMIN_URL_TO_POSTGRES_DB PORT TENANTRY_BIN
set -euo pipefail
ADMIN_URL=$1; PORT=$2; BIN=$3
PLAYWRIGHT_VERSION=1.65.2
VENV=${TENANTRY_TOOLS_DIR:-$HOME/.cache/tenantry}/playwright-$PLAYWRIGHT_VERSION
SHOTS=$PWD/.tenantry/console-screenshots

.dev/tools.sh chromium
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import playwright' 2>/dev/null; then
  echo "console.sh: installing playwright $PLAYWRIGHT_VERSION into $VENV" >&2
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q "playwright==$PLAYWRIGHT_VERSION"
fi

source "$(dirname "$0")/scratch.sh"
scratch_database console
IDP=
WORKER=
cleanup() {
  [ -n "$WORKER" ] && kill "$WORKER" 2>/dev/null || true
  [ -n "$IDP" ] && kill "$IDP" 2>/dev/null || true
  scratch_cleanup
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
IDP_PORT=$(free_port)
HTTP_PORT=$(free_port)
CALLBACK="http://127.0.0.1:$HTTP_PORT/api/v1/auth/demo/callback"
(cd tests/oidc-provider && exec node server.mjs "$IDP_PORT" "$CALLBACK") > "$DIR/idp.log" 2>&1 &
IDP=$!
cat > "$DIR/tenantry.toml" <<TOML
[[auth.providers]]
name = "demo"
kind = "oidc"
display_name = "Demo OpenID provider"
issuer = "http://127.0.0.1:$IDP_PORT"
client_id = "tenantry"
client_secret = "tenantry-test-secret"
redirect_uri = "$CALLBACK"
TOML
export TENANTRY_CONFIG="$DIR/tenantry.toml" TENANTRY_WORKER__POLL_INTERVAL_MS=200
for _ in $(seq 1 50); do grep -q ready "$DIR/idp.log" && break; sleep 0.2; done
grep -q ready "$DIR/idp.log" || { echo "the OpenID provider did not start:" >&2; cat "$DIR/idp.log" >&2; exit 1; }
# A platform admin, who signs in with a pasted development token.
"$BIN" admin grant --issuer tenantry --subject root@platform.test --note "console test" >/dev/null
ADMIN_TOKEN=$("$BIN" token --email root@platform.test --ttl 30m)
TENANTRY_LISTEN="127.0.0.1:$HTTP_PORT" "$BIN" serve > "$DIR/server.log" 2>&1 &
SERVER=$!
for _ in $(seq 1 50); do curl -fs "http://127.0.0.1:$HTTP_PORT/api/v1/health" >/dev/null && break; sleep 0.2; done
curl -fs "http://127.0.0.1:$HTTP_PORT/api/v1/health" >/dev/null || { echo "the server did not start:" >&2; tail -20 "$DIR/server.log" >&2; exit 1; }
# After the server: in development the server writes the master key file the worker reads.
"$BIN" worker > "$DIR/worker.log" 2>&1 &
WORKER=$!
sleep 0.5
kill -0 "$WORKER" 2>/dev/null || { echo "the worker did not start:" >&2; cat "$DIR/worker.log" >&2; exit 1; }
rm -rf "$SHOTS" && mkdir -p "$SHOTS"
CHROMIUM=$(command -v chromium) ADMIN_TOKEN="$ADMIN_TOKEN" "$VENV/bin/python" tests/console/journey.py \
  "http://127.0.0.1:$HTTP_PORT" "$SHOTS" \
  || { echo "--- server log"; tail -40 "$DIR/server.log"; echo "--- worker log"; tail -20 "$DIR/worker.log"; exit 1; }
echo "console: screenshots in $SHOTS"
