//! Text to token ids and back, exactly as llama.cpp does it for the same GGUF file.
//!
//! Two vocabulary kinds are supported: SentencePiece-style (`tokenizer.ggml.model = llama`:
//! score-driven merges with byte fallback) and byte-level BPE (`gpt2`: merge ranks over GPT-2 byte
//! characters, after one of llama.cpp's pre-tokenizers). Before either runs, special tokens are
//! cut out of the text (control tokens only when asked to parse them). [`Vocab`] holds what the
//! GGUF metadata says; [`Tokenizer::from_vocab`] applies llama.cpp's defaults and fix-ups
//! (`llama_vocab::impl::load`).

mod bpe;
mod fxhash;
mod gguf_vocab;
mod index;
pub mod pretokenize;
mod spm;
mod stream;
pub mod unicode;

use std::collections::HashMap;

use fxhash::FxBuildHasher;
pub use pretokenize::PreTokenizer;
pub use stream::StreamDecoder;

/// Errors building a tokenizer from a vocabulary.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("reading tokenizer metadata: {0}")]
    Metadata(String),
    #[error("missing metadata key {key}")]
    MissingKey { key: &'static str },
    #[error("unsupported tokenizer model '{0}' (tokenizer.ggml.model); supported: llama, gpt2")]
    UnsupportedModel(String),
    #[error("unsupported pre-tokenizer '{0}' (tokenizer.ggml.pre)")]
    UnsupportedPreTokenizer(String),
    #[error("{key} has {got} entries for {n_vocab} tokens")]
    LengthMismatch { key: &'static str, got: usize, n_vocab: usize },
    #[error("the vocabulary has no tokens")]
    EmptyVocab,
}

/// Token types as GGUF stores them (`tokenizer.ggml.token_type`).
pub mod token_type {
    pub const UNDEFINED: i32 = 0;
    pub const NORMAL: i32 = 1;
    pub const UNKNOWN: i32 = 2;
    pub const CONTROL: i32 = 3;
    pub const USER_DEFINED: i32 = 4;
    pub const UNUSED: i32 = 5;
    pub const BYTE: i32 = 6;
}

/// Token attribute bits (llama.cpp's `llama_token_attr`).
pub mod attr {
    pub const UNKNOWN: u32 = 1 << 0;
    pub const UNUSED: u32 = 1 << 1;
    pub const NORMAL: u32 = 1 << 2;
    pub const CONTROL: u32 = 1 << 3;
    pub const USER_DEFINED: u32 = 1 << 4;
    pub const BYTE: u32 = 1 << 5;
}

/// The vocabulary kinds this tokenizer implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VocabKind {
    /// SentencePiece-style (`llama`).
    Spm,
    /// Byte-level BPE (`gpt2`).
    Bpe,
}

/// The tokenizer's part of a GGUF file's metadata, as stored; `None` where a key is absent.
#[derive(Debug, Clone, Default)]
pub struct Vocab {
    /// `tokenizer.ggml.model`.
    pub model: String,
    /// `tokenizer.ggml.pre`.
    pub pre: Option<String>,
    pub tokens: Vec<String>,
    /// One per token, or empty.
    pub scores: Vec<f32>,
    /// One per token (see [`token_type`]), or empty.
    pub token_types: Vec<i32>,
    /// BPE merge rules `"left right"`, highest priority first.
    pub merges: Vec<String>,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub eot: Option<u32>,
    pub eom: Option<u32>,
    pub unk: Option<u32>,
    pub pad: Option<u32>,
    pub fim_pre: Option<u32>,
    pub fim_suf: Option<u32>,
    pub fim_mid: Option<u32>,
    pub fim_pad: Option<u32>,
    pub fim_rep: Option<u32>,
    pub fim_sep: Option<u32>,
    pub add_bos: Option<bool>,
    pub add_eos: Option<bool>,
    pub add_space_prefix: Option<bool>,
}

/// Options of [`Tokenizer::detokenize`] (llama.cpp's `llama_detokenize`).
#[derive(Debug, Clone, Copy, Default)]
pub struct DecodeOptions {
    /// Drop a leading BOS and trailing EOS where the vocabulary adds them.
    pub remove_special: bool,
    /// Render control tokens as their text (otherwise they produce nothing).
    pub unparse_special: bool,
}

/// A piece of input text between special tokens, or a special token cut out of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fragment<'t> {
    Text(&'t str),
    Token(u32),
}

enum Engine {
    /// `joins_space`: the characters some token joins to a following `▁` (see `spm::segments`).
    Spm { joins_space: Vec<char> },
    Bpe { merges: bpe::BpeMerges, pre: PreTokenizer, ignore_merges: bool },
}

/// A loaded tokenizer: encodes text to ids and decodes ids to text.
pub struct Tokenizer {
    kind: VocabKind,
    engine: Engine,
    tokens: Vec<String>,
    scores: Vec<f32>,
    attrs: Vec<u32>,
    token_index: index::TokenIndex,
    /// The token of each byte for SPM byte fallback (`<0xXX>`, or the byte itself).
    byte_tokens: [Option<u32>; 256],
    /// Control, user-defined and unknown tokens, longest text first: the order they are cut
    /// out of input text.
    special_tokens: Vec<u32>,
    /// Each token's text as bytes, control tokens included.
    pieces: Vec<Vec<u8>>,
    eog: Vec<u32>,
    bos: Option<u32>,
    eos: Option<u32>,
    eot: Option<u32>,
    eom: Option<u32>,
    unk: Option<u32>,
    pad: Option<u32>,
    add_bos: bool,
    add_eos: bool,
    add_space_prefix: bool,
    clean_spaces: bool,
}

/// How llama.cpp configures a BPE vocabulary from its `tokenizer.ggml.pre` name.
struct BpeSettings {
    pre: PreTokenizer,
    ignore_merges: bool,
    clean_spaces: bool,
    add_bos: bool,
    no_default_bos: bool,
}

fn bpe_settings(name: &str) -> Option<BpeSettings> {
    let pre = PreTokenizer::from_name(name)?;
    let ignore_merges = matches!(
        name,
        "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral" | "midm-2.0" | "lfm2" | "jina-v5-nano"
            | "glm4" | "glm5"
    );
    let add_bos = matches!(
        name,
        "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral" | "midm-2.0" | "lfm2" | "jina-v5-nano"
    );
    let clean_spaces = !matches!(
        name,
        "deepseek-llm" | "command-r" | "qwen2" | "deepseek-r1-qwen" | "kormo" | "f2llmv2" | "hunyuan" | "solar-open"
            | "smollm" | "trillion" | "granite-docling"
    );
    let no_default_bos = matches!(name, "chatglm-bpe" | "glm4" | "glm5");
    Some(BpeSettings { pre, ignore_merges, clean_spaces, add_bos, no_default_bos })
}

/// Token texts that end generation, as llama.cpp lists them.
const EOG_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<|flush|>",
    "<|calls|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "</s>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "[EOS]",
    "<|end_of_text|>",
    "<end_of_utterance>",
    "<eos>",
    "<turn|>",
    "<|tool_response>",
    "<｜end▁of▁sentence｜>",
    "[e~[",
];

const EOT_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "<｜end▁of▁sentence｜>",
    "<end_of_utterance>",
];
const EOM_TEXTS: &[&str] = &["<|eom_id|>"];
const FIM_PRE_TEXTS: &[&str] =
    &["<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>", "<｜fim▁begin｜>", "<PRE>", "▁<PRE>", "<|code_prefix|>", "<|prefix|>"];
const FIM_SUF_TEXTS: &[&str] =
    &["<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>", "<｜fim▁hole｜>", "<SUF>", "▁<SUF>", "<|code_suffix|>", "<|suffix|>"];
const FIM_MID_TEXTS: &[&str] =
    &["<|fim_middle|>", "<fim-middle>", "<fim_middle>", "<｜fim▁end｜>", "<MID>", "▁<MID>", "<|code_middle|>", "<|middle|>"];
const FIM_PAD_TEXTS: &[&str] = &["<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"];
const FIM_REP_TEXTS: &[&str] = &["<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>"];
const FIM_SEP_TEXTS: &[&str] = &["<|file_sep|>"];

fn attr_of_type(ty: i32) -> u32 {
    match ty {
        token_type::UNKNOWN => attr::UNKNOWN,
        token_type::UNUSED => attr::UNUSED,
        token_type::NORMAL => attr::NORMAL,
        token_type::CONTROL => attr::CONTROL,
        token_type::USER_DEFINED => attr::USER_DEFINED,
        token_type::BYTE => attr::BYTE,
        _ => 0,
    }
}

impl Tokenizer {
    /// Builds the tokenizer of a GGUF file from its `tokenizer.*` metadata.
    pub fn from_gguf(file: &crate::gguf::GgufFile) -> Result<Self, TokenizerError> {
        Self::from_vocab(gguf_vocab::read_vocab(file.metadata())?)
    }

    /// Builds a tokenizer from vocabulary metadata, with llama.cpp's defaults for what is absent.
    pub fn from_vocab(v: Vocab) -> Result<Self, TokenizerError> {
        let n = v.tokens.len();
        if n == 0 {
            return Err(TokenizerError::EmptyVocab);
        }
        for (key, got) in [("tokenizer.ggml.scores", v.scores.len()), ("tokenizer.ggml.token_type", v.token_types.len())] {
            if got != 0 && got < n {
                return Err(TokenizerError::LengthMismatch { key, got, n_vocab: n });
            }
        }
        let (kind, settings) = match v.model.as_str() {
            "llama" => (VocabKind::Spm, None),
            "gpt2" => {
                let pre = v.pre.clone().unwrap_or_default();
                let s = bpe_settings(&pre).ok_or(TokenizerError::UnsupportedPreTokenizer(pre))?;
                (VocabKind::Bpe, Some(s))
            }
            other => return Err(TokenizerError::UnsupportedModel(other.to_owned())),
        };

        // Defaults of llama.cpp for each kind, before the metadata overrides them.
        let (mut bos, mut eos, mut unk) = match kind {
            VocabKind::Spm => (Some(1), Some(2), Some(0)),
            VocabKind::Bpe => (Some(11), Some(11), None),
        };
        if settings.as_ref().is_some_and(|s| s.no_default_bos) {
            bos = None;
        }
        let (mut add_bos, mut add_eos, mut add_space_prefix, clean_spaces) = match &settings {
            None => (true, false, true, false),
            Some(s) => (s.add_bos, false, false, s.clean_spaces),
        };
        if let Some(b) = v.add_space_prefix {
            add_space_prefix = b;
        }

        let mut tokens = v.tokens;
        for (i, t) in tokens.iter_mut().enumerate() {
            if t.is_empty() {
                *t = format!("[EMPTY_{i}]");
            }
        }
        let token_index = index::TokenIndex::build(&tokens);
        let token_id = |text: &str| token_index.get(&tokens, text);
        let scores = if v.scores.is_empty() { vec![0.0; n] } else { v.scores[..n].to_vec() };
        let mut attrs: Vec<u32> = if v.token_types.is_empty() {
            vec![attr::NORMAL; n]
        } else {
            v.token_types[..n].iter().map(|&t| attr_of_type(t)).collect()
        };

        // Special ids: defaults outside the vocabulary are disabled; metadata ids outside it are ignored.
        let in_range = |id: Option<u32>| id.filter(|&i| (i as usize) < n);
        let pick = |default: Option<u32>, meta: Option<u32>| in_range(meta).or(in_range(default));
        bos = pick(bos, v.bos);
        eos = pick(eos, v.eos);
        unk = pick(unk, v.unk);
        let mut eot = in_range(v.eot);
        let mut eom = in_range(v.eom);
        let pad = in_range(v.pad);
        let mut fim_pre = in_range(v.fim_pre);
        let mut fim_suf = in_range(v.fim_suf);
        let mut fim_mid = in_range(v.fim_mid);
        let mut fim_pad = in_range(v.fim_pad);
        let mut fim_rep = in_range(v.fim_rep);
        let mut fim_sep = in_range(v.fim_sep);
        if let Some(b) = v.add_bos {
            add_bos = b;
        }
        if let Some(b) = v.add_eos {
            add_eos = b;
        }

        // Find special tokens by their text where the metadata does not name them, and mark
        // them as control tokens. (llama.cpp walks a hash map, so with several candidates its
        // choice is arbitrary; the lowest id is taken here. All of them end generation anyway.)
        for (slot, texts) in [
            (&mut eot, EOT_TEXTS),
            (&mut eom, EOM_TEXTS),
            (&mut fim_pre, FIM_PRE_TEXTS),
            (&mut fim_suf, FIM_SUF_TEXTS),
            (&mut fim_mid, FIM_MID_TEXTS),
            (&mut fim_pad, FIM_PAD_TEXTS),
            (&mut fim_rep, FIM_REP_TEXTS),
            (&mut fim_sep, FIM_SEP_TEXTS),
        ] {
            if slot.is_none() {
                if let Some(id) = (0..n).find(|&i| texts.contains(&tokens[i].as_str())) {
                    *slot = Some(id as u32);
                    attrs[id] |= attr::CONTROL;
                }
            }
        }
        for (i, t) in tokens.iter().enumerate() {
            if attrs[i] & attr::CONTROL != 0 && t.contains("unused") {
                attrs[i] |= attr::UNUSED;
            }
        }

        let mut eog: Vec<u32> = [fim_pad, fim_rep, fim_sep].into_iter().flatten().collect();
        for (i, t) in tokens.iter().enumerate() {
            if EOG_TEXTS.contains(&t.as_str()) {
                eog.push(i as u32);
                attrs[i] |= attr::CONTROL;
            }
        }
        for (i, t) in tokens.iter().enumerate() {
            if matches!(t.as_str(), "<|channel|>" | "<|message|>" | "<|start|>" | "<|constrain|>") {
                attrs[i] = attr::USER_DEFINED;
            }
        }
        eog.extend([eos, eot, eom].into_iter().flatten());
        eog.sort_unstable();
        eog.dedup();
        let text_of = |id: u32| tokens[id as usize].as_str();
        // gpt-oss and solar-open: `<|end|>` ends a message, not the generation.
        let has = |eog: &[u32], s: &str| eog.iter().any(|&id| text_of(id) == s);
        if (has(&eog, "<|return|>") && has(&eog, "<|call|>") && has(&eog, "<|end|>"))
            || (has(&eog, "<|calls|>") && has(&eog, "<|flush|>") && has(&eog, "<|end|>"))
        {
            if let Some(pos) = eog.iter().position(|&id| text_of(id) == "<|end|>") {
                attrs[eog[pos] as usize] = attr::USER_DEFINED;
                eog.remove(pos);
            }
        }
        // Gemma 4 and PLaMo have an ordinary `</s>`.
        if has(&eog, "<|tool_response>") || has(&eog, "<|plamo:eos|>") {
            if let Some(pos) = eog.iter().position(|&id| text_of(id) == "</s>") {
                attrs[eog[pos] as usize] = attr::NORMAL;
                eog.remove(pos);
            }
        }

        let mut special_tokens: Vec<u32> = (0..n as u32)
            .filter(|&i| attrs[i as usize] & (attr::CONTROL | attr::USER_DEFINED | attr::UNKNOWN) != 0)
            .collect();
        special_tokens.sort_by(|&a, &b| tokens[b as usize].len().cmp(&tokens[a as usize].len()));

        let mut byte_tokens = [None; 256];
        if kind == VocabKind::Spm {
            for (b, slot) in byte_tokens.iter_mut().enumerate() {
                let hex = format!("<0x{b:02X}>");
                *slot = token_id(&hex).or_else(|| {
                    let c = [b as u8];
                    std::str::from_utf8(&c).ok().and_then(token_id)
                });
            }
        }

        let engine = match settings {
            None => Engine::Spm { joins_space: spm::chars_joined_to_space(&tokens) },
            Some(s) => Engine::Bpe {
                merges: bpe::BpeMerges::new(&v.merges, token_id, n as u32),
                pre: s.pre,
                ignore_merges: s.ignore_merges,
            },
        };

        let mut tok = Tokenizer {
            kind,
            engine,
            tokens,
            scores,
            attrs,
            token_index,
            byte_tokens,
            special_tokens,
            pieces: Vec::new(),
            eog,
            bos,
            eos,
            eot,
            eom,
            unk,
            pad,
            add_bos,
            add_eos,
            add_space_prefix,
            clean_spaces,
        };
        tok.pieces = (0..n as u32).map(|id| tok.render_piece(id)).collect();
        Ok(tok)
    }

    pub fn kind(&self) -> VocabKind {
        self.kind
    }
    pub fn n_vocab(&self) -> usize {
        self.tokens.len()
    }
    pub fn bos(&self) -> Option<u32> {
        self.bos
    }
    pub fn eos(&self) -> Option<u32> {
        self.eos
    }
    /// End of turn (`<|eot_id|>`, `<|im_end|>`, `<end_of_turn>`, ...).
    pub fn eot(&self) -> Option<u32> {
        self.eot
    }
    /// End of message (`<|eom_id|>`).
    pub fn eom(&self) -> Option<u32> {
        self.eom
    }
    pub fn unk(&self) -> Option<u32> {
        self.unk
    }
    pub fn pad(&self) -> Option<u32> {
        self.pad
    }
    /// Every token that ends generation, ascending.
    pub fn eog_ids(&self) -> &[u32] {
        &self.eog
    }
    pub fn is_eog(&self, id: u32) -> bool {
        self.eog.binary_search(&id).is_ok()
    }
    /// Whether [`encode`](Self::encode) with `add_special` puts BOS first.
    pub fn add_bos(&self) -> bool {
        self.add_bos
    }
    /// Whether [`encode`](Self::encode) with `add_special` puts EOS last.
    pub fn add_eos(&self) -> bool {
        self.add_eos
    }
    /// A token's text as stored in the vocabulary (SPM `▁`, GPT-2 byte characters and all).
    pub fn token_text(&self, id: u32) -> Option<&str> {
        self.tokens.get(id as usize).map(String::as_str)
    }
    /// The token whose stored text is exactly `text`.
    pub fn text_to_token(&self, text: &str) -> Option<u32> {
        self.token_index.get(&self.tokens, text)
    }
    /// Whether `id` is a control token (BOS, EOS, `<|im_start|>`, ...).
    pub fn is_control(&self, id: u32) -> bool {
        self.attr(id) & attr::CONTROL != 0
    }
    /// A token's attribute bits (see [`attr`]); 0 for ids outside the vocabulary.
    pub fn attr(&self, id: u32) -> u32 {
        self.attrs.get(id as usize).copied().unwrap_or(0)
    }
    fn score(&self, id: u32) -> f32 {
        self.scores.get(id as usize).copied().unwrap_or(0.0)
    }
    fn byte_token(&self, b: u8) -> Option<u32> {
        self.byte_tokens[b as usize].or(self.unk)
    }

    /// Token ids of `text`. `add_special` adds BOS/EOS as the vocabulary says; `parse_special`
    /// turns control-token text in the input (`<|im_start|>`) into those tokens instead of
    /// spelling it out. User-defined tokens are always matched, as in llama.cpp.
    pub fn encode(&self, text: &str, add_special: bool, parse_special: bool) -> Vec<u32> {
        let fragments = self.split_special(text, parse_special);
        let mut out = Vec::with_capacity(text.len() / 3 + 2);
        if add_special && self.add_bos {
            out.extend(self.bos);
        }
        match &self.engine {
            Engine::Spm { joins_space } => {
                let mut prev_special = true;
                let mut buf = String::new();
                let mut cache: HashMap<Box<str>, (usize, usize), FxBuildHasher> = HashMap::default();
                for fragment in fragments {
                    match fragment {
                        Fragment::Text(t) => {
                            buf.clear();
                            if self.add_space_prefix && prev_special {
                                buf.push('▁');
                            }
                            for c in t.chars() {
                                buf.push(if c == ' ' { '▁' } else { c });
                            }
                            for segment in spm::segments(&buf, joins_space) {
                                // Segments repeat a lot in real text; reuse earlier results.
                                if let Some(&(start, end)) = cache.get(segment) {
                                    out.extend_from_within(start..end);
                                    continue;
                                }
                                let start = out.len();
                                spm::tokenize(self, segment, &mut out);
                                cache.insert(segment.into(), (start, out.len()));
                            }
                            prev_special = false;
                        }
                        Fragment::Token(id) => {
                            out.push(id);
                            prev_special = true;
                        }
                    }
                }
            }
            Engine::Bpe { merges, pre, ignore_merges } => {
                let mut scratch = bpe::BpeScratch::default();
                let mut cache: HashMap<&str, (usize, usize), FxBuildHasher> = HashMap::default();
                let mut encoded = String::new();
                let ascii_token = |c: char| {
                    let mut buf = [0u8; 4];
                    self.text_to_token(c.encode_utf8(&mut buf))
                };
                for fragment in fragments {
                    let t = match fragment {
                        Fragment::Text(t) => t,
                        Fragment::Token(id) => {
                            out.push(id);
                            continue;
                        }
                    };
                    for word in pre.split(t) {
                        // Words repeat a lot in real text; reuse the ids of an earlier occurrence.
                        if let Some(&(start, end)) = cache.get(word) {
                            out.extend_from_within(start..end);
                            continue;
                        }
                        let whole_word = if *ignore_merges {
                            encoded.clear();
                            encoded.extend(word.bytes().map(unicode::gpt2_byte_to_char));
                            self.text_to_token(&encoded)
                        } else {
                            None
                        };
                        let start = out.len();
                        bpe::tokenize_word(merges, word.as_bytes(), whole_word, ascii_token, &mut scratch, &mut out);
                        cache.insert(word, (start, out.len()));
                    }
                }
            }
        }
        if add_special && self.add_eos {
            out.extend(self.eos);
        }
        out
    }

    /// Cuts special tokens out of `text`, longest token first, leftmost occurrence first, as
    /// llama.cpp's `tokenizer_st_partition`.
    fn split_special<'t>(&self, text: &'t str, parse_special: bool) -> Vec<Fragment<'t>> {
        let mut fragments = Vec::new();
        if text.is_empty() {
            return fragments;
        }
        fragments.push(Fragment::Text(text));
        let mut next = Vec::new();
        for &id in &self.special_tokens {
            if !parse_special && self.attr(id) & (attr::CONTROL | attr::UNKNOWN) != 0 {
                continue;
            }
            let needle = self.tokens[id as usize].as_str();
            if !fragments.iter().any(|f| matches!(f, Fragment::Text(t) if t.contains(needle))) {
                continue;
            }
            next.clear();
            for &fragment in &fragments {
                let Fragment::Text(mut rest) = fragment else {
                    next.push(fragment);
                    continue;
                };
                while let Some(pos) = rest.find(needle) {
                    if pos > 0 {
                        next.push(Fragment::Text(&rest[..pos]));
                    }
                    next.push(Fragment::Token(id));
                    rest = &rest[pos + needle.len()..];
                }
                if !rest.is_empty() {
                    next.push(Fragment::Text(rest));
                }
            }
            std::mem::swap(&mut fragments, &mut next);
        }
        fragments
    }

    /// The text of a token as bytes, control tokens included (llama.cpp's piece cache): byte
    /// tokens become their byte, SPM `▁` a space, GPT-2 byte characters their bytes. Empty for
    /// ids outside the vocabulary. May be part of a UTF-8 character.
    pub fn token_to_piece(&self, id: u32) -> &[u8] {
        self.pieces.get(id as usize).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Like [`token_to_piece`](Self::token_to_piece), but control and unknown tokens give nothing
    /// unless `special`.
    pub fn token_to_piece_special(&self, id: u32, special: bool) -> &[u8] {
        if !special && self.attr(id) & (attr::UNKNOWN | attr::CONTROL) != 0 {
            return &[];
        }
        self.token_to_piece(id)
    }

    fn render_piece(&self, id: u32) -> Vec<u8> {
        let a = self.attr(id);
        let text = &self.tokens[id as usize];
        if a & (attr::UNKNOWN | attr::CONTROL | attr::USER_DEFINED) != 0 {
            return text.as_bytes().to_vec();
        }
        if a & attr::NORMAL != 0 {
            return match self.kind {
                VocabKind::Spm => text.replace('▁', " ").into_bytes(),
                VocabKind::Bpe => decode_gpt2_text(text),
            };
        }
        if a & attr::BYTE != 0 {
            let hex = text.get(3..5).and_then(|h| u8::from_str_radix(h, 16).ok());
            return hex.map(|b| vec![b]).unwrap_or_default();
        }
        Vec::new()
    }

    /// Token ids to text, as llama.cpp's `llama_detokenize`; invalid UTF-8 (a character cut at
    /// the end) becomes U+FFFD only here, at the very end.
    pub fn detokenize(&self, ids: &[u32], opts: DecodeOptions) -> String {
        let mut ids = ids;
        let mut remove_space = self.add_space_prefix;
        if opts.remove_special && self.add_bos && ids.first().is_some_and(|&t| Some(t) == self.bos) {
            remove_space = false;
            ids = &ids[1..];
        }
        if opts.remove_special && self.add_eos && ids.last().is_some_and(|&t| Some(t) == self.eos) {
            ids = &ids[..ids.len() - 1];
        }
        let mut text = Vec::with_capacity(ids.len() * 4);
        for &id in ids {
            let mut piece = self.token_to_piece_special(id, opts.unparse_special);
            if remove_space {
                piece = piece.strip_prefix(b" ").unwrap_or(piece);
            }
            remove_space = false;
            text.extend_from_slice(piece);
        }
        if self.clean_spaces {
            clean_up_spaces(&mut text);
        }
        String::from_utf8_lossy(&text).into_owned()
    }

    /// Token ids to text: control tokens give nothing, user-defined tokens their text.
    pub fn decode(&self, ids: &[u32]) -> String {
        self.detokenize(ids, DecodeOptions::default())
    }
}

/// GPT-2 byte characters back to bytes; a character outside the map is kept visible the way
/// llama.cpp's `llama_decode_text` does.
fn decode_gpt2_text(text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    for c in text.chars() {
        match unicode::gpt2_char_to_byte(c) {
            Some(b) => out.push(b),
            None => {
                out.extend_from_slice(b"[UNK_BYTE_0x");
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    out.extend_from_slice(format!("{b:02x}").as_bytes());
                }
                out.extend_from_slice(text.as_bytes());
                out.push(b']');
            }
        }
    }
    out
}

/// llama.cpp's `clean_up_tokenization_spaces`: drops the space before `?!.,`, around a lone
/// apostrophe, and before `'s`, `'m`, `'re`, `'ve`.
fn clean_up_spaces(text: &mut Vec<u8>) {
    clean_pass_punct(text);
    clean_pass_lone_apostrophe(text);
    clean_pass_contractions(text);
}

fn clean_pass_punct(text: &mut Vec<u8>) {
    let mut out = Vec::with_capacity(text.len());
    for (i, &x) in text.iter().enumerate() {
        if i > 0 && text[i - 1] == b' ' && matches!(x, b'?' | b'!' | b'.' | b',') {
            out.pop();
        }
        out.push(x);
    }
    *text = out;
}

fn clean_pass_lone_apostrophe(text: &mut Vec<u8>) {
    // llama.cpp writes a NUL over the space after " ' " and reads the NUL back later.
    let mut src = std::mem::take(text);
    let mut out = Vec::with_capacity(src.len());
    let mut i = 0;
    while i < src.len() {
        let x = src[i];
        if i > 0 && x == b'\'' && i + 1 < src.len() && src[i - 1] == b' ' && src[i + 1] == b' ' {
            out.pop();
            src[i + 1] = 0;
            out.push(x);
            i += 2;
            continue;
        }
        out.push(x);
        i += 1;
    }
    *text = out;
}

fn clean_pass_contractions(text: &mut Vec<u8>) {
    let mut out = Vec::with_capacity(text.len());
    for (i, &x) in text.iter().enumerate() {
        if i > 0 && text[i - 1] == b' ' && x == b'\'' && i + 1 < text.len() {
            let x1 = text[i + 1];
            let x2 = text.get(i + 2).copied();
            let drop = matches!(x1, b's' | b'm') || matches!((x1, x2), (b'r', Some(b'e')) | (b'v', Some(b'e')));
            if drop {
                out.pop();
            }
        }
        out.push(x);
    }
    *text = out;
}
