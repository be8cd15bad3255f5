#!/bin/bash
# cuda-kq call 2 (H100): q4_K header-load decode shipped + Q6_K repack. Tests (ops,
# matvec_variants incl. the int8 candidates, cuda_e2e 1B); bandwidth bench q4_K/q6_K new (with
# candidate columns and the old q4_K decode as row q4_K_b) vs main's binary; ncu of q4_K/q6_K at
# 4096x4096 and 128x256 (kernel duration at tiny size); 7B tg128 main vs new. Logs in all.tgz.
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:/usr/lib/x86_64-linux-gnu:$LD_LIBRARY_PATH WASM_CHORD_REQUIRE_GPU=1 NCCL_NVLS_ENABLE=0
D=.device-carry/cuda-kq
rm -f $D/inc && ln -s /usr/local/cuda/include $D/inc
export WASM_CHORD_CUDA_INCLUDE=$D/inc WASM_CHORD_KERNEL_CACHE=$D/kcache
L=/tmp/logs; mkdir -p $L; cp $D/run2.sh $L/
T0=$(date +%s); el() { echo $(( $(date +%s) - T0 )); }
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > $L/gpu.txt 2>&1; cat $L/gpu.txt
mkdir -p /tmp/m
( $D/wasm-chord gen-model --shape 1b --quant q4_k_m -o /tmp/m/1b.gguf; $D/wasm-chord gen-model --shape 7b --quant q4_k_m -o /tmp/m/7b.gguf ) > $L/gen.log 2>&1 &
GEN=$!
n0=$(ls $D/kcache | wc -l)
timeout 80 $D/ops --test-threads=1 --nocapture > $L/ops.log 2>&1; echo "ops rc=$? $(el)s"
timeout 60 $D/matvec_variants --nocapture > $L/variants.log 2>&1; echo "variants rc=$? $(el)s"
echo "kernel cache entries: $n0 -> $(ls $D/kcache | wc -l)"
S="4096x4096 11008x4096 4096x11008 16384x4096"
timeout 60 $D/matvec_bandwidth $S --variants --types q4_K,q6_K > $L/matvec.new.log 2>&1; echo "bench new rc=$? $(el)s"
timeout 25 $D/matvec_bandwidth-base $S --types q4_K,q6_K > $L/matvec.base.log 2>&1; echo "bench base rc=$? $(el)s"
NCU="ncu --clock-control none --section SpeedOfLight --section Occupancy --section LaunchStats --section WarpStateStats"
timeout 30 $NCU --kernel-name regex:'^mmvq_q(4_K|6_K_r)$' --launch-count 2 $D/matvec_bandwidth 4096x4096 --types q4_K,q6_K > $L/ncu.4096.log 2>&1; echo "ncu1 rc=$? $(el)s"
timeout 30 $NCU --kernel-name regex:'^(mmvq_q(4_0|8_0|4_K|6_K_r)|quantize_q8)$' --launch-count 5 $D/matvec_bandwidth 128x256 --types q4_0,q8_0,q4_K,q6_K > $L/ncu.tiny.log 2>&1; echo "ncu2 rc=$? $(el)s"
wait $GEN; echo "models $(el)s"
WASM_CHORD_E2E_GGUF=/tmp/m/1b.gguf timeout 45 $D/cuda_e2e --test-threads=1 --nocapture --skip smollm2 --skip gemma3 > $L/e2e.log 2>&1; echo "e2e rc=$? $(el)s"
for b in base new base new; do
  bin=$D/wasm-chord; [ $b = base ] && bin=$D/wasm-chord-base
  timeout 30 $bin bench -m /tmp/m/7b.gguf --backend cuda -p 0 -n 128 -r 3 --json >> $L/7b.$b.json 2>> $L/7b.$b.log; echo "7b $b rc=$? $(el)s: $(tail -1 $L/7b.$b.json | grep -o '"tg".*')"
done
echo "total $(el)s"
tar czf $OUT/all.tgz -C $L .
grep -E "test result|FAILED|panicked|over budget|off the shipped" $L/ops.log $L/variants.log | cut -c1-300 | tail -8
grep -E "test result|FAILED|panicked|greedy tokens" $L/e2e.log | cut -c1-120 | head -3
grep -E "^  [a-z_0-9]+|Duration|DRAM Throughput|Achieved Occupancy|Registers Per" $L/ncu.*.log | cut -c1-120
grep -E "copy|^matrix|q4_K|q6_K" $L/matvec.*.log | cut -c1-400
