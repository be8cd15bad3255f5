#!/usr/bin/env python3
"""Golden data for the k-quant tests (crates/wasm-chord-core/tests/quant_k.rs).

Writes into crates/wasm-chord-core/tests/golden/quant_k/:

  dequant_<type>.blocks, dequant_<type>.f32
      Random blocks (random quants and scales, finite moderate d/dmin) and their dequantization
      by the PyPI `gguf` package (Q2_K..Q6_K) or by Q8_K's definition (d * q). When llama.cpp's
      libggml-base.so is available, its dequantize_row_* must agree bit for bit.
  quant_input.f32, quant_<type>.blocks
      Rows of test inputs (random, llama.cpp's cos pattern, edge cases) and their quantization by
      llama.cpp's own quantize_row_<type>_ref (via ctypes on libggml-base.so).
  gemma_tensors.txt
      For every Q4_K and Q6_K tensor of gemma-3-270m-q4_k_m.gguf: name, type, absolute file
      offset, byte count, element count and a hash of gguf-py's dequantization (see `tensor_hash`).

Usage: python3 scripts/goldens/quant_k_goldens.py
Env: LLAMA_BUILD_BIN (folder holding libggml-base.so; default: the llama-build/bin of
     scripts/build-llama-cpp.sh under ${WASM_CHORD_CACHE:-~/.cache/wasm-chord}, else
     /work/cache/llama-build/bin),
     WASM_CHORD_MODELS (model folder, default ~/.cache/wasm-chord/models).
"""

import ctypes
import os
import sys
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType as T, GGUFReader
from gguf.quants import dequantize

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "crates/wasm-chord-core/tests/golden/quant_k"
QK_K = 256
SEED = 20240611
N_DEQUANT_BLOCKS = 4

BLOCK_BYTES = {"q2_K": 84, "q3_K": 110, "q4_K": 144, "q5_K": 176, "q6_K": 210, "q8_K": 292}
GGUF_TYPE = {"q2_K": T.Q2_K, "q3_K": T.Q3_K, "q4_K": T.Q4_K, "q5_K": T.Q5_K, "q6_K": T.Q6_K}


def load_ggml():
    cache = Path(os.environ.get("WASM_CHORD_CACHE", Path.home() / ".cache/wasm-chord"))
    candidates = [cache / "llama-build/bin", Path("/work/cache/llama-build/bin")]
    if "LLAMA_BUILD_BIN" in os.environ:
        candidates = [Path(os.environ["LLAMA_BUILD_BIN"])]
    path = next((d / "libggml-base.so" for d in candidates if (d / "libggml-base.so").exists()), None)
    if path is None:
        return None
    lib = ctypes.CDLL(str(path))
    for name in BLOCK_BYTES:
        for fn in (f"quantize_row_{name}_ref", f"dequantize_row_{name}"):
            getattr(lib, fn).argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
            getattr(lib, fn).restype = None
    return lib


def rand_f16(rng, n, lo_exp=-4.0, hi_exp=0.0, signed=True):
    """Finite f16 values of magnitude 10^[lo_exp, hi_exp)."""
    mag = 10.0 ** rng.uniform(lo_exp, hi_exp, n)
    sign = rng.choice([-1.0, 1.0], n) if signed else 1.0
    return (sign * mag).astype(np.float16)


def random_blocks(rng, name, n):
    """n random blocks of type `name` as an (n, block_bytes) uint8 array."""
    b = BLOCK_BYTES[name]
    raw = rng.integers(0, 256, size=(n, b), dtype=np.uint8)
    # Overwrite the float fields with finite, moderate values (random bytes could be inf/NaN).
    if name in ("q2_K",):
        raw[:, 80:84] = np.stack([rand_f16(rng, n), rand_f16(rng, n)], axis=1).view(np.uint8)
    elif name == "q3_K":
        raw[:, 108:110] = rand_f16(rng, n).reshape(n, 1).view(np.uint8)
    elif name in ("q4_K", "q5_K"):
        raw[:, 0:4] = np.stack([rand_f16(rng, n), rand_f16(rng, n)], axis=1).view(np.uint8)
    elif name == "q6_K":
        raw[:, 208:210] = rand_f16(rng, n).reshape(n, 1).view(np.uint8)
    elif name == "q8_K":
        d = (rng.choice([-1.0, 1.0], n) * 10.0 ** rng.uniform(-5, 0, n)).astype(np.float32)
        raw[:, 0:4] = d.reshape(n, 1).view(np.uint8)
        qs = raw[:, 4:260].view(np.int8)
        bsums = qs.astype(np.int16).reshape(n, 16, 16).sum(axis=2).astype("<i2")
        raw[:, 260:292] = bsums.view(np.uint8)
    return raw


def dequant_reference(name, raw):
    if name == "q8_K":
        d = raw[:, 0:4].copy().view("<f4")  # (n, 1)
        qs = raw[:, 4:260].view(np.int8).astype(np.float32)
        return (d * qs).reshape(-1).astype("<f4")
    return dequantize(raw, GGUF_TYPE[name]).reshape(-1).astype("<f4")


def quant_inputs(rng):
    """Rows of QK_K floats exercising the quantizers: random data and edge cases."""
    rows = []
    for scale in (1e-3, 0.02, 0.1, 1.0, 10.0):
        rows.append(rng.standard_normal(QK_K) * scale)
    rows.append(rng.standard_normal(QK_K) * 0.05 + 0.3)           # offset, mostly positive
    rows.append(-np.abs(rng.standard_normal(QK_K)))                  # all negative
    rows.append(rng.uniform(-1, 1, QK_K) * rng.choice([0.01, 1.0], QK_K))  # mixed magnitudes
    i = np.arange(QK_K, dtype=np.float32)
    rows.append(0.1 + 2.0 * np.cos(i))                              # test-quantize-fns' pattern
    rows.append(0.1 + 2.0 * np.cos(i + QK_K))
    rows.append(np.zeros(QK_K))                                      # all zero
    rows.append(np.full(QK_K, 0.7))                                  # constant
    rows.append(np.full(QK_K, -0.3))                                 # negative constant
    rows.append(rng.standard_normal(QK_K) * 1e5)                     # huge (still fits f16 scales)
    rows.append(rng.standard_normal(QK_K) * 1e-6)                    # tiny: f16 scales underflow
    rows.append(rng.standard_normal(QK_K) * 1e-38)                   # f32 subnormals
    spike = np.zeros(QK_K)
    spike[37] = 5.0
    spike[200] = -0.25
    rows.append(spike)                                               # sparse outliers
    rows.append(((np.arange(QK_K) % 7) - 3) * 0.5)                   # exact halves: rounding ties
    return np.concatenate(rows).astype("<f4")


def mix64(z):
    """splitmix64's finalizer on a uint64 array."""
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def tensor_hash(values):
    """Wrapping sum over i of mix64((i << 32) | f32_bits(values[i])), as a u64."""
    bits = values.astype("<f4").view("<u4").astype(np.uint64)
    idx = np.arange(bits.size, dtype=np.uint64)
    with np.errstate(over="ignore"):
        return int(mix64((idx << np.uint64(32)) | bits).sum(dtype=np.uint64))


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(SEED)
    lib = load_ggml()
    if lib is None:
        print("libggml-base.so not found: skipping the llama.cpp cross-check and quantizer goldens",
              file=sys.stderr)

    for name in BLOCK_BYTES:
        raw = random_blocks(rng, name, N_DEQUANT_BLOCKS)
        out = dequant_reference(name, raw)
        assert np.all(np.isfinite(out)), name
        if lib is not None:
            theirs = np.zeros(out.size, dtype=np.float32)
            raw_c = np.ascontiguousarray(raw)
            getattr(lib, f"dequantize_row_{name}")(raw_c.ctypes.data, theirs.ctypes.data, out.size)
            assert np.array_equal(out.view("<u4"), theirs.view("<u4")), f"{name}: gguf-py != ggml"
        (OUT / f"dequant_{name}.blocks").write_bytes(raw.tobytes())
        (OUT / f"dequant_{name}.f32").write_bytes(out.tobytes())

    if lib is not None:
        x = quant_inputs(rng)
        (OUT / "quant_input.f32").write_bytes(x.tobytes())
        n_blocks = x.size // QK_K
        for name, b in BLOCK_BYTES.items():
            # Zeroed so the bytes ggml leaves untouched (Q8_K bsums of an all-zero block) are 0.
            y = np.zeros(n_blocks * b, dtype=np.uint8)
            getattr(lib, f"quantize_row_{name}_ref")(x.ctypes.data, y.ctypes.data, x.size)
            (OUT / f"quant_{name}.blocks").write_bytes(y.tobytes())

    models = Path(os.environ.get("WASM_CHORD_MODELS", Path.home() / ".cache/wasm-chord/models"))
    model = models / "gemma-3-270m-q4_k_m.gguf"
    if not model.exists():
        print(f"{model} missing: gemma_tensors.txt not written", file=sys.stderr)
        return
    lines = ["# name type offset n_bytes n_elements hash (see scripts/goldens/quant_k_goldens.py)"]
    reader = GGUFReader(model)
    for t in reader.tensors:
        if t.tensor_type not in (T.Q4_K, T.Q6_K):
            continue
        values = dequantize(t.data, t.tensor_type).reshape(-1)
        assert values.size == t.n_elements
        name = {T.Q4_K: "q4_K", T.Q6_K: "q6_K"}[t.tensor_type]
        lines.append(f"{t.name} {name} {t.data_offset} {t.n_bytes} {t.n_elements} {tensor_hash(values)}")
    (OUT / "gemma_tensors.txt").write_text("\n".join(lines) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
