#!/bin/bash
# cuda-mmvq call 1 (H100): op tests, the bandwidth bench (f32 vs int8 kernels, int8 variants),
# the end-to-end test (graphs), ncu of the int8 q4_K kernel, a 1B end-to-end tg before/after.
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:/usr/lib/x86_64-linux-gnu:$LD_LIBRARY_PATH WASM_CHORD_REQUIRE_GPU=1 NCCL_NVLS_ENABLE=0
D=.device-carry/cuda-mmvq
rm -f $D/inc && ln -s /usr/local/cuda/include $D/inc
export WASM_CHORD_CUDA_INCLUDE=$D/inc WASM_CHORD_KERNEL_CACHE=$D/kcache
nvidia-smi --query-gpu=name,driver_version --format=csv > $OUT/gpu.txt 2>&1; cat $OUT/gpu.txt
T0=$(date +%s); n0=$(ls $D/kcache | wc -l)
timeout 90 $D/ops --test-threads=1 --nocapture > $OUT/ops.log 2>&1; echo "ops rc=$? $(( $(date +%s) - T0 ))s"
echo "kernel cache entries: $n0 -> $(ls $D/kcache | wc -l)"
timeout 90 $D/matvec_bandwidth 4096x4096 11008x4096 4096x11008 16384x4096 --variants > $OUT/matvec.log 2>&1; echo "bench rc=$? $(( $(date +%s) - T0 ))s"
timeout 60 $D/cuda_e2e --test-threads=1 --nocapture > $OUT/e2e.log 2>&1; echo "e2e rc=$? $(( $(date +%s) - T0 ))s"
timeout 25 /usr/local/cuda/bin/ncu --clock-control none -k regex:"^mmvq_q4_K\$" -c 2 --section SpeedOfLight --section WarpStateStats --section Occupancy --section MemoryWorkloadAnalysis $D/matvec_bandwidth 4096x4096 16384x4096 --types q4_K > $OUT/ncu_q4_K.txt 2>&1
echo "ncu rc=$? $(( $(date +%s) - T0 ))s"
grep -E "DRAM Throughput|Duration|Issue Slots Busy|Achieved Occupancy|Registers Per|L1/TEX Hit|Mem Busy" $OUT/ncu_q4_K.txt
if [ $(( $(date +%s) - T0 )) -lt 170 ]; then
  timeout 60 $D/wasm-chord gen-model --shape 1b --quant q4_k_m -o /tmp/m1b.gguf > $OUT/tg1b.log 2>&1
  for v in 1 0; do
    WASM_CHORD_CUDA_F32_MATVEC=$v timeout 40 $D/wasm-chord bench -m /tmp/m1b.gguf --backend cuda -p 512 -n 128 -r 3 >> $OUT/tg1b.log 2>&1
    echo "1b f32_matvec=$v rc=$? $(( $(date +%s) - T0 ))s"
  done
fi
echo "total $(( $(date +%s) - T0 ))s"
grep -E "test result|FAILED|panicked|over budget" $OUT/ops.log | cut -c1-400
grep -E "int8 NMSE" $OUT/ops.log | sort -t' ' -k7 -g | tail -4
grep -E "test result|FAILED|panicked|max \|CUDA" $OUT/e2e.log | cut -c1-300
tail -12 $OUT/tg1b.log
cat $OUT/matvec.log | cut -c1-250
