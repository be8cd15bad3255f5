#!/bin/bash
# cuda-mmvq call 2 (H100): op tests, the bandwidth bench (f32 vs int8 kernels, same run), the
# end-to-end tests (graphs, int8 bound, a gen-model 1B file), tg before (WASM_CHORD_CUDA_F32_MATVEC=1:
# the previous kernels, no fusions) and after on gen-model 1B/7B/13B Q4_K_M files.
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:/usr/lib/x86_64-linux-gnu:$LD_LIBRARY_PATH WASM_CHORD_REQUIRE_GPU=1 NCCL_NVLS_ENABLE=0
D=.device-carry/cuda-mmvq
rm -f $D/inc && ln -s /usr/local/cuda/include $D/inc
export WASM_CHORD_CUDA_INCLUDE=$D/inc WASM_CHORD_KERNEL_CACHE=$D/kcache
nvidia-smi --query-gpu=name,driver_version --format=csv > $OUT/gpu.txt 2>&1; cat $OUT/gpu.txt
T0=$(date +%s); n0=$(ls $D/kcache | wc -l)
timeout 60 $D/ops --test-threads=1 --nocapture > $OUT/ops.log 2>&1; echo "ops rc=$? $(( $(date +%s) - T0 ))s"
echo "kernel cache entries: $n0 -> $(ls $D/kcache | wc -l)"
timeout 60 $D/matvec_bandwidth 4096x4096 11008x4096 4096x11008 16384x4096 > $OUT/matvec.log 2>&1; echo "bench rc=$? $(( $(date +%s) - T0 ))s"
timeout 30 $D/wasm-chord gen-model --shape 1b --quant q4_k_m -o /tmp/m1b.gguf > $OUT/gen.log 2>&1
WASM_CHORD_E2E_GGUF=/tmp/m1b.gguf timeout 90 $D/cuda_e2e --test-threads=1 --nocapture --skip smollm2 --skip gemma3 > $OUT/e2e.log 2>&1; echo "e2e rc=$? $(( $(date +%s) - T0 ))s"
for s in 1b 7b 13b; do
  [ $(( $(date +%s) - T0 )) -gt 200 ] && break
  [ -f /tmp/m$s.gguf ] || timeout 60 $D/wasm-chord gen-model --shape $s --quant q4_k_m -o /tmp/m$s.gguf >> $OUT/gen.log 2>&1
  for v in 1 0; do
    echo "== $s f32_matvec=$v" >> $OUT/tg.log
    WASM_CHORD_CUDA_F32_MATVEC=$v timeout 45 $D/wasm-chord bench -m /tmp/m$s.gguf --backend cuda -p 512 -n 128 -r 3 >> $OUT/tg.log 2>&1
    echo "$s f32_matvec=$v rc=$? $(( $(date +%s) - T0 ))s"
  done
  rm -f /tmp/m$s.gguf
done
if [ $(( $(date +%s) - T0 )) -lt 240 ]; then
  timeout 25 /usr/local/cuda/bin/ncu --clock-control none -k regex:"^mmvq_q4_K\$" -c 2 --section SpeedOfLight --section WarpStateStats --section Occupancy $D/matvec_bandwidth 4096x4096 16384x4096 --types q4_K > $OUT/ncu_q4_K.txt 2>&1
  grep -E "DRAM Throughput|Duration|Achieved Occupancy|Registers Per" $OUT/ncu_q4_K.txt
fi
echo "total $(( $(date +%s) - T0 ))s"
grep -E "test result|FAILED|panicked|over budget" $OUT/ops.log | cut -c1-400
grep -E "test result|FAILED|panicked|vs f32|max \|CUDA|greedy tokens|steps" $OUT/e2e.log | cut -c1-250
grep -E "==|tg128|pp512" $OUT/tg.log
cut -c1-130 $OUT/matvec.log
