#!/usr/bin/env bash
# Programmatic Dependent Launch (helper cuda-pdl) on a GPU machine: op tests, the flash decode
# test and the end-to-end test with PDL on, then gen-model 1b/7b/13b q4_k_m benches in one
# process per run, interleaved (RUNS): a number or word is this branch's binary with
# WASM_CHORD_CUDA_PDL set to it (0: the kernels and launches as before; 1: PDL, trigger after
# the wait, with the matvecs' L2 weight prefetch; early: trigger first; noprefetch),
# "prev" is wasm-chord-prev (an earlier build of the branch, if present) with PDL on and "base"
# main's binary; then the decode-step timing (kernels per graph, GPU time per token) for TIMING
# modes. Run from the repository root with C (default .device-carry/cuda-pdl) holding
# wasm-chord, wasm-chord-base, ops, flash and cuda_e2e. Logs in $OUT (as all.tgz); a table last.
set -uo pipefail
C=${C:-.device-carry/cuda-pdl}
LIMIT=${LIMIT:-220}
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-} WASM_CHORD_REQUIRE_GPU=1 NCCL_NVLS_ENABLE=0
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT" /tmp/m
T0=$(date +%s)
left() { [ $(( $(date +%s) - T0 )) -lt "$1" ]; }
stamp() { echo "[$(( $(date +%s) - T0 )) s] $*"; }
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader | tee "$OUT/gpu.txt"
( $C/wasm-chord gen-model --shape 1b --quant q4_k_m -o /tmp/m/1b.gguf
  $C/wasm-chord gen-model --shape 7b --quant q4_k_m -o /tmp/m/7b.gguf
  $C/wasm-chord gen-model --shape 13b --quant q4_k_m -o /tmp/m/13b.gguf ) > "$OUT/gen.log" 2>&1 &
GEN=$!
RUNS=${RUNS:-0 1 base 0 1 0 1}
TIMING=${TIMING:-0 1}
# Warm the NVRTC caches of the other kernel builds while the tests run.
( for m in $(echo $RUNS | tr ' ' '\n' | sort -u); do
    case $m in 1|prev|base) ;; *) WASM_CHORD_CUDA_PDL=$m $C/ops --test-threads=1 rms_norm_q8 > "$OUT/warm-$m.log" 2>&1 ;; esac
  done ) &
WARM=$!
stamp tests
[ -x $C/flash ] && $C/flash --test-threads=1 decode_at_device_position > "$OUT/flash.log" 2>&1 &
FLASH=$!
$C/ops --test-threads=1 > "$OUT/tests.log" 2>&1
grep -E "^test |test result|panicked" "$OUT/tests.log" | grep -v " ok$" | tail -12
wait $FLASH; grep -E "test result|panicked|FAIL" "$OUT/flash.log" | tail -4
while [ ! -s /tmp/m/7b.gguf ]; do sleep 1; done; stamp "1b made"
WASM_CHORD_E2E_GGUF=/tmp/m/1b.gguf $C/cuda_e2e --test-threads=1 --nocapture --skip smollm2 --skip gemma3 > "$OUT/e2e.log" 2>&1
grep -E "test result|FAIL|panicked|greedy tokens|steps|bound" "$OUT/e2e.log" | tail -14
wait $WARM; stamp "caches warm"
run() { # shape mode
  local bin=$C/wasm-chord mode=$2 env=$2
  [ "$mode" = base ] && bin=$C/wasm-chord-base
  [ "$mode" = prev ] && bin=$C/wasm-chord-prev env=1
  [ -x "$bin" ] || return 0
  WASM_CHORD_CUDA_PDL=$env $bin bench -m /tmp/m/$1.gguf --backend cuda -p 512 -n 128 -r 3 --json > "$OUT/$1.$mode.json" 2> "$OUT/$1.$mode.log"
  cat "$OUT/$1.$mode.json" >> "$OUT/$1.$mode.all"
  stamp "$1 $mode: $(cat "$OUT/$1.$mode.json")"
}
for s in 1b 7b; do
  [ $s = 7b ] && while [ ! -e /tmp/m/13b.gguf ] && kill -0 $GEN 2>/dev/null; do sleep 1; done
  for m in $RUNS; do
    left "$LIMIT" || break
    run $s $m
  done
done
wait $GEN
for m in $RUNS; do
  left "$LIMIT" || break
  run 13b $m
done
for s in 1b 7b; do
  for m in $TIMING; do
    left $(( LIMIT + 25 )) || break
    WASM_CHORD_CUDA_PDL=$m WASM_CHORD_STEP_TIMING=1 RUST_LOG=wasm_chord_cuda=info $C/wasm-chord bench -m /tmp/m/$s.gguf --backend cuda -p 0 -n 128 -r 1 > "$OUT/$s.$m.timing.json" 2> "$OUT/$s.$m.timing.log"
    grep "decode step timing" "$OUT/$s.$m.timing.log" | tail -1 | sed "s/^.*timing/$s pdl=$m: timing/"
  done
done
python3 - "$OUT" $RUNS <<'PY'
import json, sys, os
out = sys.argv[1]
modes = list(dict.fromkeys(["base"] + sys.argv[2:]))
def runs(n):
    try: return [json.loads(l) for l in open(os.path.join(out, n)) if l.strip()]
    except Exception: return []
print("| shape | test | " + " | ".join(f"{m} t/s" for m in modes) + " | 1 / 0 (best) |")
print("|---|---|" + "---|" * (len(modes) + 1))
for s in ["1b", "7b", "13b"]:
    for t in ["pp", "tg"]:
        v = {m: [r[t]["tok_s"] for r in runs(f"{s}.{m}.all")] for m in modes}
        r = max(v["1"]) / max(v["0"]) if v["1"] and v["0"] else float("nan")
        print(f"| {s} | {t} | " + " | ".join(" / ".join(f"{x:.1f}" for x in v[m]) for m in modes) + f" | {r:.3f} |")
PY
stamp done
cd "$OUT" && tar czf /tmp/all.tgz . && rm -f ./* && mv /tmp/all.tgz "$OUT/all.tgz"
