//! A message's headers read into event metadata (each metadata header exactly once, names
//! matched exactly even with a NUL byte), and the bounds on peer values in logs and reasons.

use rdkafka::message::BorrowedMessage;

use crate::consume::{DispatchError, RawMetadata};

/// One header of a message, as librdkafka holds it.
pub(super) struct RawHeader<'a> {
    /// The name's bytes up to its first NUL byte (librdkafka's C API gives names as
    /// NUL-terminated strings and does not say their length).
    pub(super) key: &'a [u8],
    pub(super) value: Option<&'a [u8]>,
    /// For a metadata header's name ([`METADATA_HEADERS`]): whether `key` is the whole
    /// name of every header that reads as it; false when one of them had a NUL byte and
    /// more after it (found by librdkafka's exact-name lookup, which compares lengths).
    /// Not checked (true) for other names.
    pub(super) exact: bool,
}

/// The headers of a message, in order.
///
/// Read with librdkafka's own accessors: rdkafka's `Headers::iter` / `try_get` panic on
/// a header key that is not UTF-8, which any peer can send.
pub(super) fn raw_headers<'a>(message: &'a BorrowedMessage<'_>) -> Vec<RawHeader<'a>> {
    use rdkafka::bindings as rd;
    use rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR;
    let mut out = Vec::new();
    let mut headers: *mut rd::rd_kafka_headers_t = std::ptr::null_mut();
    // SAFETY: `message.ptr()` is a valid message for as long as `message` is borrowed;
    // the headers librdkafka returns belong to the message and live as long as it; each
    // name is a NUL-terminated string and each value `size` bytes (or null), both owned
    // by the headers. The returned slices borrow `message`, so they cannot outlive it.
    unsafe {
        if rd::rd_kafka_message_headers(message.ptr(), &mut headers) != RD_KAFKA_RESP_ERR_NO_ERROR || headers.is_null()
        {
            return Vec::new();
        }
        for idx in 0.. {
            let mut name: *const std::os::raw::c_char = std::ptr::null();
            let mut value: *const std::os::raw::c_void = std::ptr::null();
            let mut size = 0usize;
            if rd::rd_kafka_header_get_all(headers, idx, &mut name, &mut value, &mut size) != RD_KAFKA_RESP_ERR_NO_ERROR
                || name.is_null()
            {
                break;
            }
            let key = std::ffi::CStr::from_ptr(name).to_bytes();
            let bytes = (!value.is_null()).then(|| std::slice::from_raw_parts(value.cast::<u8>(), size));
            out.push((key, bytes));
        }
        // `rd_kafka_header_get(name, i)` finds only the headers whose whole name is `name`
        // (it compares lengths too), a subset of those that read as `name`. So when `m`
        // headers read as a metadata header's name, they are all that name exactly if and
        // only if it finds an `m`-th; if not, one of them at least had a NUL byte in its
        // name, and (which one cannot be told) none of them is taken as exact. Linear in
        // the number of headers, whatever a peer sends; other names are not checked.
        let mut exact = vec![true; out.len()];
        for name in METADATA_HEADERS {
            let same: Vec<usize> = (0..out.len()).filter(|&j| out[j].0 == name.as_bytes()).collect();
            let Some(last) = same.len().checked_sub(1) else {
                continue;
            };
            let c_name = std::ffi::CString::new(name).expect("no NUL in a metadata header name");
            let mut value: *const std::os::raw::c_void = std::ptr::null();
            let mut size = 0usize;
            let all_exact = rd::rd_kafka_header_get(headers, last, c_name.as_ptr(), &mut value, &mut size)
                == RD_KAFKA_RESP_ERR_NO_ERROR;
            for j in same {
                exact[j] = all_exact;
            }
        }
        out.into_iter()
            .zip(exact)
            .map(|((key, value), exact)| RawHeader { key, value, exact })
            .collect()
    }
}

/// The longest peer value quoted in a log line or a reason.
pub(super) const PEER_VALUE_MAX_CHARS: usize = 200;
/// The longest reason written to a log line or a dead letter's `dead_letter_error`.
pub(super) const REASON_MAX_CHARS: usize = 1000;

/// `text` cut to `max` characters, saying how much was cut.
pub(super) fn cut(text: &str, max: usize) -> std::borrow::Cow<'_, str> {
    match text.char_indices().nth(max) {
        None => text.into(),
        Some((at, _)) => format!("{}... ({} more chars)", &text[..at], text[at..].chars().count()).into(),
    }
}

/// A reason bounded to [`REASON_MAX_CHARS`]: its start and its end (where the error's
/// own words usually are), the middle (usually a peer's value) cut.
pub(super) fn bounded_reason(reason: &str) -> std::borrow::Cow<'_, str> {
    let total = reason.chars().count();
    if total <= REASON_MAX_CHARS {
        return reason.into();
    }
    let head: String = reason.chars().take(REASON_MAX_CHARS * 6 / 10).collect();
    let tail: String = reason.chars().skip(total - REASON_MAX_CHARS * 3 / 10).collect();
    format!(
        "{head} ... ({} chars cut) ... {tail}",
        total - REASON_MAX_CHARS * 9 / 10
    )
    .into()
}

/// The value of the first header called `name` (exactly), when it is UTF-8, cut for logs.
pub(super) fn header_str<'a>(message: &'a BorrowedMessage<'_>, name: &str) -> std::borrow::Cow<'a, str> {
    raw_headers(message)
        .into_iter()
        .find(|h| h.exact && h.key == name.as_bytes())
        .and_then(|h| h.value)
        .and_then(|v| std::str::from_utf8(v).ok())
        .map(|v| cut(v, PEER_VALUE_MAX_CHARS))
        .unwrap_or_default()
}

/// The metadata headers this consumer reads or that the Python producer writes once.
pub(super) const METADATA_HEADERS: [&str; 9] = [
    "ce_id",
    "ce_type",
    "ce_time",
    "ce_source",
    "ce_minorversion",
    "ce_specversion",
    "sourcehost",
    "sourcelib",
    "content-type",
];

/// The metadata headers of a message. `ce_id` and `ce_type` are required; each metadata
/// header may be given once at most (a second one, even with the same value, makes the
/// message unreadable: no "first or last wins"); every header key must be UTF-8 (as the
/// Kafka protocol wants it); a key that reads as a metadata header's name followed by a
/// NUL byte and more is refused (it is not one, and could be taken for one). Other
/// headers are ignored.
pub(super) fn raw_metadata(message: &BorrowedMessage<'_>) -> Result<RawMetadata, DispatchError> {
    let mut raw = RawMetadata::default();
    let mut seen = [0usize; METADATA_HEADERS.len()];
    for (idx, header) in raw_headers(message).into_iter().enumerate() {
        let key = std::str::from_utf8(header.key).map_err(|_| {
            DispatchError::BadMetadata(format!(
                "header {idx} has a key that is not UTF-8 ({:?})",
                cut(&String::from_utf8_lossy(header.key), 100)
            ))
        })?;
        let Some(which) = METADATA_HEADERS.iter().position(|name| *name == key) else {
            continue;
        };
        if !header.exact {
            return Err(DispatchError::BadMetadata(format!(
                "a header key reads as {key:?} but has a NUL byte and more after it: not the {key} header"
            )));
        }
        seen[which] += 1;
        if seen[which] > 1 {
            return Err(DispatchError::BadMetadata(format!(
                "header {key} is given more than once (it must be given once at most)"
            )));
        }
        let slot = match key {
            "ce_id" => &mut raw.id,
            "ce_type" => &mut raw.event_type,
            "ce_source" => &mut raw.source,
            "ce_time" => &mut raw.time,
            "ce_minorversion" => &mut raw.minorversion,
            "sourcehost" => &mut raw.sourcehost,
            "sourcelib" => &mut raw.sourcelib,
            _ => continue,
        };
        let text = std::str::from_utf8(header.value.unwrap_or_default())
            .map_err(|_| DispatchError::BadMetadata(format!("header {key} is not UTF-8")))?;
        *slot = Some(text.to_owned());
    }
    if seen[0] != 1 || seen[1] != 1 {
        return Err(DispatchError::BadMetadata(format!(
            "expected exactly one ce_id and one ce_type header, found {} ce_id and {} ce_type",
            seen[0], seen[1]
        )));
    }
    Ok(raw)
}
