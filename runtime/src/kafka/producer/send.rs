//! Where an event's bytes leave for Kafka: the CloudEvents headers, the key and the value
//! framed for the Schema Registry (magic byte, schema id, schemaless Avro), handed to
//! librdkafka's queue by the policy for a full queue ([`QueueFullPolicy`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, ThreadedProducer};

use super::counting::{Counters, Padded, Waiters};
use super::delivery::DeliveryContext;
use super::routes::{RouteIds, RouteKey, RouteState, TopicGate};
use crate::event_key::EventKey;
use crate::kafka::registry;
use crate::metadata::EventMetadata;
use crate::produce::{ProduceError, ProducerRecord};
use crate::settings::Settings;

pub(super) const BACKEND: &str = "kafka";

/// How long a sender waiting for room in a full queue sleeps between tries.
pub(super) const QUEUE_FULL_STEP: Duration = Duration::from_micros(500);

/// Whether [`Inner::send`] counts the event (a new one) or not (a released one, counted
/// accepted when it was parked).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Counting {
    New,
    Released,
}

/// The refusal of an event whose route's schemas could not be registered.
pub(super) fn registration_failed(error: &str) -> ProduceError {
    backend_error(format!("schema registration failed: {error}"))
}

pub(super) fn backend_error(message: String) -> ProduceError {
    ProduceError::Backend {
        backend: BACKEND,
        message,
    }
}

/// Appends an Avro `long` (zig-zag, variable length).
pub(super) fn put_long(n: i64, out: &mut Vec<u8>) {
    let mut v = ((n << 1) ^ (n >> 63)) as u64;
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Writes a key as a framed Avro primitive (the key schema is a primitive field entry).
pub(super) fn encode_key(key: &EventKey, id: u32, out: &mut Vec<u8>) {
    out.extend_from_slice(&registry::frame_header(id));
    match key {
        EventKey::String(s) => {
            put_long(s.len() as i64, out);
            out.extend_from_slice(s.as_bytes());
        }
        EventKey::Long(n) => put_long(*n, out),
        EventKey::Boolean(b) => out.push(u8::from(*b)),
        EventKey::Double(d) => out.extend_from_slice(&d.to_le_bytes()),
    }
}

/// The headers of the spec, in the order edx-event-bus-kafka writes them.
///
/// A `time` a Python consumer cannot read (a leap second, a year outside 1..=9999 in UTC)
/// is written as [`EventMetadata::time_string`] gives it; [`KafkaProducer::produce`]
/// refuses such a record before it gets here (see [`crate::time::check_python`]).
pub fn headers_for(metadata: &EventMetadata) -> OwnedHeaders {
    const DIGITS: [&str; 10] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];
    let mut id_buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
    let id = metadata.id.hyphenated().encode_lower(&mut id_buf);
    let mut time_buf = [0u8; crate::time::ISO_LEN];
    let time_owned;
    let time = match crate::time::format_into(&metadata.time, &mut time_buf) {
        Some(t) => t,
        None => {
            time_owned = metadata.time_string();
            &time_owned
        }
    };
    let minor_owned;
    let minor = match DIGITS.get(metadata.minorversion as usize) {
        Some(d) => *d,
        None => {
            minor_owned = metadata.minorversion.to_string();
            &minor_owned
        }
    };
    SOURCELIB.with(|cache| {
        let mut cache = cache.borrow_mut();
        if cache.as_ref().is_none_or(|(lib, _)| *lib != metadata.sourcelib) {
            *cache = Some((metadata.sourcelib.clone(), metadata.sourcelib.to_string()));
        }
        let sourcelib = cache.as_ref().map(|(_, s)| s.as_str()).unwrap_or_default();
        let pairs: [(&str, &str); 10] = [
            ("ce_specversion", "1.0"),
            ("content-type", "application/avro"),
            ("ce_datacontenttype", "application/avro"),
            ("ce_type", metadata.event_type),
            ("ce_id", id),
            ("ce_source", &metadata.source),
            ("ce_time", time),
            ("ce_minorversion", minor),
            ("sourcehost", &metadata.sourcehost),
            ("sourcelib", sourcelib),
        ];
        let mut headers = OwnedHeaders::new_with_capacity(pairs.len());
        for (key, value) in pairs {
            headers = headers.insert(Header {
                key,
                value: Some(value.as_bytes()),
            });
        }
        headers
    })
}

thread_local! {
    static SOURCELIB: std::cell::RefCell<Option<(crate::metadata::SourceLib, String)>> = const { std::cell::RefCell::new(None) };
    static BUFFERS: std::cell::RefCell<(Vec<u8>, Vec<u8>)> = const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
}

/// What `produce` does when librdkafka's local queue is full
/// (`queue.buffering.max.messages` / `.kbytes` reached).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueFullPolicy {
    /// Refuse the event at once with [`ProduceError::BufferFull`] (logged by the bus
    /// with event type, topic and id, and counted as rejected). The default: never
    /// blocks the sending thread.
    Reject,
    /// Wait up to this long for room (blocking the sending thread, in 0.5 ms steps),
    /// then refuse the event. Set with `EVENT_BUS_KAFKA_QUEUE_FULL_WAIT_MS`; only for
    /// services that send from threads that may block.
    Wait(Duration),
}

impl QueueFullPolicy {
    pub(super) fn from_settings(settings: &Settings) -> Result<Self, String> {
        match settings.get("EVENT_BUS_KAFKA_QUEUE_FULL_WAIT_MS") {
            None => Ok(Self::Reject),
            Some(v) => match v.trim().parse::<u64>() {
                Ok(0) => Ok(Self::Reject),
                Ok(ms) => Ok(Self::Wait(Duration::from_millis(ms))),
                Err(e) => Err(format!("EVENT_BUS_KAFKA_QUEUE_FULL_WAIT_MS={v:?}: {e}")),
            },
        }
    }
}

pub(super) struct Inner {
    /// Unique among the producers of the process.
    pub(super) id: u64,
    pub(super) producer: ThreadedProducer<DeliveryContext>,
    pub(super) counters: Arc<Counters>,
    pub(super) routes: RwLock<HashMap<RouteKey, Arc<RouteState>>>,
    pub(super) gates: Mutex<HashMap<Arc<str>, Arc<TopicGate>>>,
    pub(super) waiters: Arc<Waiters>,
    pub(super) registrar: Mutex<Option<tokio::sync::mpsc::UnboundedSender<Arc<RouteState>>>>,
    pub(super) closed: AtomicBool,
    /// `produce` calls under way: shutdown waits for those that passed the `closed`
    /// check before it was set.
    pub(super) producing: Padded<AtomicUsize>,
    pub(super) policy: QueueFullPolicy,
    pub(super) max_parked: usize,
    /// How long a permanent registration failure holds, in milliseconds.
    pub(super) retry_failed_after_ms: AtomicU64,
}

impl Inner {
    /// Counts a refusal of `produce` and returns it.
    pub(super) fn reject(&self, error: ProduceError) -> ProduceError {
        self.counters.rejected.fetch_add(1, Ordering::Relaxed);
        error
    }

    /// Encodes and enqueues one event whose schema ids are known; a new event is counted
    /// accepted or rejected, a released one was counted accepted when it was parked.
    pub(super) fn send(
        &self,
        record: &ProducerRecord,
        ids: &RouteIds,
        policy: QueueFullPolicy,
        number: usize,
        counting: Counting,
    ) -> Result<(), ProduceError> {
        let count = |counter: &AtomicU64| {
            if counting == Counting::New {
                counter.fetch_add(1, Ordering::AcqRel);
            }
        };
        BUFFERS.with(|cell| {
            let mut guard = cell.borrow_mut();
            let (key_buf, value_buf) = &mut *guard;
            key_buf.clear();
            value_buf.clear();
            value_buf.extend_from_slice(&registry::frame_header(ids.value_id));
            if let Err(e) = record.data.encode_avro(value_buf) {
                count(&self.counters.rejected);
                return Err(ProduceError::Encode(e));
            }
            let has_key = match (&record.key, ids.key_id) {
                (Some(key), Some(id)) => {
                    encode_key(key, id, key_buf);
                    true
                }
                _ => false,
            };
            let mut base = BaseRecord::with_opaque_to(&record.topic, number)
                .payload(&value_buf[..])
                .headers(headers_for(&record.metadata));
            if has_key {
                base = base.key(&key_buf[..]);
            }
            let mut started = None;
            loop {
                match self.producer.send(base) {
                    Ok(()) => {
                        count(&self.counters.accepted);
                        return Ok(());
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        let waited = started.get_or_insert_with(Instant::now).elapsed();
                        match policy {
                            QueueFullPolicy::Wait(limit) if waited < limit => {
                                base = back;
                                std::thread::sleep(QUEUE_FULL_STEP);
                            }
                            _ => {
                                count(&self.counters.rejected);
                                return Err(ProduceError::BufferFull { waited });
                            }
                        }
                    }
                    Err((e, _)) => {
                        count(&self.counters.rejected);
                        return Err(backend_error(e.to_string()));
                    }
                }
            }
        })
    }

    /// Marks a parked event failed (its schemas could not be registered, or the producer
    /// shut down first).
    pub(super) fn fail_parked(&self, record: &ProducerRecord, error: &str, number: usize) {
        self.counters.failed.fetch_add(1, Ordering::AcqRel);
        self.counters.numbers.done(number);
        self.waiters.resolve(number, Err(error.to_owned()));
        tracing::error!(
            event_type = record.metadata.event_type,
            topic = &*record.topic,
            event_id = %record.metadata.id,
            error,
            "kafka event dropped before its schema was registered"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_full_policy_setting() {
        let s = Settings::new().with("EVENT_BUS_KAFKA_QUEUE_FULL_WAIT_MS", "25");
        assert_eq!(
            QueueFullPolicy::from_settings(&s),
            Ok(QueueFullPolicy::Wait(Duration::from_millis(25)))
        );
        assert_eq!(
            QueueFullPolicy::from_settings(&Settings::new()),
            Ok(QueueFullPolicy::Reject)
        );
        assert!(QueueFullPolicy::from_settings(&s.with("EVENT_BUS_KAFKA_QUEUE_FULL_WAIT_MS", "x")).is_err());
    }

    #[test]
    fn key_encoding_is_framed_avro() {
        let mut out = Vec::new();
        encode_key(&EventKey::String("ab".into()), 3, &mut out);
        assert_eq!(out, [0, 0, 0, 0, 3, 4, b'a', b'b']);
        out.clear();
        encode_key(&EventKey::Long(-1), 1, &mut out);
        assert_eq!(out, [0, 0, 0, 0, 1, 1]);
        out.clear();
        encode_key(&EventKey::Long(-65), 1, &mut out);
        assert_eq!(out, [0, 0, 0, 0, 1, 0x81, 0x01]);
        out.clear();
        encode_key(&EventKey::Long(i64::MIN), 1, &mut out);
        assert_eq!(&out[5..], [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
        // Same bytes as the Avro codec writes for the primitive.
        let schema: serde_avro_fast::Schema = "\"string\"".parse().unwrap();
        let s = "é".repeat(100);
        out.clear();
        encode_key(&EventKey::String(s.clone()), 0, &mut out);
        let mut config = serde_avro_fast::ser::SerializerConfig::new(&schema);
        assert_eq!(out[5..], serde_avro_fast::to_datum_vec(&s, &mut config).unwrap());
    }
}
