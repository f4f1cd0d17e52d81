//! Avro schemas of events (as openedx-events generates them) and the schemaless
//! Avro codec of event data.

use std::sync::OnceLock;

use serde_json::{json, Value};

use crate::data::SchemaContext;
use crate::event::OpenEdxEvent;

/// The `doc` of every top-level event schema.
pub const CLOUD_EVENT_DOC: &str = "Avro Event Format for CloudEvents created with openedx_events/schema";

/// The Avro schema of one event type, computed once per type.
pub struct EventSchema {
    json: Value,
    text: String,
    parsed: serde_avro_fast::Schema,
}

impl std::fmt::Debug for EventSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventSchema")
            .field("json", &self.json)
            .finish_non_exhaustive()
    }
}

impl EventSchema {
    /// Generates the schema of `E` by the rules of openedx-events.
    pub fn generate<E: OpenEdxEvent>() -> Self {
        let mut cx = SchemaContext::new();
        let json = json!({
            "name": "CloudEvent",
            "type": "record",
            "doc": CLOUD_EVENT_DOC,
            "fields": E::avro_fields(&mut cx),
            "namespace": E::EVENT_TYPE,
        });
        let text = json.to_string();
        let parsed = text
            .parse()
            .unwrap_or_else(|e| panic!("generated Avro schema of {} does not parse: {e}", E::EVENT_TYPE));
        Self { json, text, parsed }
    }

    /// The schema as a JSON value (field order as generated).
    pub fn json(&self) -> &Value {
        &self.json
    }

    /// The schema as compact JSON text, in generated key order.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The parsed schema used by the codec.
    pub fn parsed(&self) -> &serde_avro_fast::Schema {
        &self.parsed
    }
}

/// Error encoding event data.
#[derive(Debug, thiserror::Error)]
#[error("cannot encode {event_type} as Avro: {source}")]
pub struct EncodeError {
    event_type: &'static str,
    #[source]
    source: serde_avro_fast::ser::SerError,
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
}

/// Encodes event data as schemaless Avro, appending to `buf`.
pub fn encode_into<E: OpenEdxEvent>(event: &E, buf: &mut Vec<u8>) -> Result<(), EncodeError> {
    let schema = E::avro_schema().parsed();
    let mut config = serde_avro_fast::ser::SerializerConfig::new(schema);
    let out = std::mem::take(buf);
    match serde_avro_fast::to_datum(event, out, &mut config) {
        Ok(out) => {
            *buf = out;
            Ok(())
        }
        Err(source) => Err(EncodeError {
            event_type: E::EVENT_TYPE,
            source,
        }),
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
/// ```
pub fn encode<E: OpenEdxEvent>(event: &E) -> Result<Vec<u8>, EncodeError> {
    let mut buf = Vec::new();
    encode_into(event, &mut buf)?;
    Ok(buf)
}

/// Decodes event data from schemaless Avro written with `E`'s schema.
pub fn decode<E: OpenEdxEvent>(bytes: &[u8]) -> Result<E, DecodeError> {
    serde_avro_fast::from_datum_slice(bytes, E::avro_schema().parsed()).map_err(|source| DecodeError::Avro {
        event_type: E::EVENT_TYPE,
        source,
    })
}

/// Lazily computed schema storage; the event attribute puts one in each event type.
#[doc(hidden)]
pub struct SchemaCell(OnceLock<EventSchema>);

impl SchemaCell {
    #[doc(hidden)]
    pub const fn new() -> Self {
        Self(OnceLock::new())
    }

    #[doc(hidden)]
    pub fn get<E: OpenEdxEvent>(&'static self) -> &'static EventSchema {
        self.0.get_or_init(EventSchema::generate::<E>)
    }
}

impl Default for SchemaCell {
    fn default() -> Self {
        Self::new()
    }
}
