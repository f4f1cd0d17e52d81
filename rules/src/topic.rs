//! Kafka's topic-name rules (Redis stream names follow them too).

use core::fmt;

/// The longest topic name Kafka accepts.
pub const MAX_LEN: usize = 249;

/// Why a string is not a topic name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicError {
    /// The name is empty.
    Empty,
    /// The name is longer than [`MAX_LEN`]; carries its length.
    TooLong(usize),
    /// The name is `.` or `..`.
    Reserved,
    /// The name holds a character other than ASCII letters, digits, `.`, `_` and `-`.
    BadChar(char),
}

impl fmt::Display for TopicError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TopicError::Empty => f.write_str("it is empty"),
            TopicError::TooLong(n) => write!(f, "it is longer than {MAX_LEN} characters ({n})"),
            TopicError::Reserved => f.write_str("`.` and `..` are reserved"),
            TopicError::BadChar(c) => write!(
                f,
                "{c:?} is not allowed: only ASCII letters, digits, `.`, `_` and `-` are allowed"
            ),
        }
    }
}

impl std::error::Error for TopicError {}

/// Checks a topic name: 1 to 249 characters of `[A-Za-z0-9._-]`, and not `.` or `..`.
///
/// ```
/// use openedx_events_rules::topic::{check, TopicError};
/// assert!(check("course-catalog.v1").is_ok());
/// assert_eq!(check("bad topic"), Err(TopicError::BadChar(' ')));
/// assert_eq!(check("bad topic").unwrap_err().to_string(), "' ' is not allowed: only ASCII letters, digits, `.`, `_` and `-` are allowed");
/// ```
pub fn check(topic: &str) -> Result<(), TopicError> {
    if topic.is_empty() {
        return Err(TopicError::Empty);
    }
    if topic.len() > MAX_LEN {
        return Err(TopicError::TooLong(topic.len()));
    }
    if topic == "." || topic == ".." {
        return Err(TopicError::Reserved);
    }
    match topic
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        Some(c) => Err(TopicError::BadChar(c)),
        None => Ok(()),
    }
}

/// The sentence for a bad topic name: `topic "..." is not a valid topic name: <why>`.
///
/// ```
/// let err = openedx_events_rules::topic::check("").unwrap_err();
/// assert_eq!(openedx_events_rules::topic::message("", &err), r#"topic "" is not a valid topic name: it is empty"#);
/// ```
pub fn message(topic: &str, error: &TopicError) -> String {
    format!("topic {topic:?} is not a valid topic name: {error}")
}
