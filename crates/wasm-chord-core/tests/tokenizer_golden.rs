//! Token ids, pieces and detokenized text against llama.cpp goldens (tests/golden/tokenizer/*.json,
//! written by scripts/goldens/tokenizer_goldens.py) on the real model files.

use std::path::PathBuf;

use serde_json::Value;
use wasm_chord_core::gguf::GgufFile;
use wasm_chord_core::tokenizer::{DecodeOptions, StreamDecoder, Tokenizer};

fn golden_dir() -> PathBuf {
    std::env::var_os("WASM_CHORD_TOKENIZER_GOLDENS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/tokenizer"))
}

fn model_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("WASM_CHORD_MODELS") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_default();
    home.join(".cache/wasm-chord/models")
}

/// The golden document and the tokenizer of its model, or `None` (with a note) when the model
/// file is missing and WASM_CHORD_REQUIRE_MODELS is unset.
fn load(model: &str) -> Option<(Value, Tokenizer)> {
    let golden_path = golden_dir().join(format!("{model}.json"));
    let text = std::fs::read_to_string(&golden_path).expect("golden file is readable");
    let golden: Value = serde_json::from_str(&text).expect("golden file is JSON");
    let file_name = golden["model"]["file"].as_str().expect("model.file");
    let path = model_dir().join(file_name);
    if !path.exists() {
        assert!(std::env::var_os("WASM_CHORD_REQUIRE_MODELS").is_none(), "{} is missing", path.display());
        eprintln!("skipping {model}: model file {} is missing (scripts/fetch-models.sh)", path.display());
        return None;
    }
    let file = GgufFile::open(&path).expect("model opens");
    let tok = Tokenizer::from_gguf(&file).expect("tokenizer loads");
    Some((golden, tok))
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array().expect("id list").iter().map(|x| x.as_u64().expect("id") as u32).collect()
}

/// Python's `bytes.decode("utf-8", "backslashreplace")`, which the goldens use for text.
fn backslash_replace(bytes: &[u8]) -> String {
    let mut out = String::new();
    let mut rest = bytes;
    loop {
        match std::str::from_utf8(rest) {
            Ok(s) => {
                out.push_str(s);
                return out;
            }
            Err(e) => {
                let (good, bad) = rest.split_at(e.valid_up_to());
                out.push_str(std::str::from_utf8(good).unwrap_or_default());
                let n = e.error_len().unwrap_or(bad.len());
                for b in &bad[..n] {
                    out.push_str(&format!("\\x{b:02x}"));
                }
                rest = &bad[n..];
            }
        }
    }
}

fn check_model(model: &str) {
    let Some((golden, tok)) = load(model) else { return };
    let info = &golden["model"];
    assert_eq!(tok.n_vocab() as u64, info["n_vocab"].as_u64().unwrap(), "n_vocab");
    assert_eq!(tok.add_bos(), info["add_bos"].as_bool().unwrap(), "add_bos");
    assert_eq!(tok.add_eos(), info["add_eos"].as_bool().unwrap(), "add_eos");
    assert_eq!(tok.bos().map(u64::from), info["bos"].as_u64(), "bos");
    assert_eq!(tok.eos().map(u64::from), info["eos"].as_u64(), "eos");
    assert_eq!(tok.eot().map(u64::from), info["eot"].as_u64(), "eot");
    assert_eq!(tok.eog_ids(), ids(&info["eog_ids"]).as_slice(), "eog ids");

    let mut failures = Vec::new();
    let mut compared = 0;
    let cases = golden["cases"].as_array().expect("cases");
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let text = case["text"].as_str().unwrap();
        for add_special in [false, true] {
            for parse_special in [false, true] {
                let key = format!("add_special={add_special},parse_special={parse_special}");
                let want = ids(&case[key.as_str()]);
                let got = tok.encode(text, add_special, parse_special);
                compared += 1;
                if got != want {
                    failures.push(format!("{model}/{name} {key}:\n  want {want:?}\n  got  {got:?}"));
                }
            }
        }
        let want_ids = ids(&case["add_special=true,parse_special=false"]);
        let want_pieces: Vec<&str> = case["pieces_hex"].as_array().unwrap().iter().map(|p| p.as_str().unwrap()).collect();
        let got_pieces: Vec<String> = want_ids
            .iter()
            .map(|&id| tok.token_to_piece(id).iter().map(|b| format!("{b:02x}")).collect())
            .collect();
        if got_pieces != want_pieces {
            failures.push(format!("{model}/{name} pieces:\n  want {want_pieces:?}\n  got  {got_pieces:?}"));
        }
        let opts = DecodeOptions { remove_special: false, unparse_special: true };
        let mut raw = Vec::new();
        for &id in &want_ids {
            raw.extend_from_slice(tok.token_to_piece(id));
        }
        let got_text = tok.detokenize(&want_ids, opts);
        let want_text = case["detokenized"].as_str().unwrap();
        if backslash_replace(&raw) != want_text && got_text != want_text {
            failures.push(format!("{model}/{name} detokenize:\n  want {want_text:?}\n  got  {got_text:?}"));
        }

        // Decoding gives the text back wherever llama.cpp's does.
        let plain = tok.encode(text, false, false);
        let llama_round_trips = want_text == text
            || tok.bos().and_then(|b| tok.token_text(b)).is_some_and(|bos| want_text.strip_prefix(bos) == Some(text));
        if llama_round_trips {
            let decoded = tok.detokenize(&plain, DecodeOptions { remove_special: false, unparse_special: true });
            if decoded != text {
                failures.push(format!("{model}/{name} round trip: {decoded:?} != {text:?}"));
            }
            // Streaming gives the same text, one token at a time, never a broken character.
            let mut stream = StreamDecoder::with_special(true);
            let mut streamed = String::new();
            for &id in &plain {
                let piece = stream.push(&tok, id);
                assert!(!piece.contains('\u{FFFD}') || text.contains('\u{FFFD}'), "{name}: broken character");
                streamed.push_str(&piece);
            }
            streamed.push_str(&stream.finish());
            if streamed != text {
                failures.push(format!("{model}/{name} stream: {streamed:?} != {text:?}"));
            }
        }
    }
    eprintln!("{model}: {} texts, {compared} id lists compared, {} failures", cases.len(), failures.len());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn smollm2_matches_llama_cpp() {
    check_model("smollm2");
}

#[test]
fn gemma3_matches_llama_cpp() {
    check_model("gemma3");
}
