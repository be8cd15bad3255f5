"""Summarizes an ncu CSV (gpu__time_duration.sum per kernel) of a `wasm-chord bench -p 0` run:
kernels split into decode steps at each embedding kernel; per kernel name, the count and time in
the last complete step, and the step's total."""
import collections, csv, sys

rows = []
with open(sys.argv[1]) as f:
    lines = [l for l in f if l.startswith('"')]
for r in csv.DictReader(lines):
    if r.get("Metric Name") == "gpu__time_duration.sum":
        rows.append((r["ID"], r["Kernel Name"], float(r["Metric Value"].replace(",", ""))))
steps, cur = [], []
for _, name, ns in rows:
    if name.startswith("embed_") and cur:
        steps.append(cur)
        cur = []
    cur.append((name, ns))
print(f"{len(rows)} kernels, {len(steps)} complete steps (first kernels before the first embed included in step 0)")
for i, st in enumerate(steps):
    print(f"step {i}: {len(st)} kernels, {sum(ns for _, ns in st) / 1e3:.1f} us")
if len(steps) >= 2:
    st = steps[-1]
    agg = collections.defaultdict(lambda: [0, 0.0])
    for name, ns in st:
        key = name.split("<")[0]
        agg[key][0] += 1
        agg[key][1] += ns
    total = sum(v[1] for v in agg.values())
    print(f"last complete step: {len(st)} kernels, {total / 1e3:.1f} us of kernel time")
    for k, (n, ns) in sorted(agg.items(), key=lambda kv: -kv[1][1]):
        print(f"  {k:40s} {n:4d} x  {ns / n / 1e3:7.2f} us = {ns / 1e3:8.1f} us ({100 * ns / total:4.1f}%)")
