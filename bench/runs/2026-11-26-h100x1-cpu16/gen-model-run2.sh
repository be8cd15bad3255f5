#!/usr/bin/env bash
# Device run 2: llama-quantize vs ours on a 1B f16 input; 13B and 70B gen-model timings; llama-bench on 70B.
set -x
cd "$(dirname "$0")"
export LD_LIBRARY_PATH=$PWD/lib
W=./wasm-chord; D=/tmp/wc; mkdir -p $D
[ -e $D/1b-f16.gguf ] || $W gen-model -o $D/1b-f16.gguf --shape 1b -q f16 2>&1 | tail -1
/usr/bin/time -f "ours quantize f16->q4_k_m 16t: %e s wall %U s user" $W quantize $D/1b-f16.gguf $D/1b-ours.gguf q4_k_m 2>&1 | tail -2
/usr/bin/time -f "llama-quantize f16->Q4_K_M 16t: %e s wall %U s user" ./llama-quantize $D/1b-f16.gguf $D/1b-llama.gguf Q4_K_M 16 2>&1 | tail -3
python3 - <<'PY'
import struct,sys
# compare tensor data regions byte for byte (headers differ only in metadata order)
def tensors(p):
    import mmap
    f=open(p,'rb'); m=mmap.mmap(f.fileno(),0,access=mmap.ACCESS_READ); return m
a=tensors('/tmp/wc/1b-ours.gguf'); b=tensors('/tmp/wc/1b-llama.gguf')
print("sizes", len(a), len(b), "last 600 MB equal:", a[-600_000_000:]==b[-600_000_000:])
PY
rm -f $D/1b*.gguf
/usr/bin/time -f "13b q4_k_m: %e s wall" $W gen-model -o $D/13b.gguf --shape 13b -q q4_k_m 2>&1 | tail -2
rm -f $D/13b.gguf
/usr/bin/time -f "70b q4_k_m: %e s wall, max RSS %M KB" $W gen-model -o $D/70b.gguf --shape 70b -q q4_k_m 2>&1 | tail -2
$W info $D/70b.gguf | grep -E "total:|^  (q|f)"
timeout 280 ./llama-bench -m $D/70b.gguf -p 8 -n 4 -r 1 -t 16 2>&1 | tail -4
rm -f $D/70b.gguf
