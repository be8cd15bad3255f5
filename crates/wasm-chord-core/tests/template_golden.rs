//! Chat template renderings against llama.cpp goldens (tests/golden/tokenizer/*.json): the GGUF's
//! own Jinja template against Python jinja2, built-in formats against llama.cpp's C API, and the
//! rendered prompts' token ids.

use std::path::PathBuf;

use serde_json::Value;
use wasm_chord_core::gguf::GgufFile;
use wasm_chord_core::template::{Builtin, ChatMessage, ChatTemplate};
use wasm_chord_core::tokenizer::Tokenizer;

fn model_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("WASM_CHORD_MODELS") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_default();
    home.join(".cache/wasm-chord/models")
}

fn load(model: &str) -> Option<(Value, GgufFile)> {
    let golden_path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("tests/golden/tokenizer/{model}.json"));
    let text = std::fs::read_to_string(&golden_path).expect("golden file is readable");
    let golden: Value = serde_json::from_str(&text).expect("golden file is JSON");
    let path = model_dir().join(golden["model"]["file"].as_str().expect("model.file"));
    if !path.exists() {
        assert!(std::env::var_os("WASM_CHORD_REQUIRE_MODELS").is_none(), "{} is missing", path.display());
        eprintln!("skipping {model}: model file {} is missing (scripts/fetch-models.sh)", path.display());
        return None;
    }
    Some((golden, GgufFile::open(&path).expect("model opens")))
}

fn messages(golden: &Value, conversation: &str) -> Vec<ChatMessage> {
    golden["conversations"][conversation]
        .as_array()
        .expect("conversation")
        .iter()
        .map(|m| ChatMessage::new(m["role"].as_str().unwrap(), m["content"].as_str().unwrap()))
        .collect()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array().expect("id list").iter().map(|x| x.as_u64().expect("id") as u32).collect()
}

/// Renders every golden conversation with `template` and compares with the `renderer` strings
/// and their token ids; returns how many renderings were compared.
fn check(golden: &Value, tok: &Tokenizer, template: &ChatTemplate, renderer: &str) -> usize {
    let mut n = 0;
    for entry in golden["chat"].as_array().expect("chat") {
        let conversation = entry["conversation"].as_str().unwrap();
        let add_gen = entry["add_generation_prompt"].as_bool().unwrap();
        let want = entry[renderer].as_str().unwrap_or_else(|| panic!("{renderer} rendering"));
        let got = template.render(&messages(golden, conversation), add_gen).expect("renders");
        assert_eq!(got, want, "{renderer} {conversation} add_generation_prompt={add_gen}");
        if let Some(want_ids) = entry["ids_add_special_parse_special"].get(renderer) {
            assert_eq!(tok.encode(&got, true, true), ids(want_ids), "{renderer} {conversation} ids");
        }
        n += 1;
    }
    n
}

#[test]
fn smollm2_jinja_template_matches_jinja2() {
    let Some((golden, file)) = load("smollm2") else { return };
    let tok = Tokenizer::from_gguf(&file).expect("tokenizer");
    let template = ChatTemplate::from_gguf(&file, None).expect("template");
    assert_eq!(template.jinja_source(), golden["chat_template"].as_str());
    let n = check(&golden, &tok, &template, "jinja2_model_template");
    // llama.cpp's C API has no Jinja engine: for this template it runs its ChatML formatter, which
    // lacks the template's default system message, so the built-in is compared with it instead.
    let chatml = ChatTemplate::from_gguf(&file, Some("chatml")).expect("chatml");
    let n2 = check(&golden, &tok, &chatml, "llama_cpp_c_api_builtin_chatml");
    eprintln!("smollm2: {} renderings compared", n + n2);
}

#[test]
fn gemma3_uses_the_builtin_gemma_format() {
    let Some((golden, file)) = load("gemma3") else { return };
    let tok = Tokenizer::from_gguf(&file).expect("tokenizer");
    let template = ChatTemplate::from_gguf(&file, None).expect("template");
    assert!(golden["chat_template"].is_null());
    assert_eq!(template.builtin(), Some(Builtin::Gemma));
    let n = check(&golden, &tok, &template, "llama_cpp_c_api_builtin_gemma");
    // With the override, the llama.cpp C API's own fallback for a file without a template.
    let chatml = ChatTemplate::from_gguf(&file, Some("chatml")).expect("chatml");
    let n2 = check(&golden, &tok, &chatml, "llama_cpp_c_api_model_template");
    eprintln!("gemma3: {} renderings compared", n + n2);
}
