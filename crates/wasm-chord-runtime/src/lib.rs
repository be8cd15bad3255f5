//! Model graphs, KV cache, sampling and generation.
//!
//! [`Model`] loads a supported architecture from a model file onto a backend (the CPU one by
//! default) and runs batched forward passes over a [`KvCache`].

pub mod error;
pub mod generate;
mod gguf_source;
pub mod kv_cache;
pub mod models;
pub mod sampling;
pub mod session;

use std::sync::{Arc, Mutex};

pub use wasm_chord_core::backend::{AttentionKind, KvType};
use wasm_chord_core::backend::Backend;
use wasm_chord_core::gguf::GgufFile;
use wasm_chord_core::hparams::HParams;
use wasm_chord_cpu::{CpuBackend, CpuOptions};

pub use error::RuntimeError;
pub use gguf_source::GgufSource;
pub use kv_cache::KvCache;
pub use models::{supported_architectures, ModelSource, TensorView};

/// How a model is loaded.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// CPU threads; 0 means one per physical core.
    pub n_threads: usize,
    /// Emulate llama.cpp's CPU rounding of activations (see [`CpuOptions::ggml_rounding`]).
    pub ggml_rounding: bool,
    /// Standard (the default, llama.cpp's exact order; see [`CpuOptions::attention`]) or flash
    /// attention.
    pub attention: AttentionKind,
    /// How the key/value cache stores its values.
    pub kv_type: KvType,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self { n_threads: 0, ggml_rounding: true, attention: AttentionKind::Standard, kv_type: KvType::default() }
    }
}

/// Which backend a model runs on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BackendKind {
    #[default]
    Cpu,
    /// The first CUDA GPU; needs a build with the `cuda` feature.
    Cuda,
}

impl BackendKind {
    pub const ALL: [BackendKind; 2] = [BackendKind::Cpu, BackendKind::Cuda];

    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Cpu => "cpu",
            BackendKind::Cuda => "cuda",
        }
    }

    /// Whether this build can run the backend at all (CUDA also needs a driver and a GPU).
    pub fn compiled_in(self) -> bool {
        match self {
            BackendKind::Cpu => true,
            BackendKind::Cuda => cfg!(feature = "cuda"),
        }
    }
}

impl std::str::FromStr for BackendKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL.into_iter().find(|k| k.name() == s).ok_or_else(|| format!("unknown backend {s:?} (cpu or cuda)"))
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
    /// One forward pass at a time: a backend recording a decode step (a CUDA graph) must not
    /// see another pass's ops in between.
    pass: Mutex<()>,
}

impl Model<CpuBackend> {
    /// Loads a GGUF model onto the CPU backend; weights stay in the (memory-mapped) file.
    pub fn load(file: Arc<GgufFile>, opts: &LoadOptions) -> Result<Self, RuntimeError> {
        Self::load_source(&GgufSource::new(file), opts)
    }

    /// Loads a model onto the CPU backend.
    pub fn load_source(src: &dyn ModelSource, opts: &LoadOptions) -> Result<Self, RuntimeError> {
        let backend = CpuBackend::new(&CpuOptions {
            n_threads: opts.n_threads,
            ggml_rounding: opts.ggml_rounding,
            attention: opts.attention,
            kv_type: opts.kv_type,
        });
        Model::load_on(backend, src)
    }
}

impl<B: Backend + 'static> Model<B> {
    /// Loads a model onto `backend`.
    pub fn load_on(backend: B, src: &dyn ModelSource) -> Result<Self, RuntimeError> {
        let hparams = HParams::from_metadata(src.metadata())?;
        if let (Some(mem), Some(needed)) = (backend.device_memory(), src.weight_bytes()) {
            // The weights go to the device as they are in the file (plus row padding and small
            // f32 copies of the 1-D ones, well under 1%).
            if needed > mem.free {
                return Err(RuntimeError::ModelTooLarge { backend: backend.name(), needed, free: mem.free, total: mem.total });
            }
        }
        let (arch_name, graph) = models::load(&backend, &hparams, src)?;
        tracing::info!(arch = arch_name, n_layer = hparams.n_layer, n_embd = hparams.n_embd, backend = backend.name(), "model loaded");
        Ok(Self { backend, hparams, arch_name, graph, pass: Mutex::new(()) })
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
        let _pass = self.pass.lock().unwrap_or_else(|p| p.into_inner());
        let logits = self.forward_tensor(kv, tokens, outputs)?;
        let mut out = Vec::new();
        self.backend.download(&logits, &mut out)?;
        Ok(out)
    }

    /// Runs `tokens` like [`Model::forward`] and returns the most likely next token after the
    /// last one (greedy sampling where the logits are: a GPU returns 4 bytes, not a row).
    pub fn forward_greedy(&self, kv: &mut KvCache<B>, tokens: &[u32]) -> Result<u32, RuntimeError> {
        let _pass = self.pass.lock().unwrap_or_else(|p| p.into_inner());
        let logits = self.forward_tensor(kv, tokens, Outputs::Last)?;
        Ok(self.backend.argmax(&logits, 0)?)
    }

    /// The forward pass, its logits left on the backend. A single token runs as a decode step
    /// (`Backend::begin_decode_step`), which a backend may replay from a recording.
    fn forward_tensor(&self, kv: &mut KvCache<B>, tokens: &[u32], outputs: Outputs) -> Result<B::Tensor, RuntimeError> {
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
        if let ([token], [0]) = (tokens, rows.as_slice()) {
            self.backend.begin_decode_step(*token, kv.len())?;
            let logits = self.graph.forward(&self.backend, kv, tokens, &rows);
            if self.backend.end_decode_step(logits.is_ok())? {
                let logits = logits?;
                kv.advance(1);
                return Ok(logits);
            }
            // The backend could not record or replay the step: run it again as a plain pass.
            drop(logits);
        }
        let logits = self.graph.forward(&self.backend, kv, tokens, &rows)?;
        kv.advance(tokens.len());
        Ok(logits)
    }
}
