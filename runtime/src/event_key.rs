//! Event keys and the errors of `event_key_field` paths.

use std::fmt;

use openedx_events_rules::key_path as rules;

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

/// Why an `event_key_field` path does not resolve to a scalar field. The sentences are
/// the rules crate's: `producer_config!` reports the same mistake with the same words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyPathError {
    /// The path is empty or has an empty segment.
    #[error("{}", rules::empty(path))]
    Empty {
        /// The whole path.
        path: String,
    },
    /// A segment cannot name a field (`self`, `_`, `usage-key`...).
    #[error("{}", rules::not_a_field_name(path, segment))]
    NotAFieldName {
        /// The whole path.
        path: String,
        /// The segment.
        segment: String,
    },
    /// A segment names no field of the record it is looked up in.
    #[error("{}", rules::no_such_field(field, record, &valid.join(", "), suggestion.as_deref()))]
    NoSuchField {
        /// The segment.
        field: String,
        /// The record's name.
        record: String,
        /// The fields the record has.
        valid: Vec<String>,
        /// The whole path corrected, when every wrong segment is close to a field name.
        suggestion: Option<String>,
    },
    /// The path goes on past a field that has no fields.
    #[error("{}", rules::not_a_record(field, shape, next))]
    NotARecord {
        /// The field the path goes through.
        field: String,
        /// What the field is.
        shape: String,
        /// The segment after it.
        next: String,
    },
    /// The path ends on a record, list or map.
    #[error("{}", rules::not_scalar(field, shape))]
    NotScalar {
        /// The last field of the path.
        field: String,
        /// What it is.
        shape: String,
    },
}

impl From<rules::Problem<'_>> for KeyPathError {
    fn from(problem: rules::Problem<'_>) -> Self {
        match problem {
            rules::Problem::Syntax(rules::SyntaxError::Empty { path }) => KeyPathError::Empty { path: path.to_owned() },
            rules::Problem::Syntax(rules::SyntaxError::NotAFieldName { path, segment }) => {
                KeyPathError::NotAFieldName {
                    path: path.to_owned(),
                    segment: segment.to_owned(),
                }
            }
            rules::Problem::NoSuchField {
                field,
                record,
                suggestion,
            } => KeyPathError::NoSuchField {
                field: field.to_owned(),
                record: record.name.to_owned(),
                valid: record.fields.iter().map(|f| f.name.to_owned()).collect(),
                suggestion: suggestion.map(|s| s.as_str().to_owned()),
            },
            rules::Problem::NotARecord { field, shape, next } => KeyPathError::NotARecord {
                field: field.to_owned(),
                shape: shape.to_string(),
                next: next.to_owned(),
            },
            rules::Problem::NotScalar { field, shape } => KeyPathError::NotScalar {
                field: field.to_owned(),
                shape: shape.to_string(),
            },
        }
    }
}
