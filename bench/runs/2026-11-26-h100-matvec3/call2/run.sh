#!/bin/bash
# cuda-matvec2 call 2 (H100): op tests (matmul first), the variant test, the old bench's shipped
# kernels (baseline, same machine), the new bench with variants, ncu of q4_K shipped vs biased.
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:/usr/lib/x86_64-linux-gnu:$LD_LIBRARY_PATH WASM_CHORD_REQUIRE_GPU=1 NCCL_NVLS_ENABLE=0
D=.device-carry/cuda-matvec2; O=.device-carry/cuda-kernels
for d in $D $O; do rm -f $d/inc && ln -s /usr/local/cuda/include $d/inc; done
nvidia-smi --query-gpu=name,driver_version --format=csv > $OUT/gpu.txt 2>&1; cat $OUT/gpu.txt
T0=$(date +%s)
export WASM_CHORD_CUDA_INCLUDE=$D/inc WASM_CHORD_KERNEL_CACHE=$D/kcache
n0=$(ls $D/kcache | wc -l)
timeout 60 $D/ops --test-threads=1 --nocapture mat > $OUT/ops.log 2>&1; echo "ops mat* rc=$? $(( $(date +%s) - T0 ))s"
timeout 60 $D/ops --test-threads=1 --nocapture --skip mat >> $OUT/ops.log 2>&1; echo "ops rest rc=$? $(( $(date +%s) - T0 ))s"
grep -E "test result|FAILED|panicked|over budget" $OUT/ops.log | cut -c1-300
timeout 60 $D/matvec_variants --nocapture > $OUT/variants_test.log 2>&1; echo "variants test rc=$? $(( $(date +%s) - T0 ))s"
grep -E "test result|FAILED|panicked|over budget" $OUT/variants_test.log | cut -c1-600
echo "kernel cache entries: $n0 -> $(ls $D/kcache | wc -l)"
WASM_CHORD_CUDA_INCLUDE=$O/inc WASM_CHORD_KERNEL_CACHE=$O/kcache timeout 40 $D/matvec_bandwidth_old > $OUT/matvec_old.log 2>&1; echo "old bench rc=$? $(( $(date +%s) - T0 ))s"
timeout 100 $D/matvec_bandwidth --variants > $OUT/matvec.log 2>&1; echo "bench rc=$? $(( $(date +%s) - T0 ))s"
for k in matvec_q4_K bi_ship_q4_K; do
  timeout 25 /usr/local/cuda/bin/ncu --clock-control none -k regex:"^$k\$" -c 1 --section SpeedOfLight --section WarpStateStats --section Occupancy --section ComputeWorkloadAnalysis $D/matvec_bandwidth 16384x4096 --types q4_K --variants > $OUT/ncu_$k.txt 2>&1
  echo "$k"; grep -E "DRAM Throughput|Duration|Issue Slots Busy|Achieved Occupancy|Registers Per" $OUT/ncu_$k.txt
done
echo "total $(( $(date +%s) - T0 ))s"
grep -E "^variant" $OUT/variants_test.log | sort -k4 -g | tail -8
cat $OUT/matvec_old.log | grep -E "copy|matrix|q4_K|q8_0|q4_0"
cat $OUT/matvec.log
