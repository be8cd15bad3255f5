//! Gemma 3: sliding-window layers interleaved with global ones, QK-norm, GeGLU (tanh GeLU),
//! norms before and after both attention and feed-forward, embeddings scaled by sqrt(n_embd),
//! tied output embeddings, NEOX-paired rotary embeddings with a separate base for local layers.

use wasm_chord_core::backend::{Activation, Backend, RopeMode};
use wasm_chord_core::hparams::HParams;

use super::blocks::{self, blk, AttentionConfig, AttentionWeights, Batch, FeedForwardWeights, OutputHead};
use super::{Architecture, ModelSource, WeightLoader};
use crate::error::RuntimeError;
use crate::kv_cache::LayerCache;

/// Without `attention.sliding_window_pattern`, every 6th layer is global (llama.cpp's default).
const DEFAULT_SWA_PATTERN: usize = 6;
/// Rope base of the sliding-window layers when the file does not set `rope.freq_base_swa`.
const DEFAULT_SWA_FREQ_BASE: f32 = 10000.0;

struct Layer<B: Backend> {
    attn_norm: B::Weight, // [n_embd]
    attn: AttentionWeights<B>,
    attn_post_norm: B::Weight, // [n_embd]
    ffn_norm: B::Weight,       // [n_embd]
    ffn: FeedForwardWeights<B>,
    ffn_post_norm: B::Weight, // [n_embd]
    /// Sliding-window (local) or global attention settings of this layer.
    cfg: AttentionConfig,
}

pub struct Gemma3<B: Backend> {
    hp: HParams,
    head: OutputHead<B>,
    layers: Vec<Layer<B>>,
}

impl<B: Backend + 'static> Gemma3<B> {
    pub fn load(b: &B, hp: &HParams, src: &dyn ModelSource) -> Result<Box<dyn Architecture<B>>, RuntimeError> {
        let w = WeightLoader { backend: b, src };
        let pattern = hp.sliding_window_pattern.unwrap_or(DEFAULT_SWA_PATTERN);
        // Gemma 3 27B scales queries by 1/sqrt(n_embd / n_head), the others by 1/sqrt(head_dim)
        // (query_pre_attn_scalar in the reference implementation).
        let q_scale = if hp.n_layer == 62 {
            1.0 / ((hp.n_embd / hp.n_head) as f32).sqrt()
        } else {
            1.0 / (hp.head_dim_k as f32).sqrt()
        };
        let layers = (0..hp.n_layer)
            .map(|i| {
                let local = hp.sliding_window.is_some() && (pattern == 0 || i % pattern < pattern - 1);
                let rope = if local {
                    blocks::rope_params(hp, RopeMode::Neox, hp.rope.freq_base_swa.unwrap_or(DEFAULT_SWA_FREQ_BASE), 1.0, None)
                } else {
                    blocks::rope_params(hp, RopeMode::Neox, hp.rope.freq_base, hp.rope.freq_scale, None)
                };
                Ok(Layer {
                    attn_norm: w.required(&blk(i, "attn_norm.weight"), &[hp.n_embd])?,
                    attn: AttentionWeights::load(&w, hp, i, true)?,
                    attn_post_norm: w.required(&blk(i, "post_attention_norm.weight"), &[hp.n_embd])?,
                    ffn_norm: w.required(&blk(i, "ffn_norm.weight"), &[hp.n_embd])?,
                    ffn: FeedForwardWeights::load(&w, hp, i)?,
                    ffn_post_norm: w.required(&blk(i, "post_ffw_norm.weight"), &[hp.n_embd])?,
                    cfg: AttentionConfig {
                        rope,
                        kq_scale: 1.0,
                        q_scale: Some(q_scale),
                        softcap: None,
                        window: if local { hp.sliding_window } else { None },
                    },
                })
            })
            .collect::<Result<_, RuntimeError>>()?;
        Ok(Box::new(Self { hp: hp.clone(), head: OutputHead::load(&w, hp)?, layers }))
    }
}

impl<B: Backend> Architecture<B> for Gemma3<B> {
    fn cache_widths(&self) -> Vec<(usize, usize)> {
        vec![(self.hp.n_embd_k(), self.hp.n_embd_v()); self.hp.n_layer]
    }

    fn embed(&self, b: &B, batch: &Batch<'_>) -> Result<B::Tensor, RuntimeError> {
        self.head.embed(b, &self.hp, batch, (self.hp.n_embd as f32).sqrt())
    }

    fn layer(&self, b: &B, il: usize, cache: &mut LayerCache<B>, batch: &Batch<'_>, x: B::Tensor) -> Result<B::Tensor, RuntimeError> {
        self.run_layer(b, il, cache, batch, x, None)
    }

    fn layer_rows(&self, b: &B, il: usize, cache: &mut LayerCache<B>, batch: &Batch<'_>, x: B::Tensor, rows: &[usize]) -> Result<B::Tensor, RuntimeError> {
        self.run_layer(b, il, cache, batch, x, Some(rows))
    }

    fn head(&self, b: &B, x: &B::Tensor, rows: &[usize]) -> Result<B::Tensor, RuntimeError> {
        self.head.logits(b, &self.hp, x, rows, self.hp.final_logit_softcap)
    }
}

impl<B: Backend> Gemma3<B> {
    /// One layer; with `rows`, only those rows go on past attention (llama.cpp's graph picks
    /// them after the output projection, so the projection still sees the whole batch).
    fn run_layer(&self, b: &B, il: usize, cache: &mut LayerCache<B>, batch: &Batch<'_>, mut x: B::Tensor, rows: Option<&[usize]>) -> Result<B::Tensor, RuntimeError> {
        let (hp, layer) = (&self.hp, &self.layers[il]);
        let h = blocks::rms_norm(b, hp, &x, &layer.attn_norm)?;
        let mut a = blocks::attention(b, hp, &layer.attn, &layer.cfg, cache, batch, &h)?;
        if let Some(rows) = rows {
            a = blocks::pick_rows(b, &a, rows)?;
            x = blocks::pick_rows(b, &x, rows)?;
        }
        let a = blocks::rms_norm(b, hp, &a, &layer.attn_post_norm)?;
        b.add(&mut x, &a)?;
        let h = blocks::rms_norm(b, hp, &x, &layer.ffn_norm)?;
        let f = blocks::feed_forward(b, hp, &layer.ffn, Activation::GeluTanh, &h)?;
        let f = blocks::rms_norm(b, hp, &f, &layer.ffn_post_norm)?;
        b.add(&mut x, &f)?;
        Ok(x)
    }
}
