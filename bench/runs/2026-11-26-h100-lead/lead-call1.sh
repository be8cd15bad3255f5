#!/usr/bin/env bash
# Lead's device call 1: assemble the shuttled real models, build llama.cpp CUDA in the background,
# run op tests + end-to-end (real models), then bench 1b/7b/13b against llama.cpp.
set -uo pipefail
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-} NCCL_NVLS_ENABLE=0
C=.device-carry/cuda
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee $OUT/gpu.txt
mkdir -p /tmp/models
head -c 98362432 /tmp/blob > /tmp/models/SmolLM2-135M-Instruct.Q4_1.gguf
tail -c +98362433 /tmp/blob > /tmp/models/gemma-3-270m-q4_k_m.gguf
sha256sum /tmp/models/*.gguf
mkdir -p /tmp/llsrc && tar xzf .device-carry/llama-src.tgz -C /tmp/llsrc
( cmake -S /tmp/llsrc -B /tmp/llama-build-cuda -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_CUDA=ON \
    -DCMAKE_CUDA_ARCHITECTURES=90a -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
    -DLLAMA_BUILD_SERVER=OFF && time cmake --build /tmp/llama-build-cuda --target llama-bench -j 14 ) > /tmp/llbuild.log 2>&1 &
BPID=$!
t0=$(date +%s)
bash $C/cuda-e2e.sh $C /tmp/models 2>&1 | tee $OUT/e2e.log | grep -E "test result|passed|FAILED|panicked|greedy|max|SKIP|logit" | tail -40
echo "e2e took $(( $(date +%s) - t0 )) s"
wait $BPID; echo "llama build rc=$? after $(( $(date +%s) - t0 )) s"; tail -3 /tmp/llbuild.log
cp /tmp/llbuild.log $OUT/ 2>/dev/null
WASM_CHORD_BIN=$PWD/$C/wasm-chord LLAMA_BENCH=/tmp/llama-build-cuda/bin/llama-bench bash $C/bench-cuda.sh -m /tmp/m -s "1b 7b 13b" -p 512 -n 128 -r 3 -o /tmp/bench1 2>&1 | tail -25
tar czf $OUT/bench1.tgz -C /tmp bench1
