//! llama-quantize's file types ("Q4_K_M", ...) and its choice of a tensor type per tensor.
//!
//! A file type names a mix, not a single type: llama.cpp's `llama_tensor_get_type`
//! (src/llama-quant.cpp) gives the output matrix Q6_K, some attention-value and feed-forward-down
//! layers more bits, keeps norms in their input type, and falls back to a 32-element block type
//! when a row is not a whole number of 256-element super-blocks. [`plan`] reproduces that choice
//! for llama-style (dense, non-Falcon) models, so files we write carry the same tensor types as
//! llama-quantize's.

use super::TensorType;

/// llama.cpp's `llama_ftype` values that wasm-chord writes: the value of `general.file_type`.
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FileType {
    F32,
    F16,
    BF16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q2_K,
    Q3_K_S,
    Q3_K_M,
    Q3_K_L,
    Q4_K_S,
    Q4_K_M,
    Q5_K_S,
    Q5_K_M,
    Q6_K,
    IQ4_NL,
}

impl FileType {
    /// Every file type, in the order llama-quantize lists them.
    pub const ALL: [FileType; 18] = [
        FileType::Q4_0,
        FileType::Q4_1,
        FileType::Q5_0,
        FileType::Q5_1,
        FileType::IQ4_NL,
        FileType::Q2_K,
        FileType::Q3_K_S,
        FileType::Q3_K_M,
        FileType::Q3_K_L,
        FileType::Q4_K_S,
        FileType::Q4_K_M,
        FileType::Q5_K_S,
        FileType::Q5_K_M,
        FileType::Q6_K,
        FileType::Q8_0,
        FileType::F16,
        FileType::BF16,
        FileType::F32,
    ];

    /// The `LLAMA_FTYPE_*` id stored in `general.file_type`.
    pub fn id(self) -> u32 {
        match self {
            Self::F32 => 0,
            Self::F16 => 1,
            Self::Q4_0 => 2,
            Self::Q4_1 => 3,
            Self::Q8_0 => 7,
            Self::Q5_0 => 8,
            Self::Q5_1 => 9,
            Self::Q2_K => 10,
            Self::Q3_K_S => 11,
            Self::Q3_K_M => 12,
            Self::Q3_K_L => 13,
            Self::Q4_K_S => 14,
            Self::Q4_K_M => 15,
            Self::Q5_K_S => 16,
            Self::Q5_K_M => 17,
            Self::Q6_K => 18,
            Self::IQ4_NL => 25,
            Self::BF16 => 32,
        }
    }

    /// The file type with `LLAMA_FTYPE_*` id `id`, if it is one of ours.
    pub fn from_id(id: u32) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.id() == id)
    }

    /// llama-quantize's name ("Q4_K_M", "F16").
    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "F32",
            Self::F16 => "F16",
            Self::BF16 => "BF16",
            Self::Q4_0 => "Q4_0",
            Self::Q4_1 => "Q4_1",
            Self::Q5_0 => "Q5_0",
            Self::Q5_1 => "Q5_1",
            Self::Q8_0 => "Q8_0",
            Self::Q2_K => "Q2_K",
            Self::Q3_K_S => "Q3_K_S",
            Self::Q3_K_M => "Q3_K_M",
            Self::Q3_K_L => "Q3_K_L",
            Self::Q4_K_S => "Q4_K_S",
            Self::Q4_K_M => "Q4_K_M",
            Self::Q5_K_S => "Q5_K_S",
            Self::Q5_K_M => "Q5_K_M",
            Self::Q6_K => "Q6_K",
            Self::IQ4_NL => "IQ4_NL",
        }
    }

    /// Parses a name case-insensitively; "Q4_K" and "Q5_K" mean their medium mixes and "Q3_K"
    /// its medium mix, as in llama-quantize.
    pub fn from_name(name: &str) -> Option<Self> {
        let upper = name.to_ascii_uppercase();
        match upper.as_str() {
            "Q3_K" => return Some(Self::Q3_K_M),
            "Q4_K" => return Some(Self::Q4_K_M),
            "Q5_K" => return Some(Self::Q5_K_M),
            _ => {}
        }
        Self::ALL.into_iter().find(|f| f.name() == upper)
    }

    /// The type most tensors get (llama.cpp's `llama_ftype_get_default_type`).
    pub fn default_type(self) -> TensorType {
        match self {
            Self::F32 => TensorType::F32,
            Self::F16 => TensorType::F16,
            Self::BF16 => TensorType::BF16,
            Self::Q4_0 => TensorType::Q4_0,
            Self::Q4_1 => TensorType::Q4_1,
            Self::Q5_0 => TensorType::Q5_0,
            Self::Q5_1 => TensorType::Q5_1,
            Self::Q8_0 => TensorType::Q8_0,
            Self::Q2_K => TensorType::Q2_K,
            Self::Q3_K_S | Self::Q3_K_M | Self::Q3_K_L => TensorType::Q3_K,
            Self::Q4_K_S | Self::Q4_K_M => TensorType::Q4_K,
            Self::Q5_K_S | Self::Q5_K_M => TensorType::Q5_K,
            Self::Q6_K => TensorType::Q6_K,
            Self::IQ4_NL => TensorType::IQ4_NL,
        }
    }

    /// The file type llama.cpp guesses for a file whose tensors are mostly `ty`
    /// (`llama_model_loader`'s guess), used for files quantized to one type throughout.
    pub fn guess_for(ty: TensorType) -> Option<Self> {
        Some(match ty {
            TensorType::F32 => Self::F32,
            TensorType::F16 => Self::F16,
            TensorType::BF16 => Self::BF16,
            TensorType::Q4_0 => Self::Q4_0,
            TensorType::Q4_1 => Self::Q4_1,
            TensorType::Q5_0 => Self::Q5_0,
            TensorType::Q5_1 => Self::Q5_1,
            TensorType::Q8_0 => Self::Q8_0,
            TensorType::Q2_K => Self::Q2_K,
            TensorType::Q3_K => Self::Q3_K_M,
            TensorType::Q4_K => Self::Q4_K_M,
            TensorType::Q5_K => Self::Q5_K_M,
            TensorType::Q6_K => Self::Q6_K,
            TensorType::IQ4_NL => Self::IQ4_NL,
            TensorType::Q8_K | TensorType::IQ4_XS => return None,
        })
    }
}

impl std::fmt::Display for FileType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What to quantize to: a llama-quantize mix, or one type for every quantizable tensor
/// (llama-quantize's `--pure`, or a type that names no mix such as `q4_k`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Mix(FileType),
    Pure(TensorType),
}

impl Target {
    /// Parses a file-type name (a mix) or else a tensor-type name (pure). Q8_K is refused: it
    /// is ggml's intermediate type for dot products, which no backend multiplies weights in.
    pub fn from_name(name: &str) -> Option<Self> {
        FileType::from_name(name).map(Target::Mix).or_else(|| {
            TensorType::from_name(name).filter(|&t| t != TensorType::Q8_K).map(Target::Pure)
        })
    }

    /// The type most tensors get.
    pub fn default_type(self) -> TensorType {
        match self {
            Self::Mix(f) => f.default_type(),
            Self::Pure(t) => t,
        }
    }

    /// The `general.file_type` to record; `None` for a type llama.cpp has no file type for.
    pub fn file_type(self) -> Option<FileType> {
        match self {
            Self::Mix(f) => Some(f),
            Self::Pure(t) => FileType::guess_for(t),
        }
    }
}

/// What the mix rules need to know about the model (llama.cpp reads these from its hparams).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MixModel {
    /// Transformer blocks (`<arch>.block_count`).
    pub n_layer: usize,
    /// Query heads per KV head (`head_count / head_count_kv`); 1 without grouped-query attention.
    pub n_gqa: usize,
    /// Experts per MoE layer; 0 for a dense model.
    pub n_expert: usize,
    /// llama.cpp classes the model as "70B" (llama architecture, 80 layers, grouped-query
    /// attention), which gives attention-value matrices at least Q5_K.
    pub is_70b: bool,
}

impl MixModel {
    /// The model facts for a llama-architecture model of these dimensions.
    pub fn llama(n_layer: usize, n_head: usize, n_head_kv: usize, n_expert: usize) -> Self {
        MixModel {
            n_layer,
            n_gqa: n_head.checked_div(n_head_kv).unwrap_or(1),
            n_expert,
            is_70b: n_expert != 8 && n_layer == 80 && n_head != n_head_kv,
        }
    }
}

/// A tensor as the mix rules see it.
#[derive(Clone, Copy, Debug)]
pub struct MixTensor<'a> {
    pub name: &'a str,
    /// GGUF order: `shape[0]` is the row length.
    pub shape: &'a [usize],
    /// The type the tensor has now (kept for tensors that are never quantized).
    pub ty: TensorType,
}

/// Overrides of llama-quantize's options of the same names.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MixOptions {
    /// `--output-tensor-type`: the type of `output.weight`.
    pub output_tensor_type: Option<TensorType>,
    /// `--token-embedding-type`: the type of `token_embd.weight`.
    pub token_embedding_type: Option<TensorType>,
    /// `--leave-output-tensor`: keep `output.weight` in its current type.
    pub leave_output_tensor: bool,
}

/// The broad roles llama.cpp's rules distinguish (its `tensor_category`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Category {
    TokenEmbd,
    AttnQ,
    AttnK,
    AttnV,
    AttnQkv,
    AttnKvB,
    AttnOutput,
    FfnUp,
    FfnGate,
    FfnDown,
    Output,
    Other,
}

impl Category {
    fn of(name: &str) -> Self {
        match name {
            "output.weight" => return Self::Output,
            "token_embd.weight" | "per_layer_token_embd.weight" => return Self::TokenEmbd,
            _ => {}
        }
        // Substring matches in llama.cpp's order: the first that matches decides.
        const PATTERNS: [(&str, Category); 9] = [
            ("attn_qkv.weight", Category::AttnQkv),
            ("attn_kv_b.weight", Category::AttnKvB),
            ("attn_v.weight", Category::AttnV),
            ("attn_k.weight", Category::AttnK),
            ("attn_q.weight", Category::AttnQ),
            ("attn_output.weight", Category::AttnOutput),
            ("ffn_up", Category::FfnUp),
            ("ffn_gate", Category::FfnGate),
            ("ffn_down", Category::FfnDown),
        ];
        PATTERNS
            .iter()
            .find(|(pattern, _)| name.contains(pattern))
            .map_or(Self::Other, |&(_, category)| category)
    }

    /// Attention-value-like matrices, which are the most sensitive to quantization.
    fn is_attn_v(self) -> bool {
        matches!(self, Self::AttnV | Self::AttnQkv | Self::AttnKvB)
    }
}

/// The layer index in a name "blk.N.…".
fn layer_of(name: &str) -> Option<usize> {
    let rest = name.strip_prefix("blk.")?;
    let digits = rest.split('.').next()?;
    digits.parse().ok()
}

/// The order in which llama.cpp visits tensors (and llama-quantize writes them): tensors outside
/// the blocks first, then block by block, by name within each. The layer counters of the mix
/// rules advance in this order.
pub fn llama_order(names: &[&str]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..names.len()).collect();
    // llama.cpp's comparer gives names without a layer the layer -1.
    order.sort_by(|&a, &b| {
        let key = |i: usize| (layer_of(names[i]).map_or(-1i64, |l| l as i64), names[i]);
        key(a).cmp(&key(b))
    });
    order
}

/// Whether llama-quantize would quantize this tensor at all (`tensor_allows_quantization`, the
/// parts that apply to llama-style models).
fn allows_quantization(t: &MixTensor<'_>, opts: &MixOptions) -> bool {
    if opts.leave_output_tensor && t.name == "output.weight" {
        return false;
    }
    // ggml_n_dims ignores trailing dimensions of 1: a [n, 1] tensor is a vector.
    let n_dims = t.shape.iter().rposition(|&d| d > 1).map_or(1, |i| i + 1);
    if n_dims < 2 {
        return false;
    }
    const NEVER: [&str; 10] = [
        "_norm.weight",
        "token_types.weight",
        "shortconv.conv.weight",
        "ffn_gate_inp.weight",
        "altup",
        "laurel",
        "per_layer_model_proj",
        "ssm_conv1d",
        "attn_rel_b.weight",
        "position_embd",
    ];
    t.name.ends_with("weight") && !NEVER.iter().any(|p| t.name.contains(p))
}

/// llama.cpp's `use_more_bits`: the first and last eighth of the layers, and every third one
/// between them, get more bits in the medium k-quant mixes.
fn use_more_bits(i_layer: usize, n_layers: usize) -> bool {
    let (i, n) = (i_layer as i64, n_layers as i64);
    i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2
}

/// The type for a row length that the chosen type cannot hold in whole blocks
/// (`tensor_type_fallback`): a 32-element block type of similar size, else F16.
fn fallback(ty: TensorType, row_len: usize) -> TensorType {
    if row_len % ty.block_len() == 0 {
        return ty;
    }
    let smaller = match ty {
        TensorType::Q2_K | TensorType::Q3_K => TensorType::Q4_0,
        TensorType::Q4_K => TensorType::Q5_0,
        TensorType::Q5_K => TensorType::Q5_1,
        TensorType::Q6_K | TensorType::Q8_K => TensorType::Q8_0,
        TensorType::IQ4_XS => TensorType::IQ4_NL,
        other => other,
    };
    if row_len % smaller.block_len() == 0 {
        smaller
    } else {
        TensorType::F16
    }
}

/// Counters llama.cpp keeps while it walks the tensors.
#[derive(Default)]
struct Counters {
    n_attention_wv: usize,
    i_attention_wv: usize,
    i_ffn_down: usize,
}

/// llama.cpp's `llama_tensor_get_type_impl` for the file types of [`FileType`].
fn mix_type(
    ftype: FileType,
    model: &MixModel,
    tied_embeddings: bool,
    counters: &mut Counters,
    t: &MixTensor<'_>,
    category: Category,
    opts: &MixOptions,
) -> TensorType {
    use FileType as F;
    use TensorType as T;
    let mut ty = ftype.default_type();

    if category == Category::Output || (tied_embeddings && category == Category::TokenEmbd) {
        if let Some(out) = opts.output_tensor_type {
            return out;
        }
        let row_len = t.shape.first().copied().unwrap_or(0);
        if row_len % ty.block_len() != 0 {
            ty = T::Q8_0;
        } else if ty != T::Q8_0 {
            ty = T::Q6_K;
        }
    } else if category == Category::TokenEmbd {
        if let Some(embd) = opts.token_embedding_type {
            ty = embd;
        }
    } else if category.is_attn_v() {
        ty = match ftype {
            F::Q2_K if model.n_gqa >= 4 => T::Q4_K,
            F::Q2_K => T::Q3_K,
            F::Q3_K_M if counters.i_attention_wv < 2 => T::Q5_K,
            F::Q3_K_M => T::Q4_K,
            F::Q3_K_L => T::Q5_K,
            F::IQ4_NL if model.n_gqa >= 4 => T::Q5_K,
            F::Q4_K_M | F::Q5_K_M if use_more_bits(counters.i_attention_wv, counters.n_attention_wv) => T::Q6_K,
            F::Q4_K_S if counters.i_attention_wv < 4 => T::Q5_K,
            _ => ty,
        };
        if model.is_70b && matches!(ty, T::Q3_K | T::Q4_K) {
            // 8 query heads share each attn_v row in the 70B model, so the tensor is small and
            // extra bits are nearly free.
            ty = T::Q5_K;
        }
        if model.n_expert == 8 {
            ty = T::Q8_0;
        }
        counters.i_attention_wv += 1;
    } else if category == Category::AttnK {
        if model.n_expert == 8 {
            ty = T::Q8_0;
        }
    } else if category == Category::FfnDown {
        // With experts the layer comes from the name, since expert tensors need not be in order.
        let i_layer = if model.n_expert > 1 {
            layer_of(t.name).unwrap_or(counters.i_ffn_down)
        } else {
            counters.i_ffn_down
        };
        let n_layer = model.n_layer;
        ty = match ftype {
            F::Q2_K => T::Q3_K,
            F::Q3_K_M if i_layer < n_layer / 16 => T::Q5_K,
            F::Q3_K_M => T::Q4_K,
            F::Q3_K_L => T::Q5_K,
            F::Q4_K_M if use_more_bits(i_layer, n_layer) => T::Q6_K,
            F::Q4_K_M => ty,
            F::IQ4_NL if i_layer < n_layer / 8 => T::Q5_K,
            F::Q5_K_M if use_more_bits(i_layer, n_layer) => T::Q6_K,
            F::Q4_K_S if i_layer < n_layer / 8 => T::Q5_K,
            _ => ty,
        };
        counters.i_ffn_down += 1;
    } else if category == Category::AttnOutput {
        if model.n_expert == 8 {
            if matches!(ftype, F::Q2_K | F::Q3_K_S | F::Q3_K_M | F::IQ4_NL | F::Q4_K_S | F::Q4_K_M) {
                ty = T::Q5_K;
            }
        } else {
            ty = match ftype {
                F::Q2_K => T::Q3_K,
                F::Q3_K_M => T::Q4_K,
                F::Q3_K_L => T::Q5_K,
                _ => ty,
            };
        }
    } else if category == Category::AttnQkv {
        ty = match ftype {
            F::Q3_K_M | F::Q3_K_L => T::Q4_K,
            F::Q4_K_M => T::Q5_K,
            F::Q5_K_M => T::Q6_K,
            _ => ty,
        };
    }
    ty
}

/// The type of every tensor in `tensors` (same order) when quantizing to `target`, as
/// llama-quantize chooses it.
///
/// Tensors that are never quantized (vectors such as norms, and a few named exceptions) keep
/// their current type. With a float target every other tensor gets that float type.
pub fn plan(target: Target, model: &MixModel, tensors: &[MixTensor<'_>], opts: &MixOptions) -> Vec<TensorType> {
    let names: Vec<&str> = tensors.iter().map(|t| t.name).collect();
    let mut counters = Counters {
        n_attention_wv: names.iter().filter(|n| Category::of(n).is_attn_v()).count(),
        ..Counters::default()
    };
    let tied_embeddings = !names.contains(&"output.weight");
    let default_type = target.default_type();

    let mut types: Vec<TensorType> = tensors.iter().map(|t| t.ty).collect();
    for i in llama_order(&names) {
        let t = &tensors[i];
        if !allows_quantization(t, opts) {
            continue;
        }
        let category = Category::of(t.name);
        if let (Some(embd), Category::TokenEmbd) = (opts.token_embedding_type, category) {
            types[i] = embd;
            continue;
        }
        if let (Some(out), Category::Output) = (opts.output_tensor_type, category) {
            types[i] = out;
            continue;
        }
        if default_type.is_float() {
            types[i] = default_type;
            continue;
        }
        let chosen = match target {
            Target::Mix(ftype) => mix_type(ftype, model, tied_embeddings, &mut counters, t, category, opts),
            Target::Pure(ty) => ty,
        };
        types[i] = fallback(chosen, t.shape.first().copied().unwrap_or(0));
    }
    types
}

#[cfg(test)]
mod tests {
    use super::*;
    use TensorType as T;

    /// A llama-style model's tensors (in GGUF-writer order, not llama order) for `n_layer` layers.
    fn llama_tensors(n_layer: usize, dim: usize, kv_dim: usize, ffn: usize, vocab: usize) -> Vec<(String, Vec<usize>)> {
        let mut v = vec![
            ("token_embd.weight".to_string(), vec![dim, vocab]),
            ("output_norm.weight".to_string(), vec![dim]),
            ("output.weight".to_string(), vec![dim, vocab]),
        ];
        for l in 0..n_layer {
            let p = format!("blk.{l}.");
            v.push((format!("{p}attn_norm.weight"), vec![dim]));
            v.push((format!("{p}attn_q.weight"), vec![dim, dim]));
            v.push((format!("{p}attn_k.weight"), vec![dim, kv_dim]));
            v.push((format!("{p}attn_v.weight"), vec![dim, kv_dim]));
            v.push((format!("{p}attn_output.weight"), vec![dim, dim]));
            v.push((format!("{p}ffn_norm.weight"), vec![dim]));
            v.push((format!("{p}ffn_gate.weight"), vec![dim, ffn]));
            v.push((format!("{p}ffn_up.weight"), vec![dim, ffn]));
            v.push((format!("{p}ffn_down.weight"), vec![ffn, dim]));
        }
        v
    }

    fn plan_for(target: Target, model: MixModel, tensors: &[(String, Vec<usize>)]) -> Vec<(String, TensorType)> {
        let mix: Vec<MixTensor<'_>> =
            tensors.iter().map(|(n, s)| MixTensor { name: n, shape: s, ty: T::F32 }).collect();
        let types = plan(target, &model, &mix, &MixOptions::default());
        tensors.iter().map(|(n, _)| n.clone()).zip(types).collect()
    }

    fn type_of(plan: &[(String, TensorType)], name: &str) -> TensorType {
        plan.iter().find(|(n, _)| n == name).map(|(_, t)| *t).unwrap_or_else(|| panic!("{name} missing"))
    }

    #[test]
    fn use_more_bits_matches_llama_cpp_for_32_layers() {
        // llama-quantize's Q4_K_M of Llama-2-7B gives these ffn_down layers Q6_K.
        let more: Vec<usize> = (0..32).filter(|&i| use_more_bits(i, 32)).collect();
        assert_eq!(more, vec![0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 28, 29, 30, 31]);
    }

    #[test]
    fn q4_k_m_of_a_7b_model() {
        let tensors = llama_tensors(32, 4096, 4096, 11008, 32000);
        let p = plan_for(Target::Mix(FileType::Q4_K_M), MixModel::llama(32, 32, 32, 0), &tensors);
        assert_eq!(type_of(&p, "output.weight"), T::Q6_K);
        assert_eq!(type_of(&p, "token_embd.weight"), T::Q4_K);
        assert_eq!(type_of(&p, "output_norm.weight"), T::F32);
        assert_eq!(type_of(&p, "blk.0.attn_norm.weight"), T::F32);
        assert_eq!(type_of(&p, "blk.0.attn_v.weight"), T::Q6_K);
        assert_eq!(type_of(&p, "blk.4.attn_v.weight"), T::Q4_K);
        assert_eq!(type_of(&p, "blk.6.attn_v.weight"), T::Q6_K);
        assert_eq!(type_of(&p, "blk.6.ffn_down.weight"), T::Q6_K);
        assert_eq!(type_of(&p, "blk.7.ffn_down.weight"), T::Q4_K);
        assert_eq!(type_of(&p, "blk.31.ffn_down.weight"), T::Q6_K);
        assert_eq!(type_of(&p, "blk.10.attn_q.weight"), T::Q4_K);
        assert_eq!(type_of(&p, "blk.10.attn_output.weight"), T::Q4_K);
        assert_eq!(type_of(&p, "blk.0.ffn_gate.weight"), T::Q4_K);
        let q6 = p.iter().filter(|(_, t)| *t == T::Q6_K).count();
        assert_eq!(q6, 1 + 16 + 16);
    }

    #[test]
    fn counters_follow_llama_order_not_file_order() {
        // Listing layer 10 before layer 2 must not change which layers get more bits.
        let mut tensors = llama_tensors(16, 256, 256, 512, 1000);
        tensors.reverse();
        let p = plan_for(Target::Mix(FileType::Q4_K_M), MixModel::llama(16, 4, 4, 0), &tensors);
        for l in 0..16 {
            let want = if use_more_bits(l, 16) { T::Q6_K } else { T::Q4_K };
            assert_eq!(type_of(&p, &format!("blk.{l}.attn_v.weight")), want, "layer {l}");
        }
    }

    #[test]
    fn row_lengths_off_256_fall_back_like_llama_cpp() {
        // SmolLM2-135M: dim 576 is a multiple of 32 but not of 256.
        let tensors = llama_tensors(30, 576, 192, 1536, 49152);
        let mut p = plan_for(Target::Mix(FileType::Q4_K_M), MixModel::llama(30, 9, 3, 0), &tensors);
        assert_eq!(type_of(&p, "output.weight"), T::Q8_0);
        assert_eq!(type_of(&p, "blk.5.attn_q.weight"), T::Q5_0);
        assert_eq!(type_of(&p, "blk.0.attn_v.weight"), T::Q8_0);
        // ffn_down rows are 1536 long, a multiple of 256.
        assert_eq!(type_of(&p, "blk.0.ffn_down.weight"), T::Q6_K);
        assert_eq!(type_of(&p, "blk.4.ffn_down.weight"), T::Q4_K);

        // Without output.weight the embeddings are tied and quantized like the output.
        p = plan_for(
            Target::Mix(FileType::Q4_K_M),
            MixModel::llama(30, 9, 3, 0),
            &tensors.into_iter().filter(|(n, _)| n != "output.weight").collect::<Vec<_>>(),
        );
        assert_eq!(type_of(&p, "token_embd.weight"), T::Q8_0);

        // A row of 48 fits no block type at all.
        assert_eq!(fallback(T::Q4_K, 48), T::F16);
        assert_eq!(fallback(T::Q4_0, 48), T::F16);
        assert_eq!(fallback(T::Q6_K, 96), T::Q8_0);
    }

    #[test]
    fn legacy_and_float_mixes() {
        let tensors = llama_tensors(4, 256, 256, 512, 1000);
        let model = MixModel::llama(4, 4, 4, 0);
        let p = plan_for(Target::Mix(FileType::Q4_0), model, &tensors);
        assert_eq!(type_of(&p, "output.weight"), T::Q6_K);
        assert_eq!(type_of(&p, "blk.0.attn_v.weight"), T::Q4_0);
        assert_eq!(type_of(&p, "blk.0.ffn_down.weight"), T::Q4_0);
        let p = plan_for(Target::Mix(FileType::Q8_0), model, &tensors);
        assert_eq!(type_of(&p, "output.weight"), T::Q8_0);
        let p = plan_for(Target::Mix(FileType::F16), model, &tensors);
        assert_eq!(type_of(&p, "output.weight"), T::F16);
        assert_eq!(type_of(&p, "blk.0.ffn_norm.weight"), T::F32);
        let mix: Vec<MixTensor<'_>> =
            tensors.iter().map(|(n, s)| MixTensor { name: n, shape: s, ty: T::F16 }).collect();
        let opts = MixOptions { leave_output_tensor: true, ..MixOptions::default() };
        let types = plan(Target::Mix(FileType::Q4_K_M), &model, &mix, &opts);
        assert_eq!(types[2], T::F16, "output.weight stays as it is");
        assert_eq!(types[0], T::Q4_K);
        let p = plan_for(Target::Pure(T::Q4_K), model, &tensors);
        assert!(p.iter().all(|(n, t)| if n.contains("norm") { *t == T::F32 } else { *t == T::Q4_K }));
    }

    #[test]
    fn k_quant_mixes_per_layer() {
        let tensors = llama_tensors(32, 4096, 1024, 14336, 128256);
        let model = MixModel::llama(32, 32, 8, 0);
        let p = plan_for(Target::Mix(FileType::Q3_K_M), model, &tensors);
        assert_eq!(type_of(&p, "blk.0.attn_v.weight"), T::Q5_K);
        assert_eq!(type_of(&p, "blk.1.attn_v.weight"), T::Q5_K);
        assert_eq!(type_of(&p, "blk.2.attn_v.weight"), T::Q4_K);
        assert_eq!(type_of(&p, "blk.1.ffn_down.weight"), T::Q5_K);
        assert_eq!(type_of(&p, "blk.2.ffn_down.weight"), T::Q4_K);
        assert_eq!(type_of(&p, "blk.2.attn_output.weight"), T::Q4_K);
        assert_eq!(type_of(&p, "blk.2.attn_q.weight"), T::Q3_K);
        let p = plan_for(Target::Mix(FileType::Q2_K), model, &tensors);
        assert_eq!(type_of(&p, "blk.2.attn_v.weight"), T::Q4_K); // n_gqa = 4
        assert_eq!(type_of(&p, "blk.2.ffn_down.weight"), T::Q3_K);
        assert_eq!(type_of(&p, "blk.2.ffn_up.weight"), T::Q2_K);
        let p = plan_for(Target::Mix(FileType::Q4_K_S), model, &tensors);
        assert_eq!(type_of(&p, "blk.3.attn_v.weight"), T::Q5_K);
        assert_eq!(type_of(&p, "blk.4.attn_v.weight"), T::Q4_K);
        assert_eq!(type_of(&p, "blk.3.ffn_down.weight"), T::Q5_K);
        assert_eq!(type_of(&p, "blk.4.ffn_down.weight"), T::Q4_K);
        let p = plan_for(Target::Mix(FileType::IQ4_NL), model, &tensors);
        assert_eq!(type_of(&p, "blk.9.attn_v.weight"), T::Q5_K);
        assert_eq!(type_of(&p, "blk.9.attn_k.weight"), T::IQ4_NL);
    }

    #[test]
    fn the_70b_model_gets_more_bits_in_attn_v() {
        let tensors = llama_tensors(80, 8192, 1024, 28672, 32000);
        let model = MixModel::llama(80, 64, 8, 0);
        assert!(model.is_70b);
        let p = plan_for(Target::Mix(FileType::Q4_K_M), model, &tensors);
        assert_eq!(type_of(&p, "blk.20.attn_v.weight"), T::Q5_K);
        assert_eq!(type_of(&p, "blk.0.attn_v.weight"), T::Q6_K);
    }

    #[test]
    fn names_and_ids() {
        assert_eq!(FileType::from_name("q4_k_m"), Some(FileType::Q4_K_M));
        assert_eq!(FileType::from_name("Q4_K"), Some(FileType::Q4_K_M));
        assert_eq!(FileType::from_name("bf16"), Some(FileType::BF16));
        assert_eq!(FileType::from_name("q4_k_x"), None);
        assert_eq!(FileType::Q4_K_M.id(), 15);
        assert_eq!(FileType::from_id(25), Some(FileType::IQ4_NL));
        assert_eq!(Target::from_name("q6_k"), Some(Target::Mix(FileType::Q6_K)));
        assert_eq!(Target::from_name("iq4_xs"), Some(Target::Pure(T::IQ4_XS)));
        assert_eq!(Target::from_name("q8_k"), None);
        for f in FileType::ALL {
            assert_eq!(FileType::from_name(f.name()), Some(f));
            assert_eq!(FileType::from_id(f.id()), Some(f));
        }
    }
}
