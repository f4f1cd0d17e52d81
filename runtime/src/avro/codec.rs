//! Event data as schemaless Avro binary (no container, no header), straight between the
//! typed Rust event and the bytes: no intermediate Avro value per event.

use std::collections::HashMap;
use std::io::BufRead;
use std::sync::RwLock;

use serde_avro_fast::de::read::SliceRead;
use serde_avro_fast::de::{DeserializerConfig, DeserializerState};
use serde_avro_fast::ser::{SerializerConfig, SerializerState};

use crate::data::{deserialize_record, ReadMode};
use crate::event::OpenEdxEvent;

/// Error encoding event data.
#[derive(Debug, thiserror::Error)]
#[error("cannot encode {event_type} as Avro: {source}")]
pub struct EncodeError {
    event_type: &'static str,
    #[source]
    source: serde_avro_fast::ser::SerError,
}

impl EncodeError {
    /// The event type whose data could not be encoded.
    pub fn event_type(&self) -> &'static str {
        self.event_type
    }
}

/// Error decoding event data.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The bytes are not a datum of the schema.
    #[error("cannot decode {event_type} from Avro: {source}")]
    Avro {
        /// The event type.
        event_type: &'static str,
        /// What the decoder said.
        #[source]
        source: serde_avro_fast::de::DeError,
    },
    /// A whole datum was read but bytes are left after it.
    #[error("cannot decode {event_type} from Avro: {trailing} bytes left after the datum")]
    TrailingBytes {
        /// The event type.
        event_type: &'static str,
        /// How many bytes are left.
        trailing: usize,
    },
}

impl DecodeError {
    /// The event type that was being decoded.
    pub fn event_type(&self) -> &'static str {
        match self {
            DecodeError::Avro { event_type, .. } | DecodeError::TrailingBytes { event_type, .. } => event_type,
        }
    }
}

/// Encodes event data as schemaless Avro, appending to `buf`.
///
/// Reuse one buffer (cleared between events) for the best speed. On error `buf` is left
/// as it was.
pub fn encode_into<E: OpenEdxEvent>(event: &E, buf: &mut Vec<u8>) -> Result<(), EncodeError> {
    let start = buf.len();
    let mut config = SerializerConfig::new(E::avro_schema().parsed());
    let mut state = SerializerState::from_writer(&mut *buf, &mut config);
    match serde::Serialize::serialize(event, state.serializer()) {
        Ok(()) => Ok(()),
        Err(source) => {
            buf.truncate(start);
            Err(EncodeError {
                event_type: E::EVENT_TYPE,
                source,
            })
        }
    }
}

/// Encodes event data as schemaless Avro.
///
/// ```
/// use openedx_events::{avro, openedx_event};
/// /// Example.
/// #[openedx_event("org.openedx.learning.example.encoded.v1")]
/// #[derive(Clone, Debug, PartialEq)]
/// pub struct Encoded { /// A count.
///     pub n: i64 }
/// let bytes = avro::encode(&Encoded { n: 1 }).unwrap();
/// assert_eq!(bytes, [2]);
/// assert_eq!(avro::decode::<Encoded>(&bytes).unwrap(), Encoded { n: 1 });
/// assert!(avro::decode::<Encoded>(&[2, 0]).is_err(), "a trailing byte");
/// ```
pub fn encode<E: OpenEdxEvent>(event: &E) -> Result<Vec<u8>, EncodeError> {
    let mut buf = Vec::new();
    encode_into(event, &mut buf)?;
    Ok(buf)
}

/// Decodes event data from schemaless Avro written with `E`'s schema.
///
/// The bytes must hold exactly one datum: truncated input and bytes left after the datum
/// are errors. Nothing a peer sends makes it panic, and what it allocates is bounded by
/// the input's length (block counts and lengths are checked against the bytes present).
pub fn decode<E: OpenEdxEvent>(bytes: &[u8]) -> Result<E, DecodeError> {
    let schema = E::avro_schema();
    let max_seq_size = schema.max_seq_size(bytes.len());
    let zero_size_items = max_seq_size > bytes.len();
    decode_datum(bytes, schema.parsed(), max_seq_size, zero_size_items, ReadMode::Exact)
}

/// Decodes event data written with another schema of the event, the writer's (e.g. one
/// fetched from a Schema Registry): record fields are matched by name, fields `E` lacks
/// are skipped, and optional fields the writer lacks are `None`. Same guarantees as
/// [`decode`].
///
/// ```
/// use openedx_events::{avro, openedx_event};
/// /// Example.
/// #[openedx_event("org.openedx.learning.example.resolved.v1")]
/// #[derive(Clone, Debug, PartialEq)]
/// pub struct Resolved {
///     /// A count.
///     pub n: i64,
///     /// A note, added later.
///     pub note: Option<String>,
/// }
/// let old: serde_avro_fast::Schema = r#"{"type": "record", "name": "CloudEvent", "fields": [
///     {"name": "legacy", "type": "string"}, {"name": "n", "type": "long"}]}"#.parse().unwrap();
/// let event: Resolved = avro::decode_with_writer_schema(&[2, b'x', 6], &old).unwrap();
/// assert_eq!(event, Resolved { n: 3, note: None });
/// ```
pub fn decode_with_writer_schema<E: OpenEdxEvent>(
    bytes: &[u8],
    writer: &serde_avro_fast::Schema,
) -> Result<E, DecodeError> {
    // The writer's schema is not ours: it may hold arrays of zero-byte values.
    let zero_size_items = writer_has_zero_size_items(writer);
    decode_datum(
        bytes,
        writer,
        bytes.len().max(super::schema::ZERO_SIZE_SEQ_LIMIT),
        zero_size_items,
        ReadMode::WriterSchema,
    )
}

/// Whether a schema that is not ours has arrays of values written in zero bytes;
/// remembered per schema (by fingerprint: one canonical form, one answer), since a consumer
/// decodes many messages with few writer schemas. Lookups share a read lock, so consumers
/// decoding at once do not queue behind each other; only a new schema takes the write lock,
/// and it is examined before the lock is taken.
fn writer_has_zero_size_items(writer: &serde_avro_fast::Schema) -> bool {
    static SEEN: RwLock<Option<HashMap<[u8; 8], bool>>> = RwLock::new(None);
    let fingerprint = *writer.rabin_fingerprint();
    if let Some(&found) = SEEN
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
        .and_then(|seen| seen.get(&fingerprint))
    {
        return found;
    }
    let found = super::schema::text_has_zero_size_items(writer.json());
    let mut seen = SEEN.write().unwrap_or_else(|e| e.into_inner());
    let seen = seen.get_or_insert_with(HashMap::new);
    if seen.len() >= 4096 {
        seen.clear();
    }
    seen.insert(fingerprint, found);
    found
}

/// Items (array elements and map entries, at every depth) one datum may hold when its
/// schema has arrays of zero-byte values, beyond one per byte of input. Each array is
/// bounded by `max_seq_size`, but nested arrays multiply those bounds: without a
/// bound per datum a few hundred forged bytes demand billions of iterations.
pub(crate) const ZERO_SIZE_ITEMS_PER_DATUM: usize = super::schema::ZERO_SIZE_SEQ_LIMIT;

/// Walks the datum once without building anything, counting its items, and refuses
/// it when they exceed `budget`: run before decoding a datum whose schema has arrays of
/// zero-byte values (for other schemas every item takes a byte, so the input's length
/// bounds the work already).
pub(crate) fn check_item_budget(
    bytes: &[u8],
    schema: &serde_avro_fast::Schema,
    max_seq_size: usize,
) -> Result<(), serde_avro_fast::de::DeError> {
    use std::cell::Cell;

    use serde::de::{DeserializeSeed, Deserializer, Error, MapAccess, SeqAccess, Visitor};

    let budget = ZERO_SIZE_ITEMS_PER_DATUM.saturating_add(bytes.len());
    #[derive(Clone, Copy)]
    struct Count<'a> {
        left: &'a Cell<usize>,
        budget: usize,
    }
    impl Count<'_> {
        fn tick<E: Error>(self) -> Result<(), E> {
            match self.left.get().checked_sub(1) {
                Some(left) => {
                    self.left.set(left);
                    Ok(())
                }
                None => Err(E::custom(format_args!(
                    "more than {} array items and map entries in one datum",
                    self.budget
                ))),
            }
        }
    }
    impl<'de> DeserializeSeed<'de> for Count<'_> {
        type Value = ();
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_any(self)
        }
    }
    impl<'de> Visitor<'de> for Count<'_> {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an Avro datum")
        }
        fn visit_bool<E: Error>(self, _: bool) -> Result<(), E> {
            Ok(())
        }
        fn visit_i64<E: Error>(self, _: i64) -> Result<(), E> {
            Ok(())
        }
        fn visit_i128<E: Error>(self, _: i128) -> Result<(), E> {
            Ok(())
        }
        fn visit_u64<E: Error>(self, _: u64) -> Result<(), E> {
            Ok(())
        }
        fn visit_u128<E: Error>(self, _: u128) -> Result<(), E> {
            Ok(())
        }
        fn visit_f64<E: Error>(self, _: f64) -> Result<(), E> {
            Ok(())
        }
        fn visit_str<E: Error>(self, _: &str) -> Result<(), E> {
            Ok(())
        }
        fn visit_bytes<E: Error>(self, _: &[u8]) -> Result<(), E> {
            Ok(())
        }
        fn visit_unit<E: Error>(self) -> Result<(), E> {
            Ok(())
        }
        fn visit_none<E: Error>(self) -> Result<(), E> {
            Ok(())
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_any(self)
        }
        fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_any(self)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            while seq.next_element_seed(self)?.is_some() {
                self.tick()?;
            }
            Ok(())
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            while map.next_key_seed(self)?.is_some() {
                map.next_value_seed(self)?;
                self.tick()?;
            }
            Ok(())
        }
    }

    let mut config = DeserializerConfig::new(schema);
    config.max_seq_size = max_seq_size;
    let mut state = DeserializerState::with_config(SliceRead::new(bytes), config);
    let left = Cell::new(budget);
    Count { left: &left, budget }.deserialize(state.deserializer())
}

fn decode_datum<E: OpenEdxEvent>(
    bytes: &[u8],
    schema: &serde_avro_fast::Schema,
    max_seq_size: usize,
    zero_size_items: bool,
    mode: ReadMode,
) -> Result<E, DecodeError> {
    if zero_size_items {
        check_item_budget(bytes, schema, max_seq_size).map_err(|source| DecodeError::Avro {
            event_type: E::EVENT_TYPE,
            source,
        })?;
    }
    let mut config = DeserializerConfig::new(schema);
    config.max_seq_size = max_seq_size;
    let mut state = DeserializerState::with_config(SliceRead::new(bytes), config);
    let event = deserialize_record::<E, _>(state.deserializer(), mode).map_err(|source| DecodeError::Avro {
        event_type: E::EVENT_TYPE,
        source,
    })?;
    let mut rest = state.into_reader();
    // Reading from a slice cannot fail.
    let trailing = rest.fill_buf().map_or(0, |r| r.len());
    if trailing != 0 {
        return Err(DecodeError::TrailingBytes {
            event_type: E::EVENT_TYPE,
            trailing,
        });
    }
    Ok(event)
}
