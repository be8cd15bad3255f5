#!/usr/bin/env bash
# Lead's final call B (same warm machine as bench.sh: binaries in /tmp/final, models in /tmp/m):
# per-kernel profile of one decode step per shape (ncu: time and DRAM bytes per kernel, clocks and
# caches left alone), and the step timing (graph span on the GPU vs wall per token).
set -uo pipefail
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-} NCCL_NVLS_ENABLE=0
BW=${BW:-3006}
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/gpu-profile.txt
for s in 1b 7b 13b; do
  WASM_CHORD_STEP_TIMING=1 RUST_LOG=wasm_chord_cuda=info /tmp/final/wasm-chord bench -m /tmp/m/gen-$s-q4_k_m.gguf --backend cuda -p 0 -n 128 -r 2 > /tmp/$s.timing.json 2> /tmp/$s.timing.log
  grep "decode step timing" /tmp/$s.timing.log | tail -1 | sed "s/^/$s: /" | tee -a $OUT/step-timing.txt
done
n_for() { case $1 in 1b) echo 900;; 7b) echo 1300;; 13b) echo 1800;; esac; }
for s in 1b 7b 13b; do
  timeout 150 ncu --clock-control none --cache-control none --metrics gpu__time_duration.sum,dram__bytes_read.sum --csv --print-units base -c $(n_for $s) \
    /tmp/final/wasm-chord bench -m /tmp/m/gen-$s-q4_k_m.gguf --backend cuda -p 0 -n 4 -r 1 > /tmp/ncu-$s.csv 2> /tmp/ncu-$s.log
  echo "== $s (ncu rc=$?)" >> $OUT/profile.txt
  python3 /tmp/final/ncu_step.py /tmp/ncu-$s.csv --bw $BW 2>&1 | grep -v "^step [0-9]" >> $OUT/profile.txt
done
tar czf $OUT/profile-raw.tgz -C /tmp ncu-1b.csv ncu-7b.csv ncu-13b.csv 1b.timing.log 7b.timing.log 13b.timing.log 2>/dev/null
cat $OUT/step-timing.txt; cat $OUT/profile.txt | cut -c1-150
