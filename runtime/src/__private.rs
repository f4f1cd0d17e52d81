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
pub use openedx_events_rules::key_path::{Field as RecordField, Record};

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

/// The shape of a field of type `T`, after [`assert_field`]'s checks: what the record's
/// field tree (`EventDataInfo::RECORD`) holds for it.
pub const fn field_shape<T: EventField>() -> crate::data::Shape {
    assert_field::<T>();
    T::SHAPE
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

/// `<[(); N] as Pick<T>>::Out` is `T` when `N` is 1: `producer_config!` names the event
/// type through it, with `N` the constant that checks the route. When that check fails
/// (its constant panics with the message), the type is an error, and the compiler says
/// nothing more about the route.
pub trait Pick<T: ?Sized> {
    /// `T`.
    type Out: ?Sized;
}

impl<T: ?Sized> Pick<T> for [(); 1] {
    type Out = T;
}

/// The type string of an event, or `None` for [`UnknownEvent`].
pub trait MaybeEvent {
    /// The type string, if an event.
    const EVENT_TYPE: Option<&'static str>;
}

impl<E: OpenEdxEvent> MaybeEvent for E {
    const EVENT_TYPE: Option<&'static str> = Some(E::EVENT_TYPE);
}

/// What a type string in `producer_config!` names when no event in scope has it.
pub enum UnknownEvent {}

impl MaybeEvent for UnknownEvent {
    const EVENT_TYPE: Option<&'static str> = None;
}

/// The build-time check of a type string in `producer_config!`: 1 when `found` (the
/// event the string names in scope) exists; else a panic (a build error at the string)
/// with the start-up check's sentence, suggesting the closest catalog event or event
/// declared in this crate (`declared`).
pub const fn event_in_scope(found: Option<&str>, wanted: &str, declared: &[&str]) -> usize {
    if found.is_some() {
        return 1;
    }
    let suggestion = openedx_events_rules::suggest::nearest_of(wanted, crate::catalog::EVENT_TYPES, declared);
    let text = openedx_events_rules::event_type::unknown(wanted, suggestion).push(
        " (a type string names a catalog event, or an #[openedx_event] struct declared in this crate or \
         imported into this module; or write the struct's path instead)",
    );
    panic!("{}", text.as_str())
}

/// The build-time check of an `event_key_field` in `producer_config!`: 1 when `path`
/// resolves to a scalar field of `E`; else a panic (a build error at the path) with the
/// start-up check's sentence.
pub const fn key_path_of<E: OpenEdxEvent>(path: &str) -> usize {
    match openedx_events_rules::key_path::resolve(E::RECORD, path) {
        Ok(_) => 1,
        Err(problem) => {
            let text = openedx_events_rules::key_path::bad_key_path(path, problem.text().as_str());
            panic!("{}", text.as_str())
        }
    }
}
