//! Opaque keys of Open edX (edx-opaque-keys), as validated string newtypes.
//!
//! On the wire every key is its string form. Parsing follows edx-opaque-keys' grammar
//! (4.x, with edx-ccx-keys) for the class openedx-events reads each type with: a string
//! is accepted exactly when Python's `from_string` accepts it and writes it back
//! unchanged, so every key sent from here is one a Python consumer reads, and a
//! malformed key is refused where it enters the service (a send, or a message from the
//! bus), not deep inside a consumer. Known difference: a `ccx@` number must use ASCII
//! digits (Python's `\d` also takes other scripts' digits).
//!
//! ```
//! use openedx_events::keys::CourseKey;
//! let key: CourseKey = "course-v1:edX+DemoX+Demo_Course".parse().unwrap();
//! assert_eq!(key.as_str(), "course-v1:edX+DemoX+Demo_Course");
//! assert!("not a key".parse::<CourseKey>().is_err());
//! ```

use std::fmt;
use std::str::FromStr;

/// A string that is not a valid key of the expected kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind}: {value:?} (expected {expected})")]
pub struct InvalidKey {
    kind: &'static str,
    value: String,
    expected: &'static str,
}

// The grammar below is edx-opaque-keys' (4.x, with edx-ccx-keys), as openedx-events parses
// each field: a key is valid here exactly when Python's `from_string` accepts it and gives
// back the same string (tests/keys_interop.rs checks this against Python itself).

/// Python's `\w` (Unicode): a letter, a digit or `_`.
fn word(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// `ALLOWED_ID_CHARS` of the locators: `[\w\-~.:]`.
fn id_char(c: char) -> bool {
    word(c) || matches!(c, '-' | '~' | '.' | ':')
}

/// What deprecated (`org/course/run`, `i4x://`) parts may hold: `[\w\-~.:%]`.
fn deprecated_id_char(c: char) -> bool {
    id_char(c) || c == '%'
}

/// Deprecated course parts are also checked against `[^\w.%-]`: `[\w.%-]` remains.
fn deprecated_course_char(c: char) -> bool {
    word(c) || matches!(c, '.' | '%' | '-')
}

fn all_of(s: &str, allowed: impl Fn(char) -> bool) -> bool {
    if s.is_ascii() {
        s.bytes().all(|b| allowed(char::from(b)))
    } else {
        s.chars().all(allowed)
    }
}

fn nonempty_of(s: &str, allowed: impl Fn(char) -> bool) -> bool {
    !s.is_empty() && all_of(s, allowed)
}

/// A Python `re.match(r'^[...]+$', value)` check: `$` also matches before one final
/// newline, so a field may end with `\n`.
fn field_of(s: &str, allowed: impl Fn(char) -> bool) -> bool {
    nonempty_of(s.strip_suffix('\n').unwrap_or(s), allowed)
}

/// The fields of the v2 content-library keys: ASCII names, Unicode slugs and ids.
fn v2_name(s: &str) -> bool {
    field_of(s, |c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

fn v2_slug(s: &str) -> bool {
    field_of(s, |c| word(c) || matches!(c, '-' | '.'))
}

/// `prefix` then exactly `n` `:`-separated fields, each checked by its function.
fn colon_key(value: &str, prefix: &str, fields: &[fn(&str) -> bool]) -> bool {
    let Some(rest) = value.strip_prefix(prefix) else {
        return false;
    };
    let mut parts = rest.split(':');
    fields.iter().all(|check| parts.next().is_some_and(check)) && parts.next().is_none()
}

fn library_v2(v: &str) -> bool {
    colon_key(v, "lib:", &[v2_name, v2_slug])
}

fn library_usage_v2(v: &str) -> bool {
    colon_key(v, "lb:", &[v2_name, v2_slug, v2_name, v2_slug])
}

fn library_collection(v: &str) -> bool {
    colon_key(v, "lib-collection:", &[v2_name, v2_slug, v2_slug])
}

fn library_container(v: &str) -> bool {
    colon_key(v, "lct:", &[v2_name, v2_slug, v2_name, v2_slug])
}

/// Which `+`-separated locator grammar a namespace uses.
#[derive(Clone, Copy, PartialEq)]
enum Locator {
    /// `course-v1`, `block-v1`: org, course and run.
    Course,
    /// `library-v1`, `lib-block-v1`: org and library.
    Library,
    /// `ccx-v1`, `ccx-block-v1`: a course with a `ccx@N` part.
    Ccx,
}

/// Byte classes for scanning locators in one pass.
const ID: u8 = 1;
const PLUS: u8 = 2;
const AT: u8 = 3;
const NON_ASCII: u8 = 4;
const BYTE_CLASS: [u8; 256] = {
    let mut table = [0; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = if c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'~' | b'.' | b':') {
            ID
        } else if c == b'+' {
            PLUS
        } else if c == b'@' {
            AT
        } else if c >= 0x80 {
            NON_ASCII
        } else {
            0
        };
        b += 1;
    }
    table
};

/// Checks the part of a locator after its namespace: the context's own parts
/// (`org+course[+run]`, `branch@`, `version@`, `ccx@`), then `type@` and `block@`
/// exactly when `block` is asked for. Only the forms Python writes back unchanged pass.
/// One pass over the bytes; parts with non-ASCII characters are checked again by char.
// The validators stay out of line: inlined into the generated record visitors, they made
// decoding the enrollment event 25% slower (benches/avro.rs).
#[inline(never)]
fn locator(rest: &str, kind: Locator, block: bool) -> bool {
    let bytes = rest.as_bytes();
    let mut named = [false; 5];
    let (mut plain, mut next) = (0, 0);
    let (mut start, mut at, mut bad, mut non_ascii) = (0, None, false, false);
    let mut i = 0;
    loop {
        // Most bytes are allowed in ids: skip them in a tight loop.
        while i < bytes.len() && BYTE_CLASS[usize::from(bytes[i])] == ID {
            i += 1;
        }
        let class = if i < bytes.len() {
            BYTE_CLASS[usize::from(bytes[i])]
        } else {
            PLUS
        };
        match class {
            AT if at.is_none() => at = Some(i),
            NON_ASCII => non_ascii = true,
            PLUS => {}
            _ => bad = true,
        }
        if class != PLUS {
            i += 1;
            continue;
        }
        // A part ends at i.
        let value = &rest[at.map_or(start, |a| a + 1)..i];
        let value_ok = !bad && !value.is_empty() && (!non_ascii || value.chars().all(id_char));
        match at {
            None => {
                if next > 0 || plain == 3 || !value_ok {
                    return false;
                }
                plain += 1;
            }
            Some(a) => {
                // The prefixes, in the order they may come; each once. Their lengths differ.
                let index = match &bytes[start..a] {
                    b"branch" => 0,
                    b"version" => 1,
                    b"ccx" if kind == Locator::Ccx => 2,
                    b"type" => 3,
                    b"block" => 4,
                    _ => return false,
                };
                let ok = match index {
                    // An ObjectId, written in lowercase hex.
                    1 => value.len() == 24 && value.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')),
                    2 => !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()),
                    _ => value_ok,
                };
                if index < next || !ok {
                    return false;
                }
                named[index] = true;
                next = index + 1;
            }
        }
        if i == bytes.len() {
            break;
        }
        i += 1;
        (start, at, bad, non_ascii) = (i, None, false, false);
    }
    let [branch, version, ccx, block_type, block_id] = named;
    let full = match kind {
        Locator::Course | Locator::Ccx => 3,
        Locator::Library => 2,
    };
    // The context is written back whole: all of its plain parts (with an optional branch),
    // or none of them and a version.
    let context = plain == full || (plain == 0 && !branch && version);
    context && (kind != Locator::Ccx || ccx) && block_type == block && block_id == block
}

#[inline(never)]
fn course_key(v: &str) -> bool {
    match v.split_once(':') {
        Some(("course-v1", rest)) if locator(rest, Locator::Course, false) => true,
        Some(("library-v1", rest)) if locator(rest, Locator::Library, false) => true,
        Some(("ccx-v1", rest)) if locator(rest, Locator::Ccx, false) => true,
        // What no namespace parses falls back to the deprecated `org/course/run`
        // (the run may be empty).
        _ => {
            let mut parts = v.split('/');
            let (Some(org), Some(course), Some(run), None) = (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                return false;
            };
            nonempty_of(org, deprecated_course_char)
                && nonempty_of(course, deprecated_course_char)
                && all_of(run, deprecated_course_char)
        }
    }
}

#[inline(never)]
fn ccx_locator(v: &str) -> bool {
    v.strip_prefix("ccx-v1:")
        .is_some_and(|rest| locator(rest, Locator::Ccx, false))
}

#[inline(never)]
fn usage_key(v: &str) -> bool {
    match v.split_once(':') {
        Some(("block-v1", rest)) if locator(rest, Locator::Course, true) => true,
        Some(("lib-block-v1", rest)) if locator(rest, Locator::Library, true) => true,
        Some(("ccx-block-v1", rest)) if locator(rest, Locator::Ccx, true) => true,
        Some(("lb", _)) if library_usage_v2(v) => true,
        // The deprecated location: i4x://org/course/category/name[@revision].
        _ => deprecated_location(v),
    }
}

#[inline(never)]
fn deprecated_location(v: &str) -> bool {
    let Some(rest) = v.strip_prefix("i4x://") else {
        return false;
    };
    let mut parts = rest.splitn(4, '/');
    let (Some(org), Some(course), Some(category), Some(last)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let (name, revision) = match last.split_once('@') {
        Some((name, revision)) => (name, Some(revision)),
        None => (last, None),
    };
    nonempty_of(org, deprecated_course_char)
        && nonempty_of(course, deprecated_course_char)
        // The category is not checked beyond the pattern.
        && !category.is_empty()
        && nonempty_of(name, deprecated_id_char)
        && revision.is_none_or(|r| nonempty_of(r, deprecated_id_char))
}

macro_rules! opaque_key {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $expected:literal, $check:expr) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// Parses and validates the key's string form.
            pub fn parse(value: impl Into<String>) -> Result<Self, InvalidKey> {
                let value = value.into();
                #[allow(clippy::redundant_closure_call)]
                if ($check)(value.as_str()) {
                    Ok(Self(value))
                } else {
                    Err(InvalidKey { kind: $kind, value: value.chars().take(200).collect(), expected: $expected })
                }
            }

            /// The key's string form, as written on the wire.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The key's string form, by value.
            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl FromStr for $name {
            type Err = InvalidKey;
            fn from_str(s: &str) -> Result<Self, InvalidKey> {
                Self::parse(s)
            }
        }

        impl TryFrom<&str> for $name {
            type Error = InvalidKey;
            fn try_from(s: &str) -> Result<Self, InvalidKey> {
                Self::parse(s)
            }
        }

        impl TryFrom<String> for $name {
            type Error = InvalidKey;
            fn try_from(s: String) -> Result<Self, InvalidKey> {
                Self::parse(s)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.0)
            }
        }

        $crate::data::string_field!($name);
    };
}

opaque_key!(
    /// A course key: `course-v1:org+course+run` (also CCX, legacy library and
    /// deprecated `org/course/run` forms).
    CourseKey, "course key", "course-v1:ORG+COURSE+RUN", course_key
);
opaque_key!(
    /// A usage key of an XBlock: `block-v1:org+course+run+type@T+block@ID`, a
    /// content-library `lb:` key, or a deprecated `i4x://` location.
    UsageKey, "usage key", "block-v1:ORG+COURSE+RUN+type@TYPE+block@ID", usage_key
);
opaque_key!(
    /// A CCX course key: `ccx-v1:org+course+run+ccx@N`.
    CcxLocator, "CCX locator", "ccx-v1:ORG+COURSE+RUN+ccx@N", ccx_locator
);
opaque_key!(
    /// A content library (v2): `lib:org:slug`.
    LibraryLocatorV2, "library locator", "lib:ORG:SLUG", library_v2
);
opaque_key!(
    /// A block in a content library (v2): `lb:org:lib:type:id`.
    LibraryUsageLocatorV2, "library usage locator", "lb:ORG:LIB:TYPE:ID", library_usage_v2
);
opaque_key!(
    /// A collection in a content library: `lib-collection:org:lib:collection`.
    LibraryCollectionLocator, "library collection locator", "lib-collection:ORG:LIB:COLLECTION", library_collection
);
opaque_key!(
    /// A container (unit, section...) in a content library: `lct:org:lib:type:id`.
    LibraryContainerLocator, "library container locator", "lct:ORG:LIB:TYPE:ID", library_container
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_valid_keys() {
        for k in [
            "course-v1:edX+DemoX+Demo_Course",
            "edX/DemoX/Demo_Course",
            "ccx-v1:edX+DemoX+Demo+ccx@3",
            "library-v1:org+lib",
        ] {
            CourseKey::parse(k).unwrap();
        }
        for k in [
            "block-v1:edX+DemoX+Demo_Course+type@video+block@0b9e39477cf34507a7a48f74be381fdd",
            "lb:org:lib:html:abc-1",
            "i4x://edX/DemoX/video/abc",
        ] {
            UsageKey::parse(k).unwrap();
        }
        LibraryLocatorV2::parse("lib:org:slug").unwrap();
        LibraryUsageLocatorV2::parse("lb:org:slug:problem:p1").unwrap();
        LibraryCollectionLocator::parse("lib-collection:org:slug:col1").unwrap();
        LibraryContainerLocator::parse("lct:org:slug:unit:u1").unwrap();
        CcxLocator::parse("ccx-v1:edX+DemoX+Demo+ccx@1").unwrap();
    }

    #[test]
    fn rejects_malformed_keys() {
        for k in [
            "",
            "course-v1:",
            "course-v1:edX+Demo",
            "course-v1:a b+c+d",
            "block-v1:edX+D+R",
        ] {
            assert!(CourseKey::parse(k).is_err() || k.starts_with("block"), "{k}");
            assert!(UsageKey::parse(k).is_err(), "{k}");
        }
        let err = LibraryLocatorV2::parse("lib:org").unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid library locator: \"lib:org\" (expected lib:ORG:SLUG)"
        );
    }
}
