//! Event keys and the errors of `event_key_field` paths.

use std::fmt;

/// The key of one produced event, read from its `event_key_field`.
#[derive(Debug, Clone, PartialEq)]
pub enum EventKey {
    /// A string key (strings, opaque keys, UUIDs, date-times).
    String(String),
    /// An integer key (Avro `long`).
    Long(i64),
    /// A boolean key.
    Boolean(bool),
    /// A floating-point key (Avro `double`).
    Double(f64),
}

impl EventKey {
    /// The Avro primitive this key is written as.
    pub fn avro_type(&self) -> &'static str {
        match self {
            EventKey::String(_) => "string",
            EventKey::Long(_) => "long",
            EventKey::Boolean(_) => "boolean",
            EventKey::Double(_) => "double",
        }
    }
}

impl fmt::Display for EventKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EventKey::String(s) => f.write_str(s),
            EventKey::Long(n) => write!(f, "{n}"),
            EventKey::Boolean(b) => write!(f, "{b}"),
            EventKey::Double(d) => write!(f, "{d}"),
        }
    }
}

/// Why an `event_key_field` path does not resolve to a scalar field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyPathError {
    /// The path is empty or has an empty segment.
    #[error("event_key_field {path:?} is empty or has an empty segment")]
    Empty {
        /// The whole path.
        path: String,
    },
    /// A segment names no field of the record it is looked up in.
    #[error("no field `{field}` in {record}; valid fields: {}", valid.join(", "))]
    NoSuchField {
        /// The segment.
        field: String,
        /// The record's name.
        record: String,
        /// The fields the record has.
        valid: Vec<String>,
    },
    /// The path goes on past a field that has no fields.
    #[error("field `{field}` is {shape}, it has no field `{next}`")]
    NotARecord {
        /// The field the path goes through.
        field: String,
        /// What the field is.
        shape: String,
        /// The segment after it.
        next: String,
    },
    /// The path ends on a record, list or map.
    #[error("event_key_field must end on a scalar field, but `{field}` is {shape}")]
    NotScalar {
        /// The last field of the path.
        field: String,
        /// What it is.
        shape: String,
    },
}
