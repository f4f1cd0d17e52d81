//! Redis Streams, wire-compatible with edx-event-bus-redis.
//!
//! - this file: the client from settings ([`open_client`], the connection settings), and a
//!   stream entry to and from event metadata: [`xadd_command`] is where an event's bytes
//!   are written for Redis, [`read_fields`] where a consumer reads them back.
//! - [`producer`]: [`RedisProducer`], the `XADD` pipeline, its buffer, reconnection and
//!   the check that no event is written twice.
//! - [`consumer`]: [`RedisConsumer`], consumer groups, claims, acknowledgements and dead letters.
//!
//! The producer and the consumer share only what is here and in [`crate::retry`]; neither
//! imports the other.

use ::redis::{Client, Cmd, RedisError, RedisWrite, Value};

use crate::consume::{DispatchError, RawMetadata};
use crate::produce::{ProduceError, ProducerRecord};
use crate::settings::Settings;

pub mod consumer;
pub mod producer;

pub use consumer::{ConsumeError, ConsumeStats, RedisConsumer, RedisConsumerOptions, StartPosition};
pub use producer::{RedisProducer, RedisProducerConfig, RedisProducerStats};

/// Setting: the Redis URL (`redis://[user[:password]@]host[:port][/db]`, or `rediss://` for TLS).
pub const SETTING_URL: &str = "EVENT_BUS_REDIS_CONNECTION_URL";
/// Setting (this crate only): a PEM file of the certificate authorities to trust for
/// `rediss://` instead of the built-in web roots (e.g. a private CA).
pub const SETTING_TLS_CA_FILE: &str = "EVENT_BUS_REDIS_TLS_CA_FILE";
/// A setting of the Redis backend that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum RedisConfigError {
    /// `EVENT_BUS_REDIS_CONNECTION_URL` is not set.
    #[error("{SETTING_URL} is not set")]
    MissingUrl,
    /// A numeric setting is not a number.
    #[error("{name}={value:?} is not a non-negative integer")]
    NotANumber {
        /// The setting.
        name: &'static str,
        /// Its value.
        value: String,
    },
    /// The CA file cannot be read.
    #[error("cannot read {SETTING_TLS_CA_FILE} {path}: {message}")]
    CaFile {
        /// The file.
        path: String,
        /// Why.
        message: String,
    },
    /// The URL is not a Redis URL.
    #[error("invalid Redis URL {url}: {message}")]
    InvalidUrl {
        /// The URL, password hidden.
        url: String,
        /// Why.
        message: String,
    },
    /// The producer was created outside a tokio runtime.
    #[error("the Redis producer must be started inside a tokio runtime")]
    NoRuntime,
}

fn number(settings: &Settings, name: &'static str, default: u64) -> Result<u64, RedisConfigError> {
    match settings.get(name) {
        None => Ok(default),
        Some(v) => v.trim().parse().map_err(|_| RedisConfigError::NotANumber {
            name,
            value: v.to_owned(),
        }),
    }
}

/// Opens a Redis client for a URL, making sure TLS (`rediss://`) has a crypto provider,
/// trusting the authorities of `ca_file` when one is given.
pub(crate) fn open_client(url: &str, ca_file: Option<&std::path::Path>) -> Result<Client, RedisConfigError> {
    if url.starts_with("rediss://") && rustls::crypto::CryptoProvider::get_default().is_none() {
        // Another part of the process may install one first: either is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
    let invalid = |e: RedisError| RedisConfigError::InvalidUrl {
        url: crate::settings::redact_url(url),
        message: e.to_string(),
    };
    match ca_file {
        Some(path) if url.starts_with("rediss://") => {
            let pem = std::fs::read(path).map_err(|e| RedisConfigError::CaFile {
                path: path.display().to_string(),
                message: e.to_string(),
            })?;
            let certs = ::redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(pem),
            };
            Client::build_with_tls(url, certs).map_err(invalid)
        }
        _ => Client::open(url).map_err(invalid),
    }
}

/// Whether a reply error is worth retrying (the server is busy, loading, read-only...).
pub(crate) fn is_transient_server_error(code: &str) -> bool {
    matches!(
        code,
        "LOADING" | "BUSY" | "TRYAGAIN" | "MASTERDOWN" | "READONLY" | "OOM" | "CLUSTERDOWN" | "NOREPLICAS"
    )
}

/// Builds the `XADD` command of a record (encodes the data).
///
/// Fails when the data cannot be encoded, or when the metadata `time` is one a Python
/// consumer cannot read (a year outside 1..=9999 in UTC, a leap second):
/// [`ProduceError::Backend`], and [`Producer::produce`] refuses the record.
pub fn xadd_command(record: &ProducerRecord, stream_max_len: usize) -> Result<Cmd, ProduceError> {
    thread_local! {
        // Avro scratch space, reused by every event sent from this thread.
        static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    SCRATCH.with_borrow_mut(|data| {
        data.clear();
        record.data.encode_avro(data)?;
        let m = &record.metadata;
        let mut cmd = Cmd::with_capacity(
            22,
            record.topic.len() + data.len() + m.source.len() + m.sourcehost.len() + 200,
        );
        cmd.arg("XADD").arg(&*record.topic);
        if stream_max_len > 0 {
            cmd.arg("MAXLEN").arg("~").arg(stream_max_len);
        }
        let mut id = uuid::Uuid::encode_buffer();
        let mut time = [0; crate::time::ISO_LEN];
        cmd.arg("*")
            .arg("type")
            .arg(m.event_type)
            .arg("id")
            .arg(&*m.id.hyphenated().encode_lower(&mut id))
            .arg("source")
            .arg(&*m.source)
            .arg("time");
        // A time Python's `datetime` cannot hold (year outside 1..=9999 in UTC, a leap
        // second) would be written as `+10000-...` or second 60, which no Python
        // consumer reads: refused (the value is not quoted: no event data in errors).
        let Some(t) = crate::time::format_into(&m.time, &mut time) else {
            let problem = crate::time::check_python(&m.time)
                .err()
                .map_or_else(|| "not writable as ISO-8601".to_owned(), |p| p.to_string());
            return Err(ProduceError::Backend {
                backend: "redis",
                message: format!("event metadata `time` refused: {problem}"),
            });
        };
        cmd.arg(t);
        cmd.arg("minorversion")
            .arg(m.minorversion)
            .arg("sourcehost")
            .arg(&*m.sourcehost)
            .arg("sourcelib");
        cmd.write_arg_fmt(&m.sourcelib);
        cmd.arg("event_data").arg(&data[..]);
        Ok(cmd)
    })
}

/// One stream entry as Redis returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StreamEntry {
    /// The entry id, `ms-seq`.
    pub id: String,
    /// The fields in order; empty when the entry no longer exists (a pending id whose
    /// entry was trimmed or deleted).
    pub fields: Vec<(Vec<u8>, Vec<u8>)>,
    /// Whether the entry was deleted (Redis returned a nil body).
    pub deleted: bool,
}

fn bytes_of(v: Value) -> Option<Vec<u8>> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.into_bytes()),
        Value::Okay => Some(b"OK".to_vec()),
        Value::Int(i) => Some(i.to_string().into_bytes()),
        _ => None,
    }
}

/// Reads a list of entries (`[[id, [k, v, ...]], ...]`), skipping anything malformed.
pub(crate) fn stream_entries(v: Value) -> Vec<StreamEntry> {
    let Value::Array(items) = v else {
        return Vec::new();
    };
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let Value::Array(mut pair) = item else { continue };
        if pair.len() != 2 {
            continue;
        }
        let body = pair.pop();
        let Some(id) = pair.pop().and_then(bytes_of).and_then(|b| String::from_utf8(b).ok()) else {
            continue;
        };
        match body {
            Some(Value::Array(kv)) => {
                let mut fields = Vec::with_capacity(kv.len() / 2);
                let mut it = kv.into_iter();
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    if let (Some(k), Some(v)) = (bytes_of(k), bytes_of(v)) {
                        fields.push((k, v));
                    }
                }
                out.push(StreamEntry {
                    id,
                    fields,
                    deleted: false,
                });
            }
            Some(Value::Map(kv)) => {
                let fields = kv
                    .into_iter()
                    .filter_map(|(k, v)| Some((bytes_of(k)?, bytes_of(v)?)))
                    .collect();
                out.push(StreamEntry {
                    id,
                    fields,
                    deleted: false,
                });
            }
            Some(Value::Nil) | None => out.push(StreamEntry {
                id,
                fields: Vec::new(),
                deleted: true,
            }),
            Some(_) => {}
        }
    }
    out
}

/// The metadata fields and `event_data` of a message.
///
/// A field we read given twice (which one did the producer mean?), or a metadata value
/// that is not UTF-8, makes the message unreadable: the error names the field. Other
/// fields are ignored.
fn read_fields(fields: &[(Vec<u8>, Vec<u8>)]) -> Result<(RawMetadata, Option<&[u8]>), DispatchError> {
    let mut raw = RawMetadata::default();
    let mut data = None;
    for (k, v) in fields {
        let (name, slot) = match &k[..] {
            b"event_data" => {
                if data.replace(&v[..]).is_some() {
                    return Err(DispatchError::BadMetadata("field `event_data` given twice".into()));
                }
                continue;
            }
            b"type" => ("type", &mut raw.event_type),
            b"id" => ("id", &mut raw.id),
            b"source" => ("source", &mut raw.source),
            b"time" => ("time", &mut raw.time),
            b"minorversion" => ("minorversion", &mut raw.minorversion),
            b"sourcehost" => ("sourcehost", &mut raw.sourcehost),
            b"sourcelib" => ("sourcelib", &mut raw.sourcelib),
            _ => continue,
        };
        if slot.is_some() {
            return Err(DispatchError::BadMetadata(format!("field `{name}` given twice")));
        }
        let text = String::from_utf8(v.clone())
            .map_err(|_| DispatchError::BadMetadata(format!("field `{name}` is not UTF-8")))?;
        *slot = Some(text);
    }
    Ok((raw, data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_parse_and_skip_garbage() {
        let v = Value::Array(vec![
            Value::Array(vec![
                Value::BulkString(b"1-0".to_vec()),
                Value::Array(vec![
                    Value::BulkString(b"type".to_vec()),
                    Value::BulkString(b"t".to_vec()),
                    Value::BulkString(b"dangling".to_vec()),
                ]),
            ]),
            Value::Array(vec![Value::BulkString(b"2-0".to_vec()), Value::Nil]),
            Value::Int(3),
        ]);
        let e = stream_entries(v);
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].fields, vec![(b"type".to_vec(), b"t".to_vec())]);
        assert!(e[1].deleted);
        assert!(is_transient_server_error("LOADING"));
        assert!(!is_transient_server_error("WRONGTYPE"));
    }

    #[test]
    fn fields_are_read_by_name_and_bad_utf8_or_doubled_is_refused() {
        let mut fields = vec![
            (b"sourcelib".to_vec(), b"10.5.0".to_vec()),
            (b"type".to_vec(), b"org.openedx.x.y.v1".to_vec()),
            (b"event_data".to_vec(), vec![0, 1]),
            (b"extra".to_vec(), b"ignored".to_vec()),
            (b"extra".to_vec(), vec![0xff]),
        ];
        let (raw, data) = read_fields(&fields).unwrap();
        assert_eq!(raw.event_type.as_deref(), Some("org.openedx.x.y.v1"));
        assert_eq!(raw.sourcelib.as_deref(), Some("10.5.0"));
        assert_eq!(raw.id, None);
        assert_eq!(data, Some(&[0u8, 1][..]));
        fields.push((b"id".to_vec(), vec![0xff]));
        let e = read_fields(&fields).unwrap_err().to_string();
        assert!(e.contains("field `id` is not UTF-8"), "{e}");
        fields.pop();
        fields.push((b"type".to_vec(), b"org.openedx.x.y.v1".to_vec()));
        let e = read_fields(&fields).unwrap_err().to_string();
        assert!(e.contains("field `type` given twice"), "{e}");
    }
}
