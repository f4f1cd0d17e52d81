//! Schema files and schema evolution: `write_schemas` writes what openedx-events'
//! `generate_avro_schemas` writes, `check_compatibility` passes the catalog against the
//! committed 11.2.0 schemas and names event, field and direction of every hand-made break,
//! and the registry text and canonical form agree with independent implementations.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use openedx_events::avro::{self, Direction, Incompatibility, Problem};
use openedx_events::registry;
use serde_json::{json, Value};

const COMMITTED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/openedx-schemas");

fn committed(event_type: &str) -> Value {
    let path = Path::new(COMMITTED).join(avro::schema_file_name(event_type));
    serde_json::from_str(&std::fs::read_to_string(&path).expect("committed schema")).expect("JSON")
}

fn write(dir: &Path, event_type: &str, schema: &Value) {
    std::fs::write(dir.join(avro::schema_file_name(event_type)), schema.to_string()).expect("write");
}

/// The fields of record `path` (`fields/0/type/fields`...) inside a schema.
fn fields<'a>(schema: &'a mut Value, pointer: &str) -> &'a mut Vec<Value> {
    schema
        .pointer_mut(pointer)
        .and_then(Value::as_array_mut)
        .unwrap_or_else(|| panic!("no fields at {pointer}"))
}

#[test]
fn the_catalog_reads_and_is_read_by_the_committed_schemas() {
    assert_eq!(avro::check_compatibility(COMMITTED), Ok(72));
    assert_eq!(avro::assert_compatible(COMMITTED), 72);
}

#[test]
fn hand_made_breaks_are_named_by_event_field_and_direction() {
    let dir = tempfile::tempdir().expect("temp dir");
    let published = "org.openedx.content_authoring.xblock.published.v1";
    let deleted = "org.openedx.content_authoring.xblock.deleted.v1";
    let updated = "org.openedx.content_authoring.xblock.updated.v1";
    let enrolled = "org.openedx.learning.course.enrollment.created.v1";
    let changed = "org.openedx.learning.course.enrollment.changed.v1";

    // A field added without a default: the committed schema lacks `block_type`.
    let mut s = committed(published);
    fields(&mut s, "/fields/0/type/fields").retain(|f| f["name"] != "block_type");
    write(dir.path(), published, &s);
    // A field removed without a default: the committed schema has a `size` we lack.
    let mut s = committed(deleted);
    fields(&mut s, "/fields/0/type/fields").push(json!({"name": "size", "type": "long"}));
    write(dir.path(), deleted, &s);
    // A field with a default is no break either way.
    let mut s = committed(updated);
    fields(&mut s, "/fields/0/type/fields").push(json!({"name": "note", "type": ["null", "string"], "default": null}));
    write(dir.path(), updated, &s);
    // A type changed: `email` was a long. UserData is also `created_by`'s record.
    let mut s = committed(enrolled);
    let pii = s
        .pointer_mut("/fields/0/type/fields/0/type/fields/2/type/fields/1")
        .expect("email");
    assert_eq!(pii["name"], "email");
    pii["type"] = json!("long");
    write(dir.path(), enrolled, &s);
    // Not JSON; and an event type nobody registered.
    std::fs::write(dir.path().join(avro::schema_file_name(changed)), "{").expect("write");
    write(
        dir.path(),
        "org.openedx.learning.nothing.here.v1",
        &committed(published),
    );
    // Other files are not schemas.
    std::fs::write(dir.path().join("README.md"), "schemas").expect("write");

    let found = avro::check_compatibility(dir.path()).expect_err("breaks found");
    let got: BTreeSet<(String, Option<Direction>, String, String)> = found
        .iter()
        .map(|i: &Incompatibility| {
            let kind = match &i.problem {
                Problem::MissingDefault => "missing default".to_owned(),
                Problem::TypeChanged { reader, writer } => format!("{writer} -> {reader}"),
                Problem::Invalid { .. } => "invalid".to_owned(),
                Problem::UnknownEvent => "unknown".to_owned(),
                other => format!("{other:?}"),
            };
            (i.event_type.clone(), i.direction, i.field.clone(), kind)
        })
        .collect();
    let new_reads_old = Some(Direction::CurrentReadsCommitted);
    let old_reads_new = Some(Direction::CommittedReadsCurrent);
    let want: BTreeSet<(String, Option<Direction>, String, String)> = [
        (published, new_reads_old, "xblock_info.block_type", "missing default"),
        (deleted, old_reads_new, "xblock_info.size", "missing default"),
        (enrolled, new_reads_old, "enrollment.user.pii.email", "long -> string"),
        (
            enrolled,
            new_reads_old,
            "enrollment.created_by.pii.email",
            "long -> string",
        ),
        (enrolled, old_reads_new, "enrollment.user.pii.email", "string -> long"),
        (
            enrolled,
            old_reads_new,
            "enrollment.created_by.pii.email",
            "string -> long",
        ),
        (changed, None, "", "invalid"),
        ("org.openedx.learning.nothing.here.v1", None, "", "unknown"),
    ]
    .into_iter()
    .map(|(e, d, f, k)| (e.to_owned(), d, f.to_owned(), k.to_owned()))
    .collect();
    assert_eq!(got, want, "{found:#?}");
    assert_eq!(found.len(), want.len(), "no duplicates");

    // The message names the event, the field and the direction.
    let msg = found
        .iter()
        .find(|i| i.event_type == deleted)
        .expect("deleted")
        .to_string();
    assert!(msg.contains(deleted) && msg.contains("`xblock_info.size`"), "{msg}");
    assert!(
        msg.contains("the committed schema cannot read data written with the current one"),
        "{msg}"
    );

    // The test helper panics with every line.
    let panic = std::panic::catch_unwind(|| avro::assert_compatible(dir.path())).expect_err("panics");
    let text = panic.downcast_ref::<String>().expect("message");
    assert!(text.starts_with("8 schema incompatibilities"), "{text}");
}

#[test]
fn a_missing_directory_is_an_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let found = avro::check_compatibility(dir.path().join("nope")).expect_err("no directory");
    assert!(matches!(
        found[..],
        [Incompatibility {
            problem: Problem::Invalid { .. },
            ..
        }]
    ));
    // An empty directory checks nothing, and says so.
    assert_eq!(avro::check_compatibility(dir.path()), Ok(0));
}

#[test]
fn write_schemas_writes_what_openedx_events_writes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("schemas");
    let written = avro::write_schemas(&out).expect("written");
    assert_eq!(written.len(), registry::events().len());
    assert_eq!(written.len(), 72, "this test binary registers the catalog only");
    let mut names: Vec<String> = written
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut want: Vec<String> = std::fs::read_dir(COMMITTED)
        .expect("committed dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    want.sort();
    assert_eq!(names, want);
    // Byte for byte what `json.dumps(schema, indent=2)` wrote in openedx-events 11.2.0.
    for path in &written {
        let name = path.file_name().unwrap();
        let ours = std::fs::read(path).expect("ours");
        let theirs = std::fs::read(Path::new(COMMITTED).join(name)).expect("theirs");
        assert!(ours == theirs, "{} differs", name.to_string_lossy());
    }
    assert_eq!(avro::check_compatibility(&out), Ok(72));

    // One event only, into an existing directory.
    let one = registry::find("org.openedx.content_authoring.xblock.published.v1").expect("registered");
    let written = avro::write_schema_files(dir.path(), [one]).expect("written");
    assert_eq!(
        written,
        [dir.path()
            .join("org+openedx+content_authoring+xblock+published+v1_schema.avsc")]
    );
}

/// `registry_text` is `json.dumps(schema, sort_keys=True)`, as Python computes it.
#[test]
fn registry_text_is_what_python_registers() {
    let script = r#"
import json, os, sys
d = sys.argv[1]
for n in sorted(os.listdir(d)):
    if n.endswith("_schema.avsc"):
        print(n[: -len("_schema.avsc")].replace("+", "."), json.dumps(json.load(open(os.path.join(d, n))), sort_keys=True))
"#;
    let out = Command::new("python3")
        .args(["-c", script, COMMITTED])
        .output()
        .expect("python3 runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).expect("UTF-8");
    let mut n = 0;
    for line in text.lines() {
        let (event_type, python) = line.split_once(' ').expect("two columns");
        let def = registry::find(event_type).unwrap_or_else(|| panic!("{event_type} not registered"));
        assert_eq!(def.ops().schema().registry_text(), python, "{event_type}");
        n += 1;
    }
    assert_eq!(n, 72);
}

/// CRC-64-AVRO, as the Avro specification gives it.
fn rabin(bytes: &[u8]) -> u64 {
    const EMPTY: u64 = 0xc15d_213a_a4d7_a795;
    let table: Vec<u64> = (0..256u64)
        .map(|i| (0..8).fold(i, |fp, _| (fp >> 1) ^ (EMPTY & (fp & 1).wrapping_neg())))
        .collect();
    bytes
        .iter()
        .fold(EMPTY, |fp, b| (fp >> 8) ^ table[((fp ^ u64::from(*b)) & 0xff) as usize])
}

/// The canonical form fingerprints to what serde_avro_fast computes from its own parse.
#[test]
fn canonical_form_fingerprints_agree() {
    let mut forms = BTreeSet::new();
    for def in registry::events() {
        let schema = def.ops().schema();
        assert_eq!(
            rabin(schema.canonical_form().as_bytes()).to_le_bytes(),
            schema.fingerprint(),
            "{}: {}",
            def.event_type,
            schema.canonical_form()
        );
        assert!(!schema.canonical_form().contains(' '), "{}", def.event_type);
        assert!(
            schema
                .canonical_form()
                .starts_with(&format!("{{\"name\":\"{}.CloudEvent\"", def.event_type)),
            "{}",
            def.event_type
        );
        forms.insert(schema.canonical_form().to_owned());
    }
    assert_eq!(forms.len(), 72, "event types differ by namespace");
}
