//! Text normalisation shared by dedupe and decontamination, and a stable hash.

/// Lowercases, removes punctuation and collapses whitespace: `"Hello,  World!"` →
/// `"hello world"`. Removed: every ASCII character that is not a letter, digit or space
/// (`+`, `$` and the like included) and Unicode punctuation; letters, digits, other
/// symbols and combining marks are kept.
pub fn normalize(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut pending_space = false;
    for c in text.chars() {
        if c.is_whitespace() {
            pending_space = !out.is_empty();
            continue;
        }
        if is_punctuation(c) {
            continue;
        }
        if pending_space {
            out.push(' ');
            pending_space = false;
        }
        out.extend(c.to_lowercase());
    }
    out
}

/// The words of the normalised text.
pub fn normalized_words(text: &str) -> Vec<String> {
    normalize(text)
        .split(' ')
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect()
}

/// Punctuation: ASCII punctuation and symbols, Latin-1 punctuation, the General Punctuation block,
/// CJK and full-width punctuation.
fn is_punctuation(c: char) -> bool {
    c.is_ascii_punctuation()
        || matches!(c,
            '\u{00A1}' | '\u{00A7}' | '\u{00AB}' | '\u{00B6}' | '\u{00B7}' | '\u{00BB}' | '\u{00BF}'
            | '\u{037E}' | '\u{0387}' | '\u{055A}'..='\u{055F}' | '\u{0589}' | '\u{05BE}'
            | '\u{060C}' | '\u{061B}' | '\u{061F}' | '\u{066A}'..='\u{066D}' | '\u{06D4}'
            | '\u{0964}' | '\u{0965}' | '\u{0E5A}' | '\u{0E5B}'
            | '\u{2010}'..='\u{2027}' | '\u{2030}'..='\u{205E}'
            | '\u{2E00}'..='\u{2E4F}' | '\u{3001}'..='\u{3003}' | '\u{3008}'..='\u{3011}'
            | '\u{3014}'..='\u{301F}' | '\u{30FB}'
            | '\u{FE10}'..='\u{FE19}' | '\u{FE30}'..='\u{FE4F}' | '\u{FE50}'..='\u{FE6B}'
            | '\u{FF01}'..='\u{FF03}' | '\u{FF05}'..='\u{FF0A}' | '\u{FF0C}'..='\u{FF0F}'
            | '\u{FF1A}' | '\u{FF1B}' | '\u{FF1F}' | '\u{FF20}' | '\u{FF3B}'..='\u{FF3D}'
            | '\u{FF3F}' | '\u{FF5B}' | '\u{FF5D}' | '\u{FF5F}'..='\u{FF65}')
}

/// 64-bit FNV-1a: a hash that is the same on every run and platform.
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// SplitMix64's finaliser: mixes a 64-bit value into a well-spread one.
pub(crate) fn mix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes() {
        assert_eq!(normalize("  Hello,\tWORLD!!  "), "hello world");
        assert_eq!(normalize("Don't — stop…"), "dont stop");
        assert_eq!(
            normalize("「東京」は、日本の首都です。"),
            "東京は日本の首都です"
        );
        assert_eq!(normalize("Ünïcode  ÉTÉ"), "ünïcode été");
        assert_eq!(normalize("a + b = c"), "a b c");
        assert_eq!(normalized_words("x, y;  z"), vec!["x", "y", "z"]);
        assert_eq!(normalize("!!!"), "");
    }
}
