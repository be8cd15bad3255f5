//! Pre-tokenizers of byte-level BPE vocabularies: hand-written matchers equal to llama.cpp's
//! splitting regexes, named by `tokenizer.ggml.pre`.
//!
//! llama.cpp runs a list of regexes one after another, each splitting the pieces the previous one
//! left; a piece's text between two matches becomes a piece too. Three regexes (GPT-2's, Llama 3's
//! and Qwen 2's) it runs through hand-written code whose look-ahead stops at the piece's end; the
//! others it runs through `std::regex` over a "collapsed" text in which every non-ASCII code point
//! is replaced by one byte naming its category (so `\p{L}` there means ASCII letters or a
//! non-ASCII code point whose only class is letter). Each stage below reproduces one of those,
//! quirks included.

use super::unicode::{class, class_of};

/// Which splitting regexes a vocabulary uses, from `tokenizer.ggml.pre`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PreTokenizer {
    /// llama.cpp's default for BPE files without a known pre-tokenizer.
    Default,
    /// GPT-2: `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)`.
    Gpt2,
    /// Llama 3 (`llama3`, `llama-bpe`, ...): the GPT-4 regex with digits in groups of up to three.
    Llama3,
    /// Qwen 2: the Llama 3 regex with single digits.
    Qwen2,
    /// StarCoder, SmolLM, ...: single digits, then the GPT-2 regex.
    StarCoder,
    /// DeepSeek LLM: explicit letter, punctuation and CJK ranges.
    DeepSeekLlm,
}

impl PreTokenizer {
    /// The pre-tokenizer llama.cpp uses for a `tokenizer.ggml.pre` name, or `None` if unsupported.
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "" | "default" => Self::Default,
            "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral" | "midm-2.0"
            | "lfm2" | "jina-v5-nano" | "dbrx" | "smaug-bpe" | "chatglm-bpe" | "glm4" | "glm5" => {
                Self::Llama3
            }
            "qwen2" | "deepseek-r1-qwen" | "kormo" | "f2llmv2" | "stablelm2" | "hunyuan" | "megrez"
            | "solar-open" => Self::Qwen2,
            "gpt-2" | "phi-2" | "jina-es" | "jina-de" | "gigachat" | "jina-v2-es" | "jina-v2-de"
            | "a.x-4.0" | "mellum" | "modern-bert" | "jina-v1-en" | "jina-v2-code" | "roberta-bpe"
            | "mpt" | "olmo" | "jais" | "exaone4" | "trillion" | "granite-docling" => Self::Gpt2,
            "starcoder" | "refact" | "command-r" | "smollm" | "codeshell" | "exaone" | "minerva-7b"
            | "mellum2" => Self::StarCoder,
            "deepseek-llm" => Self::DeepSeekLlm,
            _ => return None,
        })
    }

    fn stages(self) -> &'static [Stage] {
        match self {
            Self::Default => &[Stage::PunctRuns, Stage::Gpt2, Stage::NumberRuns, Stage::DigitTriples],
            Self::Gpt2 => &[Stage::Gpt2],
            Self::Llama3 => &[Stage::Llama3],
            Self::Qwen2 => &[Stage::Qwen2],
            Self::StarCoder => &[Stage::EachNumber, Stage::Gpt2],
            Self::DeepSeekLlm => &[
                Stage::EachNewline,
                Stage::SpaceThen(Set::DeepSeekLetters),
                Stage::SpaceThen(Set::DeepSeekPunct),
                Stage::TrailingSpace,
                Stage::Runs(Set::DeepSeekCjk),
                Stage::NumberRuns,
            ],
        }
    }

    /// Splits `text` into the words that BPE merges run within, in order; they cover `text`.
    pub fn split<'t>(self, text: &'t str) -> Vec<&'t str> {
        let mut chars = Vec::with_capacity(text.len());
        let mut byte_at = Vec::with_capacity(text.len() + 1);
        for (i, c) in text.char_indices() {
            chars.push(c);
            byte_at.push(i);
        }
        byte_at.push(text.len());
        let classes: Vec<u16> = chars.iter().map(|&c| class_of(c)).collect();
        let text_cp = Text { chars: &chars, classes: &classes };

        let mut pieces = vec![chars.len()];
        let mut next = Vec::with_capacity(chars.len() / 3 + 1);
        for stage in self.stages() {
            next.clear();
            let mut start = 0;
            for &len in &pieces {
                stage.split(&text_cp, start, start + len, &mut next);
                start += len;
            }
            std::mem::swap(&mut pieces, &mut next);
        }

        let mut words = Vec::with_capacity(pieces.len());
        let mut start = 0;
        for len in pieces {
            if len > 0 {
                words.push(&text[byte_at[start]..byte_at[start + len]]);
            }
            start += len;
        }
        words
    }
}

struct Text<'a> {
    chars: &'a [char],
    classes: &'a [u16],
}

/// One splitting regex.
#[derive(Debug, Clone, Copy)]
enum Stage {
    Gpt2,
    Llama3,
    Qwen2,
    /// `\p{N}` (collapsed): every number character alone.
    EachNumber,
    /// `\p{N}+` (collapsed).
    NumberRuns,
    /// `[\p{P}\$\+<=>\^~\|]+` (collapsed).
    PunctRuns,
    /// `[0-9][0-9][0-9]`.
    DigitTriples,
    /// `[\r\n]`.
    EachNewline,
    /// `\s?[set]+`.
    SpaceThen(Set),
    /// `[set]+`.
    Runs(Set),
    /// `\s+$`.
    TrailingSpace,
}

/// Explicit code point sets of some regexes.
#[derive(Debug, Clone, Copy)]
enum Set {
    DeepSeekLetters,
    DeepSeekPunct,
    DeepSeekCjk,
}

const DEEPSEEK_LETTERS: &str = "A-Za-zµÀ-ÖØ-öø-ƺƼ-ƿǄ-ʓʕ-ʯͰ-ͳͶͷͻ-ͽͿΆΈ-ΊΌΎ-ΡΣ-ϵϷ-ҁҊ-ԯԱ-ՖႠ-ჅᎠ-Ᏽᏸ-ᏽᲐ-ᲺᲽ-Ჿᴀ-ᴫᵫ-ᵷᵹ-ᶚḀ-ἕἘ-Ἕἠ-ὅὈ-Ὅὐ-ὗὙὛὝὟ-ώᾀ-ᾴᾶ-ᾼιῂ-ῄῆ-ῌῐ-ΐῖ-Ίῠ-Ῥῲ-ῴῶ-ῼℂℇℊ-ℓℕℙ-ℝℤΩℨK-ℭℯ-ℴℹℼ-ℿⅅ-ⅉⅎↃↄⰀ-ⱻⱾ-ⳤⳫ-ⳮⳲⳳꙀ-ꙭꚀ-ꚛꜢ-ꝯꝱ-ꞇꞋ-ꞎꭰ-ꮿﬀ-ﬆﬓ-ﬗＡ-Ｚａ-ｚ𐐀-𐑏𐒰-𐓓𐓘-𐓻𐲀-𐲲𐳀-𐳲𑢠-𑣟𞤀-𞥃";
const DEEPSEEK_PUNCT: &str = "!-/:-~！-／：-～‘-‟　-。";
const DEEPSEEK_CJK: &str = "一-龥ࠀ-一가-퟿";

impl Set {
    /// The ranges of a bracket expression's body, `a-b` pairs and single characters.
    fn ranges(self) -> &'static [(char, char)] {
        use std::sync::OnceLock;
        static CACHE: [OnceLock<Vec<(char, char)>>; 3] = [OnceLock::new(), OnceLock::new(), OnceLock::new()];
        let (slot, body) = match self {
            Set::DeepSeekLetters => (0, DEEPSEEK_LETTERS),
            Set::DeepSeekPunct => (1, DEEPSEEK_PUNCT),
            Set::DeepSeekCjk => (2, DEEPSEEK_CJK),
        };
        CACHE[slot].get_or_init(|| parse_bracket_body(body))
    }

    fn contains(self, c: char) -> bool {
        // std::wregex sees non-ASCII white space as U+000B (llama.cpp replaces it so `\s` matches).
        let c = wide_char(c);
        self.ranges().iter().any(|&(lo, hi)| lo <= c && c <= hi)
    }
}

fn parse_bracket_body(body: &str) -> Vec<(char, char)> {
    let chars: Vec<char> = body.chars().collect();
    let mut ranges = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        if i + 2 < chars.len() && chars[i + 1] == '-' {
            ranges.push((chars[i], chars[i + 2]));
            i += 3;
        } else {
            ranges.push((chars[i], chars[i]));
            i += 1;
        }
    }
    ranges
}

/// The character `std::wregex` matches against: non-ASCII white space becomes U+000B.
fn wide_char(c: char) -> char {
    if (c as u32) > 0x7F && class_of(c) & class::WHITESPACE != 0 {
        '\u{B}'
    } else {
        c
    }
}

/// `\s` of `std::regex` in the C locale, after llama.cpp's replacement of non-ASCII white space.
fn is_regex_space(t: &Text, i: usize) -> bool {
    t.classes[i] & class::WHITESPACE != 0
}

/// A class test on the collapsed text: ASCII code points by the ASCII ranges of the class,
/// others only if their category is exactly `category` and they are not white space.
fn collapsed_is(t: &Text, i: usize, category: u16) -> bool {
    let c = t.classes[i];
    c & class::WHITESPACE == 0 && c & class::CATEGORIES == category
}

fn is_collapsed_number(t: &Text, i: usize) -> bool {
    if t.chars[i].is_ascii() {
        t.chars[i].is_ascii_digit()
    } else {
        collapsed_is(t, i, class::NUMBER)
    }
}

fn is_collapsed_punct_or_default_symbol(t: &Text, i: usize) -> bool {
    let c = t.chars[i];
    if c.is_ascii() {
        t.classes[i] == class::PUNCTUATION || matches!(c, '$' | '+' | '<' | '=' | '>' | '^' | '~' | '|')
    } else {
        collapsed_is(t, i, class::PUNCTUATION)
    }
}

/// Emits the pieces of `[start, end)` given a finder of the next match at or after a position,
/// as `std::regex_iterator` walks: text between matches and after the last is a piece of its own.
fn split_by_matches(
    start: usize,
    end: usize,
    out: &mut Vec<usize>,
    mut find: impl FnMut(usize) -> Option<(usize, usize)>,
) {
    let mut pos = start;
    while pos < end {
        let Some((m_start, m_end)) = find(pos) else { break };
        if m_start > pos {
            out.push(m_start - pos);
        }
        out.push(m_end - m_start);
        pos = m_end;
    }
    if pos < end {
        out.push(end - pos);
    }
}

impl Stage {
    fn split(self, t: &Text, start: usize, end: usize, out: &mut Vec<usize>) {
        match self {
            Stage::Gpt2 => split_gpt2(t, start, end, out),
            Stage::Llama3 => split_llama3(t, start, end, out, 3),
            Stage::Qwen2 => split_llama3(t, start, end, out, 1),
            Stage::EachNumber => split_runs(start, end, out, 1, |i| is_collapsed_number(t, i)),
            Stage::NumberRuns => split_runs(start, end, out, usize::MAX, |i| is_collapsed_number(t, i)),
            Stage::PunctRuns => {
                split_runs(start, end, out, usize::MAX, |i| is_collapsed_punct_or_default_symbol(t, i))
            }
            Stage::DigitTriples => split_by_matches(start, end, out, |pos| {
                let mut i = pos;
                while i + 3 <= end {
                    if t.chars[i..i + 3].iter().all(|c| c.is_ascii_digit()) {
                        return Some((i, i + 3));
                    }
                    i += 1;
                }
                None
            }),
            Stage::EachNewline => split_runs(start, end, out, 1, |i| matches!(t.chars[i], '\r' | '\n')),
            Stage::Runs(set) => split_runs(start, end, out, usize::MAX, |i| set.contains(t.chars[i])),
            Stage::SpaceThen(set) => split_by_matches(start, end, out, |pos| {
                for i in pos..end {
                    let body = if is_regex_space(t, i) && i + 1 < end && set.contains(t.chars[i + 1]) {
                        i + 1
                    } else if set.contains(t.chars[i]) {
                        i
                    } else {
                        continue;
                    };
                    let mut j = body;
                    while j < end && set.contains(t.chars[j]) {
                        j += 1;
                    }
                    return Some((i, j));
                }
                None
            }),
            Stage::TrailingSpace => {
                let mut i = end;
                while i > start && is_regex_space(t, i - 1) {
                    i -= 1;
                }
                if i > start {
                    out.push(i - start);
                }
                if i < end {
                    out.push(end - i);
                }
            }
        }
    }
}

/// `[class]` (max_len 1) or `[class]+` (max_len unbounded) through `split_by_matches`.
fn split_runs(start: usize, end: usize, out: &mut Vec<usize>, max_len: usize, is_in: impl Fn(usize) -> bool) {
    split_by_matches(start, end, out, |pos| {
        let first = (pos..end).find(|&i| is_in(i))?;
        let mut j = first + 1;
        while j < end && j - first < max_len && is_in(j) {
            j += 1;
        }
        Some((first, j))
    })
}

/// A window on one piece: code points outside it read as "out of range" with no class bits, so
/// look-ahead stops at the piece's end as in llama.cpp.
struct Window<'a> {
    t: &'a Text<'a>,
    start: usize,
    end: usize,
}

const OUT_OF_RANGE: u32 = u32::MAX;

impl Window<'_> {
    fn cpt(&self, i: usize) -> u32 {
        if self.start <= i && i < self.end {
            self.t.chars[i] as u32
        } else {
            OUT_OF_RANGE
        }
    }
    fn class(&self, i: usize) -> u16 {
        if self.start <= i && i < self.end {
            self.t.classes[i]
        } else {
            0
        }
    }
}

fn is_letter(c: u16) -> bool {
    c & class::LETTER != 0
}
fn is_number(c: u16) -> bool {
    c & class::NUMBER != 0
}
fn is_space(c: u16) -> bool {
    c & class::WHITESPACE != 0
}

/// Collects piece lengths: `add(end)` closes the piece running from the previous end.
struct Pieces<'o> {
    out: &'o mut Vec<usize>,
    prev_end: usize,
}

impl Pieces<'_> {
    fn add(&mut self, end: usize) -> usize {
        let len = end - self.prev_end;
        if len > 0 {
            self.out.push(len);
        }
        self.prev_end = end;
        len
    }
}

/// The GPT-2 regex, as llama.cpp's `unicode_regex_split_custom_gpt2`.
fn split_gpt2(t: &Text, start: usize, end: usize, out: &mut Vec<usize>) {
    let w = Window { t, start, end };
    let mut p = Pieces { out, prev_end: start };
    let mut pos = start;
    while pos < end {
        let cpt = w.cpt(pos);
        let flags = w.class(pos);

        // 's|'t|'re|'ve|'m|'ll|'d
        if cpt == '\'' as u32 && pos + 1 < end {
            let next = w.cpt(pos + 1);
            if [b's', b't', b'm', b'd'].iter().any(|&b| next == b as u32) {
                pos += p.add(pos + 2);
                continue;
            }
            if pos + 2 < end {
                let next2 = w.cpt(pos + 2);
                if is_pair(next, next2) {
                    pos += p.add(pos + 3);
                    continue;
                }
            }
        }

        let mut flags2 = if cpt == ' ' as u32 { w.class(pos + 1) } else { flags };
        // <space>?\p{L}+
        if is_letter(flags2) {
            pos += usize::from(cpt == ' ' as u32);
            while is_letter(flags2) {
                pos += 1;
                flags2 = w.class(pos);
            }
            p.add(pos);
            continue;
        }
        // <space>?\p{N}+
        if is_number(flags2) {
            pos += usize::from(cpt == ' ' as u32);
            while is_number(flags2) {
                pos += 1;
                flags2 = w.class(pos);
            }
            p.add(pos);
            continue;
        }
        // <space>?[^\s\p{L}\p{N}]+
        if !(is_space(flags2) || is_letter(flags2) || is_number(flags2)) && flags2 != 0 {
            pos += usize::from(cpt == ' ' as u32);
            while !(is_space(flags2) || is_letter(flags2) || is_number(flags2)) && flags2 != 0 {
                pos += 1;
                flags2 = w.class(pos);
            }
            p.add(pos);
            continue;
        }

        let mut n_space = 0;
        while is_space(w.class(pos + n_space)) {
            n_space += 1;
        }
        // \s+(?!\S)
        if n_space > 1 && w.cpt(pos + n_space) != OUT_OF_RANGE {
            pos += n_space - 1;
            p.add(pos);
            continue;
        }
        // \s+
        if n_space > 0 {
            pos += n_space;
            p.add(pos);
            continue;
        }
        // no match
        pos += 1;
        p.add(pos);
    }
}

/// 're, 've or 'll after the apostrophe (already lower-cased where the regex ignores case).
fn is_pair(a: u32, b: u32) -> bool {
    let (a, b) = (char::from_u32(a), char::from_u32(b));
    matches!((a, b), (Some('r'), Some('e')) | (Some('v'), Some('e')) | (Some('l'), Some('l')))
}

/// Lower-cases the letters the contraction matchers compare; no code point above ASCII
/// lower-cases to one of them, so ASCII lower-casing is exact here.
fn ascii_lower(cpt: u32) -> u32 {
    if (b'A' as u32..=b'Z' as u32).contains(&cpt) {
        cpt + 32
    } else {
        cpt
    }
}

/// The Llama 3 regex (digit groups of up to `max_digits`: 3 for Llama 3, 1 for Qwen 2), as
/// llama.cpp's `unicode_regex_split_custom_llama3` and `_qwen2`.
fn split_llama3(t: &Text, start: usize, end: usize, out: &mut Vec<usize>, max_digits: usize) {
    let w = Window { t, start, end };
    let mut p = Pieces { out, prev_end: start };
    let mut pos = start;
    let is_cr_lf = |c: u32| c == '\r' as u32 || c == '\n' as u32;
    while pos < end {
        let cpt = w.cpt(pos);
        let flags = w.class(pos);

        // (?i:'s|'t|'re|'ve|'m|'ll|'d)
        if cpt == '\'' as u32 && pos + 1 < end {
            let next = ascii_lower(w.cpt(pos + 1));
            if [b's', b't', b'm', b'd'].iter().any(|&b| next == b as u32) {
                pos += p.add(pos + 2);
                continue;
            }
            if pos + 2 < end {
                let next2 = ascii_lower(w.cpt(pos + 2));
                if is_pair(next, next2) {
                    pos += p.add(pos + 3);
                    continue;
                }
            }
        }

        // [^\r\n\p{L}\p{N}]?\p{L}+
        if !(is_cr_lf(cpt) || is_number(flags)) && (is_letter(flags) || is_letter(w.class(pos + 1))) {
            pos += 1;
            while is_letter(w.class(pos)) {
                pos += 1;
            }
            p.add(pos);
            continue;
        }

        // \p{N}{1,3} (Llama 3) or \p{N} (Qwen 2)
        if is_number(flags) {
            if max_digits == 1 {
                pos += 1;
                p.add(pos);
                continue;
            }
            let mut ini = pos;
            while is_number(w.class(pos)) {
                pos += 1;
                if pos - ini >= max_digits {
                    p.add(pos);
                    ini = pos;
                }
            }
            p.add(pos);
            continue;
        }

        // <space>?[^\s\p{L}\p{N}]+[\r\n]*
        let mut flags2 = if cpt == ' ' as u32 { w.class(pos + 1) } else { flags };
        if !(is_space(flags2) || is_letter(flags2) || is_number(flags2)) && flags != 0 {
            pos += usize::from(cpt == ' ' as u32);
            while !(is_space(flags2) || is_letter(flags2) || is_number(flags2)) && flags2 != 0 {
                pos += 1;
                flags2 = w.class(pos);
            }
            while is_cr_lf(w.cpt(pos)) {
                pos += 1;
            }
            p.add(pos);
            continue;
        }

        let mut n_space = 0;
        let mut last_end_cr_lf = 0;
        while is_space(w.class(pos + n_space)) {
            if is_cr_lf(w.cpt(pos + n_space)) {
                last_end_cr_lf = pos + n_space + 1;
            }
            n_space += 1;
        }
        // \s*[\r\n]+
        if last_end_cr_lf > 0 {
            pos = last_end_cr_lf;
            p.add(pos);
            continue;
        }
        // \s+(?!\S)
        if n_space > 1 && w.cpt(pos + n_space) != OUT_OF_RANGE {
            pos += n_space - 1;
            p.add(pos);
            continue;
        }
        // \s+
        if n_space > 0 {
            pos += n_space;
            p.add(pos);
            continue;
        }
        // no match
        pos += 1;
        p.add(pos);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(pre: PreTokenizer, text: &str) -> Vec<&str> {
        pre.split(text)
    }

    #[test]
    fn gpt2_splits_words_numbers_and_spaces() {
        assert_eq!(
            split(PreTokenizer::Gpt2, "Hello world's  123 !!\n\n  x"),
            ["Hello", " world", "'s", " ", " 123", " !!", "\n\n ", " x"]
        );
    }

    #[test]
    fn starcoder_splits_digits_first() {
        assert_eq!(split(PreTokenizer::StarCoder, "a 1234b"), ["a", " ", "1", "2", "3", "4", "b"]);
    }

    #[test]
    fn llama3_groups_digits_by_three_and_keeps_newlines() {
        assert_eq!(
            split(PreTokenizer::Llama3, "I'M 1234567 ok?!\n\n x"),
            ["I", "'M", " ", "123", "456", "7", " ok", "?!\n\n", " x"]
        );
        assert_eq!(split(PreTokenizer::Qwen2, "12 ab"), ["1", "2", " ab"]);
    }

    #[test]
    fn default_splits_punctuation_runs_first() {
        assert_eq!(split(PreTokenizer::Default, "a+=b 12345"), ["a", "+=", "b", " ", "123", "45"]);
    }

    #[test]
    fn deepseek_llm_keeps_cjk_runs() {
        assert_eq!(split(PreTokenizer::DeepSeekLlm, "Hi 你好\n12  "), ["Hi", " ", "你好", "\n", "12", "  "]);
    }

    #[test]
    fn pieces_cover_the_text() {
        let text = "naïve café — 東京 🙂\t\r\n  x'LL 3.14";
        for pre in [
            PreTokenizer::Default,
            PreTokenizer::Gpt2,
            PreTokenizer::Llama3,
            PreTokenizer::Qwen2,
            PreTokenizer::StarCoder,
            PreTokenizer::DeepSeekLlm,
        ] {
            assert_eq!(pre.split(text).concat(), text, "{pre:?}");
        }
    }
}
