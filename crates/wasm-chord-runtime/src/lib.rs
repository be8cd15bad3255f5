//! Model graphs, KV cache, sampling and generation.
//!
//! [`Model`] loads a supported architecture from a model file onto a backend (the CPU one by
//! default) and runs batched forward passes over a [`KvCache`].

pub mod error;
pub mod kv_cache;
pub mod models;

use wasm_chord_core::backend::Backend;
use wasm_chord_core::hparams::HParams;
use wasm_chord_cpu::{CpuBackend, CpuOptions};

pub use error::RuntimeError;
pub use kv_cache::KvCache;
pub use models::{supported_architectures, ModelSource, TensorView};

/// How a model is loaded.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// CPU threads; 0 means one per physical core.
    pub n_threads: usize,
    /// Emulate llama.cpp's CPU rounding of activations (see [`CpuOptions::ggml_rounding`]).
    pub ggml_rounding: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self { n_threads: 0, ggml_rounding: true }
    }
}

/// Which positions of a batch get logits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outputs {
    /// The last token only (generation).
    Last,
    /// Every token (perplexity, speculative verification).
    All,
    /// These indices into the batch's tokens, in this order.
    Positions(Vec<usize>),
}

/// A model ready to run: hyper-parameters, weights on a backend, and its graph.
pub struct Model<B: Backend = CpuBackend> {
    backend: B,
    hparams: HParams,
    arch_name: &'static str,
    graph: Box<dyn models::Architecture<B>>,
}

impl Model<CpuBackend> {
    /// Loads a model onto the CPU backend.
    pub fn load_source(src: &dyn ModelSource, opts: &LoadOptions) -> Result<Self, RuntimeError> {
        let backend = CpuBackend::new(&CpuOptions { n_threads: opts.n_threads, ggml_rounding: opts.ggml_rounding });
        Model::load_on(backend, src)
    }
}

impl<B: Backend + 'static> Model<B> {
    /// Loads a model onto `backend`.
    pub fn load_on(backend: B, src: &dyn ModelSource) -> Result<Self, RuntimeError> {
        let hparams = HParams::from_metadata(src.metadata())?;
        let (arch_name, graph) = models::load(&backend, &hparams, src)?;
        tracing::info!(arch = arch_name, n_layer = hparams.n_layer, n_embd = hparams.n_embd, backend = backend.name(), "model loaded");
        Ok(Self { backend, hparams, arch_name, graph })
    }

    pub fn hparams(&self) -> &HParams {
        &self.hparams
    }

    pub fn n_vocab(&self) -> usize {
        self.hparams.n_vocab
    }

    /// The architecture name as in `general.architecture`.
    pub fn arch_name(&self) -> &'static str {
        self.arch_name
    }

    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// An empty cache for `n_ctx` positions (at most the model's training context).
    pub fn new_kv_cache(&self, n_ctx: usize) -> Result<KvCache<B>, RuntimeError> {
        let max = self.hparams.n_ctx_train;
        if n_ctx == 0 || n_ctx > max {
            return Err(RuntimeError::BadContext { n_ctx, reason: format!("it must be between 1 and the model's context length {max}") });
        }
        KvCache::new(&self.backend, n_ctx, &self.graph.cache_widths())
    }

    /// Runs `tokens` at positions `kv.len()..`, appends them to `kv` and returns the logits
    /// of the positions `outputs` asks for: `n_out * n_vocab` values, row-major.
    pub fn forward(&self, kv: &mut KvCache<B>, tokens: &[u32], outputs: Outputs) -> Result<Vec<f32>, RuntimeError> {
        if tokens.is_empty() {
            return Err(RuntimeError::EmptyBatch);
        }
        if kv.n_layers() != self.hparams.n_layer {
            return Err(RuntimeError::CacheMismatch { detail: format!("{} layers, the model has {}", kv.n_layers(), self.hparams.n_layer) });
        }
        let n_vocab = self.hparams.n_vocab;
        if let Some((index, &token)) = tokens.iter().enumerate().find(|(_, t)| **t as usize >= n_vocab) {
            return Err(RuntimeError::TokenOutOfRange { token, index, n_vocab });
        }
        kv.check_room(tokens.len())?;
        let rows: Vec<usize> = match outputs {
            Outputs::Last => vec![tokens.len() - 1],
            Outputs::All => (0..tokens.len()).collect(),
            Outputs::Positions(p) => p,
        };
        if let Some(&index) = rows.iter().find(|&&r| r >= tokens.len()) {
            return Err(RuntimeError::BadOutput { index, n_tokens: tokens.len() });
        }
        let logits = self.graph.forward(&self.backend, kv, tokens, &rows)?;
        kv.advance(tokens.len());
        let mut out = Vec::with_capacity(rows.len() * n_vocab);
        self.backend.download(&logits, &mut out)?;
        Ok(out)
    }
}
