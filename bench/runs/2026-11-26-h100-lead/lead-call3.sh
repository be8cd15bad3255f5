#!/usr/bin/env bash
# Lead's device call 3: final binaries (commit 1d490d5): op tests + real-model e2e + flash tests.
set -uo pipefail
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-} NCCL_NVLS_ENABLE=0 WASM_CHORD_REQUIRE_GPU=1
C=.device-carry/cuda2
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/gpu.txt
mkdir -p /tmp/models
head -c 98362432 /tmp/blob > /tmp/models/SmolLM2-135M-Instruct.Q4_1.gguf
tail -c +98362433 /tmp/blob > /tmp/models/gemma-3-270m-q4_k_m.gguf
sha256sum /tmp/models/*.gguf
bash $C/cuda-e2e.sh $C /tmp/models > $OUT/e2e.log 2>&1; echo "e2e rc=$?"
grep -E "test result|greedy|panicked|relative" $OUT/e2e.log | cut -c1-250
timeout 200 $C/flash --test-threads=1 > $OUT/flash.log 2>&1; echo "flash rc=$?"
grep -E "test result|FAILED|panicked" $OUT/flash.log
