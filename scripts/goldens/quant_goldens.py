#!/usr/bin/env python3
"""Dequantization and quantization goldens from the PyPI `gguf` package (gguf-py).

Writes, under crates/wasm-chord-core/tests/golden/quant/:

  <TYPE>.blocks          16 seeded random blocks (raw block bytes, ggml layout)
  <TYPE>.f32             gguf.quants.dequantize of those blocks (little-endian f32)
  <TYPE>.quant_src.f32   2048 values: llama.cpp test-quantize-fns data 0.1 + 2*cos(i) (1024), then
                         4 rows of 256 harder cases (tiny, large, zero, outliers)
  <TYPE>.quant_ref       gguf.quants.quantize of quant_src (only where gguf-py can quantize)
  <TYPE>.quant_ref_ggml  llama.cpp's ggml_quantize_chunk of quant_src, no imatrix (--ggml; all types)
  real_tensors.json      sha256 of the dequantized f32 bytes of every non-F32 tensor of the
                         real models (see README.md)

Random blocks have random quant/scale bytes, but the f16 super-scales (d, dmin, m) are set to
random values in +-[1e-3, 1] so that every output is finite and moderate.

With --ggml (needs the llama.cpp build, scripts/build-llama-cpp.sh) it also checks that gguf-py's
dequantization of every <TYPE>.blocks equals ggml's own to_float bit for bit, and compares
gguf-py's quantizers with ggml's.

Usage: python3 scripts/goldens/quant_goldens.py [--models DIR] [--skip-real] [--ggml]
Needs gguf==0.19.0 and numpy.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T
from gguf.constants import GGML_QUANT_SIZES

REPO = Path(__file__).resolve().parents[2]
OUT = REPO / "crates/wasm-chord-core/tests/golden/quant"
SEED = 0x5EED_C0DE
N_BLOCKS = 16
MODELS_DIR = Path(os.environ.get("WASM_CHORD_MODELS", str(Path.home() / ".cache/wasm-chord/models")))
# Element count for the plain float types, which have a block size of 1.
N_FLOAT_ELEMS = 512
# quant_src: 1024 values of llama.cpp's synthetic data, then 4 rows of 256 seeded harder cases.
N_QUANT_SRC_COS = 1024

# Byte offsets of the f16 scale fields inside each block (ggml-common.h).
F16_SCALE_OFFSETS: dict[T, list[int]] = {
    T.Q4_0: [0],             # d, qs[16]
    T.Q4_1: [0, 2],          # d, m, qs[16]
    T.Q5_0: [0],             # d, qh[4], qs[16]
    T.Q5_1: [0, 2],          # d, m, qh[4], qs[16]
    T.Q8_0: [0],             # d, qs[32] (int8)
    T.Q2_K: [80, 82],        # scales[16], qs[64], d, dmin
    T.Q3_K: [108],           # hmask[32], qs[64], scales[12], d
    T.Q4_K: [0, 2],          # d, dmin, scales[12], qs[128]
    T.Q5_K: [0, 2],          # d, dmin, scales[12], qh[32], qs[128]
    T.Q6_K: [208],           # ql[128], qh[64], scales[16] (int8), d
    T.IQ4_NL: [0],           # d, qs[16]
    T.IQ4_XS: [0],           # d, scales_h (u16), scales_l[4], qs[128]
}

TYPES = [T.F32, T.F16, T.BF16, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0,
         T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K, T.IQ4_NL, T.IQ4_XS]


def random_scales(rng: np.random.Generator, n: int) -> np.ndarray:
    """n f16 values with magnitude log-uniform in [1e-3, 1] and random sign."""
    mag = 10.0 ** rng.uniform(-3.0, 0.0, size=n)
    sign = np.where(rng.integers(0, 2, size=n) == 1, -1.0, 1.0)
    return (sign * mag).astype(np.float16)


def random_blocks(rng: np.random.Generator, qtype: T) -> np.ndarray:
    """Raw bytes (uint8) of the random input for `qtype`."""
    if qtype == T.F32:
        return rng.standard_normal(N_FLOAT_ELEMS).astype("<f4").view(np.uint8)
    if qtype == T.F16:
        # Any finite f16 bit pattern (subnormals and the largest values included).
        bits = rng.integers(0, 1 << 16, size=N_FLOAT_ELEMS, dtype=np.uint32).astype(np.uint16)
        exp_all_ones = (bits & 0x7C00) == 0x7C00
        bits[exp_all_ones] &= ~np.uint16(0x4000)
        return bits.astype("<u2").view(np.uint8)
    if qtype == T.BF16:
        # Any finite bf16 bit pattern.
        bits = rng.integers(0, 1 << 16, size=N_FLOAT_ELEMS, dtype=np.uint32).astype(np.uint16)
        exp_all_ones = (bits & 0x7F80) == 0x7F80
        bits[exp_all_ones] &= ~np.uint16(0x4000)
        return bits.astype("<u2").view(np.uint8)
    _, type_size = GGML_QUANT_SIZES[qtype]
    blocks = rng.integers(0, 256, size=(N_BLOCKS, type_size), dtype=np.uint16).astype(np.uint8)
    for off in F16_SCALE_OFFSETS[qtype]:
        blocks[:, off:off + 2] = random_scales(rng, N_BLOCKS).astype("<f2").view(np.uint8).reshape(N_BLOCKS, 2)
    return blocks.reshape(-1)


def quant_src() -> np.ndarray:
    # llama.cpp tests/test-quantize-fns.cpp generate_data(0.0, n, dst): 0.1 + 2*cosf(i).
    i = np.arange(N_QUANT_SRC_COS, dtype=np.float32)
    cos = 0.1 + 2.0 * np.cos(i.astype(np.float64))
    # Harder rows: Gaussian at a tiny and a large scale, an all-zero row, and a row of small
    # values with one outlier per 32 (exercises scale search and the zero-scale path).
    rng = np.random.default_rng([SEED, 1000])
    tiny = rng.standard_normal(256) * 1e-3
    large = rng.standard_normal(256) * 40.0
    zeros = np.zeros(256)
    outliers = rng.standard_normal(256) * 0.05
    outliers[::32] = rng.choice([-1.0, 1.0], size=8) * rng.uniform(2.0, 8.0, size=8)
    return np.concatenate([cos, tiny, large, zeros, outliers]).astype(np.float32)


def can_quantize(qtype: T) -> bool:
    if qtype == T.F32:
        return False  # identity; nothing to compare
    if qtype == T.F16:
        return True
    cls = gguf.quants._type_traits.get(qtype)
    if cls is None:
        return False
    # Classes without a quantizer inherit the abstract method, which raises.
    return "quantize_blocks" in cls.__dict__


def write_synthetic() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for idx, qtype in enumerate(TYPES):
        # One generator per type so adding a type never changes another type's data.
        rng = np.random.default_rng([SEED, idx])
        raw = random_blocks(rng, qtype)
        deq = gguf.quants.dequantize(raw, qtype).astype("<f4").reshape(-1)
        assert np.all(np.isfinite(deq)), qtype.name
        (OUT / f"{qtype.name}.blocks").write_bytes(raw.tobytes())
        (OUT / f"{qtype.name}.f32").write_bytes(deq.tobytes())
        line = f"{qtype.name:7s} blocks={raw.size:6d} B  values={deq.size:5d}"
        if can_quantize(qtype):
            src = quant_src()
            q = gguf.quants.quantize(src, qtype)
            qbytes = np.ascontiguousarray(q).view(np.uint8).reshape(-1)
            (OUT / f"{qtype.name}.quant_src.f32").write_bytes(src.astype("<f4").tobytes())
            (OUT / f"{qtype.name}.quant_ref").write_bytes(qbytes.tobytes())
            line += f"  quant_ref={qbytes.size} B"
        print(line)


def write_real(models_dir: Path) -> None:
    entries = []
    for name in ["SmolLM2-135M-Instruct.Q4_1.gguf", "gemma-3-270m-q4_k_m.gguf"]:
        path = models_dir / name
        if not path.exists():
            print(f"missing {path}; run scripts/fetch-models.sh", file=sys.stderr)
            sys.exit(1)
        reader = gguf.GGUFReader(str(path))
        for t in reader.tensors:
            if t.tensor_type == T.F32:
                continue
            deq = gguf.quants.dequantize(t.data, t.tensor_type).astype("<f4").reshape(-1)
            n = int(np.prod([int(x) for x in t.shape]))
            assert deq.size == n, (t.name, deq.size, n)
            raw = deq.tobytes()
            entries.append({
                "model": name,
                "tensor": t.name,
                "type": t.tensor_type.name,
                # ggml order: ne[0] (contiguous) first.
                "shape": [int(x) for x in t.shape],
                "n_elements": n,
                "sha256": hashlib.sha256(raw).hexdigest(),
                # Aids for finding a mismatch without the full data.
                "first8": [float(x) for x in deq[:8]],
                "sum": float(deq.astype(np.float64).sum()),
                "abs_max": float(np.abs(deq).max()),
            })
            print(f"{name} {t.name} {t.tensor_type.name} {n}")
    doc = {
        "producer": f"gguf-py {getattr(gguf, '__version__', '0.19.0')} gguf.quants.dequantize",
        "hash_of": "dequantized values as little-endian f32 bytes, ggml element order",
        "tensors": entries,
    }
    (OUT / "real_tensors.json").write_text(json.dumps(doc, indent=1) + "\n")


def write_ggml() -> None:
    """Cross-checks against llama.cpp's C code and writes <TYPE>.quant_ref_ggml."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import llamacpp

    lib = llamacpp.ggml_base()
    ok = True
    for qtype in TYPES:
        raw = (OUT / f"{qtype.name}.blocks").read_bytes()
        ref = np.frombuffer((OUT / f"{qtype.name}.f32").read_bytes(), dtype="<f4")
        c = llamacpp.ggml_to_float(lib, int(qtype), raw, ref.size) if qtype != T.F32 else ref
        same = np.array_equal(c.view(np.uint32), ref.view(np.uint32))
        ok &= same
        line = f"{qtype.name:7s} dequant gguf-py == ggml: {same}"
        if qtype != T.F32:
            src = quant_src()
            q = llamacpp.ggml_quantize(lib, int(qtype), src, 256)
            (OUT / f"{qtype.name}.quant_src.f32").write_bytes(src.astype("<f4").tobytes())
            (OUT / f"{qtype.name}.quant_ref_ggml").write_bytes(q)
            line += f"  quant_ref_ggml={len(q)} B"
            py = OUT / f"{qtype.name}.quant_ref"
            if py.exists():
                line += f"  == gguf-py quant_ref: {py.read_bytes() == q}"
        print(line)
    real = OUT / "real_tensors.json"
    if real.exists():
        doc = json.loads(real.read_text())
        readers = {}
        bad = 0
        for e in doc["tensors"]:
            if e["model"] not in readers:
                readers[e["model"]] = {t.name: t for t in gguf.GGUFReader(str(MODELS_DIR / e["model"])).tensors}
            t = readers[e["model"]][e["tensor"]]
            c = llamacpp.ggml_to_float(lib, int(t.tensor_type), t.data.tobytes(), e["n_elements"])
            if hashlib.sha256(c.astype("<f4").tobytes()).hexdigest() != e["sha256"]:
                bad += 1
                print(f"real tensor {e['model']} {e['tensor']}: ggml hash differs from gguf-py")
        print(f"real tensors: {len(doc['tensors']) - bad}/{len(doc['tensors'])} ggml hashes equal gguf-py's")
        ok &= bad == 0
    if not ok:
        sys.exit("gguf-py and ggml disagree on dequantization; see above")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", type=Path, default=MODELS_DIR)
    ap.add_argument("--skip-real", action="store_true")
    ap.add_argument("--ggml", action="store_true", help="also cross-check with llama.cpp's ggml")
    args = ap.parse_args()
    write_synthetic()
    if not args.skip_real:
        write_real(args.models)
    if args.ggml:
        write_ggml()


if __name__ == "__main__":
    main()
