#!/usr/bin/env python3
"""Tokenizer and chat-template goldens from llama.cpp (through llama-cpp-python's ctypes bindings).

Reads crates/wasm-chord-core/tests/golden/tokenizer/texts.json and writes
crates/wasm-chord-core/tests/golden/tokenizer/<model>.json (model = smollm2, gemma3).
Format: see scripts/goldens/README.md.

Usage: python3 scripts/goldens/tokenizer_goldens.py
"""

from __future__ import annotations

import ctypes
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import llamacpp  # noqa: E402

llama_cpp = llamacpp.load()
from llama_cpp.llama_chat_format import Jinja2ChatFormatter  # noqa: E402

GOLDEN = llamacpp.REPO / "crates/wasm-chord-core/tests/golden/tokenizer"

CONVERSATIONS = {
    "system_user_assistant": [
        {"role": "system", "content": "You are a concise assistant."},
        {"role": "user", "content": "What is the capital of France?"},
        {"role": "assistant", "content": "Paris."},
    ],
    "user_assistant_user": [
        {"role": "user", "content": "Hi there!"},
        {"role": "assistant", "content": "Hello! How can I help?"},
        {"role": "user", "content": "Tell me a joke about\nnewlines."},
    ],
}


def piece(vocab, tok: int, special: bool) -> bytes:
    buf = ctypes.create_string_buffer(256)
    n = llama_cpp.llama_token_to_piece(vocab, tok, buf, len(buf), 0, special)
    if n < 0:
        buf = ctypes.create_string_buffer(-n)
        n = llama_cpp.llama_token_to_piece(vocab, tok, buf, len(buf), 0, special)
    return buf.raw[:n]


def detokenize(vocab, toks: list[int], remove_special: bool, unparse_special: bool) -> bytes:
    arr = (llama_cpp.llama_token * max(1, len(toks)))(*toks)
    cap = 64 + 64 * len(toks)
    buf = ctypes.create_string_buffer(cap)
    n = llama_cpp.llama_detokenize(vocab, arr, len(toks), buf, cap, remove_special, unparse_special)
    if n < 0:
        cap = -n
        buf = ctypes.create_string_buffer(cap)
        n = llama_cpp.llama_detokenize(vocab, arr, len(toks), buf, cap, remove_special, unparse_special)
    return buf.raw[:n]


def meta_str(model, key: str) -> str | None:
    buf = ctypes.create_string_buffer(1 << 16)
    n = llama_cpp.llama_model_meta_val_str(model, key.encode(), buf, len(buf))
    return None if n < 0 else buf.value.decode("utf-8", "replace")


def apply_builtin(tmpl: bytes | None, msgs: list[dict], add_ass: bool) -> str | None:
    """llama.cpp's C API llama_chat_apply_template: built-in formatters, no Jinja engine.
    tmpl is a Jinja source (detected by substrings) or a built-in name; None means "chatml"."""
    arr = (llama_cpp.llama_chat_message * len(msgs))(
        *[llama_cpp.llama_chat_message(m["role"].encode(), m["content"].encode()) for m in msgs])
    cap = 4096
    buf = ctypes.create_string_buffer(cap)
    n = llama_cpp.llama_chat_apply_template(tmpl, arr, len(msgs), add_ass, buf, cap)
    if n < 0:
        return None
    if n > cap:
        buf = ctypes.create_string_buffer(n)
        n = llama_cpp.llama_chat_apply_template(tmpl, arr, len(msgs), add_ass, buf, n)
    return buf.raw[:n].decode("utf-8")


def token_text(vocab, tok: int) -> str:
    return llama_cpp.llama_vocab_get_text(vocab, tok).decode("utf-8", "replace")


def model_golden(short: str, file_name: str, texts: list[dict]) -> dict:
    path = llamacpp.model_path(file_name)
    llm = llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)
    model, vocab = llm._model.model, llm._model.vocab
    n_vocab = llama_cpp.llama_vocab_n_tokens(vocab)
    eog = [t for t in range(n_vocab) if llama_cpp.llama_vocab_is_eog(vocab, t)]
    control = [t for t in range(n_vocab) if llama_cpp.llama_vocab_is_control(vocab, t)]

    def tok_id(fn) -> int | None:
        t = fn(vocab)
        return None if t < 0 else int(t)

    info = {
        "file": file_name,
        "vocab_type": {1: "SPM", 2: "BPE", 3: "WPM", 4: "UGM", 5: "RWKV", 6: "PLAMO2"}.get(
            llama_cpp.llama_vocab_type(vocab), llama_cpp.llama_vocab_type(vocab)),
        "tokenizer.ggml.model": meta_str(model, "tokenizer.ggml.model"),
        "tokenizer.ggml.pre": meta_str(model, "tokenizer.ggml.pre"),
        "n_vocab": n_vocab,
        "add_bos": bool(llama_cpp.llama_vocab_get_add_bos(vocab)),
        "add_eos": bool(llama_cpp.llama_vocab_get_add_eos(vocab)),
        "bos": tok_id(llama_cpp.llama_vocab_bos),
        "eos": tok_id(llama_cpp.llama_vocab_eos),
        "eot": tok_id(llama_cpp.llama_vocab_eot),
        "pad": tok_id(llama_cpp.llama_vocab_pad),
        "eog_ids": eog,
        "eog_texts": [token_text(vocab, t) for t in eog],
        "n_control_tokens": len(control),
    }

    cases = []
    for entry in texts:
        text = entry["text"]
        case = {"name": entry["name"], "text": text}
        for add_special in (False, True):
            for parse_special in (False, True):
                ids = llm.tokenize(text.encode("utf-8"), add_bos=add_special, special=parse_special)
                key = f"add_special={str(add_special).lower()},parse_special={str(parse_special).lower()}"
                case[key] = ids
        # Pieces and round trip for the llama.cpp tools' default (add_special=true, no special parsing).
        ids = case["add_special=true,parse_special=false"]
        pieces = [piece(vocab, t, True) for t in ids]
        case["pieces_hex"] = [p.hex() for p in pieces]
        case["pieces"] = [p.decode("utf-8", "backslashreplace") for p in pieces]
        case["detokenized"] = detokenize(vocab, ids, False, True).decode("utf-8", "backslashreplace")
        cases.append(case)

    template = meta_str(model, "tokenizer.chat_template")
    bos_text = token_text(vocab, info["bos"]) if info["bos"] is not None else ""
    eos_text = token_text(vocab, info["eos"]) if info["eos"] is not None else ""
    renders = []
    for conv_name, msgs in CONVERSATIONS.items():
        for add_gen in (False, True):
            r = {"conversation": conv_name, "add_generation_prompt": add_gen}
            # What llama.cpp's C API renders with the model's own template (None -> chatml).
            r["llama_cpp_c_api_model_template"] = apply_builtin(
                template.encode() if template else None, msgs, add_gen)
            # llama.cpp's built-in formatter for the model family, by name.
            family = {"smollm2": b"chatml", "gemma3": b"gemma"}[short]
            r[f"llama_cpp_c_api_builtin_{family.decode()}"] = apply_builtin(family, msgs, add_gen)
            if template:
                fmt = Jinja2ChatFormatter(template=template, eos_token=eos_text, bos_token=bos_text,
                                          add_generation_prompt=add_gen)
                r["jinja2_model_template"] = fmt(messages=msgs).prompt
            else:
                r["jinja2_model_template"] = None
            # Token ids of each rendering as a chat front end feeds them to the model: BOS per
            # the GGUF, special-token strings parsed.
            r["ids_add_special_parse_special"] = {
                k: llm.tokenize(v.encode("utf-8"), add_bos=True, special=True)
                for k, v in list(r.items()) if k.startswith(("llama_cpp_", "jinja2_")) and v is not None}
            renders.append(r)

    return {
        "producer": llamacpp.version_info(),
        "how": ("ids: llama_cpp.Llama(vocab_only=True).tokenize(text, add_bos=add_special, "
                "special=parse_special) = llama_tokenize(vocab, ..., add_special, parse_special); "
                "pieces: llama_token_to_piece(lstrip=0, special=true) of the add_special=true,"
                "parse_special=false ids (pieces_hex exact bytes; pieces for reading only, invalid "
                "UTF-8 backslash-escaped); detokenized: llama_detokenize(remove_special=false, "
                "unparse_special=true)"),
        "model": info,
        "chat_template": template,
        "chat_template_renderers": {
            "llama_cpp_c_api_model_template": "llama_chat_apply_template(tmpl=the GGUF's tokenizer.chat_template, or NULL "
                                              "when the GGUF has none, which llama.cpp treats as 'chatml'); a "
                                              "built-in formatter chosen by substring detection, no Jinja",
            "llama_cpp_c_api_builtin_*": "llama_chat_apply_template(tmpl=<built-in template name>)",
            "jinja2_model_template": "llama_cpp.llama_chat_format.Jinja2ChatFormatter (Python jinja2, trim_blocks, "
                                     "lstrip_blocks, as HF transformers) with the GGUF's template; null when the GGUF has none",
        },
        "conversations": CONVERSATIONS,
        "chat": renders,
        "cases": cases,
    }


def main() -> None:
    texts = json.loads((GOLDEN / "texts.json").read_text(encoding="utf-8"))
    for short, file_name in llamacpp.MODELS.items():
        doc = model_golden(short, file_name, texts)
        out = GOLDEN / f"{short}.json"
        out.write_text(json.dumps(doc, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
        m = doc["model"]
        print(f"{out.relative_to(llamacpp.REPO)}: {m['vocab_type']} pre={m['tokenizer.ggml.pre']} "
              f"add_bos={m['add_bos']} bos={m['bos']} eos={m['eos']} eot={m['eot']} eog={m['eog_ids']}")


if __name__ == "__main__":
    main()
