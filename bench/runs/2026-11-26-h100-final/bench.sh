#!/usr/bin/env bash
# Lead's final call A: llama.cpp CUDA build (background) while the op tests and the synthetic
# end-to-end tests run; then wasm-chord vs llama-bench on gen-model 1b/7b/13b q4_k_m, same machine.
set -uo pipefail
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-} NCCL_NVLS_ENABLE=0
C=.device-carry/final
mkdir -p /tmp/final && cp -a $C/. /tmp/final/
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem --format=csv,noheader | tee $OUT/gpu.txt
mkdir -p /tmp/llsrc && tar xzf .device-carry/llama-src.tgz -C /tmp/llsrc
t0=$(date +%s)
( cmake -S /tmp/llsrc -B /tmp/llama-build-cuda -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_CUDA=ON \
    -DCMAKE_CUDA_ARCHITECTURES=90a -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
    -DLLAMA_BUILD_SERVER=OFF && time cmake --build /tmp/llama-build-cuda --target llama-bench -j 13 ) > /tmp/llbuild.log 2>&1 &
BPID=$!
mkdir -p /tmp/m
for s in 1b 7b 13b; do /tmp/final/wasm-chord gen-model --shape $s --quant q4_k_m -o /tmp/m/gen-$s-q4_k_m.gguf > $OUT/gen-$s.log 2>&1; done
echo "gen-model done after $(( $(date +%s) - t0 )) s"
# op tests + synthetic e2e (real models come in the later calls)
WASM_CHORD_REQUIRE_GPU=1 bash /tmp/final/cuda-e2e.sh /tmp/final /nonexistent > $OUT/e2e-synthetic.log 2>&1; echo "e2e (no real models) rc=$?"
grep -E "test result|FAILED|panicked" $OUT/e2e-synthetic.log | head -20
echo "tests done after $(( $(date +%s) - t0 )) s"
wait $BPID; echo "llama build rc=$? after $(( $(date +%s) - t0 )) s"; tail -3 /tmp/llbuild.log; tail -5 /tmp/llbuild.log > $OUT/llama-build-tail.log
WASM_CHORD_BIN=/tmp/final/wasm-chord LLAMA_BENCH=/tmp/llama-build-cuda/bin/llama-bench bash /tmp/final/bench-cuda.sh -m /tmp/m -s "1b 7b 13b" -p 512 -n 128 -r 3 -o $OUT/bench > $OUT/bench.log 2>&1
echo "bench done after $(( $(date +%s) - t0 )) s"
tail -12 $OUT/bench.log
