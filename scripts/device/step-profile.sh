#!/usr/bin/env bash
# Decode-step profile and before/after bench on a GPU machine (helper cuda-step). Run from the
# repository root with the binaries in C (default .device-carry/cuda-step): wasm-chord (this
# branch), wasm-chord-base (main before it), and the test binaries ops, flash, cuda_e2e.
# Writes logs to $OUT and prints a table last. Stages stop being started after LIMIT seconds.
set -uo pipefail
C=${C:-.device-carry/cuda-step}
LIMIT=${LIMIT:-250}
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-} WASM_CHORD_REQUIRE_GPU=1 NCCL_NVLS_ENABLE=0
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT" /tmp/m
T0=$(date +%s)
left() { [ $(( $(date +%s) - T0 )) -lt "$1" ]; }
stamp() { echo "[$(( $(date +%s) - T0 )) s] $*"; }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
( $C/wasm-chord gen-model --shape 1b --quant q4_k_m -o /tmp/m/1b.gguf
  $C/wasm-chord gen-model --shape 7b --quant q4_k_m --ctx 33792 -o /tmp/m/7b.gguf
  $C/wasm-chord gen-model --shape 13b --quant q4_k_m -o /tmp/m/13b.gguf ) > "$OUT/gen.log" 2>&1 &
GEN=$!
stamp tests
{ $C/ops --test-threads=1 2>&1; $C/flash --test-threads=1 2>&1; } > "$OUT/tests.log"
grep -E "^test |test result|FAIL|panicked" "$OUT/tests.log" | grep -v " ok$" | tail -12
wait $GEN; stamp "models made"; grep wrote "$OUT/gen.log"
WASM_CHORD_E2E_GGUF=/tmp/m/1b.gguf WASM_CHORD_GOLDEN_DIR=$PWD/crates/wasm-chord-runtime/tests/golden/logits $C/cuda_e2e --test-threads=1 --nocapture > "$OUT/e2e.log" 2>&1
grep -E "test result|FAIL|panicked|greedy tokens|steps" "$OUT/e2e.log" | tail -12
for s in 1b 7b 13b; do
  for b in base new; do
    left "$LIMIT" || break
    bin=$C/wasm-chord; [ $b = base ] && bin=$C/wasm-chord-base
    $bin bench -m /tmp/m/$s.gguf --backend cuda -p 512 -n 128 -r 3 --json > "$OUT/$s.$b.json" 2> "$OUT/$s.$b.log"
    stamp "$s $b: $(cat "$OUT/$s.$b.json")"
  done
done
for s in 1b 7b; do
  left "$LIMIT" || break
  WASM_CHORD_STEP_TIMING=1 RUST_LOG=wasm_chord_cuda=info $C/wasm-chord bench -m /tmp/m/$s.gguf --backend cuda -p 0 -n 128 -r 2 > "$OUT/$s.timing.json" 2> "$OUT/$s.timing.log"
  grep "decode step timing" "$OUT/$s.timing.log" | tail -1 | sed "s/^/$s: /"
done
for d in 8192 32768; do
  left "$LIMIT" || break
  $C/wasm-chord bench -m /tmp/m/7b.gguf --backend cuda -d $d -p 512 -n 128 -r 2 --json > "$OUT/7b.d$d.json" 2> "$OUT/7b.d$d.log"
  stamp "7b depth $d: $(cat "$OUT/7b.d$d.json")"
done
if left "$LIMIT" && command -v ncu >/dev/null; then
  for s in 1b 7b; do
    left $(( LIMIT + 20 )) || break
    timeout $(( LIMIT + 40 - $(date +%s) + T0 )) ncu --metrics gpu__time_duration.sum --csv --print-units base -c $([ $s = 1b ] && echo 900 || echo 1300) \
      $C/wasm-chord bench -m /tmp/m/$s.gguf --backend cuda -p 0 -n 4 -r 1 > "$OUT/ncu-$s.csv" 2> "$OUT/ncu-$s.log"
    python3 $C/ncu_step.py "$OUT/ncu-$s.csv" > "$OUT/ncu-$s-summary.txt" 2>&1; head -c 3000 "$OUT/ncu-$s-summary.txt" | grep -v "^step" | head -30
  done
fi
python3 - "$OUT" <<'PY'
import json, sys, os
out = sys.argv[1]
def load(n):
    try: return json.load(open(os.path.join(out, n)))
    except Exception: return None
print("| shape | test | base t/s | new t/s | new/base |")
print("|---|---|---|---|---|")
for s in ["1b", "7b", "13b"]:
    b, n = load(f"{s}.base.json"), load(f"{s}.new.json")
    for t in ["pp", "tg"]:
        bv = b[t]["tok_s"] if b else float("nan"); nv = n[t]["tok_s"] if n else float("nan")
        print(f"| {s} | {t} | {bv:.1f} | {nv:.1f} | {nv / bv if bv == bv and bv else float('nan'):.3f} |")
for d in [8192, 32768]:
    j = load(f"7b.d{d}.json")
    if j: print(f"| 7b d{d} | pp / tg | | {j['pp']['tok_s']:.1f} / {j['tg']['tok_s']:.1f} | |")
PY
stamp done
cd "$OUT" && tar czf /tmp/all.tgz . && rm -f ./* && mv /tmp/all.tgz "$OUT/all.tgz"
