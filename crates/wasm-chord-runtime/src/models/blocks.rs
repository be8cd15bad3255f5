//! Shared transformer blocks: tensor names, attention, gated feed-forward, norms, the
//! batch context every layer sees, and the output head.

use wasm_chord_core::backend::{Activation, AttentionParams, Backend, RopeParams};
use wasm_chord_core::hparams::{HParams, RopeScaling};
use wasm_chord_core::backend::RopeMode;

use super::WeightLoader;
use crate::error::RuntimeError;
use crate::kv_cache::LayerCache;

/// Name of tensor `part` ("attn_q.weight") of block `layer`.
pub fn blk(layer: usize, part: &str) -> String {
    format!("blk.{layer}.{part}")
}

/// The positions of one forward pass.
pub struct Batch<'a> {
    pub tokens: &'a [u32],
    /// Position of the first token (the cache length before the pass).
    pub pos0: usize,
    /// `pos0..pos0 + tokens.len()`.
    pub positions: Vec<usize>,
}

impl<'a> Batch<'a> {
    pub fn new(tokens: &'a [u32], pos0: usize) -> Self {
        Self { tokens, pos0, positions: (pos0..pos0 + tokens.len()).collect() }
    }

    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }
}

/// Rope parameters from the hyper-parameters, for a base and scale the layer picks.
pub fn rope_params(hp: &HParams, mode: RopeMode, freq_base: f32, freq_scale: f32, freq_factors: Option<Vec<f32>>) -> RopeParams {
    RopeParams {
        mode,
        n_rot: hp.rope.n_rot,
        freq_base,
        freq_scale,
        ext_factor: if hp.rope.scaling == RopeScaling::Yarn { 1.0 } else { 0.0 },
        attn_factor: hp.rope.attn_factor,
        beta_fast: hp.rope.beta_fast,
        beta_slow: hp.rope.beta_slow,
        n_ctx_orig: hp.rope.n_ctx_orig,
        freq_factors,
    }
}

/// Self-attention weights of one layer.
pub struct AttentionWeights<B: Backend> {
    pub q: B::Weight, // [n_embd -> n_head * head_dim_k]
    pub k: B::Weight, // [n_embd -> n_head_kv * head_dim_k]
    pub v: B::Weight, // [n_embd -> n_head_kv * head_dim_v]
    pub o: B::Weight, // [n_head * head_dim_v -> n_embd]
    pub q_bias: Option<B::Weight>,
    pub k_bias: Option<B::Weight>,
    pub v_bias: Option<B::Weight>,
    pub o_bias: Option<B::Weight>,
    /// Per-head RMS norms of queries and keys (QK-norm), `[head_dim_k]`.
    pub q_norm: Option<B::Weight>,
    pub k_norm: Option<B::Weight>,
}

impl<B: Backend> AttentionWeights<B> {
    /// Loads `blk.{layer}.attn_{q,k,v,output}` with optional biases, and the QK-norm weights
    /// when `qk_norm` (required then).
    pub fn load(w: &WeightLoader<'_, B>, hp: &HParams, layer: usize, qk_norm: bool) -> Result<Self, RuntimeError> {
        let (e, dq, dk, dv) = (hp.n_embd, hp.n_head * hp.head_dim_k, hp.n_embd_k(), hp.n_embd_v());
        let dov = hp.n_head * hp.head_dim_v;
        let norm = |part: &str| if qk_norm { w.required(&blk(layer, part), &[hp.head_dim_k]).map(Some) } else { Ok(None) };
        Ok(Self {
            q: w.required(&blk(layer, "attn_q.weight"), &[e, dq])?,
            k: w.required(&blk(layer, "attn_k.weight"), &[e, dk])?,
            v: w.required(&blk(layer, "attn_v.weight"), &[e, dv])?,
            o: w.required(&blk(layer, "attn_output.weight"), &[dov, e])?,
            q_bias: w.optional(&blk(layer, "attn_q.bias"), &[dq])?,
            k_bias: w.optional(&blk(layer, "attn_k.bias"), &[dk])?,
            v_bias: w.optional(&blk(layer, "attn_v.bias"), &[dv])?,
            o_bias: w.optional(&blk(layer, "attn_output.bias"), &[e])?,
            q_norm: norm("attn_q_norm.weight")?,
            k_norm: norm("attn_k_norm.weight")?,
        })
    }
}

/// How one layer's attention runs.
pub struct AttentionConfig {
    pub rope: RopeParams,
    /// Multiplies q·k inside the softmax.
    pub kq_scale: f32,
    /// Multiplies the roped queries before attention (gemma's query_pre_attn_scalar).
    pub q_scale: Option<f32>,
    pub softcap: Option<f32>,
    pub window: Option<usize>,
}

/// Self-attention of the normed input `h` `[n, n_embd]`: projections, QK-norm, rope, cache
/// write, attention over the cache, output projection.
pub fn attention<B: Backend>(
    b: &B,
    hp: &HParams,
    w: &AttentionWeights<B>,
    cfg: &AttentionConfig,
    cache: &mut LayerCache<B>,
    batch: &Batch<'_>,
    h: &B::Tensor,
) -> Result<B::Tensor, RuntimeError> {
    let att = attention_heads(b, hp, w, cfg, cache, batch, h)?;
    let mut out = b.tensor(batch.len(), hp.n_embd)?;
    b.matmul(&w.o, w.o_bias.as_ref(), &att, &mut out)?;
    Ok(out)
}

/// `x += attention(h)`: the output projection folded into the residual add.
#[allow(clippy::too_many_arguments)]
pub fn attention_add<B: Backend>(
    b: &B,
    hp: &HParams,
    w: &AttentionWeights<B>,
    cfg: &AttentionConfig,
    cache: &mut LayerCache<B>,
    batch: &Batch<'_>,
    h: &B::Tensor,
    x: &mut B::Tensor,
) -> Result<(), RuntimeError> {
    let att = attention_heads(b, hp, w, cfg, cache, batch, h)?;
    b.matmul_add(&w.o, w.o_bias.as_ref(), &att, x)?;
    Ok(())
}

/// Attention up to, not including, the output projection: `[n, n_head * head_dim_v]`.
fn attention_heads<B: Backend>(
    b: &B,
    hp: &HParams,
    w: &AttentionWeights<B>,
    cfg: &AttentionConfig,
    cache: &mut LayerCache<B>,
    batch: &Batch<'_>,
    h: &B::Tensor,
) -> Result<B::Tensor, RuntimeError> {
    let n = batch.len();
    let mut q = b.tensor(n, hp.n_head * hp.head_dim_k)?;
    let mut k = b.tensor(n, hp.n_embd_k())?;
    let mut v = b.tensor(n, hp.n_embd_v())?;
    b.matmul_qkv([&w.q, &w.k, &w.v], [w.q_bias.as_ref(), w.k_bias.as_ref(), w.v_bias.as_ref()], h, [&mut q, &mut k, &mut v])?;
    if let Some(qn) = &w.q_norm {
        let mut normed = b.tensor(n, hp.n_head * hp.head_dim_k)?;
        b.rms_norm(&q, qn, hp.rms_eps, &mut normed)?;
        q = normed;
    }
    if let Some(kn) = &w.k_norm {
        let mut normed = b.tensor(n, hp.n_embd_k())?;
        b.rms_norm(&k, kn, hp.rms_eps, &mut normed)?;
        k = normed;
    }
    b.rope_store_kv(&mut q, &mut k, &v, hp.head_dim_k, &batch.positions, &cfg.rope, &mut cache.k, &mut cache.v, batch.pos0)?;
    if let Some(s) = cfg.q_scale {
        b.scale(&mut q, s)?;
    }
    let params = AttentionParams {
        n_head: hp.n_head,
        n_head_kv: hp.n_head_kv,
        head_dim_k: hp.head_dim_k,
        head_dim_v: hp.head_dim_v,
        scale: cfg.kq_scale,
        softcap: cfg.softcap,
        q_pos0: batch.pos0,
        window: cfg.window,
    };
    let mut att = b.tensor(n, hp.n_head * hp.head_dim_v)?;
    b.attention(&q, &cache.k, &cache.v, batch.pos0 + n, &params, &mut att)?;
    Ok(att)
}

/// Gated feed-forward weights of one layer.
pub struct FeedForwardWeights<B: Backend> {
    pub gate: B::Weight, // [n_embd -> n_ff]
    pub up: B::Weight,   // [n_embd -> n_ff]
    pub down: B::Weight, // [n_ff -> n_embd]
}

impl<B: Backend> FeedForwardWeights<B> {
    pub fn load(w: &WeightLoader<'_, B>, hp: &HParams, layer: usize) -> Result<Self, RuntimeError> {
        Ok(Self {
            gate: w.required(&blk(layer, "ffn_gate.weight"), &[hp.n_embd, hp.n_ff])?,
            up: w.required(&blk(layer, "ffn_up.weight"), &[hp.n_embd, hp.n_ff])?,
            down: w.required(&blk(layer, "ffn_down.weight"), &[hp.n_ff, hp.n_embd])?,
        })
    }
}

/// `down(act(gate(h)) * up(h))`.
pub fn feed_forward<B: Backend>(b: &B, hp: &HParams, w: &FeedForwardWeights<B>, act: Activation, h: &B::Tensor) -> Result<B::Tensor, RuntimeError> {
    let act_out = gated_activation(b, hp, w, act, h)?;
    let mut out = b.tensor(b.shape(h).0, hp.n_embd)?;
    b.matmul(&w.down, None, &act_out, &mut out)?;
    Ok(out)
}

/// `act(gate(h)) * up(h)`, the input of the down projection.
fn gated_activation<B: Backend>(b: &B, hp: &HParams, w: &FeedForwardWeights<B>, act: Activation, h: &B::Tensor) -> Result<B::Tensor, RuntimeError> {
    let mut act_out = b.tensor(b.shape(h).0, hp.n_ff)?;
    b.matmul_act_mul(act, &w.gate, &w.up, h, &mut act_out)?;
    Ok(act_out)
}

/// `x += down(act(gate(h)) * up(h))`, the down projection folded into the residual add.
pub fn feed_forward_add<B: Backend>(b: &B, hp: &HParams, w: &FeedForwardWeights<B>, act: Activation, h: &B::Tensor, x: &mut B::Tensor) -> Result<(), RuntimeError> {
    let act_out = gated_activation(b, hp, w, act, h)?;
    b.matmul_add(&w.down, None, &act_out, x)?;
    Ok(())
}

/// Rows `rows` of `x`, in that order, as a new tensor.
pub fn pick_rows<B: Backend>(b: &B, x: &B::Tensor, rows: &[usize]) -> Result<B::Tensor, RuntimeError> {
    let mut out = b.tensor(rows.len(), b.shape(x).1)?;
    b.copy_rows(x, rows, &mut out)?;
    Ok(out)
}

/// RMS norm of `x` with `weight` into a new tensor.
pub fn rms_norm<B: Backend>(b: &B, hp: &HParams, x: &B::Tensor, weight: &B::Weight) -> Result<B::Tensor, RuntimeError> {
    let (rows, cols) = b.shape(x);
    let mut out = b.tensor(rows, cols)?;
    b.rms_norm(x, weight, hp.rms_eps, &mut out)?;
    Ok(out)
}

/// Token embeddings, final norm and output projection (the embeddings when tied).
pub struct OutputHead<B: Backend> {
    pub token_embd: B::Weight, // [n_vocab, n_embd]
    pub norm: B::Weight,       // [n_embd]
    /// `None` when the output projection is the embedding table.
    pub output: Option<B::Weight>, // [n_embd -> n_vocab]
}

impl<B: Backend> OutputHead<B> {
    pub fn load(w: &WeightLoader<'_, B>, hp: &HParams) -> Result<Self, RuntimeError> {
        Ok(Self {
            token_embd: w.required("token_embd.weight", &[hp.n_embd, hp.n_vocab])?,
            norm: w.required("output_norm.weight", &[hp.n_embd])?,
            output: w.optional("output.weight", &[hp.n_embd, hp.n_vocab])?,
        })
    }

    /// Embeddings of the batch's tokens, times `scale`.
    pub fn embed(&self, b: &B, hp: &HParams, batch: &Batch<'_>, scale: f32) -> Result<B::Tensor, RuntimeError> {
        let mut x = b.tensor(batch.len(), hp.n_embd)?;
        b.embed(&self.token_embd, batch.tokens, scale, &mut x)?;
        Ok(x)
    }

    /// Logits `[rows.len(), n_vocab]` for the chosen rows of the final hidden state `x`,
    /// optionally soft-capped (`cap * tanh(l / cap)`).
    pub fn logits(&self, b: &B, hp: &HParams, x: &B::Tensor, rows: &[usize], softcap: Option<f32>) -> Result<B::Tensor, RuntimeError> {
        let mut picked = b.tensor(rows.len(), hp.n_embd)?;
        b.copy_rows(x, rows, &mut picked)?;
        let normed = rms_norm(b, hp, &picked, &self.norm)?;
        let mut logits = b.tensor(rows.len(), hp.n_vocab)?;
        b.matmul(self.output.as_ref().unwrap_or(&self.token_embd), None, &normed, &mut logits)?;
        if let Some(cap) = softcap {
            // Rare (gemma2-style heads); done on the host to keep the op set small.
            let mut host = Vec::new();
            b.download(&logits, &mut host)?;
            host.iter_mut().for_each(|l| *l = cap * (*l / cap).tanh());
            logits = b.upload(&host, rows.len(), hp.n_vocab)?;
        }
        Ok(logits)
    }
}

/// The pre-norm residual block of llama-style models: `x += attn(norm(x))`, then
/// `x += ffn(norm(x))`. Llama and Qwen2 differ only in how its weights and attention are set up.
pub struct PreNormLayer<B: Backend> {
    pub attn_norm: B::Weight, // [n_embd]
    pub attn: AttentionWeights<B>,
    pub ffn_norm: B::Weight, // [n_embd]
    pub ffn: FeedForwardWeights<B>,
}

impl<B: Backend> PreNormLayer<B> {
    pub fn load(w: &WeightLoader<'_, B>, hp: &HParams, layer: usize) -> Result<Self, RuntimeError> {
        Ok(Self {
            attn_norm: w.required(&blk(layer, "attn_norm.weight"), &[hp.n_embd])?,
            attn: AttentionWeights::load(w, hp, layer, false)?,
            ffn_norm: w.required(&blk(layer, "ffn_norm.weight"), &[hp.n_embd])?,
            ffn: FeedForwardWeights::load(w, hp, layer)?,
        })
    }

    /// The layer on hidden state `x`; with `rows`, only those rows go on past attention
    /// (llama.cpp picks them after the output projection, before the residual add).
    #[allow(clippy::too_many_arguments)]
    pub fn forward(
        &self,
        b: &B,
        hp: &HParams,
        attn: &AttentionConfig,
        act: Activation,
        cache: &mut LayerCache<B>,
        batch: &Batch<'_>,
        mut x: B::Tensor,
        rows: Option<&[usize]>,
    ) -> Result<B::Tensor, RuntimeError> {
        let h = rms_norm(b, hp, &x, &self.attn_norm)?;
        if let Some(rows) = rows {
            let a = attention(b, hp, &self.attn, attn, cache, batch, &h)?;
            let a = pick_rows(b, &a, rows)?;
            x = pick_rows(b, &x, rows)?;
            b.add(&mut x, &a)?;
        } else {
            attention_add(b, hp, &self.attn, attn, cache, batch, &h, &mut x)?;
        }
        let h = rms_norm(b, hp, &x, &self.ffn_norm)?;
        feed_forward_add(b, hp, &self.ffn, act, &h, &mut x)?;
        Ok(x)
    }
}
