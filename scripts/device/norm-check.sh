#!/usr/bin/env bash
# rms_norm_vec4 (branch cuda-step-norm) on a GPU machine: the op tests, then tg before/after.
# C holds: ops (this branch's tests/ops.rs binary), wasm-chord (this branch), wasm-chord-step
# (branch cuda-step, the baseline). Run from the repository root; table last.
set -uo pipefail
C=${C:-.device-carry/cuda-step-norm}
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-} WASM_CHORD_REQUIRE_GPU=1 NCCL_NVLS_ENABLE=0
mkdir -p /tmp/m "${OUT:-/tmp/out}"
for s in 1b 7b; do [ -s /tmp/m/$s.gguf ] || $C/wasm-chord gen-model --shape $s --quant q4_k_m -o /tmp/m/$s.gguf > /dev/null; done
$C/ops --test-threads=1 rms_norm 2>&1 | grep -E "^test |test result"
for s in 1b 7b; do
  for b in wasm-chord-step wasm-chord wasm-chord-step wasm-chord; do
    echo "$s $b: $($C/$b bench -m /tmp/m/$s.gguf --backend cuda -p 0 -n 128 -r 3 --json)"
  done
done
