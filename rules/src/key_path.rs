//! `event_key_field` paths: their syntax, the field tree they are resolved against, and
//! the sentences for every way one can be wrong.
//!
//! Everything here is `const fn`: `producer_config!` checks a path during constant
//! evaluation (where the compiler knows each field's type), and the start-up check runs
//! the same functions on a path read from the environment.

use core::fmt;

use crate::suggest;
use crate::text::{eq, sub, Text};

/// The broad shape of a field type, as key paths see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// A value with no inner fields; carries the Avro primitive it is written as.
    Scalar(&'static str),
    /// A record with named fields (an optional record too).
    Record(&'static Record),
    /// An Avro array.
    List,
    /// An Avro map.
    Map,
    /// Raw bytes (not usable as a key).
    Bytes,
}

impl Shape {
    /// How messages name the shape: `a scalar (string)`, `a record (BlockData)`, `a list`...
    ///
    /// ```
    /// use openedx_events_rules::key_path::{Record, Shape};
    /// const R: Record = Record { name: "BlockData", fields: &[] };
    /// assert_eq!(Shape::Record(&R).describe().as_str(), "a record (BlockData)");
    /// assert_eq!(Shape::Scalar("long").to_string(), "a scalar (long)");
    /// ```
    pub const fn describe(&self) -> Text {
        match self {
            Shape::Scalar(t) => Text::new().push("a scalar (").push(t).push(")"),
            Shape::Record(r) => Text::new().push("a record (").push(r.name).push(")"),
            Shape::List => Text::new().push("a list"),
            Shape::Map => Text::new().push("a map"),
            Shape::Bytes => Text::new().push("raw bytes"),
        }
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.describe().as_str())
    }
}

/// A record's name and fields, as far as key paths need them (what `#[openedx_event]`
/// and `#[derive(EventData)]` emit for each struct).
#[derive(Debug, PartialEq, Eq)]
pub struct Record {
    /// The Avro record name (`CloudEvent` for an event).
    pub name: &'static str,
    /// The fields, in declaration order.
    pub fields: &'static [Field],
}

/// One field of a [`Record`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    /// The field name (the identifier without `r#`).
    pub name: &'static str,
    /// Its shape.
    pub shape: Shape,
}

/// What `e.g.` the key-path messages give.
pub const EXAMPLE: &str = "write a period-delimited path of fields, e.g. \"xblock_info.usage_key\"";

/// A path that is not a period-delimited list of field names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyntaxError<'a> {
    /// The path is empty or has an empty segment.
    Empty {
        /// The whole path.
        path: &'a str,
    },
    /// A segment cannot name a field (`self`, `_`, `usage-key`...).
    NotAFieldName {
        /// The whole path.
        path: &'a str,
        /// The segment.
        segment: &'a str,
    },
}

impl SyntaxError<'_> {
    /// The sentence.
    pub const fn text(&self) -> Text {
        match self {
            SyntaxError::Empty { path } => empty(path),
            SyntaxError::NotAFieldName { path, segment } => not_a_field_name(path, segment),
        }
    }
}

impl fmt::Display for SyntaxError<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.text().as_str())
    }
}

/// The end (byte index) of the segment that starts at byte `start`.
const fn segment_end(path: &str, start: usize) -> usize {
    let b = path.as_bytes();
    let mut i = start;
    while i < b.len() && b[i] != b'.' {
        i += 1;
    }
    i
}

/// Names no field can have (`r#` cannot make them identifiers).
const RESERVED: [&str; 5] = ["_", "self", "Self", "super", "crate"];

/// Whether `s` can name a field: letters, digits (not first) and `_`, not a reserved word.
/// Non-ASCII letters are left to the compiler.
const fn can_name_field(s: &str) -> bool {
    let mut r = 0;
    while r < RESERVED.len() {
        if eq(s, RESERVED[r]) {
            return false;
        }
        r += 1;
    }
    let b = s.as_bytes();
    if b.is_empty() || b[0].is_ascii_digit() {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if !(b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] >= 0x80) {
            return false;
        }
        i += 1;
    }
    true
}

/// Checks that `path` is a period-delimited list of field names.
///
/// ```
/// use openedx_events_rules::key_path::{check_syntax, SyntaxError};
/// assert!(check_syntax("xblock_info.usage_key").is_ok());
/// assert_eq!(check_syntax("a..b"), Err(SyntaxError::Empty { path: "a..b" }));
/// assert_eq!(check_syntax("a.self"), Err(SyntaxError::NotAFieldName { path: "a.self", segment: "self" }));
/// ```
pub const fn check_syntax(path: &str) -> Result<(), SyntaxError<'_>> {
    let mut start = 0;
    loop {
        let end = segment_end(path, start);
        let segment = sub(path, start, end);
        if segment.is_empty() {
            return Err(SyntaxError::Empty { path });
        }
        if !can_name_field(segment) {
            return Err(SyntaxError::NotAFieldName { path, segment });
        }
        if end == path.len() {
            return Ok(());
        }
        start = end + 1;
    }
}

/// The key field a path ends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resolved {
    /// Name of the last field on the path (the Avro key schema's field name).
    pub field_name: &'static str,
    /// Avro primitive of the key (`string`, `long`, `boolean`, `double`).
    pub avro_type: &'static str,
}

/// Why a path does not resolve to a scalar field of a record.
// The suggestion is a `Text` held inline: `const` code cannot box it.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Problem<'a> {
    /// The path is not a list of field names.
    Syntax(SyntaxError<'a>),
    /// A segment names no field of the record it is looked up in.
    NoSuchField {
        /// The segment.
        field: &'a str,
        /// The record it was looked up in.
        record: &'static Record,
        /// The whole path corrected, when every wrong segment is close to a field.
        suggestion: Option<Text>,
    },
    /// The path goes on past a field that has no fields.
    NotARecord {
        /// The field the path goes through.
        field: &'static str,
        /// What it is.
        shape: Shape,
        /// The segment after it.
        next: &'a str,
    },
    /// The path ends on a record, list, map or bytes.
    NotScalar {
        /// The last field of the path.
        field: &'static str,
        /// What it is.
        shape: Shape,
    },
}

impl Problem<'_> {
    /// The sentence.
    pub const fn text(&self) -> Text {
        match self {
            Problem::Syntax(e) => e.text(),
            Problem::NoSuchField {
                field,
                record,
                suggestion,
            } => {
                let mut valid = Text::new();
                let mut i = 0;
                while i < record.fields.len() {
                    if i > 0 {
                        valid = valid.push(", ");
                    }
                    valid = valid.push(record.fields[i].name);
                    i += 1;
                }
                let suggestion = match suggestion {
                    Some(s) => Some(s.as_str()),
                    None => None,
                };
                no_such_field(field, record.name, valid.as_str(), suggestion)
            }
            Problem::NotARecord { field, shape, next } => not_a_record(field, shape.describe().as_str(), next),
            Problem::NotScalar { field, shape } => not_scalar(field, shape.describe().as_str()),
        }
    }
}

impl fmt::Display for Problem<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.text().as_str())
    }
}

/// The field of `record` named `name`.
const fn field_named(record: &'static Record, name: &str) -> Option<&'static Field> {
    let mut i = 0;
    while i < record.fields.len() {
        if eq(record.fields[i].name, name) {
            return Some(&record.fields[i]);
        }
        i += 1;
    }
    None
}

/// The field of `record` named `name`, else the closest one to it (see
/// [`suggest::nearest`]).
const fn field_or_nearest(record: &'static Record, name: &str) -> Option<&'static Field> {
    if let Some(f) = field_named(record, name) {
        return Some(f);
    }
    let mut best: Option<(&'static Field, usize)> = None;
    let mut i = 0;
    while i < record.fields.len() {
        let f = &record.fields[i];
        i += 1;
        if !suggest::is_close(name, f.name) {
            continue;
        }
        let d = suggest::distance(name, f.name);
        best = match best {
            Some((b, bd)) if bd <= d => Some((b, bd)),
            _ => Some((f, d)),
        };
    }
    match best {
        Some((f, _)) => Some(f),
        None => None,
    }
}

/// `path` with each wrong segment replaced by the closest field of its record, if that
/// gives a path that resolves; `None` otherwise.
const fn corrected(record: &'static Record, path: &str) -> Option<Text> {
    let mut out = Text::new();
    let mut level = record;
    let mut start = 0;
    loop {
        let end = segment_end(path, start);
        let Some(field) = field_or_nearest(level, sub(path, start, end)) else {
            return None;
        };
        if start > 0 {
            out = out.push(".");
        }
        out = out.push(field.name);
        let last = end == path.len();
        match (field.shape, last) {
            (Shape::Scalar(_), true) => return Some(out),
            (Shape::Record(r), false) => level = r,
            _ => return None,
        }
        start = end + 1;
    }
}

/// Resolves `path` against `record`: the key field it ends on, or why it does not.
///
/// ```
/// use openedx_events_rules::key_path::{resolve, Field, Problem, Record, Shape};
/// const BLOCK: Record = Record { name: "BlockData", fields: &[
///     Field { name: "usage_key", shape: Shape::Scalar("string") },
///     Field { name: "tags", shape: Shape::List },
/// ] };
/// const EVENT: Record = Record { name: "CloudEvent", fields: &[
///     Field { name: "block", shape: Shape::Record(&BLOCK) },
/// ] };
/// assert_eq!(resolve(&EVENT, "block.usage_key").unwrap().avro_type, "string");
/// let err = resolve(&EVENT, "blok.usage_kye").unwrap_err();
/// assert_eq!(
///     err.to_string(),
///     r#"no field `blok` in CloudEvent; valid fields: block; did you mean "block.usage_key"?"#
/// );
/// assert!(matches!(resolve(&EVENT, "block.tags"), Err(Problem::NotScalar { field: "tags", .. })));
/// ```
#[allow(clippy::result_large_err)] // see `Problem`: nothing can be boxed in `const` code
pub const fn resolve<'a>(record: &'static Record, path: &'a str) -> Result<Resolved, Problem<'a>> {
    if let Err(e) = check_syntax(path) {
        return Err(Problem::Syntax(e));
    }
    let mut level = record;
    let mut start = 0;
    loop {
        let end = segment_end(path, start);
        let name = sub(path, start, end);
        let Some(field) = field_named(level, name) else {
            return Err(Problem::NoSuchField {
                field: name,
                record: level,
                suggestion: corrected(record, path),
            });
        };
        if end == path.len() {
            return match field.shape {
                Shape::Scalar(avro_type) => Ok(Resolved {
                    field_name: field.name,
                    avro_type,
                }),
                shape => Err(Problem::NotScalar {
                    field: field.name,
                    shape,
                }),
            };
        }
        start = end + 1;
        match field.shape {
            Shape::Record(r) => level = r,
            shape => {
                return Err(Problem::NotARecord {
                    field: field.name,
                    shape,
                    next: sub(path, start, segment_end(path, start)),
                })
            }
        }
    }
}

/// `event_key_field "a..b" is empty or has an empty segment; write ...`.
pub const fn empty(path: &str) -> Text {
    Text::new()
        .push("event_key_field ")
        .push_quoted(path)
        .push(" is empty or has an empty segment; ")
        .push(EXAMPLE)
}

/// `event_key_field "a.self": segment "self" is not a field name; write ...`.
pub const fn not_a_field_name(path: &str, segment: &str) -> Text {
    Text::new()
        .push("event_key_field ")
        .push_quoted(path)
        .push(": segment ")
        .push_quoted(segment)
        .push(" is not a field name; ")
        .push(EXAMPLE)
}

/// `no field `blok` in CloudEvent; valid fields: block; did you mean "block.usage_key"?`
/// (`valid` is the field names joined with `, `).
pub const fn no_such_field(field: &str, record: &str, valid: &str, suggestion: Option<&str>) -> Text {
    let t = Text::new()
        .push("no field `")
        .push(field)
        .push("` in ")
        .push(record)
        .push("; valid fields: ")
        .push(valid);
    match suggestion {
        Some(s) => t.push("; did you mean ").push_quoted(s).push("?"),
        None => t,
    }
}

/// `field `usage_key` is a scalar (string), it has no field `x``.
pub const fn not_a_record(field: &str, shape: &str, next: &str) -> Text {
    Text::new()
        .push("field `")
        .push(field)
        .push("` is ")
        .push(shape)
        .push(", it has no field `")
        .push(next)
        .push("`")
}

/// `event_key_field must end on a scalar field, but `tags` is a list`.
pub const fn not_scalar(field: &str, shape: &str) -> Text {
    Text::new()
        .push("event_key_field must end on a scalar field, but `")
        .push(field)
        .push("` is ")
        .push(shape)
}

/// `bad event_key_field "blok": <problem>`: how both the build-time and the start-up
/// check introduce a [`Problem`].
pub const fn bad_key_path(path: &str, problem: &str) -> Text {
    Text::new()
        .push("bad event_key_field ")
        .push_quoted(path)
        .push(": ")
        .push(problem)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OWNER: Record = Record {
        name: "OwnerData",
        fields: &[Field {
            name: "id",
            shape: Shape::Scalar("long"),
        }],
    };
    const BLOCK: Record = Record {
        name: "BlockData",
        fields: &[
            Field {
                name: "usage_key",
                shape: Shape::Scalar("string"),
            },
            Field {
                name: "owner",
                shape: Shape::Record(&OWNER),
            },
        ],
    };
    const EVENT: Record = Record {
        name: "CloudEvent",
        fields: &[Field {
            name: "block",
            shape: Shape::Record(&BLOCK),
        }],
    };

    fn msg(path: &str) -> String {
        resolve(&EVENT, path).unwrap_err().to_string()
    }

    #[test]
    fn every_problem_has_its_sentence() {
        assert_eq!(resolve(&EVENT, "block.owner.id").unwrap().field_name, "id");
        assert_eq!(
            msg("block.usage_kye"),
            r#"no field `usage_kye` in BlockData; valid fields: usage_key, owner; did you mean "block.usage_key"?"#
        );
        assert_eq!(
            msg("block.owner.name"),
            "no field `name` in OwnerData; valid fields: id"
        );
        assert_eq!(
            msg("blok.ownr.id"),
            r#"no field `blok` in CloudEvent; valid fields: block; did you mean "block.owner.id"?"#
        );
        // A correction that would end on a record is not offered.
        assert_eq!(msg("blok"), "no field `blok` in CloudEvent; valid fields: block");
        assert_eq!(
            msg("block.usage_key.x"),
            "field `usage_key` is a scalar (string), it has no field `x`"
        );
        assert_eq!(
            msg("block.owner"),
            "event_key_field must end on a scalar field, but `owner` is a record (OwnerData)"
        );
        assert_eq!(
            msg("block..id"),
            r#"event_key_field "block..id" is empty or has an empty segment; write a period-delimited path of fields, e.g. "xblock_info.usage_key""#
        );
        assert_eq!(
            msg("block.self"),
            r#"event_key_field "block.self": segment "self" is not a field name; write a period-delimited path of fields, e.g. "xblock_info.usage_key""#
        );
        assert!(check_syntax("").is_err());
        assert!(check_syntax("r#type").is_err());
        assert!(check_syntax("type.x2").is_ok());
    }
}
