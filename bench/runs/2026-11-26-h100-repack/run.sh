#!/bin/bash
# cuda-repack (H100): op tests, the bandwidth bench (q6_K: file layout `old` vs repacked `kern`;
# IPT variant columns q_*i2/i4), cuda_e2e on a gen-model 1B file, then 7B Q4_K_M tg/pp with
# main's binary (bcc487d, wasm-chord-base) and this branch's, back to back. Table last.
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:/usr/lib/x86_64-linux-gnu:$LD_LIBRARY_PATH WASM_CHORD_REQUIRE_GPU=1 NCCL_NVLS_ENABLE=0
D=.device-carry/cuda-repack
rm -f $D/inc && ln -s /usr/local/cuda/include $D/inc
export WASM_CHORD_CUDA_INCLUDE=$D/inc WASM_CHORD_KERNEL_CACHE=$D/kcache
cp $D/run.sh $OUT/
T0=$(date +%s); el() { echo $(( $(date +%s) - T0 )); }
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > $OUT/gpu.txt 2>&1; cat $OUT/gpu.txt
mkdir -p /tmp/m
( $D/wasm-chord gen-model --shape 1b --quant q4_k_m -o /tmp/m/1b.gguf; $D/wasm-chord gen-model --shape 7b --quant q4_k_m -o /tmp/m/7b.gguf ) > $OUT/gen.log 2>&1 &
GEN=$!
n0=$(ls $D/kcache | wc -l)
timeout 60 $D/ops --test-threads=1 --nocapture > $OUT/ops.log 2>&1; echo "ops rc=$? $(el)s"
echo "kernel cache entries: $n0 -> $(ls $D/kcache | wc -l)"
timeout 70 $D/matvec_bandwidth 4096x4096 11008x4096 4096x11008 16384x4096 --variants --types q4_0,q4_1,q5_0,q5_1,q8_0,q2_K,q3_K,q4_K,q5_K,q6_K,iq4_nl,iq4_xs > $OUT/matvec.log 2>&1; echo "bench rc=$? $(el)s"
wait $GEN; echo "models $(el)s"
WASM_CHORD_E2E_GGUF=/tmp/m/1b.gguf timeout 45 $D/cuda_e2e --test-threads=1 --nocapture --skip smollm2 --skip gemma3 > $OUT/e2e.log 2>&1; echo "e2e rc=$? $(el)s"
for b in base new; do
  bin=$D/wasm-chord; [ $b = base ] && bin=$D/wasm-chord-base
  timeout 30 $bin bench -m /tmp/m/7b.gguf --backend cuda -p 512 -n 128 -r 3 --json > $OUT/7b.$b.json 2> $OUT/7b.$b.log; echo "7b $b rc=$? $(el)s: $(cat $OUT/7b.$b.json)"
done
echo "total $(el)s"
grep -E "test result|FAILED|panicked|over budget|q6_K" $OUT/ops.log | cut -c1-300 | tail -20
grep -E "test result|FAILED|panicked|greedy tokens" $OUT/e2e.log | cut -c1-200
grep -E "copy|^matrix|q4_K|q6_K|q3_K|q2_K|iq4_xs|q5_K" $OUT/matvec.log | cut -c1-140
