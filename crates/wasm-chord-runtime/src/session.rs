//! The front-end API: an [`Engine`] is a loaded model with its tokenizer and chat template; a
//! [`Session`] is one conversation's KV cache over it, generating with prefix reuse. The engine
//! runs on the backend [`EngineOptions::backend`] names (CPU, or CUDA in a `cuda` build); the
//! API is the same for both.

use std::sync::Arc;

use wasm_chord_core::gguf::GgufFile;
use wasm_chord_core::hparams::HParams;
use wasm_chord_core::template::ChatTemplate;
use wasm_chord_core::tokenizer::{StreamDecoder, Tokenizer};
use wasm_chord_cpu::CpuBackend;
#[cfg(feature = "cuda")]
use wasm_chord_cuda::CudaBackend;

use crate::generate::{generate, Decoder, GenerateError, GenerateOutput, GenerateRequest, Step, Vocab};
use crate::{AttentionKind, BackendKind, KvCache, KvType, LoadOptions, Model, Outputs, RuntimeError};

pub use wasm_chord_core::template::ChatMessage;

/// How an engine is loaded.
#[derive(Clone, Debug, Default)]
pub struct EngineOptions {
    /// CPU threads; 0 means one per physical core.
    pub n_threads: usize,
    /// Flash or standard attention; `None` takes the backend's default (standard on the CPU,
    /// llama.cpp's exact order; flash on CUDA).
    pub attention: Option<AttentionKind>,
    /// How the KV cache stores keys and values (f16 by default).
    pub kv_type: KvType,
    /// Where the model runs.
    pub backend: BackendKind,
}

/// A model on one of the backends.
enum Loaded {
    Cpu(Model<CpuBackend>),
    #[cfg(feature = "cuda")]
    Cuda(Model<CudaBackend>),
}

/// A session's cache, on its engine's backend.
enum SessionKv {
    Cpu(KvCache<CpuBackend>),
    #[cfg(feature = "cuda")]
    Cuda(KvCache<CudaBackend>),
}

/// Runs `$body` with `$m` bound to the model, whatever its backend.
macro_rules! with_model {
    ($loaded:expr, $m:ident => $body:expr) => {
        match $loaded {
            Loaded::Cpu($m) => $body,
            #[cfg(feature = "cuda")]
            Loaded::Cuda($m) => $body,
        }
    };
}

/// Runs `$body` with the model and the cache of the same backend bound to `$m` and `$kv`.
macro_rules! with_model_kv {
    ($loaded:expr, $cache:expr, $m:ident, $kv:ident => $body:expr) => {
        match ($loaded, $cache) {
            (Loaded::Cpu($m), SessionKv::Cpu($kv)) => $body,
            #[cfg(feature = "cuda")]
            (Loaded::Cuda($m), SessionKv::Cuda($kv)) => $body,
            #[cfg(feature = "cuda")]
            _ => Err(RuntimeError::CacheMismatch { detail: "a cache of another backend".into() }),
        }
    };
}

impl Loaded {
    fn hparams(&self) -> &HParams {
        with_model!(self, m => m.hparams())
    }

    fn new_kv(&self, n_ctx: usize) -> Result<SessionKv, RuntimeError> {
        match self {
            Loaded::Cpu(m) => m.new_kv_cache(n_ctx).map(SessionKv::Cpu),
            #[cfg(feature = "cuda")]
            Loaded::Cuda(m) => m.new_kv_cache(n_ctx).map(SessionKv::Cuda),
        }
    }

    fn forward(&self, kv: &mut SessionKv, tokens: &[u32], outputs: Outputs) -> Result<Vec<f32>, RuntimeError> {
        with_model_kv!(self, kv, m, kv => m.forward(kv, tokens, outputs))
    }

    fn forward_greedy(&self, kv: &mut SessionKv, tokens: &[u32]) -> Result<u32, RuntimeError> {
        with_model_kv!(self, kv, m, kv => m.forward_greedy(kv, tokens))
    }
}

impl SessionKv {
    fn capacity(&self) -> usize {
        match self {
            SessionKv::Cpu(kv) => kv.capacity(),
            #[cfg(feature = "cuda")]
            SessionKv::Cuda(kv) => kv.capacity(),
        }
    }

    fn truncate(&mut self, n: usize) {
        match self {
            SessionKv::Cpu(kv) => kv.truncate(n),
            #[cfg(feature = "cuda")]
            SessionKv::Cuda(kv) => kv.truncate(n),
        }
    }
}

/// A model file loaded for generation: weights, tokenizer and (when the file has one) chat template.
pub struct Engine {
    model: Loaded,
    tokenizer: Tokenizer,
    template: Option<ChatTemplate>,
}

/// The model on the backend `opts` names.
fn load_model(file: Arc<GgufFile>, opts: &EngineOptions) -> Result<Loaded, String> {
    match opts.backend {
        BackendKind::Cpu => {
            let defaults = LoadOptions::default();
            let attention = opts.attention.unwrap_or(defaults.attention);
            let load = LoadOptions { n_threads: opts.n_threads, attention, kv_type: opts.kv_type, ..defaults };
            Model::load(file, &load).map(Loaded::Cpu).map_err(|e| e.to_string())
        }
        #[cfg(feature = "cuda")]
        BackendKind::Cuda => {
            let defaults = wasm_chord_cuda::CudaOptions::default();
            let attention = opts.attention.unwrap_or(defaults.attention);
            let cuda = wasm_chord_cuda::CudaOptions { attention, kv_type: opts.kv_type, ..defaults };
            let backend = CudaBackend::with_options(0, cuda).map_err(|e| format!("the cuda backend is not available: {e}"))?;
            Model::load_on(backend, &crate::GgufSource::new(file)).map(Loaded::Cuda).map_err(|e| e.to_string())
        }
        #[cfg(not(feature = "cuda"))]
        BackendKind::Cuda => {
            let _ = file;
            Err("this build has no cuda backend: rebuild with `--features cuda`".into())
        }
    }
}

fn load_error(name: &str, e: impl std::fmt::Display) -> GenerateError {
    GenerateError::Load { path: name.to_string(), message: e.to_string() }
}

impl Engine {
    /// Opens a GGUF file and loads its model, tokenizer and chat template.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn load(path: impl AsRef<std::path::Path>, opts: &EngineOptions) -> Result<Self, GenerateError> {
        let path = path.as_ref();
        let name = path.display().to_string();
        let file = GgufFile::open(path).map_err(|e| load_error(&name, e))?;
        Self::load_named(Arc::new(file), &name, opts)
    }

    /// Loads from a GGUF file already in memory (the browser hands over bytes, not paths).
    pub fn from_gguf(file: Arc<GgufFile>, opts: &EngineOptions) -> Result<Self, GenerateError> {
        Self::load_named(file, "<memory>", opts)
    }

    fn load_named(file: Arc<GgufFile>, name: &str, opts: &EngineOptions) -> Result<Self, GenerateError> {
        let tokenizer = Tokenizer::from_gguf(&file).map_err(|e| load_error(name, e))?;
        // A file without a template can still run plain prompts; `render_chat` reports it.
        let template = ChatTemplate::from_gguf(&file, None).ok();
        let model = load_model(file, opts).map_err(|e| load_error(name, e))?;
        Ok(Self { model, tokenizer, template })
    }

    /// The model's hyper-parameters.
    pub fn hparams(&self) -> &HParams {
        self.model.hparams()
    }

    /// The backend the model runs on.
    pub fn backend(&self) -> BackendKind {
        match &self.model {
            Loaded::Cpu(_) => BackendKind::Cpu,
            #[cfg(feature = "cuda")]
            Loaded::Cuda(_) => BackendKind::Cuda,
        }
    }

    /// CPU threads of the CPU backend; 0 on a GPU.
    pub fn n_threads(&self) -> usize {
        match &self.model {
            Loaded::Cpu(m) => m.backend().n_threads(),
            #[cfg(feature = "cuda")]
            Loaded::Cuda(_) => 0,
        }
    }

    /// The GPU's name, on the CUDA backend.
    pub fn device_name(&self) -> Option<String> {
        match &self.model {
            Loaded::Cpu(_) => None,
            #[cfg(feature = "cuda")]
            Loaded::Cuda(m) => Some(m.backend().device().name().to_string()),
        }
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    pub fn n_vocab(&self) -> usize {
        self.model.hparams().n_vocab
    }

    /// The context length the model was trained with, the most a session can hold.
    pub fn n_ctx_train(&self) -> usize {
        self.model.hparams().n_ctx_train
    }

    /// Text to token ids; `add_special` adds BOS/EOS as the model asks, `parse_special` turns
    /// special-token text such as `<|im_start|>` into its id.
    pub fn tokenize(&self, text: &str, add_special: bool, parse_special: bool) -> Result<Vec<u32>, GenerateError> {
        Ok(self.tokenizer.encode(text, add_special, parse_special))
    }

    /// Token ids back to text.
    pub fn detokenize(&self, ids: &[u32]) -> String {
        self.tokenizer.decode(ids)
    }

    /// Renders a conversation with the model's chat template.
    pub fn render_chat(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String, GenerateError> {
        let template = self
            .template
            .as_ref()
            .ok_or_else(|| GenerateError::Tokenizer("the model file has no chat template".into()))?;
        template.render(messages, add_generation_prompt).map_err(|e| GenerateError::Tokenizer(e.to_string()))
    }

    /// A fresh conversation with a cache of `n_ctx` tokens.
    pub fn new_session(self: &Arc<Self>, n_ctx: usize) -> Result<Session, GenerateError> {
        let kv = self.model.new_kv(n_ctx).map_err(|e| GenerateError::Model(e.to_string()))?;
        Ok(Session { engine: Arc::clone(self), kv, cached: Vec::new() })
    }
}

/// One conversation: a KV cache and the tokens it holds. Each `generate` reuses the longest
/// prefix its prompt shares with what the cache already holds.
pub struct Session {
    engine: Arc<Engine>,
    kv: SessionKv,
    cached: Vec<u32>,
}

struct ModelDecoder<'a> {
    model: &'a Loaded,
    kv: &'a mut SessionKv,
}

fn model_error(e: RuntimeError) -> GenerateError {
    GenerateError::Model(e.to_string())
}

impl Decoder for ModelDecoder<'_> {
    fn n_vocab(&self) -> usize {
        self.model.hparams().n_vocab
    }

    fn n_ctx(&self) -> usize {
        self.kv.capacity()
    }

    fn decode(&mut self, tokens: &[u32]) -> Result<Vec<f32>, GenerateError> {
        self.model.forward(self.kv, tokens, Outputs::Last).map_err(model_error)
    }

    fn decode_greedy(&mut self, tokens: &[u32]) -> Result<Option<u32>, GenerateError> {
        // Only where it saves copying the logits out: on a GPU.
        if matches!(self.model, Loaded::Cpu(_)) {
            return Ok(None);
        }
        self.model.forward_greedy(self.kv, tokens).map(Some).map_err(model_error)
    }

    fn truncate(&mut self, n: usize) {
        self.kv.truncate(n);
    }
}

impl Vocab for Tokenizer {
    type Stream = StreamDecoder;

    fn is_eog(&self, id: u32) -> bool {
        Tokenizer::is_eog(self, id)
    }

    fn eog_ids(&self) -> Vec<u32> {
        Tokenizer::eog_ids(self).to_vec()
    }

    fn stream(&self) -> StreamDecoder {
        StreamDecoder::new()
    }

    fn push(&self, stream: &mut StreamDecoder, id: u32) -> String {
        stream.push(self, id)
    }

    fn finish(&self, stream: &mut StreamDecoder) -> String {
        stream.finish()
    }
}

impl Session {
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// Most tokens the session holds.
    pub fn n_ctx(&self) -> usize {
        self.kv.capacity()
    }

    /// The tokens whose keys and values are cached.
    pub fn cached_tokens(&self) -> &[u32] {
        &self.cached
    }

    /// Forgets the conversation.
    pub fn clear(&mut self) {
        self.kv.truncate(0);
        self.cached.clear();
    }

    /// Forgets every cached token from position `n` on.
    pub fn truncate(&mut self, n: usize) {
        self.kv.truncate(n);
        self.cached.truncate(n);
    }

    /// Runs `tokens` after the cached ones (no sampling) and returns the next-token logits of
    /// the last one (what a benchmark or a perplexity tool needs).
    pub fn evaluate(&mut self, tokens: &[u32]) -> Result<Vec<f32>, GenerateError> {
        let logits = self.engine.model.forward(&mut self.kv, tokens, Outputs::Last).map_err(model_error);
        self.after_pass(tokens, logits)
    }

    /// Runs `tokens` after the cached ones and returns the most likely next token, picked where
    /// the logits are (on a GPU only 4 bytes come back).
    pub fn evaluate_greedy(&mut self, tokens: &[u32]) -> Result<u32, GenerateError> {
        let token = self.engine.model.forward_greedy(&mut self.kv, tokens).map_err(model_error);
        self.after_pass(tokens, token)
    }

    fn after_pass<T>(&mut self, tokens: &[u32], result: Result<T, GenerateError>) -> Result<T, GenerateError> {
        match result {
            Ok(v) => {
                self.cached.extend_from_slice(tokens);
                Ok(v)
            }
            Err(e) => {
                // A failed pass may leave the cache out of step with `cached`.
                self.clear();
                Err(e)
            }
        }
    }

    /// Generates a continuation of `request.prompt`, calling `on_step` with every token as it
    /// is sampled. Stops early when `request.cancel` is set.
    pub fn generate(
        &mut self,
        request: &GenerateRequest,
        on_step: impl FnMut(&Step<'_>),
    ) -> Result<GenerateOutput, GenerateError> {
        let engine = Arc::clone(&self.engine);
        let mut decoder = ModelDecoder { model: &engine.model, kv: &mut self.kv };
        let result = generate(&mut decoder, &engine.tokenizer, &mut self.cached, request, on_step);
        if result.is_err() {
            // A failed forward pass may leave the cache out of step with `cached`.
            self.clear();
        }
        result
    }
}
