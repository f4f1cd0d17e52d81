//! Field types of event data: how each Rust type maps to Avro, how it is
//! (de)serialized on the wire, and how an `event_key_field` path goes through it.
//!
//! Every type that may appear as a field of an event implements [`EventField`].
//! The implementations here cover the primitive types, `Option`, `Vec`, string-keyed
//! maps, date-times, UUIDs and the opaque keys of [`crate::keys`]; structs get theirs
//! from `#[derive(EventData)]`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, SerializeSeq, Serializer};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::key::{EventKey, KeyPathError};
use crate::time;

/// An Avro map of event data: string keys, in the order they were inserted
/// (Python dicts keep insertion order, so this keeps the wire bytes stable).
pub type Map<V> = indexmap::IndexMap<String, V>;

/// Tracks the named Avro records already written while one schema is generated:
/// a record is written in full the first time and by bare name after.
#[derive(Debug, Default)]
pub struct SchemaContext {
    named: HashSet<&'static str>,
}

impl SchemaContext {
    /// A context for a new schema, with no record written yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Returns `true` the first time `name` is seen, `false` after.
    pub fn define(&mut self, name: &'static str) -> bool {
        self.named.insert(name)
    }
}

/// The broad shape of a field type, used in messages about key paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// A value with no inner fields; carries the Avro primitive it is written as.
    Scalar(&'static str),
    /// A record with named fields.
    Record(&'static str),
    /// An Avro array.
    List,
    /// An Avro map.
    Map,
    /// Raw bytes (not usable as a key).
    Bytes,
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Shape::Scalar(t) => write!(f, "a scalar ({t})"),
            Shape::Record(n) => write!(f, "a record ({n})"),
            Shape::List => f.write_str("a list"),
            Shape::Map => f.write_str("a map"),
            Shape::Bytes => f.write_str("raw bytes"),
        }
    }
}

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

    /// The Avro type of this field.
    fn avro_schema(cx: &mut SchemaContext) -> Value;

    /// Writes the value through serde, the way the wire expects it.
    fn serialize_field<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error>;

    /// Reads the value through serde.
    fn deserialize_field<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error>;

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
        struct BytesVisitor;
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
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
                while let Some(b) = seq.next_element::<u8>()? {
                    out.push(b);
                }
                Ok(out)
            }
        }
        deserializer.deserialize_byte_buf(BytesVisitor)
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
        Ok(Option::<De<T>>::deserialize(deserializer)?.map(|d| d.0))
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
        struct SeqVisitor<T>(PhantomData<T>);
        impl<'de, T: EventField> Visitor<'de> for SeqVisitor<T> {
            type Value = Vec<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                // Never trust a peer's size hint beyond a small bound.
                let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(256));
                while let Some(De(v)) = seq.next_element::<De<T>>()? {
                    out.push(v);
                }
                Ok(out)
            }
        }
        deserializer.deserialize_seq(SeqVisitor(PhantomData))
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

fn deserialize_map<'de, D, V, M>(deserializer: D) -> Result<M, D::Error>
where
    D: Deserializer<'de>,
    V: EventField,
    M: StringMap<V>,
{
    struct MapVisitor<V, M>(PhantomData<(V, M)>);
    impl<'de, V: EventField, M: StringMap<V>> Visitor<'de> for MapVisitor<V, M> {
        type Value = M;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a map with string keys")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<M, A::Error> {
            let mut out = M::with_capacity(access.size_hint().unwrap_or(0).min(256));
            while let Some((k, De(v))) = access.next_entry::<String, De<V>>()? {
                out.put(k, v);
            }
            Ok(out)
        }
    }
    deserializer.deserialize_map(MapVisitor(PhantomData))
}

macro_rules! map_field {
    ($($gen:ident),* ; $ty:ty) => {
        impl<V: EventField $(, $gen: std::hash::BuildHasher + Default + Send + Sync + 'static)*> EventField for $ty {
            const SHAPE: Shape = Shape::Map;
            fn avro_schema(cx: &mut SchemaContext) -> Value {
                json!({"type": "map", "values": V::avro_schema(cx)})
            }
            fn serialize_field<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serialize_map(serializer, self.len(), self.iter())
            }
            fn deserialize_field<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                deserialize_map::<D, V, Self>(deserializer)
            }
        }
    };
}

map_field!(; Map<V>);
map_field!(H; HashMap<String, V, H>);
map_field!(; BTreeMap<String, V>);

/// Implements [`EventField`] and [`KeyField`] for a string newtype with
/// `as_str()` and `FromStr`, written as an Avro `string`.
#[macro_export]
#[doc(hidden)]
macro_rules! __string_field {
    ($ty:ty) => {
        impl $crate::data::EventField for $ty {
            const SHAPE: $crate::data::Shape = $crate::data::Shape::Scalar("string");
            fn avro_schema(_: &mut $crate::data::SchemaContext) -> $crate::__private::serde_json::Value {
                $crate::__private::serde_json::Value::String("string".to_owned())
            }
            fn serialize_field<S: $crate::__private::serde::Serializer>(
                &self,
                serializer: S,
            ) -> ::std::result::Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
            fn deserialize_field<'de, D: $crate::__private::serde::Deserializer<'de>>(
                deserializer: D,
            ) -> ::std::result::Result<Self, D::Error> {
                $crate::__private::deserialize_from_str(deserializer)
            }
            fn resolve_key(
                field: &'static str,
                path: &[&str],
            ) -> ::std::result::Result<$crate::data::ResolvedKey<Self>, $crate::KeyPathError> {
                $crate::__private::string_key::<Self>(field, path)
            }
        }
        impl $crate::data::KeyField for $ty {
            fn event_key(&self) -> ::std::option::Option<$crate::EventKey> {
                ::std::option::Option::Some($crate::EventKey::String(self.as_str().to_owned()))
            }
        }
    };
}

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

    /// The Avro field entries of this record, in order.
    fn avro_fields(cx: &mut SchemaContext) -> Vec<Value>;

    /// Resolves an `event_key_field` path (already split on `.`) inside this record.
    fn resolve_key_path(path: &[&str]) -> Result<ResolvedKey<Self>, KeyPathError>;
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
    if cx.define(T::RECORD_NAME) {
        json!({"name": T::RECORD_NAME, "type": "record", "fields": T::avro_fields(cx)})
    } else {
        Value::String(T::RECORD_NAME.to_owned())
    }
}

/// Error for a key path segment that names no field of `record`.
pub fn no_such_field<T: EventDataInfo>(segment: &str) -> KeyPathError {
    KeyPathError::NoSuchField {
        field: segment.to_owned(),
        record: T::RECORD_NAME.to_owned(),
        valid: T::FIELDS.iter().map(|f| f.name.to_owned()).collect(),
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
            shape: Shape::Record(T::RECORD_NAME).to_string(),
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
