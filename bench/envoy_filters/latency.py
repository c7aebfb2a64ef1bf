#!/usr/bin/env python3
"""p50/p99 of one h2load --log-file (tab-separated: start µs, HTTP status, µs to end of response).

    latency.py EXPECTED_N LOG_FILE...  ->  "p50_ms p99_ms n non200"

Nearest-rank percentiles over every request logged in the files together. Exits 1 when they
hold fewer than EXPECTED_N rows.
"""
import math
import sys

durations, non200 = [], 0
for path in sys.argv[2:]:
  with open(path) as f:
    for line in f:
        parts = line.split("\t")
        if len(parts) < 3:
            continue
        if parts[1].strip() != "200":
            non200 += 1
        durations.append(int(parts[2]))
durations.sort()
n = len(durations)


def pct(p):
    return durations[max(0, math.ceil(p / 100 * n) - 1)] / 1000.0


if n == 0:
    print("nan nan 0 0")
    sys.exit(1)
print(f"{pct(50):.3f} {pct(99):.3f} {n} {non200}")
sys.exit(0 if n >= int(sys.argv[1]) else 1)
