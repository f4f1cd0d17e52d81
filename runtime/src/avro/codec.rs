//! Event data as schemaless Avro binary (no container, no header), straight between the
//! typed Rust event and the bytes: no intermediate Avro value per event.

use std::io::BufRead;

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
    decode_datum(
        bytes,
        schema.parsed(),
        schema.max_seq_size(bytes.len()),
        ReadMode::Exact,
    )
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
    decode_datum(
        bytes,
        writer,
        bytes.len().max(super::schema::ZERO_SIZE_SEQ_LIMIT),
        ReadMode::WriterSchema,
    )
}

fn decode_datum<E: OpenEdxEvent>(
    bytes: &[u8],
    schema: &serde_avro_fast::Schema,
    max_seq_size: usize,
    mode: ReadMode,
) -> Result<E, DecodeError> {
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
