//! Producers: where the generic handler hands each event to be produced.
//!
//! [`Producer`] is the trait the backends implement: the embedded in-memory bus
//! ([`MemoryProducer`](crate::memory::MemoryProducer), the default), Redis Streams and Kafka.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

use crate::event::AnyEvent;
use crate::event_key::EventKey;
use crate::metadata::EventMetadata;

/// The key field of a produced event, as the Kafka key schema needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyFieldInfo {
    /// Name of the last field of `event_key_field`.
    pub name: &'static str,
    /// Its Avro primitive (`string`, `long`...).
    pub avro_type: &'static str,
}

/// One enabled (event type, topic) route, as the event bus announces it at start-up.
#[derive(Debug, Clone)]
pub struct RouteInfo {
    /// The event type.
    pub event_type: &'static str,
    /// The full topic (prefix applied).
    pub topic: Arc<str>,
    /// The key field, when `event_key_field` is configured.
    pub key_field: Option<KeyFieldInfo>,
}

/// One event to produce to one topic.
#[derive(Clone)]
pub struct ProducerRecord {
    /// The full topic (prefix applied).
    pub topic: Arc<str>,
    /// The key read from `event_key_field`; `None` when none is configured or the value is absent.
    pub key: Option<EventKey>,
    /// The key field, when `event_key_field` is configured.
    pub key_field: Option<KeyFieldInfo>,
    /// The event metadata.
    pub metadata: EventMetadata,
    /// The event data.
    pub data: Arc<dyn AnyEvent>,
}

impl fmt::Debug for ProducerRecord {
    // Never prints the data: it can hold PII.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProducerRecord")
            .field("topic", &&*self.topic)
            .field("event_type", &self.metadata.event_type)
            .field("event_id", &self.metadata.id)
            .finish_non_exhaustive()
    }
}

/// Why an event was not accepted or not delivered.
#[derive(Debug, thiserror::Error)]
pub enum ProduceError {
    /// The producer's buffer stayed full for longer than its configured wait.
    #[error("producer buffer full for {waited:?}")]
    BufferFull {
        /// How long it waited.
        waited: Duration,
    },
    /// The producer is shut down.
    #[error("producer is shut down")]
    Closed,
    /// The event could not be encoded.
    #[error(transparent)]
    Encode(#[from] crate::avro::EncodeError),
    /// Flush or shutdown did not finish in time; carries how many events are still pending.
    #[error("{pending} events still pending after {waited:?}")]
    Timeout {
        /// Events not yet delivered nor failed.
        pending: usize,
        /// The time allowed.
        waited: Duration,
    },
    /// Events were reported failed by the backend during a flush.
    #[error("{failed} events failed to be delivered")]
    Failed {
        /// How many.
        failed: u64,
    },
    /// An error of the backend.
    #[error("{backend}: {message}")]
    Backend {
        /// The backend (`redis`, `kafka`).
        backend: &'static str,
        /// What it said.
        message: String,
    },
}

/// A destination for produced events.
///
/// `produce` must not wait on the network: it encodes or enqueues and returns; the
/// backend delivers in the background. `flush` and `shutdown` return only once
/// every accepted event is delivered or reported failed.
pub trait Producer: Send + Sync + 'static {
    /// The backend's name, for logs (`memory`, `redis`, `kafka`, `none`).
    fn name(&self) -> &'static str;

    /// Called by the event bus once at start-up with its enabled routes, before any
    /// event; must not block. A backend may prepare in the background (the Kafka
    /// producer registers its schemas). The default does nothing.
    fn prepare(&self, routes: &[RouteInfo]) {
        let _ = routes;
    }

    /// Accepts one event for delivery.
    fn produce(&self, record: ProducerRecord) -> Result<(), ProduceError>;

    /// Waits until every event accepted so far is delivered or reported failed.
    fn flush(&self, timeout: Duration) -> BoxFuture<'_, Result<(), ProduceError>>;

    /// Flushes, then stops accepting events and releases the backend.
    fn shutdown(&self, timeout: Duration) -> BoxFuture<'_, Result<(), ProduceError>>;

    /// The producer as `Any`, to reach a backend's own API (e.g. the memory bus's).
    fn as_any(&self) -> &dyn std::any::Any;
}

/// A producer that drops every event (`EVENT_BUS_PRODUCER=none`).
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProducer;

impl Producer for NoProducer {
    fn name(&self) -> &'static str {
        "none"
    }
    fn produce(&self, _: ProducerRecord) -> Result<(), ProduceError> {
        Ok(())
    }
    fn flush(&self, _: Duration) -> BoxFuture<'_, Result<(), ProduceError>> {
        Box::pin(async { Ok(()) })
    }
    fn shutdown(&self, _: Duration) -> BoxFuture<'_, Result<(), ProduceError>> {
        Box::pin(async { Ok(()) })
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}
