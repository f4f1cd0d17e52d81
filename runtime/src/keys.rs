//! Opaque keys of Open edX (edx-opaque-keys), as validated string newtypes.
//!
//! On the wire every key is its string form. Parsing checks the namespace prefix
//! and the number of parts, so a malformed key is refused where it enters the
//! service (a send, or a message from the bus), not deep inside a consumer.
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

/// ASCII bytes allowed in a key part: letters, digits and `_-~.:%@`.
const PART_BYTES: [bool; 128] = {
    let mut table = [false; 128];
    let mut b = 0;
    while b < 128 {
        table[b] =
            (b as u8).is_ascii_alphanumeric() || matches!(b as u8, b'_' | b'-' | b'~' | b'.' | b':' | b'%' | b'@');
        b += 1;
    }
    table
};

fn part_ok(p: &str) -> bool {
    let allowed = |c: char| c.is_alphanumeric() || matches!(c, '_' | '-' | '~' | '.' | ':' | '%' | '@');
    // Keys are ASCII in practice: a table look-up per byte then, chars otherwise.
    !p.is_empty()
        && if p.is_ascii() {
            p.bytes().all(|b| PART_BYTES[usize::from(b)])
        } else {
            p.chars().all(allowed)
        }
}

/// Calls `each` with every `+`-separated part of `s` and tells whether all parts are
/// valid (non-empty, allowed characters). ASCII keys are checked in one pass over the bytes.
fn plus_parts_ok<'a>(s: &'a str, mut each: impl FnMut(&'a str)) -> bool {
    if !s.is_ascii() {
        return s.split('+').all(|p| {
            each(p);
            part_ok(p)
        });
    }
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        if b == b'+' {
            if i == start {
                return false;
            }
            each(&s[start..i]);
            start = i + 1;
        } else if !PART_BYTES[usize::from(b)] {
            return false;
        }
    }
    if start == s.len() {
        return false;
    }
    each(&s[start..]);
    true
}

/// `course-v1:org+course+run`-style: prefix, then `n` or more `+`-separated parts.
fn plus_parts(value: &str, prefix: &str, min: usize, max: usize) -> bool {
    value
        .strip_prefix(prefix)
        .map(|rest| {
            let mut n = 0;
            plus_parts_ok(rest, |_| n += 1) && (min..=max).contains(&n)
        })
        .unwrap_or(false)
}

/// `lib:org:slug`-style: prefix, then exactly `n` `:`-separated parts.
fn colon_parts(value: &str, prefix: &str, n: usize) -> bool {
    value
        .strip_prefix(prefix)
        .map(|rest| {
            let parts: Vec<&str> = rest.split(':').collect();
            parts.len() == n
                && parts.iter().all(|p| {
                    !p.is_empty()
                        && p.chars()
                            .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '~' | '.' | '%'))
                })
        })
        .unwrap_or(false)
}

fn block_key(value: &str, prefix: &str) -> bool {
    // block-v1:org+course+run+type@video+block@id (a branch/version part may come between)
    value.strip_prefix(prefix).is_some_and(|rest| {
        let (mut n, mut typed, mut last) = (0, false, "");
        plus_parts_ok(rest, |p| {
            n += 1;
            typed |= p.starts_with("type@");
            last = p;
        }) && n >= 5
            && typed
            && last.starts_with("block@")
            && last.len() > "block@".len()
    })
}

fn course_key(v: &str) -> bool {
    plus_parts(v, "course-v1:", 3, 5) || ccx_locator(v) || plus_parts(v, "library-v1:", 2, 3) || {
        // Deprecated slash form: org/course/run.
        let parts: Vec<&str> = v.split('/').collect();
        parts.len() == 3 && parts.iter().all(|p| part_ok(p) && !p.contains(':'))
    }
}

fn ccx_locator(v: &str) -> bool {
    plus_parts(v, "ccx-v1:", 4, 6) && v.split('+').any(|p| p.starts_with("ccx@"))
}

fn library_usage_v2(v: &str) -> bool {
    colon_parts(v, "lb:", 4)
}

fn usage_key(v: &str) -> bool {
    block_key(v, "block-v1:")
        || block_key(v, "ccx-block-v1:")
        || block_key(v, "lib-block-v1:")
        || library_usage_v2(v)
        || v.strip_prefix("i4x://").is_some_and(|rest| {
            let parts: Vec<&str> = rest.split('/').collect();
            (4..=5).contains(&parts.len()) && parts.iter().all(|p| part_ok(p))
        })
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

        $crate::__string_field!($name);
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
    LibraryLocatorV2, "library locator", "lib:ORG:SLUG", |v| colon_parts(v, "lib:", 2)
);
opaque_key!(
    /// A block in a content library (v2): `lb:org:lib:type:id`.
    LibraryUsageLocatorV2, "library usage locator", "lb:ORG:LIB:TYPE:ID", library_usage_v2
);
opaque_key!(
    /// A collection in a content library: `lib-collection:org:lib:collection`.
    LibraryCollectionLocator, "library collection locator", "lib-collection:ORG:LIB:COLLECTION", |v| colon_parts(v, "lib-collection:", 3)
);
opaque_key!(
    /// A container (unit, section...) in a content library: `lct:org:lib:type:id`.
    LibraryContainerLocator, "library container locator", "lct:ORG:LIB:TYPE:ID", |v| colon_parts(v, "lct:", 4)
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

    proptest::proptest! {
        #[test]
        fn plus_parts_ok_agrees_with_a_plain_split(s in "[a-zA-Z0-9_@:.+ é/-]{0,40}") {
            let mut got = Vec::new();
            let ok = plus_parts_ok(&s, |p| got.push(p));
            let want_ok = s.split('+').all(part_ok);
            proptest::prop_assert_eq!(ok, want_ok, "{:?}", s);
            if ok {
                proptest::prop_assert_eq!(got, s.split('+').collect::<Vec<_>>());
            }
        }
    }
}
