#!/usr/bin/env bash
# Decode-step fusions (helper cuda-fuse3) on a GPU machine: tests, then main's binary and this
# branch's back to back on gen-model 1b/7b q4_k_m, and the kernels in each decode graph. Run
# from the repository root with C (default .device-carry/cuda-fuse3) holding wasm-chord (this
# branch), wasm-chord-base (main), ops and cuda_e2e. Logs in $OUT; a table last.
set -uo pipefail
C=${C:-.device-carry/cuda-fuse3}
LIMIT=${LIMIT:-200}
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-} WASM_CHORD_REQUIRE_GPU=1 NCCL_NVLS_ENABLE=0
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT" /tmp/m
T0=$(date +%s)
left() { [ $(( $(date +%s) - T0 )) -lt "$1" ]; }
stamp() { echo "[$(( $(date +%s) - T0 )) s] $*"; }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
( $C/wasm-chord gen-model --shape 1b --quant q4_k_m -o /tmp/m/1b.gguf
  $C/wasm-chord gen-model --shape 7b --quant q4_k_m -o /tmp/m/7b.gguf ) > "$OUT/gen.log" 2>&1 &
GEN=$!
stamp tests
$C/ops --test-threads=1 > "$OUT/tests.log" 2>&1
grep -E "^test |test result|panicked" "$OUT/tests.log" | grep -v " ok$" | tail -12
wait $GEN; stamp "models made"
WASM_CHORD_E2E_GGUF=/tmp/m/1b.gguf $C/cuda_e2e --test-threads=1 --nocapture --skip smollm2 --skip gemma3 > "$OUT/e2e.log" 2>&1
grep -E "test result|FAIL|panicked|greedy tokens|steps|bound" "$OUT/e2e.log" | tail -14
for s in 1b 7b; do
  for b in base new base new; do
    left "$LIMIT" || break
    bin=$C/wasm-chord; [ $b = base ] && bin=$C/wasm-chord-base
    $bin bench -m /tmp/m/$s.gguf --backend cuda -p 512 -n 128 -r 3 --json > "$OUT/$s.$b.json" 2> "$OUT/$s.$b.log"
    cat "$OUT/$s.$b.json" >> "$OUT/$s.$b.all"
    stamp "$s $b: $(cat "$OUT/$s.$b.json")"
  done
done
for s in 1b 7b; do
  for b in base new; do
    left $(( LIMIT + 30 )) || break
    bin=$C/wasm-chord; [ $b = base ] && bin=$C/wasm-chord-base
    WASM_CHORD_STEP_TIMING=1 RUST_LOG=wasm_chord_cuda=info $bin bench -m /tmp/m/$s.gguf --backend cuda -p 0 -n 128 -r 1 > "$OUT/$s.$b.timing.json" 2> "$OUT/$s.$b.timing.log"
    grep "decode step timing" "$OUT/$s.$b.timing.log" | tail -1 | sed "s/^.*timing/$s $b: timing/"
  done
done
python3 - "$OUT" <<'PY'
import json, sys, os
out = sys.argv[1]
def runs(n):
    try: return [json.loads(l) for l in open(os.path.join(out, n)) if l.strip()]
    except Exception: return []
print("| shape | test | base t/s (runs) | new t/s (runs) | new/base (best) |")
print("|---|---|---|---|---|")
for s in ["1b", "7b"]:
    b, n = runs(f"{s}.base.all"), runs(f"{s}.new.all")
    for t in ["pp", "tg"]:
        bv = [r[t]["tok_s"] for r in b]; nv = [r[t]["tok_s"] for r in n]
        r = max(nv) / max(bv) if bv and nv else float("nan")
        print(f"| {s} | {t} | {' / '.join(f'{v:.1f}' for v in bv)} | {' / '.join(f'{v:.1f}' for v in nv)} | {r:.3f} |")
PY
stamp done
cd "$OUT" && tar czf /tmp/all.tgz . && rm -f ./* && mv /tmp/all.tgz "$OUT/all.tgz"
