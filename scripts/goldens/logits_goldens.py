#!/usr/bin/env python3
"""Logits and greedy-continuation goldens from llama.cpp (through llama-cpp-python's bindings).

For both real models and every prompt of crates/wasm-chord-runtime/tests/golden/prompts.json:
prompt tokens, teacher-forced argmax over the prompt, a greedy 32-token continuation with the
end-of-generation tokens masked (as llama.cpp's --ignore-eos does with a -inf logit bias),
per-step top-10 and top-1/top-2 gap, and full logit vectors for some steps.

Writes crates/wasm-chord-runtime/tests/golden/logits/<model>.json and
<model>.<prompt>.step<k>.f32 (raw little-endian f32, n_vocab values). Format: README.md.

Usage: python3 scripts/goldens/logits_goldens.py [--models smollm2,gemma3] [--steps 32]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import llamacpp  # noqa: E402

llama_cpp = llamacpp.load()

GOLDEN = llamacpp.REPO / "crates/wasm-chord-runtime/tests/golden"
N_CTX = 2048
N_THREADS = 2
N_BATCH = 512
TOP_K = 10
# Which full next-token vectors to store, per model (steps are 0-based; step 0 is the first
# generated token, i.e. the logits of the last prompt position). Gemma's vocabulary is 262144,
# 1 MiB per vector, so it keeps only the first.
FULL_STEPS = {"smollm2": "first_last", "gemma3": "first"}


def top_k(logits: np.ndarray, k: int) -> list[list]:
    # Stable sort on -logit, so ties list the lower id first (what a first-max argmax picks).
    idx = np.argsort(-logits, kind="stable")[:k]
    return [[int(i), float(logits[i])] for i in idx]


def run_prompt(llm, vocab, eog: list[int], text: str, steps: int) -> tuple[dict, dict[int, np.ndarray]]:
    llm.reset()
    tokens = llm.tokenize(text.encode("utf-8"), add_bos=True, special=False)
    if len(tokens) + steps > N_CTX:
        raise SystemExit(f"prompt too long: {len(tokens)} tokens")
    llm.eval(tokens)
    prompt_logits = np.array(llm.scores[: len(tokens), :], dtype=np.float32)
    prompt_argmax = [int(i) for i in np.argmax(prompt_logits, axis=-1)]

    generated, per_step, vectors = [], [], {}
    for step in range(steps):
        logits = np.array(llm.scores[llm.n_tokens - 1, :], dtype=np.float32)
        vectors[step] = logits.copy()
        masked = logits.copy()
        masked[eog] = -np.inf
        tk = top_k(masked, TOP_K)
        nxt = tk[0][0]
        per_step.append({
            "token": nxt,
            "top10": tk,
            "gap": tk[0][1] - tk[1][1],
            # Raw argmax before masking: tells whether the model wanted to stop here.
            "unmasked_argmax": int(np.argmax(logits)),
        })
        generated.append(nxt)
        llm.eval([nxt])

    return {
        "prompt_tokens": tokens,
        "prompt_argmax": prompt_argmax,
        "generated": generated,
        "generated_text": llm.detokenize(generated, special=True).decode("utf-8", "backslashreplace"),
        "min_gap": min(s["gap"] for s in per_step),
        "steps": per_step,
    }, vectors


def model_golden(short: str, file_name: str, prompts: list[dict], steps: int) -> dict:
    path = llamacpp.model_path(file_name)
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=N_CTX, n_batch=N_BATCH, n_ubatch=N_BATCH,
                          n_threads=N_THREADS, n_threads_batch=N_THREADS, logits_all=True,
                          flash_attn=False, n_gpu_layers=0, verbose=False)
    vocab = llm._model.vocab
    n_vocab = llama_cpp.llama_vocab_n_tokens(vocab)
    eog = [t for t in range(n_vocab) if llama_cpp.llama_vocab_is_eog(vocab, t)]
    out_dir = GOLDEN / "logits"
    out_dir.mkdir(parents=True, exist_ok=True)

    runs = []
    for p in prompts:
        t0 = time.time()
        run, vectors = run_prompt(llm, vocab, eog, p["text"], steps)
        keep = [0] if FULL_STEPS[short] == "first" else [0, steps - 1]
        files = {}
        for k in keep:
            name = f"{short}.{p['name']}.step{k}.f32"
            (out_dir / name).write_bytes(vectors[k].astype("<f4").tobytes())
            files[str(k)] = name
        runs.append({"name": p["name"], "full_logits": files, **run})
        print(f"{short} {p['name']}: {len(run['prompt_tokens'])} prompt tokens, min gap "
              f"{run['min_gap']:.4f}, {time.time() - t0:.1f}s: {run['generated_text']!r}")

    return {
        "producer": llamacpp.version_info(),
        "model_file": file_name,
        "settings": {
            "n_ctx": N_CTX, "n_batch": N_BATCH, "n_ubatch": N_BATCH, "n_threads": N_THREADS,
            "flash_attn": False, "kv_cache_type": "f16", "backend": "CPU",
            "prompt_tokenization": "llama_tokenize(add_special=true, parse_special=false): BOS only where the GGUF asks",
            "prefill": "whole prompt in one batch (n_batch 512), then one token per decode call",
            "sampling": "greedy; EOG ids set to -inf first (like --ignore-eos); ties -> lowest id",
        },
        "n_vocab": n_vocab,
        "eog_ids": eog,
        "steps": steps,
        "prompts": runs,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=",".join(llamacpp.MODELS))
    ap.add_argument("--steps", type=int, default=32)
    args = ap.parse_args()
    prompts = json.loads((GOLDEN / "prompts.json").read_text(encoding="utf-8"))
    for short in args.models.split(","):
        doc = model_golden(short, llamacpp.MODELS[short], prompts, args.steps)
        out = GOLDEN / "logits" / f"{short}.json"
        out.write_text(json.dumps(doc, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
        print(f"wrote {out.relative_to(llamacpp.REPO)}")


if __name__ == "__main__":
    main()
