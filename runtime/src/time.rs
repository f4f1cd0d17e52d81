//! Date-times on the wire: Python's `datetime.isoformat()` of an aware UTC value.

use std::fmt;

use chrono::{DateTime, FixedOffset, NaiveDateTime, Timelike, Utc};

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
        let micros = t.nanosecond() % 1_000_000_000 / 1_000;
        if micros == 0 {
            write!(f, "{}+00:00", t.format("%Y-%m-%dT%H:%M:%S"))
        } else {
            write!(f, "{}.{:06}+00:00", t.format("%Y-%m-%dT%H:%M:%S"), micros)
        }
    }
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
        assert!(parse("").is_err());
    }
}
