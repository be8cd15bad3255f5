#!/bin/bash
# cuda-kq call 3 (H100): cuda-kq merged with main 6c93573 (PDL). Tests (ops, matvec_variants,
# flash, cuda_e2e 1B); bandwidth bench q4_K/q6_K new (candidate columns) vs main 6c93573's
# binary; 7B Q4_K_M pp512/tg128 main vs new, twice. Logs in all.tgz.
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:/usr/lib/x86_64-linux-gnu:$LD_LIBRARY_PATH WASM_CHORD_REQUIRE_GPU=1 NCCL_NVLS_ENABLE=0
D=.device-carry/cuda-kq
rm -f $D/inc && ln -s /usr/local/cuda/include $D/inc
export WASM_CHORD_CUDA_INCLUDE=$D/inc WASM_CHORD_KERNEL_CACHE=$D/kcache
L=/tmp/logs; mkdir -p $L; cp $D/run3.sh $L/
T0=$(date +%s); el() { echo $(( $(date +%s) - T0 )); }
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > $L/gpu.txt 2>&1; cat $L/gpu.txt
mkdir -p /tmp/m
( $D/wasm-chord gen-model --shape 1b --quant q4_k_m -o /tmp/m/1b.gguf; $D/wasm-chord gen-model --shape 7b --quant q4_k_m -o /tmp/m/7b.gguf ) > $L/gen.log 2>&1 &
GEN=$!
n0=$(ls $D/kcache | wc -l)
timeout 80 $D/ops --test-threads=1 --nocapture > $L/ops.log 2>&1; echo "ops rc=$? $(el)s"
timeout 60 $D/matvec_variants --nocapture > $L/variants.log 2>&1; echo "variants rc=$? $(el)s"
timeout 60 $D/flash --test-threads=1 --nocapture > $L/flash.log 2>&1; echo "flash rc=$? $(el)s"
echo "kernel cache entries: $n0 -> $(ls $D/kcache | wc -l)"
S="4096x4096 11008x4096 4096x11008 16384x4096"
timeout 60 $D/matvec_bandwidth $S --variants --types q4_K,q6_K > $L/matvec.new.log 2>&1; echo "bench new rc=$? $(el)s"
timeout 25 $D/matvec_bandwidth-base $S --types q4_K,q6_K > $L/matvec.base.log 2>&1; echo "bench base rc=$? $(el)s"
wait $GEN; echo "models $(el)s"
WASM_CHORD_E2E_GGUF=/tmp/m/1b.gguf timeout 45 $D/cuda_e2e --test-threads=1 --nocapture --skip smollm2 --skip gemma3 > $L/e2e.log 2>&1; echo "e2e rc=$? $(el)s"
for b in base new base new; do
  bin=$D/wasm-chord; [ $b = base ] && bin=$D/wasm-chord-base
  timeout 40 $bin bench -m /tmp/m/7b.gguf --backend cuda -p 512 -n 128 -r 3 --json >> $L/7b.$b.json 2>> $L/7b.$b.log; echo "7b $b rc=$? $(el)s: $(tail -1 $L/7b.$b.json | grep -o '"pp".*')"
done
echo "total $(el)s"
tar czf $OUT/all.tgz -C $L .
grep -E "test result|FAILED|panicked|over budget|off the shipped" $L/ops.log $L/variants.log $L/flash.log | cut -c1-300 | tail -8
grep -E "test result|FAILED|panicked|greedy tokens" $L/e2e.log | cut -c1-120 | head -3
grep -E "copy|^matrix|q4_K|q6_K" $L/matvec.*.log | cut -c1-160
