//! The tool run as a user runs it, for everything that needs no broker: help and usage
//! errors, `events`, `schema`, `check-config`, `avro encode/decode`, `produce` to the
//! in-memory bus, and `consume` refusing the in-memory bus.

mod common;

use std::collections::BTreeSet;

use common::{cli, enrollment_data, shared, stderr, stdout, ENROLLMENT};
use predicates::prelude::*;
use serde_json::{json, Value};

#[test]
fn help_lists_every_subcommand_and_each_has_its_own() {
    let a = cli().arg("--help").assert().success();
    let out = stdout(&a);
    for sub in ["events", "schema", "check-config", "produce", "consume", "avro"] {
        assert!(out.contains(sub), "{sub} missing from --help:\n{out}");
    }
    assert!(out.contains("Exit codes"), "{out}");
    for args in [
        &["events", "--help"][..],
        &["schema", "--help"],
        &["check-config", "--help"],
        &["produce", "--help"],
        &["consume", "--help"],
        &["avro", "--help"],
        &["avro", "encode", "--help"],
        &["avro", "decode", "--help"],
    ] {
        cli()
            .args(args)
            .assert()
            .success()
            .stdout(predicate::str::contains("Usage: openedx-events"));
    }
    cli()
        .arg("--version")
        .assert()
        .success()
        .stdout(predicate::str::contains(env!("CARGO_PKG_VERSION")));
}

#[test]
fn usage_errors_exit_2() {
    cli().assert().code(2);
    cli()
        .arg("frobnicate")
        .assert()
        .code(2)
        .stderr(predicate::str::contains("unrecognized subcommand"));
    cli()
        .args(["produce", "--event-type", ENROLLMENT, "--topic", "t"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--data"));
    cli()
        .args([
            "consume",
            "--topic",
            "t",
            "--group",
            "g",
            "--from-beginning",
            "--from-id",
            "1-0",
        ])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("cannot be used with"));
    cli().args(["schema", "--force"]).assert().code(2);
    cli()
        .args(["avro", "decode", "--event-type", ENROLLMENT])
        .assert()
        .code(2);
}

/// The event types of the wire schemas in `shared/openedx-schemas`.
fn wire_event_types() -> BTreeSet<String> {
    std::fs::read_dir(shared("openedx-schemas"))
        .expect("shared/openedx-schemas")
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter_map(|n| n.strip_suffix("_schema.avsc").map(|t| t.replace('+', ".")))
        .collect()
}

#[test]
fn events_lists_every_catalog_event_with_version_and_description() {
    let expected = wire_event_types();
    assert_eq!(expected.len(), 72);
    let a = cli().arg("events").assert().success();
    let out = stdout(&a);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 72, "{out}");
    let listed: BTreeSet<String> = lines
        .iter()
        .map(|l| l.split_whitespace().next().unwrap().to_owned())
        .collect();
    assert_eq!(listed, expected);
    for l in &lines {
        let mut parts = l.split_whitespace();
        parts.next();
        assert_eq!(parts.next(), Some("v0"), "{l}");
        assert!(parts.next().is_some(), "no description: {l}");
    }

    let a = cli().args(["events", "--json"]).assert().success();
    let list: Vec<Value> = serde_json::from_str(&stdout(&a)).unwrap();
    assert_eq!(list.len(), 72);
    let enrollment = list.iter().find(|e| e["event_type"] == ENROLLMENT).unwrap();
    assert_eq!(enrollment["minor_version"], 0);
    assert_eq!(
        enrollment["rust_type"],
        "openedx_events::catalog::learning::CourseEnrollmentCreated"
    );
    for e in &list {
        let d = e["description"].as_str().unwrap();
        assert!(!d.is_empty() && !d.contains('\n'), "{e}");
    }

    let a = cli().args(["events", "--filter", "xblock"]).assert().success();
    assert!(stdout(&a).lines().all(|l| l.contains("xblock")));
}

fn wire_schema(event_type: &str) -> Value {
    let path = shared("openedx-schemas").join(openedx_events::avro::schema_file_name(event_type));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn schema_prints_the_wire_schemas() {
    let xblock = "org.openedx.content_authoring.xblock.published.v1";
    let a = cli().args(["schema", ENROLLMENT, xblock]).assert().success();
    let out = stdout(&a);
    let docs: Vec<Value> = serde_json::Deserializer::from_str(&out)
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(docs, vec![wire_schema(ENROLLMENT), wire_schema(xblock)]);

    cli()
        .args(["schema", "org.openedx.learning.course.enrolment.created.v1"])
        .assert()
        .code(2)
        .stdout("")
        .stderr(predicate::str::contains(format!("did you mean \"{ENROLLMENT}\"")));
}

#[test]
fn schema_all_writes_files_named_as_openedx_events_and_refuses_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("schemas");
    cli()
        .args(["schema", "--all", "--out"])
        .arg(&out)
        .assert()
        .success()
        .stderr(predicate::str::contains("wrote 72"));
    let expected: BTreeSet<String> = std::fs::read_dir(shared("openedx-schemas"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    let written: BTreeSet<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(written, expected);
    for name in &written {
        let mine: Value = serde_json::from_str(&std::fs::read_to_string(out.join(name)).unwrap()).unwrap();
        let wire: Value =
            serde_json::from_str(&std::fs::read_to_string(shared("openedx-schemas").join(name)).unwrap()).unwrap();
        assert_eq!(mine, wire, "{name}");
    }

    // An existing file is not overwritten without --force.
    let one = out.join(openedx_events::avro::schema_file_name(ENROLLMENT));
    std::fs::write(&one, "edited").unwrap();
    cli()
        .args(["schema", "--all", "--out"])
        .arg(&out)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--force").and(predicate::str::contains("already exist")));
    assert_eq!(std::fs::read_to_string(&one).unwrap(), "edited");
    cli().args(["schema", ENROLLMENT, "--out"]).arg(&out).assert().code(2);
    assert_eq!(std::fs::read_to_string(&one).unwrap(), "edited");

    cli()
        .args(["schema", ENROLLMENT, "--force", "--out"])
        .arg(&out)
        .assert()
        .success();
    let restored: Value = serde_json::from_str(&std::fs::read_to_string(&one).unwrap()).unwrap();
    assert_eq!(restored, wire_schema(ENROLLMENT));

    // A directory that cannot be made is a write failure (1).
    let blocker = dir.path().join("file");
    std::fs::write(&blocker, "").unwrap();
    cli()
        .args(["schema", ENROLLMENT, "--out"])
        .arg(blocker.join("sub"))
        .assert()
        .code(1);
}

fn write(dir: &std::path::Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn check_config_accepts_both_python_shapes_in_json_and_toml() {
    let dir = tempfile::tempdir().unwrap();
    let adr14 = write(
        dir.path(),
        "adr14.json",
        r#"{"org.openedx.content_authoring.xblock.published.v1":
             {"content-authoring-xblock-lifecycle": {"event_key_field": "xblock_info.usage_key", "enabled": true}},
            "org.openedx.learning.course.enrollment.created.v1":
             {"learning-course-enrollment": {"event_key_field": "enrollment.course.course_key", "enabled": false}}}"#,
    );
    let adr12 = write(
        dir.path(),
        "adr12.toml",
        r#"[["org.openedx.content_authoring.xblock.published.v1"]]
topic = "content-authoring-xblock-lifecycle"
event_key_field = "xblock_info.usage_key"
enabled = true
"#,
    );
    let a = cli()
        .arg("check-config")
        .arg(&adr14)
        .env("EVENT_BUS_TOPIC_PREFIX", "dev")
        .assert()
        .success();
    let out = stdout(&a);
    assert!(out.starts_with("ok: 2 route(s), 1 enabled"), "{out}");
    assert!(
        out.contains("[dev-content-authoring-xblock-lifecycle] key xblock_info.usage_key (string)"),
        "{out}"
    );
    assert!(out.contains("enrollment.course.course_key (string) disabled"), "{out}");
    cli()
        .arg("check-config")
        .arg(&adr12)
        .assert()
        .success()
        .stdout(predicate::str::starts_with("ok: 1 route(s), 1 enabled"));

    let a = cli().arg("check-config").arg(&adr14).arg("--json").assert().success();
    let report: Value = serde_json::from_str(&stdout(&a)).unwrap();
    assert_eq!(report["ok"], true);
    assert_eq!(report["problems"], json!([]));
    assert_eq!(report["routes"].as_array().unwrap().len(), 2);
    assert_eq!(report["routes"][0]["key_type"], "string");
}

#[test]
fn check_config_prints_every_problem_with_event_topic_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let bad = write(
        dir.path(),
        "bad.toml",
        r#"["org.openedx.content_authoring.xblock.published.v1"."content-authoring-xblock-lifecycle"]
event_key_field = "xblock_info.usage_keyy"
enabled = true

["org.openedx.content_authoring.xblock.published.v1"."bad topic!"]
event_key_field = "xblock_info.usage_key"
enabled = true

["org.openedx.learning.course.enrolment.created.v1"."t"]
event_key_field = "x"
enabled = true

["org.openedx.learning.course.enrollment.created.v1"."learning-course-enrollment"]
event_key_field = "enrollment.course.course_key"
enabled = "yes"

["org.openedx.learning.course.enrollment.created.v1"."learning-course-enrollment-2"]
event_key_field = "enrollment.user"
"#,
    );
    let a = cli().arg("check-config").arg(&bad).assert().code(1);
    let out = stdout(&a);
    let problems: Vec<&str> = out.lines().filter(|l| l.starts_with("problem: ")).collect();
    assert_eq!(problems.len(), 5, "{out}");
    for needle in [
        r#"topic "learning-course-enrollment": "enabled" must be a boolean, found a string"#,
        r#"xblock.published.v1 / topic "content-authoring-xblock-lifecycle": bad event_key_field "xblock_info.usage_keyy""#,
        r#"xblock.published.v1: topic "bad topic!" is not a valid topic name"#,
        r#"did you mean "org.openedx.learning.course.enrollment.created.v1""#,
        r#"topic "learning-course-enrollment-2": missing "enabled""#,
    ] {
        assert!(out.contains(needle), "{needle:?} not in:\n{out}");
    }
    assert!(stderr(&a).contains("5 problem(s) found"));

    let a = cli().arg("check-config").arg(&bad).arg("--json").assert().code(1);
    let report: Value = serde_json::from_str(&stdout(&a)).unwrap();
    assert_eq!(report["ok"], false);
    let problems = report["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 5);
    assert!(problems.contains(&json!({
        "file": bad.display().to_string(),
        "event_type": "org.openedx.learning.course.enrollment.created.v1",
        "topic": "learning-course-enrollment",
        "field": "enabled",
        "message": "org.openedx.learning.course.enrollment.created.v1 / topic \"learning-course-enrollment\": \"enabled\" must be a boolean, found a string",
    })), "{report:#}");
    let key = problems
        .iter()
        .find(|p| p["topic"] == "content-authoring-xblock-lifecycle")
        .unwrap();
    assert_eq!(key["field"], "event_key_field");
    assert_eq!(key["event_type"], "org.openedx.content_authoring.xblock.published.v1");

    // The list shape's own problem: one topic twice for one event type (ADR 14's reason).
    let dup = write(
        dir.path(),
        "dup.json",
        r#"{"org.openedx.content_authoring.xblock.published.v1": [
            {"topic": "t", "event_key_field": "xblock_info.usage_key", "enabled": true},
            {"topic": "t", "event_key_field": "xblock_info.block_type", "enabled": false}]}"#,
    );
    cli()
        .arg("check-config")
        .arg(&dup)
        .assert()
        .code(1)
        .stdout(predicate::str::contains(r#"topic "t" is configured twice"#));
    let malformed = write(dir.path(), "malformed.json", "{\"a\": ");
    cli()
        .arg("check-config")
        .arg(&malformed)
        .assert()
        .code(1)
        .stdout(predicate::str::contains("JSON producer config is malformed").and(predicate::str::contains("line 1")));
}

#[test]
fn check_config_merge_shows_the_merged_config_and_checks_it() {
    let dir = tempfile::tempdir().unwrap();
    let base = write(
        dir.path(),
        "base.json",
        r#"{"org.openedx.learning.course.enrollment.created.v1":
             {"learning-course-enrollment": {"event_key_field": "enrollment.course.course_key", "enabled": false}}}"#,
    );
    let over = write(
        dir.path(),
        "over.toml",
        r#"[["org.openedx.learning.course.enrollment.created.v1"]]
topic = "learning-course-enrollment"
enabled = true

[["org.openedx.content_authoring.xblock.published.v1"]]
topic = "content-authoring-xblock-lifecycle"
event_key_field = "xblock_info.usage_key"
enabled = true
"#,
    );
    let a = cli()
        .arg("check-config")
        .arg(&base)
        .arg("--merge")
        .arg(&over)
        .arg("--json")
        .assert()
        .success();
    let report: Value = serde_json::from_str(&stdout(&a)).unwrap();
    assert_eq!(
        report["merged"],
        json!({
            "org.openedx.learning.course.enrollment.created.v1": {
                "learning-course-enrollment": {"event_key_field": "enrollment.course.course_key", "enabled": true}},
            "org.openedx.content_authoring.xblock.published.v1": {
                "content-authoring-xblock-lifecycle": {"event_key_field": "xblock_info.usage_key", "enabled": true}}
        })
    );
    let a = cli()
        .arg("check-config")
        .arg(&base)
        .arg("--merge")
        .arg(&over)
        .assert()
        .success();
    let out = stdout(&a);
    assert!(out.starts_with("merged config:\n{"), "{out}");
    assert!(out.contains("ok: 2 route(s), 2 enabled"), "{out}");

    // The override alone lacks a key path: the merge is what makes it whole.
    let partial = write(
        dir.path(),
        "partial.json",
        r#"{"org.openedx.learning.course.enrollment.created.v1": {"learning-course-enrollment": {"enabled": true}}}"#,
    );
    cli()
        .arg("check-config")
        .arg(&partial)
        .assert()
        .code(1)
        .stdout(predicate::str::contains("missing \"event_key_field\""));
    cli()
        .arg("check-config")
        .arg(&base)
        .arg("--merge")
        .arg(&partial)
        .assert()
        .success();
}

#[test]
fn check_config_of_a_file_it_cannot_read_is_a_bad_argument() {
    cli()
        .args(["check-config", "/nonexistent/config.json"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("/nonexistent/config.json"));
    let dir = tempfile::tempdir().unwrap();
    let yaml = write(dir.path(), "config.yaml", "{}");
    cli()
        .arg("check-config")
        .arg(&yaml)
        .assert()
        .code(2)
        .stderr(predicate::str::contains(".json or .toml"));
}

#[test]
fn avro_encode_and_decode_every_python_vector() {
    let vectors: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(shared("avro-vectors.json")).unwrap()).unwrap();
    assert_eq!(vectors.len(), 216);
    for v in &vectors {
        let t = v["event_type"].as_str().unwrap();
        let a = cli()
            .args(["avro", "encode", "--event-type", t, "--data"])
            .arg(v["datum"].to_string())
            .assert()
            .success();
        assert_eq!(stdout(&a).trim(), v["avro_hex"].as_str().unwrap(), "{t}");
        let a = cli()
            .args(["avro", "decode", "--event-type", t])
            .arg(v["avro_hex"].as_str().unwrap())
            .assert()
            .success();
        let decoded: Value = serde_json::from_str(&stdout(&a)).unwrap();
        assert_eq!(decoded, v["datum"], "{t}");
    }
}

#[test]
fn avro_reads_files_and_standard_input() {
    let dir = tempfile::tempdir().unwrap();
    let data = write(dir.path(), "data.json", &enrollment_data().to_string());
    let a = cli()
        .args(["avro", "encode", "--event-type", ENROLLMENT, "--data"])
        .arg(format!("@{}", data.display()))
        .assert()
        .success();
    let hex_text = stdout(&a);
    let a = cli()
        .args(["avro", "encode", "--event-type", ENROLLMENT, "--data", "@-"])
        .write_stdin(enrollment_data().to_string())
        .assert()
        .success();
    assert_eq!(stdout(&a), hex_text);

    let hex_file = write(dir.path(), "msg.hex", &format!("  {hex_text}\n"));
    let a = cli()
        .args(["avro", "decode", "--event-type", ENROLLMENT])
        .arg(format!("@{}", hex_file.display()))
        .assert()
        .success();
    assert_eq!(serde_json::from_str::<Value>(&stdout(&a)).unwrap(), enrollment_data());
    let bytes = hex::decode(hex_text.trim()).unwrap();
    let bin = dir.path().join("msg.bin");
    std::fs::write(&bin, &bytes).unwrap();
    let a = cli()
        .args(["avro", "decode", "--binary", "--pretty", "--event-type", ENROLLMENT])
        .arg(format!("@{}", bin.display()))
        .assert()
        .success();
    assert!(stdout(&a).contains("\n  \"enrollment\": {"));
    assert_eq!(serde_json::from_str::<Value>(&stdout(&a)).unwrap(), enrollment_data());

    // A Kafka message value: magic byte, schema id 7, body.
    let mut framed = vec![0, 0, 0, 0, 7];
    framed.extend_from_slice(&bytes);
    let a = cli()
        .args(["avro", "decode", "--framed", "--event-type", ENROLLMENT])
        .arg(hex::encode(&framed))
        .assert()
        .success();
    assert_eq!(serde_json::from_str::<Value>(&stdout(&a)).unwrap(), enrollment_data());
    assert!(stderr(&a).contains("schema id 7"));
    cli()
        .args(["avro", "decode", "--framed", "--event-type", ENROLLMENT])
        .arg(hex_text.trim())
        .assert()
        .code(2);
}

#[test]
fn avro_rejects_bad_input_naming_the_path() {
    let good = enrollment_data();
    // Not JSON: where it stops.
    cli()
        .args([
            "avro",
            "encode",
            "--event-type",
            ENROLLMENT,
            "--data",
            "{\"enrollment\": ",
        ])
        .assert()
        .code(2)
        .stdout("")
        .stderr(predicate::str::contains("--data is not valid JSON").and(predicate::str::contains("line 1 column 15")));
    // A field of the wrong type: its path.
    let mut wrong = good.clone();
    wrong["enrollment"]["user"]["id"] = json!("forty-two");
    cli()
        .args(["avro", "encode", "--event-type", ENROLLMENT, "--data"])
        .arg(wrong.to_string())
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "at enrollment.user.id: invalid type: string \"forty-two\"",
        ));
    let mut missing = good.clone();
    missing["enrollment"]["course"]
        .as_object_mut()
        .unwrap()
        .remove("course_key");
    cli()
        .args(["avro", "encode", "--event-type", ENROLLMENT, "--data"])
        .arg(missing.to_string())
        .assert()
        .code(2)
        .stderr(predicate::str::contains("enrollment.course").and(predicate::str::contains("course_key")));
    let mut bad_key = good.clone();
    bad_key["enrollment"]["course"]["course_key"] = json!("not a course key");
    cli()
        .args(["avro", "encode", "--event-type", ENROLLMENT, "--data"])
        .arg(bad_key.to_string())
        .assert()
        .code(2)
        .stderr(predicate::str::contains("at enrollment.course.course_key"));
    cli()
        .args(["avro", "encode", "--event-type", "org.openedx.nope.v1", "--data", "{}"])
        .assert()
        .code(2);
    cli()
        .args([
            "avro",
            "encode",
            "--event-type",
            ENROLLMENT,
            "--data",
            "@/nonexistent/data.json",
        ])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("cannot read /nonexistent/data.json"));

    let a = cli()
        .args(["avro", "encode", "--event-type", ENROLLMENT, "--data"])
        .arg(good.to_string())
        .assert()
        .success();
    let hex_text = stdout(&a).trim().to_owned();
    // Cut short inside the user's e-mail address: the path where decoding stopped.
    cli()
        .args(["avro", "decode", "--event-type", ENROLLMENT])
        .arg(&hex_text[..16])
        .assert()
        .code(2)
        .stdout("")
        .stderr(predicate::str::contains("from Avro at enrollment.user.pii.email"));
    cli()
        .args(["avro", "decode", "--event-type", ENROLLMENT])
        .arg(format!("{hex_text}00"))
        .assert()
        .code(2)
        .stderr(predicate::str::contains("1 bytes left after the datum"));
    cli()
        .args(["avro", "decode", "--event-type", ENROLLMENT, "0xzz"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("not valid hex"));
    cli()
        .args(["avro", "decode", "--event-type", ENROLLMENT, "abc"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("not valid hex"));
    // A course key that does not parse, inside otherwise valid Avro.
    let mut bytes = hex::decode(&hex_text).unwrap();
    let at = bytes.windows(9).position(|w| w == b"course-v1").unwrap();
    bytes[at..at + 9].copy_from_slice(b"course-v9");
    cli()
        .args(["avro", "decode", "--event-type", ENROLLMENT])
        .arg(hex::encode(&bytes))
        .assert()
        .code(2)
        .stderr(predicate::str::contains("at enrollment.course.course_key"));
}

#[test]
fn produce_to_the_in_memory_bus_prints_the_position() {
    let a = cli()
        .args([
            "produce",
            "--event-type",
            ENROLLMENT,
            "--topic",
            "learning-course-enrollment",
            "--key-field",
            "enrollment.course.course_key",
            "--json",
            "--data",
        ])
        .arg(enrollment_data().to_string())
        .env("EVENT_BUS_TOPIC_PREFIX", "dev")
        .assert()
        .success();
    let out: Value = serde_json::from_str(&stdout(&a)).unwrap();
    assert_eq!(out["backend"], "memory");
    assert_eq!(out["topic"], "dev-learning-course-enrollment");
    assert_eq!(out["event_type"], ENROLLMENT);
    assert_eq!(out["position"], 0);
    let id = uuid::Uuid::parse_str(out["event_id"].as_str().unwrap()).unwrap();
    assert_eq!(id.get_version_num(), 1);
    cli()
        .args(["produce", "--event-type", ENROLLMENT, "--topic", "t", "--data"])
        .arg(enrollment_data().to_string())
        .env("EVENT_BUS_PRODUCER", "memory")
        .assert()
        .success()
        .stdout(
            predicate::str::starts_with(format!("produced {ENROLLMENT} event "))
                .and(predicate::str::contains("memory topic t at position 0")),
        );
}

#[test]
fn produce_rejects_bad_input_before_producing() {
    let produce = |data: &str| {
        let mut c = cli();
        c.args(["produce", "--event-type", ENROLLMENT, "--topic", "t", "--data", data]);
        c
    };
    produce("[1, 2")
        .assert()
        .code(2)
        .stdout("")
        .stderr(predicate::str::contains("--data is not valid JSON"));
    let mut wrong = enrollment_data();
    wrong["enrollment"]["is_active"] = json!("yes");
    produce(&wrong.to_string())
        .assert()
        .code(2)
        .stdout("")
        .stderr(predicate::str::contains(
            "at enrollment.is_active: invalid type: string \"yes\", expected a boolean",
        ));
    let good = enrollment_data().to_string();
    produce(&good)
        .arg("--key-field")
        .arg("enrollment.course.nope")
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--key-field \"enrollment.course.nope\""));
    produce(&good)
        .arg("--key-field")
        .arg("enrollment.user")
        .assert()
        .code(2);
    cli()
        .args([
            "produce",
            "--event-type",
            ENROLLMENT,
            "--topic",
            "bad topic",
            "--data",
            &good,
        ])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("not a valid topic name"));
    produce(&good)
        .env("EVENT_BUS_PRODUCER", "rabbit")
        .assert()
        .code(2)
        .stderr(predicate::str::contains("rabbit"));
    produce(&good).env("EVENT_BUS_PRODUCER", "none").assert().code(2);
    produce(&good)
        .env("EVENT_BUS_PRODUCER", "redis")
        .assert()
        .code(2)
        .stderr(predicate::str::contains("EVENT_BUS_REDIS_CONNECTION_URL"));
    produce(&good)
        .env("EVENT_BUS_PRODUCER", "kafka")
        .assert()
        .code(2)
        .stderr(predicate::str::contains("EVENT_BUS_KAFKA_BOOTSTRAP_SERVERS"));
}

#[test]
fn consume_needs_a_broker() {
    for producer in [None, Some("memory"), Some("none")] {
        let mut c = cli();
        c.args(["consume", "--topic", "t", "--group", "g", "--max", "1"]);
        if let Some(p) = producer {
            c.env("EVENT_BUS_PRODUCER", p);
        }
        c.assert()
            .code(2)
            .stdout("")
            .stderr(predicate::str::contains("EVENT_BUS_PRODUCER=redis or kafka"));
    }
    cli()
        .args(["consume", "--topic", "t", "--group", "g", "--from-time", "yesterday"])
        .env("EVENT_BUS_PRODUCER", "redis")
        .env("EVENT_BUS_REDIS_CONNECTION_URL", "redis://127.0.0.1:1/")
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--from-time \"yesterday\""));
    cli()
        .args(["consume", "--topic", "t", "--group", "g", "--from-id", "latest"])
        .env("EVENT_BUS_PRODUCER", "redis")
        .env("EVENT_BUS_REDIS_CONNECTION_URL", "redis://127.0.0.1:1/")
        .assert()
        .code(2)
        .stderr(predicate::str::contains("MILLISECONDS-SEQUENCE"));
    cli()
        .args(["consume", "--topic", "t", "--group", "g"])
        .env("EVENT_BUS_PRODUCER", "kafka")
        .assert()
        .code(2)
        .stderr(predicate::str::contains("EVENT_BUS_KAFKA_BOOTSTRAP_SERVERS"));
}

#[test]
fn a_service_binary_knows_its_own_events_and_the_catalog() {
    let bin = common::custom_events_bin();
    let t = "org.openedx.example.file.uploaded.v1";
    let a = common::command(&bin)
        .args(["events", "--filter", "example"])
        .assert()
        .success();
    let out = stdout(&a);
    assert!(
        out.contains(t) && out.contains("v2") && out.contains("Sent when a file is uploaded"),
        "{out}"
    );
    let a = common::command(&bin).args(["events", "--json"]).assert().success();
    assert_eq!(serde_json::from_str::<Vec<Value>>(&stdout(&a)).unwrap().len(), 73);

    let a = common::command(&bin).args(["schema", t]).assert().success();
    let schema: Value = serde_json::from_str(&stdout(&a)).unwrap();
    assert_eq!(schema["namespace"], t);
    assert_eq!(schema["fields"][1], json!({"name": "checksum", "type": "bytes"}));

    // bytes are hex in the tool's JSON, both ways.
    let data = json!({"name": "a.png", "checksum": "00ff10", "preview": "cafe"});
    let a = common::command(&bin)
        .args(["avro", "encode", "--event-type", t, "--data"])
        .arg(data.to_string())
        .assert()
        .success();
    let hex_text = stdout(&a).trim().to_owned();
    // name "a.png" (len 5), checksum 3 bytes, union branch 1, preview 2 bytes.
    assert_eq!(hex_text, "0a612e706e67".to_owned() + "0600ff10" + "02" + "04cafe");
    let a = common::command(&bin)
        .args(["avro", "decode", "--event-type", t, &hex_text])
        .assert()
        .success();
    assert_eq!(serde_json::from_str::<Value>(&stdout(&a)).unwrap(), data);
    let a = common::command(&bin)
        .args(["avro", "decode", "--event-type", t, "0a612e706e670601020300"])
        .assert()
        .success();
    assert_eq!(
        serde_json::from_str::<Value>(&stdout(&a)).unwrap(),
        json!({"name": "a.png", "checksum": "010203", "preview": null})
    );
    common::command(&bin)
        .args([
            "avro",
            "encode",
            "--event-type",
            t,
            "--data",
            r#"{"name": "a", "checksum": "xyz", "preview": null}"#,
        ])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("at checksum: bytes must be hex"));
}
