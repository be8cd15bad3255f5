#!/usr/bin/env bash
# Lead's device call 2: decode/prefill at depth 8192 and 32768 on the 7B Q4_K_M shape, f16 and
# q8_0 KV, ours vs llama.cpp (built in call 1 on this warm machine), peak GPU memory at 32k.
set -uo pipefail
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-} NCCL_NVLS_ENABLE=0
C=.device-carry/cuda; W=$PWD/$C/wasm-chord; LB=/tmp/llama-build-cuda/bin/llama-bench
F=/tmp/m/gen-7b-q4_k_m-c33792.gguf
[ -s $F ] || $W gen-model --shape 7b --quant q4_k_m --ctx 33792 -o $F > /dev/null
for kv in f16 q8_0; do for d in 8192 32768; do
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 100 > /tmp/mem-$kv-$d.txt & MP=$!
  timeout 200 $W bench -m $F --backend cuda -c $((d+640)) --kv-type $kv -d $d -p 512 -n 128 -r 2 --json > $OUT/wc-$kv-$d.json 2> /tmp/wc-$kv-$d.log
  echo "wasm-chord kv=$kv d=$d rc=$? peak_mem_MiB=$(sort -n /tmp/mem-$kv-$d.txt | tail -1)"; kill $MP
  cat $OUT/wc-$kv-$d.json; echo
done; done
if [ -x $LB ]; then
  timeout 240 $LB -m $F -ngl 99 -fa 1 -p 512 -n 128 -r 2 -d 8192,32768 -o md 2>/dev/null | tee $OUT/llama-f16.md
  timeout 200 $LB -m $F -ngl 99 -fa 1 -ctk q8_0 -ctv q8_0 -p 512 -n 128 -r 2 -d 8192,32768 -o md 2>/dev/null | tee $OUT/llama-q8_0.md
fi
