#!/usr/bin/env bash
# The Citus drill's cross-tenant probe and role matrix, over HTTP against the demo tenants (Acme in
# us, Globex in eu; `tenantry seed --print-tokens` wrote TOKENS_FILE). Another tenant's
# organization is 404 on every route, a lower role is 403 where it lacks the permission.
#   .dev/citus_probe.sh US_URL EU_URL TOKENS_FILE
set -uo pipefail
US=$1; EU=$2; TOK=$3
tok() { awk -v who="$1" 'index($0, who)==1 {getline; print; exit}' "$TOK"; }
A=0a000000-0000-4000-8000-000000000001; G=0a000000-0000-4000-8000-000000000002
fail=0
check() { # who token org path expected
  base=$US; [ $3 = $G ] && base=$EU
  code=$(curl -s -o /dev/null -w "%{http_code}" -H "Authorization: Bearer $2" "$base/api/v1/orgs/$3$4")
  printf "%-6s %-7s %-14s %s (want %s)\n" "$1" "$( [ $3 = $A ] && echo acme || echo globex)" "${4:-/}" "$code" "$5"
  [ "$code" = "$5" ] || fail=1
}
ERIN=$(tok erin@); ALICE=$(tok alice@); DAVE=$(tok dave@); BOB=$(tok bob@)
for p in "" /members /workspaces /audit-events /api-keys; do
  check erin "$ERIN" $A "$p" 404; check erin "$ERIN" $G "$p" 200
  check dave "$DAVE" $A "$p" $(case $p in /audit-events|/api-keys) echo 403;; *) echo 200;; esac)
  check dave "$DAVE" $G "$p" 404
  check alice "$ALICE" $A "$p" 200
  check alice "$ALICE" $G "$p" $(case $p in /audit-events|/api-keys) echo 403;; *) echo 200;; esac)
done
exit $fail
