//! Redis replies read into messages: `XREADGROUP` entries, resumed messages with their
//! delivery counts, extended `XPENDING` rows.

use ::redis::Value;

use crate::redis::{stream_entries, StreamEntry};

/// A received message on its way through the consumer.
pub(super) struct Received {
    pub(super) entry: StreamEntry,
    /// Deliveries so far, this one included.
    pub(super) attempts: u64,
}

/// The entries of an `XREADGROUP` reply (one stream): `[[stream, [entries]]]`, or nil.
pub(super) fn read_reply_entries(v: Value) -> Vec<StreamEntry> {
    match v {
        Value::Array(streams) => streams
            .into_iter()
            .flat_map(|s| match s {
                Value::Array(mut pair) if pair.len() == 2 => stream_entries(pair.pop().unwrap_or(Value::Nil)),
                _ => Vec::new(),
            })
            .collect(),
        Value::Map(streams) => streams.into_iter().flat_map(|(_, e)| stream_entries(e)).collect(),
        _ => Vec::new(),
    }
}

/// The messages of a `RESUME_OWN_SCRIPT` reply, with their delivery count (which counts
/// the delivery now made).
pub(super) fn resumed_entries(v: Value) -> Vec<Received> {
    let Value::Array(items) = v else {
        return Vec::new();
    };
    let mut out = Vec::with_capacity(items.len() / 2);
    let mut it = items.into_iter();
    while let (Some(entry), Some(count)) = (it.next(), it.next()) {
        let Value::Int(count) = count else { continue };
        if let Some(entry) = stream_entries(Value::Array(vec![entry])).pop() {
            out.push(Received {
                entry,
                attempts: u64::try_from(count).unwrap_or(0).max(1),
            });
        }
    }
    out
}

/// `(id, deliveries)` of an extended `XPENDING` reply.
pub(super) fn pending_entries(v: Value) -> Vec<(String, u64)> {
    let Value::Array(items) = v else {
        return Vec::new();
    };
    items
        .into_iter()
        .filter_map(|item| {
            let Value::Array(fields) = item else { return None };
            let id = match fields.first()? {
                Value::BulkString(b) => String::from_utf8(b.clone()).ok()?,
                Value::SimpleString(s) => s.clone(),
                _ => return None,
            };
            let deliveries = match fields.get(3)? {
                Value::Int(n) => u64::try_from(*n).ok()?,
                _ => return None,
            };
            Some((id, deliveries))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_parse() {
        let pending = Value::Array(vec![
            Value::Array(vec![
                Value::BulkString(b"1-0".to_vec()),
                Value::BulkString(b"c1".to_vec()),
                Value::Int(1000),
                Value::Int(3),
            ]),
            Value::Nil,
        ]);
        assert_eq!(pending_entries(pending), vec![("1-0".to_owned(), 3)]);
        let read = Value::Array(vec![Value::Array(vec![
            Value::BulkString(b"stream".to_vec()),
            Value::Array(vec![Value::Array(vec![
                Value::BulkString(b"5-1".to_vec()),
                Value::Array(vec![Value::BulkString(b"k".to_vec()), Value::BulkString(b"v".to_vec())]),
            ])]),
        ])]);
        let entries = read_reply_entries(read);
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].id, "5-1");
        assert!(read_reply_entries(Value::Nil).is_empty());
    }
}
