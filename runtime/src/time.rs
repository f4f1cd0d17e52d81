//! Date-times on the wire: Python's `datetime.isoformat()` of an aware UTC value.

use std::fmt;

use chrono::{DateTime, Datelike, FixedOffset, NaiveDate, NaiveDateTime, Timelike, Utc};

/// Formats a UTC date-time as Python's `isoformat()` does:
/// `2026-11-27T13:20:05.364687+00:00`, or `2026-11-27T13:20:05+00:00` when the
/// microseconds are zero. Sub-microsecond precision is dropped, as Python has none.
///
/// ```
/// use chrono::{TimeZone, Utc};
/// use openedx_events::time::IsoFormat;
/// let t = Utc.with_ymd_and_hms(2026, 11, 27, 13, 20, 5).unwrap();
/// assert_eq!(IsoFormat(&t).to_string(), "2026-11-27T13:20:05+00:00");
/// ```
pub struct IsoFormat<'a>(pub &'a DateTime<Utc>);

impl fmt::Display for IsoFormat<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = self.0;
        if let Some(s) = format_into(t, &mut [0; ISO_LEN]) {
            return f.write_str(s);
        }
        let micros = t.nanosecond() % 1_000_000_000 / 1_000;
        if micros == 0 {
            write!(f, "{}+00:00", t.format("%Y-%m-%dT%H:%M:%S"))
        } else {
            write!(f, "{}.{:06}+00:00", t.format("%Y-%m-%dT%H:%M:%S"), micros)
        }
    }
}

/// The longest text [`format_into`] writes: `2026-11-27T13:20:05.364687+00:00`.
pub const ISO_LEN: usize = 32;

/// Writes `t` as Python's `isoformat()` into `buf` without allocating, and returns the
/// text; `None` for a value Python's `datetime` cannot hold (see [`check_python`]:
/// years outside 1..=9999, a leap second). [`IsoFormat`] still writes those, for logs;
/// encoders refuse them.
///
/// ```
/// use chrono::{TimeZone, Utc};
/// let t = Utc.with_ymd_and_hms(2026, 11, 27, 13, 20, 5).unwrap();
/// let mut buf = [0; openedx_events::time::ISO_LEN];
/// assert_eq!(openedx_events::time::format_into(&t, &mut buf), Some("2026-11-27T13:20:05+00:00"));
/// ```
pub fn format_into<'a>(t: &DateTime<Utc>, buf: &'a mut [u8; ISO_LEN]) -> Option<&'a str> {
    // One conversion to the naive UTC value; `DateTime`'s own accessors convert on each call.
    let n = t.naive_utc();
    let year = u32::try_from(n.year()).ok().filter(|y| (1..=9999).contains(y))?;
    if n.nanosecond() >= 1_000_000_000 {
        return None;
    }
    fn put(buf: &mut [u8], at: usize, width: usize, mut v: u32) {
        for i in (at..at + width).rev() {
            buf[i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    }
    put(buf, 0, 4, year);
    buf[4] = b'-';
    put(buf, 5, 2, n.month());
    buf[7] = b'-';
    put(buf, 8, 2, n.day());
    buf[10] = b'T';
    put(buf, 11, 2, n.hour());
    buf[13] = b':';
    put(buf, 14, 2, n.minute());
    buf[16] = b':';
    put(buf, 17, 2, n.second());
    let micros = n.nanosecond() / 1_000;
    let mut len = 19;
    if micros != 0 {
        buf[19] = b'.';
        put(buf, 20, 6, micros);
        len = 26;
    }
    buf[len..len + 6].copy_from_slice(b"+00:00");
    std::str::from_utf8(&buf[..len + 6]).ok()
}

/// Reads exactly the form Python writes for UTC (`YYYY-MM-DDTHH:MM:SS[.ffffff]+00:00`)
/// without going through a format parser; anything else is left to [`parse`].
fn parse_python_utc(s: &[u8]) -> Option<DateTime<Utc>> {
    let (micros, tail) = match s.len() {
        25 => (0, &s[19..]),
        32 if s[19] == b'.' => (digits(&s[20..26])?, &s[26..]),
        _ => return None,
    };
    if tail != b"+00:00" || s[4] != b'-' || s[7] != b'-' || s[10] != b'T' || s[13] != b':' || s[16] != b':' {
        return None;
    }
    let date = NaiveDate::from_ymd_opt(digits(&s[0..4])? as i32, digits(&s[5..7])?, digits(&s[8..10])?)?;
    let time = date.and_hms_micro_opt(digits(&s[11..13])?, digits(&s[14..16])?, digits(&s[17..19])?, micros)?;
    Some(time.and_utc())
}

fn digits(s: &[u8]) -> Option<u32> {
    s.iter().try_fold(0u32, |acc, b| {
        b.is_ascii_digit().then(|| acc * 10 + u32::from(b - b'0'))
    })
}

/// Error for a date-time string that is not ISO-8601, or names a time a Python
/// consumer cannot read (see [`check_python`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid date-time {value:?}: {}", match .problem {
    Some(p) => p.to_string(),
    None => "expected ISO-8601 such as 2026-11-27T13:20:05.364687+00:00".to_owned(),
})]
pub struct InvalidTime {
    value: String,
    problem: Option<NotPythonTime>,
}

impl InvalidTime {
    /// Why a well-formed value was refused; `None` when the text is not ISO-8601.
    pub fn problem(&self) -> Option<NotPythonTime> {
        self.problem
    }
}

/// A date-time Python's `datetime` cannot hold, so a Python consumer could not read it:
/// refused when read and when encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NotPythonTime {
    /// A leap second (second 60): `datetime.fromisoformat` refuses it.
    #[error("a leap second (second 60), which Python's datetime cannot read")]
    LeapSecond,
    /// A year outside 1..=9999 in UTC (e.g. year 0, or `9999-12-31T23:00-05:00`,
    /// which is in year 10000 in UTC).
    #[error("outside years 1 to 9999 in UTC, which Python's datetime cannot hold")]
    OutOfRange,
}

/// Whether Python's `datetime` can hold `t`: its UTC year is in 1..=9999 and it is not
/// a leap second.
///
/// ```
/// use chrono::{NaiveDate, TimeZone, Utc};
/// use openedx_events::time::{check_python, NotPythonTime};
/// assert!(check_python(&Utc.with_ymd_and_hms(2026, 11, 27, 13, 20, 5).unwrap()).is_ok());
/// let late = NaiveDate::from_ymd_opt(10000, 1, 1).unwrap().and_hms_opt(0, 0, 0).unwrap().and_utc();
/// assert_eq!(check_python(&late), Err(NotPythonTime::OutOfRange));
/// ```
pub fn check_python(t: &DateTime<Utc>) -> Result<(), NotPythonTime> {
    let n = t.naive_utc();
    if !(1..=9999).contains(&n.year()) {
        return Err(NotPythonTime::OutOfRange);
    }
    if n.nanosecond() >= 1_000_000_000 {
        return Err(NotPythonTime::LeapSecond);
    }
    Ok(())
}

/// Parses an ISO-8601 date-time with an offset (`+00:00`, `Z`, or any other offset,
/// normalised to UTC). A value without an offset is read as UTC, as openedx-events
/// treats naive times. A time Python's `datetime` cannot hold once in UTC (a leap
/// second, year 0, a value an offset pushes past 9999) is refused: it could not be
/// written so that a Python consumer reads it.
///
/// ```
/// let t = openedx_events::time::parse("2026-11-27T14:20:05+01:00").unwrap();
/// assert_eq!(openedx_events::time::IsoFormat(&t).to_string(), "2026-11-27T13:20:05+00:00");
/// assert!(openedx_events::time::parse("2016-12-31T23:59:60+00:00").is_err());
/// assert!(openedx_events::time::parse("9999-12-31T23:00:00-05:00").is_err());
/// ```
pub fn parse(value: &str) -> Result<DateTime<Utc>, InvalidTime> {
    let error = |problem| InvalidTime {
        value: value.chars().take(64).collect(),
        problem,
    };
    let t = parse_any(value).ok_or_else(|| error(None))?;
    check_python(&t).map_err(|p| error(Some(p)))?;
    Ok(t)
}

fn parse_any(value: &str) -> Option<DateTime<Utc>> {
    if let Some(t) = parse_python_utc(value.as_bytes()) {
        return Some(t);
    }
    if let Ok(t) = DateTime::<FixedOffset>::parse_from_rfc3339(value) {
        return Some(t.with_timezone(&Utc));
    }
    if let Ok(t) = DateTime::<FixedOffset>::parse_from_str(value, "%Y-%m-%dT%H:%M:%S%.f%:z") {
        return Some(t.with_timezone(&Utc));
    }
    if let Ok(t) = NaiveDateTime::parse_from_str(value, "%Y-%m-%dT%H:%M:%S%.f") {
        return Some(t.and_utc());
    }
    None
}

/// Now, truncated to microseconds (the precision Python keeps).
pub fn now() -> DateTime<Utc> {
    let t = Utc::now();
    t.with_nanosecond(t.nanosecond() / 1_000 * 1_000).unwrap_or(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_python() {
        let t = parse("2020-07-21T10:17:40.364687+00:00").unwrap();
        assert_eq!(IsoFormat(&t).to_string(), "2020-07-21T10:17:40.364687+00:00");
        let t = parse("2020-07-21T10:17:40.000100Z").unwrap();
        assert_eq!(IsoFormat(&t).to_string(), "2020-07-21T10:17:40.000100+00:00");
        let t = parse("2009-07-11T20:01:35-05:30").unwrap();
        assert_eq!(IsoFormat(&t).to_string(), "2009-07-12T01:31:35+00:00");
        assert!(parse("yesterday").is_err());
        assert!(parse("2020-02-30T10:17:40+00:00").is_err());
        assert!(parse("2020-07-21T10:17:40.36468x+00:00").is_err());
        let t = parse("0999-01-02T03:04:05.000007+00:00").unwrap();
        assert_eq!(IsoFormat(&t).to_string(), "0999-01-02T03:04:05.000007+00:00");
        assert!(parse("").is_err());
    }

    #[test]
    fn times_python_cannot_read_are_refused_when_parsed() {
        for (text, problem) in [
            ("2016-12-31T23:59:60+00:00", NotPythonTime::LeapSecond),
            ("2016-12-31T23:59:60.000001+00:00", NotPythonTime::LeapSecond),
            ("2016-12-31T23:59:60", NotPythonTime::LeapSecond),
            ("0000-01-01T00:00:00+00:00", NotPythonTime::OutOfRange),
            ("9999-12-31T23:00:00-05:00", NotPythonTime::OutOfRange),
            ("0001-01-01T00:30:00+01:00", NotPythonTime::OutOfRange),
        ] {
            match parse(text) {
                Err(e) => {
                    assert_eq!(e.problem(), Some(problem), "{text}");
                    assert!(e.to_string().contains("Python"), "{e}");
                }
                Ok(t) => panic!("{text} accepted as {}", IsoFormat(&t)),
            }
        }
        // Without seconds it is not read at all.
        assert_eq!(parse("9999-12-31T23:00-05:00").unwrap_err().problem(), None);
        assert!(parse("9999-12-31T23:59:59.999999+00:00").is_ok());
        assert!(parse("0001-01-01T00:00:00+00:00").is_ok());
    }

    proptest::proptest! {
        #[test]
        fn fast_paths_agree_with_chrono(secs in -62_135_596_800i64..253_402_300_800, micros in 0u32..1_000_000) {
            let t = DateTime::from_timestamp(secs, micros * 1_000).unwrap();
            let chrono_text = if micros == 0 {
                format!("{}+00:00", t.format("%Y-%m-%dT%H:%M:%S"))
            } else {
                format!("{}.{:06}+00:00", t.format("%Y-%m-%dT%H:%M:%S"), micros)
            };
            let mut buf = [0; ISO_LEN];
            proptest::prop_assert_eq!(format_into(&t, &mut buf), Some(chrono_text.as_str()));
            proptest::prop_assert_eq!(parse_python_utc(chrono_text.as_bytes()), Some(t));
            proptest::prop_assert_eq!(parse(&chrono_text).unwrap(), t);
        }
    }
}
