#!/usr/bin/env bash
# Builds llama.cpp (the copy vendored in the llama-cpp-python 0.3.36 sdist) as shared libraries
# plus the command-line tools the goldens and benchmarks use, into a cache folder. Reuses an
# existing source tree and build; re-running only rebuilds what changed.
#
#   scripts/build-llama-cpp.sh            build (or reuse) and print the bin folder
#   JOBS=4 scripts/build-llama-cpp.sh     parallel jobs (default 2)
#
# Env: WASM_CHORD_CACHE (default ~/.cache/wasm-chord), LLAMA_CPP_PYTHON (source tree),
# LLAMA_BUILD_DIR (build folder). An existing /work/cache/{llama-cpp-python,llama-build} is used
# when the cache folder has none. Needs cmake, ninja, a C++17 compiler, pip (only to download).
#
# Note: in this llama.cpp version `llama-cli` is built only with LLAMA_BUILD_SERVER=ON (it is a
# client of the server code); `llama-completion` is the classic one-shot CLI and is built instead.
set -euo pipefail

VERSION=0.3.36
TARGETS=(llama llama-bench llama-tokenize llama-quantize llama-simple llama-completion)
CACHE="${WASM_CHORD_CACHE:-$HOME/.cache/wasm-chord}"
JOBS="${JOBS:-2}"

if [ -z "${LLAMA_CPP_PYTHON:-}" ]; then
    LLAMA_CPP_PYTHON="$CACHE/llama-cpp-python"
    if [ ! -e "$LLAMA_CPP_PYTHON/llama_cpp/llama_cpp.py" ] && [ -e /work/cache/llama-cpp-python/llama_cpp/llama_cpp.py ]; then
        LLAMA_CPP_PYTHON=/work/cache/llama-cpp-python
    fi
fi
if [ -z "${LLAMA_BUILD_DIR:-}" ]; then
    LLAMA_BUILD_DIR="$CACHE/llama-build"
    if [ ! -e "$LLAMA_BUILD_DIR/build.ninja" ] && [ -e /work/cache/llama-build/build.ninja ]; then
        LLAMA_BUILD_DIR=/work/cache/llama-build
    fi
fi

# 1. Source: the sdist vendors the matching llama.cpp under vendor/llama.cpp.
if [ ! -e "$LLAMA_CPP_PYTHON/vendor/llama.cpp/CMakeLists.txt" ]; then
    mkdir -p "$CACHE/dl"
    sdist="$CACHE/dl/llama_cpp_python-$VERSION.tar.gz"
    if [ ! -e "$sdist" ]; then
        echo "downloading llama-cpp-python==$VERSION sdist" >&2
        # pip prepares the sdist's metadata (installs scikit-build-core in isolation): slow once.
        pip download --no-deps --no-binary llama-cpp-python -d "$CACHE/dl" "llama-cpp-python==$VERSION" >&2
    fi
    tmp="$(mktemp -d "$CACHE/extract.XXXXXX")"
    tar -xzf "$sdist" -C "$tmp"
    mkdir -p "$(dirname "$LLAMA_CPP_PYTHON")"
    rm -rf "$LLAMA_CPP_PYTHON"
    mv "$tmp/llama_cpp_python-$VERSION" "$LLAMA_CPP_PYTHON"
    rmdir "$tmp"
fi
SRC="$LLAMA_CPP_PYTHON/vendor/llama.cpp"

# 2. Configure once.
if [ ! -e "$LLAMA_BUILD_DIR/build.ninja" ]; then
    cmake -S "$SRC" -B "$LLAMA_BUILD_DIR" -G Ninja \
        -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=ON \
        -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF >&2
fi

# 3. Build (ninja is a no-op when everything is up to date).
ninja -C "$LLAMA_BUILD_DIR" -j "$JOBS" "${TARGETS[@]}" >&2

test -e "$LLAMA_BUILD_DIR/bin/libllama.so"
echo "$LLAMA_BUILD_DIR/bin"
