//! Llama (Llama 2/3, Mistral, TinyLlama, SmolLM2): pre-norm blocks, SwiGLU, rotary embeddings
//! on adjacent pairs, optional llama-3 frequency factors and biases.

use wasm_chord_core::backend::{Activation, Backend, RopeMode};
use wasm_chord_core::hparams::HParams;

use super::blocks::{self, AttentionConfig, Batch, OutputHead, PreNormLayer};
use super::{Architecture, ModelSource, WeightLoader};
use crate::error::RuntimeError;
use crate::kv_cache::LayerCache;

pub struct Llama<B: Backend> {
    hp: HParams,
    head: OutputHead<B>,
    layers: Vec<PreNormLayer<B>>,
    attn: AttentionConfig,
}

impl<B: Backend + 'static> Llama<B> {
    pub fn load(b: &B, hp: &HParams, src: &dyn ModelSource) -> Result<Box<dyn Architecture<B>>, RuntimeError> {
        let w = WeightLoader { backend: b, src };
        if hp.rope.n_rot != hp.head_dim_k {
            return Err(RuntimeError::File(format!("llama: rope dimension {} differs from the head size {}", hp.rope.n_rot, hp.head_dim_k)));
        }
        let layers = (0..hp.n_layer)
            .map(|i| PreNormLayer::load(&w, hp, i))
            .collect::<Result<_, RuntimeError>>()?;
        let freq_factors = w.host_f32("rope_freqs.weight", hp.rope.n_rot / 2)?;
        let attn = AttentionConfig {
            rope: blocks::rope_params(hp, RopeMode::Interleaved, hp.rope.freq_base, hp.rope.freq_scale, freq_factors),
            kq_scale: hp.attention_scale.unwrap_or(1.0 / (hp.head_dim_k as f32).sqrt()),
            q_scale: None,
            softcap: hp.attn_logit_softcap,
            window: hp.sliding_window,
        };
        Ok(Box::new(Self { hp: hp.clone(), head: OutputHead::load(&w, hp)?, layers, attn }))
    }
}

impl<B: Backend> Architecture<B> for Llama<B> {
    fn cache_widths(&self) -> Vec<(usize, usize)> {
        vec![(self.hp.n_embd_k(), self.hp.n_embd_v()); self.hp.n_layer]
    }

    fn embed(&self, b: &B, batch: &Batch<'_>) -> Result<B::Tensor, RuntimeError> {
        self.head.embed(b, &self.hp, batch, 1.0)
    }

    fn layer(&self, b: &B, il: usize, cache: &mut LayerCache<B>, batch: &Batch<'_>, x: B::Tensor) -> Result<B::Tensor, RuntimeError> {
        self.layers[il].forward(b, &self.hp, &self.attn, Activation::Silu, cache, batch, x, None)
    }

    fn layer_rows(&self, b: &B, il: usize, cache: &mut LayerCache<B>, batch: &Batch<'_>, x: B::Tensor, rows: &[usize]) -> Result<B::Tensor, RuntimeError> {
        self.layers[il].forward(b, &self.hp, &self.attn, Activation::Silu, cache, batch, x, Some(rows))
    }

    fn head(&self, b: &B, x: &B::Tensor, rows: &[usize]) -> Result<B::Tensor, RuntimeError> {
        self.head.logits(b, &self.hp, x, rows, self.hp.final_logit_softcap)
    }
}
