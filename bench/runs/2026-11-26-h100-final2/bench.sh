#!/usr/bin/env bash
# Lead's final bench call: waits for start.sh's llama.cpp build and gen-model files, then
# scripts/bench-cuda.sh (llama-bench -ngl 99 -fa 1 vs wasm-chord --backend cuda) on 1b/7b/13b.
set -uo pipefail
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-} NCCL_NVLS_ENABLE=0
for i in $(seq 1 90); do [ -f /tmp/llbuild.done ] && [ -f /tmp/gen.done ] && break; sleep 5; done
cat /tmp/llbuild.done /tmp/gen.done; tail -5 /tmp/llbuild.log > $OUT/llama-build-tail.log; cp /tmp/gen.log $OUT/gen.log
WASM_CHORD_BIN=/tmp/final/wasm-chord LLAMA_BENCH=/tmp/llama-build-cuda/bin/llama-bench bash /tmp/final/bench-cuda.sh -m /tmp/m -s "1b 7b 13b" -p 512 -n 128 -r 3 -o /tmp/bench > $OUT/bench.log 2>&1
echo "bench rc=$?"; tar czf $OUT/bench-files.tgz -C /tmp bench
tail -14 $OUT/bench.log
