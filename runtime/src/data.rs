//! Field types of event data: how each Rust type maps to Avro, how it is
//! (de)serialized on the wire, and how an `event_key_field` path goes through it.
//!
//! Every type that may appear as a field of an event implements [`EventField`].
//! The implementations here cover the primitive types, `Option`, `Vec`, string-keyed
//! maps, date-times, UUIDs and the opaque keys of [`crate::keys`]; structs get theirs
//! from `#[derive(EventData)]`.
//!
//! Why one file of ~940 lines (and its tests): every field type implements the same
//! [`EventField`] contract (Avro shape, wire form, key-path step) side by side, and the
//! derive's generated code calls the generic helpers next to them; split by type, the
//! implementations that must agree would sit apart.

use std::any::TypeId;
use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, SerializeSeq, Serializer};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::event_key::{EventKey, KeyPathError};
use crate::time;

/// An Avro map of event data: string keys, in the order they were inserted
/// (Python dicts keep insertion order, so this keeps the wire bytes stable).
pub type Map<V> = indexmap::IndexMap<String, V>;

/// Tracks the named Avro records already written while one schema is generated:
/// a record is written in full the first time and by bare name after.
///
/// A name is one record type's: when a second Rust type brings the same Avro record name,
/// the clash is recorded ([`clashes`](Self::clashes)) and the event bus refuses to start.
#[derive(Debug, Default)]
pub struct SchemaContext {
    event_type: &'static str,
    /// Each name defined, with the Rust type that defined it (`None` through [`define`](Self::define)).
    named: HashMap<&'static str, Option<(TypeId, &'static str)>>,
    clashes: Vec<RecordNameClash>,
}

impl SchemaContext {
    /// A context for a new schema, with no record written yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// A context for the schema of event type `event_type` (named in clashes).
    pub fn for_event(event_type: &'static str) -> Self {
        Self {
            event_type,
            ..Self::default()
        }
    }

    /// Returns `true` the first time `name` is seen, `false` after.
    pub fn define(&mut self, name: &'static str) -> bool {
        match self.named.entry(name) {
            Entry::Vacant(slot) => {
                slot.insert(None);
                true
            }
            Entry::Occupied(_) => false,
        }
    }

    /// Returns `true` the first time the record name of `T` is seen, `false` after; a
    /// second Rust type with the same record name is recorded as a clash.
    pub fn define_record<T: EventDataInfo>(&mut self) -> bool {
        let this = (TypeId::of::<T>(), std::any::type_name::<T>());
        match self.named.entry(T::RECORD_NAME) {
            Entry::Vacant(slot) => {
                slot.insert(Some(this));
                true
            }
            Entry::Occupied(slot) => {
                if let Some((first_id, first)) = *slot.get() {
                    let known = self
                        .clashes
                        .iter()
                        .any(|c| c.record_name == T::RECORD_NAME && c.second == this.1);
                    if first_id != this.0 && !known {
                        self.clashes.push(RecordNameClash {
                            event_type: self.event_type,
                            record_name: T::RECORD_NAME,
                            first,
                            second: this.1,
                        });
                    }
                }
                false
            }
        }
    }

    /// The record names given to two Rust types so far.
    pub fn clashes(&self) -> &[RecordNameClash] {
        &self.clashes
    }

    /// Takes the clashes out of the context.
    pub fn into_clashes(self) -> Vec<RecordNameClash> {
        self.clashes
    }
}

/// Two Rust types that one event's schema would give the same Avro record name. An Avro
/// schema defines a name once, so the second would be written with the first's schema and
/// every encode of the event would fail; the event bus refuses to start instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "event type {event_type}: the Avro record name `{record_name}` is given to two Rust types, {first} and \
     {second}; a schema defines a name once: rename one with #[event_data(name = \"...\")]"
)]
pub struct RecordNameClash {
    /// The event type whose schema holds both.
    pub event_type: &'static str,
    /// The Avro record name.
    pub record_name: &'static str,
    /// The Rust type that defined the name first.
    pub first: &'static str,
    /// The other Rust type.
    pub second: &'static str,
}

/// The broad shape of a field type, used in messages about key paths (the rules
/// crate's, so that build time and start-up describe a field alike).
pub use openedx_events_rules::key_path::Shape;

/// Reads the key of an event (or of one of its parts) without any string lookup:
/// built once from an `event_key_field` path, called once per event.
pub type KeyAccessor<T> = Arc<dyn Fn(&T) -> Option<EventKey> + Send + Sync>;

/// What an `event_key_field` path resolves to.
pub struct ResolvedKey<T> {
    /// Reads the key from a value.
    pub accessor: KeyAccessor<T>,
    /// Name of the last field on the path (the Avro key schema's field name).
    pub field_name: &'static str,
    /// Avro primitive of the key (`string`, `long`, `boolean`, `double`).
    pub avro_type: &'static str,
}

impl<T> Clone for ResolvedKey<T> {
    fn clone(&self) -> Self {
        Self {
            accessor: self.accessor.clone(),
            field_name: self.field_name,
            avro_type: self.avro_type,
        }
    }
}

impl<T> fmt::Debug for ResolvedKey<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResolvedKey")
            .field("field_name", &self.field_name)
            .field("avro_type", &self.avro_type)
            .finish_non_exhaustive()
    }
}

/// A type that can be a field of Open edX event data.
///
/// Implemented for the supported field types; `#[derive(EventData)]` implements it
/// for records. You rarely call it yourself.
///
/// ```
/// use openedx_events::data::{EventField, SchemaContext};
/// let schema = <Option<String> as EventField>::avro_schema(&mut SchemaContext::new());
/// assert_eq!(schema, serde_json::json!(["null", "string"]));
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a field of an Open edX event",
    label = "unsupported field type",
    note = "supported field types: String, bool, i32, i64, u32, f64, Vec<u8> (bytes), Option<T>, Vec<T>, \
            string-keyed maps (Map<T>, HashMap<String, T>, BTreeMap<String, T>), chrono::DateTime<Utc>, \
            uuid::Uuid, the opaque keys of openedx_events::keys, and structs with #[derive(EventData)]"
)]
pub trait EventField: Sized + Send + Sync + 'static {
    /// The shape of this type, for messages about key paths.
    const SHAPE: Shape;

    /// Whether the field may be absent on the wire (`["null", T]` with default null).
    const OPTIONAL: bool = false;

    /// Whether this type holds an `Option` directly inside an `Option`, at any depth of
    /// lists and maps. Such a field is refused at build time: its schema would be a union
    /// inside a union, which Avro and the Schema Registry reject, and `Some(None)` could
    /// not be told from `None` on the wire.
    #[doc(hidden)]
    const NESTED_OPTION: bool = false;

    /// The value of this field when the data lacks it: `None` for an optional field
    /// (one whose [`OPTIONAL`](Self::OPTIONAL) is `true`), no value (an error) for the others.
    fn absent() -> Option<Self> {
        None
    }

    /// The Avro type of this field.
    fn avro_schema(cx: &mut SchemaContext) -> Value;

    /// Writes the value through serde, the way the wire expects it.
    fn serialize_field<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error>;

    /// Reads the value through serde, from data of this type's own shape ([`ReadMode::Exact`]).
    fn deserialize_field<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error>;

    /// Reads the value through serde in `mode`. Types that hold other fields (options,
    /// lists, maps, records) pass the mode on; the default reads as
    /// [`deserialize_field`](Self::deserialize_field) does.
    fn deserialize_field_in<'de, D: Deserializer<'de>>(deserializer: D, mode: ReadMode) -> Result<Self, D::Error> {
        let _ = mode;
        Self::deserialize_field(deserializer)
    }

    /// Resolves the rest of an `event_key_field` path inside this type.
    ///
    /// `path` is what is left after this field; `field` is this field's name.
    fn resolve_key(field: &'static str, path: &[&str]) -> Result<ResolvedKey<Self>, KeyPathError> {
        match path.first() {
            Some(next) => Err(KeyPathError::NotARecord {
                field: field.to_owned(),
                shape: Self::SHAPE.to_string(),
                next: (*next).to_owned(),
            }),
            None => Err(KeyPathError::NotScalar {
                field: field.to_owned(),
                shape: Self::SHAPE.to_string(),
            }),
        }
    }
}

/// A scalar that can be an event key.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be an event key: `event_key_field` must end on a scalar field",
    label = "this field is a record, list or map",
    note = "end the path on a string, number, boolean, key, UUID or date-time field of the record"
)]
pub trait KeyField: EventField {
    /// The key of this value, `None` when it is absent.
    fn event_key(&self) -> Option<EventKey>;
}

/// Adapts an [`EventField`] to `serde::Serialize`.
pub struct Ser<'a, T>(pub &'a T);

impl<T: EventField> Serialize for Ser<'_, T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize_field(serializer)
    }
}

/// Adapts an [`EventField`] to `serde::Deserialize`.
pub struct De<T>(pub T);

impl<'de, T: EventField> Deserialize<'de> for De<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        T::deserialize_field(deserializer).map(De)
    }
}

/// How data being read relates to the schema of the type reading it.
///
/// ```
/// use openedx_events::data::{EventField, FieldSeed, ReadMode};
/// use serde::de::DeserializeSeed;
/// let v: Option<i64> = FieldSeed::new(ReadMode::Exact).deserialize(serde_json::json!(3)).unwrap();
/// assert_eq!(v, Some(3));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReadMode {
    /// The data has this type's own shape: JSON input, or Avro written with this type's
    /// schema. A record key the record does not have is an error naming it.
    #[default]
    Exact,
    /// Avro written with another schema of the event (the writer's, e.g. one from a Schema
    /// Registry), resolved by Avro's rules: fields of the writer that the reader lacks are
    /// skipped, and a `string` written is read into a `bytes` field.
    WriterSchema,
}

/// Reads a field of type `T` in a [`ReadMode`] (a `serde::de::DeserializeSeed`).
pub struct FieldSeed<T> {
    mode: ReadMode,
    _type: PhantomData<fn() -> T>,
}

impl<T> FieldSeed<T> {
    /// A seed reading in `mode`.
    pub fn new(mode: ReadMode) -> Self {
        Self {
            mode,
            _type: PhantomData,
        }
    }
}

impl<'de, T: EventField> de::DeserializeSeed<'de> for FieldSeed<T> {
    type Value = T;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<T, D::Error> {
        T::deserialize_field_in(deserializer, self.mode)
    }
}

fn scalar_key<T: KeyField>(
    field: &'static str,
    path: &[&str],
    avro: &'static str,
) -> Result<ResolvedKey<T>, KeyPathError> {
    if let Some(next) = path.first() {
        return Err(KeyPathError::NotARecord {
            field: field.to_owned(),
            shape: T::SHAPE.to_string(),
            next: (*next).to_owned(),
        });
    }
    Ok(ResolvedKey {
        accessor: Arc::new(|v: &T| v.event_key()),
        field_name: field,
        avro_type: avro,
    })
}

macro_rules! serde_scalar {
    ($ty:ty, $avro:literal, $key:expr) => {
        impl EventField for $ty {
            const SHAPE: Shape = Shape::Scalar($avro);
            fn avro_schema(_: &mut SchemaContext) -> Value {
                Value::String($avro.to_owned())
            }
            fn serialize_field<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                Serialize::serialize(self, serializer)
            }
            fn deserialize_field<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                <$ty as Deserialize>::deserialize(deserializer)
            }
            fn resolve_key(field: &'static str, path: &[&str]) -> Result<ResolvedKey<Self>, KeyPathError> {
                scalar_key::<Self>(field, path, $avro)
            }
        }
        impl KeyField for $ty {
            fn event_key(&self) -> Option<EventKey> {
                #[allow(clippy::redundant_closure_call)]
                Some(($key)(self))
            }
        }
    };
}

serde_scalar!(String, "string", |v: &String| EventKey::String(v.clone()));
serde_scalar!(bool, "boolean", |v: &bool| EventKey::Boolean(*v));
serde_scalar!(i64, "long", |v: &i64| EventKey::Long(*v));
serde_scalar!(i32, "long", |v: &i32| EventKey::Long(i64::from(*v)));
serde_scalar!(u32, "long", |v: &u32| EventKey::Long(i64::from(*v)));
serde_scalar!(f64, "double", |v: &f64| EventKey::Double(*v));

impl EventField for Vec<u8> {
    const SHAPE: Shape = Shape::Bytes;
    fn avro_schema(_: &mut SchemaContext) -> Value {
        Value::String("bytes".to_owned())
    }
    fn serialize_field<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(self)
    }
    fn deserialize_field<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Self::deserialize_field_in(deserializer, ReadMode::Exact)
    }
    fn deserialize_field_in<'de, D: Deserializer<'de>>(deserializer: D, mode: ReadMode) -> Result<Self, D::Error> {
        struct BytesVisitor(ReadMode);
        impl<'de> Visitor<'de> for BytesVisitor {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Self::Value, E> {
                Ok(v.to_vec())
            }
            fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Self::Value, E> {
                Ok(v)
            }
            /// A `string` written, `bytes` read: Avro's promotion (the UTF-8 bytes), which
            /// the evolution check allows. JSON gives bytes as numbers, never as a string.
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                match self.0 {
                    ReadMode::WriterSchema => Ok(v.as_bytes().to_vec()),
                    ReadMode::Exact => Err(E::invalid_type(de::Unexpected::Str(v), &self)),
                }
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
                while let Some(b) = seq.next_element::<u8>()? {
                    out.push(b);
                }
                Ok(out)
            }
        }
        deserializer.deserialize_byte_buf(BytesVisitor(mode))
    }
}

impl EventField for DateTime<Utc> {
    const SHAPE: Shape = Shape::Scalar("string");
    fn avro_schema(_: &mut SchemaContext) -> Value {
        Value::String("string".to_owned())
    }
    fn serialize_field<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match time::format_into(self, &mut [0; time::ISO_LEN]) {
            Some(text) => serializer.serialize_str(text),
            // Python could not read it back: refuse rather than write it (no value: PII).
            None => Err(serde::ser::Error::custom(format_args!(
                "a date-time {}",
                time::check_python(self)
                    .err()
                    .map_or_else(String::new, |p| p.to_string())
            ))),
        }
    }
    fn deserialize_field<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TimeVisitor;
        impl Visitor<'_> for TimeVisitor {
            type Value = DateTime<Utc>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an ISO-8601 date-time string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                time::parse(v).map_err(E::custom)
            }
        }
        deserializer.deserialize_str(TimeVisitor)
    }
    fn resolve_key(field: &'static str, path: &[&str]) -> Result<ResolvedKey<Self>, KeyPathError> {
        scalar_key::<Self>(field, path, "string")
    }
}

impl KeyField for DateTime<Utc> {
    fn event_key(&self) -> Option<EventKey> {
        Some(EventKey::String(time::IsoFormat(self).to_string()))
    }
}

impl EventField for Uuid {
    const SHAPE: Shape = Shape::Scalar("string");
    fn avro_schema(_: &mut SchemaContext) -> Value {
        Value::String("string".to_owned())
    }
    fn serialize_field<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut buf = Uuid::encode_buffer();
        serializer.serialize_str(self.hyphenated().encode_lower(&mut buf))
    }
    fn deserialize_field<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct UuidVisitor;
        impl Visitor<'_> for UuidVisitor {
            type Value = Uuid;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a UUID string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Uuid::parse_str(v).map_err(E::custom)
            }
        }
        deserializer.deserialize_str(UuidVisitor)
    }
    fn resolve_key(field: &'static str, path: &[&str]) -> Result<ResolvedKey<Self>, KeyPathError> {
        scalar_key::<Self>(field, path, "string")
    }
}

impl KeyField for Uuid {
    fn event_key(&self) -> Option<EventKey> {
        Some(EventKey::String(self.hyphenated().to_string()))
    }
}

impl<T: EventField> EventField for Option<T> {
    const SHAPE: Shape = T::SHAPE;
    const OPTIONAL: bool = true;
    const NESTED_OPTION: bool = T::OPTIONAL || T::NESTED_OPTION;
    fn absent() -> Option<Self> {
        Some(None)
    }
    fn avro_schema(cx: &mut SchemaContext) -> Value {
        json!(["null", T::avro_schema(cx)])
    }
    fn serialize_field<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Some(v) => serializer.serialize_some(&Ser(v)),
            None => serializer.serialize_none(),
        }
    }
    fn deserialize_field<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Self::deserialize_field_in(deserializer, ReadMode::Exact)
    }
    fn deserialize_field_in<'de, D: Deserializer<'de>>(deserializer: D, mode: ReadMode) -> Result<Self, D::Error> {
        struct OptionVisitor<T>(ReadMode, PhantomData<fn() -> T>);
        impl<'de, T: EventField> Visitor<'de> for OptionVisitor<T> {
            type Value = Option<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an optional value")
            }
            fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(None)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(None)
            }
            fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
                T::deserialize_field_in(deserializer, self.0).map(Some)
            }
        }
        deserializer.deserialize_option(OptionVisitor::<T>(mode, PhantomData))
    }
    fn resolve_key(field: &'static str, path: &[&str]) -> Result<ResolvedKey<Self>, KeyPathError> {
        let inner = T::resolve_key(field, path)?;
        let get = inner.accessor;
        Ok(ResolvedKey {
            accessor: Arc::new(move |v: &Option<T>| v.as_ref().and_then(|v| get(v))),
            field_name: inner.field_name,
            avro_type: inner.avro_type,
        })
    }
}

impl<T: KeyField> KeyField for Option<T> {
    fn event_key(&self) -> Option<EventKey> {
        self.as_ref().and_then(KeyField::event_key)
    }
}

impl<T: EventField> EventField for Vec<T> {
    const SHAPE: Shape = Shape::List;
    const NESTED_OPTION: bool = T::NESTED_OPTION;
    fn avro_schema(cx: &mut SchemaContext) -> Value {
        json!({"type": "array", "items": T::avro_schema(cx)})
    }
    fn serialize_field<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.len()))?;
        for v in self {
            seq.serialize_element(&Ser(v))?;
        }
        seq.end()
    }
    fn deserialize_field<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Self::deserialize_field_in(deserializer, ReadMode::Exact)
    }
    fn deserialize_field_in<'de, D: Deserializer<'de>>(deserializer: D, mode: ReadMode) -> Result<Self, D::Error> {
        struct SeqVisitor<T>(ReadMode, PhantomData<fn() -> T>);
        impl<'de, T: EventField> Visitor<'de> for SeqVisitor<T> {
            type Value = Vec<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                // Never trust a peer's size hint beyond a small bound.
                let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(256));
                while let Some(v) = seq.next_element_seed(FieldSeed::<T>::new(self.0))? {
                    out.push(v);
                }
                Ok(out)
            }
        }
        deserializer.deserialize_seq(SeqVisitor::<T>(mode, PhantomData))
    }
}

/// A string-keyed map type that can be an Avro map.
trait StringMap<V>: Sized {
    fn with_capacity(n: usize) -> Self;
    fn put(&mut self, k: String, v: V);
}

impl<V> StringMap<V> for Map<V> {
    fn with_capacity(n: usize) -> Self {
        Map::with_capacity(n)
    }
    fn put(&mut self, k: String, v: V) {
        self.insert(k, v);
    }
}

impl<V, H: std::hash::BuildHasher + Default> StringMap<V> for HashMap<String, V, H> {
    fn with_capacity(n: usize) -> Self {
        HashMap::with_capacity_and_hasher(n, H::default())
    }
    fn put(&mut self, k: String, v: V) {
        self.insert(k, v);
    }
}

impl<V> StringMap<V> for BTreeMap<String, V> {
    fn with_capacity(_: usize) -> Self {
        BTreeMap::new()
    }
    fn put(&mut self, k: String, v: V) {
        self.insert(k, v);
    }
}

fn serialize_map<'a, S, V, I>(serializer: S, len: usize, entries: I) -> Result<S::Ok, S::Error>
where
    S: Serializer,
    V: EventField + 'a,
    I: Iterator<Item = (&'a String, &'a V)>,
{
    let mut map = serializer.serialize_map(Some(len))?;
    for (k, v) in entries {
        map.serialize_entry(k, &Ser(v))?;
    }
    map.end()
}

fn deserialize_map<'de, D, V, M>(deserializer: D, mode: ReadMode) -> Result<M, D::Error>
where
    D: Deserializer<'de>,
    V: EventField,
    M: StringMap<V>,
{
    struct MapVisitor<V, M>(ReadMode, PhantomData<fn() -> (V, M)>);
    impl<'de, V: EventField, M: StringMap<V>> Visitor<'de> for MapVisitor<V, M> {
        type Value = M;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a map with string keys")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<M, A::Error> {
            let mut out = M::with_capacity(access.size_hint().unwrap_or(0).min(256));
            while let Some(k) = access.next_key::<String>()? {
                let v = access.next_value_seed(FieldSeed::<V>::new(self.0))?;
                out.put(k, v);
            }
            Ok(out)
        }
    }
    deserializer.deserialize_map(MapVisitor::<V, M>(mode, PhantomData))
}

macro_rules! map_field {
    ($($gen:ident),* ; $ty:ty) => {
        impl<V: EventField $(, $gen: std::hash::BuildHasher + Default + Send + Sync + 'static)*> EventField for $ty {
            const SHAPE: Shape = Shape::Map;
            const NESTED_OPTION: bool = V::NESTED_OPTION;
            fn avro_schema(cx: &mut SchemaContext) -> Value {
                json!({"type": "map", "values": V::avro_schema(cx)})
            }
            fn serialize_field<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serialize_map(serializer, self.len(), self.iter())
            }
            fn deserialize_field<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                deserialize_map::<D, V, Self>(deserializer, ReadMode::Exact)
            }
            fn deserialize_field_in<'de, D: Deserializer<'de>>(deserializer: D, mode: ReadMode) -> Result<Self, D::Error> {
                deserialize_map::<D, V, Self>(deserializer, mode)
            }
        }
    };
}

map_field!(; Map<V>);
map_field!(H; HashMap<String, V, H>);
map_field!(; BTreeMap<String, V>);

/// Implements [`EventField`] and [`KeyField`] for a string newtype with
/// `as_str()` and `FromStr`, written as an Avro `string`.
macro_rules! string_field {
    ($ty:ty) => {
        impl $crate::data::EventField for $ty {
            const SHAPE: $crate::data::Shape = $crate::data::Shape::Scalar("string");
            fn avro_schema(_: &mut $crate::data::SchemaContext) -> ::serde_json::Value {
                ::serde_json::Value::String("string".to_owned())
            }
            fn serialize_field<S: ::serde::Serializer>(&self, serializer: S) -> ::std::result::Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
            fn deserialize_field<'de, D: ::serde::Deserializer<'de>>(
                deserializer: D,
            ) -> ::std::result::Result<Self, D::Error> {
                $crate::data::deserialize_from_str(deserializer)
            }
            fn resolve_key(
                field: &'static str,
                path: &[&str],
            ) -> ::std::result::Result<$crate::data::ResolvedKey<Self>, $crate::event_key::KeyPathError> {
                $crate::data::string_key::<Self>(field, path)
            }
        }
        impl $crate::data::KeyField for $ty {
            fn event_key(&self) -> ::std::option::Option<$crate::event_key::EventKey> {
                ::std::option::Option::Some($crate::event_key::EventKey::String(self.as_str().to_owned()))
            }
        }
    };
}
pub(crate) use string_field;

#[doc(hidden)]
pub fn string_key<T: KeyField>(field: &'static str, path: &[&str]) -> Result<ResolvedKey<T>, KeyPathError> {
    scalar_key::<T>(field, path, "string")
}

#[doc(hidden)]
pub fn deserialize_from_str<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: std::str::FromStr,
    T::Err: fmt::Display,
{
    struct StrVisitor<T>(PhantomData<T>);
    impl<T: std::str::FromStr> Visitor<'_> for StrVisitor<T>
    where
        T::Err: fmt::Display,
    {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
            v.parse().map_err(E::custom)
        }
    }
    deserializer.deserialize_str(StrVisitor(PhantomData))
}

/// A record of event data: implemented by `#[derive(EventData)]` and by
/// `#[openedx_event]` for the event struct itself.
///
/// ```
/// use openedx_events::{EventData, EventDataInfo};
///
/// /// A point.
/// #[derive(EventData, Debug, Clone, PartialEq)]
/// pub struct Point {
///     /// Horizontal.
///     pub x: i64,
///     /// Vertical, if known.
///     pub y: Option<i64>,
/// }
/// assert_eq!(Point::RECORD_NAME, "Point");
/// assert_eq!(Point::FIELDS.iter().map(|f| f.name).collect::<Vec<_>>(), ["x", "y"]);
/// ```
pub trait EventDataInfo: Sized + Send + Sync + 'static {
    /// The Avro record name (the struct name unless renamed; `CloudEvent` for an event).
    const RECORD_NAME: &'static str;
    /// The fields, in declaration order (the order on the wire).
    const FIELDS: &'static [FieldInfo];
    /// The field names, in declaration order.
    #[doc(hidden)]
    const FIELD_NAMES: &'static [&'static str];
    /// The record's field tree, which `event_key_field` paths are checked against (at
    /// build time by `producer_config!`, at start-up by the configuration check).
    #[doc(hidden)]
    const RECORD: &'static openedx_events_rules::key_path::Record;

    /// The Avro field entries of this record, in order.
    fn avro_fields(cx: &mut SchemaContext) -> Vec<Value>;

    /// Resolves an `event_key_field` path (already split on `.`) inside this record.
    fn resolve_key_path(path: &[&str]) -> Result<ResolvedKey<Self>, KeyPathError>;

    /// Reads the record from the entries of a map (field name, value), in any order, in `mode`.
    #[doc(hidden)]
    fn read_record<'de, A: MapAccess<'de>>(map: A, mode: ReadMode) -> Result<Self, A::Error>;
}

/// Reads a record through serde: what `#[derive(EventData)]` and `#[openedx_event]`
/// deserialize with. The visitor and the field-name lookup live here, not in the
/// generated code, so no generated item can shadow a user's type.
#[doc(hidden)]
pub fn deserialize_record<'de, T: EventDataInfo, D: Deserializer<'de>>(
    deserializer: D,
    mode: ReadMode,
) -> Result<T, D::Error> {
    deserializer.deserialize_struct(T::RECORD_NAME, T::FIELD_NAMES, RecordVisitor::<T>(mode, PhantomData))
}

struct RecordVisitor<T>(ReadMode, PhantomData<fn() -> T>);

impl<'de, T: EventDataInfo> Visitor<'de> for RecordVisitor<T> {
    type Value = T;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = std::any::type_name::<T>();
        write!(f, "record {}", name.rsplit("::").next().unwrap_or(name))
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
        T::read_record(map, self.0)
    }
}

/// Reads a record's field name: the index of the field in `names`. A name the record
/// does not have is an error naming it, except when resolving a writer's schema
/// ([`ReadMode::WriterSchema`]), where it is `None` (the value is skipped).
#[doc(hidden)]
pub struct FieldKey {
    names: &'static [&'static str],
    mode: ReadMode,
}

impl FieldKey {
    #[doc(hidden)]
    pub fn new(names: &'static [&'static str], mode: ReadMode) -> Self {
        Self { names, mode }
    }

    fn unknown<E: de::Error>(&self, name: &str) -> Result<Option<usize>, E> {
        match self.mode {
            ReadMode::WriterSchema => Ok(None),
            ReadMode::Exact => Err(E::unknown_field(name, self.names)),
        }
    }
}

impl<'de> de::DeserializeSeed<'de> for FieldKey {
    type Value = Option<usize>;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Option<usize>, D::Error> {
        deserializer.deserialize_identifier(self)
    }
}

impl Visitor<'_> for FieldKey {
    type Value = Option<usize>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a field name")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Option<usize>, E> {
        match self.names.iter().position(|n| *n == v) {
            Some(i) => Ok(Some(i)),
            None => self.unknown(v),
        }
    }
    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Option<usize>, E> {
        match self.names.iter().position(|n| n.as_bytes() == v) {
            Some(i) => Ok(Some(i)),
            None => self.unknown(&String::from_utf8_lossy(v)),
        }
    }
}

/// Describes one field of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldInfo {
    /// The field name, as on the wire.
    pub name: &'static str,
    /// The Rust type, as written in the struct.
    pub rust_type: &'static str,
    /// The field's doc comment, empty when there is none.
    pub doc: &'static str,
}

/// The Avro schema entry of one record field: `{"name", "type"}`, plus
/// `"default": null` for an optional field.
pub fn avro_field_entry<T: EventField>(name: &'static str, cx: &mut SchemaContext) -> Value {
    if T::OPTIONAL {
        json!({"name": name, "type": T::avro_schema(cx), "default": null})
    } else {
        json!({"name": name, "type": T::avro_schema(cx)})
    }
}

/// The Avro schema of a nested record: in full the first time, by name after.
pub fn avro_record_schema<T: EventDataInfo>(cx: &mut SchemaContext) -> Value {
    if cx.define_record::<T>() {
        json!({"name": T::RECORD_NAME, "type": "record", "fields": T::avro_fields(cx)})
    } else {
        Value::String(T::RECORD_NAME.to_owned())
    }
}

/// The value of field `name` read from a record: what was read, else the type's value
/// for an absent field ([`EventField::absent`]), else a `missing field` error.
#[doc(hidden)]
pub fn take_field<T: EventField, E: de::Error>(read: Option<T>, name: &'static str) -> Result<T, E> {
    match read {
        Some(value) => Ok(value),
        None => T::absent().ok_or_else(|| E::missing_field(name)),
    }
}

/// Error for a key path segment that names no field of `record`.
pub fn no_such_field<T: EventDataInfo>(segment: &str) -> KeyPathError {
    KeyPathError::NoSuchField {
        field: segment.to_owned(),
        record: T::RECORD_NAME.to_owned(),
        valid: T::FIELDS.iter().map(|f| f.name.to_owned()).collect(),
        suggestion: None,
    }
}

/// Builds the accessor of a key inside field `F` of record `R`.
pub fn key_through_field<R, F>(
    name: &'static str,
    rest: &[&str],
    get: fn(&R) -> &F,
) -> Result<ResolvedKey<R>, KeyPathError>
where
    R: 'static,
    F: EventField,
{
    let inner = F::resolve_key(name, rest)?;
    let read = inner.accessor;
    Ok(ResolvedKey {
        accessor: Arc::new(move |r: &R| read(get(r))),
        field_name: inner.field_name,
        avro_type: inner.avro_type,
    })
}

/// Key resolution for a nested record used as a field.
pub fn record_key<T: EventDataInfo>(field: &'static str, path: &[&str]) -> Result<ResolvedKey<T>, KeyPathError> {
    if path.is_empty() {
        return Err(KeyPathError::NotScalar {
            field: field.to_owned(),
            shape: Shape::Record(T::RECORD).to_string(),
        });
    }
    T::resolve_key_path(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn option_schema_is_null_union() {
        let mut cx = SchemaContext::new();
        assert_eq!(
            avro_field_entry::<Option<i64>>("n", &mut cx),
            json!({"name": "n", "type": ["null", "long"], "default": null})
        );
        assert_eq!(
            avro_field_entry::<Vec<String>>("l", &mut cx),
            json!({"name": "l", "type": {"type": "array", "items": "string"}})
        );
        assert_eq!(
            avro_field_entry::<Map<bool>>("m", &mut cx),
            json!({"name": "m", "type": {"type": "map", "values": "boolean"}})
        );
        assert_eq!(
            avro_field_entry::<Vec<u8>>("b", &mut cx),
            json!({"name": "b", "type": "bytes"})
        );
    }

    #[test]
    fn scalar_key_rejects_deeper_path() {
        let err = <String as EventField>::resolve_key("name", &["x"]).unwrap_err();
        assert!(err.to_string().contains("`name`"), "{err}");
        let ok = <Option<i64> as EventField>::resolve_key("id", &[]).unwrap();
        assert_eq!(ok.avro_type, "long");
        assert_eq!((ok.accessor)(&Some(3)), Some(EventKey::Long(3)));
        assert_eq!((ok.accessor)(&None), None);
    }

    #[test]
    fn list_is_not_a_key() {
        let err = <Vec<String> as EventField>::resolve_key("tags", &[]).unwrap_err();
        assert!(matches!(err, KeyPathError::NotScalar { .. }), "{err}");
    }
}
