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
/// text; `None` for years outside 0..=9999 (Python has none; [`IsoFormat`] still writes
/// them).
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
    let year = u32::try_from(n.year()).ok().filter(|y| *y <= 9999)?;
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
    // A leap second (nanosecond >= 1e9) is written as second 60, as chrono does.
    put(buf, 17, 2, n.second() + n.nanosecond() / 1_000_000_000);
    let micros = n.nanosecond() % 1_000_000_000 / 1_000;
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

/// Error for a date-time string that is not ISO-8601.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid date-time {value:?}: expected ISO-8601 such as 2026-11-27T13:20:05.364687+00:00")]
pub struct InvalidTime {
    value: String,
}

/// Parses an ISO-8601 date-time with an offset (`+00:00`, `Z`, or any other offset,
/// normalised to UTC). A value without an offset is read as UTC, as openedx-events
/// treats naive times.
///
/// ```
/// let t = openedx_events::time::parse("2026-11-27T14:20:05+01:00").unwrap();
/// assert_eq!(openedx_events::time::IsoFormat(&t).to_string(), "2026-11-27T13:20:05+00:00");
/// ```
pub fn parse(value: &str) -> Result<DateTime<Utc>, InvalidTime> {
    if let Some(t) = parse_python_utc(value.as_bytes()) {
        return Ok(t);
    }
    if let Ok(t) = DateTime::<FixedOffset>::parse_from_rfc3339(value) {
        return Ok(t.with_timezone(&Utc));
    }
    if let Ok(t) = DateTime::<FixedOffset>::parse_from_str(value, "%Y-%m-%dT%H:%M:%S%.f%:z") {
        return Ok(t.with_timezone(&Utc));
    }
    if let Ok(t) = NaiveDateTime::parse_from_str(value, "%Y-%m-%dT%H:%M:%S%.f") {
        return Ok(t.and_utc());
    }
    Err(InvalidTime {
        value: value.chars().take(64).collect(),
    })
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
