//! Code point classes (general category groups and white space) as llama.cpp's pre-tokenizers see them.

#[path = "unicode_table.rs"]
mod table;

/// Class bits of a code point; one of the category bits is set for every code point, plus
/// `WHITESPACE` for the White_Space ones. The values follow llama.cpp's `unicode_cpt_flags`.
pub mod class {
    pub const UNDEFINED: u16 = 0x0001;
    pub const NUMBER: u16 = 0x0002;
    pub const LETTER: u16 = 0x0004;
    pub const SEPARATOR: u16 = 0x0008;
    pub const MARK: u16 = 0x0010;
    pub const PUNCTUATION: u16 = 0x0020;
    pub const SYMBOL: u16 = 0x0040;
    pub const CONTROL: u16 = 0x0080;
    pub const CATEGORIES: u16 = 0x00FF;
    pub const WHITESPACE: u16 = 0x0100;
}

/// The class bits of `c`: its category group, plus `WHITESPACE` where it applies.
#[inline]
pub fn class_of(c: char) -> u16 {
    let cp = c as u32;
    if cp < 0x80 {
        return ASCII[cp as usize];
    }
    let idx = table::RUN_STARTS.partition_point(|&start| start <= cp) - 1;
    let category = table::RUN_CLASSES.get(idx).copied().unwrap_or(1) as u16;
    if is_whitespace_above_ascii(cp) {
        category | class::WHITESPACE
    } else {
        category
    }
}

/// Unicode's White_Space property above ASCII (PropList.txt), as llama.cpp lists it.
fn is_whitespace_above_ascii(cp: u32) -> bool {
    matches!(cp, 0x85 | 0xA0 | 0x1680 | 0x2000..=0x200A | 0x2028 | 0x2029 | 0x202F | 0x205F | 0x3000)
}

const fn ascii_class(cp: u8) -> u16 {
    use class::*;
    match cp {
        b'\t' | b'\n' | 0x0B | 0x0C | b'\r' => CONTROL | WHITESPACE,
        b' ' => SEPARATOR | WHITESPACE,
        b'0'..=b'9' => NUMBER,
        b'A'..=b'Z' | b'a'..=b'z' => LETTER,
        b'$' | b'+' | b'<' | b'=' | b'>' | b'^' | b'`' | b'|' | b'~' => SYMBOL,
        0x21..=0x7E => PUNCTUATION,
        _ => CONTROL,
    }
}

static ASCII: [u16; 128] = {
    let mut t = [0u16; 128];
    let mut i = 0;
    while i < 128 {
        t[i] = ascii_class(i as u8);
        i += 1;
    }
    t
};

/// The GPT-2 byte-to-character map: printable Latin-1 bytes stand for themselves, the other 68
/// bytes map in order to U+0100 and up, so every byte string becomes printable text.
pub fn gpt2_byte_to_char(b: u8) -> char {
    BYTE_TO_CHAR[b as usize]
}

/// The inverse of [`gpt2_byte_to_char`]; `None` for characters outside the map.
pub fn gpt2_char_to_byte(c: char) -> Option<u8> {
    let cp = c as u32;
    if cp < 0x100 && BYTE_TO_CHAR[cp as usize] == c {
        return Some(cp as u8);
    }
    if (0x100..0x100 + 68).contains(&cp) {
        return Some(UNPRINTABLE[(cp - 0x100) as usize]);
    }
    None
}

const fn is_printable_latin1(b: u8) -> bool {
    matches!(b, 0x21..=0x7E | 0xA1..=0xAC | 0xAE..=0xFF)
}

static BYTE_TO_CHAR: [char; 256] = {
    let mut t = ['\0'; 256];
    let mut n = 0u32;
    let mut b = 0usize;
    while b < 256 {
        t[b] = if is_printable_latin1(b as u8) {
            b as u8 as char
        } else {
            let c = match char::from_u32(0x100 + n) {
                Some(c) => c,
                None => '\0',
            };
            n += 1;
            c
        };
        b += 1;
    }
    t
};

/// The bytes that are not printable Latin-1, in order: the n-th maps to U+0100 + n.
static UNPRINTABLE: [u8; 68] = {
    let mut t = [0u8; 68];
    let mut n = 0;
    let mut b = 0usize;
    while b < 256 {
        if !is_printable_latin1(b as u8) {
            t[n] = b as u8;
            n += 1;
        }
        b += 1;
    }
    t
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_of_known_code_points() {
        assert_eq!(class_of('a'), class::LETTER);
        assert_eq!(class_of('é'), class::LETTER);
        assert_eq!(class_of('中'), class::LETTER);
        assert_eq!(class_of('٣'), class::NUMBER);
        assert_eq!(class_of('\u{301}'), class::MARK);
        assert_eq!(class_of('€'), class::SYMBOL);
        assert_eq!(class_of('😀'), class::SYMBOL);
        assert_eq!(class_of('«'), class::PUNCTUATION);
        assert_eq!(class_of('\u{3000}'), class::SEPARATOR | class::WHITESPACE);
        assert_eq!(class_of('\u{85}'), class::CONTROL | class::WHITESPACE);
        assert_eq!(class_of('\u{E000}'), class::CONTROL);
        assert_eq!(class_of('\u{378}'), class::UNDEFINED);
        // Unicode 15.1 assigned U+2FFC..U+2FFF (ideographic description characters).
        assert_eq!(class_of('\u{2FFC}'), class::SYMBOL);
        assert_eq!(class_of('\u{10FFFF}'), class::UNDEFINED);
    }

    #[test]
    fn gpt2_byte_map_round_trips() {
        for b in 0..=255u8 {
            assert_eq!(gpt2_char_to_byte(gpt2_byte_to_char(b)), Some(b));
        }
        assert_eq!(gpt2_byte_to_char(b' '), 'Ġ');
        assert_eq!(gpt2_byte_to_char(b'\n'), 'Ċ');
        assert_eq!(gpt2_char_to_byte('z'), Some(b'z'));
        assert_eq!(gpt2_char_to_byte('Ń'), Some(0xAD));
        assert_eq!(gpt2_char_to_byte('中'), None);
    }
}
