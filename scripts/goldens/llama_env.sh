# Source this file: it finds the llama.cpp build and the llama-cpp-python sources and exports
#   LLAMA_BUILD_DIR      the cmake build folder (binaries and shared libraries in $LLAMA_BUILD_DIR/bin)
#   LLAMA_CPP_LIB_PATH   the folder holding libllama.so (read by llama_cpp's ctypes loader)
#   LLAMA_CPP_PYTHON     the llama-cpp-python source tree (its vendor/llama.cpp is the C source)
#   PYTHONPATH           with $LLAMA_CPP_PYTHON prepended, so `import llama_cpp` works
# Either may be preset in the environment. scripts/build-llama-cpp.sh builds what is missing.
# Search order: env, ${WASM_CHORD_CACHE:-~/.cache/wasm-chord}/, /work/cache/.

_wc_cache="${WASM_CHORD_CACHE:-$HOME/.cache/wasm-chord}"
if [ -z "${LLAMA_BUILD_DIR:-}" ]; then
    for _d in "$_wc_cache/llama-build" /work/cache/llama-build; do
        if [ -e "$_d/bin/libllama.so" ]; then LLAMA_BUILD_DIR="$_d"; break; fi
    done
fi
if [ -z "${LLAMA_CPP_PYTHON:-}" ]; then
    for _d in "$_wc_cache/llama-cpp-python" /work/cache/llama-cpp-python; do
        if [ -e "$_d/llama_cpp/llama_cpp.py" ]; then LLAMA_CPP_PYTHON="$_d"; break; fi
    done
fi
if [ -z "${LLAMA_BUILD_DIR:-}" ] || [ -z "${LLAMA_CPP_PYTHON:-}" ]; then
    echo "llama_env.sh: no llama.cpp build or llama-cpp-python source found; run scripts/build-llama-cpp.sh" >&2
else
    export LLAMA_BUILD_DIR LLAMA_CPP_PYTHON
    export LLAMA_CPP_LIB_PATH="$LLAMA_BUILD_DIR/bin"
    export PYTHONPATH="$LLAMA_CPP_PYTHON${PYTHONPATH:+:$PYTHONPATH}"
fi
unset _wc_cache _d
