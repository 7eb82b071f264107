#!/usr/bin/env bash
# An export of a large organization in bounded memory (part of `make test`): seeds one
# organization with ROWS workspaces (200,000 by default), exports it through the API as a job,
# downloads the file, and samples the server's resident memory (VmRSS) throughout. Fails if the
# download is not every row, or if the server grew by more than LIMIT_MIB (32) over its RSS
# before the export: far less than the file itself, which a buffered table would have cost.
# Since events (issue 15) the export holds two large tables: the workspaces and the 200,000
# workspace.created events their inserts wrote (growth +12 to +18 MiB, from +8 to +12 before).
#   .dev/export_rss.sh ADMIN_URL_TO_POSTGRES_DB PORT TENANTRY_BIN
set -euo pipefail
ADMIN_URL=$1; PORT=$2; BIN=$3
ROWS=${EXPORT_ROWS:-200000}
LIMIT_MIB=${EXPORT_RSS_LIMIT_MIB:-32}
source "$(dirname "$0")/scratch.sh"
scratch_database export_rss
BASE=${ADMIN_URL%/*}
ORG=$(psql "$BASE/$DB" -tAc "select id from organizations where slug = 'acme'")
psql "$BASE/$DB" -qc "insert into workspaces (organization_id, id, name)
  select '$ORG', gen_random_uuid(), 'bulk workspace ' || n || ' ' || repeat('x', 40) from generate_series(1, $ROWS) n"
EXPECTED=$(psql "$BASE/$DB" -tAc "select count(*) from workspaces where organization_id = '$ORG'")
TOKEN=$("$BIN" token --email alice@acme.test --ttl 30m)
scratch_serve
API="http://127.0.0.1:$HTTP_PORT/api/v1/orgs/$ORG"
curl -fs -H "Authorization: Bearer $TOKEN" "$API/workspaces?limit=200" >/dev/null
rss() { awk '/^VmRSS/ {print $2}' /proc/$SERVER/status; }
BEFORE=$(rss)
( while kill -0 $SERVER 2>/dev/null; do rss; sleep 0.05; done ) > "$DIR/rss.txt" 2>/dev/null &
SAMPLER=$!
START=$(date +%s.%N)
LOCATION=$(curl -fs -D - -o /dev/null -X POST -H "Authorization: Bearer $TOKEN" "$API/exports" | tr -d '\r' | awk 'tolower($1) == "location:" {print $2}')
for _ in $(seq 1 1200); do
  STATUS=$(curl -fs -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$HTTP_PORT$LOCATION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["status"])')
  [ "$STATUS" = succeeded ] && break
  [ "$STATUS" = failed ] && { echo "export_rss: the export failed"; tail -20 "$DIR/server.log"; exit 1; }
  sleep 0.1
done
[ "$STATUS" = succeeded ] || { echo "export_rss: the export did not finish"; exit 1; }
MADE=$(date +%s.%N)
curl -fs -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$HTTP_PORT$LOCATION/workspaces" -o "$DIR/workspaces.ndjson"
DONE=$(date +%s.%N)
kill $SAMPLER 2>/dev/null || true
LINES=$(wc -l < "$DIR/workspaces.ndjson")
SIZE=$(du -m "$DIR/workspaces.ndjson" | cut -f1)
PEAK=$(sort -n "$DIR/rss.txt" | tail -1)
GROWTH=$(( (PEAK - BEFORE) / 1024 ))
printf 'export_rss: %s workspaces (%s MiB of NDJSON) exported in %.1f s, downloaded in %.1f s; server RSS %s MiB before, peak %s MiB (+%s MiB, limit %s)\n' \
  "$LINES" "$SIZE" "$(python3 -c "print($MADE - $START)")" "$(python3 -c "print($DONE - $MADE)")" $((BEFORE / 1024)) $((PEAK / 1024)) $GROWTH $LIMIT_MIB
[ "$LINES" = "$EXPECTED" ] || { echo "export_rss: downloaded $LINES rows, expected $EXPECTED"; exit 1; }
[ "$GROWTH" -le "$LIMIT_MIB" ] || { echo "export_rss: the server grew by $GROWTH MiB"; exit 1; }
