#!/usr/bin/env bash
# Builds what a GPU-machine run of the CUDA backend needs and copies it, stripped, into DEST:
#   wasm-chord (--features cuda), the test binaries cuda_e2e (runtime) and ops, flash and
#   matvec_variants (cuda crate),
#   and scripts/bench-cuda.sh and scripts/cuda-e2e.sh.
#
#   scripts/cuda-carry.sh /work/main/.device-carry/NAME      (then carry ".device-carry/NAME")
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
DEST="${1:?usage: scripts/cuda-carry.sh DEST}"
mkdir -p "$DEST"
cd "$REPO"
cargo build --release -p wasm-chord-cli --features cuda
cp "${CARGO_TARGET_DIR:-$REPO/target}/release/wasm-chord" "$DEST/"
# The test executables' paths, from cargo's JSON messages.
test_bin() {
    cargo test --release --no-run --message-format=json "$@" \
        | python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"]["test"]:
        print(m["executable"])' | tail -1
}
cp "$(test_bin -p wasm-chord-runtime --features cuda --test cuda_e2e)" "$DEST/cuda_e2e"
for t in ops flash matvec_variants; do
    cp "$(test_bin -p wasm-chord-cuda --test $t)" "$DEST/$t"
done
strip "$DEST/wasm-chord" "$DEST/cuda_e2e" "$DEST/ops" "$DEST/flash" "$DEST/matvec_variants"
cp scripts/bench-cuda.sh scripts/cuda-e2e.sh "$DEST/"
du -sh "$DEST"
