//! Support for the code the macros expand to. Not public API.

pub use inventory;
pub use serde;
pub use serde_json;

pub use crate::avro::SchemaCell;
pub use crate::bus::{compiled_route, CompiledConfig};
pub use crate::data::{
    avro_field_entry, avro_record_schema, deserialize_from_str, deserialize_record, key_through_field, no_such_field,
    record_key, string_key, take_field, EventDataInfo, EventField, FieldInfo, FieldKey, FieldSeed, KeyField, ReadMode,
    ResolvedKey, SchemaContext, Shape,
};
pub use crate::event::{EventDescriptor, OpenEdxEvent};
pub use crate::event_key::{EventKey, KeyPathError};
pub use crate::signal::Signal;

/// Checks at compile time that a field type is supported (the error points at the type),
/// and that it holds no `Option` directly inside an `Option`.
pub const fn assert_field<T: EventField>() {
    if T::NESTED_OPTION {
        panic!(
            "an `Option` directly inside an `Option` cannot be a field of an Open edX event: its Avro \
             schema would be a union inside a union, which Avro and the Schema Registry reject, and \
             `Some(None)` could not be told from `None` on the wire; use a single `Option`"
        );
    }
}

/// Checks at compile time that a key path ends on a scalar (the error points at the path).
pub fn key_of<T: KeyField>(value: &T) -> Option<EventKey> {
    value.event_key()
}

/// A record, or an optional record, that an `event_key_field` path can go through.
#[diagnostic::on_unimplemented(
    message = "`event_key_field` cannot go through `{Self}`: it has no fields",
    label = "this segment is not a record",
    note = "each segment but the last must name a record field (a struct with #[derive(EventData)], or an Option of one)"
)]
pub trait Navigate {
    /// The record reached.
    type Record;
    /// The record, `None` when an optional record is absent.
    fn navigate(&self) -> Option<&Self::Record>;
}

impl<T: EventDataInfo> Navigate for T {
    type Record = T;
    fn navigate(&self) -> Option<&T> {
        Some(self)
    }
}

impl<T: EventDataInfo> Navigate for Option<T> {
    type Record = T;
    fn navigate(&self) -> Option<&T> {
        self.as_ref()
    }
}

/// Goes one step down an `event_key_field` path.
pub fn nav<T: Navigate>(value: &T) -> Option<&T::Record> {
    value.navigate()
}
