#!/bin/bash
# cuda-kq call 1 (H100): ops + matvec_variants + cuda_e2e (1B) on the merged repack; bandwidth
# bench q4_K/q6_K new (with candidate columns) vs main's binary; tiny shapes (fixed latency);
# ncu of one q4_K launch (shipped and header-load candidate); 7B tg128 main vs new.
# (Recreated after the call from the same text: the carried copy was replaced by run2.sh.)
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:/usr/lib/x86_64-linux-gnu:$LD_LIBRARY_PATH WASM_CHORD_REQUIRE_GPU=1 NCCL_NVLS_ENABLE=0
D=.device-carry/cuda-kq
rm -f $D/inc && ln -s /usr/local/cuda/include $D/inc
export WASM_CHORD_CUDA_INCLUDE=$D/inc WASM_CHORD_KERNEL_CACHE=$D/kcache
cp $D/run1.sh $OUT/
T0=$(date +%s); el() { echo $(( $(date +%s) - T0 )); }
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > $OUT/gpu.txt 2>&1; cat $OUT/gpu.txt
mkdir -p /tmp/m
( $D/wasm-chord gen-model --shape 1b --quant q4_k_m -o /tmp/m/1b.gguf; $D/wasm-chord gen-model --shape 7b --quant q4_k_m -o /tmp/m/7b.gguf ) > $OUT/gen.log 2>&1 &
GEN=$!
n0=$(ls $D/kcache | wc -l)
timeout 80 $D/ops --test-threads=1 --nocapture > $OUT/ops.log 2>&1; echo "ops rc=$? $(el)s"
timeout 40 $D/matvec_variants --nocapture > $OUT/variants.log 2>&1; echo "variants rc=$? $(el)s"
echo "kernel cache entries: $n0 -> $(ls $D/kcache | wc -l)"
S="4096x4096 11008x4096 4096x11008 16384x4096"
timeout 50 $D/matvec_bandwidth $S --variants --types q4_K,q6_K > $OUT/matvec.new.log 2>&1; echo "bench new rc=$? $(el)s"
timeout 25 $D/matvec_bandwidth-base $S --types q4_K,q6_K > $OUT/matvec.base.log 2>&1; echo "bench base rc=$? $(el)s"
timeout 25 $D/matvec_bandwidth 128x256 1024x4096 --types q4_0,q8_0,q4_K,q6_K > $OUT/matvec.tiny.log 2>&1; echo "bench tiny rc=$? $(el)s"
NCU="ncu --clock-control none --launch-count 1 --section SpeedOfLight --section Occupancy --section LaunchStats --section WarpStateStats --section MemoryWorkloadAnalysis"
timeout 40 $NCU --kernel-name mmvq_q4_K $D/matvec_bandwidth 4096x4096 --types q4_K > $OUT/ncu.q4_K.log 2>&1; echo "ncu1 rc=$? $(el)s"
timeout 40 $NCU --kernel-name q_w4r2u2_q4_K_h $D/matvec_bandwidth 4096x4096 --types q4_K --variants > $OUT/ncu.q4_K_h.log 2>&1; echo "ncu2 rc=$? $(el)s"
wait $GEN; echo "models $(el)s"
WASM_CHORD_E2E_GGUF=/tmp/m/1b.gguf timeout 45 $D/cuda_e2e --test-threads=1 --nocapture --skip smollm2 --skip gemma3 > $OUT/e2e.log 2>&1; echo "e2e rc=$? $(el)s"
for b in base new; do
  bin=$D/wasm-chord; [ $b = base ] && bin=$D/wasm-chord-base
  timeout 30 $bin bench -m /tmp/m/7b.gguf --backend cuda -p 0 -n 128 -r 3 --json > $OUT/7b.$b.json 2> $OUT/7b.$b.log; echo "7b $b rc=$? $(el)s: $(cat $OUT/7b.$b.json)"
done
echo "total $(el)s"
