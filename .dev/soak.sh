#!/usr/bin/env bash
# make soak: the long load and fault runs (not part of make test). On a throwaway cluster with
# the release server (2 workers, pool 16), each phase checks what production needs:
#
#   1. sustained load (SOAK_SECONDS, default 120) of workspace lists and creates: p99 < 200 ms,
#      error rate < 0.1 %, and memory that stops growing (RSS growth over the second half of
#      the run under 8 MiB);
#   2. PostgreSQL restarted in the middle of a 30 s load: the server recovers without being
#      restarted, every failure is a 503 (no 500, no dropped connection), and requests succeed
#      again within 5 s of PostgreSQL accepting connections;
#   3. a load spike (400 connections for 15 s, far past the pool): the server is back to
#      p99 < 200 ms at normal load within 30 s.
# Exits non-zero if any check fails.
set -euo pipefail
cd "$(dirname "$0")/.."
source .dev/load.sh

SECONDS_SUSTAINED=${SOAK_SECONDS:-120}
PORT=${SOAK_PG_PORT:-55435}
HTTP_PORT=${SOAK_HTTP_PORT:-18081}
DIR=.tenantry/pg-soak
OUT=.tenantry/soak
URL="http://127.0.0.1:$HTTP_PORT"
FAILED=0

mkdir -p $OUT
rm -f $OUT/*.txt
load_prepare $DIR $PORT soak 200 20
echo "== starting the server (release, 2 workers, pool 16)"
load_serve $HTTP_PORT $OUT
trap 'kill $SERVER 2>/dev/null || true; .dev/pg.sh stop $DIR >/dev/null 2>&1 || true' EXIT
load_targets 100 $OUT
# Nine lists for one create.
load_script mixed "(counter % 10 == 0) and 'POST' or 'GET'" \
  "t.org .. '/workspaces' .. ((counter % 10 == 0) and '' or '?limit=20')" \
  "(counter % 10 == 0) and ('{\"name\":\"soak-' .. run .. '-' .. id .. '-' .. counter .. '\"}') or nil" \
  "status == 200 or status == 201" $OUT

check() { # description, condition (python expression result "1"/"0")
  if [ "$2" = 1 ]; then echo "PASS  $1"; else echo "FAIL  $1"; FAILED=1; fi
}
rss_kb() { awk '/VmRSS/ {print $2}' /proc/$SERVER/status; }
statuses() { cat $OUT/status-*.txt 2>/dev/null | sort | uniq -c | tr '\n' ' '; }

echo "== 1. sustained load: wrk -t2 -c32 -d${SECONDS_SUSTAINED}s, RSS sampled every 5 s"
rm -f $OUT/status-*.txt
wrk -t2 -c32 -d${SECONDS_SUSTAINED}s --timeout 10s --latency -s $OUT/mixed.lua $URL > $OUT/sustained.txt &
WRK=$!
while kill -0 $WRK 2>/dev/null; do rss_kb >> $OUT/rss.txt; sleep 5; done
wait $WRK
read -r REQUESTS P99 ERRORS < <(python3 - $OUT/sustained.txt <<'PY'
import re, sys
t = open(sys.argv[1]).read()
n = int(re.search(r"(\d+) requests in", t).group(1))
v, unit = re.search(r"\s99%\s+([\d.]+)(us|ms|s)", t).groups()
p99 = float(v) * {"us": 0.001, "ms": 1, "s": 1000}[unit]
e = re.search(r"Non-2xx or 3xx responses: (\d+)", t)
s = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", t)
print(n, p99, (int(e.group(1)) if e else 0) + (sum(map(int, s.groups())) if s else 0))
PY
)
read -r RSS_MID RSS_END < <(python3 -c "
r = [int(x) for x in open('$OUT/rss.txt') if x.strip()]
print(r[len(r) // 2], r[-1])")
echo "   $REQUESTS requests, p99 $P99 ms, errors $ERRORS ($(statuses)), RSS $((RSS_MID / 1024)) MiB at half-time, $((RSS_END / 1024)) MiB at the end"
check "p99 under 200 ms at normal load ($P99 ms)" "$(python3 -c "print(int($P99 < 200))")"
check "error rate under 0.1 % ($ERRORS of $REQUESTS)" "$(python3 -c "print(int($ERRORS * 1000 < $REQUESTS))")"
check "RSS grows less than 8 MiB over the second half ($(( (RSS_END - RSS_MID) / 1024 )) MiB)" \
  "$(python3 -c "print(int($RSS_END - $RSS_MID < 8192))")"

echo "== 2. PostgreSQL restarted 10 s into a 30 s load"
rm -f $OUT/status-*.txt
wrk -t2 -c32 -d30s --timeout 10s -s $OUT/mixed.lua $URL > $OUT/restart.txt &
WRK=$!
sleep 10
.dev/pg.sh stop $DIR
sleep 2
.dev/pg.sh start $DIR $PORT
UP=$(date +%s.%N)
RECOVERED=""
for _ in $(seq 1 100); do
  if curl -fs -o /dev/null -H "Authorization: $(sed -n "s/.*auth = '\(.*\)'}/\1/p" $OUT/targets.lua | head -n 1)" \
       "$URL$(sed -n "s/.*org = '\([^']*\)'.*/\1/p" $OUT/targets.lua | head -n 1)/workspaces"; then
    RECOVERED=$(python3 -c "import time; print(f'{time.time() - $UP:.2f}')"); break
  fi
  sleep 0.1
done
wait $WRK
BAD=$(cat $OUT/status-*.txt 2>/dev/null | grep -vc '^503$' || true)
SOCKET=$(grep -o "Socket errors.*" $OUT/restart.txt || true)
echo "   failures by status: $(statuses)${SOCKET:+ / $SOCKET}; first success ${RECOVERED:-never} s after PostgreSQL was back"
check "the server process survived the restart" "$(kill -0 $SERVER 2>/dev/null && echo 1 || echo 0)"
check "every failed request was a 503 (others: $BAD), no connection errors" "$([ "$BAD" = 0 ] && [ -z "$SOCKET" ] && echo 1 || echo 0)"
check "requests succeed within 5 s of PostgreSQL coming back (${RECOVERED:-never} s)" \
  "$([ -n "$RECOVERED" ] && python3 -c "print(int($RECOVERED < 5))" || echo 0)"

echo "== 3. a spike: 400 connections for 15 s, then normal load (16 connections) until p99 < 200 ms"
wrk -t2 -c400 -d15s --timeout 10s -s $OUT/mixed.lua $URL > $OUT/spike.txt || true
SPIKE_END=$(date +%s.%N)
RECOVERY=""
for i in $(seq 1 8); do
  wrk -t2 -c16 -d5s --latency -s $OUT/mixed.lua $URL > $OUT/after-spike-$i.txt
  P99=$(python3 -c "
import re; v, u = re.search(r'\s99%\s+([\d.]+)(us|ms|s)', open('$OUT/after-spike-$i.txt').read()).groups()
print(float(v) * {'us': 0.001, 'ms': 1, 's': 1000}[u])")
  echo "   $(python3 -c "import time; print(f'{time.time() - $SPIKE_END:.0f}')") s after the spike: p99 $P99 ms"
  if python3 -c "import sys; sys.exit(0 if $P99 < 200 else 1)"; then
    RECOVERY=$(python3 -c "import time; print(f'{time.time() - $SPIKE_END:.0f}')"); break
  fi
done
check "back under p99 200 ms within 30 s of the spike (${RECOVERY:-not within 40} s)" \
  "$([ -n "$RECOVERY" ] && python3 -c "print(int($RECOVERY <= 30))" || echo 0)"
check "the server process survived the spike" "$(kill -0 $SERVER 2>/dev/null && echo 1 || echo 0)"

[ $FAILED = 0 ] && echo "make soak: all checks passed" || { echo "make soak: FAILED"; exit 1; }
