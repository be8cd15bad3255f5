#!/bin/bash
# cuda-kernels, for the lead (one call, ~1 minute on an H100; binaries built at 14b6366): op tests with the per-type
# configurations (a6b9210), the matvec bench with the experimental barrier-free kernel (as_*
# columns, checked against the shipped kernel: "!" = mismatch), gemm, and ncu of q4_K.
# run with carry [".device-carry/cuda-kernels"], kind nvidia-h100-x1, timeout_s 300.
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:/usr/lib/x86_64-linux-gnu:$LD_LIBRARY_PATH WASM_CHORD_REQUIRE_GPU=1 NCCL_NVLS_ENABLE=0
D=.device-carry/cuda-kernels
rm -f $D/inc && ln -s /usr/local/cuda/include $D/inc
export WASM_CHORD_CUDA_INCLUDE=$D/inc WASM_CHORD_KERNEL_CACHE=$D/kcache
nvidia-smi --query-gpu=name,driver_version --format=csv > $OUT/gpu.txt 2>&1; cat $OUT/gpu.txt
n0=$(ls $D/kcache | wc -l); T0=$(date +%s)
timeout 100 $D/ops --test-threads=1 --nocapture > $OUT/ops.log 2>&1; echo "ops rc=$? $(( $(date +%s) - T0 ))s"
echo "kernel cache entries: $n0 -> $(ls $D/kcache | wc -l)"
grep -E "test result|FAILED|panicked|over budget" $OUT/ops.log | cut -c1-300
timeout 120 $D/matvec_bandwidth --variants > $OUT/matvec.log 2>&1; echo "matvec rc=$? $(( $(date +%s) - T0 ))s"
timeout 40 $D/gemm > $OUT/gemm.log 2>&1; echo "gemm rc=$? $(( $(date +%s) - T0 ))s"
for k in matvec_q4_K as_w4r2s3_q4_K; do
  timeout 30 /usr/local/cuda/bin/ncu --clock-control none -k regex:"^$k\$" -c 1 --section SpeedOfLight --section WarpStateStats --section Occupancy --section ComputeWorkloadAnalysis $D/matvec_bandwidth 16384x4096 --types q4_K --variants > $OUT/ncu_$k.txt 2>&1
  grep -E "^  [a-z0-9_]+ \(|DRAM Throughput|Duration|Issue Slots Busy|Achieved Occupancy" $OUT/ncu_$k.txt
done
tail -2 $OUT/gemm.log
cat $OUT/matvec.log
