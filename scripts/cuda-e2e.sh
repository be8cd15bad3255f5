#!/usr/bin/env bash
# The CUDA end-to-end check on a GPU machine, from binaries made by scripts/cuda-carry.sh:
# the op tests (and the flash and matvec-variant tests when their binaries are there), then
# crates/wasm-chord-runtime/tests/cuda_e2e.rs (synthetic llama, a gen-model
# 1B file made here, and the real models of the goldens when MODELS_DIR holds them).
#
#   scripts/cuda-e2e.sh BIN_DIR [MODELS_DIR]    (run from the repository root)
#
# Prints each test's figures (logit distances to the CPU and to llama.cpp, greedy agreement,
# decode-step graph statistics). Fails when there is no GPU.
set -uo pipefail
BIN="$(cd "${1:?usage: scripts/cuda-e2e.sh BIN_DIR [MODELS_DIR]}" && pwd)"
MODELS="${2:-${WASM_CHORD_MODELS:-$HOME/.cache/wasm-chord/models}}"
REPO="$PWD"
export LD_LIBRARY_PATH="/usr/local/cuda/lib64:/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}"
export WASM_CHORD_REQUIRE_GPU=1 NCCL_NVLS_ENABLE=0
TMP="${TMPDIR:-/tmp}/wasm-chord-e2e"; mkdir -p "$TMP"
[ -s "$TMP/gen-1b-q4_k_m.gguf" ] || "$BIN/wasm-chord" gen-model --shape 1b --quant q4_k_m -o "$TMP/gen-1b-q4_k_m.gguf" >/dev/null
rc=0
"$BIN/ops" --test-threads=1 || rc=1
for t in flash matvec_variants; do
    [ -x "$BIN/$t" ] && { "$BIN/$t" --test-threads=1 || rc=1; }
done
WASM_CHORD_E2E_GGUF="$TMP/gen-1b-q4_k_m.gguf" WASM_CHORD_MODELS="$MODELS" \
    WASM_CHORD_GOLDEN_DIR="$REPO/crates/wasm-chord-runtime/tests/golden/logits" \
    "$BIN/cuda_e2e" --test-threads=1 --nocapture || rc=1
exit $rc
