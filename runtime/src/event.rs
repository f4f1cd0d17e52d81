//! The event trait and the registry of every event type in the binary.

use std::any::Any;
use std::fmt;
use std::sync::Arc;

use futures::future::BoxFuture;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::avro::{DecodeError, EncodeError, EventSchema};
use crate::data::{EventDataInfo, FieldInfo};
use crate::event_key::{EventKey, KeyPathError};
use crate::metadata::EventMetadata;
use crate::signal::{BoxError, Envelope, ReceiverId, Response, SendError, SendMode, Signal, SignalEvent};

/// An Open edX event: implemented by `#[openedx_event("...")]`.
///
/// ```
/// use openedx_events::{openedx_event, OpenEdxEvent};
/// /// Sent when a widget is made.
/// #[openedx_event("org.openedx.learning.widget.created.v1", minor_version = 2)]
/// #[derive(Clone, Debug)]
/// pub struct WidgetCreated {
///     /// The widget's name.
///     pub name: String,
/// }
/// assert_eq!(WidgetCreated::EVENT_TYPE, "org.openedx.learning.widget.created.v1");
/// assert_eq!(WidgetCreated::MINOR_VERSION, 2);
/// assert!(openedx_events::registry::find("org.openedx.learning.widget.created.v1").is_some());
/// ```
pub trait OpenEdxEvent: EventDataInfo + Serialize + DeserializeOwned + fmt::Debug + Send + Sync + 'static {
    /// The event type string.
    const EVENT_TYPE: &'static str;
    /// The minor version of the definition.
    const MINOR_VERSION: u32;
    /// The first paragraph of the struct's doc comment.
    const DESCRIPTION: &'static str;

    /// The signal of this event type.
    fn signal() -> &'static Signal<Self>;

    /// The Avro schema, computed on first use.
    fn avro_schema() -> &'static EventSchema;
}

impl<E: OpenEdxEvent> SignalEvent for E {
    const TYPE: &'static str = E::EVENT_TYPE;
    const MINOR: u32 = E::MINOR_VERSION;
}

/// Registry entry of one event type, submitted through `inventory` by the attribute.
pub struct EventDescriptor {
    /// The event type string.
    pub event_type: &'static str,
    /// The Rust type's path, for messages.
    pub rust_type: &'static str,
    ops: fn() -> &'static dyn EventOps,
}

inventory::collect!(EventDescriptor);

impl EventDescriptor {
    #[doc(hidden)]
    pub const fn new<E: OpenEdxEvent>(rust_type: &'static str) -> Self {
        Self {
            event_type: E::EVENT_TYPE,
            rust_type,
            ops: ops_of::<E>,
        }
    }

    /// The type-erased operations of this event type.
    pub fn ops(&self) -> &'static dyn EventOps {
        (self.ops)()
    }

    /// The minor version.
    pub fn minor_version(&self) -> u32 {
        self.ops().minor_version()
    }

    /// The one-line description.
    pub fn description(&self) -> &'static str {
        self.ops().description()
    }
}

impl fmt::Debug for EventDescriptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventDescriptor")
            .field("event_type", &self.event_type)
            .field("rust_type", &self.rust_type)
            .finish()
    }
}

fn ops_of<E: OpenEdxEvent>() -> &'static dyn EventOps {
    // A zero-sized value: leaking it allocates nothing.
    Box::leak(Box::new(Ops::<E>(std::marker::PhantomData)))
}

/// A key accessor that works on type-erased event data.
pub type ErasedKeyAccessor = Arc<dyn Fn(&dyn Any) -> Option<EventKey> + Send + Sync>;

/// A resolved `event_key_field` for a type-erased event.
#[derive(Clone)]
pub struct ErasedKey {
    /// Reads the key from event data (of the right type; `None` otherwise).
    pub accessor: ErasedKeyAccessor,
    /// Name of the key field.
    pub field_name: &'static str,
    /// Avro primitive of the key.
    pub avro_type: &'static str,
}

impl fmt::Debug for ErasedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ErasedKey")
            .field("field_name", &self.field_name)
            .field("avro_type", &self.avro_type)
            .finish_non_exhaustive()
    }
}

/// Event data whose type is known only at run time (what producers receive).
pub trait AnyEvent: Any + Send + Sync + fmt::Debug {
    /// The data as `Any`, to downcast to the event struct.
    fn as_any(&self) -> &dyn Any;
    /// The operations of its event type.
    fn ops(&self) -> &'static dyn EventOps;
    /// Appends its schemaless Avro encoding to `buf`.
    fn encode_avro(&self, buf: &mut Vec<u8>) -> Result<(), EncodeError>;
    /// The data as JSON (the Avro datum form: times as ISO strings, keys as strings).
    fn to_json(&self) -> serde_json::Value;
}

impl<E: OpenEdxEvent> AnyEvent for E {
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn ops(&self) -> &'static dyn EventOps {
        ops_of::<E>()
    }
    fn encode_avro(&self, buf: &mut Vec<u8>) -> Result<(), EncodeError> {
        crate::avro::encode_into(self, buf)
    }
    fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }
}

/// Error turning JSON into event data.
#[derive(Debug, thiserror::Error)]
#[error("invalid data for {event_type}: {message}")]
pub struct JsonDataError {
    /// The event type.
    pub event_type: &'static str,
    /// What is wrong, with the path of the offending value.
    pub message: String,
}

/// Reads event data from a JSON value (the datum form), naming the path of a bad value.
///
/// ```
/// use openedx_events::catalog::learning::CourseEnrollmentCreated;
/// use openedx_events::event::from_json_value;
/// let e = from_json_value::<CourseEnrollmentCreated>(&serde_json::json!({"enrollment": 1})).unwrap_err();
/// assert!(e.to_string().starts_with("invalid data for org.openedx.learning.course.enrollment.created.v1: at enrollment"), "{e}");
/// ```
pub fn from_json_value<E: OpenEdxEvent>(json: &serde_json::Value) -> Result<E, JsonDataError> {
    serde_path_to_error::deserialize(json).map_err(|e| JsonDataError {
        event_type: E::EVENT_TYPE,
        message: if e.path().to_string() == "." {
            e.inner().to_string()
        } else {
            format!("at {}: {}", e.path(), e.inner())
        },
    })
}

/// Error reading event data from schemaless Avro, naming the value where reading stopped.
#[derive(Debug, thiserror::Error)]
#[error("cannot decode {event_type} from Avro{}: {message}", path.as_deref().map(|p| format!(" at {p}")).unwrap_or_default())]
pub struct TracedDecodeError {
    /// The event type.
    pub event_type: &'static str,
    /// The path of the value being read (`course.course_key`, `items[2]`), when inside the data.
    pub path: Option<String>,
    /// What went wrong.
    pub message: String,
}

/// A receiver of any event type: it sees the metadata, the type-erased data, and
/// whether the event came from the bus. See [`EventOps::connect_erased`].
pub type ErasedReceiver = Arc<dyn Fn(&EventMetadata, &dyn AnyEvent, bool) -> Result<(), BoxError> + Send + Sync>;

/// A receiver of any event type that gets its own reference to the data, to keep or
/// hand on (the event bus's producing handler puts it in each
/// [`ProducerRecord`](crate::produce::ProducerRecord)); it sees the metadata and whether
/// the event came from the bus. See [`EventOps::connect_shared`].
pub type SharedReceiver = Arc<dyn Fn(&EventMetadata, Arc<dyn AnyEvent>, bool) + Send + Sync>;

/// The operations of one event type, usable when the type is known only by its
/// type string (consumers, configuration, tools).
pub trait EventOps: Send + Sync {
    /// The event type string.
    fn event_type(&self) -> &'static str;
    /// The minor version.
    fn minor_version(&self) -> u32;
    /// The one-line description.
    fn description(&self) -> &'static str;
    /// The top-level fields.
    fn fields(&self) -> &'static [FieldInfo];
    /// The Avro schema.
    fn schema(&self) -> &'static EventSchema;
    /// Resolves a period-delimited `event_key_field` path against the data.
    fn resolve_key(&self, path: &str) -> Result<ErasedKey, KeyPathError>;
    /// Decodes schemaless Avro into event data.
    fn decode_avro(&self, bytes: &[u8]) -> Result<Arc<dyn AnyEvent>, DecodeError>;
    /// Decodes schemaless Avro written with another schema (the writer's, e.g. fetched
    /// from a schema registry) into this event's data: record fields are matched by
    /// name, fields unknown here are skipped, optional fields the writer lacks are `None`.
    fn decode_avro_with_schema(
        &self,
        bytes: &[u8],
        writer: &serde_avro_fast::Schema,
    ) -> Result<Arc<dyn AnyEvent>, DecodeError>;
    /// Reads event data from JSON in the datum form.
    #[allow(clippy::wrong_self_convention)] // `self` is the event type; the result is its data
    fn from_json(&self, json: &serde_json::Value) -> Result<Arc<dyn AnyEvent>, JsonDataError>;
    /// Sends decoded data through the signal with received metadata (from the bus).
    fn send_from_bus(
        &self,
        data: Arc<dyn AnyEvent>,
        metadata: EventMetadata,
        mode: SendMode,
    ) -> Result<Vec<Response>, SendError>;
    /// Async counterpart of [`EventOps::send_from_bus`].
    fn send_from_bus_async(
        &self,
        data: Arc<dyn AnyEvent>,
        metadata: EventMetadata,
        mode: SendMode,
    ) -> BoxFuture<'static, Result<Vec<Response>, SendError>>;
    /// Like [`EventOps::decode_avro`], naming the path of the value where decoding failed
    /// (slower: for tools that explain a bad message, not for consumers).
    fn decode_avro_traced(&self, bytes: &[u8]) -> Result<Arc<dyn AnyEvent>, TracedDecodeError>;
    /// Connects a receiver that sees this event type's events type-erased (tools that
    /// handle every event type alike, e.g. printing what a consumer receives).
    fn connect_erased(&self, receiver: ErasedReceiver) -> ReceiverId;
    /// Like [`EventOps::connect_erased`], handing the receiver its own `Arc` of the data
    /// (what the event bus connects to each event type it produces).
    ///
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// use openedx_events::event::AnyEvent;
    /// use openedx_events::{openedx_event, registry, OpenEdxEvent};
    ///
    /// /// Sent in this example.
    /// #[openedx_event("org.openedx.learning.shared.example.v1")]
    /// #[derive(Clone, Debug)]
    /// pub struct SharedExample {
    ///     /// A number.
    ///     pub n: i64,
    /// }
    ///
    /// let ops = registry::find(SharedExample::EVENT_TYPE).unwrap().ops();
    /// let kept: Arc<Mutex<Vec<Arc<dyn AnyEvent>>>> = Arc::default();
    /// let sink = kept.clone();
    /// let id = ops.connect_shared(Arc::new(move |_metadata, data, _from_bus| sink.lock().unwrap().push(data)));
    /// SharedExample::signal().send_event(SharedExample { n: 7 });
    /// ops.disconnect(id);
    /// let kept = kept.lock().unwrap();
    /// assert_eq!(kept[0].as_any().downcast_ref::<SharedExample>().unwrap().n, 7);
    /// ```
    fn connect_shared(&self, receiver: SharedReceiver) -> ReceiverId;
    /// Disconnects a receiver from this event's signal.
    fn disconnect(&self, id: ReceiverId) -> bool;
}

struct Ops<E>(std::marker::PhantomData<fn() -> E>);

/// Splits a period-delimited key path, refusing one that is not a list of field names
/// (the rules crate's syntax, which `producer_config!` applies too).
pub fn split_key_path(path: &str) -> Result<Vec<&str>, KeyPathError> {
    openedx_events_rules::key_path::check_syntax(path)
        .map_err(|e| KeyPathError::from(openedx_events_rules::key_path::Problem::Syntax(e)))?;
    Ok(path.split('.').collect())
}

impl<E: OpenEdxEvent> EventOps for Ops<E> {
    fn event_type(&self) -> &'static str {
        E::EVENT_TYPE
    }
    fn minor_version(&self) -> u32 {
        E::MINOR_VERSION
    }
    fn description(&self) -> &'static str {
        E::DESCRIPTION
    }
    fn fields(&self) -> &'static [FieldInfo] {
        E::FIELDS
    }
    fn schema(&self) -> &'static EventSchema {
        E::avro_schema()
    }
    fn resolve_key(&self, path: &str) -> Result<ErasedKey, KeyPathError> {
        // The rules crate's check, as `producer_config!` runs it at build time: the same
        // mistake gets the same sentence (and the same suggestion).
        openedx_events_rules::key_path::resolve(E::RECORD, path)?;
        let parts = split_key_path(path)?;
        let resolved = E::resolve_key_path(&parts)?;
        let typed = resolved.accessor;
        Ok(ErasedKey {
            accessor: Arc::new(move |any: &dyn Any| any.downcast_ref::<E>().and_then(|e| typed(e))),
            field_name: resolved.field_name,
            avro_type: resolved.avro_type,
        })
    }
    fn decode_avro(&self, bytes: &[u8]) -> Result<Arc<dyn AnyEvent>, DecodeError> {
        Ok(Arc::new(crate::avro::decode::<E>(bytes)?))
    }
    fn decode_avro_with_schema(
        &self,
        bytes: &[u8],
        writer: &serde_avro_fast::Schema,
    ) -> Result<Arc<dyn AnyEvent>, DecodeError> {
        Ok(Arc::new(crate::avro::decode_with_writer_schema::<E>(bytes, writer)?))
    }
    fn from_json(&self, json: &serde_json::Value) -> Result<Arc<dyn AnyEvent>, JsonDataError> {
        from_json_value::<E>(json).map(|e| Arc::new(e) as Arc<dyn AnyEvent>)
    }
    fn send_from_bus(
        &self,
        data: Arc<dyn AnyEvent>,
        metadata: EventMetadata,
        mode: SendMode,
    ) -> Result<Vec<Response>, SendError> {
        let data = downcast_arc::<E>(data);
        let env = Envelope {
            data,
            metadata,
            from_event_bus: true,
        };
        check_type::<E>(&env.metadata)?;
        E::signal().dispatch(&env, mode)
    }
    fn send_from_bus_async(
        &self,
        data: Arc<dyn AnyEvent>,
        metadata: EventMetadata,
        mode: SendMode,
    ) -> BoxFuture<'static, Result<Vec<Response>, SendError>> {
        let data = downcast_arc::<E>(data);
        Box::pin(async move {
            check_type::<E>(&metadata)?;
            let env = Envelope {
                data,
                metadata,
                from_event_bus: true,
            };
            E::signal().dispatch_async(env, mode).await
        })
    }
    fn decode_avro_traced(&self, bytes: &[u8]) -> Result<Arc<dyn AnyEvent>, TracedDecodeError> {
        use std::io::BufRead;
        let schema = E::avro_schema();
        let max_seq_size = schema.max_seq_size(bytes.len());
        if max_seq_size > bytes.len() {
            crate::avro::check_item_budget(bytes, schema.parsed(), max_seq_size).map_err(|e| TracedDecodeError {
                event_type: E::EVENT_TYPE,
                path: None,
                message: e.to_string(),
            })?;
        }
        let mut config = serde_avro_fast::de::DeserializerConfig::new(schema.parsed());
        config.max_seq_size = max_seq_size;
        let mut state = serde_avro_fast::de::DeserializerState::with_config(
            serde_avro_fast::de::read::SliceRead::new(bytes),
            config,
        );
        let event: E = serde_path_to_error::deserialize(state.deserializer()).map_err(|e| {
            let path = e.path().to_string();
            TracedDecodeError {
                event_type: E::EVENT_TYPE,
                path: (path != ".").then_some(path),
                message: e.into_inner().to_string(),
            }
        })?;
        let trailing = state.into_reader().fill_buf().map_or(0, |r| r.len());
        if trailing != 0 {
            return Err(TracedDecodeError {
                event_type: E::EVENT_TYPE,
                path: None,
                message: format!("{trailing} bytes left after the datum"),
            });
        }
        Ok(Arc::new(event))
    }
    fn connect_erased(&self, receiver: ErasedReceiver) -> ReceiverId {
        E::signal().connect(move |env: &Envelope<E>| receiver(&env.metadata, &*env.data, env.from_event_bus))
    }
    fn connect_shared(&self, receiver: SharedReceiver) -> ReceiverId {
        E::signal().connect(move |env: &Envelope<E>| receiver(&env.metadata, env.data.clone(), env.from_event_bus))
    }
    fn disconnect(&self, id: ReceiverId) -> bool {
        E::signal().disconnect(id)
    }
}

fn check_type<E: OpenEdxEvent>(metadata: &EventMetadata) -> Result<(), SendError> {
    if metadata.event_type != E::EVENT_TYPE {
        return Err(SendError::WrongEventType {
            expected: E::EVENT_TYPE,
            found: metadata.event_type,
        });
    }
    Ok(())
}

fn downcast_arc<E: OpenEdxEvent>(data: Arc<dyn AnyEvent>) -> Arc<E> {
    let any: Arc<dyn Any + Send + Sync> = data;
    any.downcast::<E>().unwrap_or_else(|_| {
        panic!(
            "event data passed to the operations of another event type ({})",
            E::EVENT_TYPE
        )
    })
}

/// Two event structs declare the same type string.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("event type {event_type} is declared twice in this binary: by {first} and by {second}")]
pub struct DuplicateEventType {
    /// The type string.
    pub event_type: &'static str,
    /// One declaring struct.
    pub first: &'static str,
    /// The other.
    pub second: &'static str,
}

/// Record names given to two Rust types, one per line (see
/// [`registry::check_record_names`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
pub struct RecordNameClashes(pub Vec<crate::data::RecordNameClash>);

pub mod registry;
