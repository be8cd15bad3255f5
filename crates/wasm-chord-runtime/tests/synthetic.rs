//! Tiny random models of each architecture, built in memory: every graph loads its tensor list,
//! batched prefill agrees with token-by-token decoding, qwen2's biases take part, and gemma3's
//! sliding window hides tokens that fell out of it.

use std::collections::HashMap;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use wasm_chord_core::backend::SharedBytes;
use wasm_chord_core::hparams::{HParamsError, MetadataSource};
use wasm_chord_core::TensorType;
use wasm_chord_runtime::{LoadOptions, Model, ModelSource, Outputs, TensorView};

const N_EMBD: usize = 64;
const N_HEAD: usize = 4;
const N_HEAD_KV: usize = 2;
const HEAD_DIM: usize = 16;
const N_FF: usize = 96;
const N_VOCAB: usize = 50;

#[derive(Default)]
struct Synthetic {
    u32s: HashMap<String, u32>,
    f32s: HashMap<String, f32>,
    arch: String,
    tensors: HashMap<String, TensorView>,
}

impl MetadataSource for Synthetic {
    fn get_u32(&self, key: &str) -> Result<Option<u32>, HParamsError> {
        Ok(self.u32s.get(key).copied())
    }
    fn get_f32(&self, key: &str) -> Result<Option<f32>, HParamsError> {
        Ok(self.f32s.get(key).copied())
    }
    fn get_str(&self, key: &str) -> Result<Option<String>, HParamsError> {
        Ok((key == "general.architecture").then(|| self.arch.clone()))
    }
    fn array_len(&self, _: &str) -> Result<Option<usize>, HParamsError> {
        Ok(None)
    }
}

impl ModelSource for Synthetic {
    fn metadata(&self) -> &dyn MetadataSource {
        self
    }
    fn tensor(&self, name: &str) -> Option<TensorView> {
        self.tensors.get(name).cloned()
    }
}

impl Synthetic {
    fn new(arch: &str, n_layer: usize) -> Self {
        let mut s = Synthetic { arch: arch.to_string(), ..Default::default() };
        for (k, v) in [
            ("context_length", 256),
            ("embedding_length", N_EMBD),
            ("block_count", n_layer),
            ("feed_forward_length", N_FF),
            ("attention.head_count", N_HEAD),
            ("attention.head_count_kv", N_HEAD_KV),
            ("attention.key_length", HEAD_DIM),
            ("attention.value_length", HEAD_DIM),
            ("vocab_size", N_VOCAB),
        ] {
            s.u32s.insert(format!("{arch}.{k}"), v as u32);
        }
        s.f32s.insert(format!("{arch}.attention.layer_norm_rms_epsilon"), 1e-6);
        s
    }

    fn random(&mut self, rng: &mut ChaCha8Rng, name: &str, dims: &[usize], scale: f32) {
        let n: usize = dims.iter().product();
        let values: Vec<f32> = (0..n).map(|_| (rng.gen::<f32>() * 2.0 - 1.0) * scale).collect();
        self.set(name, dims, &values);
    }

    fn set(&mut self, name: &str, dims: &[usize], values: &[f32]) {
        let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.tensors.insert(name.to_string(), TensorView { ty: TensorType::F32, dims: dims.to_vec(), bytes: SharedBytes::from_vec(bytes) });
    }

    /// The tensors every architecture here shares, plus `extra` per-layer norms and biases.
    fn weights(mut self, seed: u64, layer_norms: &[&str], biases: bool) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let (q, kv) = (N_HEAD * HEAD_DIM, N_HEAD_KV * HEAD_DIM);
        self.random(&mut rng, "token_embd.weight", &[N_EMBD, N_VOCAB], 1.0);
        self.set("output_norm.weight", &[N_EMBD], &[1.0; N_EMBD]);
        let n_layer = self.u32s[&format!("{}.block_count", self.arch)] as usize;
        for l in 0..n_layer {
            let b = |p: &str| format!("blk.{l}.{p}");
            for (p, dims) in [
                ("attn_q.weight", [N_EMBD, q]),
                ("attn_k.weight", [N_EMBD, kv]),
                ("attn_v.weight", [N_EMBD, kv]),
                ("attn_output.weight", [q, N_EMBD]),
                ("ffn_gate.weight", [N_EMBD, N_FF]),
                ("ffn_up.weight", [N_EMBD, N_FF]),
                ("ffn_down.weight", [N_FF, N_EMBD]),
            ] {
                self.random(&mut rng, &b(p), &dims, 0.3);
            }
            for p in ["attn_norm.weight", "ffn_norm.weight"].iter().chain(layer_norms) {
                let dims = if p.contains("_q_norm") || p.contains("_k_norm") { HEAD_DIM } else { N_EMBD };
                self.set(&b(p), &[dims], &vec![1.0; dims]);
            }
            if biases {
                self.random(&mut rng, &b("attn_q.bias"), &[q], 0.5);
                self.random(&mut rng, &b("attn_k.bias"), &[kv], 0.5);
                self.random(&mut rng, &b("attn_v.bias"), &[kv], 0.5);
            }
        }
        self
    }
}

fn load(src: &Synthetic) -> Model {
    Model::load_source(src, &LoadOptions { n_threads: 2, ggml_rounding: false, ..LoadOptions::default() }).expect("load synthetic model")
}

const TOKENS: [u32; 10] = [3, 14, 15, 9, 26, 5, 35, 8, 9, 7];

fn assert_prefill_matches_decode(model: &Model) {
    let n = model.n_vocab();
    let mut kv = model.new_kv_cache(32).unwrap();
    let all = model.forward(&mut kv, &TOKENS, Outputs::All).unwrap();
    let mut kv1 = model.new_kv_cache(32).unwrap();
    for (i, &t) in TOKENS.iter().enumerate() {
        let one = model.forward(&mut kv1, &[t], Outputs::Last).unwrap();
        let d = one.iter().zip(&all[i * n..(i + 1) * n]).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(d < 1e-3, "{}: position {i} differs by {d}", model.arch_name());
        assert!(one.iter().all(|v| v.is_finite()));
    }
}

#[test]
fn llama_prefill_matches_decode() {
    let src = Synthetic::new("llama", 2).weights(1, &[], false);
    assert_prefill_matches_decode(&load(&src));
}

#[test]
fn qwen2_uses_its_biases() {
    let src = Synthetic::new("qwen2", 2).weights(2, &[], true);
    let model = load(&src);
    assert_prefill_matches_decode(&model);
    let mut kv = model.new_kv_cache(32).unwrap();
    let with = model.forward(&mut kv, &TOKENS, Outputs::Last).unwrap();

    let mut zeroed = Synthetic::new("qwen2", 2).weights(2, &[], true);
    for l in 0..2 {
        zeroed.set(&format!("blk.{l}.attn_q.bias"), &[N_HEAD * HEAD_DIM], &[0.0; N_HEAD * HEAD_DIM]);
    }
    let mut kv = model.new_kv_cache(32).unwrap();
    let without = load(&zeroed).forward(&mut kv, &TOKENS, Outputs::Last).unwrap();
    assert_ne!(with, without, "the q bias must change the logits");

    let no_bias = Synthetic::new("qwen2", 2).weights(2, &[], false);
    let err = Model::load_source(&no_bias, &LoadOptions::default()).err().expect("qwen2 requires biases").to_string();
    assert!(err.contains("bias"), "{err}");
}

const GEMMA_NORMS: [&str; 4] = ["attn_q_norm.weight", "attn_k_norm.weight", "post_attention_norm.weight", "post_ffw_norm.weight"];

#[test]
fn gemma3_prefill_matches_decode() {
    let mut src = Synthetic::new("gemma3", 3).weights(3, &GEMMA_NORMS, false);
    src.u32s.insert("gemma3.attention.sliding_window".into(), 4);
    src.u32s.insert("gemma3.attention.sliding_window_pattern".into(), 2);
    assert_prefill_matches_decode(&load(&src));
}

#[test]
fn gemma3_sliding_window_forgets_old_tokens() {
    // One local layer with a window of 4: position 9 sees positions 6..=9 only.
    let mut src = Synthetic::new("gemma3", 1).weights(4, &GEMMA_NORMS, false);
    src.u32s.insert("gemma3.attention.sliding_window".into(), 4);
    let model = load(&src);
    let run = |tokens: &[u32]| {
        let mut kv = model.new_kv_cache(32).unwrap();
        model.forward(&mut kv, tokens, Outputs::Last).unwrap()
    };
    let base = run(&TOKENS);
    let mut early = TOKENS;
    early[5] = 40; // outside the window of the last position
    assert_eq!(run(&early), base);
    let mut inside = TOKENS;
    inside[6] = 40; // inside it
    assert_ne!(run(&inside), base);

    // Without the window every position is seen.
    src.u32s.remove("gemma3.attention.sliding_window");
    let global = load(&src);
    let mut kv = global.new_kv_cache(32).unwrap();
    let a = global.forward(&mut kv, &TOKENS, Outputs::Last).unwrap();
    let mut kv = global.new_kv_cache(32).unwrap();
    let b = global.forward(&mut kv, &early, Outputs::Last).unwrap();
    assert_ne!(a, b);
}

#[test]
fn missing_and_misshapen_tensors_are_named() {
    let mut src = Synthetic::new("llama", 1).weights(5, &[], false);
    src.tensors.remove("blk.0.ffn_up.weight");
    let err = Model::load_source(&src, &LoadOptions::default()).err().unwrap().to_string();
    assert!(err.contains("blk.0.ffn_up.weight"), "{err}");
    let mut src = Synthetic::new("llama", 1).weights(5, &[], false);
    src.set("blk.0.attn_k.weight", &[N_EMBD, 3], &vec![0.0; N_EMBD * 3]);
    let err = Model::load_source(&src, &LoadOptions::default()).err().unwrap().to_string();
    assert!(err.contains("blk.0.attn_k.weight"), "{err}");
}
