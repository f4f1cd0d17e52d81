//! Wire compatibility with the real Python stack from PyPI (openedx-events,
//! edx-event-bus-kafka, confluent-kafka, in the venv `tests/python/setup.sh` makes), on
//! the same broker (librdkafka's mock cluster over TCP, or `KAFKA_BOOTSTRAP_SERVERS`) and
//! the same schema registry (the project's test registry, or
//! `EVENT_BUS_KAFKA_SCHEMA_REGISTRY_URL`):
//! - what our producer writes, edx-event-bus-kafka's consumer reads (confluent-kafka's
//!   AvroDeserializer with a SchemaRegistryClient, the library's header parsing) with equal
//!   data, metadata and key;
//! - what edx-event-bus-kafka's producer writes, our consumer reads with equal data and
//!   metadata;
//! - both register the same schemas under the same subjects: the Python producer gets the
//!   ids ours registered, and no subject gets a second version.
//!
//! The events are those of `tests/python/interop_events.json`: 16 events of 10 catalog
//! types with nested records, optional fields (present and absent), lists, a map,
//! unicode and 64-bit extremes; string and integer keys.

#[path = "support/kafka.rs"]
mod kafka_support;
#[path = "support/python.rs"]
mod python_support;
#[path = "support/registry.rs"]
mod registry_support;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kafka_support::{unique, KafkaEnv};
use openedx_events::event::AnyEvent;
use openedx_events::kafka::KafkaProducer;
use openedx_events::kafka::{KafkaConsumer, KafkaConsumerOptions};
use openedx_events::produce::{KeyFieldInfo, Producer, ProducerRecord};
use openedx_events::{registry, EventKey, EventMetadata, Settings};
use python_support::{interop_events, json_lines, metadata_json, python, python_dir};
use registry_support::RegistryHandle;
use serde_json::{json, Value};

fn key_json(k: &Option<EventKey>) -> Value {
    match k {
        None => Value::Null,
        Some(EventKey::String(s)) => json!(s),
        Some(EventKey::Long(n)) => json!(n),
        Some(EventKey::Boolean(b)) => json!(b),
        Some(EventKey::Double(d)) => json!(d),
    }
}

fn settings(env: &KafkaEnv, registry: &RegistryHandle) -> Settings {
    Settings::new()
        .with("EVENT_BUS_KAFKA_BOOTSTRAP_SERVERS", env.bootstrap())
        .with("EVENT_BUS_KAFKA_SCHEMA_REGISTRY_URL", registry.url())
        .with("EVENTS_SERVICE_NAME", "rust-interop")
        .with("EVENT_BUS_KAFKA_CONSUMER_CONFIG_SESSION_TIMEOUT_MS", "6000")
}

/// Produces every interop event to `topic` with our producer; returns (metadata JSON, key JSON).
async fn produce_ours(settings: &Settings, topic: &str, events: &[Value]) -> Vec<(Value, Value)> {
    let producer = KafkaProducer::from_settings(settings).unwrap();
    let mut sent = Vec::new();
    for ev in events {
        let event_type = ev["event_type"].as_str().unwrap();
        let descriptor = registry::find(event_type).unwrap_or_else(|| panic!("{event_type} is not in the catalog"));
        let ops = descriptor.ops();
        let data = ops.from_json(&ev["data"]).unwrap();
        let key_path = ev["event_key_field"].as_str().unwrap();
        let key = ops.resolve_key(key_path).unwrap();
        let key_value = (key.accessor)(data.as_any());
        let metadata = EventMetadata::generate(descriptor.event_type, descriptor.minor_version());
        sent.push((metadata_json(&metadata), key_json(&key_value)));
        producer
            .produce(ProducerRecord {
                topic: topic.into(),
                key: key_value,
                key_field: Some(KeyFieldInfo {
                    name: key.field_name,
                    avro_type: key.avro_type,
                }),
                metadata,
                data,
            })
            .unwrap();
    }
    producer.shutdown(Duration::from_secs(30)).await.unwrap();
    sent
}

fn run_python(py: &PathBuf, script: &str, args: Vec<String>) -> (std::process::ExitStatus, Vec<Value>) {
    let out = Command::new(py)
        .arg(python_dir().join(script))
        .args(args)
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    (out.status, json_lines(&out.stdout))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_consumer_reads_what_we_produce() {
    let py = python();
    let env = KafkaEnv::start();
    let registry = RegistryHandle::from_env_or_start();
    let events = interop_events();
    let topic = unique("rust-to-py");
    env.create_topic(&topic, 1);
    let sent = produce_ours(&settings(&env, &registry), &topic, &events).await;

    let args = vec![
        "--bootstrap".into(),
        env.bootstrap().into(),
        "--registry".into(),
        registry.url().into(),
        "--topic".into(),
        topic.clone(),
        "--group".into(),
        unique("py"),
        "--count".into(),
        events.len().to_string(),
        "--timeout".into(),
        "90".into(),
    ];
    let (status, lines) = tokio::task::spawn_blocking(move || run_python(&py, "kafka_consume.py", args))
        .await
        .unwrap();
    assert!(status.success(), "kafka_consume.py failed ({status}): {lines:?}");
    assert_eq!(lines.len(), events.len());
    let mut found: Vec<String> = lines.iter().map(|l| l["metadata"]["id"].to_string()).collect();
    found.sort();
    found.dedup();
    assert_eq!(found.len(), sent.len(), "every event read once");
    for line in &lines {
        assert!(line.get("error").is_none(), "{line}");
        // Found by event id: the order is kept per key, not across key schemas.
        let i = sent
            .iter()
            .position(|(metadata, _)| metadata["id"] == line["metadata"]["id"])
            .unwrap_or_else(|| panic!("Python read an event we did not send: {line}"));
        assert_eq!(line["data"], events[i]["data"], "event {i} data");
        assert_eq!(line["metadata"], sent[i].0, "event {i} metadata");
        assert_eq!(line["key"], sent[i].1, "event {i} key");
        assert_eq!(line["from_event_bus"], true);
        assert_eq!(line["headers"]["ce_type"], events[i]["event_type"]);
        assert_eq!(line["headers"]["ce_specversion"], "1.0");
        assert_eq!(line["headers"]["content-type"], "application/avro");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn we_consume_what_python_produces() {
    let py = python();
    let env = KafkaEnv::start();
    let registry = RegistryHandle::from_env_or_start();
    let events = interop_events();
    let topic = unique("py-to-rust");
    env.create_topic(&topic, 1);
    env.create_topic(&format!("{topic}-dead-letter"), 1);

    type Seen = Arc<Mutex<Vec<(Value, Value, bool)>>>;
    let seen: Seen = Arc::default();
    let mut types: Vec<&str> = events.iter().map(|e| e["event_type"].as_str().unwrap()).collect();
    types.sort();
    types.dedup();
    for t in types {
        let seen = seen.clone();
        registry::find(t).unwrap().ops().connect_erased(Arc::new(
            move |metadata: &EventMetadata, data: &dyn AnyEvent, from_bus: bool| {
                seen.lock()
                    .unwrap()
                    .push((metadata_json(metadata), data.to_json(), from_bus));
                Ok(())
            },
        ));
    }

    let args = vec![
        "--bootstrap".into(),
        env.bootstrap().into(),
        "--registry".into(),
        registry.url().into(),
        "--topic".into(),
        topic.clone(),
        "--service".into(),
        "py-interop".into(),
        "--events-file".into(),
        python_dir().join("interop_events.json").display().to_string(),
    ];
    let (status, lines) = tokio::task::spawn_blocking(move || run_python(&py, "kafka_produce.py", args))
        .await
        .unwrap();
    assert!(status.success(), "kafka_produce.py failed ({status}): {lines:?}");
    assert_eq!(lines.len(), events.len());

    let mut options = KafkaConsumerOptions {
        max_messages: Some(events.len() as u64),
        ..Default::default()
    };
    options.common.max_consecutive_errors = 1;
    let consumer = KafkaConsumer::new(&settings(&env, &registry), &topic, &unique("rust"), options).unwrap();
    let stats = tokio::time::timeout(Duration::from_secs(60), consumer.run(futures::future::pending()))
        .await
        .expect("consumed in time")
        .unwrap();
    assert_eq!(
        (stats.handled, stats.dead_lettered),
        (events.len() as u64, 0),
        "{stats:?}"
    );
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), events.len());
    for (i, (metadata, data, from_bus)) in seen.iter().enumerate() {
        assert_eq!(data, &events[i]["data"], "event {i} data");
        assert_eq!(metadata, &lines[i]["metadata"], "event {i} metadata");
        assert!(from_bus);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_producer_finds_the_schemas_we_registered() {
    let py = python();
    let env = KafkaEnv::start();
    let registry = RegistryHandle::from_env_or_start();
    let events = interop_events();
    let topic = unique("same-ids");
    env.create_topic(&topic, 1);
    let sent = produce_ours(&settings(&env, &registry), &topic, &events).await;
    let read = env.read_all(&topic, events.len(), Duration::from_secs(20));
    assert_eq!(read.len(), events.len());
    // Our messages in the order of the events file, found by their `ce_id` (the producer keeps
    // the order per key, not across events whose key schemas were registered at different times).
    let ours: Vec<_> = sent
        .iter()
        .map(|(metadata, _)| {
            let id = metadata["id"].as_str().unwrap();
            read.iter()
                .find(|m| kafka_support::headers(m).iter().any(|(k, v)| k == "ce_id" && v == id))
                .unwrap_or_else(|| panic!("no message with ce_id {id}"))
        })
        .collect();
    let subjects_before = registry.is_local().then(|| registry.subjects());

    let args = vec![
        "--bootstrap".into(),
        env.bootstrap().into(),
        "--registry".into(),
        registry.url().into(),
        "--topic".into(),
        topic.clone(),
        "--events-file".into(),
        python_dir().join("interop_events.json").display().to_string(),
    ];
    let (status, lines) = tokio::task::spawn_blocking(move || run_python(&py, "kafka_produce.py", args))
        .await
        .unwrap();
    assert!(status.success(), "kafka_produce.py failed ({status}): {lines:?}");
    assert_eq!(lines.len(), events.len());
    for (i, (line, m)) in lines.iter().zip(&ours).enumerate() {
        use rdkafka::Message;
        let (key_id, _) = openedx_events::kafka::registry::parse_frame(m.key().unwrap()).unwrap();
        let (value_id, _) = openedx_events::kafka::registry::parse_frame(m.payload().unwrap()).unwrap();
        assert_eq!(line["key_schema_id"], key_id, "event {i}: same key schema id");
        assert_eq!(line["value_schema_id"], value_id, "event {i}: same value schema id");
        assert_eq!(line["topic"], topic.as_str());
    }
    if let Some(before) = subjects_before {
        let after = registry.subjects();
        // Key schemas differ by field name (`course_key`, `usage_key`...) and share the
        // `<topic>-string` subject, as with the Python producer alone; what matters is that
        // Python's registrations found ours: no new subject, no new version.
        assert_eq!(after, before, "no new subject, no new version");
        assert!(after.contains_key(&format!("{topic}-string")) && after.contains_key(&format!("{topic}-long")));
    }
}
