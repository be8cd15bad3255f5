"""Locates the llama.cpp build and the llama-cpp-python bindings, and imports them.

    import llamacpp                      # from scripts/goldens (sys.path[0] when run as a script)
    llama_cpp = llamacpp.load()          # the ctypes bindings module, configured
    llamacpp.BUILD_DIR / "bin"           # llama.cpp binaries and shared libraries

Search order (same as llama_env.sh): env LLAMA_BUILD_DIR / LLAMA_CPP_PYTHON, then
${WASM_CHORD_CACHE:-~/.cache/wasm-chord}/{llama-build,llama-cpp-python}, then
/work/cache/{llama-build,llama-cpp-python}. scripts/build-llama-cpp.sh builds what is missing.
The bindings are pure ctypes, so only diskcache, jinja2, typing_extensions and numpy are needed.
"""

from __future__ import annotations

import ctypes
import os
import sys
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[2]
MODELS_DIR = Path(os.environ.get("WASM_CHORD_MODELS", str(Path.home() / ".cache/wasm-chord/models")))
SMOLLM2 = "SmolLM2-135M-Instruct.Q4_1.gguf"
GEMMA3 = "gemma-3-270m-q4_k_m.gguf"
# Short names used for golden file names.
MODELS = {"smollm2": SMOLLM2, "gemma3": GEMMA3}


def _first(env: str, candidates: list[Path], marker: str) -> Path | None:
    if os.environ.get(env):
        return Path(os.environ[env])
    for c in candidates:
        if (c / marker).exists():
            return c
    return None


_cache = Path(os.environ.get("WASM_CHORD_CACHE", str(Path.home() / ".cache/wasm-chord")))
BUILD_DIR = _first("LLAMA_BUILD_DIR", [_cache / "llama-build", Path("/work/cache/llama-build")], "bin/libllama.so")
PY_DIR = _first("LLAMA_CPP_PYTHON", [_cache / "llama-cpp-python", Path("/work/cache/llama-cpp-python")],
                "llama_cpp/llama_cpp.py")


def model_path(file_name: str) -> Path:
    p = MODELS_DIR / file_name
    if not p.exists():
        sys.exit(f"missing model {p}; run scripts/fetch-models.sh")
    return p


def load() -> ModuleType:
    """Imports and returns the `llama_cpp` module, pointed at our build."""
    if BUILD_DIR is None or PY_DIR is None:
        sys.exit("llama.cpp build or llama-cpp-python source not found; run scripts/build-llama-cpp.sh")
    os.environ["LLAMA_CPP_LIB_PATH"] = str(BUILD_DIR / "bin")
    if str(PY_DIR) not in sys.path:
        sys.path.insert(0, str(PY_DIR))
    import llama_cpp  # noqa: E402

    return llama_cpp


def version_info() -> dict:
    """Which llama.cpp produced a golden: bindings version and the vendored llama.cpp commit."""
    llama_cpp = load()
    commit = "?"
    info_cpp = BUILD_DIR / "common/build-info.cpp"
    if info_cpp.exists():
        for line in info_cpp.read_text(errors="replace").splitlines():
            if "LLAMA_COMMIT =" in line:
                commit = line.split("=", 1)[1].strip().rstrip(";").strip('"')
    return {"llama_cpp_python": getattr(llama_cpp, "__version__", "?"), "llama_cpp_commit": commit}


def ggml_base() -> ctypes.CDLL:
    """libggml-base.so with the prototypes of the quantization entry points declared."""
    lib = ctypes.CDLL(str(BUILD_DIR / "bin/libggml-base.so"))
    # size_t ggml_quantize_chunk(enum ggml_type type, const float * src, void * dst,
    #                            int64_t start, int64_t nrows, int64_t n_per_row, const float * imatrix);
    lib.ggml_quantize_chunk.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p,
                                        ctypes.c_int64, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
    lib.ggml_quantize_chunk.restype = ctypes.c_size_t
    lib.ggml_quantize_init.argtypes = [ctypes.c_int]
    lib.ggml_quantize_init.restype = None
    lib.ggml_row_size.argtypes = [ctypes.c_int, ctypes.c_int64]
    lib.ggml_row_size.restype = ctypes.c_size_t
    lib.ggml_quantize_requires_imatrix.argtypes = [ctypes.c_int]
    lib.ggml_quantize_requires_imatrix.restype = ctypes.c_bool
    return lib


class GgmlTypeTraits(ctypes.Structure):
    # struct ggml_type_traits in ggml/include/ggml.h
    _fields_ = [
        ("type_name", ctypes.c_char_p),
        ("blck_size", ctypes.c_int64),
        ("blck_size_interleave", ctypes.c_int64),
        ("type_size", ctypes.c_size_t),
        ("is_quantized", ctypes.c_bool),
        ("to_float", ctypes.c_void_p),
        ("from_float_ref", ctypes.c_void_p),
    ]


GGML_TO_FLOAT = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.POINTER(ctypes.c_float), ctypes.c_int64)


def ggml_to_float(lib: ctypes.CDLL, ggml_type: int, raw: bytes, n: int):
    """Dequantizes `raw` (n values) with ggml's own scalar to_float for the type."""
    import numpy as np

    lib.ggml_get_type_traits.argtypes = [ctypes.c_int]
    lib.ggml_get_type_traits.restype = ctypes.POINTER(GgmlTypeTraits)
    traits = lib.ggml_get_type_traits(ggml_type).contents
    if not traits.to_float:
        raise ValueError(f"ggml type {ggml_type} has no to_float")
    fn = GGML_TO_FLOAT(traits.to_float)
    src = ctypes.create_string_buffer(raw, len(raw))
    out = np.zeros(n, dtype=np.float32)
    fn(ctypes.cast(src, ctypes.c_void_p), out.ctypes.data_as(ctypes.POINTER(ctypes.c_float)), n)
    return out


def ggml_quantize(lib: ctypes.CDLL, ggml_type: int, src, n_per_row: int) -> bytes:
    """ggml_quantize_chunk without an importance matrix (what llama-quantize does without --imatrix)."""
    import numpy as np

    src = np.ascontiguousarray(src, dtype=np.float32)
    nrows = src.size // n_per_row
    lib.ggml_quantize_init(ggml_type)
    size = lib.ggml_row_size(ggml_type, n_per_row) * nrows
    dst = ctypes.create_string_buffer(size)
    written = lib.ggml_quantize_chunk(ggml_type, src.ctypes.data, ctypes.cast(dst, ctypes.c_void_p),
                                      0, nrows, n_per_row, None)
    assert written == size, (written, size)
    return dst.raw
