//! The Kafka producer against librdkafka's mock cluster (or `KAFKA_BOOTSTRAP_SERVERS`)
//! and the project's test schema registry (or `EVENT_BUS_KAFKA_SCHEMA_REGISTRY_URL`):
//! headers, subjects and ids, key and value bytes, flush, delivery failure, full queue,
//! a registry that comes up late.

#[path = "support/kafka.rs"]
mod kafka_support;
#[path = "support/registry.rs"]
mod registry_support;

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kafka_support::{headers, unique, KafkaEnv};
use openedx_events::catalog::content_authoring::*;
use openedx_events::kafka::registry::{parse_frame, SchemaRegistryClient};
use openedx_events::kafka::KafkaProducer;
use openedx_events::keys::UsageKey;
use openedx_events::produce::{ProduceError, Producer, ProducerRecord};
use openedx_events::{producer_config, EventBus, OpenEdxEvent, Settings};
use rdkafka::Message;
use registry_support::RegistryHandle;

const XBLOCK_PUBLISHED: &str = "org.openedx.content_authoring.xblock.published.v1";

fn settings(env: &KafkaEnv, registry_url: &str, prefix: &str) -> Settings {
    Settings::new()
        .with("EVENT_BUS_PRODUCER", "kafka")
        .with("EVENT_BUS_KAFKA_BOOTSTRAP_SERVERS", env.bootstrap())
        .with("EVENT_BUS_KAFKA_SCHEMA_REGISTRY_URL", registry_url)
        .with("EVENT_BUS_TOPIC_PREFIX", prefix)
        .with("EVENTS_SERVICE_NAME", "kafka-test")
}

fn usage_key(i: usize) -> UsageKey {
    UsageKey::parse(format!("block-v1:edX+DemoX+Demo_Course+type@video+block@b{i:04}")).unwrap()
}

fn event(key: usize, block_type: &str) -> XBlockPublished {
    XBlockPublished {
        xblock_info: XBlockData {
            usage_key: usage_key(key),
            block_type: block_type.to_owned(),
            version: None,
        },
    }
}

fn start_bus(settings: Settings) -> EventBus {
    EventBus::builder()
        .producer_config(producer_config! {
            "org.openedx.content_authoring.xblock.published.v1" => [
                { topic: "xblock-lifecycle", event_key_field: "xblock_info.usage_key", enabled: true },
            ],
        })
        .settings(settings)
        .start()
        .expect("bus starts with the kafka producer")
}

fn kafka(bus: &EventBus) -> &KafkaProducer {
    bus.producer()
        .as_any()
        .downcast_ref::<KafkaProducer>()
        .expect("kafka producer")
}

fn record(topic: &str, ev: XBlockPublished) -> ProducerRecord {
    kafka_support::usage_key_record(topic, &ev.xblock_info.usage_key.clone(), ev)
}

/// Avro `string` as schemaless binary: zig-zag length, then the bytes.
fn avro_string(s: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let mut n = ((s.len() as i64) << 1) as u64;
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            break;
        }
        out.push(byte | 0x80);
    }
    out.extend_from_slice(s.as_bytes());
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_headers_subjects_and_bytes() {
    let env = KafkaEnv::start();
    let registry = RegistryHandle::from_env_or_start();
    let prefix = unique("rt");
    let topic = format!("{prefix}-xblock-lifecycle");
    env.create_topic(&topic, 3);
    let bus = start_bus(settings(&env, registry.url(), &prefix));

    let sent: Vec<XBlockPublished> = (0..3).map(|i| event(i, &format!("type-{i}"))).collect();
    for ev in &sent {
        XBlockPublished::signal().send_event(ev.clone());
    }
    bus.shutdown(Duration::from_secs(30)).await.expect("all delivered");

    let messages = env.read_all(&topic, 3, Duration::from_secs(20));
    assert_eq!(messages.len(), 3, "exactly the events sent");
    let client = SchemaRegistryClient::new(registry.url(), None).unwrap();
    let value_subject = format!("{topic}-{XBLOCK_PUBLISHED}.CloudEvent");
    let key_subject = format!("{topic}-string");
    let mut ids = Vec::new();
    for m in &messages {
        let h = headers(m);
        let names: Vec<&str> = h.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            names,
            [
                "ce_specversion",
                "content-type",
                "ce_datacontenttype",
                "ce_type",
                "ce_id",
                "ce_source",
                "ce_time",
                "ce_minorversion",
                "sourcehost",
                "sourcelib"
            ]
        );
        let get = |n: &str| h.iter().find(|(k, _)| k == n).unwrap().1.clone();
        assert_eq!(get("ce_specversion"), "1.0");
        assert_eq!(get("content-type"), "application/avro");
        assert_eq!(get("ce_datacontenttype"), "application/avro");
        assert_eq!(get("ce_type"), XBLOCK_PUBLISHED);
        assert_eq!(get("ce_source"), "openedx/kafka-test/web");
        assert_eq!(get("ce_minorversion"), "0");
        assert_eq!(get("sourcelib"), env!("CARGO_PKG_VERSION"));
        let id = uuid::Uuid::parse_str(&get("ce_id")).unwrap();
        assert_eq!(id.get_version_num(), 1);
        assert_eq!(get("ce_id"), id.hyphenated().to_string());
        let time = get("ce_time");
        assert!(time.ends_with("+00:00"), "{time}");
        assert!(chrono::DateTime::parse_from_rfc3339(&time).is_ok(), "{time}");

        // Key: framed Avro string of the usage key.
        let (key_id, key_body) = parse_frame(m.key().unwrap()).unwrap();
        let usage = std::str::from_utf8(&key_body[1..]).unwrap().to_owned();
        assert_eq!(key_body, avro_string(&usage));
        let ev = sent
            .iter()
            .find(|e| e.xblock_info.usage_key.to_string() == usage)
            .expect("key is one of the usage keys sent");
        // Value: framed schemaless Avro of the data, exactly as the codec writes it.
        let (value_id, value_body) = parse_frame(m.payload().unwrap()).unwrap();
        assert_eq!(value_body, openedx_events::avro::encode(ev).unwrap());
        assert_eq!(
            client.schema(value_id).await.unwrap().text,
            XBlockPublished::avro_schema().registry_text()
        );
        assert_eq!(
            client.schema(key_id).await.unwrap().text,
            r#"{"name": "usage_key", "type": "string"}"#
        );
        ids.push((key_id, value_id));
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "one key schema id and one value schema id");
    if registry.is_local() {
        let subjects = registry.subjects();
        assert_eq!(subjects.len(), 2, "{subjects:?}");
        assert_eq!(subjects[&key_subject], vec![ids[0].0]);
        assert_eq!(subjects[&value_subject], vec![ids[0].1]);
        // Registered once per subject and schema, not per event.
        assert_eq!(registry.requests(&format!("POST /subjects/{key_subject}/versions")), 1);
        assert_eq!(
            registry.requests(&format!("POST /subjects/{value_subject}/versions")),
            1
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_delivers_every_event_in_order_per_key() {
    const N: usize = 20_000;
    const KEYS: usize = 8;
    let env = KafkaEnv::start();
    let registry = RegistryHandle::from_env_or_start();
    let prefix = unique("n");
    let topic = format!("{prefix}-xblock-lifecycle");
    env.create_topic(&topic, 4);
    let bus = start_bus(settings(&env, registry.url(), &prefix));
    tokio::task::spawn_blocking(|| {
        for i in 0..N {
            XBlockPublished::signal().send_event(event(i % KEYS, &i.to_string()));
        }
    })
    .await
    .unwrap();
    let stats_before = kafka(&bus).stats();
    assert_eq!(stats_before.accepted, N as u64);
    let producer = bus.producer().clone();
    bus.shutdown(Duration::from_secs(60))
        .await
        .expect("every event delivered");
    let stats = producer.as_any().downcast_ref::<KafkaProducer>().unwrap().stats();
    assert_eq!(
        (stats.delivered, stats.failed, stats.rejected, stats.parked),
        (N as u64, 0, 0, 0)
    );

    let messages = env.read_all(&topic, N, Duration::from_secs(60));
    assert_eq!(messages.len(), N, "exactly N messages read back");
    let mut per_key: HashMap<Vec<u8>, Vec<usize>> = HashMap::new();
    for m in &messages {
        let ev: XBlockPublished = openedx_events::avro::decode(parse_frame(m.payload().unwrap()).unwrap().1).unwrap();
        per_key
            .entry(m.key().unwrap().to_vec())
            .or_default()
            .push(ev.xblock_info.block_type.parse().unwrap());
    }
    assert_eq!(per_key.len(), KEYS);
    for seqs in per_key.values() {
        assert_eq!(seqs.len(), N / KEYS);
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "in order per key");
    }
    if registry.is_local() {
        assert_eq!(
            registry.requests(&format!(
                "POST /subjects/{topic}-{XBLOCK_PUBLISHED}.CloudEvent/versions"
            )),
            1
        );
    }
}

/// Captures log output.
#[derive(Clone, Default)]
struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl LogBuffer {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_failure_is_reported_and_logged_without_data() {
    let env = KafkaEnv::start();
    let Some(cluster) = env.mock() else {
        eprintln!("a real broker cannot be stopped from the test: this test needs the mock cluster");
        return;
    };
    let logs = LogBuffer::default();
    let writer = logs.clone();
    // Global: delivery reports are logged on librdkafka's polling thread (one process per test).
    tracing::subscriber::set_global_default(
        tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish(),
    )
    .unwrap();
    let registry = RegistryHandle::from_env_or_start();
    let prefix = unique("down");
    let topic = format!("{prefix}-xblock-lifecycle");
    env.create_topic(&topic, 1);
    let settings = settings(&env, registry.url(), &prefix)
        .with("EVENT_BUS_KAFKA_CONFIG_MESSAGE_TIMEOUT_MS", "2000")
        .with("EVENT_BUS_KAFKA_CONFIG_RECONNECT_BACKOFF_MAX_MS", "200");
    let producer = KafkaProducer::from_settings(&settings).unwrap();

    producer.produce(record(&topic, event(0, "first"))).unwrap();
    producer
        .flush(Duration::from_secs(30))
        .await
        .expect("delivered while brokers are up");

    for b in 1..=3 {
        cluster.broker_down(b).unwrap();
    }
    let secret = "pii-jane.doe@example.com";
    let mut ids = Vec::new();
    for i in 0..5 {
        let r = record(&topic, event(i, secret));
        ids.push(r.metadata.id);
        producer.produce(r).unwrap();
    }
    let started = Instant::now();
    match producer.flush(Duration::from_secs(30)).await {
        Err(ProduceError::Failed { failed }) => assert_eq!(failed, 5),
        other => panic!("expected 5 failed events, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(15));
    let stats = producer.stats();
    assert_eq!((stats.accepted, stats.delivered, stats.failed), (6, 1, 5));
    let text = logs.text();
    for id in &ids {
        assert!(text.contains(&id.to_string()), "failure of {id} logged: {text}");
    }
    assert!(text.contains("kafka delivery failed") && text.contains(XBLOCK_PUBLISHED) && text.contains(&topic));
    assert!(!text.contains(secret), "event data must never be logged");

    for b in 1..=3 {
        cluster.broker_up(b).unwrap();
    }
    // Give the client a moment to reconnect before the 2 s message timeout starts.
    tokio::time::sleep(Duration::from_secs(1)).await;
    producer.produce(record(&topic, event(1, "after"))).unwrap();
    producer
        .shutdown(Duration::from_secs(30))
        .await
        .expect("delivered again");
    assert_eq!(producer.stats().delivered, 2);
    let read = env.read_all(&topic, 2, Duration::from_secs(20));
    assert_eq!(read.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_queue_follows_the_configured_policy() {
    let env = KafkaEnv::start();
    let Some(cluster) = env.mock() else {
        eprintln!("filling the queue needs a broker that can be stopped: this test needs the mock cluster");
        return;
    };
    let registry = RegistryHandle::from_env_or_start();
    let prefix = unique("full");
    let topic = format!("{prefix}-xblock-lifecycle");
    env.create_topic(&topic, 1);
    let base = settings(&env, registry.url(), &prefix)
        .with("EVENT_BUS_KAFKA_CONFIG_MESSAGE_TIMEOUT_MS", "1500")
        .with("EVENT_BUS_KAFKA_CONFIG_QUEUE_BUFFERING_MAX_MESSAGES", "5");
    for (policy, wait) in [("0", Duration::ZERO), ("300", Duration::from_millis(300))] {
        let producer =
            KafkaProducer::from_settings(&base.clone().with("EVENT_BUS_KAFKA_QUEUE_FULL_WAIT_MS", policy)).unwrap();
        producer.produce(record(&topic, event(0, "warm-up"))).unwrap();
        producer.flush(Duration::from_secs(30)).await.unwrap();
        for b in 1..=3 {
            cluster.broker_down(b).unwrap();
        }
        let mut outcomes = Vec::new();
        for i in 0..8 {
            let started = Instant::now();
            let r = producer.produce(record(&topic, event(i, "x")));
            outcomes.push((r, started.elapsed()));
        }
        let accepted = outcomes.iter().filter(|(r, _)| r.is_ok()).count();
        assert_eq!(accepted, 5, "the queue holds 5");
        for (r, waited) in &outcomes[5..] {
            assert!(matches!(r, Err(ProduceError::BufferFull { .. })), "{r:?}");
            assert!(*waited >= wait, "waited {waited:?} under policy {policy}");
            if wait.is_zero() {
                assert!(*waited < Duration::from_millis(50), "reject at once: {waited:?}");
            }
        }
        assert_eq!(producer.stats().rejected, 3);
        match producer.shutdown(Duration::from_secs(30)).await {
            Err(ProduceError::Failed { failed }) => assert_eq!(failed, 5),
            other => panic!("{other:?}"),
        }
        for b in 1..=3 {
            cluster.broker_up(b).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_wait_for_a_registry_that_comes_up_late() {
    let env = KafkaEnv::start();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let prefix = unique("late");
    let topic = format!("{prefix}-xblock-lifecycle");
    env.create_topic(&topic, 2);
    let producer = KafkaProducer::from_settings(&settings(&env, &format!("http://127.0.0.1:{port}"), &prefix)).unwrap();
    for i in 0..10 {
        producer.produce(record(&topic, event(i % 2, &i.to_string()))).unwrap();
    }
    match producer.flush(Duration::from_millis(800)).await {
        Err(ProduceError::Timeout { pending, .. }) => assert_eq!(pending, 10),
        other => panic!("expected a timeout with 10 pending, got {other:?}"),
    }
    assert_eq!(producer.stats().parked, 10);
    let registry = RegistryHandle::start_on(port);
    producer
        .shutdown(Duration::from_secs(30))
        .await
        .expect("released and delivered");
    assert_eq!(producer.stats().delivered, 10);
    let messages = env.read_all(&topic, 10, Duration::from_secs(20));
    assert_eq!(messages.len(), 10);
    let mut per_key: HashMap<Vec<u8>, Vec<usize>> = HashMap::new();
    for m in &messages {
        let ev: XBlockPublished = openedx_events::avro::decode(parse_frame(m.payload().unwrap()).unwrap().1).unwrap();
        per_key
            .entry(m.key().unwrap().to_vec())
            .or_default()
            .push(ev.xblock_info.block_type.parse().unwrap());
    }
    for seqs in per_key.values() {
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    }
    assert_eq!(registry.subjects().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemas_are_registered_at_start_up() {
    let env = KafkaEnv::start();
    let registry = RegistryHandle::start();
    let prefix = unique("prep");
    let topic = format!("{prefix}-xblock-lifecycle");
    env.create_topic(&topic, 1);
    let bus = start_bus(settings(&env, registry.url(), &prefix));
    let value_subject = format!("{topic}-{XBLOCK_PUBLISHED}.CloudEvent");
    let key_subject = format!("{topic}-string");
    let deadline = Instant::now() + Duration::from_secs(10);
    while registry.subjects().len() < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let subjects = registry.subjects();
    assert!(
        subjects.contains_key(&value_subject) && subjects.contains_key(&key_subject),
        "registered before any event: {subjects:?}"
    );
    XBlockPublished::signal().send_event(event(1, "after start"));
    bus.shutdown(Duration::from_secs(30)).await.unwrap();
    assert_eq!(env.read_all(&topic, 1, Duration::from_secs(20)).len(), 1);
    assert_eq!(
        registry.requests(&format!("POST /subjects/{value_subject}/versions")),
        1
    );
    assert_eq!(registry.requests(&format!("POST /subjects/{key_subject}/versions")), 1);
}

/// While the schema of one event type cannot be registered, the later events of its
/// topic wait behind its first event, whatever their type: once the registry takes
/// the schema, the topic holds every event in the order it was produced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_schema_holds_the_later_events_of_its_topic_in_order() {
    late_schema_of_one_type(false).await;
}

/// When the registry refuses the schema of one event type for good, its events are
/// reported failed and the events of the topic held behind them go out, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_schema_fails_its_events_and_releases_the_rest_in_order() {
    late_schema_of_one_type(true).await;
}

/// Twelve events of one key on one topic, every third an `XBlockDeleted` whose schema
/// the registry answers 503 for (`refused_for_good`: 422) until event 1 has held the others.
async fn late_schema_of_one_type(refused_for_good: bool) {
    let env = KafkaEnv::start();
    // The refusal needs the in-process registry, whatever the environment names.
    let registry = RegistryHandle::start();
    let prefix = unique("late-type");
    let topic = format!("{prefix}-xblock-lifecycle");
    env.create_topic(&topic, 1);
    let deleted_subject = format!("{topic}-{}.CloudEvent", XBlockDeleted::EVENT_TYPE);
    let published_subject = format!("{topic}-{XBLOCK_PUBLISHED}.CloudEvent");
    registry.refuse(&deleted_subject);
    let producer = KafkaProducer::from_settings(&settings(&env, registry.url(), &prefix)).unwrap();
    let deleted = |i: usize| {
        let xblock_info = event(0, &i.to_string()).xblock_info;
        kafka_support::usage_key_record(&topic, &xblock_info.usage_key.clone(), XBlockDeleted { xblock_info })
    };
    // One key; every third event is a deletion, whose schema the registry refuses.
    let n = 12;
    for i in 0..n {
        let rec = if i % 3 == 1 {
            deleted(i)
        } else {
            record(&topic, event(0, &i.to_string()))
        };
        producer.produce(rec).unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while !registry.subjects().contains_key(&published_subject) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(registry.subjects().contains_key(&published_subject));
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Event 0 went out; event 1 waits for its schema, and the rest wait behind it.
    assert_eq!(producer.stats().parked, n as u64 - 1, "{:?}", producer.stats());
    let is_deleted = |i: usize| i % 3 == 1;
    let n_deleted = (0..n).filter(|i| is_deleted(*i)).count();
    if refused_for_good {
        registry.reject(&deleted_subject);
        registry.accept(&deleted_subject);
        match producer.shutdown(Duration::from_secs(30)).await {
            Err(ProduceError::Failed { failed }) => assert_eq!(failed, n_deleted as u64),
            other => panic!("expected {n_deleted} failed, got {other:?}"),
        }
        assert_eq!(producer.stats().failed, n_deleted as u64);
    } else {
        registry.accept(&deleted_subject);
        producer
            .shutdown(Duration::from_secs(30))
            .await
            .expect("released and delivered");
    }
    let sent: Vec<usize> = (0..n).filter(|i| !refused_for_good || !is_deleted(*i)).collect();
    assert_eq!(producer.stats().delivered, sent.len() as u64);
    assert_eq!(producer.stats().parked, 0);
    let messages = env.read_all(&topic, sent.len(), Duration::from_secs(20));
    let order: Vec<(String, usize)> = messages
        .iter()
        .map(|m| {
            let ce_type = headers(m)
                .into_iter()
                .find(|(k, _)| k == "ce_type")
                .map(|(_, v)| v)
                .unwrap();
            let payload = parse_frame(m.payload().unwrap()).unwrap().1;
            let block_type = if ce_type == XBlockDeleted::EVENT_TYPE {
                openedx_events::avro::decode::<XBlockDeleted>(payload)
                    .unwrap()
                    .xblock_info
                    .block_type
            } else {
                openedx_events::avro::decode::<XBlockPublished>(payload)
                    .unwrap()
                    .xblock_info
                    .block_type
            };
            (ce_type, block_type.parse().unwrap())
        })
        .collect();
    let expected: Vec<(String, usize)> = sent
        .into_iter()
        .map(|i| {
            let t = if is_deleted(i) {
                XBlockDeleted::EVENT_TYPE
            } else {
                XBLOCK_PUBLISHED
            };
            (t.to_owned(), i)
        })
        .collect();
    assert_eq!(order, expected);
}

/// `produce_and_confirm` returns where each event landed: the message at that
/// partition and offset is the event, however many others are produced meanwhile; an
/// event whose schema the registry refuses is reported failed to its caller.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_and_confirm_returns_where_each_event_landed() {
    let env = KafkaEnv::start();
    let registry = RegistryHandle::start();
    let prefix = unique("confirm");
    let topic = format!("{prefix}-xblock-lifecycle");
    env.create_topic(&topic, 3);
    let producer = KafkaProducer::from_settings(&settings(&env, registry.url(), &prefix)).unwrap();
    let n = 60;
    let mut confirmed = Vec::new();
    for i in 0..n {
        let ev = event(i % 7, &format!("confirmed-{i}"));
        let rec = record(&topic, ev);
        let id = rec.metadata.id;
        // Unconfirmed events in between.
        producer.produce(record(&topic, event(i % 5, "other"))).unwrap();
        confirmed.push((
            id,
            tokio::spawn({
                let producer = producer.clone();
                async move { producer.produce_and_confirm(rec).await }
            }),
        ));
    }
    let mut positions = HashMap::new();
    for (id, task) in confirmed {
        let at = task.await.unwrap().expect("delivered");
        assert!(
            positions.insert((at.partition, at.offset), id.to_string()).is_none(),
            "one position each"
        );
    }
    producer.shutdown(Duration::from_secs(30)).await.unwrap();
    let messages = env.read_all(&topic, 2 * n, Duration::from_secs(20));
    let mut found = 0;
    for m in &messages {
        if let Some(id) = positions.get(&(m.partition(), m.offset())) {
            let ce_id = headers(m).into_iter().find(|(k, _)| k == "ce_id").map(|(_, v)| v);
            assert_eq!(ce_id.as_deref(), Some(id.as_str()));
            found += 1;
        }
    }
    assert_eq!(found, n);

    // A schema the registry refuses: the caller hears of it.
    let refused = format!("{prefix}-refused");
    env.create_topic(&refused, 1);
    registry.reject(&format!("{refused}-{XBLOCK_PUBLISHED}.CloudEvent"));
    let producer = KafkaProducer::from_settings(&settings(&env, registry.url(), &prefix)).unwrap();
    let err = tokio::time::timeout(
        Duration::from_secs(20),
        producer.produce_and_confirm(record(&refused, event(1, "refused"))),
    )
    .await
    .expect("answered")
    .unwrap_err();
    assert!(err.to_string().contains("Invalid schema"), "{err}");
}

/// Parked events released into a full librdkafka queue wait for room without holding up
/// anyone: producing to their topic meanwhile returns at once, and once the brokers are
/// back every event is delivered, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn releasing_into_a_full_queue_blocks_no_producer() {
    let env = KafkaEnv::start();
    let Some(cluster) = env.mock() else {
        eprintln!("filling the queue needs a broker that can be stopped: this test needs the mock cluster");
        return;
    };
    let registry = RegistryHandle::start();
    let prefix = unique("release-full");
    let ready = format!("{prefix}-ready");
    let late = format!("{prefix}-late");
    env.create_topic(&ready, 1);
    env.create_topic(&late, 1);
    let late_subject = format!("{late}-{XBLOCK_PUBLISHED}.CloudEvent");
    registry.refuse(&late_subject);
    let producer = KafkaProducer::from_settings(
        &settings(&env, registry.url(), &prefix)
            .with("EVENT_BUS_KAFKA_CONFIG_QUEUE_BUFFERING_MAX_MESSAGES", "5")
            .with("EVENT_BUS_KAFKA_CONFIG_MESSAGE_TIMEOUT_MS", "120000"),
    )
    .unwrap();
    producer.produce(record(&ready, event(0, "warm-up"))).unwrap();
    producer.flush(Duration::from_secs(30)).await.unwrap();
    for b in 1..=3 {
        cluster.broker_down(b).unwrap();
    }
    // librdkafka's queue is full of `ready` events; three `late` events wait for their schema.
    for i in 0..5 {
        producer.produce(record(&ready, event(0, &format!("r{i}")))).unwrap();
    }
    for i in 0..3 {
        producer.produce(record(&late, event(0, &i.to_string()))).unwrap();
    }
    registry.accept(&late_subject);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !registry.subjects().contains_key(&late_subject) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(producer.stats().parked, 3, "no room yet: {:?}", producer.stats());
    // Producing to the topic being released answers at once (the event queues behind).
    let (tx, rx) = std::sync::mpsc::channel();
    let p = producer.clone();
    let late_topic = late.clone();
    std::thread::spawn(move || {
        let started = Instant::now();
        let r = p.produce(record(&late_topic, event(0, "3")));
        let _ = tx.send((r, started.elapsed()));
    });
    let (r, took) = rx
        .recv_timeout(Duration::from_secs(2))
        .expect("produce returned while the release waits for room");
    r.expect("queued behind the parked events");
    assert!(took < Duration::from_millis(200), "took {took:?}");
    for b in 1..=3 {
        cluster.broker_up(b).unwrap();
    }
    producer
        .shutdown(Duration::from_secs(60))
        .await
        .expect("every event delivered");
    assert_eq!(producer.stats().delivered, 10);
    let messages = env.read_all(&late, 4, Duration::from_secs(20));
    let order: Vec<String> = messages
        .iter()
        .map(|m| {
            let payload = parse_frame(m.payload().unwrap()).unwrap().1;
            openedx_events::avro::decode::<XBlockPublished>(payload)
                .unwrap()
                .xblock_info
                .block_type
        })
        .collect();
    assert_eq!(order, ["0", "1", "2", "3"]);
}

/// Three threads produce to one topic while the registry refuses one event type's schema
/// for good: an event that passed the "route failed?" check just before the refusal is
/// refused or reported failed, never parked where nothing releases it. Shutdown finishes,
/// nothing stays parked, and every event of the other type that was accepted is on the topic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_racing_a_permanent_registry_refusal_never_blocks_its_topic() {
    let env = KafkaEnv::start();
    let registry = RegistryHandle::start();
    for round in 0..5 {
        let prefix = unique("race");
        let topic = format!("{prefix}-xblock-lifecycle");
        env.create_topic(&topic, 1);
        registry.reject(&format!("{topic}-{}.CloudEvent", XBlockDeleted::EVENT_TYPE));
        let producer = KafkaProducer::from_settings(&settings(&env, registry.url(), &prefix)).unwrap();
        let start = Arc::new(std::sync::Barrier::new(3));
        let threads: Vec<_> = (0..3)
            .map(|t| {
                let (producer, topic, start) = (producer.clone(), topic.clone(), start.clone());
                std::thread::spawn(move || {
                    start.wait();
                    let began = Instant::now();
                    let mut published = 0usize;
                    for i in 0..4000 {
                        if began.elapsed() > Duration::from_millis(300) {
                            break;
                        }
                        let xblock_info = event(t, &format!("{t}-{i}")).xblock_info;
                        let key = xblock_info.usage_key.clone();
                        if i % 2 == 0 {
                            let _ = producer.produce(kafka_support::usage_key_record(
                                &topic,
                                &key,
                                XBlockDeleted { xblock_info },
                            ));
                        } else if producer
                            .produce(kafka_support::usage_key_record(
                                &topic,
                                &key,
                                XBlockPublished { xblock_info },
                            ))
                            .is_ok()
                        {
                            published += 1;
                        }
                    }
                    published
                })
            })
            .collect();
        let published: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        let result = producer.shutdown(Duration::from_secs(10)).await;
        assert!(
            !matches!(result, Err(ProduceError::Timeout { .. })),
            "round {round}: {result:?}, {:?}",
            producer.stats()
        );
        assert_eq!(producer.stats().parked, 0, "round {round}");
        let messages = env.read_all(&topic, published, Duration::from_secs(20));
        assert_eq!(messages.len(), published, "round {round}");
    }
}

/// Every event `produce` refuses is counted as rejected: after shutdown, on a route whose
/// schema was refused, and over the parked-event limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_refusal_is_counted_as_rejected() {
    let env = KafkaEnv::start();
    let registry = RegistryHandle::start();
    let prefix = unique("rejected");
    let refused = format!("{prefix}-refused");
    let late = format!("{prefix}-late");
    env.create_topic(&refused, 1);
    env.create_topic(&late, 1);
    registry.reject(&format!("{refused}-{XBLOCK_PUBLISHED}.CloudEvent"));
    registry.refuse(&format!("{late}-{XBLOCK_PUBLISHED}.CloudEvent"));
    let producer = KafkaProducer::from_settings(
        &settings(&env, registry.url(), &prefix).with("EVENT_BUS_KAFKA_CONFIG_QUEUE_BUFFERING_MAX_MESSAGES", "2"),
    )
    .unwrap();
    // A route whose schema the registry refused for good.
    let first = tokio::time::timeout(
        Duration::from_secs(20),
        producer.produce_and_confirm(record(&refused, event(1, "first"))),
    )
    .await
    .expect("answered");
    assert!(first.is_err(), "accepted, then reported failed");
    assert_eq!(producer.stats().rejected, 0);
    let err = producer.produce(record(&refused, event(1, "second"))).unwrap_err();
    assert!(err.to_string().contains("schema registration failed"), "{err}");
    assert_eq!(producer.stats().rejected, 1, "a failed route");
    // The parked-event limit (queue.buffering.max.messages = 2).
    producer.produce(record(&late, event(1, "p1"))).unwrap();
    producer.produce(record(&late, event(1, "p2"))).unwrap();
    assert!(matches!(
        producer.produce(record(&late, event(1, "p3"))),
        Err(ProduceError::BufferFull { .. })
    ));
    assert_eq!(producer.stats().rejected, 2, "the parked-event limit");
    // A closed producer.
    let _ = producer.shutdown(Duration::from_millis(300)).await;
    assert!(matches!(
        producer.produce(record(&late, event(1, "closed"))),
        Err(ProduceError::Closed)
    ));
    assert_eq!(producer.stats().rejected, 3, "a closed producer");
}

/// An event still waiting for its schema when shutdown gives up is reported failed: its
/// `produce_and_confirm` caller hears of it, it is counted, nothing stays parked, and it
/// does not go out later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_parked_at_shutdown_is_reported_failed_not_left_waiting() {
    let env = KafkaEnv::start();
    let registry = RegistryHandle::start();
    let prefix = unique("parked-at-shutdown");
    let topic = format!("{prefix}-xblock-lifecycle");
    env.create_topic(&topic, 1);
    let subject = format!("{topic}-{XBLOCK_PUBLISHED}.CloudEvent");
    registry.refuse(&subject);
    let producer = KafkaProducer::from_settings(&settings(&env, registry.url(), &prefix)).unwrap();
    let waiting = tokio::spawn({
        let producer = producer.clone();
        async move { producer.produce_and_confirm(record(&topic, event(1, "waiting"))).await }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while producer.stats().parked == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(producer.stats().parked, 1);
    match producer.shutdown(Duration::from_millis(500)).await {
        Err(ProduceError::Timeout { pending, .. }) => assert_eq!(pending, 1),
        other => panic!("expected a timeout with 1 pending, got {other:?}"),
    }
    let answer = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("the caller hears what became of its event")
        .unwrap();
    let error = answer.expect_err("not delivered");
    assert!(error.to_string().contains("shut down"), "{error}");
    let stats = producer.stats();
    assert_eq!((stats.parked, stats.failed, stats.delivered), (0, 1, 0));
    registry.allow(&subject);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let topic = format!("{prefix}-xblock-lifecycle");
    assert!(env.read_all(&topic, 0, Duration::from_millis(500)).is_empty());
}

/// A schema the registry refused for good is tried again once the retry interval has
/// passed: the first event after it is delivered (a refusal does not last until restart).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_schema_is_registered_again_after_the_retry_interval() {
    let env = KafkaEnv::start();
    let registry = RegistryHandle::start();
    let prefix = unique("retry-refused");
    let topic = format!("{prefix}-xblock-lifecycle");
    env.create_topic(&topic, 1);
    let subject = format!("{topic}-{XBLOCK_PUBLISHED}.CloudEvent");
    registry.reject(&subject);
    let producer = KafkaProducer::from_settings(
        &settings(&env, registry.url(), &prefix).with("EVENT_BUS_KAFKA_SCHEMA_RETRY_AFTER_MS", "1000"),
    )
    .unwrap();
    let confirm = |name: &str| {
        let producer = producer.clone();
        let rec = record(&topic, event(1, name));
        async move {
            tokio::time::timeout(Duration::from_secs(20), producer.produce_and_confirm(rec))
                .await
                .expect("answered")
        }
    };
    assert!(confirm("refused").await.is_err());
    assert!(
        producer.produce(record(&topic, event(1, "still refused"))).is_err(),
        "refused at once within the interval"
    );
    registry.allow(&subject);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let at = confirm("accepted").await.expect("registered again and delivered");
    match producer.shutdown(Duration::from_secs(30)).await {
        Err(ProduceError::Failed { failed: 1 }) => {}
        other => panic!("expected the first event reported failed, got {other:?}"),
    }
    let messages = env.read_all(&topic, 1, Duration::from_secs(20));
    assert_eq!(messages.len(), 1);
    assert_eq!(
        (messages[0].partition(), messages[0].offset()),
        (at.partition, at.offset)
    );
}

/// Releasing a topic's many parked events (once their schema is registered) never holds
/// the topic's lock while encoding and sending them: a producer of the topic meanwhile is
/// answered at once, every time; and every event goes out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn releasing_many_parked_events_never_holds_up_a_producer_of_their_topic() {
    let env = KafkaEnv::start();
    let registry = RegistryHandle::start();
    let prefix = unique("release-many");
    let topic = format!("{prefix}-xblock-lifecycle");
    // Six partitions: 50,000 events stay under the mock cluster's 5 MB per partition.
    env.create_topic(&topic, 6);
    let subject = format!("{topic}-{XBLOCK_PUBLISHED}.CloudEvent");
    registry.refuse(&subject);
    let producer = KafkaProducer::from_settings(
        &settings(&env, registry.url(), &prefix).with("EVENT_BUS_KAFKA_CONFIG_QUEUE_BUFFERING_MAX_MESSAGES", "300000"),
    )
    .unwrap();
    let n = 50_000u64;
    for i in 0..n {
        producer
            .produce(record(&topic, event(i as usize % 50, &i.to_string())))
            .unwrap();
    }
    assert_eq!(producer.stats().parked, n);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let during = std::thread::spawn({
        let (producer, topic, stop) = (producer.clone(), topic.clone(), stop.clone());
        move || {
            let (mut worst, mut count) = (Duration::ZERO, 0u64);
            while !stop.load(std::sync::atomic::Ordering::Acquire) {
                let started = Instant::now();
                producer.produce(record(&topic, event(0, "during"))).unwrap();
                worst = worst.max(started.elapsed());
                count += 1;
                std::thread::sleep(Duration::from_micros(200));
            }
            (worst, count)
        }
    });
    registry.allow(&subject);
    let deadline = Instant::now() + Duration::from_secs(60);
    while producer.stats().parked > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Release);
    let (worst, count) = during.join().unwrap();
    assert_eq!(producer.stats().parked, 0, "released");
    eprintln!("{count} events produced during the release; the slowest took {worst:?}");
    assert!(
        worst < Duration::from_millis(100),
        "a produce to the topic waited {worst:?} while {n} parked events were released"
    );
    producer
        .shutdown(Duration::from_secs(60))
        .await
        .expect("every event delivered");
    assert_eq!(producer.stats().delivered, n + count);
}

/// A record whose metadata `time` a Python consumer could not read (a leap second, or a
/// year past 9999 in UTC) is refused by `produce` itself, as the bus handler refuses it:
/// never written with `+10000-…` or second 60 in `ce_time`. The good event after it goes out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_whose_time_python_cannot_read_is_refused_not_written() {
    use chrono::NaiveDate;
    let env = KafkaEnv::start();
    let registry = RegistryHandle::start();
    let prefix = unique("badtime");
    let topic = format!("{prefix}-xblock");
    env.create_topic(&topic, 1);
    let producer = KafkaProducer::from_settings(&settings(&env, registry.url(), &prefix)).unwrap();
    let leap = NaiveDate::from_ymd_opt(2016, 12, 31)
        .unwrap()
        .and_hms_nano_opt(23, 59, 59, 1_500_000_000)
        .unwrap()
        .and_utc();
    let late = NaiveDate::from_ymd_opt(10000, 1, 1)
        .unwrap()
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc();
    for (what, time) in [("a leap second", leap), ("year 10000", late)] {
        let mut r = record(&topic, event(1, what));
        r.metadata.time = time;
        let err = producer
            .produce(r)
            .expect_err(&format!("a record of {what} must be refused"));
        assert!(err.to_string().contains("time"), "{what}: {err}");
    }
    assert_eq!(producer.stats().rejected, 2);
    let good = record(&topic, event(2, "good"));
    let good_id = good.metadata.id.to_string();
    producer.produce(good).unwrap();
    producer.shutdown(Duration::from_secs(30)).await.unwrap();
    let out = env.read_all(&topic, 1, Duration::from_secs(20));
    let ids: Vec<String> = out
        .iter()
        .filter_map(|m| headers(m).into_iter().find(|(k, _)| k == "ce_id").map(|(_, v)| v))
        .collect();
    assert_eq!(ids, [good_id], "only the good event reached the broker");
}

/// Flush waits for exactly the events accepted before it: an event stuck on a slow
/// partition is not stood in for by later events (of another thread) delivered on a fast one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flush_waits_for_an_earlier_stuck_event_while_later_ones_complete() {
    let env = KafkaEnv::start();
    let cluster = env
        .mock()
        .expect("slowing one broker down needs librdkafka's mock cluster");
    let registry = RegistryHandle::start();
    let prefix = unique("flush-stuck");
    let slow = format!("{prefix}-slow");
    let fast = format!("{prefix}-fast");
    env.create_topic(&slow, 1);
    env.create_topic(&fast, 1);
    cluster.partition_leader(&slow, 0, Some(2)).unwrap();
    cluster.partition_leader(&fast, 0, Some(1)).unwrap();
    let producer = Arc::new(
        KafkaProducer::from_settings(
            &settings(&env, registry.url(), &prefix).with("EVENT_BUS_KAFKA_CONFIG_MESSAGE_TIMEOUT_MS", "60000"),
        )
        .unwrap(),
    );
    producer.produce(record(&slow, event(0, "warm"))).unwrap();
    producer.produce(record(&fast, event(0, "warm"))).unwrap();
    producer.flush(Duration::from_secs(20)).await.unwrap();
    cluster.broker_round_trip_time(2, Duration::from_secs(8)).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    producer.produce(record(&slow, event(1, "stuck"))).unwrap();
    let other = {
        let producer = producer.clone();
        let fast = fast.clone();
        std::thread::spawn(move || {
            for i in 0..60 {
                producer.produce(record(&fast, event(i, "later"))).unwrap();
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let started = Instant::now();
    let result = producer.flush(Duration::from_secs(2)).await;
    let stats = producer.stats();
    eprintln!("flush after {:?}: {result:?}; stats {stats:?}", started.elapsed());
    let read = env.read_all(&slow, 2, Duration::from_millis(200));
    eprintln!(
        "messages on the slow topic when flush returned (warm + stuck expected): {}",
        read.len()
    );
    tokio::task::spawn_blocking(move || other.join().unwrap())
        .await
        .unwrap();
    assert!(
        matches!(result, Err(ProduceError::Timeout { pending, .. }) if pending >= 1),
        "flush must time out with the stuck event pending, got {result:?}"
    );
}
