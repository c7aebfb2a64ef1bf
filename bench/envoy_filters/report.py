#!/usr/bin/env python3
"""The Markdown table of bench/envoy_filters.sh.

    report.py THROUGHPUT_TSV LATENCY_TSV VERIFIED_TSV P2_TARGET P3_TARGET_MS

CPU columns: the median over rounds of each listener's µs/request. Ratio columns: the median over
rounds of the per-round ratio of total CPU (Envoy + authz server) to that of ext_authz-noop / of
none in the same round. Prints the table on stdout, and "P2 P3" (the oidc-authz-cookie ratio to
ext_authz-noop, and its p99 added over ext_authz-noop in ms) on stderr.
"""
import csv
import statistics
import sys


def rows(path):
    with open(path) as f:
        return list(csv.DictReader(f, delimiter="\t"))


tput, lat, ver = rows(sys.argv[1]), rows(sys.argv[2]), rows(sys.argv[3])
p2_target, p3_target = float(sys.argv[4]), float(sys.argv[5])

order, runs, coarse = [], {}, []
for r in tput:
    if int(r["envoy_ticks"]) < 50:
        coarse.append(f"{r['listener']} r{r['round']}: {r['envoy_ticks']} ticks")
    l = r["listener"]
    if l not in order:
        order.append(l)
    e = float(r["envoy_us"])
    a = float(r["authz_us"]) if r["authz_us"] != "-" else None
    runs.setdefault(l, {})[r["round"]] = (e, a, e + (a or 0.0), float(r["req_per_s"]))

latency = {r["listener"]: (float(r["p50_ms"]), float(r["p99_ms"])) for r in lat}
lat_rounds = {r["listener"]: r["p99_per_round"] for r in lat}
verified = {r["listener"]: r["verdict"] for r in ver}


def med(xs):
    return statistics.median(xs)


def ratio(l, base):
    if base not in runs:
        return None
    xs = [runs[l][k][2] / runs[base][k][2] for k in runs[l] if k in runs[base] and runs[base][k][2] > 0]
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
if coarse:
    print("\nWARNING: under 50 CPU ticks of Envoy in some runs (" + ", ".join(coarse) +
          "): the CPU figures are coarse; raise N.")
print("\nper round (Envoy + authz µs/req):")
for l in order:
    print(f"  {l:18s} " + "  ".join(
        f"r{k}: {v[0]:.1f}+{'-' if v[1] is None else f'{v[1]:.1f}'}" for k, v in sorted(runs[l].items())))
print("\np99 per latency round (ms):")
for l in order:
    print(f"  {l:18s} {lat_rounds.get(l, '?')}")
print(f"{'nan' if p2 is None else f'{p2:.2f}'} {'nan' if p3 is None else f'{p3:.3f}'}", file=sys.stderr)
