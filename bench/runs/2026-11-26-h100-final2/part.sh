#!/usr/bin/env bash
# Lead's shuttle call: append one part of the real models to /tmp/blob; with E2E=1, assemble the
# models and run cuda_e2e with them (binaries from start.sh in /tmp/final).
set -uo pipefail
P="$1"
cat ".device-carry/shuttle/$P" >> /tmp/blob && ls -l /tmp/blob
if [ "${E2E:-0}" = 1 ]; then
  export LD_LIBRARY_PATH=/usr/local/cuda/lib64:/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-} NCCL_NVLS_ENABLE=0 WASM_CHORD_REQUIRE_GPU=1
  mkdir -p /tmp/models
  head -c 98362432 /tmp/blob > /tmp/models/SmolLM2-135M-Instruct.Q4_1.gguf
  tail -c +98362433 /tmp/blob > /tmp/models/gemma-3-270m-q4_k_m.gguf
  sha256sum /tmp/models/*.gguf | tee $OUT/sha256.txt
  nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/gpu.txt
  WASM_CHORD_E2E_GGUF=/tmp/wasm-chord-e2e/gen-1b-q4_k_m.gguf WASM_CHORD_MODELS=/tmp/models \
    WASM_CHORD_GOLDEN_DIR=$PWD/crates/wasm-chord-runtime/tests/golden/logits \
    /tmp/final/cuda_e2e --test-threads=1 --nocapture > $OUT/e2e-real-models.log 2>&1; echo "e2e rc=$?"
  grep -E "test result|greedy|panicked|worst|FAILED" $OUT/e2e-real-models.log | cut -c1-300
fi
