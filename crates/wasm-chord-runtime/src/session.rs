//! The front-end API: an [`Engine`] is a loaded model with its tokenizer and chat template; a
//! [`Session`] is one conversation's KV cache over it, generating with prefix reuse.

use std::sync::Arc;

use wasm_chord_core::gguf::GgufFile;
use wasm_chord_core::template::ChatTemplate;
use wasm_chord_core::tokenizer::{StreamDecoder, Tokenizer};
use wasm_chord_cpu::CpuBackend;

use crate::generate::{generate, Decoder, GenerateError, GenerateOutput, GenerateRequest, Step, Vocab};
use crate::{AttentionKind, KvCache, KvType, LoadOptions, Model, Outputs};

pub use wasm_chord_core::template::ChatMessage;

/// How an engine is loaded.
#[derive(Clone, Debug, Default)]
pub struct EngineOptions {
    /// CPU threads; 0 means one per physical core.
    pub n_threads: usize,
    /// Flash (tiled, the default) or standard attention.
    pub attention: AttentionKind,
    /// How the KV cache stores keys and values (f16 by default).
    pub kv_type: KvType,
}

/// A model file loaded for generation: weights, tokenizer and (when the file has one) chat template.
pub struct Engine {
    model: Model,
    tokenizer: Tokenizer,
    template: Option<ChatTemplate>,
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
        let load = LoadOptions {
            n_threads: opts.n_threads,
            attention: opts.attention,
            kv_type: opts.kv_type,
            ..LoadOptions::default()
        };
        let model = Model::load(file, &load).map_err(|e| load_error(name, e))?;
        Ok(Self { model, tokenizer, template })
    }

    pub fn model(&self) -> &Model {
        &self.model
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    pub fn n_vocab(&self) -> usize {
        self.model.n_vocab()
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
        let kv = self.model.new_kv_cache(n_ctx).map_err(|e| GenerateError::Model(e.to_string()))?;
        Ok(Session { engine: Arc::clone(self), kv, cached: Vec::new() })
    }
}

/// One conversation: a KV cache and the tokens it holds. Each `generate` reuses the longest
/// prefix its prompt shares with what the cache already holds.
pub struct Session {
    engine: Arc<Engine>,
    kv: KvCache<CpuBackend>,
    cached: Vec<u32>,
}

struct ModelDecoder<'a> {
    model: &'a Model,
    kv: &'a mut KvCache<CpuBackend>,
}

impl Decoder for ModelDecoder<'_> {
    fn n_vocab(&self) -> usize {
        self.model.n_vocab()
    }

    fn n_ctx(&self) -> usize {
        self.kv.capacity()
    }

    fn decode(&mut self, tokens: &[u32]) -> Result<Vec<f32>, GenerateError> {
        self.model.forward(self.kv, tokens, Outputs::Last).map_err(|e| GenerateError::Model(e.to_string()))
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
