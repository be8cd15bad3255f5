//! Byte-level BPE (`tokenizer.ggml.model = gpt2`): each pre-tokenized word is spelled in GPT-2
//! byte characters and merged pair by pair in merge-rank order, as llama.cpp's `llm_tokenizer_bpe`.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};

use super::fxhash::FxBuildHasher;
use super::unicode::gpt2_byte_to_char;

/// An id for a string that is not a token but appears in a merge rule, or for no string at all.
const NO_ID: u32 = u32::MAX;

/// Merge rules over interned strings: every vocabulary token keeps its id, strings that appear
/// only in merges get ids from `n_vocab` on.
pub(super) struct BpeMerges {
    /// (left, right) -> (rank, merged string's id).
    ranks: HashMap<(u32, u32), (u32, u32), FxBuildHasher>,
    /// The id of each byte's GPT-2 character as a one-character string, or `NO_ID`.
    byte_ids: [u32; 256],
    n_vocab: u32,
}

impl BpeMerges {
    /// Parses merge rules `"left right"`; the first rule of a pair wins, as in llama.cpp.
    pub(super) fn new(merges: &[String], token_id: impl Fn(&str) -> Option<u32>, n_vocab: u32) -> Self {
        let mut extra: HashMap<String, u32, FxBuildHasher> = HashMap::default();
        let mut intern = |s: &str| -> u32 {
            if let Some(id) = token_id(s) {
                return id;
            }
            let next = n_vocab + extra.len() as u32;
            *extra.entry(s.to_owned()).or_insert(next)
        };
        let mut ranks = HashMap::with_capacity_and_hasher(merges.len(), FxBuildHasher::default());
        for (rank, rule) in merges.iter().enumerate() {
            // llama.cpp splits at the first space after the first byte.
            let first_len = rule.chars().next().map_or(0, char::len_utf8);
            let Some(pos) = rule[first_len..].find(' ').map(|p| p + first_len) else { continue };
            let (left, right) = (&rule[..pos], &rule[pos + 1..]);
            let ids = (intern(left), intern(right));
            let merged = intern(&format!("{left}{right}"));
            ranks.entry(ids).or_insert((rank as u32, merged));
        }
        let mut byte_ids = [NO_ID; 256];
        for (b, id) in byte_ids.iter_mut().enumerate() {
            let mut buf = [0u8; 4];
            let s = gpt2_byte_to_char(b as u8).encode_utf8(&mut buf);
            *id = token_id(s).unwrap_or_else(|| extra.get(&*s).copied().unwrap_or(NO_ID));
        }
        Self { ranks, byte_ids, n_vocab }
    }

    fn rank(&self, left: u32, right: u32) -> Option<(u32, u32)> {
        if left == NO_ID || right == NO_ID {
            return None;
        }
        self.ranks.get(&(left, right)).copied()
    }
}

#[derive(Clone, Copy)]
struct Symbol {
    id: u32,
    start: usize,
    len: usize,
    prev: Option<usize>,
    next: Option<usize>,
}

struct Bigram {
    rank: u32,
    left: usize,
    right: usize,
    left_id: u32,
    right_id: u32,
    merged: u32,
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
    /// Lowest rank first; among equal ranks the leftmost pair first.
    fn cmp(&self, other: &Self) -> Ordering {
        other.rank.cmp(&self.rank).then_with(|| other.left.cmp(&self.left))
    }
}

/// Reusable buffers for tokenizing many words.
#[derive(Default)]
pub(super) struct BpeScratch {
    symbols: Vec<Symbol>,
    queue: BinaryHeap<Bigram>,
}

/// Appends the tokens of one pre-tokenized `word` (raw UTF-8, not yet byte-encoded) to `out`.
/// `whole_word` is the token of the whole encoded word where the vocabulary ignores merges for
/// words that are tokens (Llama 3).
pub(super) fn tokenize_word(
    merges: &BpeMerges,
    word: &[u8],
    whole_word: Option<u32>,
    ascii_token: impl Fn(char) -> Option<u32>,
    scratch: &mut BpeScratch,
    out: &mut Vec<u32>,
) {
    if let Some(id) = whole_word {
        out.push(id);
        return;
    }
    let symbols = &mut scratch.symbols;
    let queue = &mut scratch.queue;
    symbols.clear();
    queue.clear();
    for (i, &b) in word.iter().enumerate() {
        symbols.push(Symbol {
            id: merges.byte_ids[b as usize],
            start: i,
            len: 1,
            prev: i.checked_sub(1),
            next: (i + 1 < word.len()).then_some(i + 1),
        });
    }
    let add = |queue: &mut BinaryHeap<Bigram>, symbols: &[Symbol], left: Option<usize>, right: Option<usize>| {
        let (Some(left), Some(right)) = (left, right) else { return };
        let (left_id, right_id) = (symbols[left].id, symbols[right].id);
        if let Some((rank, merged)) = merges.rank(left_id, right_id) {
            queue.push(Bigram { rank, left, right, left_id, right_id, merged });
        }
    };
    for i in 1..symbols.len() {
        add(queue, symbols, Some(i - 1), Some(i));
    }
    while let Some(bigram) = queue.pop() {
        let (l, r) = (symbols[bigram.left], symbols[bigram.right]);
        // A bigram is stale once either side changed: the pair's text is then different.
        if l.len == 0 || r.len == 0 || l.id != bigram.left_id || r.id != bigram.right_id || l.next != Some(bigram.right)
        {
            continue;
        }
        let left = &mut symbols[bigram.left];
        left.len += r.len;
        left.id = bigram.merged;
        left.next = r.next;
        symbols[bigram.right].len = 0;
        if let Some(next) = r.next {
            symbols[next].prev = Some(bigram.left);
        }
        let prev = symbols[bigram.left].prev;
        let next = symbols[bigram.left].next;
        add(queue, symbols, prev, Some(bigram.left));
        add(queue, symbols, Some(bigram.left), next);
    }

    let mut i = if symbols.is_empty() { None } else { Some(0) };
    while let Some(idx) = i {
        let s = symbols[idx];
        if s.id < merges.n_vocab {
            out.push(s.id);
        } else {
            // Not a token: llama.cpp looks up each byte of the encoded text alone, which only
            // finds the one-byte (ASCII) characters.
            for &b in &word[s.start..s.start + s.len] {
                if let Some(id) = ascii_token(gpt2_byte_to_char(b)) {
                    out.push(id);
                }
            }
        }
        i = s.next;
    }
}
