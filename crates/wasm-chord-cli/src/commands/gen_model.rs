//! `wasm-chord gen-model`: a llama-architecture GGUF with seeded random weights, for benchmarks
//! where no model can be downloaded.
//!
//! Weights are drawn a chunk of rows at a time on rayon threads and quantized straight into the
//! target type, so a 70B file never exists in f32 or f16, in memory or on disk. Element `e` of
//! tensor `t` depends only on (seed, t, e), so the file is the same for any thread count.

use std::path::PathBuf;

use anyhow::{bail, ensure, Context, Result};
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use wasm_chord_core::gguf::{Array, Metadata, TensorInfo, Value};
use wasm_chord_core::quant::mix::{self, MixModel, MixOptions, MixTensor, Target};
use wasm_chord_core::quant::{self, TensorType};

use super::quantize::{write_gguf, RowSource, TensorData, TensorPlan};

/// Write a llama-architecture GGUF with seeded random weights.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Where to write the file.
    #[arg(short, long)]
    pub output: PathBuf,
    /// Dimensions of a known model: 1b (TinyLlama-1.1B), 7b, 13b, 70b (Llama 2); the explicit
    /// flags below override single fields.
    #[arg(long, value_enum)]
    pub shape: Option<ShapeName>,
    /// Embedding width.
    #[arg(long)]
    pub dim: Option<usize>,
    /// Transformer blocks.
    #[arg(long)]
    pub layers: Option<usize>,
    /// Query heads.
    #[arg(long)]
    pub heads: Option<usize>,
    /// Key/value heads (defaults to --heads).
    #[arg(long)]
    pub kv_heads: Option<usize>,
    /// Feed-forward width.
    #[arg(long)]
    pub ffn: Option<usize>,
    /// Vocabulary size (at least 260: 3 specials, 256 bytes, one piece).
    #[arg(long)]
    pub vocab: Option<usize>,
    /// Context length recorded in the metadata.
    #[arg(long)]
    pub ctx: Option<usize>,
    /// A llama-quantize file type (q4_k_m, q8_0, f16, ...) or a tensor type (q4_k, iq4_xs, ...).
    #[arg(short, long, default_value = "q4_k_m")]
    pub quant: String,
    /// Give every matrix the file type's base type (llama-quantize's --pure).
    #[arg(long)]
    pub pure: bool,
    /// Seed of the weights.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Worker threads (default: all cores).
    #[arg(short, long)]
    pub threads: Option<usize>,
}

/// Shapes of well-known llama-architecture models.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShapeName {
    /// TinyLlama-1.1B.
    #[value(name = "1b")]
    B1,
    /// Llama-2-7B.
    #[value(name = "7b")]
    B7,
    /// Llama-2-13B.
    #[value(name = "13b")]
    B13,
    /// Llama-2-70B.
    #[value(name = "70b")]
    B70,
}

/// Hyper-parameters of a llama-architecture model.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LlamaShape {
    pub dim: usize,
    pub n_layer: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    pub ffn: usize,
    pub n_vocab: usize,
    pub ctx: usize,
    pub rope_freq_base: f32,
    pub rms_norm_eps: f32,
}

impl LlamaShape {
    pub fn named(name: ShapeName) -> Self {
        let (dim, n_layer, n_head, n_head_kv, ffn, ctx) = match name {
            ShapeName::B1 => (2048, 22, 32, 4, 5632, 2048),
            ShapeName::B7 => (4096, 32, 32, 32, 11008, 4096),
            ShapeName::B13 => (5120, 40, 40, 40, 13824, 4096),
            ShapeName::B70 => (8192, 80, 64, 8, 28672, 4096),
        };
        LlamaShape {
            dim,
            n_layer,
            n_head,
            n_head_kv,
            ffn,
            n_vocab: 32000,
            ctx,
            rope_freq_base: 10000.0,
            rms_norm_eps: 1e-5,
        }
    }

    /// The shape the arguments ask for: a named shape with overrides, or explicit dimensions.
    pub fn from_args(args: &Args) -> Result<Self> {
        let mut shape = match args.shape {
            Some(name) => Self::named(name),
            None => {
                let missing: Vec<&str> = [
                    ("--dim", args.dim),
                    ("--layers", args.layers),
                    ("--heads", args.heads),
                    ("--ffn", args.ffn),
                ]
                .iter()
                .filter(|(_, v)| v.is_none())
                .map(|(flag, _)| *flag)
                .collect();
                if !missing.is_empty() {
                    bail!("without --shape, give {}", missing.join(", "));
                }
                LlamaShape { n_vocab: 32000, ctx: 2048, ..Self::named(ShapeName::B7) }
            }
        };
        let kv_heads_given = args.kv_heads.is_some();
        shape.dim = args.dim.unwrap_or(shape.dim);
        shape.n_layer = args.layers.unwrap_or(shape.n_layer);
        if let Some(heads) = args.heads {
            shape.n_head = heads;
            if !kv_heads_given {
                shape.n_head_kv = heads;
            }
        }
        shape.n_head_kv = args.kv_heads.unwrap_or(shape.n_head_kv);
        shape.ffn = args.ffn.unwrap_or(shape.ffn);
        shape.n_vocab = args.vocab.unwrap_or(shape.n_vocab);
        shape.ctx = args.ctx.unwrap_or(shape.ctx);
        shape.validate()?;
        Ok(shape)
    }

    fn validate(&self) -> Result<()> {
        ensure!(
            self.dim > 0 && self.n_layer > 0 && self.n_head > 0 && self.n_head_kv > 0 && self.ffn > 0 && self.ctx > 0,
            "every dimension must be positive: {self:?}"
        );
        ensure!(self.dim % self.n_head == 0, "--dim {} is not a multiple of --heads {}", self.dim, self.n_head);
        ensure!(
            self.n_head % self.n_head_kv == 0,
            "--heads {} is not a multiple of --kv-heads {}",
            self.n_head,
            self.n_head_kv
        );
        ensure!(self.head_dim() % 2 == 0, "head size {} must be even for rotary embeddings", self.head_dim());
        ensure!(self.n_vocab >= MIN_VOCAB, "--vocab {} is below the minimum {MIN_VOCAB}", self.n_vocab);
        ensure!(self.n_vocab <= u32::MAX as usize, "--vocab {} does not fit token ids", self.n_vocab);
        Ok(())
    }

    pub fn head_dim(&self) -> usize {
        self.dim / self.n_head
    }

    pub fn kv_dim(&self) -> usize {
        self.head_dim() * self.n_head_kv
    }

    /// The tensors of the model in the order convert_hf_to_gguf.py writes them, dims in GGUF
    /// order (row length first).
    pub fn tensors(&self) -> Vec<(String, Vec<usize>)> {
        let (dim, kv, ffn, vocab) = (self.dim, self.kv_dim(), self.ffn, self.n_vocab);
        let mut t = vec![("token_embd.weight".to_string(), vec![dim, vocab])];
        for l in 0..self.n_layer {
            let blk = |name: &str| format!("blk.{l}.{name}.weight");
            t.push((blk("attn_norm"), vec![dim]));
            t.push((blk("attn_q"), vec![dim, dim]));
            t.push((blk("attn_k"), vec![dim, kv]));
            t.push((blk("attn_v"), vec![dim, kv]));
            t.push((blk("attn_output"), vec![dim, dim]));
            t.push((blk("ffn_norm"), vec![dim]));
            t.push((blk("ffn_gate"), vec![dim, ffn]));
            t.push((blk("ffn_up"), vec![dim, ffn]));
            t.push((blk("ffn_down"), vec![ffn, dim]));
        }
        t.push(("output_norm.weight".to_string(), vec![dim]));
        t.push(("output.weight".to_string(), vec![dim, vocab]));
        t
    }

    /// Model facts the mix rules use, as llama.cpp derives them.
    pub fn mix_model(&self) -> MixModel {
        MixModel::llama(self.n_layer, self.n_head, self.n_head_kv, 0)
    }
}

/// Three special tokens, 256 byte tokens and at least one piece.
pub const MIN_VOCAB: usize = 3 + 256 + 1;

/// SentencePiece's word-start marker.
const SPACE: char = '\u{2581}';

/// llama.cpp's token types (`llama_token_type`).
const TOKEN_NORMAL: i32 = 1;
const TOKEN_UNKNOWN: i32 = 2;
const TOKEN_CONTROL: i32 = 3;
const TOKEN_BYTE: i32 = 6;

/// A SentencePiece-style vocabulary.
#[derive(Clone, Debug, PartialEq)]
pub struct Vocab {
    pub tokens: Vec<String>,
    pub scores: Vec<f32>,
    pub types: Vec<i32>,
}

/// A placeholder SentencePiece vocabulary of `n` tokens laid out as Llama's: `<unk>`, `<s>`,
/// `</s>`, the byte tokens `<0x00>`..`<0xFF>`, then pieces.
///
/// The pieces are single characters, then for each length "▁" plus every lowercase word and then
/// the bare words, so every piece's prefix is a piece and SentencePiece's merge loop reaches
/// each one; any text tokenizes (unknown characters fall back to bytes).
pub fn placeholder_vocab(n: usize) -> Vocab {
    let mut tokens: Vec<String> = vec!["<unk>".into(), "<s>".into(), "</s>".into()];
    let mut types = vec![TOKEN_UNKNOWN, TOKEN_CONTROL, TOKEN_CONTROL];
    for b in 0..=255u8 {
        tokens.push(format!("<0x{b:02X}>"));
        types.push(TOKEN_BYTE);
    }
    let mut scores = vec![0.0f32; tokens.len()];
    let n_fixed = tokens.len();
    let pieces = single_chars().chain((1..).flat_map(|len| {
        // Single letters are already among the characters.
        let bare = if len > 1 { Some(words(len)) } else { None };
        words(len).map(|w| format!("{SPACE}{w}")).chain(bare.into_iter().flatten())
    }));
    for (i, piece) in pieces.take(n.saturating_sub(n_fixed)).enumerate() {
        tokens.push(piece);
        types.push(TOKEN_NORMAL);
        // Real vocabularies score pieces by log-frequency; earlier (shorter) pieces score higher.
        scores.push(-(i as f32));
    }
    tokens.truncate(n);
    types.truncate(n);
    scores.truncate(n);
    Vocab { tokens, scores, types }
}

fn single_chars() -> impl Iterator<Item = String> {
    std::iter::once(SPACE)
        .chain('a'..='z')
        .chain('A'..='Z')
        .chain('0'..='9')
        .chain(".,!?'\"-:;()".chars())
        .map(String::from)
}

/// Every lowercase word of `len` letters, in lexicographic order.
fn words(len: u32) -> impl Iterator<Item = String> {
    let count = 26u64.checked_pow(len).unwrap_or(u64::MAX);
    (0..count).map(move |mut i| {
        let mut w = vec![b'a'; len as usize];
        for c in w.iter_mut().rev() {
            *c = b'a' + (i % 26) as u8;
            i /= 26;
        }
        String::from_utf8(w).unwrap_or_default()
    })
}

/// Standard deviation of the random matrices: small enough that activations stay finite
/// through dozens of layers, as in a freshly initialized Llama.
const WEIGHT_STD: f32 = 0.02;

/// Fills `out` with elements `first..first + out.len()` of tensor `tensor`'s random stream:
/// an Irwin–Hall sum of four uniforms (close to normal) with standard deviation `std`.
///
/// Each element consumes one 64-bit word of a ChaCha8 stream chosen by (seed, tensor), so any
/// chunking of a tensor gives the same values.
pub fn fill_random(seed: u64, tensor: u64, first: u64, std: f32, out: &mut [f32]) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(tensor);
    // The word position counts 32-bit words.
    rng.set_word_pos(u128::from(first) * 2);
    // The sum of four uniform u16 values has mean 2 * 65535 and variance 4 * (65536^2 - 1) / 12.
    let scale = std / (65536.0 / 3f32.sqrt());
    for x in out.iter_mut() {
        let r = rng.next_u64();
        let sum = (r & 0xffff) + ((r >> 16) & 0xffff) + ((r >> 32) & 0xffff) + (r >> 48);
        *x = (sum as f32 - 131070.0) * scale;
    }
}

/// The metadata llama.cpp needs to load the model and run it.
pub fn metadata(shape: &LlamaShape, target: Target, seed: u64) -> Metadata {
    let mut m = Metadata::new();
    m.insert("general.architecture", Value::String("llama".into()));
    m.insert("general.name", Value::String(format!("wasm-chord random llama {}", shape.summary())));
    m.insert(
        "general.description",
        Value::String(format!("seeded random weights (seed {seed}) from wasm-chord gen-model; not a trained model")),
    );
    if let Some(ftype) = target.file_type() {
        m.insert("general.file_type", Value::U32(ftype.id()));
    }
    m.insert("general.quantization_version", Value::U32(2));
    let u32_of = |n: usize| Value::U32(n as u32);
    m.insert("llama.vocab_size", u32_of(shape.n_vocab));
    m.insert("llama.context_length", u32_of(shape.ctx));
    m.insert("llama.embedding_length", u32_of(shape.dim));
    m.insert("llama.block_count", u32_of(shape.n_layer));
    m.insert("llama.feed_forward_length", u32_of(shape.ffn));
    m.insert("llama.attention.head_count", u32_of(shape.n_head));
    m.insert("llama.attention.head_count_kv", u32_of(shape.n_head_kv));
    m.insert("llama.attention.layer_norm_rms_epsilon", Value::F32(shape.rms_norm_eps));
    m.insert("llama.rope.dimension_count", u32_of(shape.head_dim()));
    m.insert("llama.rope.freq_base", Value::F32(shape.rope_freq_base));
    let vocab = placeholder_vocab(shape.n_vocab);
    m.insert("tokenizer.ggml.model", Value::String("llama".into()));
    m.insert("tokenizer.ggml.tokens", Value::Array(Array::String(vocab.tokens)));
    m.insert("tokenizer.ggml.scores", Value::Array(Array::F32(vocab.scores)));
    m.insert("tokenizer.ggml.token_type", Value::Array(Array::I32(vocab.types)));
    m.insert("tokenizer.ggml.unknown_token_id", Value::U32(0));
    m.insert("tokenizer.ggml.bos_token_id", Value::U32(1));
    m.insert("tokenizer.ggml.eos_token_id", Value::U32(2));
    m.insert("tokenizer.ggml.add_bos_token", Value::Bool(true));
    m.insert("tokenizer.ggml.add_eos_token", Value::Bool(false));
    m
}

impl LlamaShape {
    fn summary(&self) -> String {
        format!(
            "dim {} layers {} heads {}/{} ffn {} vocab {}",
            self.dim, self.n_layer, self.n_head, self.n_head_kv, self.ffn, self.n_vocab
        )
    }
}

/// Where a tensor's rows come from.
struct RandomRows {
    seed: u64,
    index: u64,
    row_len: usize,
    /// Vectors (norms) are all ones; matrices random.
    ones: bool,
}

impl RowSource for RandomRows {
    fn rows(&self, first_row: usize, out: &mut [f32]) -> Result<()> {
        if self.ones {
            out.fill(1.0);
        } else {
            let first = (first_row as u64) * self.row_len as u64;
            fill_random(self.seed, self.index, first, WEIGHT_STD, out);
        }
        Ok(())
    }
}

pub fn run(args: Args) -> Result<()> {
    let shape = LlamaShape::from_args(&args)?;
    let mut target = Target::from_name(&args.quant)
        .with_context(|| format!("unknown type or mix {:?}", args.quant))?;
    if args.pure {
        target = Target::Pure(target.default_type());
    }
    let tensors = shape.tensors();
    let mix_tensors: Vec<MixTensor<'_>> = tensors
        .iter()
        .map(|(name, dims)| MixTensor { name, shape: dims, ty: TensorType::F32 })
        .collect();
    let types = mix::plan(target, &shape.mix_model(), &mix_tensors, &MixOptions::default());
    for ty in &types {
        ensure!(quant::has_quantizer(*ty), "wasm-chord cannot write {ty} tensors yet");
    }

    let mut plans = Vec::with_capacity(tensors.len());
    for (index, ((name, dims), ty)) in tensors.iter().zip(types).enumerate() {
        let info = TensorInfo::new(name.clone(), dims.clone(), ty)?;
        let source = RandomRows { seed: args.seed, index: index as u64, row_len: dims[0], ones: dims.len() == 1 };
        plans.push(TensorPlan { info, data: TensorData::Rows(Box::new(source)) });
    }
    let metadata = metadata(&shape, target, args.seed);
    write_gguf(&args.output, metadata, plans, args.threads)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llama_sized_vocab_is_unique_and_prefix_closed() {
        let v = placeholder_vocab(32000);
        assert_eq!((v.tokens.len(), v.scores.len(), v.types.len()), (32000, 32000, 32000));
        let set: std::collections::HashSet<&str> = v.tokens.iter().map(String::as_str).collect();
        assert_eq!(set.len(), 32000);
        // SentencePiece merges adjacent pieces, so each multi-character piece needs a prefix piece.
        for t in &v.tokens[259..] {
            let chars: Vec<char> = t.chars().collect();
            if chars.len() > 1 {
                let prefix: String = chars[..chars.len() - 1].iter().collect();
                assert!(set.contains(prefix.as_str()), "{t:?} has no prefix piece");
            }
        }
        assert!(set.contains("\u{2581}the"));
        assert!(v.scores[259..].windows(2).all(|w| w[0] > w[1]));
    }

    #[test]
    fn random_values_do_not_depend_on_chunking() {
        let mut whole = vec![0f32; 1000];
        fill_random(3, 5, 0, 0.02, &mut whole);
        let mut parts = vec![0f32; 1000];
        let (a, b) = parts.split_at_mut(337);
        fill_random(3, 5, 0, 0.02, a);
        fill_random(3, 5, 337, 0.02, b);
        assert_eq!(whole, parts);
        let mut other = vec![0f32; 1000];
        fill_random(3, 6, 0, 0.02, &mut other);
        assert_ne!(whole, other);
    }

    #[test]
    fn named_shapes_match_the_real_models() {
        let s = LlamaShape::named(ShapeName::B7);
        let params: usize = s.tensors().iter().map(|(_, d)| d.iter().product::<usize>()).sum();
        // Llama-2-7B has 6,738,415,616 parameters.
        assert_eq!(params, 6_738_415_616);
        let s = LlamaShape::named(ShapeName::B1);
        let params: usize = s.tensors().iter().map(|(_, d)| d.iter().product::<usize>()).sum();
        // TinyLlama-1.1B has 1,100,048,384 parameters.
        assert_eq!(params, 1_100_048_384);
        assert!(LlamaShape::named(ShapeName::B70).mix_model().is_70b);
    }
}
