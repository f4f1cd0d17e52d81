//! The registrar: a background thread that registers the schemas of each route with the
//! Schema Registry (retrying with backoff what the registry refuses for now), settles the
//! route, then releases the events parked behind it, in order.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::routes::{route_schemas, Parked, RouteIds, RouteState, TopicGate};
use super::send::{Counting, Inner, QueueFullPolicy};
use crate::kafka::registry::{RegistryError, SchemaRegistryClient};
use crate::produce::ProduceError;
use crate::retry::Backoff;

/// How many events a release takes out of a topic's queue at once: the lock is held to
/// take them, never to encode or send them.
pub(super) const RELEASE_CHUNK: usize = 256;

/// Registers schemas in the background and releases parked events.
pub(super) fn registrar_thread(
    inner: std::sync::Weak<Inner>,
    registry: SchemaRegistryClient,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<Arc<RouteState>>,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the schema registrar runtime");
            return;
        }
    };
    let registry = Arc::new(registry);
    runtime.block_on(async move {
        while let Some(route) = rx.recv().await {
            let inner = inner.clone();
            let registry = registry.clone();
            tokio::spawn(async move { register_route(inner, registry, route).await });
        }
    });
}

pub(super) async fn register_route(
    inner: std::sync::Weak<Inner>,
    registry: Arc<SchemaRegistryClient>,
    route: Arc<RouteState>,
) {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
    let outcome = loop {
        match register_once(&registry, &route).await {
            Ok(ids) => break Ok(ids),
            Err(Attempt::Permanent(e)) => break Err(e),
            Err(Attempt::Retry(e)) => {
                let delay = backoff.next_delay();
                tracing::warn!(
                    event_type = route.event_type,
                    topic = &*route.topic,
                    error = %e,
                    retry_in_ms = delay.as_millis() as u64,
                    "schema registration failed; retrying"
                );
                match inner.upgrade() {
                    Some(i) if !i.closed.load(Ordering::Acquire) || i.counters.parked.load(Ordering::Acquire) > 0 => {}
                    _ => return,
                }
                tokio::time::sleep(delay).await;
            }
        }
    };
    // Settle the route under the topic's lock, then release the topic's events in order.
    {
        let _parked = route.gate.parked.lock().unwrap_or_else(|e| e.into_inner());
        match outcome {
            Ok(ids) => {
                tracing::info!(
                    event_type = route.event_type,
                    topic = &*route.topic,
                    value_schema_id = ids.value_id,
                    key_schema_id = ids.key_id,
                    "schemas registered"
                );
                let _ = route.ready.set(ids);
            }
            Err(error) => {
                tracing::error!(event_type = route.event_type, topic = &*route.topic, error = %error, "schema registration failed");
                route.set_failure(error);
            }
        }
    }
    release_gate(inner, &route).await;
}

/// Releases the settled events at the front of a route's topic queue, in order: takes up
/// to [`RELEASE_CHUNK`] of them under the topic's lock, then encodes and sends them
/// without it (producers of the topic queue behind meanwhile, and are never blocked for
/// longer than a chunk is taken). When librdkafka's queue is full the rest of the chunk
/// goes back to the front and it tries again a little later. One release runs per topic
/// at a time; a route settled while one runs is released by it.
pub(super) async fn release_gate(inner: std::sync::Weak<Inner>, route: &RouteState) {
    let gate = &route.gate;
    {
        let _parked = gate.parked.lock().unwrap_or_else(|e| e.into_inner());
        if gate.releasing.swap(true, Ordering::AcqRel) {
            // The running release sees this route settled when it next looks.
            return;
        }
    }
    let mut backoff = Backoff::new(Duration::from_millis(1), Duration::from_millis(100));
    let mut released = 0usize;
    loop {
        let Some(inner) = inner.upgrade() else {
            gate.releasing.store(false, Ordering::Release);
            return;
        };
        let chunk = {
            let mut parked = gate.parked.lock().unwrap_or_else(|e| e.into_inner());
            let settled = parked
                .iter()
                .take(RELEASE_CHUNK)
                .take_while(|(_, r, _)| r.settled())
                .count();
            if settled == 0 {
                gate.releasing.store(false, Ordering::Release);
                tracing::debug!(
                    topic = &*route.topic,
                    released,
                    still_parked = parked.len(),
                    "parked events released"
                );
                return;
            }
            parked.drain(..settled).collect::<Vec<Parked>>()
        };
        let sent = chunk
            .iter()
            .take_while(|entry| release_one(&inner, gate, entry))
            .count();
        released += sent;
        let queue_full = sent < chunk.len();
        if queue_full {
            // No room in librdkafka's queue: the rest goes back to the front, in order.
            let mut parked = gate.parked.lock().unwrap_or_else(|e| e.into_inner());
            for entry in chunk.into_iter().skip(sent).rev() {
                parked.push_front(entry);
            }
        }
        drop(inner);
        if queue_full {
            tracing::debug!(
                topic = &*route.topic,
                released,
                "librdkafka's queue is full; releasing later"
            );
            tokio::time::sleep(backoff.next_delay()).await;
        } else {
            backoff.reset();
        }
    }
}

/// Sends (or fails) one parked event whose route is settled; false (and nothing done)
/// when librdkafka's queue is full.
pub(super) fn release_one(inner: &Inner, gate: &TopicGate, entry: &Parked) -> bool {
    let (record, route, number) = entry;
    let failure = if let Some(ids) = route.ready.get() {
        // Counted as accepted when parked: it stays parked or is reported failed.
        match inner.send(record, ids, QueueFullPolicy::Reject, *number, Counting::Released) {
            Ok(()) => None,
            Err(e) => {
                if matches!(e, ProduceError::BufferFull { .. }) {
                    return false;
                }
                Some(e.to_string())
            }
        }
    } else {
        Some(
            route
                .failure()
                .map(|e| e.to_string())
                .unwrap_or_else(|| "schema registration failed".to_owned()),
        )
    };
    gate.len.fetch_sub(1, Ordering::AcqRel);
    inner.counters.parked.fetch_sub(1, Ordering::AcqRel);
    // Reported after the counts, so that whoever hears of it sees them up to date.
    if let Some(error) = failure {
        inner.fail_parked(record, &error, *number);
    }
    true
}

pub(super) enum Attempt {
    Retry(String),
    Permanent(String),
}

pub(super) async fn register_once(registry: &SchemaRegistryClient, route: &RouteState) -> Result<RouteIds, Attempt> {
    let schemas = route_schemas(route).map_err(Attempt::Permanent)?;
    let classify = |e: RegistryError| match &e {
        RegistryError::Status { status, .. } if (400..500).contains(status) && *status != 408 && *status != 429 => {
            Attempt::Permanent(e.to_string())
        }
        RegistryError::NotConfigured | RegistryError::BadSchema { .. } => Attempt::Permanent(e.to_string()),
        _ => Attempt::Retry(e.to_string()),
    };
    let key_id = match &schemas.key {
        Some((subject, text)) => Some(registry.register(subject, text).await.map_err(classify)?),
        None => None,
    };
    let value_id = registry
        .register(&schemas.value_subject, &schemas.value_schema)
        .await
        .map_err(classify)?;
    Ok(RouteIds { value_id, key_id })
}
