#!/usr/bin/env bash
# The console's cookie against a bearer token on the same list route: interleaved wrk rounds
# on a scratch database of the test cluster (use a release build).
#   .dev/cookie_bench.sh ADMIN_URL_TO_POSTGRES_DB PORT TENANTRY_BIN [ROUNDS]
set -euo pipefail
ADMIN_URL=$1; PORT=$2; BIN=$3; ROUNDS=${4:-4}
.dev/tools.sh wrk
source "$(dirname "$0")/scratch.sh"
scratch_database cookie_bench
export TENANTRY_LOG=error
scratch_serve
TOKEN=$("$BIN" token --email alice@acme.test --ttl 30m)
BASE="http://127.0.0.1:$HTTP_PORT"
curl -fs -o /dev/null -D "$DIR/headers" -X POST -H 'Content-Type: application/json' \
  -d "{\"token\":\"$TOKEN\"}" "$BASE/console/session/token"
COOKIE=$(grep -i '^set-cookie' "$DIR/headers" | sed 's/^[Ss]et-[Cc]ookie: //; s/;.*//' | tr -d '\r')
URL="$BASE/api/v1/orgs/0a000000-0000-4000-8000-000000000001/workspaces"
curl -fs -H "Cookie: $COOKIE" "$URL" >/dev/null
curl -fs -H "Authorization: Bearer $TOKEN" "$URL" >/dev/null
for round in $(seq 1 "$ROUNDS"); do
  bearer=$(wrk -t2 -c16 -d6s -H "Authorization: Bearer $TOKEN" "$URL" | awk '/Requests\/sec/ {print $2}')
  cookie=$(wrk -t2 -c16 -d6s -H "Cookie: $COOKIE" "$URL" | awk '/Requests\/sec/ {print $2}')
  echo "round $round: bearer $bearer req/s, cookie $cookie req/s"
done
