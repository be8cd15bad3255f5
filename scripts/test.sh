#!/usr/bin/env bash
# The whole test suite: what the README tells you to run and what CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."

# Golden tests compare against llama.cpp on the real models; without the files they cannot run.
scripts/fetch-models.sh
export WASM_CHORD_REQUIRE_MODELS=1

# NVRTC and the CUDA headers come from PyPI, so every CUDA kernel is compiled for sm_80 and
# sm_90a here too, without a GPU.
eval "$(scripts/install-nvrtc.sh | sed 's/^/export /')"
export WASM_CHORD_REQUIRE_NVRTC=1

cargo test --workspace --release

# Everything that belongs in the browser must keep building for wasm32.
cargo build --release --target wasm32-unknown-unknown \
    -p wasm-chord-core -p wasm-chord-cpu -p wasm-chord-runtime
echo "wasm32-unknown-unknown build: ok"
