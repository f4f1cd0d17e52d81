//! Every supported field type: its Avro schema, a round trip through schemaless
//! Avro and through JSON, and keys read from each scalar kind.

use std::collections::{BTreeMap, HashMap};

use chrono::{TimeZone, Utc};
use openedx_events::keys::{CourseKey, LibraryLocatorV2, UsageKey};
use openedx_events::{avro, openedx_event, EventData, EventKey, Map, OpenEdxEvent};
use serde_json::json;
use uuid::Uuid;

/// A nested record.
#[derive(EventData, Clone, Debug, PartialEq)]
pub struct Inner {
    /// A label.
    pub label: String,
}

/// Sent in this test, with one field of each supported type.
#[openedx_event("org.openedx.learning.test_fields.sent.v1")]
#[derive(Clone, Debug, PartialEq)]
pub struct AllFields {
    /// text
    pub text: String,
    /// flag
    pub flag: bool,
    /// long
    pub long: i64,
    /// int
    pub int: i32,
    /// unsigned
    pub unsigned: u32,
    /// real
    pub real: f64,
    /// raw bytes
    pub raw: Vec<u8>,
    /// optional
    pub maybe: Option<String>,
    /// list
    pub list: Vec<i64>,
    /// ordered map
    pub map: Map<String>,
    /// hash map
    pub hash: HashMap<String, bool>,
    /// btree map
    pub btree: BTreeMap<String, f64>,
    /// nested
    pub inner: Inner,
    /// nested again: referenced by name in the schema
    pub inners: Vec<Inner>,
    /// optional nested
    pub maybe_inner: Option<Inner>,
    /// date-time
    pub when: chrono::DateTime<Utc>,
    /// uuid
    pub id: Uuid,
    /// course key
    pub course: CourseKey,
    /// usage key
    pub usage: UsageKey,
    /// library key
    pub library: LibraryLocatorV2,
    /// the Rust keyword `type`, written `type` on the wire
    pub r#type: String,
}

fn sample() -> AllFields {
    AllFields {
        text: "héllo".into(),
        flag: true,
        long: i64::MIN,
        int: -7,
        unsigned: u32::MAX,
        real: 1.5e300,
        raw: vec![0, 255, 10],
        maybe: None,
        list: vec![1, -1, i64::MAX],
        map: [("b".to_string(), "2".to_string()), ("a".to_string(), "1".to_string())]
            .into_iter()
            .collect(),
        hash: [("x".to_string(), false)].into_iter().collect(),
        btree: [("k".to_string(), 0.25)].into_iter().collect(),
        inner: Inner { label: "one".into() },
        inners: vec![Inner { label: "two".into() }],
        maybe_inner: Some(Inner { label: "three".into() }),
        when: Utc.with_ymd_and_hms(2026, 11, 27, 13, 20, 5).unwrap() + chrono::Duration::microseconds(364687),
        id: Uuid::parse_str("5c5b3c4e-8f5e-11ef-9c3a-0242ac120002").unwrap(),
        course: "course-v1:edX+DemoX+2026".parse().unwrap(),
        usage: "block-v1:edX+DemoX+2026+type@video+block@intro".parse().unwrap(),
        library: "lib:edX:demo".parse().unwrap(),
        r#type: "kind".into(),
    }
}

#[test]
fn schema_maps_each_type() {
    let fields = &AllFields::avro_schema().json()["fields"];
    let ty = |name: &str| {
        fields
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["name"] == name)
            .unwrap_or_else(|| panic!("{name}"))
            .clone()
    };
    assert_eq!(ty("text")["type"], "string");
    assert_eq!(ty("flag")["type"], "boolean");
    assert_eq!(ty("long")["type"], "long");
    assert_eq!(ty("int")["type"], "long");
    assert_eq!(ty("unsigned")["type"], "long");
    assert_eq!(ty("real")["type"], "double");
    assert_eq!(ty("raw")["type"], "bytes");
    assert_eq!(
        ty("maybe"),
        json!({"name": "maybe", "type": ["null", "string"], "default": null})
    );
    assert_eq!(ty("list")["type"], json!({"type": "array", "items": "long"}));
    assert_eq!(ty("map")["type"], json!({"type": "map", "values": "string"}));
    assert_eq!(ty("hash")["type"], json!({"type": "map", "values": "boolean"}));
    assert_eq!(ty("btree")["type"], json!({"type": "map", "values": "double"}));
    assert_eq!(
        ty("inner")["type"],
        json!({"name": "Inner", "type": "record", "fields": [{"name": "label", "type": "string"}]})
    );
    assert_eq!(
        ty("inners")["type"],
        json!({"type": "array", "items": "Inner"}),
        "defined once, then by name"
    );
    assert_eq!(ty("maybe_inner")["type"], json!(["null", "Inner"]));
    for name in ["when", "id", "course", "usage", "library", "type"] {
        assert_eq!(ty(name)["type"], "string", "{name}");
    }
    assert_eq!(AllFields::avro_schema().json()["name"], "CloudEvent");
    assert_eq!(AllFields::avro_schema().json()["namespace"], AllFields::EVENT_TYPE);
}

#[test]
fn avro_and_json_round_trips() {
    let event = sample();
    let bytes = avro::encode(&event).unwrap();
    assert_eq!(avro::decode::<AllFields>(&bytes).unwrap(), event);

    let json = serde_json::to_value(&event).unwrap();
    assert_eq!(json["when"], "2026-11-27T13:20:05.364687+00:00");
    assert_eq!(json["id"], "5c5b3c4e-8f5e-11ef-9c3a-0242ac120002");
    assert_eq!(json["type"], "kind");
    assert_eq!(json["maybe"], serde_json::Value::Null);
    let keys: Vec<&String> = json["map"].as_object().unwrap().keys().collect();
    assert_eq!(keys, ["b", "a"], "map order is kept");
    let back: AllFields = serde_json::from_value(json).unwrap();
    assert_eq!(back, event);
}

#[test]
fn absent_optional_fields_read_as_none_and_required_ones_fail() {
    let mut json = serde_json::to_value(sample()).unwrap();
    json.as_object_mut().unwrap().remove("maybe_inner");
    let back: AllFields = serde_json::from_value(json.clone()).unwrap();
    assert_eq!(back.maybe_inner, None);
    json.as_object_mut().unwrap().remove("course");
    let err = serde_json::from_value::<AllFields>(json).unwrap_err().to_string();
    assert!(err.contains("missing field `course`"), "{err}");
}

#[test]
fn invalid_keys_and_times_are_refused_when_read() {
    let mut json = serde_json::to_value(sample()).unwrap();
    json["course"] = json!("not a course");
    let err = serde_json::from_value::<AllFields>(json).unwrap_err().to_string();
    assert!(err.contains("invalid course key"), "{err}");
    let mut json = serde_json::to_value(sample()).unwrap();
    json["when"] = json!("yesterday");
    let err = serde_json::from_value::<AllFields>(json).unwrap_err().to_string();
    assert!(err.contains("invalid date-time"), "{err}");
}

#[test]
fn keys_from_each_scalar_kind() {
    let event = sample();
    let ops = openedx_events::registry::find(AllFields::EVENT_TYPE).unwrap().ops();
    let key = |path: &str| {
        let k = ops.resolve_key(path).unwrap_or_else(|e| panic!("{path}: {e}"));
        ((k.accessor)(&event), k.avro_type)
    };
    assert_eq!(key("text"), (Some(EventKey::String("héllo".into())), "string"));
    assert_eq!(key("flag"), (Some(EventKey::Boolean(true)), "boolean"));
    assert_eq!(key("long"), (Some(EventKey::Long(i64::MIN)), "long"));
    assert_eq!(key("int"), (Some(EventKey::Long(-7)), "long"));
    assert_eq!(key("real"), (Some(EventKey::Double(1.5e300)), "double"));
    assert_eq!(key("maybe"), (None, "string"));
    assert_eq!(key("inner.label"), (Some(EventKey::String("one".into())), "string"));
    assert_eq!(
        key("maybe_inner.label"),
        (Some(EventKey::String("three".into())), "string")
    );
    assert_eq!(
        key("when"),
        (
            Some(EventKey::String("2026-11-27T13:20:05.364687+00:00".into())),
            "string"
        )
    );
    assert_eq!(
        key("id"),
        (
            Some(EventKey::String("5c5b3c4e-8f5e-11ef-9c3a-0242ac120002".into())),
            "string"
        )
    );
    assert_eq!(
        key("course"),
        (Some(EventKey::String("course-v1:edX+DemoX+2026".into())), "string")
    );
    for bad in ["raw", "list", "map", "inner", "inners.label"] {
        assert!(ops.resolve_key(bad).is_err(), "{bad} is not a key");
    }
}

/// Records are read field by field in declaration order when the data follows it, and
/// by name otherwise: whatever position the order breaks at, the event read is the same,
/// and an unknown, repeated or missing field is refused by name.
#[test]
fn fields_are_read_in_any_order_wherever_the_order_breaks() {
    use openedx_events::EventDataInfo;
    let event = sample();
    let value = serde_json::to_value(&event).unwrap();
    let fields: Vec<(&str, String)> = AllFields::FIELDS
        .iter()
        .map(|f| (f.name, value[f.name].to_string()))
        .collect();
    let text = |entries: &[(&str, String)]| {
        let body: Vec<String> = entries.iter().map(|(k, v)| format!("{k:?}: {v}")).collect();
        format!("{{{}}}", body.join(", "))
    };
    let read = |entries: &[(&str, String)]| serde_json::from_str::<AllFields>(&text(entries));
    assert_eq!(read(&fields).unwrap(), event, "declaration order");
    for i in 0..=fields.len() {
        let mut with_unknown = fields.clone();
        with_unknown.insert(i, ("unknown", r#"{"nested": [1, 2]}"#.to_owned()));
        let err = read(&with_unknown).expect_err("JSON with an unknown field").to_string();
        assert!(err.contains("unknown field `unknown`"), "unknown field at {i}: {err}");
    }
    for i in 0..fields.len() {
        let name = fields[i].0;
        let mut moved = fields.clone();
        let f = moved.remove(i);
        moved.push(f);
        assert_eq!(read(&moved).unwrap(), event, "{name} moved to the end");

        let mut twice = fields.clone();
        twice.insert(i + 1, fields[i].clone());
        let err = read(&twice).unwrap_err().to_string();
        assert!(
            err.contains(&format!("duplicate field `{name}`")),
            "{name} twice: {err}"
        );

        let mut missing = fields.clone();
        missing.remove(i);
        match read(&missing) {
            Ok(_) => assert!(
                AllFields::FIELDS[i].rust_type.starts_with("Option<"),
                "{name} is required"
            ),
            Err(e) => assert!(
                e.to_string().contains(&format!("missing field `{name}`")),
                "{name}: {e}"
            ),
        }
    }
    // Reversed: every field out of order.
    let reversed: Vec<_> = fields.iter().rev().cloned().collect();
    assert_eq!(read(&reversed).unwrap(), event, "reversed");
}

/// Python refuses falsy values (`0`, `False`, `""`) as missing arguments and reads falsy
/// values of defaulted fields back as their default. Here they are values like any
/// other: sent, received, written and read unchanged.
#[test]
fn falsy_values_are_values() {
    let falsy = AllFields {
        text: String::new(),
        flag: false,
        long: 0,
        int: 0,
        unsigned: 0,
        real: 0.0,
        raw: Vec::new(),
        maybe: Some(String::new()),
        list: Vec::new(),
        map: Map::new(),
        hash: HashMap::new(),
        btree: BTreeMap::new(),
        inner: Inner { label: String::new() },
        inners: Vec::new(),
        maybe_inner: Some(Inner { label: String::new() }),
        r#type: String::new(),
        ..sample()
    };
    let seen = std::sync::Arc::new(std::sync::Mutex::new(None));
    let s = seen.clone();
    let id = AllFields::signal().connect(move |ev| *s.lock().unwrap() = Some((*ev.data).clone()));
    AllFields::signal().send_event(falsy.clone());
    AllFields::signal().disconnect(id);
    assert_eq!(seen.lock().unwrap().take().as_ref(), Some(&falsy), "received");

    let bytes = avro::encode(&falsy).unwrap();
    assert_eq!(avro::decode::<AllFields>(&bytes).unwrap(), falsy, "Avro");
    let json = serde_json::to_value(&falsy).unwrap();
    assert_eq!(json["maybe"], "");
    assert_eq!(json["maybe_inner"]["label"], "");
    assert_eq!(serde_json::from_value::<AllFields>(json).unwrap(), falsy, "JSON");
}

/// An optional field written through a type alias of `Option`.
pub type Maybe<T> = Option<T>;

/// Sent in this test, with an optional field spelled through an alias.
#[openedx_event("org.openedx.learning.test_fields.aliased.v1")]
#[derive(Clone, Debug, PartialEq)]
pub struct AliasedOptional {
    /// An id.
    pub id: i64,
    /// A note, optional through `Maybe`.
    pub note: Maybe<String>,
}

/// Whether a field may be absent is decided from its type, not its spelling: the
/// schema gives `note` a default, so old data and JSON without it must read as `None`.
#[test]
fn an_optional_field_through_a_type_alias_may_be_absent() {
    let fields = &AliasedOptional::avro_schema().json()["fields"];
    assert_eq!(
        fields[1],
        json!({"name": "note", "type": ["null", "string"], "default": null})
    );
    let from_json: AliasedOptional = serde_json::from_value(json!({"id": 4})).expect("JSON without `note`");
    assert_eq!(from_json, AliasedOptional { id: 4, note: None });
    let old: serde_avro_fast::Schema = r#"{"type": "record", "name": "CloudEvent", "fields": [
        {"name": "id", "type": "long"}]}"#
        .parse()
        .unwrap();
    let from_old: AliasedOptional = avro::decode_with_writer_schema(&[8], &old).expect("old data without `note`");
    assert_eq!(from_old, AliasedOptional { id: 4, note: None });
}

/// Reads `AllFields` from JSON the way the CLI does.
fn from_json(value: serde_json::Value) -> Result<(), String> {
    let ops = openedx_events::registry::find(AllFields::EVENT_TYPE).unwrap().ops();
    ops.from_json(&value).map(drop).map_err(|e| e.to_string())
}

/// JSON input (the CLI's `produce` and `avro encode` read it through `EventOps::from_json`)
/// refuses keys the record does not have, at the top and nested, naming where.
#[test]
fn json_input_refuses_unknown_keys_naming_the_path() {
    let good = serde_json::to_value(sample()).unwrap();
    assert!(from_json(good.clone()).is_ok());

    let mut top = good.clone();
    top["extra"] = json!(null);
    let err = from_json(top.clone()).expect_err("a top-level `extra`");
    assert!(err.contains("unknown field `extra`"), "{err}");
    assert!(serde_json::from_value::<AllFields>(top).is_err(), "serde_json directly");

    let mut nested = good.clone();
    nested["inner"]["lable"] = json!("typo");
    let err = from_json(nested).expect_err("a typo in a nested record");
    assert!(err.contains("inner") && err.contains("unknown field `lable`"), "{err}");

    let mut in_list = good.clone();
    in_list["inners"][0]["strat"] = json!(1);
    let err = from_json(in_list).expect_err("a typo in a record in a list");
    assert!(
        err.contains("inners[0]") && err.contains("unknown field `strat`"),
        "{err}"
    );

    let mut in_option = good;
    in_option["maybe_inner"]["createdby"] = json!(null);
    let err = from_json(in_option).expect_err("a typo in an optional record");
    assert!(
        err.contains("maybe_inner") && err.contains("unknown field `createdby`"),
        "{err}"
    );
}

/// A record is a JSON object: its fields given as a positional array are refused.
#[test]
fn json_records_as_positional_arrays_are_refused() {
    let inner = serde_json::from_value::<Inner>(json!(["one"]));
    assert!(inner.is_err(), "{inner:?}");
    let good = serde_json::to_value(sample()).unwrap();
    let positional: Vec<serde_json::Value> = <AllFields as openedx_events::EventDataInfo>::FIELDS
        .iter()
        .map(|f| good[f.name].clone())
        .collect();
    let err = from_json(serde_json::Value::Array(positional)).expect_err("positional");
    assert!(err.contains("expected"), "{err}");
}

/// Sent in this test: a nested record, read with a writer schema that has more fields.
#[openedx_event("org.openedx.learning.test_fields.nested.v1")]
#[derive(Clone, Debug, PartialEq)]
pub struct Nested {
    /// A record.
    pub inner: Inner,
    /// Records in a list.
    pub inners: Vec<Inner>,
}

/// Avro data written with another schema (a newer producer's) is resolved by name: the
/// writer's fields the reader lacks are skipped, at the top and in nested records.
#[test]
fn avro_with_a_writer_schema_still_skips_fields_the_reader_lacks() {
    let writer: serde_avro_fast::Schema = r#"{"type": "record", "name": "CloudEvent", "fields": [
        {"name": "inner", "type": {"type": "record", "name": "Inner", "fields": [
            {"name": "label", "type": "string"}, {"name": "added", "type": "long"}]}},
        {"name": "inners", "type": {"type": "array", "items": "Inner"}},
        {"name": "extra", "type": "string"}]}"#
        .parse()
        .unwrap();
    let bytes = [2, b'a', 6, 2, 2, b'b', 0, 0, 2, b'z'];
    let event: Nested = avro::decode_with_writer_schema(&bytes, &writer).expect("resolved");
    assert_eq!(
        event,
        Nested {
            inner: Inner { label: "a".into() },
            inners: vec![Inner { label: "b".into() }],
        }
    );
}

/// Sent in this test: bytes fields, for data written as strings.
#[openedx_event("org.openedx.learning.test_fields.blob.v1")]
#[derive(Clone, Debug, PartialEq)]
pub struct Blob {
    /// Bytes.
    pub data: Vec<u8>,
    /// Optional bytes.
    pub maybe: Option<Vec<u8>>,
    /// Bytes in a list.
    pub list: Vec<Vec<u8>>,
}

/// Sent in this test: string fields, for data written as bytes.
#[openedx_event("org.openedx.learning.test_fields.text.v1")]
#[derive(Clone, Debug, PartialEq)]
pub struct Text {
    /// A string.
    pub text: String,
    /// An optional string.
    pub maybe: Option<String>,
}

/// `string` and `bytes` promote to each other (Avro's resolution rules): what the
/// evolution check accepts, `decode_with_writer_schema` reads, both ways.
#[test]
fn string_and_bytes_promotions_decode_as_the_evolution_check_allows() {
    let as_strings = json!({"type": "record", "name": "CloudEvent", "fields": [
        {"name": "data", "type": "string"},
        {"name": "maybe", "type": ["null", "string"], "default": null},
        {"name": "list", "type": {"type": "array", "items": "string"}}]});
    assert_eq!(avro::schema_mismatches(Blob::avro_schema().json(), &as_strings), []);
    let writer: serde_avro_fast::Schema = as_strings.to_string().parse().unwrap();
    let bytes = [&[10][..], "café".as_bytes(), &[2, 2, b'x', 2, 4, b'a', b'b', 0]].concat();
    let blob: Blob = avro::decode_with_writer_schema(&bytes, &writer).expect("strings read as bytes");
    assert_eq!(
        blob,
        Blob {
            data: "café".as_bytes().to_vec(),
            maybe: Some(b"x".to_vec()),
            list: vec![b"ab".to_vec()],
        }
    );

    let as_bytes = json!({"type": "record", "name": "CloudEvent", "fields": [
        {"name": "text", "type": "bytes"},
        {"name": "maybe", "type": ["null", "bytes"], "default": null}]});
    assert_eq!(avro::schema_mismatches(Text::avro_schema().json(), &as_bytes), []);
    let writer: serde_avro_fast::Schema = as_bytes.to_string().parse().unwrap();
    let bytes = [&[10][..], "café".as_bytes(), &[2, 2, b'x']].concat();
    let text: Text = avro::decode_with_writer_schema(&bytes, &writer).expect("bytes read as strings");
    assert_eq!(
        text,
        Text {
            text: "café".into(),
            maybe: Some("x".into()),
        }
    );
    // JSON gives bytes as numbers: a string there is refused, not taken as its UTF-8.
    let err = serde_json::from_value::<Blob>(json!({"data": "abc", "maybe": null, "list": []}))
        .expect_err("a JSON string for bytes")
        .to_string();
    assert!(err.contains("invalid type: string"), "{err}");
    // Bytes that are not UTF-8 cannot be a string: an error, not a panic.
    let err = avro::decode_with_writer_schema::<Text>(&[2, 0xff, 0], &writer).expect_err("not UTF-8");
    assert!(
        err.to_string().contains("Text") || err.to_string().contains("text.v1"),
        "{err}"
    );
}

/// Records named like the items and type parameters a derive might generate.
mod shadowing {
    use openedx_events::{openedx_event, EventData, Map};

    /// Named `Field`.
    #[derive(EventData, Clone, Debug, PartialEq)]
    pub struct Field {
        /// A number.
        pub x: i64,
    }

    /// Named `FieldVisitor`.
    #[derive(EventData, Clone, Debug, PartialEq)]
    pub struct FieldVisitor {
        /// A `Field`.
        pub field: Field,
    }

    /// Named `RecordVisitor`.
    #[derive(EventData, Clone, Debug, PartialEq)]
    pub struct RecordVisitor {
        /// A `FieldVisitor`.
        pub visitor: FieldVisitor,
        /// `Field`s.
        pub fields: Vec<Field>,
    }

    /// Named `D`.
    #[derive(EventData, Clone, Debug, PartialEq)]
    pub struct D {
        /// A flag.
        pub flag: bool,
    }

    /// Named `S`.
    #[derive(EventData, Clone, Debug, PartialEq)]
    pub struct S {
        /// A `D`.
        pub d: Option<D>,
    }

    /// An event named `A`, with fields of all of them.
    #[openedx_event("org.openedx.learning.test_fields.shadowing.v1")]
    #[derive(Clone, Debug, PartialEq)]
    pub struct A {
        /// A `Field`.
        pub field: Field,
        /// A `RecordVisitor`.
        pub record: Option<RecordVisitor>,
        /// A map of `S`.
        pub s: Map<S>,
        /// A `D`.
        pub d: D,
    }
}

/// A record or field type named `Field`, `FieldVisitor`, `RecordVisitor`, `A`, `D` or
/// `S` is not shadowed by what the macros generate: it compiles and round-trips.
#[test]
fn records_named_like_generated_items_compile_and_round_trip() {
    use shadowing::*;
    let event = A {
        field: Field { x: 1 },
        record: Some(RecordVisitor {
            visitor: FieldVisitor { field: Field { x: 2 } },
            fields: vec![Field { x: 3 }],
        }),
        s: [(
            "k".to_owned(),
            S {
                d: Some(D { flag: true }),
            },
        )]
        .into_iter()
        .collect(),
        d: D { flag: false },
    };
    let bytes = avro::encode(&event).unwrap();
    assert_eq!(avro::decode::<A>(&bytes).unwrap(), event);
    let json = serde_json::to_value(&event).unwrap();
    assert_eq!(serde_json::from_value::<A>(json.clone()).unwrap(), event);
    // An unknown key in a record that is a map value is refused too, with its path.
    let mut typo = json;
    typo["s"]["k"]["dd"] = json!(null);
    let ops = openedx_events::registry::find(A::EVENT_TYPE).unwrap().ops();
    let err = ops.from_json(&typo).map(drop).expect_err("unknown key").to_string();
    assert!(err.contains("s.k") && err.contains("unknown field `dd`"), "{err}");
}

/// Type strings that differ only where the old alias spelling merged them.
mod aliases {
    use openedx_events::openedx_event;

    /// `a__b`.
    #[openedx_event("org.openedx.learning.test_alias.a__b.v1")]
    #[derive(Clone, Debug, PartialEq)]
    pub struct Underscores {
        /// An id.
        pub id: i64,
    }

    /// `a.b`.
    #[openedx_event("org.openedx.learning.test_alias.a.b.v1")]
    #[derive(Clone, Debug, PartialEq)]
    pub struct Dotted {
        /// An id.
        pub id: i64,
    }

    /// `b-c`.
    #[openedx_event("org.openedx.learning.test_alias.b-c.v1")]
    #[derive(Clone, Debug, PartialEq)]
    pub struct Hyphen {
        /// An id.
        pub id: i64,
    }

    /// `b_x2d_c`.
    #[openedx_event("org.openedx.learning.test_alias.b_x2d_c.v1")]
    #[derive(Clone, Debug, PartialEq)]
    pub struct Spelled {
        /// An id.
        pub id: i64,
    }
}

/// Each type string names its own event in `producer_config!`, however close the
/// strings are.
#[test]
fn close_type_strings_name_their_own_events() {
    use aliases::*;
    let config = openedx_events::producer_config! {
        "org.openedx.learning.test_alias.a__b.v1" => [{ topic: "t1", event_key_field: "id", enabled: true }],
        "org.openedx.learning.test_alias.a.b.v1" => [{ topic: "t2", event_key_field: "id", enabled: true }],
        "org.openedx.learning.test_alias.b-c.v1" => [{ topic: "t3", event_key_field: "id", enabled: true }],
        "org.openedx.learning.test_alias.b_x2d_c.v1" => [{ topic: "t4", event_key_field: "id", enabled: true }],
    };
    let got: Vec<(&str, &str)> = config.routes().iter().map(|r| (r.event_type, r.topic)).collect();
    assert_eq!(
        got,
        [
            (Underscores::EVENT_TYPE, "t1"),
            (Dotted::EVENT_TYPE, "t2"),
            (Hyphen::EVENT_TYPE, "t3"),
            (Spelled::EVENT_TYPE, "t4"),
        ]
    );
    assert_eq!(Underscores::EVENT_TYPE, "org.openedx.learning.test_alias.a__b.v1");
    assert_eq!(Spelled::EVENT_TYPE, "org.openedx.learning.test_alias.b_x2d_c.v1");
}
