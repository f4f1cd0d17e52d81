//! Wire compatibility with the real Python stack (openedx-events + edx-event-bus-redis from
//! PyPI, in the venv `tests/python/setup.sh` makes): what our producer writes, the Python
//! consumer reads with equal data and metadata; what the Python producer writes, our
//! consumer reads with equal data and metadata. The events are those of
//! `tests/python/interop_events.json`: 16 events of 10 catalog types with nested records,
//! optional fields (present and absent), lists, a map, unicode and 64-bit extremes.

mod redis_support;

use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openedx_events::catalog::analytics::TrackingEventEmitted;
use openedx_events::catalog::content_authoring::{
    ContentObjectAssociationsChanged, CourseCatalogInfoChanged, XBlockPublished,
};
use openedx_events::catalog::enterprise::LedgerTransactionCommitted;
use openedx_events::catalog::learning::{
    CourseAccessRoleAdded, CourseEnrollmentCreated, LtiProviderLaunchSuccess, PersistentGradeSummaryChanged,
    XBlockSkillVerified,
};
use openedx_events::event::AnyEvent;
use openedx_events::produce::{Producer, ProducerRecord};
use openedx_events::redis::{RedisConsumer, RedisConsumerOptions};
use openedx_events::redis::{RedisProducer, RedisProducerConfig};
use openedx_events::{registry, EventMetadata, OpenEdxEvent};
use redis_support::{interop_events, json_lines, metadata_json, python, python_dir, unique, url, Cleanup};
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_consumer_reads_what_we_produce() {
    redis_support::init_tracing();
    let py = python();
    let url = url();
    let stream = unique("rust-to-py");
    let group = unique("py");
    let _cleanup = Cleanup::new(&url, &[&stream]);
    let events = interop_events();

    let mut config = RedisProducerConfig::new(&url);
    config.stream_max_len = 0;
    let producer = RedisProducer::start(config).unwrap();
    let mut sent = Vec::new();
    for ev in &events {
        let event_type = ev["event_type"].as_str().unwrap();
        let descriptor = registry::find(event_type).unwrap_or_else(|| panic!("{event_type} is not in the catalog"));
        let data = descriptor.ops().from_json(&ev["data"]).unwrap();
        let metadata = EventMetadata::generate(descriptor.event_type, descriptor.minor_version());
        sent.push(metadata_json(&metadata));
        producer
            .produce(ProducerRecord {
                topic: stream.as_str().into(),
                key: None,
                key_field: None,
                metadata,
                data,
            })
            .unwrap();
    }
    producer.shutdown(Duration::from_secs(10)).await.unwrap();

    let out = tokio::task::spawn_blocking({
        let (url, stream, group, n) = (url.clone(), stream.clone(), group.clone(), events.len());
        move || {
            Command::new(py)
                .arg(python_dir().join("redis_consume.py"))
                .args(["--url", &url, "--stream", &stream, "--group", &group])
                .args(["--count", &n.to_string(), "--timeout", "60"])
                .stderr(Stdio::inherit())
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    let lines = json_lines(&out.stdout);
    assert!(
        out.status.success(),
        "redis_consume.py failed ({}): {lines:?}",
        out.status
    );
    assert_eq!(lines.len(), events.len());
    for (i, line) in lines.iter().enumerate() {
        assert!(line.get("error").is_none(), "event {i}: {line}");
        assert_eq!(line["data"], events[i]["data"], "event {i} data");
        assert_eq!(line["metadata"], sent[i], "event {i} metadata");
        assert_eq!(line["from_event_bus"], true);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn we_consume_what_python_produces() {
    redis_support::init_tracing();
    let py = python();
    let url = url();
    let topic = unique("py-to-rust");
    let _cleanup = Cleanup::new(&url, &[&topic, &format!("{topic}-dead-letter")]);
    let events = interop_events();

    type Seen = Arc<Mutex<Vec<(Value, Value, bool)>>>;
    let seen: Seen = Arc::new(Mutex::new(Vec::new()));
    fn record<E: OpenEdxEvent>(seen: &Seen) {
        let seen = seen.clone();
        E::signal().connect(move |env: &openedx_events::Envelope<E>| {
            let data = AnyEvent::to_json(&*env.data);
            seen.lock()
                .unwrap()
                .push((metadata_json(&env.metadata), data, env.from_event_bus));
        });
    }
    record::<TrackingEventEmitted>(&seen);
    record::<ContentObjectAssociationsChanged>(&seen);
    record::<CourseCatalogInfoChanged>(&seen);
    record::<XBlockPublished>(&seen);
    record::<LedgerTransactionCommitted>(&seen);
    record::<CourseEnrollmentCreated>(&seen);
    record::<PersistentGradeSummaryChanged>(&seen);
    record::<LtiProviderLaunchSuccess>(&seen);
    record::<CourseAccessRoleAdded>(&seen);
    record::<XBlockSkillVerified>(&seen);

    let out = tokio::task::spawn_blocking({
        let (url, topic) = (url.clone(), topic.clone());
        move || {
            Command::new(py)
                .arg(python_dir().join("redis_produce.py"))
                .args(["--url", &url, "--topic", &topic, "--maxlen", "1000"])
                .arg("--events-file")
                .arg(python_dir().join("interop_events.json"))
                .stderr(Stdio::inherit())
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    let lines = json_lines(&out.stdout);
    assert!(
        out.status.success(),
        "redis_produce.py failed ({}): {lines:?}",
        out.status
    );
    assert_eq!(lines.len(), events.len());

    let mut options = RedisConsumerOptions {
        max_count: Some(events.len() as u64),
        ..Default::default()
    };
    options.common.max_consecutive_errors = 1;
    let consumer = RedisConsumer::new(&url, &topic, unique("rust"), "c1", options).unwrap();
    let stats = tokio::time::timeout(Duration::from_secs(30), consumer.run(futures::future::pending()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stats.succeeded, events.len() as u64, "{stats:?}");
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), events.len());
    for (i, (metadata, data, from_bus)) in seen.iter().enumerate() {
        assert_eq!(data, &events[i]["data"], "event {i} data");
        assert_eq!(metadata, &lines[i]["metadata"], "event {i} metadata");
        assert!(from_bus);
    }
}
