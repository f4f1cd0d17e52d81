//! The catalog against the wire: every Avro schema that openedx-events 11.2.0 generates
//! (`shared/openedx-schemas/*.avsc`) must have a registered catalog event whose generated
//! schema is identical, field order included, and every catalog event must have such a file.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

const SCHEMA_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/openedx-schemas");

/// The catalog events (`openedx_events::catalog::*`) of the registry: event type -> generated
/// Avro schema. Other registered events (defined by tests, say) are left out.
fn catalog_events() -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for def in openedx_events::registry::events() {
        if !def.rust_type.starts_with("openedx_events::catalog::") {
            continue;
        }
        let schema = def.ops().schema().json().clone();
        let previous = out.insert(def.event_type.to_owned(), schema);
        assert!(previous.is_none(), "event type {} is registered twice", def.event_type);
    }
    out
}

/// `*.avsc` files: event type (from the file name) -> parsed schema.
fn wire_schemas() -> BTreeMap<String, Value> {
    let dir = Path::new(SCHEMA_DIR);
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let Some(stem) = name.strip_suffix("_schema.avsc") else {
            continue;
        };
        let text = std::fs::read_to_string(&path).unwrap();
        let schema: Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: invalid JSON: {e}", path.display()));
        let event_type = stem.replace('+', ".");
        assert_eq!(
            schema.get("namespace").and_then(Value::as_str),
            Some(event_type.as_str()),
            "{name}: namespace does not match the file name"
        );
        out.insert(event_type, schema);
    }
    assert_eq!(
        out.len(),
        72,
        "expected the 72 schemas of openedx-events 11.2.0 in {SCHEMA_DIR}"
    );
    out
}

/// Escapes one JSON pointer token (RFC 6901).
fn token(s: &str) -> String {
    s.replace('~', "~0").replace('/', "~1")
}

fn show(v: Option<&Value>) -> String {
    match v {
        None => "(missing)".to_owned(),
        Some(v) => {
            let s = v.to_string();
            if s.len() > 300 {
                format!("{}...", &s[..s.char_indices().nth(300).map_or(s.len(), |(i, _)| i)])
            } else {
                s
            }
        }
    }
}

/// The first difference between `got` and `want`, in document order, as
/// `(JSON pointer, got, want)`. Object key order counts.
fn first_difference(got: &Value, want: &Value, at: &str) -> Option<(String, String, String)> {
    match (got, want) {
        (Value::Object(g), Value::Object(w)) => {
            let gk: Vec<&String> = g.keys().collect();
            let wk: Vec<&String> = w.keys().collect();
            for i in 0..gk.len().max(wk.len()) {
                match (gk.get(i), wk.get(i)) {
                    (Some(a), Some(b)) if a == b => {
                        let p = format!("{at}/{}", token(a));
                        if let Some(d) = first_difference(&g[*a], &w[*b], &p) {
                            return Some(d);
                        }
                    }
                    (a, b) => {
                        let key = b.or(a).unwrap();
                        return Some((
                            format!("{at}/{}", token(key)),
                            format!(
                                "key #{i} is {}: {}",
                                a.map_or("(none)".into(), |k| format!("{k:?}")),
                                show(a.map(|k| &g[*k]))
                            ),
                            format!(
                                "key #{i} is {}: {}",
                                b.map_or("(none)".into(), |k| format!("{k:?}")),
                                show(b.map(|k| &w[*k]))
                            ),
                        ));
                    }
                }
            }
            None
        }
        (Value::Array(g), Value::Array(w)) => {
            for i in 0..g.len().max(w.len()) {
                let p = format!("{at}/{i}");
                match (g.get(i), w.get(i)) {
                    (Some(a), Some(b)) => {
                        if let Some(d) = first_difference(a, b, &p) {
                            return Some(d);
                        }
                    }
                    (a, b) => return Some((p, show(a), show(b))),
                }
            }
            None
        }
        _ if got == want => None,
        _ => Some((
            if at.is_empty() { "/".to_owned() } else { at.to_owned() },
            show(Some(got)),
            show(Some(want)),
        )),
    }
}

#[test]
fn first_difference_reports_pointer_and_order() {
    let a: Value = serde_json::from_str(r#"{"a": 1, "b": [1, {"c/d": 2}]}"#).unwrap();
    let b: Value = serde_json::from_str(r#"{"a": 1, "b": [1, {"c/d": 3}]}"#).unwrap();
    let c: Value = serde_json::from_str(r#"{"b": [1, {"c/d": 2}], "a": 1}"#).unwrap();
    assert_eq!(first_difference(&a, &a, ""), None);
    assert_eq!(first_difference(&a, &b, "").unwrap().0, "/b/1/c~1d");
    // Same content, other key order: a difference (wire schemas are compared with field order).
    assert_eq!(first_difference(&a, &c, "").unwrap().0, "/b");
}

#[test]
fn every_wire_schema_has_an_identical_catalog_event() {
    let wire = wire_schemas();
    let catalog = catalog_events();
    let mut failures = Vec::new();
    for (event_type, want) in &wire {
        let Some(got) = catalog.get(event_type) else {
            failures.push(format!(
                "{event_type}: no registered event (its .avsc has no catalog event)"
            ));
            continue;
        };
        if let Some((pointer, g, w)) = first_difference(got, want, "") {
            failures.push(format!(
                "{event_type}: schemas differ at {pointer}\n    generated: {g}\n    .avsc:     {w}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} schemas fail:\n{}",
        failures.len(),
        wire.len(),
        failures.join("\n")
    );
}

#[test]
fn every_catalog_event_has_a_wire_schema() {
    let wire = wire_schemas();
    let extra: Vec<String> = catalog_events().into_keys().filter(|t| !wire.contains_key(t)).collect();
    assert!(
        extra.is_empty(),
        "registered catalog events with no .avsc in {SCHEMA_DIR}: {extra:?}"
    );
}

#[test]
fn catalog_has_72_events() {
    assert_eq!(
        catalog_events().len(),
        72,
        "{:?}",
        catalog_events().keys().collect::<Vec<_>>()
    );
}

const VECTORS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/avro-vectors.json");

/// `v` with the keys of every object sorted.
fn sorted(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut entries: Vec<(&String, &Value)> = m.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            Value::Object(entries.into_iter().map(|(k, v)| (k.clone(), sorted(v))).collect())
        }
        Value::Array(a) => Value::Array(a.iter().map(sorted).collect()),
        other => other.clone(),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Where two encodings part: lengths, first differing byte, and 16 bytes of each from there.
fn byte_diff(got: &[u8], want: &[u8]) -> String {
    let at = got
        .iter()
        .zip(want)
        .position(|(g, w)| g != w)
        .unwrap_or(got.len().min(want.len()));
    let window = |b: &[u8]| hex(&b[at.min(b.len())..(at + 16).min(b.len())]);
    format!(
        "{} bytes vs {} expected; first difference at byte {at}: got {}.., want {}..",
        got.len(),
        want.len(),
        window(got),
        window(want)
    )
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// The Python-serialized vectors (three per event type) decode into the typed catalog events,
/// re-encode to the same bytes, read back as the same datum, and build from the datum JSON too.
#[test]
fn python_vectors_round_trip_through_the_catalog_types() {
    let text = std::fs::read_to_string(VECTORS).unwrap_or_else(|e| panic!("cannot read {VECTORS}: {e}"));
    let vectors: Vec<Value> = serde_json::from_str(&text).unwrap();
    let catalog = catalog_events();
    let mut failures = Vec::new();
    let mut per_type: BTreeMap<String, usize> = BTreeMap::new();
    for (i, v) in vectors.iter().enumerate() {
        let event_type = v["event_type"].as_str().unwrap();
        *per_type.entry(event_type.to_owned()).or_default() += 1;
        let want = unhex(v["avro_hex"].as_str().unwrap());
        let datum = &v["datum"];
        let Some(def) = openedx_events::registry::find(event_type).filter(|_| catalog.contains_key(event_type)) else {
            failures.push(format!("vector #{i} {event_type}: no catalog event"));
            continue;
        };
        let ops = def.ops();
        // bytes -> typed event -> bytes
        match ops.decode_avro(&want) {
            Err(e) => failures.push(format!("vector #{i} {event_type}: decode failed: {e}")),
            Ok(event) => {
                let mut got = Vec::new();
                if let Err(e) = event.encode_avro(&mut got) {
                    failures.push(format!("vector #{i} {event_type}: re-encode failed: {e}"));
                } else if got != want {
                    failures.push(format!(
                        "vector #{i} {event_type}: re-encoded bytes differ: {}",
                        byte_diff(&got, &want)
                    ));
                }
                // Key order is not compared here: the vectors' datum keys are sorted.
                if let Some((pointer, g, w)) = first_difference(&sorted(&event.to_json()), &sorted(datum), "") {
                    failures.push(format!(
                        "vector #{i} {event_type}: decoded datum differs at {pointer}: got {g}, want {w}"
                    ));
                }
            }
        }
        // datum JSON -> typed event -> bytes
        match ops.from_json(datum) {
            Err(e) => failures.push(format!("vector #{i} {event_type}: from datum JSON failed: {e}")),
            Ok(event) => {
                let mut got = Vec::new();
                match event.encode_avro(&mut got) {
                    Err(e) => failures.push(format!("vector #{i} {event_type}: encode from JSON failed: {e}")),
                    Ok(()) if got != want => failures.push(format!(
                        "vector #{i} {event_type}: bytes encoded from the datum differ: {}",
                        byte_diff(&got, &want)
                    )),
                    Ok(()) => {}
                }
            }
        }
    }
    let missing: Vec<&String> = catalog.keys().filter(|t| !per_type.contains_key(*t)).collect();
    assert!(missing.is_empty(), "catalog events without vectors: {missing:?}");
    assert!(
        failures.is_empty(),
        "{} of {} vector checks fail:\n{}",
        failures.len(),
        vectors.len(),
        failures.join("\n")
    );
}

/// The key fields that the catalog docs name ("Usual event-bus key field", taken from the
/// `event_key_field` annotations of openedx-events where they fit the data) resolve to a scalar.
#[test]
fn documented_key_fields_resolve() {
    let documented = [
        ("org.openedx.analytics.tracking.event.emitted.v1", "tracking_log.name"),
        (
            "org.openedx.content_authoring.course.catalog_info.changed.v1",
            "catalog_info.course_key",
        ),
        (
            "org.openedx.content_authoring.xblock.created.v1",
            "xblock_info.usage_key",
        ),
        (
            "org.openedx.content_authoring.xblock.updated.v1",
            "xblock_info.usage_key",
        ),
        (
            "org.openedx.content_authoring.xblock.published.v1",
            "xblock_info.usage_key",
        ),
        (
            "org.openedx.content_authoring.xblock.deleted.v1",
            "xblock_info.usage_key",
        ),
        (
            "org.openedx.content_authoring.xblock.duplicated.v1",
            "xblock_info.usage_key",
        ),
        (
            "org.openedx.learning.student.registration.completed.v1",
            "user.pii.username",
        ),
        (
            "org.openedx.learning.auth.session.login.completed.v1",
            "user.pii.username",
        ),
        (
            "org.openedx.learning.course.enrollment.created.v1",
            "enrollment.course.course_key",
        ),
        (
            "org.openedx.learning.course.enrollment.changed.v1",
            "enrollment.course.course_key",
        ),
        (
            "org.openedx.learning.course.unenrollment.completed.v1",
            "enrollment.course.course_key",
        ),
        (
            "org.openedx.learning.certificate.created.v1",
            "certificate.course.course_key",
        ),
        (
            "org.openedx.learning.program.certificate.awarded.v1",
            "program_certificate.program.uuid",
        ),
        (
            "org.openedx.learning.certificate.revoked.v1",
            "certificate.course.course_key",
        ),
        (
            "org.openedx.learning.program.certificate.revoked.v1",
            "program_certificate.program.uuid",
        ),
        ("org.openedx.learning.xblock.skill.verified.v1", "xblock_info.usage_key"),
        (
            "org.openedx.learning.user.course_access_role.added.v1",
            "course_access_role_data.course_key",
        ),
        (
            "org.openedx.learning.user.course_access_role.removed.v1",
            "course_access_role_data.course_key",
        ),
    ];
    let catalog = catalog_events();
    for (event_type, path) in documented {
        assert!(catalog.contains_key(event_type), "{event_type}: not in the catalog");
        let def = openedx_events::registry::find(event_type).unwrap();
        let key = def
            .ops()
            .resolve_key(path)
            .unwrap_or_else(|e| panic!("{event_type}: key {path}: {e}"));
        assert_eq!(key.avro_type, "string", "{event_type}: key {path}");
        assert_eq!(
            key.field_name,
            path.rsplit('.').next().unwrap(),
            "{event_type}: key {path}"
        );
    }
}
