//! Chat templates: the GGUF's own Jinja template (`tokenizer.chat_template`) rendered with
//! minijinja, or one of llama.cpp's built-in formats for files that have none.
//!
//! Jinja templates are rendered as Hugging Face transformers and llama.cpp render them:
//! `trim_blocks` and `lstrip_blocks` on, Python string methods (`.strip()`, `.split()`, ...),
//! `raise_exception(msg)`, `strftime_now(fmt)`, and `bos_token`/`eos_token` in the context.
//! Built-in formats reproduce llama.cpp's `llm_chat_apply_template` byte for byte.

use minijinja::{context, Environment, Error, ErrorKind};
use serde::Serialize;

use crate::gguf::{keys, GgufFile};

/// Errors choosing or rendering a chat template.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("reading template metadata: {0}")]
    Metadata(String),
    #[error("unknown chat template '{0}': not a built-in name ({names}) and not Jinja source", names = Builtin::NAMES.join(", "))]
    Unknown(String),
    #[error("rendering the chat template: {0:#}")]
    Render(#[from] Error),
}

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChatMessage {
    /// `system`, `user`, `assistant`, ...
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self { role: role.into(), content: content.into() }
    }
}

/// llama.cpp's built-in chat formats (names as `llama_chat_apply_template` takes them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Builtin {
    ChatMl,
    /// `llama2`: a system message is written bare before the first user message.
    Llama2,
    /// `llama2-sys`: the system message inside `<<SYS>>`.
    Llama2Sys,
    Llama3,
    MistralV1,
    MistralV3,
    MistralV3Tekken,
    MistralV7,
    MistralV7Tekken,
    /// Gemma's `<start_of_turn>` format (Gemma 1-3), the system message merged into the first user turn.
    Gemma,
}

impl Builtin {
    pub const NAMES: &'static [&'static str] = &[
        "chatml",
        "llama2",
        "llama2-sys",
        "llama3",
        "mistral-v1",
        "mistral-v3",
        "mistral-v3-tekken",
        "mistral-v7",
        "mistral-v7-tekken",
        "gemma",
    ];

    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "chatml" => Self::ChatMl,
            "llama2" => Self::Llama2,
            "llama2-sys" => Self::Llama2Sys,
            "llama3" => Self::Llama3,
            "mistral-v1" => Self::MistralV1,
            "mistral-v3" => Self::MistralV3,
            "mistral-v3-tekken" => Self::MistralV3Tekken,
            "mistral-v7" => Self::MistralV7,
            "mistral-v7-tekken" => Self::MistralV7Tekken,
            "gemma" => Self::Gemma,
            _ => return None,
        })
    }

    /// The format for a file without a template, from its architecture and vocabulary.
    fn for_model(arch: &str, has_token: impl Fn(&str) -> bool) -> Self {
        if arch.starts_with("gemma") {
            Self::Gemma
        } else if has_token("<|start_header_id|>") {
            Self::Llama3
        } else {
            // llama.cpp's own fallback.
            Self::ChatMl
        }
    }

    fn render(self, messages: &[ChatMessage], add_generation_prompt: bool) -> String {
        let mut s = String::new();
        match self {
            Self::ChatMl => {
                for m in messages {
                    s += &format!("<|im_start|>{}\n{}<|im_end|>\n", m.role, m.content);
                }
                if add_generation_prompt {
                    s += "<|im_start|>assistant\n";
                }
            }
            Self::Llama2 | Self::Llama2Sys => {
                let system_tags = self == Self::Llama2Sys;
                let mut inside_turn = true;
                s += "[INST] ";
                for m in messages {
                    if !inside_turn {
                        inside_turn = true;
                        s += "[INST] ";
                    }
                    match m.role.as_str() {
                        "system" if system_tags => s += &format!("<<SYS>>\n{}\n<</SYS>>\n\n", m.content),
                        "system" => s += &format!("{}\n", m.content),
                        "user" => s += &format!("{} [/INST]", m.content),
                        _ => {
                            s += &format!("{}</s>", m.content);
                            inside_turn = false;
                        }
                    }
                }
            }
            Self::Llama3 => {
                for m in messages {
                    s += &format!("<|start_header_id|>{}<|end_header_id|>\n\n{}<|eot_id|>", m.role, trim(&m.content));
                }
                if add_generation_prompt {
                    s += "<|start_header_id|>assistant<|end_header_id|>\n\n";
                }
            }
            Self::MistralV1 | Self::MistralV3 | Self::MistralV3Tekken => {
                let leading = if self == Self::MistralV1 { " " } else { "" };
                let trailing = if self == Self::MistralV3Tekken { "" } else { " " };
                let trim_assistant = self == Self::MistralV3;
                let mut inside_turn = false;
                for m in messages {
                    if !inside_turn {
                        s += &format!("{leading}[INST]{trailing}");
                        inside_turn = true;
                    }
                    match m.role.as_str() {
                        "system" => s += &format!("{}\n\n", m.content),
                        "user" => s += &format!("{}{leading}[/INST]", m.content),
                        _ => {
                            let content = if trim_assistant { trim(&m.content) } else { &m.content };
                            s += &format!("{trailing}{content}</s>");
                            inside_turn = false;
                        }
                    }
                }
            }
            Self::MistralV7 | Self::MistralV7Tekken => {
                let sp = if self == Self::MistralV7 { " " } else { "" };
                for m in messages {
                    match m.role.as_str() {
                        "system" => s += &format!("[SYSTEM_PROMPT]{sp}{}[/SYSTEM_PROMPT]", m.content),
                        "user" => s += &format!("[INST]{sp}{}[/INST]", m.content),
                        _ => s += &format!("{sp}{}</s>", m.content),
                    }
                }
            }
            Self::Gemma => {
                let mut system = String::new();
                for m in messages {
                    if m.role == "system" {
                        system += trim(&m.content);
                        continue;
                    }
                    let role = if m.role == "assistant" { "model" } else { m.role.as_str() };
                    s += &format!("<start_of_turn>{role}\n");
                    if !system.is_empty() && role != "model" {
                        s += &format!("{system}\n\n");
                        system.clear();
                    }
                    s += &format!("{}<end_of_turn>\n", trim(&m.content));
                }
                if add_generation_prompt {
                    s += "<start_of_turn>model\n";
                }
            }
        }
        s
    }
}

/// C `isspace` trimming, as llama.cpp's built-in formats trim.
fn trim(s: &str) -> &str {
    s.trim_matches(|c: char| matches!(c, ' ' | '\t' | '\n' | '\u{B}' | '\u{C}' | '\r'))
}

#[derive(Debug, Clone)]
enum Source {
    Jinja(String),
    Builtin(Builtin),
}

/// A chat template with the BOS/EOS token texts it may refer to.
#[derive(Debug, Clone)]
pub struct ChatTemplate {
    source: Source,
    bos_token: String,
    eos_token: String,
    /// Unix seconds `strftime_now` formats; the clock where there is one.
    now: Option<i64>,
}

impl ChatTemplate {
    /// The template of a GGUF file: `override_name_or_source` (a built-in name or Jinja source)
    /// if given, else the file's `tokenizer.chat_template`, else a built-in chosen from the
    /// architecture (Gemma's format for gemma*, Llama 3's for vocabularies with its header
    /// tokens, ChatML otherwise).
    pub fn from_gguf(file: &GgufFile, override_name_or_source: Option<&str>) -> Result<Self, TemplateError> {
        let m = file.metadata();
        let err = |e: crate::gguf::GgufError| TemplateError::Metadata(e.to_string());
        let tokens = m.get_str_array(keys::TOKENIZER_TOKENS).map_err(err)?.unwrap_or(&[]);
        let token_text = |key: &str| -> Result<String, TemplateError> {
            let id = m.get_u32(key).map_err(err)?;
            Ok(id.and_then(|i| tokens.get(i as usize)).cloned().unwrap_or_default())
        };
        let bos_token = token_text(keys::TOKENIZER_BOS_ID)?;
        let eos_token = token_text(keys::TOKENIZER_EOS_ID)?;
        let source = match override_name_or_source {
            Some(o) => Self::parse_override(o)?,
            None => match m.get_str(keys::TOKENIZER_CHAT_TEMPLATE).map_err(err)? {
                Some(src) => Source::Jinja(src.to_owned()),
                None => {
                    let arch = m.get_str(keys::GENERAL_ARCHITECTURE).map_err(err)?.unwrap_or("");
                    Source::Builtin(Builtin::for_model(arch, |t| tokens.iter().any(|x| x == t)))
                }
            },
        };
        Ok(Self { source, bos_token, eos_token, now: None })
    }

    /// A template from a built-in name or Jinja source, with the given BOS/EOS texts.
    pub fn new(name_or_source: &str, bos_token: &str, eos_token: &str) -> Result<Self, TemplateError> {
        Ok(Self {
            source: Self::parse_override(name_or_source)?,
            bos_token: bos_token.to_owned(),
            eos_token: eos_token.to_owned(),
            now: None,
        })
    }

    fn parse_override(o: &str) -> Result<Source, TemplateError> {
        if let Some(b) = Builtin::from_name(o) {
            Ok(Source::Builtin(b))
        } else if o.contains("{{") || o.contains("{%") {
            Ok(Source::Jinja(o.to_owned()))
        } else {
            Err(TemplateError::Unknown(o.to_owned()))
        }
    }

    /// Fixes the time `strftime_now` sees (Unix seconds, UTC).
    pub fn with_now(mut self, unix_seconds: i64) -> Self {
        self.now = Some(unix_seconds);
        self
    }

    /// The built-in format in use, or `None` for a Jinja template.
    pub fn builtin(&self) -> Option<Builtin> {
        match self.source {
            Source::Builtin(b) => Some(b),
            Source::Jinja(_) => None,
        }
    }

    /// The Jinja source in use, or `None` for a built-in format.
    pub fn jinja_source(&self) -> Option<&str> {
        match &self.source {
            Source::Jinja(s) => Some(s),
            Source::Builtin(_) => None,
        }
    }

    /// The prompt text for `messages`; `add_generation_prompt` opens the assistant's turn.
    pub fn render(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String, TemplateError> {
        let src = match &self.source {
            Source::Builtin(b) => return Ok(b.render(messages, add_generation_prompt)),
            Source::Jinja(src) => src,
        };
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", |msg: String| -> Result<String, Error> {
            Err(Error::new(ErrorKind::InvalidOperation, msg))
        });
        let now = self.now.unwrap_or_else(current_unix_seconds);
        env.add_function("strftime_now", move |format: String| strftime(now, &format));
        let template = env.template_from_str(src)?;
        Ok(template.render(context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => &self.bos_token,
            eos_token => &self.eos_token,
        })?)
    }
}

#[cfg(not(target_arch = "wasm32"))]
fn current_unix_seconds() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// wasm32-unknown-unknown has no clock: a fixed date (2025-01-01) unless the caller sets one.
#[cfg(target_arch = "wasm32")]
fn current_unix_seconds() -> i64 {
    1_735_689_600
}

const MONTHS: [&str; 12] =
    ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October", "November", "December"];
const WEEKDAYS: [&str; 7] = ["Thursday", "Friday", "Saturday", "Sunday", "Monday", "Tuesday", "Wednesday"];

/// C `strftime` in UTC for the specifiers chat templates use (%Y %y %m %d %e %j %B %b %A %a
/// %H %I %M %S %p %%).
fn strftime(unix: i64, format: &str) -> String {
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    let (hour, minute, second) = (secs / 3600, secs / 60 % 60, secs % 60);
    let weekday = WEEKDAYS[days.rem_euclid(7) as usize];
    let month_name = MONTHS[(month - 1) as usize];
    let day_of_year = days - days_from_civil(year, 1, 1) + 1;
    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('Y') => out += &year.to_string(),
            Some('y') => out += &format!("{:02}", year.rem_euclid(100)),
            Some('m') => out += &format!("{month:02}"),
            Some('d') => out += &format!("{day:02}"),
            Some('e') => out += &format!("{day:2}"),
            Some('j') => out += &format!("{day_of_year:03}"),
            Some('B') => out += month_name,
            Some('b') | Some('h') => out += &month_name[..3],
            Some('A') => out += weekday,
            Some('a') => out += &weekday[..3],
            Some('H') => out += &format!("{hour:02}"),
            Some('I') => out += &format!("{:02}", if hour % 12 == 0 { 12 } else { hour % 12 }),
            Some('M') => out += &format!("{minute:02}"),
            Some('S') => out += &format!("{second:02}"),
            Some('p') => out += if hour < 12 { "AM" } else { "PM" },
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conversation() -> Vec<ChatMessage> {
        vec![
            ChatMessage::new("system", "  Be brief. "),
            ChatMessage::new("user", "Hi"),
            ChatMessage::new("assistant", "Hello!\n"),
        ]
    }

    #[test]
    fn strftime_formats_known_dates() {
        // 2024-07-26 13:05:09 UTC, a Friday.
        let t = 1_721_999_109;
        assert_eq!(strftime(t, "%d %B %Y %a %H:%M:%S %j %b %y %p %%"), "26 July 2024 Fri 13:05:09 208 Jul 24 PM %");
        assert_eq!(strftime(0, "%A %e %m"), "Thursday  1 01");
        assert_eq!(strftime(951_782_400, "%Y-%m-%d"), "2000-02-29");
    }

    #[test]
    fn gemma_builtin_merges_the_system_message() {
        let out = Builtin::Gemma.render(&conversation(), true);
        assert_eq!(
            out,
            "<start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\nHello!<end_of_turn>\n<start_of_turn>model\n"
        );
    }

    #[test]
    fn jinja_helpers_work() {
        let src = "{{ bos_token }}{% for m in messages %}{% if m.role == 'system' %}[{{ m.content.strip() }}]\
                   {% else %}{{ m.role | upper }}:{{ m.content | trim }}|{% endif %}{% endfor %}\
                   {% if add_generation_prompt %}{{ strftime_now('%Y') }}{% endif %}{{ eos_token }}";
        let t = ChatTemplate::new(src, "<s>", "</s>").unwrap().with_now(0);
        assert_eq!(t.render(&conversation(), true).unwrap(), "<s>[Be brief.]USER:Hi|ASSISTANT:Hello!|1970</s>");
        let failing = ChatTemplate::new("{{ raise_exception('no tools') }}", "", "").unwrap();
        let err = failing.render(&conversation(), false).unwrap_err().to_string();
        assert!(err.contains("no tools"), "{err}");
    }

    #[test]
    fn trim_blocks_and_lstrip_blocks_are_on() {
        let src = "{% for m in messages %}\n    {% if m.role == 'user' %}\n{{ m.content }}\n    {% endif %}\n{% endfor %}";
        let t = ChatTemplate::new(src, "", "").unwrap();
        assert_eq!(t.render(&conversation(), false).unwrap(), "Hi\n");
    }

    #[test]
    fn unknown_override_is_an_error() {
        assert!(matches!(ChatTemplate::new("vicuna", "", ""), Err(TemplateError::Unknown(_))));
    }
}
