#!/usr/bin/env python3
"""The Markdown table of bench/envoy_filters.sh.

    report.py THROUGHPUT_TSV LATENCY_TSV VERIFIED_TSV P2_TARGET P3_TARGET_MS

CPU columns: the median over rounds of each listener's µs/request. Ratio columns: the median over
rounds of the per-round ratio of total CPU (Envoy + authz server) to that of ext_authz-noop / of
none in the same round. Latency columns show "–" for a listener without latency rows (LAT_ROUNDS=0).
With an oidc-authz-baseline-cookie listener, also the line `oidc-authz-cookie /
oidc-authz-baseline-cookie`: the median of the per-round ratios of their total CPU (and of the
authz server's CPU alone). Then the context switches per request of Envoy and of the authz
server (a diagnostic of wake-ups). Prints the table on stdout, and "P2 P3 BASE" (the oidc-authz-cookie
ratio to ext_authz-noop, its p99 added over ext_authz-noop in ms, and its ratio to the baseline;
"nan" for what was not measured) on stderr.
"""
import csv
import statistics
import sys


def rows(path):
    with open(path) as f:
        return list(csv.DictReader(f, delimiter="\t"))


tput, lat, ver = rows(sys.argv[1]), rows(sys.argv[2]), rows(sys.argv[3])
p2_target, p3_target = float(sys.argv[4]), float(sys.argv[5])

order, runs, coarse, switches = [], {}, [], {}
for r in tput:
    if int(r["envoy_ticks"]) < 50:
        coarse.append(f"{r['listener']} r{r['round']}: {r['envoy_ticks']} ticks")
    l = r["listener"]
    if l not in order:
        order.append(l)
    e = float(r["envoy_us"])
    a = float(r["authz_us"]) if r["authz_us"] != "-" else None
    runs.setdefault(l, {})[r["round"]] = (e, a, e + (a or 0.0), float(r["req_per_s"]))
    switches.setdefault(l, []).append((float(r["envoy_cs"]), None if r["authz_cs"] == "-" else float(r["authz_cs"])))

latency = {r["listener"]: (float(r["p50_ms"]), float(r["p99_ms"])) for r in lat}
lat_rounds = {r["listener"]: r["p99_per_round"] for r in lat}
verified = {r["listener"]: r["verdict"] for r in ver}


def med(xs):
    return statistics.median(xs)


def ratio(l, base, i=2):
    """Median over rounds of runs[l][round][i] / runs[base][round][i] (i=2: total CPU)."""
    if base not in runs or l not in runs:
        return None
    xs = [runs[l][k][i] / runs[base][k][i] for k in runs[l]
          if k in runs[base] and runs[base][k][i] and runs[l][k][i] is not None]
    return med(xs) if xs else None


print("| listener | Envoy µs/req | authz µs/req | total µs/req | × ext_authz-noop | × none | req/s (closed loop) "
      "| p50 ms | p99 ms | p99 added vs noop | decisions verified |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
p2 = p3 = None
noop_p99 = latency.get("ext_authz-noop", (None, None))[1]
for l in order:
    rs = list(runs[l].values())
    e = med([x[0] for x in rs])
    a = med([x[1] for x in rs]) if rs[0][1] is not None else None
    t = med([x[2] for x in rs])
    rps = med([x[3] for x in rs])
    vn, vz = ratio(l, "ext_authz-noop"), ratio(l, "none")
    p50, p99 = latency.get(l, (None, None))
    added = None if p99 is None or noop_p99 is None else p99 - noop_p99
    if l == "oidc-authz-cookie":
        p2, p3 = vn, added
    fmt = lambda v, f: "–" if v is None else f.format(v)
    print(f"| {l} | {e:.1f} | {fmt(a, '{:.1f}')} | {t:.1f} | {fmt(vn, '{:.2f}×')} | {fmt(vz, '{:.2f}×')} "
          f"| {rps:.0f} | {fmt(p50, '{:.3f}')} | {fmt(p99, '{:.3f}')} "
          f"| {'–' if l == 'ext_authz-noop' else fmt(added, '{:+.3f}')} | {verified.get(l, '?')} |")

print()
if p2 is not None:
    print(f"P2 (oidc-authz-cookie total CPU / ext_authz-noop, target ≤ {p2_target:.2f}): {p2:.2f}× — "
          f"{'MET' if p2 <= p2_target else 'MISSED'}")
if p3 is not None:
    print(f"P3 (oidc-authz-cookie p99 added over ext_authz-noop at the paced rate, target ≤ {p3_target} ms): "
          f"{p3:+.3f} ms — {'MET' if p3 <= p3_target else 'MISSED'}")
base = ratio("oidc-authz-cookie", "oidc-authz-baseline-cookie")
if base is not None:
    base_authz = ratio("oidc-authz-cookie", "oidc-authz-baseline-cookie", 1)
    per_round = "  ".join(f"r{k}: {runs['oidc-authz-cookie'][k][2] / v[2]:.3f}"
                          for k, v in sorted(runs["oidc-authz-baseline-cookie"].items())
                          if k in runs["oidc-authz-cookie"] and v[2] > 0)
    print(f"oidc-authz-cookie / oidc-authz-baseline-cookie: {base:.3f}× total CPU"
          f"{'' if base_authz is None else f', {base_authz:.3f}× authz CPU'} "
          f"(medians of per-round ratios; total per round: {per_round})")
if coarse:
    print("\nWARNING: under 50 CPU ticks of Envoy in some runs (" + ", ".join(coarse) +
          "): the CPU figures are coarse; raise N.")
print("\nper round (Envoy + authz µs/req):")
for l in order:
    print(f"  {l:26s} " + "  ".join(
        f"r{k}: {v[0]:.1f}+{'-' if v[1] is None else f'{v[1]:.1f}'}" for k, v in sorted(runs[l].items())))
print("\ncontext switches per request, median of rounds (each is a thread put to sleep or preempted;"
      " fewer means more requests handled per wake-up):")
for l in order:
    es = med([x[0] for x in switches[l]])
    az = [x[1] for x in switches[l] if x[1] is not None]
    print(f"  {l:26s} Envoy {es:.2f}" + (f"  authz {med(az):.2f}" if az else ""))
if lat_rounds:
    print("\np99 per latency round (ms):")
    for l in order:
        print(f"  {l:26s} {lat_rounds.get(l, '?')}")
print(f"{'nan' if p2 is None else f'{p2:.2f}'} {'nan' if p3 is None else f'{p3:.3f}'} "
      f"{'nan' if base is None else f'{base:.3f}'}", file=sys.stderr)
