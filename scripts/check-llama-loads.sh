#!/usr/bin/env bash
# Checks that llama.cpp loads a GGUF file and can run it: used on files that wasm-chord writes
# (gen-model, quantize). Exit status 0 when llama.cpp loaded the model and produced tokens.
#
#   scripts/check-llama-loads.sh FILE.gguf [PROMPT]
#
# Runs llama-simple (greedy, 8 tokens) and prints its output; falls back to
# llama-bench -p 8 -n 8 -r 1 when llama-simple is missing or the vocabulary cannot encode the
# prompt (e.g. a synthetic model with a tiny vocabulary).
set -uo pipefail

if [ "$#" -lt 1 ] || [ ! -e "$1" ]; then
    echo "usage: $0 FILE.gguf [PROMPT]" >&2
    exit 2
fi
FILE="$1"
PROMPT="${2:-Hello}"
REPO="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=goldens/llama_env.sh
source "$REPO/scripts/goldens/llama_env.sh"
if [ -z "${LLAMA_BUILD_DIR:-}" ]; then
    exit 2
fi
BIN="$LLAMA_BUILD_DIR/bin"
export LD_LIBRARY_PATH="$BIN${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

log="$(mktemp)"
err="$(mktemp)"
trap 'rm -f "$log" "$err"' EXIT

if [ -x "$BIN/llama-simple" ]; then
    # llama-simple writes the prompt and generated text to stdout, its log to stderr.
    if timeout 300 "$BIN/llama-simple" -m "$FILE" -n 8 "$PROMPT" >"$log" 2>"$err"; then
        echo "llama-simple loaded $FILE; text:"
        cat "$log"
        echo
        grep -m1 "model type\|general.name\|n_vocab" "$err" || true
        exit 0
    fi
    echo "llama-simple failed on $FILE; trying llama-bench" >&2
    tail -n 15 "$err" >&2
fi

if [ -x "$BIN/llama-bench" ]; then
    if timeout 300 "$BIN/llama-bench" -m "$FILE" -p 8 -n 8 -r 1 -t 2 >"$log" 2>&1; then
        echo "llama-bench ran $FILE:"
        cat "$log"
        exit 0
    fi
    echo "llama-bench failed on $FILE:" >&2
    tail -n 20 "$log" >&2
    exit 1
fi
echo "no llama-simple or llama-bench in $BIN; run scripts/build-llama-cpp.sh" >&2
exit 2
