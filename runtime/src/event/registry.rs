//! Every event type in the binary, and look-up by type string: this is where a type
//! string becomes a registry entry. `#[openedx_event("...")]` submits one
//! [`EventDescriptor`] per struct through `inventory`; the first look-up indexes them by
//! type string (refusing a type string declared twice) and every later one is a map read.

use std::collections::HashMap;
use std::sync::OnceLock;

use super::{DuplicateEventType, EventDescriptor, RecordNameClashes};
use crate::data::RecordNameClash;

type Index = Result<HashMap<&'static str, &'static EventDescriptor>, DuplicateEventType>;

fn index() -> &'static Index {
    static INDEX: OnceLock<Index> = OnceLock::new();
    INDEX.get_or_init(|| {
        let mut map: HashMap<&'static str, &'static EventDescriptor> = HashMap::new();
        let mut all: Vec<&'static EventDescriptor> = inventory::iter::<EventDescriptor>.into_iter().collect();
        all.sort_by_key(|d| (d.event_type, d.rust_type));
        for d in all {
            if let Some(first) = map.insert(d.event_type, d) {
                return Err(DuplicateEventType {
                    event_type: d.event_type,
                    first: first.rust_type,
                    second: d.rust_type,
                });
            }
        }
        Ok(map)
    })
}

/// Checks that no two structs declare the same event type; the event bus calls
/// it at start-up.
pub fn check() -> Result<(), DuplicateEventType> {
    index().as_ref().map(|_| ()).map_err(Clone::clone)
}

/// Every pair of Rust types that one registered event's schema would give the same
/// Avro record name (each event's schema is generated to find them), sorted by event
/// type. Computed once.
pub fn record_name_clashes() -> &'static [RecordNameClash] {
    static CLASHES: OnceLock<Vec<RecordNameClash>> = OnceLock::new();
    CLASHES.get_or_init(|| {
        events()
            .iter()
            .flat_map(|d| d.ops().schema().record_name_clashes().iter().cloned())
            .collect()
    })
}

/// Checks that no event's schema gives one Avro record name to two Rust types; the
/// event bus calls it at start-up.
///
/// ```
/// assert!(openedx_events::registry::check_record_names().is_ok());
/// ```
pub fn check_record_names() -> Result<(), RecordNameClashes> {
    match record_name_clashes() {
        [] => Ok(()),
        all => Err(RecordNameClashes(all.to_vec())),
    }
}

/// Every registered event type, sorted by type string.
pub fn events() -> Vec<&'static EventDescriptor> {
    let mut all: Vec<&'static EventDescriptor> = inventory::iter::<EventDescriptor>.into_iter().collect();
    all.sort_by_key(|d| (d.event_type, d.rust_type));
    all
}

/// The event of a type string, if one is registered (and unambiguous).
pub fn find(event_type: &str) -> Option<&'static EventDescriptor> {
    match index() {
        Ok(map) => map.get(event_type).copied(),
        Err(_) => events().into_iter().find(|d| d.event_type == event_type),
    }
}
