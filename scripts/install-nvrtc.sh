#!/usr/bin/env bash
# Installs NVIDIA's NVRTC and CUDA runtime headers from PyPI into a cache folder, so the CUDA
# kernels can be compiled (not run) on a machine without a GPU or a CUDA toolkit.
# Prints the two paths the kernel-compile test reads:
#   WASM_CHORD_NVRTC_LIB=<folder>/nvidia/cu13/lib/libnvrtc.so.13
#   WASM_CHORD_CUDA_INCLUDE=<folder>/nvidia/cu13/include
# Usage: scripts/install-nvrtc.sh [folder]   (default: ~/.cache/wasm-chord/nvrtc)
set -euo pipefail
dir="${1:-${XDG_CACHE_HOME:-$HOME/.cache}/wasm-chord/nvrtc}"
lib="$dir/nvidia/cu13/lib"
inc="$dir/nvidia/cu13/include"
if ! ls "$lib"/libnvrtc.so.* >/dev/null 2>&1 || [ ! -f "$inc/cuda_fp16.h" ]; then
    mkdir -p "$dir"
    python3 -m pip install --quiet --disable-pip-version-check --no-deps --upgrade --target "$dir" \
        'nvidia-cuda-nvrtc==13.0.*' 'nvidia-cuda-runtime==13.0.*' >&2
fi
nvrtc="$(ls "$lib"/libnvrtc.so.13* 2>/dev/null | grep -v builtins | head -n1)"
if [ -z "$nvrtc" ] || [ ! -f "$inc/cuda_fp16.h" ]; then
    echo "install-nvrtc: libnvrtc.so.13 or cuda_fp16.h missing under $dir/nvidia/cu13" >&2
    exit 1
fi
echo "WASM_CHORD_NVRTC_LIB=$nvrtc"
echo "WASM_CHORD_CUDA_INCLUDE=$inc"
