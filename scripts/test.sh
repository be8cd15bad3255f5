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

# aarch64 has its own NEON kernels: they must keep building, and where qemu and a cross linker
# are installed (.ci/run installs them) the kernel tests run under emulation, on a CPU model
# with the dot-product extension and on one without it, so both NEON kernel sets are checked.
if rustup target add aarch64-unknown-linux-gnu; then
    cargo check --release --target aarch64-unknown-linux-gnu -p wasm-chord-runtime
    echo "aarch64-unknown-linux-gnu check: ok"
    if command -v qemu-aarch64 >/dev/null && command -v aarch64-linux-gnu-gcc >/dev/null; then
        export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
        for cpu in max cortex-a57; do
            CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L /usr/aarch64-linux-gnu -cpu $cpu" \
                cargo test --release --target aarch64-unknown-linux-gnu -p wasm-chord-cpu --test kernels
        done
        echo "aarch64 kernel tests under qemu (-cpu max, cortex-a57): ok"
    else
        echo "note: no qemu-aarch64 or aarch64-linux-gnu-gcc: aarch64 kernel tests skipped"
    fi
else
    echo "note: the aarch64-unknown-linux-gnu target did not install: aarch64 check skipped"
fi
