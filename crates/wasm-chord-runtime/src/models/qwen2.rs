//! Qwen2: llama's block with biases on the q/k/v projections and NEOX-paired rotary embeddings.

use wasm_chord_core::backend::{Activation, Backend, RopeMode};
use wasm_chord_core::hparams::HParams;

use super::blocks::{self, blk, AttentionConfig, Batch, OutputHead, PreNormLayer};
use super::{Architecture, ModelSource, WeightLoader};
use crate::error::RuntimeError;
use crate::kv_cache::LayerCache;

pub struct Qwen2<B: Backend> {
    hp: HParams,
    head: OutputHead<B>,
    layers: Vec<PreNormLayer<B>>,
    attn: AttentionConfig,
}

impl<B: Backend + 'static> Qwen2<B> {
    pub fn load(b: &B, hp: &HParams, src: &dyn ModelSource) -> Result<Box<dyn Architecture<B>>, RuntimeError> {
        let w = WeightLoader { backend: b, src };
        let layers = (0..hp.n_layer)
            .map(|i| {
                let layer = PreNormLayer::load(&w, hp, i)?;
                let attn = &layer.attn;
                if attn.q_bias.is_none() || attn.k_bias.is_none() || attn.v_bias.is_none() {
                    return Err(RuntimeError::MissingTensor { name: blk(i, "attn_{q,k,v}.bias") });
                }
                Ok(layer)
            })
            .collect::<Result<_, RuntimeError>>()?;
        let attn = AttentionConfig {
            rope: blocks::rope_params(hp, RopeMode::Neox, hp.rope.freq_base, hp.rope.freq_scale, None),
            kq_scale: 1.0 / (hp.head_dim_k as f32).sqrt(),
            q_scale: None,
            softcap: None,
            window: None,
        };
        Ok(Box::new(Self { hp: hp.clone(), head: OutputHead::load(&w, hp)?, layers, attn }))
    }
}

impl<B: Backend> Architecture<B> for Qwen2<B> {
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
        self.head.logits(b, &self.hp, x, rows, None)
    }
}
