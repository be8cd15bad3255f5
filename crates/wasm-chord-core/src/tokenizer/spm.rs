//! SentencePiece-style tokenization (`tokenizer.ggml.model = llama`): greedy merges of adjacent
//! pieces by the highest vocabulary score, with byte fallback, as llama.cpp's `llm_tokenizer_spm`.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use super::Tokenizer;

const SPACE: char = '▁';

/// The characters other than `▁` that some token has right before a `▁`.
pub(super) fn chars_joined_to_space(tokens: &[String]) -> Vec<char> {
    let mut joins = Vec::new();
    for t in tokens {
        let mut prev = None;
        for c in t.chars() {
            if let Some(p) = prev {
                if c == SPACE && p != SPACE && !joins.contains(&p) {
                    joins.push(p);
                }
            }
            prev = Some(c);
        }
    }
    joins
}

/// Splits escaped text before each `▁` that follows a character no token joins to a `▁`.
///
/// Merges only ever form tokens, so a piece spanning such a boundary would be a token containing
/// that character pair: there is none, so no merge crosses the boundary, and the merges on each
/// side happen in the same relative order alone as together. Tokenizing the segments one by one
/// (and reusing the ids of repeated ones) gives exactly the ids of the whole text.
pub(super) fn segments<'t>(text: &'t str, joins_space: &'t [char]) -> impl Iterator<Item = &'t str> + 't {
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut prev: Option<char> = None;
        let mut cut = rest.len();
        for (i, c) in rest.char_indices() {
            if let Some(p) = prev {
                if c == SPACE && p != SPACE && !joins_space.contains(&p) {
                    cut = i;
                    break;
                }
            }
            prev = Some(c);
        }
        let (segment, tail) = rest.split_at(cut);
        rest = tail;
        Some(segment)
    })
}

#[derive(Clone, Copy)]
struct Symbol {
    start: usize,
    len: usize,
    prev: Option<usize>,
    next: Option<usize>,
}

/// A candidate merge of `left` with the symbol after it into a vocabulary token.
struct Bigram {
    score: f32,
    left: usize,
    right: usize,
    /// Byte length of the merged text; a popped bigram whose symbols changed since is stale.
    size: usize,
}

impl PartialEq for Bigram {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Bigram {}
impl PartialOrd for Bigram {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Bigram {
    /// Highest score first; among equal scores the leftmost pair first.
    fn cmp(&self, other: &Self) -> Ordering {
        self.score.total_cmp(&other.score).then_with(|| other.left.cmp(&self.left))
    }
}

/// Appends the tokens of `text` (spaces already escaped to U+2581) to `out`.
pub(super) fn tokenize(tok: &Tokenizer, text: &str, out: &mut Vec<u32>) {
    let mut symbols: Vec<Symbol> = Vec::with_capacity(text.len());
    for (i, (start, c)) in text.char_indices().enumerate() {
        let len = c.len_utf8();
        symbols.push(Symbol {
            start,
            len,
            prev: i.checked_sub(1),
            next: (start + len < text.len()).then_some(i + 1),
        });
    }
    if symbols.is_empty() {
        return;
    }

    let mut queue = BinaryHeap::with_capacity(symbols.len());
    let try_add = |queue: &mut BinaryHeap<Bigram>, symbols: &[Symbol], left: Option<usize>, right: Option<usize>| {
        let (Some(left), Some(right)) = (left, right) else { return };
        let (l, r) = (symbols[left], symbols[right]);
        let merged = &text[l.start..r.start + r.len];
        if let Some(id) = tok.text_to_token(merged) {
            queue.push(Bigram { score: tok.score(id), left, right, size: merged.len() });
        }
    };
    for i in 1..symbols.len() {
        try_add(&mut queue, &symbols, Some(i - 1), Some(i));
    }

    while let Some(bigram) = queue.pop() {
        let (l, r) = (symbols[bigram.left], symbols[bigram.right]);
        if l.len == 0 || r.len == 0 || l.len + r.len != bigram.size {
            continue;
        }
        symbols[bigram.left].len += r.len;
        symbols[bigram.right].len = 0;
        symbols[bigram.left].next = r.next;
        if let Some(next) = r.next {
            symbols[next].prev = Some(bigram.left);
        }
        try_add(&mut queue, &symbols, symbols[bigram.left].prev, Some(bigram.left));
        try_add(&mut queue, &symbols, Some(bigram.left), symbols[bigram.left].next);
    }

    let mut i = Some(0);
    while let Some(idx) = i {
        let s = symbols[idx];
        let piece = &text[s.start..s.start + s.len];
        match tok.text_to_token(piece) {
            Some(id) => out.push(id),
            // A piece no merge produced is a single character missing from the vocabulary
            // (merged pieces are tokens by construction): spell it in byte tokens.
            None => out.extend(piece.bytes().filter_map(|b| tok.byte_token(b))),
        }
        i = s.next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_split_before_spaces_no_token_joins() {
        let joins = ['>'];
        let got: Vec<&str> = segments("▁a▁▁b>▁c▁", &joins).collect();
        assert_eq!(got, ["▁a", "▁▁b>▁c", "▁"]);
        let tokens = ["ab".to_string(), "x▁y".to_string(), "▁▁".to_string()];
        assert_eq!(chars_joined_to_space(&tokens), ['x']);
    }
}
