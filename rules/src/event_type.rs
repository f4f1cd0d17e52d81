//! The grammar of an event type string, and the sentence for a type that names no event.

use core::fmt;

use crate::text::Text;

/// What the grammar wants, as the messages say it.
pub const EXPECTED: &str = "expected \"org.openedx.<subdomain>.<subject>.<action>.v<N>\" (lowercase), e.g. \"org.openedx.learning.course.enrollment.created.v1\"";

/// Why a string is not an event type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason<'a> {
    /// It does not start with `org.openedx.`.
    Prefix,
    /// Two dots in a row, or a dot at the end.
    EmptySegment,
    /// A segment holds something other than lowercase letters, digits, `_` and `-`.
    BadSegment(&'a str),
    /// Fewer than three segments after `org.openedx.`.
    TooShort,
}

impl fmt::Display for Reason<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Prefix => f.write_str("it must start with `org.openedx.`"),
            Reason::EmptySegment => f.write_str("it has an empty segment"),
            Reason::BadSegment(s) => write!(f, "segment `{s}` may only hold lowercase letters, digits, `_` and `-`"),
            Reason::TooShort => f.write_str("it needs a subdomain, a subject and an action"),
        }
    }
}

/// A string that is not an event type, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventTypeError<'a> {
    /// The string.
    pub value: &'a str,
    /// Why.
    pub reason: Reason<'a>,
}

impl fmt::Display for EventTypeError<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid event type {:?}: {}; {EXPECTED}", self.value, self.reason)
    }
}

impl std::error::Error for EventTypeError<'_> {}

/// Checks `org.openedx.<subdomain>.<subject>.<action>.v<N>`: lowercase ASCII letters,
/// digits, `_` and `-` in at least three non-empty segments after `org.openedx.`.
/// The `.v<N>` suffix is not enforced: openedx-events 11 has two event types without it
/// (`org.openedx.authz.role_assignment.*`).
///
/// ```
/// use openedx_events_rules::event_type::{check, Reason};
/// assert!(check("org.openedx.learning.course.enrollment.created.v1").is_ok());
/// let err = check("org.openedx.Learning.course.created.v1").unwrap_err();
/// assert_eq!(err.reason, Reason::BadSegment("Learning"));
/// assert!(err.to_string().starts_with("invalid event type \"org.openedx.Learning.course.created.v1\": segment `Learning`"));
/// ```
pub fn check(value: &str) -> Result<(), EventTypeError<'_>> {
    let fail = |reason| Err(EventTypeError { value, reason });
    let Some(rest) = value.strip_prefix("org.openedx.") else {
        return fail(Reason::Prefix);
    };
    let segments: Vec<&str> = rest.split('.').collect();
    if segments.iter().any(|s| s.is_empty()) {
        return fail(Reason::EmptySegment);
    }
    if let Some(bad) = segments.iter().find(|s| {
        !s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
    }) {
        return fail(Reason::BadSegment(bad));
    }
    if segments.len() < 3 {
        return fail(Reason::TooShort);
    }
    Ok(())
}

/// The sentence for a type string no event has: `no event of type "..." is registered in
/// this binary`, with `; did you mean "..."?` when a registered type is close.
///
/// ```
/// use openedx_events_rules::event_type::unknown;
/// assert_eq!(
///     unknown("org.openedx.learning.a.b.v2", Some("org.openedx.learning.a.b.v1")).as_str(),
///     r#"no event of type "org.openedx.learning.a.b.v2" is registered in this binary; did you mean "org.openedx.learning.a.b.v1"?"#
/// );
/// ```
pub const fn unknown(event_type: &str, suggestion: Option<&str>) -> Text {
    let t = Text::new()
        .push("no event of type ")
        .push_quoted(event_type)
        .push(" is registered in this binary");
    match suggestion {
        Some(s) => t.push("; did you mean ").push_quoted(s).push("?"),
        None => t,
    }
}
