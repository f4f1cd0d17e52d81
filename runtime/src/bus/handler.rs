//! The generic handler: one per produced event type, connected to its signal at start-up.
//! On each send it reads the key of each route (the typed extractor `producer_config!`
//! generated, or the path resolved at start-up) and hands one [`ProducerRecord`] per
//! enabled topic to [`Producer::produce`]: from there the event's bytes are the backend's
//! (`redis/mod.rs` writes them for Redis, `kafka/producer/send.rs` for Kafka).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use crate::event::{AnyEvent, ErasedKey, EventOps};
use crate::metadata::EventMetadata;
use crate::produce::{KeyFieldInfo, Producer, ProducerRecord};
use crate::signal::ReceiverId;

/// One route as the handler uses it.
#[derive(Debug, Clone)]
pub(super) struct HandlerRoute {
    pub(super) topic: Arc<str>,
    pub(super) key: Option<ErasedKey>,
}

/// Connects the generic handler of one event type to its signal.
pub(super) fn connect_handler(
    ops: &'static dyn EventOps,
    routes: Arc<[HandlerRoute]>,
    producer: Arc<dyn Producer>,
) -> ReceiverId {
    let event_type = ops.event_type();
    ops.connect_shared(Arc::new(move |metadata, data, from_event_bus| {
        handle(event_type, metadata, data, from_event_bus, &routes, &*producer)
    }))
}

fn handle(
    event_type: &'static str,
    metadata: &EventMetadata,
    data: Arc<dyn AnyEvent>,
    from_event_bus: bool,
    routes: &[HandlerRoute],
    producer: &dyn Producer,
) {
    if from_event_bus {
        // Consumed from the bus: producing it again would loop.
        return;
    }
    if let Err(problem) = crate::time::check_python(&metadata.time) {
        // Metadata built by hand (`Signal::dispatch`): a Python consumer could not read
        // its `time`, so it is not written anywhere.
        tracing::error!(
            event_type,
            event_id = %metadata.id,
            error = %problem,
            "event not produced: its metadata time cannot be written"
        );
        return;
    }
    for route in routes {
        let key = route.key.as_ref().and_then(|k| (k.accessor)(data.as_any()));
        let record = ProducerRecord {
            topic: route.topic.clone(),
            key,
            key_field: route.key.as_ref().map(|k| KeyFieldInfo {
                name: k.field_name,
                avro_type: k.avro_type,
            }),
            metadata: metadata.clone(),
            data: data.clone(),
        };
        let result = catch_unwind(AssertUnwindSafe(|| producer.produce(record)));
        let error = match result {
            Ok(Ok(())) => continue,
            Ok(Err(e)) => e.to_string(),
            Err(_) => "the producer panicked".to_owned(),
        };
        // Never log the event data: it can hold PII.
        tracing::error!(
            event_type,
            topic = &*route.topic,
            event_id = %metadata.id,
            producer = producer.name(),
            error,
            "failed to produce event"
        );
    }
}
