//! Token text to id lookup. Tokenizing looks up millions of candidate strings, most of them not
//! tokens; keying the table by a 64-bit hash of the text settles a miss without touching the
//! token's text, and a hit costs one comparison.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use super::fxhash::FxHasher;

/// Marks a hash shared by two different token texts; those live in `colliding`.
const COLLISION: u32 = u32::MAX;

pub(super) struct TokenIndex {
    by_hash: HashMap<u64, u32, BuildHasherDefault<PassThroughHasher>>,
    colliding: HashMap<String, u32>,
}

fn hash_text(text: &str) -> u64 {
    let mut h = FxHasher::default();
    h.write(text.as_bytes());
    h.finish()
}

impl TokenIndex {
    /// Indexes `tokens`; of equal texts the last one wins, as in llama.cpp's map.
    pub(super) fn build(tokens: &[String]) -> Self {
        let mut by_hash: HashMap<u64, u32, BuildHasherDefault<PassThroughHasher>> =
            HashMap::with_capacity_and_hasher(tokens.len(), Default::default());
        let mut colliding = HashMap::new();
        for (id, text) in tokens.iter().enumerate() {
            let id = id as u32;
            let slot = by_hash.entry(hash_text(text)).or_insert(id);
            if *slot == id {
                continue;
            }
            if *slot != COLLISION {
                let other = *slot;
                if tokens[other as usize] == *text {
                    *slot = id;
                    continue;
                }
                colliding.insert(tokens[other as usize].clone(), other);
                *slot = COLLISION;
            }
            colliding.insert(text.clone(), id);
        }
        Self { by_hash, colliding }
    }

    pub(super) fn get(&self, tokens: &[String], text: &str) -> Option<u32> {
        match self.by_hash.get(&hash_text(text)).copied() {
            None => None,
            Some(COLLISION) => self.colliding.get(text).copied(),
            Some(id) => (tokens[id as usize] == text).then_some(id),
        }
    }
}

/// The keys are hashes already.
#[derive(Default)]
struct PassThroughHasher(u64);

impl Hasher for PassThroughHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }
    fn write_u64(&mut self, i: u64) {
        self.0 = i;
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_tokens_and_last_duplicate_wins() {
        let tokens: Vec<String> = ["a", "b", "ab", "a"].iter().map(|s| s.to_string()).collect();
        let index = TokenIndex::build(&tokens);
        assert_eq!(index.get(&tokens, "a"), Some(3));
        assert_eq!(index.get(&tokens, "ab"), Some(2));
        assert_eq!(index.get(&tokens, "abc"), None);
    }
}
