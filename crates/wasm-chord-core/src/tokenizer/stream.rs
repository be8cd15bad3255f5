//! Streaming detokenization: text comes out as tokens arrive, never half a UTF-8 character.

use super::Tokenizer;

/// Turns a stream of token ids into text pieces. Bytes of a character split across tokens are
/// held back until the character is complete; [`finish`](Self::finish) flushes what is left.
#[derive(Debug, Default, Clone)]
pub struct StreamDecoder {
    pending: Vec<u8>,
    render_special: bool,
}

impl StreamDecoder {
    /// A decoder that renders control tokens as nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// A decoder that renders control tokens as their text (`<|im_end|>`) when `special`.
    pub fn with_special(special: bool) -> Self {
        Self { pending: Vec::new(), render_special: special }
    }

    /// Adds one token; returns the text that is now complete (possibly empty).
    pub fn push(&mut self, tokenizer: &Tokenizer, id: u32) -> String {
        self.pending.extend_from_slice(tokenizer.token_to_piece_special(id, self.render_special));
        let keep = incomplete_tail_len(&self.pending);
        let complete_len = self.pending.len() - keep;
        let text = String::from_utf8_lossy(&self.pending[..complete_len]).into_owned();
        self.pending.drain(..complete_len);
        text
    }

    /// Returns whatever is held back, with U+FFFD for a character that never completed.
    pub fn finish(&mut self) -> String {
        let text = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        text
    }
}

/// How many bytes at the end of `bytes` are the start of a UTF-8 character still missing bytes.
fn incomplete_tail_len(bytes: &[u8]) -> usize {
    // A character is at most 4 bytes: look back at most 3 bytes for a lead byte.
    for back in 1..=bytes.len().min(3) {
        let b = bytes[bytes.len() - back];
        if b & 0xC0 == 0x80 {
            continue; // continuation byte: keep looking for the lead
        }
        let needed = match b {
            0xC0..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF7 => 4,
            _ => return 0, // ASCII or an invalid lead: nothing to wait for
        };
        return if back < needed { back } else { 0 };
    }
    0
}

#[cfg(test)]
mod tests {
    use super::incomplete_tail_len;

    #[test]
    fn holds_back_only_unfinished_characters() {
        let e = "é".as_bytes();
        let emoji = "🙂".as_bytes();
        assert_eq!(incomplete_tail_len(b"abc"), 0);
        assert_eq!(incomplete_tail_len(&e[..1]), 1);
        assert_eq!(incomplete_tail_len(e), 0);
        assert_eq!(incomplete_tail_len(&emoji[..3]), 3);
        assert_eq!(incomplete_tail_len(&[b'a', emoji[0], emoji[1]]), 2);
        assert_eq!(incomplete_tail_len(emoji), 0);
        assert_eq!(incomplete_tail_len(&[0x80, 0x80]), 0);
    }
}
