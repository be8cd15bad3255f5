#!/usr/bin/env bash
# Lead's final call 1: binaries to /tmp/final; llama.cpp's CUDA build and the gen-model files run
# on in the background (setsid: they outlive this call on the warm machine); the op, flash,
# matvec-variant and synthetic end-to-end tests run now.
set -uo pipefail
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-} NCCL_NVLS_ENABLE=0
C=.device-carry/final
mkdir -p /tmp/final /tmp/m /tmp/llsrc && cp -a $C/. /tmp/final/
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem --format=csv,noheader | tee $OUT/gpu.txt
tar xzf .device-carry/llama-src.tgz -C /tmp/llsrc
date +%s > /tmp/t0
setsid bash -c 'cmake -S /tmp/llsrc -B /tmp/llama-build-cuda -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_CUDA=ON \
    -DCMAKE_CUDA_ARCHITECTURES=90a -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
    -DLLAMA_BUILD_SERVER=OFF && time cmake --build /tmp/llama-build-cuda --target llama-bench -j 12; echo "rc=$? at $(( $(date +%s) - $(cat /tmp/t0) )) s" > /tmp/llbuild.done' > /tmp/llbuild.log 2>&1 < /dev/null &
setsid bash -c 'for s in 1b 7b 13b; do /tmp/final/wasm-chord gen-model --shape $s --quant q4_k_m -o /tmp/m/gen-$s-q4_k_m.gguf; done; echo "done at $(( $(date +%s) - $(cat /tmp/t0) )) s" > /tmp/gen.done' > /tmp/gen.log 2>&1 < /dev/null &
WASM_CHORD_REQUIRE_GPU=1 bash /tmp/final/cuda-e2e.sh /tmp/final /nonexistent > $OUT/e2e-synthetic.log 2>&1; echo "tests rc=$? after $(( $(date +%s) - $(cat /tmp/t0) )) s"
grep -E "^test .*(FAILED|ok)$|test result|panicked" $OUT/e2e-synthetic.log | grep -v " ok$" | head -20
grep -E "greedy|int8|replay" $OUT/e2e-synthetic.log | cut -c1-200 | head -10
ls /tmp/*.done 2>/dev/null; tail -2 /tmp/llbuild.log
