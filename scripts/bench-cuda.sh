#!/usr/bin/env bash
# CUDA throughput of wasm-chord against llama.cpp on the same synthetic GGUF files, on a GPU machine.
#
#   scripts/bench-cuda.sh -m DIR [-l LLAMA_SRC] [-B LLAMA_BUILD] [-s "1b 7b 13b"]
#                         [-p 512] [-n 128] [-r 3] [-d DEPTH] [-c CTX] [-o OUT]
#
#   -m DIR        where the gen-model files go (made once: gen-<shape>-q4_k_m.gguf)
#   -l LLAMA_SRC  llama.cpp source tree (e.g. llama-cpp-python's vendor/llama.cpp): builds
#                 llama-bench with CUDA for sm_90a into LLAMA_BUILD (default LLAMA_SRC/build-cuda),
#                 reusing a build already there. Or set LLAMA_BENCH to a built llama-bench.
#                 Without either, wasm-chord runs alone.
#   -s SHAPES     gen-model shapes (default "1b 7b 13b")
#   -p/-n/-r/-d   llama-bench's prompt, generation, repetitions and depth (the tg roofline counts
#                 the f16 KV cache read per token: depth + n/2 positions on average)
#   -c CTX        context length written into the gen-model files (gen-<shape>-q4_k_m-c<CTX>.gguf);
#                 the shapes' own (2048 for 1b, 4096 for 7b/13b) limit depth + max(p, n)
#   -o OUT        where logs and the table go (default bench/runs/<UTC date>-cuda-<host>)
#
# For each file it runs
#   llama-bench -m FILE -ngl 99 -fa 1 -p P -n N -r R [-d D] -o json
#   wasm-chord bench -m FILE --backend cuda -p P -n N -r R [-d D] --json
#   WASM_CHORD_CUDA_GRAPH=0 wasm-chord bench ... -p 0          (tg as plain passes: no graph)
# measures the card's read bandwidth (PyTorch: a sum over 4 GiB, bytes read; and a copy, bytes
# read + written), and prints a table with wasm-chord / llama.cpp ratios and the fraction of
# the tg roofline (weights read per token / read bandwidth) each reaches.
#
# wasm-chord is $WASM_CHORD_BIN, else $CARGO_TARGET_DIR/release/wasm-chord, else
# target/release/wasm-chord (build with: cargo build --release -p wasm-chord-cli --features cuda).
set -euo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
DIR="" LLAMA_SRC="" LLAMA_BUILD="" SHAPES="1b 7b 13b" P=512 N=128 R=3 D=0 CTX="" OUT=""
while getopts "m:l:B:s:p:n:r:d:c:o:h" opt; do
    case "$opt" in
        m) DIR="$OPTARG" ;; l) LLAMA_SRC="$OPTARG" ;; B) LLAMA_BUILD="$OPTARG" ;; s) SHAPES="$OPTARG" ;;
        p) P="$OPTARG" ;; n) N="$OPTARG" ;; r) R="$OPTARG" ;; d) D="$OPTARG" ;; c) CTX="$OPTARG" ;;
        o) OUT="$OPTARG" ;; *) sed -n '2,28p' "$0"; exit 2 ;;
    esac
done
[ -n "$DIR" ] || { sed -n '2,28p' "$0"; exit 2; }
mkdir -p "$DIR"
OUT="${OUT:-$REPO/bench/runs/$(date -u +%Y-%m-%d)-cuda-$(hostname -s 2>/dev/null || hostname)}"
mkdir -p "$OUT"

WC="${WASM_CHORD_BIN:-}"
if [ -z "$WC" ]; then
    for c in "${CARGO_TARGET_DIR:-$REPO/target}/release/wasm-chord" "$REPO/target/release/wasm-chord"; do
        if [ -x "$c" ]; then WC="$c"; break; fi
    done
fi
[ -n "$WC" ] && [ -x "$WC" ] || { echo "wasm-chord not found: set WASM_CHORD_BIN" >&2; exit 1; }

LB="${LLAMA_BENCH:-}"
if [ -z "$LB" ] && [ -n "$LLAMA_SRC" ]; then
    LLAMA_BUILD="${LLAMA_BUILD:-$LLAMA_SRC/build-cuda}"
    if [ ! -x "$LLAMA_BUILD/bin/llama-bench" ]; then
        echo "building llama-bench (CUDA, sm_90a) in $LLAMA_BUILD ..." >&2
        cmake -S "$LLAMA_SRC" -B "$LLAMA_BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_CUDA=ON \
            -DCMAKE_CUDA_ARCHITECTURES=90a -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF \
            -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF > "$OUT/llama-cmake.log" 2>&1
        cmake --build "$LLAMA_BUILD" --target llama-bench -j "$(nproc)" > "$OUT/llama-build.log" 2>&1 \
            || { echo "llama-bench build failed (see $OUT/llama-build.log)" >&2; }
    fi
    [ -x "$LLAMA_BUILD/bin/llama-bench" ] && LB="$LLAMA_BUILD/bin/llama-bench"
fi
[ -n "$LB" ] || echo "no llama-bench (give -l LLAMA_SRC or LLAMA_BENCH); wasm-chord only" >&2

{
    echo "date: $(date -u +%FT%TZ)"
    echo "host: $(hostname)"
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem --format=csv,noheader 2>/dev/null | sed 's/^/gpu: /' || echo "gpu: (nvidia-smi failed)"
    echo "args: -p $P -n $N -r $R -d $D shapes: $SHAPES"
    echo "git: $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?')"
    echo "wasm-chord: $WC"
    echo "llama-bench: ${LB:-none}"
} > "$OUT/env.txt"
cat "$OUT/env.txt" >&2

# The card's bandwidth, measured rather than taken from a datasheet.
python3 - > "$OUT/bandwidth.json" 2> "$OUT/bandwidth.log" <<'EOF' || echo '{}' > "$OUT/bandwidth.json"
import json, torch
n = 1 << 30  # 4 GiB of f32
x = torch.rand(n, device="cuda")
y = torch.empty_like(x)
def median_ms(f, reps=10):
    for _ in range(3):
        f()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record(); f(); b.record(); torch.cuda.synchronize()
        times.append(a.elapsed_time(b))
    return sorted(times)[len(times) // 2]
read = 4 * n / (median_ms(lambda: x.sum()) * 1e-3)
copy = 2 * 4 * n / (median_ms(lambda: y.copy_(x)) * 1e-3)
print(json.dumps({"device": torch.cuda.get_device_name(), "read_GBs": read / 1e9, "copy_GBs": copy / 1e9}))
EOF
cat "$OUT/bandwidth.json" >&2

for s in $SHAPES; do
    f="$DIR/gen-$s-q4_k_m${CTX:+-c$CTX}.gguf"
    ctx=()
    if [ -n "$CTX" ]; then ctx=(--ctx "$CTX"); fi
    if [ ! -s "$f" ]; then
        echo "gen-model $s ${CTX:+(context $CTX)} ..." >&2
        "$WC" gen-model --shape "$s" --quant q4_k_m "${ctx[@]}" -o "$f" > "$OUT/gen-$s.log" 2>&1 || { echo "gen-model $s failed" >&2; continue; }
    fi
    depth=()
    if [ "$D" -gt 0 ]; then depth=(-d "$D"); fi
    if [ -n "$LB" ]; then
        echo "llama-bench $s ..." >&2
        "$LB" -m "$f" -ngl 99 -fa 1 -p "$P" -n "$N" -r "$R" "${depth[@]}" -o json \
            > "$OUT/$s.llama.json" 2> "$OUT/$s.llama.log" || echo "llama-bench failed on $s (see $OUT/$s.llama.log)" >&2
    fi
    echo "wasm-chord bench $s ..." >&2
    "$WC" bench -m "$f" --backend cuda -p "$P" -n "$N" -r "$R" "${depth[@]}" --json \
        > "$OUT/$s.wasm-chord.json" 2> "$OUT/$s.wasm-chord.log" || echo "wasm-chord bench failed on $s (see $OUT/$s.wasm-chord.log)" >&2
    WASM_CHORD_CUDA_GRAPH=0 "$WC" bench -m "$f" --backend cuda -p 0 -n "$N" -r "$R" "${depth[@]}" --json \
        > "$OUT/$s.wasm-chord-nograph.json" 2> "$OUT/$s.wasm-chord-nograph.log" || echo "wasm-chord bench (no graph) failed on $s" >&2
done

python3 - "$OUT" "$P" "$N" "$D" "$SHAPES" <<'EOF' | tee "$OUT/table.md"
import json, sys
from pathlib import Path

out, P, N, D, shapes = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5].split()

def load(p):
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return None

def llama_rates(doc):
    rates = {}
    for r in doc or []:
        kind = "pp" if r.get("n_prompt", 0) > 0 and r.get("n_gen", 0) == 0 else "tg"
        rates[kind] = float(r["avg_ts"])
    return rates

def wc_rates(doc):
    if not isinstance(doc, dict):
        return {}
    return {k: float(doc[k]["tok_s"]) for k in ("pp", "tg") if isinstance(doc.get(k), dict) and doc[k].get("n", 0) > 0}

bw = load(out / "bandwidth.json") or {}
read = bw.get("read_GBs")
card = bw.get("device", "?")
print(f"card: {card}; read {read or 0:.0f} GB/s (sum), copy {bw.get('copy_GBs') or 0:.0f} GB/s (read + write); depth {D}")
print()
print("| shape | test | llama.cpp t/s | wasm-chord t/s | ratio | wasm-chord no graph t/s | weights/token | tg roofline t/s (weights + KV) | llama.cpp % | wasm-chord % |")
print("|---|---|---|---|---|---|---|---|---|---|")
fmt = lambda x, f="{:.1f}": "-" if x is None else f.format(x)
for s in shapes:
    lr = llama_rates(load(out / f"{s}.llama.json"))
    wdoc = load(out / f"{s}.wasm-chord.json")
    wr = wc_rates(wdoc)
    ng = wc_rates(load(out / f"{s}.wasm-chord-nograph.json"))
    wbytes = wdoc.get("weight_bytes_per_token") if isinstance(wdoc, dict) else None
    # At depth D a token also reads the cache: D + n/2 positions on average over tg n.
    kvb = (wdoc.get("kv_bytes_per_position") or 0) * (D + N / 2) if isinstance(wdoc, dict) else 0
    roof = read * 1e9 / (wbytes + kvb) if (read and wbytes) else None
    for kind, n in (("pp", P), ("tg", N)):
        l, w = lr.get(kind), wr.get(kind)
        ratio = f"{w / l:.2f}x" if (l and w) else "-"
        if kind == "tg":
            pct = lambda x: f"{100 * x / roof:.0f}%" if (x and roof) else "-"
            print(f"| {s} | tg{n} | {fmt(l)} | {fmt(w)} | {ratio} | {fmt(ng.get('tg'))} | {fmt(wbytes and wbytes / 1e9, '{:.2f} GB')} | {fmt(roof)} | {pct(l)} | {pct(w)} |")
        else:
            print(f"| {s} | pp{n} | {fmt(l)} | {fmt(w)} | {ratio} | - | - | - | - | - |")
EOF
echo "results in $OUT" >&2
