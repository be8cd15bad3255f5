#!/usr/bin/env bash
set -uo pipefail
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-} NCCL_NVLS_ENABLE=0 WASM_CHORD_REQUIRE_GPU=1
C=.device-carry/cuda3
nvidia-smi --query-gpu=name --format=csv,noheader
bash $C/cuda-e2e.sh $C /nonexistent > $OUT/e2e.log 2>&1; echo "e2e rc=$?"
grep -E "test result|greedy|panicked|relative|SKIP" $OUT/e2e.log | cut -c1-200
timeout 200 $C/flash --test-threads=1 > $OUT/flash.log 2>&1; echo "flash rc=$?"; grep -E "test result|FAILED|panicked" $OUT/flash.log
