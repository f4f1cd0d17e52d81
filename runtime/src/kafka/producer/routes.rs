//! Routes: one per (topic, event type, key field), with its schema ids once registered or
//! its registration failure, and the gate of its topic where events wait, in order, for
//! their schemas; the schema texts a route registers.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::kafka::registry;
use crate::produce::{KeyFieldInfo, ProducerRecord};

pub(super) type RouteKey = (Arc<str>, &'static str, Option<(&'static str, &'static str)>);

/// Schema ids of one (topic, event type, key field) route.
pub(super) struct RouteIds {
    pub(super) value_id: u32,
    pub(super) key_id: Option<u32>,
}

pub(super) struct RouteState {
    /// The id of the producer this route belongs to (for the per-thread cache).
    pub(super) owner: u64,
    pub(super) topic: Arc<str>,
    pub(super) event_type: &'static str,
    pub(super) key_field: Option<KeyFieldInfo>,
    pub(super) ready: OnceLock<RouteIds>,
    /// Whether `failure` holds one (read without its lock on the fast path).
    pub(super) has_failed: AtomicBool,
    /// The last permanent registration failure, set and cleared under the gate's lock.
    pub(super) failure: Mutex<Option<Failure>>,
    /// The parked events of this route's topic.
    pub(super) gate: Arc<TopicGate>,
    pub(super) requested: AtomicBool,
}

/// A permanent registration failure: it holds for the producer's retry interval, then
/// the next event of the route registers again.
pub(super) struct Failure {
    pub(super) error: Arc<str>,
    pub(super) at: Instant,
}

impl RouteState {
    /// Whether registration has ended, either way.
    pub(super) fn settled(&self) -> bool {
        self.ready.get().is_some() || self.has_failed.load(Ordering::Acquire)
    }

    /// The route's registration failure, if any.
    pub(super) fn failure(&self) -> Option<Arc<str>> {
        if !self.has_failed.load(Ordering::Acquire) {
            return None;
        }
        let failure = self.failure.lock().unwrap_or_else(|e| e.into_inner());
        failure.as_ref().map(|f| f.error.clone())
    }

    /// The route's registration failure, if it is younger than `retry_after`.
    pub(super) fn fresh_failure(&self, retry_after: Duration) -> Option<Arc<str>> {
        if !self.has_failed.load(Ordering::Acquire) {
            return None;
        }
        let failure = self.failure.lock().unwrap_or_else(|e| e.into_inner());
        failure
            .as_ref()
            .filter(|f| f.at.elapsed() < retry_after)
            .map(|f| f.error.clone())
    }

    /// Records a permanent failure (under the gate's lock).
    pub(super) fn set_failure(&self, error: String) {
        *self.failure.lock().unwrap_or_else(|e| e.into_inner()) = Some(Failure {
            error: error.into(),
            at: Instant::now(),
        });
        self.has_failed.store(true, Ordering::Release);
    }

    /// Forgets an old failure so that the route registers again (under the gate's lock).
    pub(super) fn clear_failure(&self) {
        *self.failure.lock().unwrap_or_else(|e| e.into_inner()) = None;
        self.has_failed.store(false, Ordering::Release);
        self.requested.store(false, Ordering::Release);
    }
}

/// The events of one topic parked until their schemas are registered, in the order
/// they were produced. The first one always belongs to a route still being registered:
/// the events behind it (of any route) are released when it is.
#[derive(Default)]
pub(super) struct TopicGate {
    /// Each with its number.
    pub(super) parked: Mutex<std::collections::VecDeque<Parked>>,
    /// How many are parked, read without the lock on the fast path; counts the events a
    /// release took out of `parked` until each is sent or failed.
    pub(super) len: AtomicUsize,
    /// Set (under the lock) while a release sends a chunk outside the lock: events of
    /// the topic queue behind it even when `parked` is empty.
    pub(super) releasing: AtomicBool,
}

/// A parked event: the record, its route, its number (see [`Numbers`]).
pub(super) type Parked = (ProducerRecord, Arc<RouteState>, usize);

/// The schema registry's text of the key schema and the value schema of a route.
pub(super) struct RouteSchemas {
    pub(super) value_subject: String,
    pub(super) value_schema: String,
    pub(super) key: Option<(String, String)>,
}

pub(super) fn route_schemas(route: &RouteState) -> Result<RouteSchemas, String> {
    let descriptor = crate::event::registry::find(route.event_type)
        .ok_or_else(|| format!("unknown event type {}", route.event_type))?;
    let schema_json = descriptor.ops().schema().json();
    let key = route.key_field.map(|k| {
        let text = key_schema_text(schema_json, k);
        (registry::key_subject(&route.topic, k.avro_type), text)
    });
    Ok(RouteSchemas {
        value_subject: registry::value_subject(&route.topic, route.event_type),
        value_schema: descriptor.ops().schema().registry_text().to_owned(),
        key,
    })
}

/// The key schema as edx-event-bus-kafka registers it: the field entry of the key,
/// found by its name in the event schema (the path's last segment), as sorted JSON.
pub(super) fn key_schema_text(event_schema: &Value, key: KeyFieldInfo) -> String {
    let entry = find_field_entry(event_schema, key.name)
        .filter(|e| e.get("type").and_then(Value::as_str) == Some(key.avro_type))
        .unwrap_or_else(|| serde_json::json!({"name": key.name, "type": key.avro_type}));
    crate::avro::json_text::sorted_compact(&entry)
}

pub(super) fn find_field_entry(schema: &Value, name: &str) -> Option<Value> {
    match schema {
        Value::Object(map) => {
            if let Some(fields) = map.get("fields").and_then(Value::as_array) {
                for f in fields {
                    if f.get("name").and_then(Value::as_str) == Some(name) {
                        return Some(f.clone());
                    }
                }
            }
            map.values().find_map(|v| find_field_entry(v, name))
        }
        Value::Array(items) => items.iter().find_map(|v| find_field_entry(v, name)),
        _ => None,
    }
}
