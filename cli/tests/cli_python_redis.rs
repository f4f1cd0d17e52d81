//! The tool against the Python stack over Redis: it prints what edx-event-bus-redis's own
//! producer wrote, and edx-event-bus-redis's own consumer reads what the tool produced
//! (the 16 catalog events of `tests/python/interop_events.json`).

mod common;
#[path = "../../tests/redis_support/mod.rs"]
mod redis_support;

use std::process::Command;

use common::{cli, stdout, unique};
use redis_support::{interop_events, python, python_dir, Cleanup};
use serde_json::Value;

fn tool(prefix: &str) -> assert_cmd::Command {
    let mut c = cli();
    c.env("EVENT_BUS_PRODUCER", "redis")
        .env("EVENT_BUS_REDIS_CONNECTION_URL", redis_support::url())
        .env("EVENT_BUS_TOPIC_PREFIX", prefix);
    c
}

fn json_lines(bytes: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(bytes)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn the_tool_consumes_what_python_produced() {
    let events = interop_events();
    let prefix = unique("py2cli");
    let full = format!("{prefix}-interop");
    let _cleanup = Cleanup::new(&redis_support::url(), &[&full, &format!("{full}-dead-letter")]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("events.json");
    std::fs::write(&file, serde_json::to_string(&events).unwrap()).unwrap();
    let out = Command::new(python())
        .arg(python_dir().join("redis_produce.py"))
        .args([
            "--url",
            &redis_support::url(),
            "--topic",
            "interop",
            "--prefix",
            &prefix,
            "--service",
            "py-side",
        ])
        .arg("--events-file")
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let produced = json_lines(&out.stdout);
    assert_eq!(produced.len(), events.len());

    let a = tool(&prefix)
        .args([
            "consume",
            "--topic",
            "interop",
            "--group",
            "cli",
            "--from-beginning",
            "--max",
        ])
        .arg(events.len().to_string())
        .assert()
        .success();
    let got: Vec<Value> = stdout(&a).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(got.len(), events.len());
    for ((line, event), p) in got.iter().zip(&events).zip(&produced) {
        assert_eq!(line["data"], event["data"], "{}", event["event_type"]);
        assert_eq!(line["metadata"]["event_type"], event["event_type"]);
        assert_eq!(line["metadata"]["id"], p["metadata"]["id"]);
        assert_eq!(line["metadata"]["time"], p["metadata"]["time"]);
        assert_eq!(line["metadata"]["source"], "openedx/py-side/web");
        assert_eq!(line["metadata"]["sourcelib"], p["metadata"]["sourcelib"]);
    }
}

#[test]
fn python_consumes_what_the_tool_produced() {
    let events = interop_events();
    let prefix = unique("cli2py");
    let full = format!("{prefix}-interop");
    let _cleanup = Cleanup::new(&redis_support::url(), &[&full]);
    let mut reports = Vec::new();
    for e in &events {
        let a = tool(&prefix)
            .env("EVENTS_SERVICE_NAME", "cli-side")
            .args([
                "produce",
                "--json",
                "--topic",
                "interop",
                "--event-type",
                e["event_type"].as_str().unwrap(),
            ])
            .args(["--key-field", e["event_key_field"].as_str().unwrap(), "--data"])
            .arg(e["data"].to_string())
            .assert()
            .success();
        reports.push(serde_json::from_str::<Value>(&stdout(&a)).unwrap());
    }
    let out = Command::new(python())
        .arg(python_dir().join("redis_consume.py"))
        .args([
            "--url",
            &redis_support::url(),
            "--stream",
            &full,
            "--group",
            "py",
            "--timeout",
            "60",
            "--count",
        ])
        .arg(events.len().to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let got = json_lines(&out.stdout);
    assert_eq!(got.len(), events.len());
    for ((line, event), report) in got.iter().zip(&events).zip(&reports) {
        assert!(line.get("error").is_none(), "{line}");
        assert_eq!(line["data"], event["data"], "{}", event["event_type"]);
        assert_eq!(line["stream_id"], report["stream_id"]);
        assert_eq!(line["metadata"]["id"], report["event_id"]);
        assert_eq!(line["metadata"]["event_type"], event["event_type"]);
        assert_eq!(line["metadata"]["source"], "openedx/cli-side/web");
    }
}
