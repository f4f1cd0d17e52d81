//! [`Text`]: a message built by `const fn`s, so that a build-time check (a constant
//! that panics) and a start-up check print the same words from the same code.

use core::fmt;

/// How many bytes a [`Text`] holds; a longer message ends in `...`.
pub const CAPACITY: usize = 2048;

/// A message of at most [`CAPACITY`] bytes, built in `const` code. A message that
/// would be longer is cut, ending in `...` (the last three bytes are kept for it).
///
/// ```
/// use openedx_events_rules::text::Text;
/// const T: Text = Text::new().push("topic ").push_quoted("a b").push(" has ").push_usize(3).push(" characters");
/// assert_eq!(T.as_str(), r#"topic "a b" has 3 characters"#);
/// assert_eq!(T.to_string(), T.as_str());
/// ```
#[derive(Clone, Copy)]
pub struct Text {
    bytes: [u8; CAPACITY],
    len: usize,
    cut: bool,
}

impl Text {
    /// An empty message.
    pub const fn new() -> Self {
        Text {
            bytes: [0; CAPACITY],
            len: 0,
            cut: false,
        }
    }

    /// Appends `s`; what does not fit is cut at a character boundary and marked `...`,
    /// and later pushes add nothing.
    pub const fn push(mut self, s: &str) -> Self {
        let s = s.as_bytes();
        if self.cut {
            return self;
        }
        let room = if self.len + s.len() <= CAPACITY - 3 {
            s.len()
        } else {
            // Keep what fits before `...`, ending on a character boundary.
            self.cut = true;
            let mut room = CAPACITY - 3 - self.len;
            while room > 0 && (s[room] & 0xC0) == 0x80 {
                room -= 1;
            }
            room
        };
        let mut i = 0;
        while i < room {
            self.bytes[self.len + i] = s[i];
            i += 1;
        }
        self.len += room;
        if self.cut {
            let mut j = 0;
            while j < 3 {
                self.bytes[self.len] = b'.';
                self.len += 1;
                j += 1;
            }
        }
        self
    }

    /// Appends another message.
    pub const fn push_text(self, t: &Text) -> Self {
        self.push(t.as_str())
    }

    /// Appends `s` quoted as Rust's `{:?}` quotes a string (`"a \"b\""`).
    pub const fn push_quoted(self, s: &str) -> Self {
        let mut out = self.push("\"");
        let b = s.as_bytes();
        let mut start = 0;
        let mut i = 0;
        while i < b.len() {
            let esc = match b[i] {
                b'"' => Some("\\\""),
                b'\\' => Some("\\\\"),
                b'\n' => Some("\\n"),
                b'\r' => Some("\\r"),
                b'\t' => Some("\\t"),
                // Other control characters: `\u{..}`.
                0..=0x1F | 0x7F => Some(""),
                _ => None,
            };
            if let Some(esc) = esc {
                out = out.push(sub(s, start, i));
                out = if esc.is_empty() {
                    out.push("\\u{").push_hex(b[i] as u32).push("}")
                } else {
                    out.push(esc)
                };
                start = i + 1;
            }
            i += 1;
        }
        out.push(sub(s, start, b.len())).push("\"")
    }

    /// Appends a character quoted as Rust's `{:?}` quotes a `char` (`' '`).
    pub const fn push_char_quoted(self, c: char) -> Self {
        let out = self.push("'");
        let out = match c {
            '\'' => out.push("\\'"),
            '\\' => out.push("\\\\"),
            '\n' => out.push("\\n"),
            '\r' => out.push("\\r"),
            '\t' => out.push("\\t"),
            c if (c as u32) < 0x20 || c as u32 == 0x7F => out.push("\\u{").push_hex(c as u32).push("}"),
            c => {
                let mut buf = [0u8; 4];
                out.push(c.encode_utf8(&mut buf))
            }
        };
        out.push("'")
    }

    /// Appends a number in decimal.
    pub const fn push_usize(self, n: usize) -> Self {
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        let mut n = n;
        loop {
            i -= 1;
            digits[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        let (_, tail) = digits.split_at(i);
        match core::str::from_utf8(tail) {
            Ok(s) => self.push(s),
            Err(_) => self,
        }
    }

    const fn push_hex(self, n: u32) -> Self {
        let mut digits = [0u8; 8];
        let mut i = digits.len();
        let mut n = n;
        loop {
            i -= 1;
            let d = (n % 16) as u8;
            digits[i] = if d < 10 { b'0' + d } else { b'a' + d - 10 };
            n /= 16;
            if n == 0 {
                break;
            }
        }
        let (_, tail) = digits.split_at(i);
        match core::str::from_utf8(tail) {
            Ok(s) => self.push(s),
            Err(_) => self,
        }
    }

    /// The message.
    pub const fn as_str(&self) -> &str {
        let (head, _) = self.bytes.split_at(self.len);
        match core::str::from_utf8(head) {
            Ok(s) => s,
            // Unreachable: only whole characters are pushed.
            Err(_) => "",
        }
    }
}

/// `s[start..end]`, in `const` code (both ends on character boundaries).
pub(crate) const fn sub(s: &str, start: usize, end: usize) -> &str {
    let (head, _) = s.as_bytes().split_at(end);
    let (_, mid) = head.split_at(start);
    match core::str::from_utf8(mid) {
        Ok(s) => s,
        Err(_) => "",
    }
}

/// Whether two strings are equal, in `const` code.
pub const fn eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

impl Default for Text {
    fn default() -> Self {
        Text::new()
    }
}

impl fmt::Display for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl PartialEq for Text {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Text {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_matches_debug() {
        for s in [
            "plain",
            "a \"b\" c",
            "back\\slash",
            "tab\there",
            "nl\n",
            "\u{1}x",
            "é ü",
        ] {
            assert_eq!(Text::new().push_quoted(s).as_str(), format!("{s:?}"), "{s}");
        }
        for c in [' ', '\'', '/', 'é', '\n', '\u{7f}'] {
            assert_eq!(Text::new().push_char_quoted(c).as_str(), format!("{c:?}"), "{c}");
        }
    }

    #[test]
    fn numbers_and_overflow() {
        assert_eq!(Text::new().push_usize(0).push(" ").push_usize(1234).as_str(), "0 1234");
        let long = "é".repeat(CAPACITY);
        let t = Text::new().push("x").push(&long);
        assert!(t.as_str().ends_with("..."), "{}", t.as_str());
        assert!(t.as_str().len() <= CAPACITY);
        assert_eq!(t.push("more").as_str(), t.as_str());
    }
}
