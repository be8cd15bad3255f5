#!/usr/bin/env bash
# Helper cuda-fuse4 on a GPU machine: the gate kernels and the one-split flash decode kernel
# write the int8 activations of the next matvec (no quantize launch before down and o).
# Op tests, the flash device-position test and cuda_e2e (gen-model 1B), then gen-model 1b/7b
# q4_k_m `bench --backend cuda -p 0 -n 128 -r 3` per mode in RUNS (one process each): "base"
# is wasm-chord-base (main's binary), the others this branch's with WASM_CHORD_CUDA_Q8_OUT set
# to them ("new": unset, both fusions; none; gate; flash); the decode-step timing (kernels per
# graph) of each mode in TIMING, and, time permitting, -p 512 new vs base.
# Run from the repository root with C (default .device-carry/cuda-fuse4) holding wasm-chord,
# wasm-chord-base, ops, flash, cuda_e2e and kcache (NVRTC cubins made with
# WASM_CHORD_CUDA_INCLUDE=$C/inc). Logs in $OUT/all.tgz; a table last.
set -uo pipefail
C=${C:-.device-carry/cuda-fuse4}
LIMIT=${LIMIT:-240}
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-} WASM_CHORD_REQUIRE_GPU=1 NCCL_NVLS_ENABLE=0
rm -f $C/inc && ln -s /usr/local/cuda/include $C/inc
export WASM_CHORD_CUDA_INCLUDE=$C/inc WASM_CHORD_KERNEL_CACHE=$C/kcache
OUT=${OUT:-/tmp/out}; L=/tmp/logs; mkdir -p "$OUT" $L /tmp/m
T0=$(date +%s)
left() { [ $(( $(date +%s) - T0 )) -lt "$1" ]; }
stamp() { echo "[$(( $(date +%s) - T0 )) s] $*"; }
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader | tee $L/gpu.txt
( $C/wasm-chord gen-model --shape 1b --quant q4_k_m -o /tmp/m/1b.gguf
  $C/wasm-chord gen-model --shape 7b --quant q4_k_m -o /tmp/m/7b.gguf ) > $L/gen.log 2>&1 &
GEN=$!
n0=$(ls $C/kcache | wc -l)
timeout 60 $C/flash --test-threads=1 --nocapture decode_at_device_position > $L/flash.log 2>&1 &
FLASH=$!
timeout 100 $C/ops --test-threads=1 --nocapture > $L/ops.log 2>&1; stamp "ops rc=$?"
wait $FLASH; stamp "flash rc=$?"
stamp "kernel cache entries: $n0 -> $(ls $C/kcache | wc -l)"
grep -E "^test |test result|panicked" $L/ops.log | grep -v " ok$" | cut -c1-300 | tail -8
grep -E "test result|panicked|FAIL" $L/flash.log | cut -c1-300 | tail -6
while [ ! -s /tmp/m/7b.gguf ] && kill -0 $GEN 2>/dev/null; do sleep 1; done; stamp "1b made"
# base's kernels compile now (its mmvq/flash sources differ), off the timed runs.
timeout 60 $C/wasm-chord-base bench -m /tmp/m/1b.gguf --backend cuda -p 0 -n 8 -r 1 > $L/warm-base.log 2>&1 &
WARM=$!
WASM_CHORD_E2E_GGUF=/tmp/m/1b.gguf timeout 60 $C/cuda_e2e --test-threads=1 --nocapture --skip smollm2 --skip gemma3 > $L/e2e.log 2>&1; stamp "e2e rc=$?"
grep -E "test result|FAIL|panicked|greedy tokens|steps|bound" $L/e2e.log | cut -c1-200 | tail -14
wait $WARM; wait $GEN; stamp "models made, base warm"
RUNS=${RUNS:-new base none gate flash new base none gate flash}
TIMING=${TIMING:-new base none gate flash}
bin_of() { if [ "$1" = base ]; then echo $C/wasm-chord-base; else echo $C/wasm-chord; fi; }
q8_of() { case $1 in none|gate|flash) echo $1 ;; *) echo all ;; esac; }
run() { # shape mode prompt
  local bin=$(bin_of $2)
  WASM_CHORD_CUDA_Q8_OUT=$(q8_of $2) timeout 40 $bin bench -m /tmp/m/$1.gguf --backend cuda -p $3 -n 128 -r 3 --json > $L/$1.p$3.$2.json 2> $L/$1.p$3.$2.log
  cat $L/$1.p$3.$2.json >> $L/$1.p$3.$2.all
  stamp "$1 p$3 $2: $(grep -o '"pp".*' $L/$1.p$3.$2.json)"
}
for s in 1b 7b; do
  for m in $RUNS; do left $LIMIT && run $s $m 0; done
done
for s in 1b 7b; do
  for m in $TIMING; do
    left $(( LIMIT + 20 )) || break
    WASM_CHORD_CUDA_Q8_OUT=$(q8_of $m) WASM_CHORD_STEP_TIMING=1 RUST_LOG=wasm_chord_cuda=info timeout 30 $(bin_of $m) bench -m /tmp/m/$s.gguf --backend cuda -p 0 -n 128 -r 1 > $L/$s.$m.timing.json 2> $L/$s.$m.timing.log
    grep "decode step timing" $L/$s.$m.timing.log | tail -1 | sed "s/^.*timing/$s $m: timing/"
  done
done
for s in 1b 7b; do
  for m in new base; do left $(( LIMIT - 10 )) && run $s $m 512; done
done
stamp done
cp $C/fuse4.sh $L/ 2>/dev/null
tar czf $OUT/all.tgz -C $L .
python3 - $L <<'PY'
import json, sys, os
L = sys.argv[1]
def runs(n):
    try: return [json.loads(l) for l in open(os.path.join(L, n)) if l.strip()]
    except Exception: return []
modes = ["base", "new", "none", "gate", "flash"]
print("| shape | prompt | test | " + " | ".join(f"{m} t/s" for m in modes) + " | new / base (best) |")
print("|---|---|---|" + "---|" * (len(modes) + 1))
for s in ["1b", "7b"]:
    for p in ["0", "512"]:
        for t in ["tg"] + (["pp"] if p == "512" else []):
            v = {m: [r[t]["tok_s"] for r in runs(f"{s}.p{p}.{m}.all")] for m in modes}
            if not v["new"]: continue
            ratio = max(v["new"]) / max(v["base"]) if v["base"] else float("nan")
            f = lambda xs: " / ".join(f"{x:.1f}" for x in xs)
            name = "tg128" if t == "tg" else f"pp{p}"
            print(f"| {s} | {p} | {name} | " + " | ".join(f(v[m]) for m in modes) + f" | {ratio:.3f} |")
PY
