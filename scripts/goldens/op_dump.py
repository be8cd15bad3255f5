#!/usr/bin/env python3
"""Dumps every graph tensor llama.cpp computes, for a per-op bitwise comparison with wasm-chord.

Feeds a prompt to llama.cpp (CPU, flash attention off, 2 threads, logits for every position:
the settings of logits_goldens.py) as one batch, then `--steps` greedy tokens one at a time,
and records every node of every `llama_decode` call through the scheduler's eval callback.

Writes, per decode call c (0 = the prompt batch), `OUT/c<c>.json` and `OUT/c<c>.f32`:
- `tokens`, `pos0`: what the call fed;
- `nodes[]`: every graph node in compute order: `name`, `op`, `type` (ggml type id), `ne`,
  `nb`, `op_params` (16 int32), `srcs`, and for F32 nodes that are not views `data_offset`
  (in f32 elements into the .f32 file; the node's values in ggml order, ne[0] fastest);
- each src is `{"node": i, "offs", "ne", "nb", "type"}` when it is (a view of) node i of the
  same call (`offs` in bytes from node i's first element), else `{"leaf": name, ...}` (weights
  by their GGUF name, the KV cache, inputs).

The output is large (Gemma 3: ~1 MiB per output row of logits): keep it out of the repository.
crates/wasm-chord-runtime/tests/op_diff.rs replays each op with wasm-chord's CPU backend on
llama.cpp's own inputs and reports the ops whose results differ bitwise.

Usage: python3 scripts/goldens/op_dump.py (--model gemma3 | --file F.gguf) --out /tmp/opdump/gemma3 \
           [--prompt TEXT] [--steps 3]

`OUT/model` names the GGUF file, for op_diff.rs.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import llamacpp  # noqa: E402
from activations_goldens import GgmlTensor  # noqa: E402

llama_cpp = llamacpp.load()

N_CTX = 2048
N_BATCH = 512
N_THREADS = 2
GGML_TYPE_F32 = 0
VIEW_OPS = ("RESHAPE", "VIEW", "PERMUTE", "TRANSPOSE")


def tensor_bytes(t: GgmlTensor, elem: int) -> np.ndarray:
    """The tensor's elements as raw bytes shaped [ne3, ne2, ne1, ne0, elem] (any strides)."""
    ne = [int(x) for x in t.ne]
    nb = [int(x) for x in t.nb]
    span = sum((n - 1) * s for n, s in zip(ne, nb)) + elem
    base = np.ctypeslib.as_array(ctypes.cast(t.data, ctypes.POINTER(ctypes.c_uint8)), shape=(span,))
    return np.lib.stride_tricks.as_strided(base, shape=ne[::-1] + [elem], strides=nb[::-1] + [1])


class Recorder:
    def __init__(self) -> None:
        self.lib = llamacpp.ggml_base()
        self.lib.ggml_op_desc.argtypes = [ctypes.c_void_p]
        self.lib.ggml_op_desc.restype = ctypes.c_char_p
        self.reset()

    def reset(self) -> None:
        self.nodes: list[dict] = []
        self.by_ptr: dict[int, int] = {}
        self.blobs: list[np.ndarray] = []
        self.offset = 0

    def src_entry(self, p: int) -> dict:
        s = GgmlTensor.from_address(p)
        # Follow views to the tensor that owns the memory.
        base = p
        while True:
            b = GgmlTensor.from_address(base)
            if not b.view_src:
                break
            base = b.view_src
        bt = GgmlTensor.from_address(base)
        entry = {"ne": [int(x) for x in s.ne], "nb": [int(x) for x in s.nb], "type": int(s.type),
                 "offs": int(s.data) - int(bt.data) if s.data and bt.data else 0}
        if base in self.by_ptr:
            entry["node"] = self.by_ptr[base]
        else:
            entry["leaf"] = bt.name.decode("utf-8", "replace")
        return entry

    def callback(self, t_ptr, ask, _user):
        if ask:
            return True
        t = GgmlTensor.from_address(t_ptr)
        op = self.lib.ggml_op_desc(t_ptr).decode()
        node = {
            "name": t.name.decode("utf-8", "replace"),
            "op": op,
            "type": int(t.type),
            "ne": [int(x) for x in t.ne],
            "nb": [int(x) for x in t.nb],
            "op_params": [int(x) for x in t.op_params],
            "srcs": [self.src_entry(p) for p in t.src if p],
        }
        is_view = op in VIEW_OPS or bool(t.view_src)
        if t.type == GGML_TYPE_F32 and not is_view:
            vals = np.ascontiguousarray(tensor_bytes(t, 4)).view("<f4").reshape(-1).copy()
            node["data_offset"] = self.offset
            self.blobs.append(vals)
            self.offset += vals.size
        if not is_view:
            self.by_ptr[t_ptr] = len(self.nodes)
        node["view"] = is_view
        self.nodes.append(node)
        return True

    def write(self, out: Path, call: int, tokens: list[int], pos0: int) -> None:
        (out / f"c{call}.f32").write_bytes(np.concatenate(self.blobs).astype("<f4").tobytes())
        doc = {"tokens": tokens, "pos0": pos0, "nodes": self.nodes}
        (out / f"c{call}.json").write_text(json.dumps(doc))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=list(llamacpp.MODELS), help="one of the real models")
    ap.add_argument("--file", type=Path, help="any other GGUF file")
    ap.add_argument("--prompt", default="The capital of France is Paris, and the capital of Germany is")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    rec = Recorder()
    mparams = llama_cpp.llama_model_default_params()
    mparams.n_gpu_layers = 0
    if (args.model is None) == (args.file is None):
        sys.exit("give --model or --file")
    path = args.file.resolve() if args.file else llamacpp.model_path(llamacpp.MODELS[args.model])
    # op_diff.rs loads the same file.
    (args.out / "model").write_text(str(path) + "\n")
    model = llama_cpp.llama_model_load_from_file(str(path).encode(), mparams)
    vocab = llama_cpp.llama_model_get_vocab(model)
    n_vocab = llama_cpp.llama_vocab_n_tokens(vocab)
    text = args.prompt.encode()
    toks = (llama_cpp.llama_token * 512)()
    n = llama_cpp.llama_tokenize(vocab, text, len(text), toks, 512, True, False)
    prompt = list(toks[:n])

    cb = llama_cpp.ggml_backend_sched_eval_callback(rec.callback)
    cparams = llama_cpp.llama_context_default_params()
    cparams.n_ctx = N_CTX
    cparams.n_batch = N_BATCH
    cparams.n_ubatch = N_BATCH
    cparams.n_threads = N_THREADS
    cparams.n_threads_batch = N_THREADS
    cparams.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
    cparams.cb_eval = cb
    cparams.cb_eval_user_data = None
    ctx = llama_cpp.llama_init_from_model(model, cparams)

    batch = llama_cpp.llama_batch_init(N_BATCH, 0, 1)
    pos, feed, call = 0, prompt, 0
    while True:
        batch.n_tokens = len(feed)
        for i, tok in enumerate(feed):
            batch.token[i] = tok
            batch.pos[i] = pos + i
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = 0
            # Every position's logits, as logits_goldens.py asks (Llama(logits_all=True)).
            batch.logits[i] = True
        rec.reset()
        if llama_cpp.llama_decode(ctx, batch) != 0:
            sys.exit("llama_decode failed")
        rec.write(args.out, call, feed, pos)
        logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(ctx, len(feed) - 1), shape=(n_vocab,))
        nxt = int(np.argmax(logits))
        print(f"call {call}: {len(feed)} tokens at {pos}, {len(rec.nodes)} nodes, {rec.offset * 4 >> 20} MiB, next {nxt}")
        pos += len(feed)
        call += 1
        if call > args.steps:
            break
        feed = [nxt]
    llama_cpp.llama_batch_free(batch)
    llama_cpp.llama_free(ctx)
    llama_cpp.llama_model_free(model)


if __name__ == "__main__":
    main()
