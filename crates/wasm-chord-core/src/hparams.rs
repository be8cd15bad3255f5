//! Typed, validated hyper-parameters, parsed once from a model file's metadata.
//!
//! Keys follow llama.cpp's (`{arch}.embedding_length`, `{arch}.rope.freq_base`, ...) with its
//! defaults for optional ones. Architecture-specific defaults (gemma3's sliding-window pattern,
//! for one) are decided by the architecture's model file from the optional fields here.

/// What is wrong with a model's hyper-parameters; each names the key.
#[derive(Debug, thiserror::Error)]
pub enum HParamsError {
    #[error("metadata key {key} is missing")]
    Missing { key: String },
    #[error("metadata key {key}: {detail}")]
    Bad { key: String, detail: String },
}

/// Typed access to metadata values, as the GGUF reader provides it. `Ok(None)` means absent;
/// a value of the wrong type is an error naming the key.
pub trait MetadataSource {
    fn get_u32(&self, key: &str) -> Result<Option<u32>, HParamsError>;
    fn get_f32(&self, key: &str) -> Result<Option<f32>, HParamsError>;
    fn get_str(&self, key: &str) -> Result<Option<String>, HParamsError>;
    /// The number of elements of an array value.
    fn array_len(&self, key: &str) -> Result<Option<usize>, HParamsError>;
}

/// How rotary embeddings are stretched beyond the training context.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RopeScaling {
    None,
    /// Positions divided by `factor` (`freq_scale = 1 / factor`).
    Linear,
    /// YaRN (ggml's `ext_factor = 1`).
    Yarn,
}

/// Rotary embedding hyper-parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct RopeHParams {
    /// Rotated dimensions per head.
    pub n_rot: usize,
    pub freq_base: f32,
    /// 1 / scaling factor; 1 when not scaled.
    pub freq_scale: f32,
    pub scaling: RopeScaling,
    /// Context length before scaling (YaRN correction ranges).
    pub n_ctx_orig: usize,
    pub attn_factor: f32,
    pub beta_fast: f32,
    pub beta_slow: f32,
    /// Base for sliding-window layers, when the file sets one.
    pub freq_base_swa: Option<f32>,
}

/// A decoder-only transformer's hyper-parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct HParams {
    /// `general.architecture` ("llama", "qwen2", "gemma3").
    pub arch: String,
    pub n_vocab: usize,
    /// Context length the model was trained with.
    pub n_ctx_train: usize,
    pub n_embd: usize,
    pub n_layer: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    /// Per-head key (and query) length.
    pub head_dim_k: usize,
    /// Per-head value length.
    pub head_dim_v: usize,
    pub n_ff: usize,
    pub rms_eps: f32,
    pub rope: RopeHParams,
    /// Keys visible to a sliding-window layer, when the model has such layers.
    pub sliding_window: Option<usize>,
    /// Every n-th layer is global when set (`attention.sliding_window_pattern`).
    pub sliding_window_pattern: Option<usize>,
    /// `attention.scale`: the q·k scale, when not 1/sqrt(head_dim).
    pub attention_scale: Option<f32>,
    pub attn_logit_softcap: Option<f32>,
    pub final_logit_softcap: Option<f32>,
}

impl HParams {
    /// Reads and validates the hyper-parameters of the architecture named in the metadata.
    pub fn from_metadata(md: &dyn MetadataSource) -> Result<Self, HParamsError> {
        let arch = md.get_str("general.architecture")?.ok_or_else(|| missing("general.architecture"))?;
        let key = |name: &str| format!("{arch}.{name}");
        let req_u32 = |name: &str| -> Result<usize, HParamsError> {
            let k = key(name);
            md.get_u32(&k)?.map(|v| v as usize).ok_or_else(|| missing(&k))
        };
        let opt_u32 = |name: &str| -> Result<Option<usize>, HParamsError> { Ok(md.get_u32(&key(name))?.map(|v| v as usize)) };
        let opt_f32 = |name: &str| md.get_f32(&key(name));

        let n_embd = req_u32("embedding_length")?;
        let n_layer = req_u32("block_count")?;
        let n_head = req_u32("attention.head_count")?;
        let n_head_kv = opt_u32("attention.head_count_kv")?.unwrap_or(n_head);
        let n_ff = req_u32("feed_forward_length")?;
        let n_ctx_train = req_u32("context_length")?;
        positive(&key("embedding_length"), n_embd)?;
        positive(&key("block_count"), n_layer)?;
        positive(&key("attention.head_count"), n_head)?;
        positive(&key("attention.head_count_kv"), n_head_kv)?;
        positive(&key("feed_forward_length"), n_ff)?;
        positive(&key("context_length"), n_ctx_train)?;
        if n_head % n_head_kv != 0 {
            return Err(bad(&key("attention.head_count_kv"), format!("{n_head} query heads are not a multiple of {n_head_kv} key/value heads")));
        }
        let head_dim_k = opt_u32("attention.key_length")?.unwrap_or(n_embd / n_head);
        let head_dim_v = opt_u32("attention.value_length")?.unwrap_or(n_embd / n_head);
        positive(&key("attention.key_length"), head_dim_k)?;
        positive(&key("attention.value_length"), head_dim_v)?;

        let n_vocab = match opt_u32("vocab_size")? {
            Some(n) => n,
            None => md.array_len("tokenizer.ggml.tokens")?.ok_or_else(|| missing(&key("vocab_size")))?,
        };
        positive(&key("vocab_size"), n_vocab)?;

        let rms_eps = opt_f32("attention.layer_norm_rms_epsilon")?.ok_or_else(|| missing(&key("attention.layer_norm_rms_epsilon")))?;
        if !(rms_eps.is_finite() && rms_eps > 0.0) {
            return Err(bad(&key("attention.layer_norm_rms_epsilon"), format!("{rms_eps} is not a positive number")));
        }

        let n_rot = opt_u32("rope.dimension_count")?.unwrap_or(head_dim_k);
        if n_rot > head_dim_k || n_rot % 2 != 0 {
            return Err(bad(&key("rope.dimension_count"), format!("{n_rot} is odd or exceeds the head size {head_dim_k}")));
        }
        let freq_base = opt_f32("rope.freq_base")?.unwrap_or(10000.0);
        positive_f32(&key("rope.freq_base"), freq_base)?;
        let scaling = match md.get_str(&key("rope.scaling.type"))?.as_deref() {
            None | Some("linear") => RopeScaling::Linear,
            Some("none") => RopeScaling::None,
            Some("yarn") => RopeScaling::Yarn,
            Some(other) => return Err(bad(&key("rope.scaling.type"), format!("unsupported rope scaling {other:?} (supported: none, linear, yarn)"))),
        };
        let factor = match opt_f32("rope.scaling.factor")? {
            Some(f) => Some(f),
            None => opt_f32("rope.scale_linear")?,
        };
        let freq_scale = match (scaling, factor) {
            (RopeScaling::None, _) | (_, None) => 1.0,
            (_, Some(0.0)) => 1.0,
            (_, Some(f)) if f.is_finite() && f > 0.0 => 1.0 / f,
            (_, Some(f)) => return Err(bad(&key("rope.scaling.factor"), format!("{f} is not a positive number"))),
        };
        let freq_base_swa = opt_f32("rope.freq_base_swa")?;
        if let Some(b) = freq_base_swa {
            positive_f32(&key("rope.freq_base_swa"), b)?;
        }
        let rope = RopeHParams {
            n_rot,
            freq_base,
            freq_scale,
            scaling,
            n_ctx_orig: opt_u32("rope.scaling.original_context_length")?.unwrap_or(n_ctx_train),
            attn_factor: opt_f32("rope.scaling.attn_factor")?.unwrap_or(1.0),
            beta_fast: 32.0,
            beta_slow: 1.0,
            freq_base_swa,
        };

        let sliding_window = opt_u32("attention.sliding_window")?.filter(|w| *w > 0);
        let sliding_window_pattern = opt_u32("attention.sliding_window_pattern")?;
        let softcap = |name: &str| -> Result<Option<f32>, HParamsError> {
            match opt_f32(name)? {
                None => Ok(None),
                Some(0.0) => Ok(None),
                Some(c) if c.is_finite() && c > 0.0 => Ok(Some(c)),
                Some(c) => Err(bad(&key(name), format!("{c} is not a positive number"))),
            }
        };
        Ok(Self {
            n_vocab,
            n_ctx_train,
            n_embd,
            n_layer,
            n_head,
            n_head_kv,
            head_dim_k,
            head_dim_v,
            n_ff,
            rms_eps,
            rope,
            sliding_window,
            sliding_window_pattern,
            attention_scale: opt_f32("attention.scale")?.filter(|s| *s != 0.0),
            attn_logit_softcap: softcap("attn_logit_softcapping")?,
            final_logit_softcap: softcap("final_logit_softcapping")?,
            arch,
        })
    }

    /// Width of one layer's key cache row (all key/value heads).
    pub fn n_embd_k(&self) -> usize {
        self.n_head_kv * self.head_dim_k
    }

    /// Width of one layer's value cache row.
    pub fn n_embd_v(&self) -> usize {
        self.n_head_kv * self.head_dim_v
    }
}

impl MetadataSource for crate::gguf::Metadata {
    fn get_u32(&self, key: &str) -> Result<Option<u32>, HParamsError> {
        crate::gguf::Metadata::get_u32(self, key).map_err(|e| bad(key, e.to_string()))
    }
    fn get_f32(&self, key: &str) -> Result<Option<f32>, HParamsError> {
        crate::gguf::Metadata::get_f32(self, key).map_err(|e| bad(key, e.to_string()))
    }
    fn get_str(&self, key: &str) -> Result<Option<String>, HParamsError> {
        crate::gguf::Metadata::get_str(self, key).map(|s| s.map(str::to_string)).map_err(|e| bad(key, e.to_string()))
    }
    fn array_len(&self, key: &str) -> Result<Option<usize>, HParamsError> {
        self.get_array(key).map(|a| a.map(|a| a.len())).map_err(|e| bad(key, e.to_string()))
    }
}

fn missing(key: &str) -> HParamsError {
    HParamsError::Missing { key: key.to_string() }
}

fn bad(key: &str, detail: String) -> HParamsError {
    HParamsError::Bad { key: key.to_string(), detail }
}

fn positive(key: &str, v: usize) -> Result<(), HParamsError> {
    if v == 0 {
        return Err(bad(key, "must be positive, got 0".into()));
    }
    Ok(())
}

fn positive_f32(key: &str, v: f32) -> Result<(), HParamsError> {
    if !(v.is_finite() && v > 0.0) {
        return Err(bad(key, format!("{v} is not a positive number")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[derive(Clone)]
    enum V {
        U(u32),
        F(f32),
        S(&'static str),
        A(usize),
    }

    struct Map(HashMap<&'static str, V>);

    impl MetadataSource for Map {
        fn get_u32(&self, key: &str) -> Result<Option<u32>, HParamsError> {
            match self.0.get(key) {
                None => Ok(None),
                Some(V::U(v)) => Ok(Some(*v)),
                Some(_) => Err(bad(key, "not a u32".into())),
            }
        }
        fn get_f32(&self, key: &str) -> Result<Option<f32>, HParamsError> {
            match self.0.get(key) {
                None => Ok(None),
                Some(V::F(v)) => Ok(Some(*v)),
                Some(_) => Err(bad(key, "not an f32".into())),
            }
        }
        fn get_str(&self, key: &str) -> Result<Option<String>, HParamsError> {
            match self.0.get(key) {
                None => Ok(None),
                Some(V::S(v)) => Ok(Some(v.to_string())),
                Some(_) => Err(bad(key, "not a string".into())),
            }
        }
        fn array_len(&self, key: &str) -> Result<Option<usize>, HParamsError> {
            match self.0.get(key) {
                None => Ok(None),
                Some(V::A(n)) => Ok(Some(*n)),
                Some(_) => Err(bad(key, "not an array".into())),
            }
        }
    }

    fn smollm() -> Map {
        Map(HashMap::from([
            ("general.architecture", V::S("llama")),
            ("llama.context_length", V::U(8192)),
            ("llama.embedding_length", V::U(576)),
            ("llama.block_count", V::U(30)),
            ("llama.feed_forward_length", V::U(1536)),
            ("llama.attention.head_count", V::U(9)),
            ("llama.attention.head_count_kv", V::U(3)),
            ("llama.rope.freq_base", V::F(100000.0)),
            ("llama.attention.layer_norm_rms_epsilon", V::F(1e-5)),
            ("llama.vocab_size", V::U(49152)),
            ("llama.rope.dimension_count", V::U(64)),
        ]))
    }

    #[test]
    fn parses_with_defaults() {
        let hp = HParams::from_metadata(&smollm()).unwrap();
        assert_eq!((hp.n_embd, hp.n_layer, hp.n_head, hp.n_head_kv, hp.head_dim_k, hp.n_vocab), (576, 30, 9, 3, 64, 49152));
        assert_eq!(hp.rope.freq_base, 100000.0);
        assert_eq!(hp.rope.freq_scale, 1.0);
        assert_eq!(hp.rope.n_ctx_orig, 8192);
        assert_eq!(hp.sliding_window, None);
        assert_eq!(hp.n_embd_k(), 192);
    }

    #[test]
    fn vocab_from_token_list_and_linear_scaling() {
        let mut md = smollm();
        md.0.remove("llama.vocab_size");
        md.0.insert("tokenizer.ggml.tokens", V::A(100));
        md.0.insert("llama.rope.scaling.factor", V::F(4.0));
        let hp = HParams::from_metadata(&md).unwrap();
        assert_eq!(hp.n_vocab, 100);
        assert_eq!(hp.rope.freq_scale, 0.25);
    }

    #[test]
    fn errors_name_the_key() {
        let mut md = smollm();
        md.0.remove("llama.block_count");
        let e = HParams::from_metadata(&md).unwrap_err().to_string();
        assert!(e.contains("llama.block_count"), "{e}");

        let mut md = smollm();
        md.0.insert("llama.attention.head_count_kv", V::U(4));
        let e = HParams::from_metadata(&md).unwrap_err().to_string();
        assert!(e.contains("head_count_kv"), "{e}");

        let mut md = smollm();
        md.0.insert("llama.rope.scaling.type", V::S("longrope"));
        assert!(HParams::from_metadata(&md).unwrap_err().to_string().contains("rope.scaling.type"));

        let mut md = smollm();
        md.0.insert("llama.embedding_length", V::F(1.0));
        assert!(HParams::from_metadata(&md).unwrap_err().to_string().contains("llama.embedding_length"));
    }
}
