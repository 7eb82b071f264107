"""Prints make bench's tables from the files .dev/bench.sh leaves in OUT."""
import glob
import re
import sys

out, rss_kb, conns = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])


def wrk(path):
    text = open(path).read()
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))

    def ms(label):
        value, unit = re.search(rf"\s{label}%\s+([\d.]+)(us|ms|s)", text).groups()
        return float(value) * {"us": 0.001, "ms": 1, "s": 1000}[unit]

    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    sockets = re.search(r"Socket errors: (.*)", text)
    return rps, ms(50), ms(99), int(errors.group(1)) if errors else 0, sockets.group(1) if sockets else None


def pgbench(name):
    runs = [float(x) for x in re.findall(r"tps = ([\d.]+)", open(f"{out}/pgbench-{name}.txt").read())]
    tps = sum(runs) / len(runs)
    lat = sorted(int(x) for x in open(f"{out}/pgbench-{name}-latency.txt") if x.strip())
    pct = lambda p: lat[min(len(lat) - 1, int(len(lat) * p))] / 1000.0
    return tps, pct(0.50), pct(0.99)


print()
print(f"| scenario (100 organizations in rotation) | HTTP (wrk -c{conns}) | p50 / p99 | SQL with RLS (pgbench -c16) | p50 / p99 | HTTP / SQL | SQL with WHERE, RLS off | RLS cost |")
print("|---|---|---|---|---|---|---|---|")
errors = 0
for scenario, what in [("list", "GET /orgs/{org}/workspaces?limit=20"),
                       ("get", "GET /orgs/{org}/workspaces/{id}"),
                       ("create", "POST /orgs/{org}/workspaces (+ audit entry)")]:
    rps, p50, p99, err, sockets = wrk(f"{out}/wrk-{scenario}.txt")
    errors += err
    rls, r50, r99 = pgbench(f"{scenario}-rls")
    where, w50, w99 = pgbench(f"{scenario}-where")
    print(f"| {what} | {rps:,.0f} req/s | {p50:.2f} / {p99:.2f} ms | {rls:,.0f} tx/s | {r50:.2f} / {r99:.2f} ms "
          f"| {rps / rls:.2f} | {where:,.0f} tx/s ({w50:.2f} / {w99:.2f} ms) | {(where - rls) / where * 100:+.1f} % |"
          + (f" socket errors: {sockets}" if sockets else ""))
statuses = [line.strip() for f in glob.glob(f"{out}/status-*.txt") for line in open(f) if line.strip()]
print(f"\nserver peak RSS: {rss_kb / 1024:.1f} MiB   unexpected statuses: {errors + len(statuses)}"
      + (f" ({', '.join(sorted(set(statuses)))})" if statuses else ""))
print("RLS cost: how much throughput the same SQL transaction loses with the policies enforced, against")
print("RLS disabled and explicit WHERE organization_id = ... clauses (same context and principal check).")
floor, f50, f99 = pgbench("list-floor")
rls, _, _ = pgbench("list-rls")
rps = wrk(f"{out}/wrk-list.txt")[0]
print()
print("| the list's floor: superuser, explicit WHERE, no policies, no principal check | tx/s | p50 / p99 | the server's SQL (RLS, principal check) | its cost over the floor | HTTP / floor |")
print("|---|---|---|---|---|---|")
print(f"| BEGIN; set_config(org); SELECT ... WHERE organization_id = $1 ... LIMIT 21; COMMIT | {floor:,.0f} tx/s "
      f"| {f50:.2f} / {f99:.2f} ms | {rls:,.0f} tx/s | {floor / rls:.2f}x | {rps / floor:.2f} |")

rounds = sorted(int(re.search(r"-(\d+)\.txt$", f).group(1)) for f in glob.glob(f"{out}/wrk-event-with-*.txt"))
tps = lambda path: float(re.search(r"tps = ([\d.]+)", open(path).read()).group(1))
http = [(wrk(f"{out}/wrk-event-with-{r}.txt"), wrk(f"{out}/wrk-event-without-{r}.txt")) for r in rounds]
sql = [(tps(f"{out}/pgbench-event-with-{r}.txt"), tps(f"{out}/pgbench-event-without-{r}.txt")) for r in rounds]
median = lambda xs: sorted(xs)[len(xs) // 2] if len(xs) % 2 else sum(sorted(xs)[len(xs) // 2 - 1:len(xs) // 2 + 1]) / 2
cost = lambda pairs: [(without - with_) / without * 100 for with_, without in pairs]
mean = lambda xs: sum(xs) / len(xs)
http_cost, sql_cost = cost([(a[0], b[0]) for a, b in http]), cost(sql)
print()
print(f"| the event's cost: the create path with its event and without (trigger disabled), {len(rounds)} interleaved rounds | with the event (mean) | without (mean) | cost, median of the rounds | the rounds |")
print("|---|---|---|---|---|")
print(f"| HTTP POST /orgs/{{org}}/workspaces (wrk -c{conns}) | {mean([a[0] for a, _ in http]):,.0f} req/s "
      f"| {mean([b[0] for _, b in http]):,.0f} req/s | {median(http_cost):+.1f} % | {', '.join(f'{c:+.0f}' for c in http_cost)} % |"
      + (f" errors: {sum(a[3] + b[3] for a, b in http)}" if sum(a[3] + b[3] for a, b in http) else ""))
print(f"| SQL: the insert and its audit entry (pgbench -c16) | {mean([a for a, _ in sql]):,.0f} tx/s "
      f"| {mean([b for _, b in sql]):,.0f} tx/s | {median(sql_cost):+.1f} % | {', '.join(f'{c:+.0f}' for c in sql_cost)} % |")
trace_rounds = sorted(int(re.search(r"-(\d+)\.txt$", f).group(1)) for f in glob.glob(f"{out}/wrk-trace-list-traced-*.txt"))
if trace_rounds:
    print()
    print(f"| tracing's cost: every span exported (sampling 100 %, OTLP/HTTP to a local sink) against no tracing, {len(trace_rounds)} interleaved rounds | traced (mean) | untraced (mean) | cost, median of the rounds | the rounds | p99 traced / untraced |")
    print("|---|---|---|---|---|---|")
    for scenario, what in [("list", "GET /orgs/{org}/workspaces?limit=20"), ("create", "POST /orgs/{org}/workspaces")]:
        pairs = [(wrk(f"{out}/wrk-trace-{scenario}-traced-{r}.txt"), wrk(f"{out}/wrk-trace-{scenario}-untraced-{r}.txt")) for r in trace_rounds]
        c = cost([(a[0], b[0]) for a, b in pairs])
        errs = sum(a[3] + b[3] for a, b in pairs)
        print(f"| HTTP {what} (wrk -c{conns}) | {mean([a[0] for a, _ in pairs]):,.0f} req/s | {mean([b[0] for _, b in pairs]):,.0f} req/s "
              f"| {median(c):+.1f} % | {', '.join(f'{x:+.0f}' for x in c)} % | {median([a[2] for a, _ in pairs]):.2f} / {median([b[2] for _, b in pairs]):.2f} ms |"
              + (f" errors: {errs}" if errs else ""))
    requests, size = open(f"{out}/otlp-sink.txt").read().split()
    dropped = open(f"{out}/traced-dropped.txt").read().strip()
    traced_rss = int(open(f"{out}/traced-rss.txt").read())
    print(f"\nexported: {int(requests):,} OTLP requests, {int(size) / 1e6:,.1f} MB; traced server peak RSS {traced_rss / 1024:.1f} MiB; "
          + ("spans dropped: " + dropped if dropped else "no span dropped"))
print()
print("| flags: POST /orgs/{org}/flags/evaluate (20 flags) | throughput | client p50 | client p99 | server p50 | server p99 | server p99.9 |")
print("|---|---|---|---|---|---|---|")
for c in (8, conns):
    rps, p50, p99, err, _ = wrk(f"{out}/flags-wrk-c{c}.txt")
    t = sorted(float(x) for x in open(f"{out}/flags-server-c{c}.txt") if x.strip())
    q = lambda p: t[min(len(t) - 1, int(len(t) * p))]
    print(f"| wrk -t2 -c{c} (2 workers, pool 16, {len(t)} samples) | {rps:,.0f} req/s | {p50:.3f} ms | {p99:.3f} ms "
          f"| {q(0.5):.3f} ms | {q(0.99):.3f} ms | {q(0.999):.3f} ms |" + (f" errors: {err}" if err else ""))
