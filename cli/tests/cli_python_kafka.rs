//! The tool against the Python stack over Kafka (librdkafka's mock cluster or
//! `KAFKA_BOOTSTRAP_SERVERS`, the project's test registry or
//! `EVENT_BUS_KAFKA_SCHEMA_REGISTRY_URL`): it prints what edx-event-bus-kafka's own producer
//! wrote, and edx-event-bus-kafka's own consumer reads what the tool produced, keys included
//! (the 16 catalog events of `tests/python/interop_events.json`).

mod common;
#[path = "../../tests/support/kafka.rs"]
mod kafka_support;
#[path = "../../tests/redis_support/mod.rs"]
mod redis_support;
#[path = "../../tests/support/registry.rs"]
mod registry_support;

use std::collections::HashMap;
use std::process::Command;

use common::{cli, stdout};
use kafka_support::{unique, KafkaEnv};
use redis_support::{interop_events, python, python_dir};
use registry_support::RegistryHandle;
use serde_json::Value;

fn json_lines(bytes: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(bytes)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

struct Fixture {
    env: KafkaEnv,
    registry: RegistryHandle,
    prefix: String,
    full: String,
}

impl Fixture {
    fn new(what: &str) -> Self {
        let env = KafkaEnv::start();
        let registry = RegistryHandle::from_env_or_start();
        let prefix = unique(what);
        let full = format!("{prefix}-interop");
        env.create_topic(&full, 3);
        env.create_topic(&format!("{full}-dead-letter"), 1);
        Self {
            env,
            registry,
            prefix,
            full,
        }
    }

    fn tool(&self) -> assert_cmd::Command {
        let mut c = cli();
        c.env("EVENT_BUS_PRODUCER", "kafka")
            .env("EVENT_BUS_KAFKA_BOOTSTRAP_SERVERS", self.env.bootstrap())
            .env("EVENT_BUS_KAFKA_SCHEMA_REGISTRY_URL", self.registry.url())
            .env("EVENT_BUS_TOPIC_PREFIX", &self.prefix)
            .env("EVENTS_SERVICE_NAME", "cli-side");
        c
    }
}

#[test]
fn the_tool_consumes_what_python_produced() {
    let f = Fixture::new("kpy2cli");
    let events = interop_events();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("events.json");
    std::fs::write(&file, serde_json::to_string(&events).unwrap()).unwrap();
    let out = Command::new(python())
        .arg(python_dir().join("kafka_produce.py"))
        .args(["--bootstrap", f.env.bootstrap(), "--registry", f.registry.url()])
        .args(["--topic", "interop", "--prefix", &f.prefix, "--service", "py-side"])
        .arg("--events-file")
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let produced = json_lines(&out.stdout);
    assert_eq!(produced.len(), events.len());

    let a = f
        .tool()
        .args([
            "consume",
            "--topic",
            "interop",
            "--group",
            &unique("cli"),
            "--from-beginning",
            "--max",
        ])
        .arg(events.len().to_string())
        .assert()
        .success();
    let got: HashMap<String, Value> = stdout(&a)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .map(|v| (v["metadata"]["id"].as_str().unwrap().to_owned(), v))
        .collect();
    assert_eq!(got.len(), events.len());
    for (event, p) in events.iter().zip(&produced) {
        let line = &got[p["metadata"]["id"].as_str().unwrap()];
        assert_eq!(line["data"], event["data"], "{}", event["event_type"]);
        assert_eq!(line["metadata"]["event_type"], event["event_type"]);
        assert_eq!(line["metadata"]["time"], p["metadata"]["time"]);
        assert_eq!(line["metadata"]["source"], "openedx/py-side/web");
    }
}

#[test]
fn python_consumes_what_the_tool_produced() {
    let f = Fixture::new("kcli2py");
    let events = interop_events();
    let mut reports = HashMap::new();
    for e in &events {
        let a = f
            .tool()
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
        let report: Value = serde_json::from_str(&stdout(&a)).unwrap();
        reports.insert(report["event_id"].as_str().unwrap().to_owned(), (e, report));
    }
    let out = Command::new(python())
        .arg(python_dir().join("kafka_consume.py"))
        .args([
            "--bootstrap",
            f.env.bootstrap(),
            "--registry",
            f.registry.url(),
            "--topic",
            &f.full,
        ])
        .args(["--group", &unique("py"), "--timeout", "90", "--count"])
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
    for line in &got {
        assert!(line.get("error").is_none(), "{line}");
        let (event, report) = &reports[line["metadata"]["id"].as_str().unwrap()];
        assert_eq!(line["data"], event["data"], "{}", event["event_type"]);
        assert_eq!(line["metadata"]["event_type"], event["event_type"]);
        assert_eq!(line["metadata"]["source"], "openedx/cli-side/web");
        assert_eq!(line["partition"], report["partition"]);
        assert_eq!(line["offset"], report["offset"]);
        // The key is the value at the event's key path, as the Python producer would key it.
        let mut key = &event["data"];
        for part in event["event_key_field"].as_str().unwrap().split('.') {
            key = &key[part];
        }
        assert_eq!(&line["key"], key, "{}", event["event_type"]);
    }
}
