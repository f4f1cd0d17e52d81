//! "Did you mean ...?": the edit distance and how close a name must be to be suggested.
//!
//! The distance is a `const fn` because the build-time key-path check runs in constant
//! evaluation (the macros cannot see another struct's fields, the compiler's constant
//! evaluator can); the same function serves the macros and the start-up checks.

/// The longest string (in characters) [`distance`] compares; a longer one is never close.
pub const MAX_CHARS: usize = 256;

/// Reads the character at byte `i` of `b` (valid UTF-8): its code point and length.
const fn char_at(b: &[u8], i: usize) -> (u32, usize) {
    let x = b[i] as u32;
    if x < 0x80 {
        (x, 1)
    } else if x < 0xE0 {
        (((x & 0x1F) << 6) | (b[i + 1] as u32 & 0x3F), 2)
    } else if x < 0xF0 {
        (
            ((x & 0x0F) << 12) | ((b[i + 1] as u32 & 0x3F) << 6) | (b[i + 2] as u32 & 0x3F),
            3,
        )
    } else {
        (
            ((x & 0x07) << 18)
                | ((b[i + 1] as u32 & 0x3F) << 12)
                | ((b[i + 2] as u32 & 0x3F) << 6)
                | (b[i + 3] as u32 & 0x3F),
            4,
        )
    }
}

/// The characters of `s` (at most [`MAX_CHARS`]), and how many there are; `None` when longer.
const fn chars(s: &str) -> Option<([u32; MAX_CHARS], usize)> {
    let b = s.as_bytes();
    let mut out = [0u32; MAX_CHARS];
    let (mut i, mut n) = (0, 0);
    while i < b.len() {
        if n == MAX_CHARS {
            return None;
        }
        let (c, len) = char_at(b, i);
        out[n] = c;
        n += 1;
        i += len;
    }
    Some((out, n))
}

/// The Levenshtein distance between `a` and `b`, counted in characters: the fewest
/// insertions, deletions and substitutions that turn one into the other. A string of more
/// than [`MAX_CHARS`] characters is `usize::MAX` away from every other.
///
/// ```
/// use openedx_events_rules::suggest::distance;
/// assert_eq!(distance("usage_kye", "usage_key"), 2);
/// assert_eq!(distance("blok", "block"), 1);
/// const D: usize = distance("kitten", "sitting");
/// assert_eq!(D, 3);
/// ```
pub const fn distance(a: &str, b: &str) -> usize {
    let (Some((a, na)), Some((b, nb))) = (chars(a), chars(b)) else {
        return usize::MAX;
    };
    let mut prev = [0usize; MAX_CHARS + 1];
    let mut cur = [0usize; MAX_CHARS + 1];
    let mut j = 0;
    while j <= nb {
        prev[j] = j;
        j += 1;
    }
    let mut i = 0;
    while i < na {
        cur[0] = i + 1;
        let mut j = 0;
        while j < nb {
            let substitute = prev[j] + if a[i] == b[j] { 0 } else { 1 };
            let delete = prev[j + 1] + 1;
            let insert = cur[j] + 1;
            let mut best = substitute;
            if delete < best {
                best = delete;
            }
            if insert < best {
                best = insert;
            }
            cur[j + 1] = best;
            j += 1;
        }
        let swap = prev;
        prev = cur;
        cur = swap;
        i += 1;
    }
    prev[nb]
}

/// Whether `candidate` is close enough to `wanted` to be suggested for it: at most
/// `max(3, length / 4)` edits away (length of the candidate, in bytes), and fewer edits
/// than the candidate is long (so that `x` does not suggest `id`).
///
/// ```
/// use openedx_events_rules::suggest::is_close;
/// assert!(is_close("blok", "block"));
/// assert!(!is_close("x", "id"));
/// assert!(is_close("org.openedx.learning.course.enrolment.created.v1", "org.openedx.learning.course.enrollment.created.v1"));
/// ```
pub const fn is_close(wanted: &str, candidate: &str) -> bool {
    let d = distance(wanted, candidate);
    let limit = if candidate.len() / 4 > 3 {
        candidate.len() / 4
    } else {
        3
    };
    d <= limit && d < candidate.len()
}

/// Whether `a` sorts before `b` (byte order), in `const` code.
const fn before(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut i = 0;
    while i < a.len() && i < b.len() {
        if a[i] != b[i] {
            return a[i] < b[i];
        }
        i += 1;
    }
    a.len() < b.len()
}

/// The closest of `candidates` to `wanted` that [is close](is_close) (the first in
/// byte order among equally close ones), if any; `wanted` itself is never suggested.
///
/// ```
/// use openedx_events_rules::suggest::nearest;
/// assert_eq!(nearest("topik", &["topic", "event_key_field", "enabled"]), Some("topic"));
/// assert_eq!(nearest("colour", &["topic", "enabled"]), None);
/// ```
pub const fn nearest<'a>(wanted: &str, candidates: &[&'a str]) -> Option<&'a str> {
    nearest_of(wanted, candidates, &[])
}

/// [`nearest`] over two lists of candidates.
///
/// ```
/// use openedx_events_rules::suggest::nearest_of;
/// assert_eq!(nearest_of("b.v2", &["a.v1"], &["b.v1"]), Some("b.v1"));
/// ```
pub const fn nearest_of<'a>(wanted: &str, first: &[&'a str], second: &[&'a str]) -> Option<&'a str> {
    let mut best: Option<(&'a str, usize)> = None;
    let mut i = 0;
    while i < first.len() + second.len() {
        let c = if i < first.len() {
            first[i]
        } else {
            second[i - first.len()]
        };
        i += 1;
        if crate::text::eq(c, wanted) || !is_close(wanted, c) {
            continue;
        }
        let d = distance(wanted, c);
        best = match best {
            Some((b, bd)) if bd < d || (bd == d && !before(c, b)) => Some((b, bd)),
            _ => Some((c, d)),
        };
    }
    match best {
        Some((b, _)) => Some(b),
        None => None,
    }
}

/// [`nearest`] over any strings (start-up code, where the candidates are not a slice).
///
/// ```
/// use openedx_events_rules::suggest::nearest_in;
/// let names = vec!["usage_key".to_owned(), "tags".to_owned()];
/// assert_eq!(nearest_in("usage_kye", names.iter().map(String::as_str)), Some("usage_key"));
/// ```
pub fn nearest_in<'a>(wanted: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let all: Vec<&'a str> = candidates.into_iter().collect();
    nearest(wanted, &all)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn distance_is_strsim_levenshtein(a in "[a-c_.é]{0,12}", b in "[a-c_.é]{0,12}") {
            prop_assert_eq!(distance(&a, &b), strsim::levenshtein(&a, &b));
        }
    }

    #[test]
    fn too_long_is_never_close() {
        let long = "a".repeat(MAX_CHARS + 1);
        assert_eq!(distance(&long, "a"), usize::MAX);
        assert!(!is_close(&long, &long[1..]));
        assert_eq!(distance(&long[1..], &long[1..]), 0);
    }
}
