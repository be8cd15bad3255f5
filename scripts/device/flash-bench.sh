#!/usr/bin/env bash
# Flash attention on the GPU machine, one call: the flash and op tests, then the bench beside
# PyTorch's SDPA; a short table last. Prepare on the dev machine (bench/runs/2026-11-26-h100-flash):
#   cargo test --release -p wasm-chord-cuda --no-run          # deps/flash-*, deps/ops-*
#   cargo bench -p wasm-chord-cuda --bench flash_bench --no-run
#   WASM_CHORD_KERNEL_CACHE=$D/kcache WASM_CHORD_ARCH=sm_90 \
#     cargo test -p wasm-chord-cuda --test flash -- --ignored warm_kernel_cache   # optional
#   copy them (stripped, named flash, ops, flash_bench) with this script and flash_sdpa.py to $D
# then on the device: `cd $D && bash flash-bench.sh` ($OUT collects the logs). Without kcache
# the kernels compile there first (about a minute).
set -u
here=$(cd "$(dirname "$0")" && pwd)
cd "$here"
out=${OUT:-/tmp/flash-out}
mkdir -p "$out"
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}
export WASM_CHORD_REQUIRE_GPU=1 NCCL_NVLS_ENABLE=0
# The kernel cache key includes the include path: use the one the cubins were built with.
inc=/root/.cache/wasm-chord/nvrtc/nvidia/cu13/include
mkdir -p "$(dirname "$inc")" && [ -e "$inc" ] || ln -s /usr/local/cuda/include "$inc"
export WASM_CHORD_CUDA_INCLUDE=$inc WASM_CHORD_KERNEL_CACHE=/tmp/kcache
rm -rf /tmp/kcache && cp -r kcache /tmp/kcache 2>/dev/null || mkdir -p /tmp/kcache
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv | tee "$out/gpu.txt"
chmod +x flash ops flash_bench 2>/dev/null
timeout ${TEST_S:-150} ./flash --test-threads=1 --nocapture --skip warm_kernel_cache --skip flash_resource_report > "$out/tests.log" 2>&1
echo "flash tests: exit $?" | tee -a "$out/summary.txt"
timeout 60 ./ops --test-threads=1 > "$out/ops.log" 2>&1
echo "ops tests: exit $?" | tee -a "$out/summary.txt"
timeout ${BENCH_S:-90} ./flash_bench > "$out/bench.log" 2>&1
echo "flash_bench: exit $?" | tee -a "$out/summary.txt"
PYTHONUNBUFFERED=1 timeout 90 python3 flash_sdpa.py > "$out/torch.log" 2>&1
echo "torch: exit $?" | tee -a "$out/summary.txt"
echo "== tests"
echo "cases ok: $(grep -c '^ok  ' "$out/tests.log"), failed: $(grep -c '^FAIL' "$out/tests.log")"
grep -E "^FAIL|test result|panicked|FAILED" "$out/tests.log" | cut -c1-200 | tail -30
grep -E "^ok  .*[|]q[|] 1 [|]kv[|] 1:" "$out/tests.log" | sed -E 's/.*rel err ([0-9.e-]+).*/\1/' | sort -g | tail -1 | sed 's/^/largest ok error: /'
grep -E "test result|FAILED|panicked" "$out/ops.log" | tail -5
echo "== bench"
grep -E "^(device|copy|torch)" "$out/bench.log" "$out/torch.log"
grep -h RESULT "$out/bench.log" "$out/torch.log"
tail -3 "$out/bench.log" | grep -iv result
