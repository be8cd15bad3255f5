#!/usr/bin/env python3
"""Per-layer activation goldens from llama.cpp, for debugging a forward pass layer by layer.

Runs one prefill of a short prompt through llama.cpp (CPU, flash attention off) with a
ggml scheduler eval callback that sees every named graph node (llama.cpp names them
"<name>-<layer>", e.g. attn_norm-3, Qcur-3, kqv_out-3, ffn_out-3, l_out-3, and result_norm,
result_output), and records for every F32 node: name, op, shape and summary statistics.
The residual stream after every layer (l_out-<il>), the embeddings (embd, and Gemma's
scaled inp_scaled) and the final norm are stored in full.

Writes crates/wasm-chord-runtime/tests/golden/activations/<model>.json and <model>.f32.
Format: README.md.

Usage: python3 scripts/goldens/activations_goldens.py
"""

from __future__ import annotations

import ctypes
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import llamacpp  # noqa: E402

llama_cpp = llamacpp.load()

GOLDEN = llamacpp.REPO / "crates/wasm-chord-runtime/tests/golden"
PROMPT = "The capital of France is"
N_THREADS = 2
GGML_TYPE_F32 = 0
# Node names (without the "-<layer>" suffix) stored in full.
FULL = ("l_out", "embd", "inp_scaled", "result_norm")


class GgmlTensor(ctypes.Structure):
    # struct ggml_tensor, ggml/include/ggml.h (GGML_MAX_DIMS 4, GGML_MAX_OP_PARAMS 64,
    # GGML_MAX_SRC 10, GGML_MAX_NAME 64).
    _fields_ = [
        ("type", ctypes.c_int),
        ("buffer", ctypes.c_void_p),
        ("ne", ctypes.c_int64 * 4),
        ("nb", ctypes.c_size_t * 4),
        ("op", ctypes.c_int),
        ("op_params", ctypes.c_int32 * 16),
        ("flags", ctypes.c_int32),
        ("src", ctypes.c_void_p * 10),
        ("view_src", ctypes.c_void_p),
        ("view_offs", ctypes.c_size_t),
        ("data", ctypes.c_void_p),
        ("name", ctypes.c_char * 64),
        ("extra", ctypes.c_void_p),
        ("padding", ctypes.c_char * 8),
    ]


def tensor_values(t: GgmlTensor) -> np.ndarray:
    """The tensor's values as an array shaped [ne3, ne2, ne1, ne0] (CPU memory, any strides)."""
    ne = [int(x) for x in t.ne]
    nb = [int(x) for x in t.nb]
    span = sum((n - 1) * s for n, s in zip(ne, nb)) + 4
    base = np.ctypeslib.as_array(ctypes.cast(t.data, ctypes.POINTER(ctypes.c_uint8)), shape=(span,))
    arr = np.lib.stride_tricks.as_strided(base.view(np.uint8), shape=ne[::-1] + [4],
                                          strides=nb[::-1] + [1])
    return np.ascontiguousarray(arr).view(np.float32).reshape(ne[::-1])


def run_model(short: str, file_name: str) -> None:
    lib = llamacpp.ggml_base()
    lib.ggml_op_desc.argtypes = [ctypes.c_void_p]
    lib.ggml_op_desc.restype = ctypes.c_char_p

    path = llamacpp.model_path(file_name)
    mparams = llama_cpp.llama_model_default_params()
    mparams.n_gpu_layers = 0
    model = llama_cpp.llama_model_load_from_file(str(path).encode(), mparams)
    vocab = llama_cpp.llama_model_get_vocab(model)

    text = PROMPT.encode()
    toks = (llama_cpp.llama_token * 64)()
    n = llama_cpp.llama_tokenize(vocab, text, len(text), toks, 64, True, False)
    tokens = list(toks[:n])

    nodes: list[dict] = []
    blobs: list[np.ndarray] = []
    offset = 0

    def callback(t_ptr, ask, _user):
        nonlocal offset
        t = GgmlTensor.from_address(t_ptr)
        name = t.name.decode("utf-8", "replace")
        if ask:
            # Ask for every named F32 node (unnamed ones are "node_<i>"); the scheduler then
            # stops after each one so we can read it.
            return t.type == GGML_TYPE_F32 and not name.startswith("node_")
        if t.type != GGML_TYPE_F32 or name.startswith("node_"):
            return True
        op = lib.ggml_op_desc(t_ptr).decode()
        # Views, reshapes and permutes repeat their source's values; leave them out.
        if op in ("RESHAPE", "VIEW", "PERMUTE", "TRANSPOSE") or " (" in name:
            return True
        vals = tensor_values(t).astype(np.float64)
        flat = vals.reshape(-1)
        if not np.all(np.isfinite(flat)):
            raise SystemExit(f"non-finite values in {name}; the JSON would not be valid")
        node = {
            "name": name,
            "op": op,
            "ne": [int(x) for x in t.ne],
            "sum": float(flat.sum()),
            "sum_sq": float((flat * flat).sum()),
            "abs_max": float(np.abs(flat).max()) if flat.size else 0.0,
            "first4": [float(x) for x in flat[:4]],
            "last4": [float(x) for x in flat[-4:]],
        }
        if name.rsplit("-", 1)[0] in FULL or name in FULL:
            data = vals.astype("<f4").reshape(-1)
            node["data_offset"] = offset
            node["data_len"] = int(data.size)
            blobs.append(data)
            offset += data.size
        nodes.append(node)
        return True

    cb = llama_cpp.ggml_backend_sched_eval_callback(callback)
    cparams = llama_cpp.llama_context_default_params()
    cparams.n_ctx = 512
    cparams.n_batch = 512
    cparams.n_ubatch = 512
    cparams.n_threads = N_THREADS
    cparams.n_threads_batch = N_THREADS
    cparams.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
    cparams.cb_eval = cb
    cparams.cb_eval_user_data = None
    ctx = llama_cpp.llama_init_from_model(model, cparams)

    arr = (llama_cpp.llama_token * n)(*tokens)
    batch = llama_cpp.llama_batch_get_one(arr, n)
    rc = llama_cpp.llama_decode(ctx, batch)
    if rc != 0:
        sys.exit(f"llama_decode failed: {rc}")
    n_vocab = llama_cpp.llama_vocab_n_tokens(vocab)
    logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(ctx, -1), shape=(n_vocab,))
    last_argmax = int(np.argmax(logits))
    llama_cpp.llama_free(ctx)
    llama_cpp.llama_model_free(model)

    out = GOLDEN / "activations"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{short}.f32").write_bytes(np.concatenate(blobs).astype("<f4").tobytes() if blobs else b"")
    doc = {
        "producer": llamacpp.version_info(),
        "model_file": file_name,
        "prompt": PROMPT,
        "tokens": tokens,
        "settings": {"n_ctx": 512, "n_threads": N_THREADS, "flash_attn": False, "backend": "CPU",
                     "batch": "whole prompt in one llama_decode, logits for the last token only"},
        "last_token_argmax": last_argmax,
        "data_file": f"{short}.f32",
        "nodes": nodes,
    }
    # One node per line: readable in a diff, and a third of the size of indented JSON.
    head = json.dumps({k: v for k, v in doc.items() if k != "nodes"}, indent=1)[:-2]
    body = ",\n".join("  " + json.dumps(nd) for nd in nodes)
    (out / f"{short}.json").write_text(head + ',\n "nodes": [\n' + body + "\n ]\n}\n")
    names = sorted({nd["name"].rsplit("-", 1)[0] for nd in nodes})
    print(f"{short}: {len(tokens)} tokens, {len(nodes)} nodes, {offset * 4} data bytes; names: {names}")


def main() -> None:
    for short, file_name in llamacpp.MODELS.items():
        run_model(short, file_name)


if __name__ == "__main__":
    main()
