"""Summarizes an ncu CSV of a `wasm-chord bench -p 0` run (metrics gpu__time_duration.sum and,
when collected, dram__bytes_read.sum): kernels split into decode steps at each embedding kernel;
per kernel name, the count, time and DRAM bytes read in the last complete step, the achieved read
bandwidth, and the step's totals. `--bw GBS` adds each kernel's share of that read bandwidth.
ncu runs kernels one at a time, so the sum of kernel times leaves out the gaps between graph
nodes: compare it with the step's wall time from the bench."""
import argparse, collections, csv

ap = argparse.ArgumentParser()
ap.add_argument("csv")
ap.add_argument("--bw", type=float, default=0.0, help="the card's measured read bandwidth, GB/s")
args = ap.parse_args()

kernels = collections.OrderedDict()  # ID -> [name, ns, bytes]
with open(args.csv) as f:
    lines = [l for l in f if l.startswith('"')]
for r in csv.DictReader(lines):
    k = kernels.setdefault(r["ID"], [r["Kernel Name"], 0.0, 0.0])
    v = float(r["Metric Value"].replace(",", ""))
    if r.get("Metric Name") == "gpu__time_duration.sum":
        k[1] = v
    elif r.get("Metric Name") == "dram__bytes_read.sum":
        k[2] = v
steps, cur = [], []
for name, ns, b in kernels.values():
    if name.startswith("embed_") and cur:
        steps.append(cur)
        cur = []
    cur.append((name, ns, b))
print(f"{len(kernels)} kernels, {len(steps)} complete steps (first kernels before the first embed included in step 0)")
for i, st in enumerate(steps):
    print(f"step {i}: {len(st)} kernels, {sum(ns for _, ns, _ in st) / 1e3:.1f} us, {sum(b for _, _, b in st) / 1e6:.1f} MB read")
if len(steps) >= 2:
    st = steps[-1]
    agg = collections.defaultdict(lambda: [0, 0.0, 0.0])
    for name, ns, b in st:
        a = agg[name.split("<")[0].split("(")[0]]
        a[0] += 1
        a[1] += ns
        a[2] += b
    total = sum(v[1] for v in agg.values())
    total_b = sum(v[2] for v in agg.values())
    print(f"last complete step: {len(st)} kernels, {total / 1e3:.1f} us of kernel time, {total_b / 1e6:.1f} MB read"
          + (f", {total_b / total:.0f} GB/s" if total else ""))
    hdr = f"  {'kernel':34s} {'n':>4s}   {'us each':>8s} {'us':>8s} {'share':>6s} {'MB':>8s} {'GB/s':>7s}"
    print(hdr + ("  % of read bw" if args.bw else ""))
    for k, (n, ns, b) in sorted(agg.items(), key=lambda kv: -kv[1][1]):
        gbs = b / ns if ns else 0.0
        line = f"  {k:34s} {n:4d} x {ns / n / 1e3:8.2f} {ns / 1e3:8.1f} {100 * ns / total:5.1f}% {b / 1e6:8.1f} {gbs:7.0f}"
        if args.bw:
            line += f"  {100 * gbs / args.bw:5.1f}%"
        print(line)
    if args.bw and total:
        print(f"  step at the card's read bandwidth would take {total_b / args.bw / 1e3:.1f} us of the {total / 1e3:.1f} us of kernel time")
