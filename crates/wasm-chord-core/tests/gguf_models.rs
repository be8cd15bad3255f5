//! Reads the real models and checks what the reader finds against the `gguf` Python
//! package's reading of the same files.
//!
//! Expected numbers come from gguf 0.19 (counts exclude its three pseudo-fields GGUF.*):
//! python3 -c "import gguf,os; r=gguf.GGUFReader(os.path.expanduser('~/.cache/wasm-chord/models/F'));
//!   print(len(r.fields)-3, len(r.tensors), r.data_offset, sum(int(t.n_bytes) for t in r.tensors));
//!   d={t.name:t for t in r.tensors}; t=d[NAME];
//!   print([int(x) for x in t.shape], t.tensor_type.name, int(t.data_offset)-r.data_offset, int(t.n_bytes))"

mod gguf_common;

use std::collections::HashMap;

use wasm_chord_core::gguf::{keys, GgufFile, Value};
use wasm_chord_core::TensorType;

struct Expected {
    file: &'static str,
    arch: &'static str,
    n_metadata: usize,
    n_tensors: usize,
    data_offset: u64,
    total_bytes: usize,
    type_counts: &'static [(TensorType, usize)],
    /// name, dims, type, offset, bytes
    tensors: &'static [(&'static str, &'static [usize], TensorType, u64, usize)],
    first_tokens: [&'static str; 3],
    n_tokens: usize,
    bos: u32,
    eos: u32,
}

const SMOLLM2: Expected = Expected {
    file: gguf_common::SMOLLM2,
    arch: "llama",
    n_metadata: 33,
    n_tensors: 272,
    data_offset: 1785664,
    total_bytes: 96576768,
    type_counts: &[(TensorType::Q4_1, 210), (TensorType::F32, 61), (TensorType::Q8_0, 1)],
    tensors: &[
        ("token_embd.weight", &[576, 49152], TensorType::Q8_0, 0, 30081024),
        ("blk.0.attn_q.weight", &[576, 576], TensorType::Q4_1, 32020992, 207360),
        ("blk.29.ffn_down.weight", &[1536, 576], TensorType::Q4_1, 78845184, 552960),
        ("output_norm.weight", &[576], TensorType::F32, 96574464, 2304),
    ],
    first_tokens: ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
    n_tokens: 49152,
    bos: 1,
    eos: 2,
};

const GEMMA3: Expected = Expected {
    file: gguf_common::GEMMA3,
    arch: "gemma3",
    n_metadata: 33,
    n_tensors: 236,
    data_offset: 6525120,
    total_bytes: 246587904,
    type_counts: &[
        (TensorType::F32, 109),
        (TensorType::Q5_0, 81),
        (TensorType::Q4_K, 27),
        (TensorType::Q8_0, 10),
        (TensorType::Q6_K, 9),
    ],
    tensors: &[
        ("output_norm.weight", &[640], TensorType::F32, 0, 2560),
        ("token_embd.weight", &[640, 262144], TensorType::Q8_0, 2560, 178257920),
        ("blk.0.ffn_down.weight", &[2048, 640], TensorType::Q6_K, 179371008, 1075200),
        ("blk.5.attn_v.weight", &[640, 256], TensorType::Q5_0, 198376448, 112640),
        ("blk.17.post_ffw_norm.weight", &[640], TensorType::F32, 246585344, 2560),
    ],
    first_tokens: ["<pad>", "<eos>", "<bos>"],
    n_tokens: 262144,
    bos: 2,
    eos: 1,
};

fn check(e: &Expected) {
    let Some(path) = gguf_common::model_path(e.file) else { return };
    let file = GgufFile::open(&path).unwrap();
    assert_eq!(file.version(), 3);
    assert_eq!(file.alignment(), 32);
    assert_eq!(file.architecture().unwrap(), e.arch);
    assert_eq!(file.metadata().len(), e.n_metadata);
    assert_eq!(file.tensors().len(), e.n_tensors);
    assert_eq!(file.data_offset(), e.data_offset);
    assert_eq!(file.tensors().iter().map(|t| t.n_bytes).sum::<usize>(), e.total_bytes);

    let mut counts: HashMap<TensorType, usize> = HashMap::new();
    for t in file.tensors() {
        *counts.entry(t.ty).or_default() += 1;
        // Every tensor's data lies inside the file and has the size its dims say.
        let data = file.tensor_data(t);
        assert_eq!(data.len(), t.n_bytes, "{}", t.name);
        let start = data.as_ptr() as usize - file.bytes().as_ptr() as usize;
        assert_eq!(start as u64, file.data_offset() + t.offset, "{}", t.name);
        assert!(start + t.n_bytes <= file.bytes().len(), "{}", t.name);
        assert_eq!(t.n_bytes, t.ty.row_bytes(t.row_len()).unwrap() * t.n_rows(), "{}", t.name);
    }
    assert_eq!(counts, e.type_counts.iter().copied().collect());

    for &(name, dims, ty, offset, n_bytes) in e.tensors {
        let t = file.tensor(name).unwrap_or_else(|| panic!("{name} missing"));
        assert_eq!((t.dims.as_slice(), t.ty, t.offset, t.n_bytes), (dims, ty, offset, n_bytes), "{name}");
    }

    let md = file.metadata();
    let tokens = md.get_str_array(keys::TOKENIZER_TOKENS).unwrap().unwrap();
    assert_eq!(tokens.len(), e.n_tokens);
    assert_eq!(&tokens[..3], &e.first_tokens);
    assert_eq!(md.get_u32(keys::TOKENIZER_BOS_ID).unwrap(), Some(e.bos));
    assert_eq!(md.get_u32(keys::TOKENIZER_EOS_ID).unwrap(), Some(e.eos));
    let n_layers = md.get_u32(&keys::arch_key(e.arch, keys::BLOCK_COUNT)).unwrap().unwrap();
    assert!(file.tensor(&format!("blk.{}.attn_norm.weight", n_layers - 1)).is_some());
    assert!(file.tensor(&format!("blk.{n_layers}.attn_norm.weight")).is_none());

    // The byte entry point sees the same file.
    let bytes = std::fs::read(&path).unwrap();
    let from_bytes = GgufFile::from_bytes(bytes).unwrap();
    assert_eq!(from_bytes.tensors(), file.tensors());
    assert_eq!(from_bytes.metadata(), file.metadata());

    // Long arrays print abbreviated.
    let shown = md.get(keys::TOKENIZER_TOKENS).map(Value::to_string).unwrap();
    assert_eq!(
        shown,
        format!(
            "[{} strings: {:?}, {:?}, {:?}, ...]",
            e.n_tokens, e.first_tokens[0], e.first_tokens[1], e.first_tokens[2]
        )
    );
}

#[test]
fn reads_smollm2() {
    check(&SMOLLM2);
}

#[test]
fn reads_gemma3() {
    check(&GEMMA3);
}

#[test]
fn smollm2_hyper_parameters() {
    let Some(path) = gguf_common::model_path(gguf_common::SMOLLM2) else { return };
    let file = GgufFile::open(path).unwrap();
    let md = file.metadata();
    let k = |s| keys::arch_key("llama", s);
    assert_eq!(md.get_u32(&k(keys::EMBEDDING_LENGTH)).unwrap(), Some(576));
    assert_eq!(md.get_u32(&k(keys::BLOCK_COUNT)).unwrap(), Some(30));
    assert_eq!(md.get_u32(&k(keys::ATTENTION_HEAD_COUNT)).unwrap(), Some(9));
    assert_eq!(md.get_u32(&k(keys::ATTENTION_HEAD_COUNT_KV)).unwrap(), Some(3));
    assert_eq!(md.get_f32(&k(keys::ROPE_FREQ_BASE)).unwrap(), Some(100000.0));
    assert_eq!(md.get_str(keys::TOKENIZER_MODEL).unwrap(), Some("gpt2"));
    // A string key asked for as a number names the key and both types.
    let err = md.get_u32(keys::TOKENIZER_MODEL).unwrap_err().to_string();
    assert!(err.contains("tokenizer.ggml.model") && err.contains("u32") && err.contains("string"), "{err}");
}
