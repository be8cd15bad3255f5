//! Dequantizes every Q4_0/Q4_1/Q5_0/Q5_1/Q8_0/IQ4_NL/IQ4_XS tensor of the real models (SmolLM2:
//! Q4_1 and Q8_0; Gemma 3: Q5_0 and Q8_0) and compares the SHA-256 of the f32 output with
//! gguf-py's (tests/golden/quant/real_tensors.json, scripts/goldens/quant_goldens.py).
//!
//! Skipped with a note when the model files are missing, unless WASM_CHORD_REQUIRE_MODELS is set.

use std::path::PathBuf;

use sha2::{Digest, Sha256};
use wasm_chord_core::gguf::GgufFile;
use wasm_chord_core::quant::{self, TensorType};

const LEGACY: [TensorType; 7] = [
    TensorType::Q4_0,
    TensorType::Q4_1,
    TensorType::Q5_0,
    TensorType::Q5_1,
    TensorType::Q8_0,
    TensorType::IQ4_NL,
    TensorType::IQ4_XS,
];

fn models_dir() -> PathBuf {
    match std::env::var_os("WASM_CHORD_MODELS") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/wasm-chord/models"),
    }
}

fn goldens() -> serde_json::Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/quant/real_tensors.json");
    let text = std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_slice(&text).expect("real_tensors.json parses")
}

/// SHA-256 of the dequantized tensor as little-endian f32 bytes, a few rows at a time so the
/// 670 MB of Gemma's token embedding never sit in memory at once.
fn dequantized_sha256(ty: TensorType, data: &[u8], row_len: usize) -> String {
    let row_bytes = ty.row_bytes(row_len).expect("whole blocks");
    let rows_per_chunk = (1 << 20) / row_len.max(1) + 1;
    let mut out = vec![0.0f32; rows_per_chunk * row_len];
    let mut bytes = Vec::with_capacity(out.len() * 4);
    let mut hasher = Sha256::new();
    for chunk in data.chunks(rows_per_chunk * row_bytes) {
        let out = &mut out[..chunk.len() / row_bytes * row_len];
        quant::dequantize(ty, chunk, out).expect("whole rows");
        bytes.clear();
        bytes.extend(out.iter().flat_map(|x| x.to_le_bytes()));
        hasher.update(&bytes);
    }
    hasher.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

fn check_model(file_name: &str, expected_types: &[TensorType]) {
    let path = models_dir().join(file_name);
    if !path.exists() {
        assert!(
            std::env::var_os("WASM_CHORD_REQUIRE_MODELS").is_none(),
            "{} is missing; run scripts/fetch-models.sh",
            path.display()
        );
        eprintln!("note: skipping {file_name}: {} is missing (scripts/fetch-models.sh fetches it)", path.display());
        return;
    }
    let file = GgufFile::open(&path).expect("model opens");
    let goldens = goldens();
    let entries: Vec<&serde_json::Value> = goldens["tensors"]
        .as_array()
        .expect("tensors array")
        .iter()
        .filter(|t| t["model"] == file_name)
        .collect();

    let mut checked = Vec::new();
    for info in file.tensors().iter().filter(|t| LEGACY.contains(&t.ty)) {
        let golden = entries
            .iter()
            .find(|t| t["tensor"] == info.name.as_str())
            .unwrap_or_else(|| panic!("{file_name}: no golden for tensor {}", info.name));
        assert_eq!(golden["type"], info.ty.name().to_ascii_uppercase(), "{}: type", info.name);
        assert_eq!(golden["n_elements"].as_u64(), Some(info.n_elements() as u64), "{}: element count", info.name);
        let sha = dequantized_sha256(info.ty, file.tensor_data(info), info.row_len());
        assert_eq!(sha, golden["sha256"].as_str().expect("sha256"), "{file_name}: {} ({})", info.name, info.ty);
        checked.push(info.ty);
    }
    for ty in expected_types {
        let n = checked.iter().filter(|&t| t == ty).count();
        assert!(n > 0, "{file_name}: expected {ty} tensors, found none");
        eprintln!("{file_name}: {n} {ty} tensors match gguf-py");
    }
}

#[test]
fn smollm2_q4_1_and_q8_0_tensors_match_gguf_py() {
    check_model("SmolLM2-135M-Instruct.Q4_1.gguf", &[TensorType::Q4_1, TensorType::Q8_0]);
}

#[test]
fn gemma3_q5_0_and_q8_0_tensors_match_gguf_py() {
    check_model("gemma-3-270m-q4_k_m.gguf", &[TensorType::Q5_0, TensorType::Q8_0]);
}
