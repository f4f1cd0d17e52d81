//! Schema JSON written the way Python's `json.dumps` writes it, so the text the Rust side
//! registers or commits is byte for byte the text the Python stack produces.
//!
//! Python's defaults differ from `serde_json`'s: items are separated by `", "` and keys by
//! `": "` (compact form), non-ASCII characters are escaped as `\uXXXX` (`ensure_ascii`), and
//! with `indent` every item goes on its own line while empty containers stay `[]` / `{}`.

use std::io::{self, Write};

use serde::Serialize;
use serde_json::ser::{Formatter, Serializer};
use serde_json::Value;

/// A `serde_json` formatter that writes like Python's `json.dumps`.
struct PyFormatter<'a> {
    indent: Option<&'a [u8]>,
    level: usize,
    /// Whether the container being written has had an item yet.
    has_value: bool,
}

impl PyFormatter<'_> {
    fn newline<W: ?Sized + Write>(&self, w: &mut W) -> io::Result<()> {
        if let Some(indent) = self.indent {
            w.write_all(b"\n")?;
            for _ in 0..self.level {
                w.write_all(indent)?;
            }
        }
        Ok(())
    }

    fn separator<W: ?Sized + Write>(&self, w: &mut W, first: bool) -> io::Result<()> {
        match (first, self.indent) {
            (true, _) => self.newline(w),
            (false, Some(_)) => {
                w.write_all(b",")?;
                self.newline(w)
            }
            (false, None) => w.write_all(b", "),
        }
    }

    fn open<W: ?Sized + Write>(&mut self, w: &mut W, c: &[u8]) -> io::Result<()> {
        self.level += 1;
        self.has_value = false;
        w.write_all(c)
    }

    fn close<W: ?Sized + Write>(&mut self, w: &mut W, c: &[u8]) -> io::Result<()> {
        self.level -= 1;
        if self.has_value {
            self.newline(w)?;
        }
        // The enclosing container, if any, has at least this value.
        self.has_value = true;
        w.write_all(c)
    }
}

impl Formatter for PyFormatter<'_> {
    fn begin_array<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.open(w, b"[")
    }
    fn end_array<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.close(w, b"]")
    }
    fn begin_array_value<W: ?Sized + Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        self.separator(w, first)
    }
    fn end_array_value<W: ?Sized + Write>(&mut self, _: &mut W) -> io::Result<()> {
        self.has_value = true;
        Ok(())
    }
    fn begin_object<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.open(w, b"{")
    }
    fn end_object<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.close(w, b"}")
    }
    fn begin_object_key<W: ?Sized + Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        self.separator(w, first)
    }
    fn begin_object_value<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        w.write_all(b": ")
    }
    fn end_object_value<W: ?Sized + Write>(&mut self, _: &mut W) -> io::Result<()> {
        self.has_value = true;
        Ok(())
    }
    fn write_string_fragment<W: ?Sized + Write>(&mut self, w: &mut W, fragment: &str) -> io::Result<()> {
        // `ensure_ascii`: everything outside printable ASCII becomes `\uXXXX` (UTF-16 units).
        let mut rest = fragment;
        while let Some(pos) = rest.find(|c: char| !(' '..='~').contains(&c)) {
            w.write_all(&rest.as_bytes()[..pos])?;
            let c = rest[pos..].chars().next().unwrap_or_default();
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                write!(w, "\\u{unit:04x}")?;
            }
            rest = &rest[pos + c.len_utf8()..];
        }
        w.write_all(rest.as_bytes())
    }
}

fn write(value: &Value, indent: Option<&[u8]>) -> String {
    let mut out = Vec::with_capacity(1024);
    let formatter = PyFormatter {
        indent,
        level: 0,
        has_value: false,
    };
    let mut ser = Serializer::with_formatter(&mut out, formatter);
    // Writing a `Value` to a `Vec` cannot fail.
    value
        .serialize(&mut ser)
        .expect("serializing a JSON value into memory cannot fail");
    // The formatter writes only ASCII.
    String::from_utf8(out).expect("the Python-style formatter writes ASCII")
}

/// `json.dumps(value)`: one line, `", "` and `": "` separators, ASCII only; keys in the
/// value's own order.
pub fn compact(value: &Value) -> String {
    write(value, None)
}

/// `json.dumps(value, indent=2)`: what openedx-events' `generate_avro_schemas` writes.
pub fn indented(value: &Value) -> String {
    write(value, Some(b"  "))
}

/// `json.dumps(value, sort_keys=True)`: the text the Python Kafka producer registers.
pub fn sorted_compact(value: &Value) -> String {
    compact(&sorted(value))
}

/// A copy of `value` whose objects have their keys in code-point order.
pub fn sorted(value: &Value) -> Value {
    match value {
        Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            Value::Object(entries.into_iter().map(|(k, v)| (k.clone(), sorted(v))).collect())
        }
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn compact_like_python() {
        let v = json!({"b": [1, "x"], "a": {}, "c": [], "d": null, "é": "日本\u{1F393}\u{7f}\n"});
        assert_eq!(
            compact(&v),
            r#"{"b": [1, "x"], "a": {}, "c": [], "d": null, "\u00e9": "\u65e5\u672c\ud83c\udf93\u007f\n"}"#
        );
        assert_eq!(
            sorted_compact(&v),
            r#"{"a": {}, "b": [1, "x"], "c": [], "d": null, "\u00e9": "\u65e5\u672c\ud83c\udf93\u007f\n"}"#
        );
    }

    #[test]
    fn indented_like_python() {
        let v = json!({"name": "R", "fields": [{"name": "f", "type": ["null", "string"]}], "e": [], "o": {}});
        let expected = "{\n  \"name\": \"R\",\n  \"fields\": [\n    {\n      \"name\": \"f\",\n      \"type\": [\n        \"null\",\n        \"string\"\n      ]\n    }\n  ],\n  \"e\": [],\n  \"o\": {}\n}";
        assert_eq!(indented(&v), expected);
        assert_eq!(indented(&json!("x")), "\"x\"");
    }
}
