//! `produce` and `consume` against the real Redis under test (`REDIS_URL`, default
//! 127.0.0.1:6379), on streams of their own, as a user runs the tool.

mod common;
#[path = "../../tests/redis_support/mod.rs"]
mod redis_support;

use std::time::Duration;

use common::{cli, enrollment_data, stderr, stdout, unique, ENROLLMENT};
use predicates::prelude::*;
use redis_support::{read_stream, Cleanup};
use serde_json::{json, Value};

/// The tool with the Redis backend and a topic prefix.
fn tool(prefix: &str) -> assert_cmd::Command {
    let mut c = cli();
    c.env("EVENT_BUS_PRODUCER", "redis")
        .env("EVENT_BUS_REDIS_CONNECTION_URL", redis_support::url())
        .env("EVENT_BUS_TOPIC_PREFIX", prefix)
        .env("EVENTS_SERVICE_NAME", "cli-test");
    c
}

/// An enrollment of user `n`.
fn data(n: i64) -> Value {
    let mut d = enrollment_data();
    d["enrollment"]["user"]["id"] = json!(n);
    d
}

/// Produces with the tool; returns its JSON report.
fn produce(prefix: &str, topic: &str, data: &Value) -> Value {
    let a = tool(prefix)
        .args([
            "produce",
            "--json",
            "--event-type",
            ENROLLMENT,
            "--topic",
            topic,
            "--data",
        ])
        .arg(data.to_string())
        .assert()
        .success();
    serde_json::from_str(&stdout(&a)).unwrap()
}

/// The JSON lines of a consume run.
fn lines(a: &assert_cmd::assert::Assert) -> Vec<Value> {
    stdout(a).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn produce_writes_the_python_wire_entry_and_prints_its_stream_id() {
    let prefix = unique("p");
    let topic = "learning-course-enrollment";
    let full = format!("{prefix}-{topic}");
    let _cleanup = Cleanup::new(&redis_support::url(), &[&full]);
    let out = produce(&prefix, topic, &data(7));
    assert_eq!(out["backend"], "redis");
    assert_eq!(out["topic"], full);
    let entries = read_stream(&mut redis_support::connect(&redis_support::url()), &full);
    assert_eq!(entries.len(), 1);
    let e = &entries[0];
    assert_eq!(out["stream_id"], e.id);
    assert_eq!(
        e.names(),
        [
            "type",
            "id",
            "source",
            "time",
            "minorversion",
            "sourcehost",
            "sourcelib",
            "event_data"
        ]
    );
    assert_eq!(e.text("type"), ENROLLMENT);
    assert_eq!(e.text("id"), out["event_id"].as_str().unwrap());
    assert_eq!(e.text("source"), "openedx/cli-test/web");
    assert_eq!(e.text("minorversion"), "0");
    // The data is the event's schemaless Avro, as `avro encode` gives it.
    let a = cli()
        .args(["avro", "encode", "--event-type", ENROLLMENT, "--data"])
        .arg(data(7).to_string())
        .assert()
        .success();
    assert_eq!(hex::encode(e.get("event_data").unwrap()), stdout(&a).trim());

    let a = tool(&prefix)
        .args(["produce", "--event-type", ENROLLMENT, "--topic", topic, "--data"])
        .arg(data(8).to_string())
        .assert()
        .success();
    let text = stdout(&a);
    let entries = read_stream(&mut redis_support::connect(&redis_support::url()), &full);
    assert_eq!(
        text.trim_end(),
        format!(
            "produced {ENROLLMENT} event {} to redis stream {full} at id {}",
            entries[1].text("id"),
            entries[1].id
        )
    );
}

#[test]
fn bad_data_is_not_produced() {
    let prefix = unique("bad");
    let full = format!("{prefix}-t");
    let _cleanup = Cleanup::new(&redis_support::url(), &[&full]);
    let mut wrong = data(1);
    wrong["enrollment"]["creation_date"] = json!("last tuesday");
    tool(&prefix)
        .args(["produce", "--event-type", ENROLLMENT, "--topic", "t", "--data"])
        .arg(wrong.to_string())
        .assert()
        .code(2)
        .stderr(predicate::str::contains("at enrollment.creation_date"));
    let exists: bool = redis::cmd("EXISTS")
        .arg(&full)
        .query(&mut redis_support::connect(&redis_support::url()))
        .unwrap();
    assert!(!exists);
}

#[test]
fn consume_prints_each_event_as_a_json_line_with_its_metadata() {
    let prefix = unique("c");
    let topic = "enrollments";
    let full = format!("{prefix}-{topic}");
    let _cleanup = Cleanup::new(&redis_support::url(), &[&full, &format!("{full}-dead-letter")]);
    let produced: Vec<Value> = (1..=3).map(|n| produce(&prefix, topic, &data(n))).collect();
    let a = tool(&prefix)
        .args([
            "consume",
            "--topic",
            topic,
            "--group",
            "g1",
            "--from-beginning",
            "--max",
            "3",
        ])
        .assert()
        .success();
    let got = lines(&a);
    assert_eq!(got.len(), 3, "{}", stdout(&a));
    for (n, (line, p)) in got.iter().zip(&produced).enumerate() {
        assert_eq!(line["topic"], full);
        assert_eq!(line["data"], data(n as i64 + 1));
        let m = &line["metadata"];
        assert_eq!(m["event_type"], ENROLLMENT);
        assert_eq!(m["id"], p["event_id"]);
        assert_eq!(m["minorversion"], 0);
        assert_eq!(m["source"], "openedx/cli-test/web");
        assert!(m["time"].as_str().unwrap().ends_with("+00:00"), "{m}");
        assert_eq!(m["sourcelib"].as_array().unwrap().len(), 3);
    }
    assert!(
        stderr(&a).contains(&format!("consumed 3 event(s) from {full}")),
        "{}",
        stderr(&a)
    );

    // The group keeps its position: the next run reads only what is new.
    produce(&prefix, topic, &data(4));
    let a = tool(&prefix)
        .args(["consume", "--topic", topic, "--group", "g1", "--max", "1"])
        .assert()
        .success();
    let got = lines(&a);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["data"], data(4));
    // A new group without --from-* starts at the end: nothing to read within the timeout.
    let a = tool(&prefix)
        .args(["consume", "--topic", topic, "--group", "g2", "--timeout", "2"])
        .assert()
        .success();
    assert_eq!(stdout(&a), "");
    assert!(stderr(&a).contains("consumed 0 event(s)"));
}

#[test]
fn consume_replays_from_an_id_or_a_time() {
    let prefix = unique("r");
    let topic = "replay";
    let full = format!("{prefix}-{topic}");
    let _cleanup = Cleanup::new(&redis_support::url(), &[&full, &format!("{full}-dead-letter")]);
    let mut produced = Vec::new();
    for n in 1..=4 {
        produced.push(produce(&prefix, topic, &data(n)));
        std::thread::sleep(Duration::from_millis(5));
    }
    let ids: Vec<&str> = produced.iter().map(|p| p["stream_id"].as_str().unwrap()).collect();

    // --from-id includes the given entry.
    let a = tool(&prefix)
        .args([
            "consume",
            "--topic",
            topic,
            "--group",
            "ids",
            "--max",
            "2",
            "--from-id",
            ids[1],
        ])
        .assert()
        .success();
    let got: Vec<Value> = lines(&a).into_iter().map(|l| l["data"].clone()).collect();
    assert_eq!(got, vec![data(2), data(3)]);
    // On an existing group it moves the group back.
    let a = tool(&prefix)
        .args([
            "consume",
            "--topic",
            topic,
            "--group",
            "ids",
            "--max",
            "4",
            "--from-id",
            ids[0],
            "--timeout",
            "3",
        ])
        .assert()
        .success();
    assert_eq!(lines(&a).len(), 4);

    // --from-time: the first entry at or after that time (entry ids are milliseconds).
    let ms: i64 = ids[2].split('-').next().unwrap().parse().unwrap();
    let time = chrono::DateTime::from_timestamp_millis(ms)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let a = tool(&prefix)
        .args([
            "consume",
            "--topic",
            topic,
            "--group",
            "times",
            "--max",
            "2",
            "--from-time",
            &time,
        ])
        .assert()
        .success();
    let got: Vec<Value> = lines(&a).into_iter().map(|l| l["data"].clone()).collect();
    assert_eq!(got, vec![data(3), data(4)]);
}

#[test]
fn consume_shows_progress_on_stderr_during_a_long_replay() {
    let prefix = unique("long");
    let topic = "long";
    let full = format!("{prefix}-{topic}");
    let _cleanup = Cleanup::new(&redis_support::url(), &[&full, &format!("{full}-dead-letter")]);
    // 3000 entries written as the producer writes them (the tool's own produce, once per
    // process, would be slow): same fields, same Avro.
    let first = produce(&prefix, topic, &data(0));
    let mut conn = redis_support::connect(&redis_support::url());
    let template = &read_stream(&mut conn, &full)[0];
    let mut pipe = redis::pipe();
    for _ in 1..3000 {
        let cmd = pipe.cmd("XADD").arg(&full).arg("*");
        for (k, v) in &template.fields {
            if k == "id" {
                cmd.arg(k).arg(uuid::Uuid::now_v1(&[1, 2, 3, 4, 5, 6]).to_string());
            } else {
                cmd.arg(k).arg(v);
            }
        }
        cmd.ignore();
    }
    pipe.query::<()>(&mut conn).unwrap();
    let a = tool(&prefix)
        .args([
            "consume",
            "--topic",
            topic,
            "--group",
            "g",
            "--from-beginning",
            "--max",
            "3000",
            "--progress-every-ms",
            "20",
        ])
        .assert()
        .success();
    let out = stdout(&a);
    assert_eq!(out.lines().count(), 3000);
    assert!(out
        .lines()
        .next()
        .unwrap()
        .contains(first["event_id"].as_str().unwrap()));
    let err = stderr(&a);
    assert!(
        err.lines()
            .any(|l| l.starts_with("... ") && l.contains(&format!("event(s) from {full} so far"))),
        "{err}"
    );
    assert!(err.contains(&format!("consumed 3000 event(s) from {full}")), "{err}");
    // --quiet: no progress, no summary.
    let a = tool(&prefix)
        .args([
            "consume",
            "--topic",
            topic,
            "--group",
            "g2",
            "--from-beginning",
            "--max",
            "10",
            "--quiet",
        ])
        .assert()
        .success();
    assert_eq!(stderr(&a), "");
}

#[test]
fn an_unreachable_redis_is_a_backend_failure() {
    let port = redis_support::free_port();
    let url = format!("redis://127.0.0.1:{port}/");
    let mut c = cli();
    c.env("EVENT_BUS_PRODUCER", "redis")
        .env("EVENT_BUS_REDIS_CONNECTION_URL", &url);
    c.args([
        "produce",
        "--event-type",
        ENROLLMENT,
        "--topic",
        "t",
        "--timeout",
        "5",
        "--data",
    ])
    .arg(enrollment_data().to_string())
    .assert()
    .code(3)
    .stdout("")
    .stderr(predicate::str::contains(format!("127.0.0.1:{port}")));
    let mut c = cli();
    c.env("EVENT_BUS_PRODUCER", "redis")
        .env("EVENT_BUS_REDIS_CONNECTION_URL", &url);
    c.args([
        "consume",
        "--topic",
        "t",
        "--group",
        "g",
        "--max-errors",
        "3",
        "--timeout",
        "60",
    ])
    .assert()
    .code(3)
    .stdout("");
    let mut c = cli();
    c.env("EVENT_BUS_PRODUCER", "redis")
        .env("EVENT_BUS_REDIS_CONNECTION_URL", "http://nope");
    c.args(["consume", "--topic", "t", "--group", "g"]).assert().code(2);
}

#[test]
fn consume_reports_a_message_it_cannot_read_and_goes_on() {
    let prefix = unique("unreadable");
    let full = format!("{prefix}-t");
    let dead = format!("{full}-dead-letter");
    let _cleanup = Cleanup::new(&redis_support::url(), &[&full, &dead]);
    let first = produce(&prefix, "t", &data(1));
    let mut conn = redis_support::connect(&redis_support::url());
    let _: String = redis::cmd("XADD")
        .arg(&full)
        .arg("*")
        .arg("type")
        .arg("org.openedx.nobody.knows.this.v1")
        .arg("id")
        .arg(uuid::Uuid::new_v4().to_string())
        .arg("event_data")
        .arg(&b"\x01\x02"[..])
        .query(&mut conn)
        .unwrap();
    let last = produce(&prefix, "t", &data(3));
    let a = tool(&prefix)
        .args([
            "consume",
            "--topic",
            "t",
            "--group",
            "g",
            "--from-beginning",
            "--max",
            "3",
        ])
        .assert()
        .success();
    let got = lines(&a);
    let ids: Vec<&Value> = got.iter().map(|l| &l["metadata"]["id"]).collect();
    assert_eq!(ids, vec![&first["event_id"], &last["event_id"]]);
    let err = stderr(&a);
    assert!(err.contains("org.openedx.nobody.knows.this.v1"), "{err}");
    assert!(err.contains("consumed 2 event(s)"), "{err}");
    assert_eq!(redis_support::xlen(&mut conn, &dead), 1);
}

#[test]
fn an_interrupted_consume_ends_cleanly() {
    use std::io::BufRead;
    let prefix = unique("int");
    let full = format!("{prefix}-t");
    let _cleanup = Cleanup::new(&redis_support::url(), &[&full, &format!("{full}-dead-letter")]);
    let first = produce(&prefix, "t", &data(1));
    let mut child = std::process::Command::new(common::bin())
        .env_clear()
        .env("EVENT_BUS_PRODUCER", "redis")
        .env("EVENT_BUS_REDIS_CONNECTION_URL", redis_support::url())
        .env("EVENT_BUS_TOPIC_PREFIX", &prefix)
        .args(["consume", "--topic", "t", "--group", "g", "--from-beginning"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let event: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(event["metadata"]["id"], first["event_id"]);
    let status = std::process::Command::new("kill")
        .arg("-INT")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    let output = child.wait_with_output().unwrap();
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stderr).contains(&format!("consumed 1 event(s) from {full}")));
    // It was acknowledged: the group has nothing pending.
    assert_eq!(
        redis_support::pending_count(&mut redis_support::connect(&redis_support::url()), &full, "g"),
        0
    );
}
