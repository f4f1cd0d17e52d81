//! The Kafka consumer against librdkafka's mock cluster (or `KAFKA_BOOTSTRAP_SERVERS`)
//! and the project's test schema registry (or `EVENT_BUS_KAFKA_SCHEMA_REGISTRY_URL`):
//! round trip, commits after success only, retries, dead letters, error limit, replay.

#[path = "support/kafka.rs"]
mod kafka_support;
#[path = "support/registry.rs"]
mod registry_support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kafka_support::{headers, unique, KafkaEnv};
use openedx_events::catalog::content_authoring::*;
use openedx_events::consume::ConsumerOptions;
use openedx_events::kafka::KafkaProducer;
use openedx_events::kafka::{KafkaConsumer, KafkaConsumerError, KafkaConsumerOptions, Replay};
use openedx_events::keys::UsageKey;
use openedx_events::produce::Producer;
use openedx_events::{EventMetadata, OpenEdxEvent, Settings};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message, Offset, TopicPartitionList};
use registry_support::RegistryHandle;

const TOPIC: &str = "xblock-lifecycle";

/// Headers and value of a message written with plain rdkafka.
type RawMessage<'a> = (Vec<(&'a str, &'a str)>, Vec<u8>);

struct Fixture {
    env: KafkaEnv,
    registry: RegistryHandle,
    prefix: String,
    topic: String,
}

impl Fixture {
    fn new(partitions: i32) -> Self {
        Self::with_registry(partitions, RegistryHandle::from_env_or_start())
    }

    fn with_registry(partitions: i32, registry: RegistryHandle) -> Self {
        let env = KafkaEnv::start();
        let prefix = unique("c");
        let topic = format!("{prefix}-{TOPIC}");
        env.create_topic(&topic, partitions);
        env.create_topic(&format!("{topic}-dead-letter"), 1);
        Self {
            env,
            registry,
            prefix,
            topic,
        }
    }

    fn settings(&self) -> Settings {
        Settings::new()
            .with("EVENT_BUS_KAFKA_BOOTSTRAP_SERVERS", self.env.bootstrap())
            .with("EVENT_BUS_KAFKA_SCHEMA_REGISTRY_URL", self.registry.url())
            .with("EVENT_BUS_TOPIC_PREFIX", &self.prefix)
            .with("EVENTS_SERVICE_NAME", "kafka-consumer-test")
            // The mock cluster waits a session timeout after the last member of a group
            // left before a new member can join: keep it short for the runs that reuse a group.
            .with("EVENT_BUS_KAFKA_CONSUMER_CONFIG_SESSION_TIMEOUT_MS", "6000")
            .with("EVENT_BUS_KAFKA_CONSUMER_CONFIG_HEARTBEAT_INTERVAL_MS", "1000")
    }

    /// Produces events with our producer; returns their metadata.
    async fn produce(&self, events: &[XBlockPublished]) -> Vec<EventMetadata> {
        let producer = KafkaProducer::from_settings(&self.settings()).unwrap();
        let mut out = Vec::new();
        for ev in events {
            let record = kafka_support::usage_key_record(&self.topic, &ev.xblock_info.usage_key, ev.clone());
            out.push(record.metadata.clone());
            producer.produce(record).unwrap();
        }
        producer.shutdown(Duration::from_secs(30)).await.unwrap();
        out
    }

    async fn produce_raw(&self, messages: Vec<RawMessage<'_>>) {
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", self.env.bootstrap())
            .create()
            .unwrap();
        for (hs, payload) in messages {
            let mut headers = OwnedHeaders::new();
            for (key, value) in hs {
                headers = headers.insert(Header {
                    key,
                    value: Some(value.as_bytes()),
                });
            }
            let record: FutureRecord<'_, [u8], [u8]> =
                FutureRecord::to(&self.topic).payload(&payload[..]).headers(headers);
            producer.send(record, Duration::from_secs(10)).await.unwrap();
        }
    }

    fn consumer(&self, group: &str, options: KafkaConsumerOptions) -> KafkaConsumer {
        KafkaConsumer::new(&self.settings(), TOPIC, group, options).unwrap()
    }

    /// Sum of the committed offsets of `group` on the topic.
    fn committed(&self, group: &str, partitions: i32) -> i64 {
        let c: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", self.env.bootstrap())
            .set("group.id", group)
            .create()
            .unwrap();
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition(&self.topic, p);
        }
        let committed = c.committed_offsets(tpl, Duration::from_secs(10)).unwrap();
        committed
            .elements()
            .iter()
            .map(|e| match e.offset() {
                Offset::Offset(o) => o,
                _ => 0,
            })
            .sum()
    }
}

fn event(i: usize, block_type: &str) -> XBlockPublished {
    XBlockPublished {
        xblock_info: XBlockData {
            usage_key: UsageKey::parse(format!("block-v1:edX+DemoX+Demo_Course+type@problem+block@p{i}")).unwrap(),
            block_type: block_type.to_owned(),
            version: (i % 2 == 0).then(|| {
                UsageKey::parse(format!(
                    "block-v1:edX+DemoX+Demo_Course+branch@published-branch+version@65f1c0ffee0ddba11ad0{i:04}+type@problem+block@p{i}"
                ))
                .unwrap()
            }),
        },
    }
}

type Received = Arc<Mutex<Vec<(EventMetadata, XBlockPublished, bool)>>>;

fn collect() -> Received {
    let received: Received = Arc::default();
    let r = received.clone();
    XBlockPublished::signal().connect(move |env: &openedx_events::Envelope<XBlockPublished>| {
        r.lock()
            .unwrap()
            .push((env.metadata.clone(), (*env.data).clone(), env.from_event_bus));
    });
    received
}

fn bounded() -> tokio::time::Sleep {
    tokio::time::sleep(Duration::from_secs(60))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_with_metadata_and_commit() {
    let f = Fixture::new(3);
    let received = collect();
    let events: Vec<XBlockPublished> = (0..6).map(|i| event(i, &format!("problem-{i}"))).collect();
    let metadata = f.produce(&events).await;
    let group = unique("g");
    let options = KafkaConsumerOptions {
        max_messages: Some(6),
        ..Default::default()
    };
    let stats = f.consumer(&group, options).run(bounded()).await.unwrap();
    assert_eq!(
        (stats.received, stats.handled, stats.dead_lettered, stats.retried),
        (6, 6, 0, 0)
    );
    let got = received.lock().unwrap().clone();
    assert_eq!(got.len(), 6);
    for (m, data, from_bus) in got {
        let i = metadata.iter().position(|x| x.id == m.id).expect("a sent id");
        assert_eq!(m, metadata[i], "metadata as sent");
        assert_eq!(data, events[i], "data as sent");
        assert!(from_bus, "marked as from the bus");
    }
    assert_eq!(f.committed(&group, 3), 6, "every handled message committed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_receivers_are_retried_then_dead_lettered() {
    let f = Fixture::new(1);
    let calls: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
    let c = calls.clone();
    XBlockPublished::signal().connect(move |env: &openedx_events::Envelope<XBlockPublished>| {
        let kind = env.data.xblock_info.block_type.clone();
        let n = {
            let mut calls = c.lock().unwrap();
            let n = calls.entry(kind.clone()).or_default();
            *n += 1;
            *n
        };
        match kind.as_str() {
            "flaky" if n <= 2 => Err(format!("flaky failure {n}")),
            "broken" => Err("broken receiver: database unavailable".to_owned()),
            _ => Ok(()),
        }
    });
    let events = [event(0, "ok"), event(1, "flaky"), event(2, "broken"), event(3, "ok2")];
    let metadata = f.produce(&events).await;
    let group = unique("g");
    let options = KafkaConsumerOptions {
        common: ConsumerOptions {
            max_retries: 2,
            retry_delay: Duration::from_millis(20),
            ..Default::default()
        },
        max_messages: Some(4),
        ..Default::default()
    };
    let stats = f.consumer(&group, options).run(bounded()).await.unwrap();
    assert_eq!((stats.handled, stats.dead_lettered, stats.retried), (3, 1, 4));
    let calls = calls.lock().unwrap().clone();
    assert_eq!(
        (calls["ok"], calls["flaky"], calls["broken"], calls["ok2"]),
        (1, 3, 3, 1)
    );
    assert_eq!(f.committed(&group, 1), 4);

    let dead = f
        .env
        .read_all(&format!("{}-dead-letter", f.topic), 1, Duration::from_secs(20));
    assert_eq!(dead.len(), 1);
    let original = f.env.read_all(&f.topic, 4, Duration::from_secs(20));
    let broken = &original[2];
    assert_eq!(dead[0].payload(), broken.payload(), "value kept");
    assert_eq!(dead[0].key(), broken.key(), "key kept");
    let h = headers(&dead[0]);
    let get = |n: &str| h.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    assert_eq!(get("ce_id"), Some(metadata[2].id.to_string()));
    assert!(get("dead_letter_error").unwrap().contains("database unavailable"));
    assert_eq!(get("dead_letter_topic"), Some(f.topic.clone()));
    assert_eq!(get("dead_letter_offset"), Some("2".to_owned()));
    assert_eq!(get("dead_letter_group"), Some(group));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_messages_are_dead_lettered_at_once() {
    let f = Fixture::new(1);
    let received = collect();
    let good = f.produce(&[event(0, "good-before")]).await;
    let ty = XBlockPublished::EVENT_TYPE;
    let id = uuid::Uuid::now_v1(&[1, 2, 3, 4, 5, 6]).to_string();
    let id2 = uuid::Uuid::now_v1(&[1, 2, 3, 4, 5, 7]).to_string();
    let leak = |s: String| -> &'static str { Box::leak(s.into_boxed_str()) };
    let (id, id2) = (leak(id), leak(id2));
    let meta = |t: &'static str| {
        vec![
            ("ce_type", t),
            ("ce_id", id),
            ("ce_source", "openedx/cms/web"),
            ("ce_time", "2026-11-27T13:20:05.364687+00:00"),
            ("ce_minorversion", "0"),
            ("sourcehost", "h"),
            ("sourcelib", "10.5.0"),
        ]
    };
    let valid_value = f.env.read_all(&f.topic, 1, Duration::from_secs(20))[0]
        .payload()
        .unwrap()
        .to_vec();
    let mut two_ids = meta(ty);
    two_ids.push(("ce_id", id2));
    let mut unknown_schema = vec![0u8, 0, 0, 0x30, 0x39];
    unknown_schema.extend_from_slice(&valid_value[5..]);
    f.produce_raw(vec![
        (vec![], valid_value.clone()),
        (two_ids, valid_value.clone()),
        (meta("org.openedx.nothing.here.v1"), valid_value.clone()),
        (meta(ty), vec![1, 2, 3]),
        (meta(ty), [&valid_value[..5], &[0xff, 0xff]].concat()),
        (meta(ty), unknown_schema),
    ])
    .await;
    f.produce(&[event(1, "good-after")]).await;
    let options = KafkaConsumerOptions {
        common: ConsumerOptions {
            max_retries: 5,
            retry_delay: Duration::from_secs(30),
            ..Default::default()
        },
        max_messages: Some(8),
        ..Default::default()
    };
    let started = Instant::now();
    let stats = f.consumer(&unique("g"), options).run(bounded()).await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "no retry of a permanent failure"
    );
    assert_eq!((stats.handled, stats.dead_lettered, stats.retried), (2, 6, 0));
    let got = received.lock().unwrap();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].0, good[0]);
    let dead = f
        .env
        .read_all(&format!("{}-dead-letter", f.topic), 6, Duration::from_secs(20));
    let errors: Vec<String> = dead
        .iter()
        .map(|m| {
            headers(m)
                .into_iter()
                .find(|(k, _)| k == "dead_letter_error")
                .unwrap()
                .1
        })
        .collect();
    assert_eq!(errors.len(), 6, "{errors:?}");
    assert!(errors[0].contains("exactly one ce_id and one ce_type") && errors[0].contains("found 0 ce_id"));
    assert!(
        errors[1].contains("ce_id") && errors[1].contains("more than once"),
        "{}",
        errors[1]
    );
    assert!(errors[2].contains("unknown event type"), "{}", errors[2]);
    assert!(
        errors[3].contains("magic byte") || errors[3].contains("too short"),
        "{}",
        errors[3]
    );
    assert!(errors[4].contains("cannot decode"), "{}", errors[4]);
    assert!(errors[5].contains("404"), "{}", errors[5]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consecutive_errors_stop_the_consumer() {
    let f = Fixture::new(1);
    let calls = Arc::new(AtomicU32::new(0));
    let c = calls.clone();
    XBlockPublished::signal().connect(move |_: &openedx_events::Envelope<XBlockPublished>| {
        c.fetch_add(1, Ordering::SeqCst);
        Err::<(), _>("always failing")
    });
    f.produce(&(0..5).map(|i| event(i, "x")).collect::<Vec<_>>()).await;
    let group = unique("g");
    let options = KafkaConsumerOptions {
        common: ConsumerOptions {
            max_retries: 0,
            max_consecutive_errors: 3,
            ..Default::default()
        },
        ..Default::default()
    };
    match f.consumer(&group, options).run(bounded()).await {
        Err(KafkaConsumerError::TooManyErrors(e)) => {
            assert_eq!((e.count, e.limit), (3, 3));
            assert!(e.last.contains("always failing"));
        }
        other => panic!("expected TooManyErrors, got {other:?}"),
    }
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(f.committed(&group, 1), 3, "dead-lettered messages are committed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_from_timestamp_and_from_offsets_then_go_on() {
    let f = Fixture::new(2);
    let received = collect();
    let batch1 = f.produce(&(0..4).map(|i| event(i, "b1")).collect::<Vec<_>>()).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let t = chrono::Utc::now().timestamp_millis();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let batch2 = f.produce(&(4..7).map(|i| event(i, "b2")).collect::<Vec<_>>()).await;
    let group = unique("g");
    let run = |replay: Option<Replay>, max: u64| KafkaConsumerOptions {
        replay,
        max_messages: Some(max),
        ..Default::default()
    };
    let stats = f.consumer(&group, run(None, 7)).run(bounded()).await.unwrap();
    assert_eq!(stats.handled, 7);
    assert_eq!(f.committed(&group, 2), 7);
    let batch3 = f.produce(&(7..9).map(|i| event(i, "b3")).collect::<Vec<_>>()).await;
    received.lock().unwrap().clear();

    // From the timestamp: batch 2 again, then batch 3 (never consumed before).
    let stats = f
        .consumer(&group, run(Some(Replay::FromTimestampMs(t)), 5))
        .run(bounded())
        .await
        .unwrap();
    assert_eq!(stats.handled, 5);
    let ids: Vec<uuid::Uuid> = received.lock().unwrap().iter().map(|r| r.0.id).collect();
    let mut expected: Vec<uuid::Uuid> = batch2.iter().chain(&batch3).map(|m| m.id).collect();
    let mut sorted = ids.clone();
    sorted.sort();
    expected.sort();
    assert_eq!(sorted, expected, "batch 1 is older than the replay time");
    assert_eq!(f.committed(&group, 2), 9);

    // From offsets: partition 0 from its start, partition 1 from its committed offset.
    received.lock().unwrap().clear();
    let on_p0 = f
        .env
        .read_all(&f.topic, 9, Duration::from_secs(20))
        .iter()
        .filter(|m| m.partition() == 0)
        .count();
    let stats = f
        .consumer(&group, run(Some(Replay::FromOffsets(vec![(0, 0)])), on_p0 as u64))
        .run(bounded())
        .await
        .unwrap();
    assert_eq!(stats.handled, on_p0 as u64);
    let again: Vec<uuid::Uuid> = received.lock().unwrap().iter().map(|r| r.0.id).collect();
    assert!(again
        .iter()
        .all(|id| batch1.iter().chain(&batch2).chain(&batch3).any(|m| m.id == *id)));

    // And then consumption goes on with new events only.
    received.lock().unwrap().clear();
    let batch4 = f.produce(&[event(9, "b4")]).await;
    let stats = f.consumer(&group, run(None, 1)).run(bounded()).await.unwrap();
    assert_eq!(stats.handled, 1);
    assert_eq!(received.lock().unwrap()[0].0.id, batch4[0].id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumes_every_message_of_a_busy_topic_in_order_per_key() {
    // 8000 events over 8 keys: even all in one partition, under the mock cluster's 5 MB per partition.
    const N: usize = 8_000;
    let f = Fixture::new(3);
    let received = collect();
    let producer = KafkaProducer::from_settings(&f.settings()).unwrap();
    for i in 0..N {
        let ev = event(i % 8, &i.to_string());
        producer
            .produce(kafka_support::usage_key_record(
                &f.topic,
                &ev.xblock_info.usage_key.clone(),
                ev,
            ))
            .unwrap();
    }
    producer.shutdown(Duration::from_secs(60)).await.unwrap();
    let options = KafkaConsumerOptions {
        max_messages: Some(N as u64),
        ..Default::default()
    };
    let group = unique("g");
    let stats = f.consumer(&group, options).run(bounded()).await.unwrap();
    assert_eq!((stats.handled, stats.dead_lettered), (N as u64, 0));
    let got = received.lock().unwrap();
    assert_eq!(got.len(), N);
    let mut per_key: HashMap<String, Vec<usize>> = HashMap::new();
    for (_, ev, _) in got.iter() {
        per_key
            .entry(ev.xblock_info.usage_key.to_string())
            .or_default()
            .push(ev.xblock_info.block_type.parse().unwrap());
    }
    assert_eq!(per_key.len(), 8);
    assert!(
        per_key.values().all(|s| s.windows(2).all(|w| w[0] < w[1])),
        "in order per key"
    );
    assert_eq!(f.committed(&group, 3), N as i64);
}

/// Appends an Avro long (zig-zag varint).
fn avro_long(n: i64, out: &mut Vec<u8>) {
    let mut v = ((n << 1) ^ (n >> 63)) as u64;
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn avro_str(s: &str, out: &mut Vec<u8>) {
    avro_long(s.len() as i64, out);
    out.extend_from_slice(s.as_bytes());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_is_read_with_the_writer_schema_resolved_to_ours() {
    let f = Fixture::new(1);
    let received = collect();
    // Another version of the event: fields in another order, one field unknown here,
    // the optional `version` absent.
    let writer = serde_json::json!({
        "name": "CloudEvent", "type": "record", "namespace": XBlockPublished::EVENT_TYPE,
        "fields": [{"name": "xblock_info", "type": {"name": "XBlockData", "type": "record", "fields": [
            {"name": "extra_counter", "type": "long"},
            {"name": "tags", "type": {"type": "array", "items": "string"}},
            {"name": "block_type", "type": "string"},
            {"name": "usage_key", "type": "string"},
        ]}}],
    });
    let client = openedx_events::kafka::registry::SchemaRegistryClient::new(f.registry.url(), None).unwrap();
    let id = client
        .register(
            &format!("{}-{}.CloudEvent", f.topic, XBlockPublished::EVENT_TYPE),
            &writer.to_string(),
        )
        .await
        .unwrap();
    let usage = "block-v1:edX+DemoX+Demo_Course+type@html+block@writer";
    let mut value = openedx_events::kafka::registry::frame_header(id).to_vec();
    avro_long(-123_456_789, &mut value);
    avro_long(2, &mut value); // one block of two items
    avro_str("a", &mut value);
    avro_str("b", &mut value);
    avro_long(0, &mut value); // end of the array
    avro_str("html", &mut value);
    avro_str(usage, &mut value);
    let id_header = uuid::Uuid::now_v1(&[9, 9, 9, 9, 9, 9]).to_string();
    f.produce_raw(vec![(
        vec![
            ("ce_type", XBlockPublished::EVENT_TYPE),
            ("ce_id", &id_header),
            ("ce_source", "openedx/cms/web"),
            ("ce_time", "2026-11-27T13:20:05+00:00"),
            ("ce_minorversion", "0"),
            ("sourcehost", "writer-host"),
            ("sourcelib", "9.9.0"),
        ],
        value,
    )])
    .await;
    let options = KafkaConsumerOptions {
        max_messages: Some(1),
        ..Default::default()
    };
    let stats = f.consumer(&unique("g"), options).run(bounded()).await.unwrap();
    assert_eq!((stats.handled, stats.dead_lettered), (1, 0));
    let got = received.lock().unwrap();
    let (metadata, data, from_bus) = &got[0];
    assert_eq!(
        data,
        &XBlockPublished {
            xblock_info: XBlockData {
                usage_key: UsageKey::parse(usage).unwrap(),
                block_type: "html".into(),
                version: None,
            },
        }
    );
    assert_eq!(metadata.id.to_string(), id_header);
    assert_eq!(metadata.time_string(), "2026-11-27T13:20:05+00:00");
    assert_eq!(
        (&*metadata.sourcehost, metadata.sourcelib.to_string().as_str()),
        ("writer-host", "9.9.0")
    );
    assert!(from_bus);
}

/// A peer's message with a header key that is not UTF-8 (rdkafka's header accessors
/// panic on it) is dead-lettered like any unreadable message, its headers kept as sent;
/// the consumer goes on and the offset moves past it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_key_that_is_not_utf8_is_dead_lettered_without_a_panic() {
    let f = Fixture::new(1);
    let received = collect();
    let before = f.produce(&[event(0, "before")]).await;
    let valid = f.env.read_all(&f.topic, 1, Duration::from_secs(20))[0]
        .payload()
        .unwrap()
        .to_vec();
    let id = uuid::Uuid::new_v4().to_string();
    let headers: Vec<(&[u8], &[u8])> = vec![
        (b"ce_type", XBlockPublished::EVENT_TYPE.as_bytes()),
        (b"ce_id", id.as_bytes()),
        (b"ce_source", b"openedx/cms/web"),
        (b"ce_time", b"2026-11-27T13:20:05.364687+00:00"),
        (b"ce_minorversion", b"0"),
        (b"sourcehost", b"h"),
        (b"sourcelib", b"10.5.0"),
        (b"x-caf\xe9", b"from a peer"),
    ];
    f.env.produce_raw_headers(&f.topic, &headers, &valid);
    let after = f.produce(&[event(1, "after")]).await;
    let group = unique("g");
    let options = KafkaConsumerOptions {
        max_messages: Some(3),
        ..Default::default()
    };
    let stats = f.consumer(&group, options).run(bounded()).await.unwrap();
    assert_eq!((stats.handled, stats.dead_lettered), (2, 1));
    let ids: Vec<uuid::Uuid> = received.lock().unwrap().iter().map(|r| r.0.id).collect();
    assert_eq!(ids, [before[0].id, after[0].id]);
    assert_eq!(f.committed(&group, 1), 3, "the offset moved past it");
    let dead = f
        .env
        .read_raw(&format!("{}-dead-letter", f.topic), 1, Duration::from_secs(20));
    assert_eq!(dead.len(), 1);
    let (h, payload) = &dead[0];
    assert_eq!(payload.as_deref(), Some(&valid[..]), "value kept");
    assert!(
        h.iter().any(|(k, v)| k == b"x-caf\xe9" && v == b"from a peer"),
        "headers kept as sent"
    );
    let error = h
        .iter()
        .find(|(k, _)| k == b"dead_letter_error")
        .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
        .expect("a reason");
    assert!(error.contains("not UTF-8"), "{error}");
}

/// Replaying from a time: a partition with nothing at or after the time starts at its
/// end (the broker's -1 is "end", not "cannot search"), and messages skipped while a
/// partition is scanned (librdkafka's mock cluster cannot search by time) have no offset
/// stored. Either way the group's committed offset never moves back into older data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaying_from_a_time_never_moves_the_committed_offset_back_into_older_data() {
    let f = Fixture::new(2);
    let received = collect();
    // An old event of the key the new event will have, to learn its partition.
    f.produce(&[event(1, "old")]).await;
    let keyed = f.env.read_all(&f.topic, 1, Duration::from_secs(20))[0].partition();
    let other = 1 - keyed;
    // Old messages, one per batch so that a fetch returns one at a time: many on the
    // other partition, a few more on the key's.
    let (many, few) = (1000usize, 99usize);
    let producer: rdkafka::producer::BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", f.env.bootstrap())
        .set("batch.num.messages", "1")
        .set("linger.ms", "0")
        .create()
        .unwrap();
    for (partition, n) in [(other, many), (keyed, few)] {
        for i in 0..n {
            let payload = format!("old {i}");
            let mut record: rdkafka::producer::BaseRecord<'_, (), str> = rdkafka::producer::BaseRecord::to(&f.topic)
                .partition(partition)
                .payload(&payload);
            loop {
                producer.poll(Duration::ZERO);
                match producer.send(record) {
                    Ok(()) => break,
                    Err((_, back)) => {
                        record = back;
                        std::thread::sleep(Duration::from_millis(5));
                    }
                }
            }
        }
    }
    rdkafka::producer::Producer::flush(&producer, Duration::from_secs(30)).unwrap();
    // The group has consumed everything so far.
    let group = unique("g");
    let (other_end, keyed_end) = (many as i64, few as i64 + 1);
    {
        let c: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", f.env.bootstrap())
            .set("group.id", &group)
            .create()
            .unwrap();
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&f.topic, other, Offset::Offset(other_end))
            .unwrap();
        tpl.add_partition_offset(&f.topic, keyed, Offset::Offset(keyed_end))
            .unwrap();
        c.commit(&tpl, CommitMode::Sync).unwrap();
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let t = chrono::Utc::now().timestamp_millis();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let new = f.produce(&[event(1, "new")]).await;
    let settings = f
        .settings()
        .with("EVENT_BUS_KAFKA_CONSUMER_CONFIG_MAX_PARTITION_FETCH_BYTES", "1");
    let options = KafkaConsumerOptions {
        replay: Some(Replay::FromTimestampMs(t)),
        max_messages: Some(1),
        ..Default::default()
    };
    let stats = KafkaConsumer::new(&settings, TOPIC, &group, options)
        .unwrap()
        .run(bounded())
        .await
        .unwrap();
    assert_eq!(stats.handled, 1);
    let ids: Vec<uuid::Uuid> = received.lock().unwrap().iter().map(|r| r.0.id).collect();
    assert_eq!(ids, [new[0].id], "only what is at or after the time");
    let committed = |p: i32| {
        let c: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", f.env.bootstrap())
            .set("group.id", &group)
            .create()
            .unwrap();
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&f.topic, p);
        match c.committed_offsets(tpl, Duration::from_secs(10)).unwrap().elements()[0].offset() {
            Offset::Offset(o) => o,
            other => panic!("no committed offset on partition {p}: {other:?}"),
        }
    };
    assert_eq!(
        committed(other),
        other_end,
        "nothing at or after the time there: its committed offset stays"
    );
    assert_eq!(committed(keyed), keyed_end + 1, "just past the replayed event");
}

/// While the registry cannot give the writer's schema (503, or 401 while credentials are
/// fixed), messages wait for it in order: none is dead-lettered, none overtaken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_outage_holds_messages_in_order_instead_of_dead_lettering_them() {
    let f = Fixture::with_registry(1, RegistryHandle::start());
    let received = collect();
    let sent = f
        .produce(&(0..3).map(|i| event(0, &format!("in-order-{i}"))).collect::<Vec<_>>())
        .await;
    let options = KafkaConsumerOptions {
        common: ConsumerOptions {
            max_retries: 1,
            retry_delay: Duration::from_millis(20),
            ..Default::default()
        },
        max_messages: Some(3),
        ..Default::default()
    };
    f.registry.fail_reads(Some(503));
    let consumer = f.consumer(&unique("g"), options);
    let run = tokio::spawn(async move { consumer.run(bounded()).await });
    let reads = |r: &RegistryHandle| {
        (1..=4)
            .map(|id| r.requests(&format!("GET /schemas/ids/{id}")))
            .sum::<u64>()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while reads(&f.registry) < 3 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    f.registry.fail_reads(Some(401));
    let seen = reads(&f.registry);
    while reads(&f.registry) < seen + 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(reads(&f.registry) >= seen + 2, "the consumer tried during the outage");
    assert!(received.lock().unwrap().is_empty());
    f.registry.fail_reads(None);
    let stats = tokio::time::timeout(Duration::from_secs(20), run)
        .await
        .expect("consumed once the registry answers")
        .unwrap()
        .unwrap();
    assert_eq!((stats.handled, stats.dead_lettered), (3, 0));
    let ids: Vec<uuid::Uuid> = received.lock().unwrap().iter().map(|r| r.0.id).collect();
    assert_eq!(ids, sent.iter().map(|m| m.id).collect::<Vec<_>>(), "in order");
    let dead = f
        .env
        .read_raw(&format!("{}-dead-letter", f.topic), 0, Duration::from_millis(500));
    assert!(dead.is_empty(), "nothing dead-lettered: {} messages", dead.len());
}

/// A fatal error (here the group coordinator fencing the member) stops the consumer
/// with that error, instead of polling on forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fatal_consumer_error_stops_the_consumer() {
    let f = Fixture::new(1);
    let cluster = f
        .env
        .mock()
        .expect("the fencing is injected through librdkafka's mock cluster");
    f.produce(&[event(0, "x")]).await;
    cluster.request_errors(
        rdkafka::types::RDKafkaApiKey::Heartbeat,
        &[rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_FENCED_INSTANCE_ID],
    );
    let consumer = f.consumer(&unique("g"), KafkaConsumerOptions::default());
    // On a runtime of its own: a consumer that spins never yields, and the wait for it
    // must still end.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _ = tx.send(runtime.block_on(async { consumer.run(bounded()).await }));
    });
    let result = tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(15)))
        .await
        .unwrap()
        .expect("the consumer stopped by itself");
    let error = result.expect_err("stopped with the fatal error");
    assert!(error.to_string().to_lowercase().contains("fenced"), "{error}");
}

/// A replay time before 1970 (a negative timestamp) replays every message: it is never
/// handed to Kafka as the logical offsets -1 (latest) or -2 (earliest).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaying_from_a_time_before_1970_replays_every_message() {
    let f = Fixture::new(1);
    let received = collect();
    let sent = f.produce(&(0..3).map(|i| event(i, "old")).collect::<Vec<_>>()).await;
    for ts in [-1i64, -2, -86_400_000] {
        received.lock().unwrap().clear();
        let options = KafkaConsumerOptions {
            replay: Some(Replay::FromTimestampMs(ts)),
            max_messages: Some(3),
            ..Default::default()
        };
        let stats = f
            .consumer(&unique("g"), options)
            .run(tokio::time::sleep(Duration::from_secs(5)))
            .await
            .unwrap();
        assert_eq!(stats.handled, 3, "from {ts}");
        let ids: Vec<uuid::Uuid> = received.lock().unwrap().iter().map(|r| r.0.id).collect();
        assert_eq!(ids, sent.iter().map(|m| m.id).collect::<Vec<_>>(), "from {ts}");
    }
}

/// Writes one message with header names of any bytes (a NUL inside one, say: librdkafka
/// keeps the name's length, the C API reading it back does not), as a peer's client may.
async fn produce_raw_names(f: &Fixture, headers: &[(Vec<u8>, Vec<u8>)], payload: &[u8]) {
    use rdkafka::message::BorrowedHeaders;
    let owned = OwnedHeaders::new_with_capacity(headers.len());
    for (name, value) in headers {
        let ptr = owned.as_borrowed() as *const BorrowedHeaders as *mut rdkafka::bindings::rd_kafka_headers_t;
        // SAFETY: `ptr` is the live, writable header list `owned` owns (what `as_borrowed`
        // points at); librdkafka copies name and value, lengths given.
        let err = unsafe {
            rdkafka::bindings::rd_kafka_header_add(
                ptr,
                name.as_ptr().cast(),
                name.len() as isize,
                value.as_ptr().cast(),
                value.len() as isize,
            )
        };
        assert_eq!(err, rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR);
    }
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", f.env.bootstrap())
        .create()
        .unwrap();
    let record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&f.topic).payload(payload).headers(owned);
    producer.send(record, Duration::from_secs(10)).await.unwrap();
}

/// The metadata headers of a good message of `id`, as the Python producer writes them.
fn good_headers(id: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
    [
        ("ce_type", XBlockPublished::EVENT_TYPE),
        ("ce_id", id),
        ("ce_source", "openedx/cms/web"),
        ("ce_specversion", "1.0"),
        ("ce_time", "2026-11-27T13:20:05.364687+00:00"),
        ("ce_minorversion", "0"),
        ("sourcehost", "h"),
        ("sourcelib", "10.5.0"),
        ("content-type", "application/avro"),
    ]
    .into_iter()
    .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
    .collect()
}

/// Runs a consumer on a fresh group over `n` messages; returns the ids received and the
/// dead letters' `dead_letter_error` by original offset.
async fn consume_and_read_dead_letters(f: &Fixture, n: u64, dead: usize) -> (Vec<uuid::Uuid>, HashMap<i64, String>) {
    let received = collect();
    let group = unique("g");
    let options = KafkaConsumerOptions {
        max_messages: Some(n),
        ..Default::default()
    };
    let stats = f.consumer(&group, options).run(bounded()).await.unwrap();
    assert_eq!(stats.handled + stats.dead_lettered, n, "{stats:?}");
    assert_eq!(f.committed(&group, 1), n as i64, "the offset moved past every message");
    let ids = received.lock().unwrap().iter().map(|r| r.0.id).collect();
    let mut reasons = HashMap::new();
    for (hs, _) in f
        .env
        .read_raw(&format!("{}-dead-letter", f.topic), dead, Duration::from_secs(20))
    {
        let get = |name: &[u8]| {
            hs.iter()
                .rev()
                .find(|(k, _)| k == name)
                .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
        };
        let offset: i64 = get(b"dead_letter_offset").unwrap().parse().unwrap();
        reasons.insert(offset, get(b"dead_letter_error").unwrap_or_default());
    }
    (ids, reasons)
}

/// Every metadata header given twice (even with the same value) makes the message
/// unreadable: dead-lettered with a reason naming the header, never "first/last wins".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_metadata_header_given_twice_is_dead_lettered_with_a_reason_naming_it() {
    let f = Fixture::new(1);
    f.produce(&[event(0, "first")]).await;
    let valid = f.env.read_all(&f.topic, 1, Duration::from_secs(20))[0]
        .payload()
        .unwrap()
        .to_vec();
    let names = [
        "ce_id",
        "ce_type",
        "ce_time",
        "ce_source",
        "ce_minorversion",
        "ce_specversion",
        "sourcehost",
        "sourcelib",
        "content-type",
    ];
    for name in names {
        let mut hs = good_headers(&uuid::Uuid::new_v4().to_string());
        let value = hs.iter().find(|(k, _)| k == name.as_bytes()).unwrap().1.clone();
        // ce_time a second time with another (valid) value; the others with the same one.
        let value = if name == "ce_time" {
            b"2020-01-01T00:00:00+00:00".to_vec()
        } else {
            value
        };
        hs.push((name.as_bytes().to_vec(), value));
        produce_raw_names(&f, &hs, &valid).await;
    }
    let (ids, reasons) = consume_and_read_dead_letters(&f, 1 + names.len() as u64, names.len()).await;
    assert_eq!(ids.len(), 1, "only the first, good message is delivered: {reasons:#?}");
    for (i, name) in names.iter().enumerate() {
        let offset = 1 + i as i64;
        let reason = reasons
            .get(&offset)
            .unwrap_or_else(|| panic!("doubled {name} not dead-lettered"));
        assert!(
            reason.contains(name),
            "doubled {name}: reason {reason:?} does not name it"
        );
    }
}

/// Log lines written while the test runs (a global subscriber: one process per test).
#[derive(Clone, Default)]
struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A dead letter's reason, and each log line, is bounded in length, however long the
/// peer's values are (a 100 KB ce_id, ce_time, ce_minorversion, sourcelib or unknown ce_type).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letter_reasons_are_bounded_however_long_the_peer_values() {
    let logs = LogBuffer::default();
    let writer = logs.clone();
    tracing::subscriber::set_global_default(
        tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish(),
    )
    .unwrap();
    let f = Fixture::new(1);
    f.produce(&[event(0, "first")]).await;
    let valid = f.env.read_all(&f.topic, 1, Duration::from_secs(20))[0]
        .payload()
        .unwrap()
        .to_vec();
    let names = ["ce_id", "ce_time", "ce_minorversion", "sourcelib", "ce_type"];
    for name in names {
        let mut hs = good_headers(&uuid::Uuid::new_v4().to_string());
        for (k, v) in &mut hs {
            if k == name.as_bytes() {
                *v = vec![b'x'; 100_000];
            }
        }
        produce_raw_names(&f, &hs, &valid).await;
    }
    let (ids, reasons) = consume_and_read_dead_letters(&f, 1 + names.len() as u64, names.len()).await;
    assert_eq!(ids.len(), 1);
    for (i, name) in names.iter().enumerate() {
        let reason = reasons
            .get(&(1 + i as i64))
            .unwrap_or_else(|| panic!("huge {name} not dead-lettered"));
        assert!(
            !reason.is_empty() && reason.chars().count() <= 1000,
            "huge {name}: a reason of {} chars",
            reason.chars().count()
        );
    }
    let text = String::from_utf8_lossy(&logs.0.lock().unwrap()).into_owned();
    assert!(text.contains("message dead-lettered"), "the dead letters are logged");
    for line in text.lines() {
        assert!(
            line.chars().count() <= 2500,
            "a log line of {} chars",
            line.chars().count()
        );
    }
}

/// librdkafka's C API gives a header name as a NUL-terminated string, so a peer's key
/// `ce_time\0x` reads as `ce_time`: such a key is never taken for a metadata header (the
/// message is dead-lettered, naming it), and a foreign key with a NUL is ignored like
/// any other foreign header.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_key_with_a_nul_byte_is_never_taken_for_a_metadata_header() {
    let f = Fixture::new(1);
    f.produce(&[event(0, "first")]).await;
    let valid = f.env.read_all(&f.topic, 1, Duration::from_secs(20))[0]
        .payload()
        .unwrap()
        .to_vec();
    // 1: no ce_time, but a `ce_time\0x`.
    let mut hs = good_headers(&uuid::Uuid::new_v4().to_string());
    for (k, _) in &mut hs {
        if k == b"ce_time" {
            k.extend_from_slice(b"\0x");
        }
    }
    produce_raw_names(&f, &hs, &valid).await;
    // 2: a good message, plus a foreign `x-trace\0y` header (with no value copy clash).
    let good_id = uuid::Uuid::new_v4();
    let mut hs = good_headers(&good_id.to_string());
    hs.push((b"x-trace\0y".to_vec(), b"t".to_vec()));
    produce_raw_names(&f, &hs, &valid).await;
    // 3: a good ce_source and a second one spelt `ce_source\0evil`.
    let mut hs = good_headers(&uuid::Uuid::new_v4().to_string());
    hs.push((b"ce_source\0evil".to_vec(), b"evil".to_vec()));
    produce_raw_names(&f, &hs, &valid).await;
    let (ids, reasons) = consume_and_read_dead_letters(&f, 4, 2).await;
    assert_eq!(ids.len(), 2, "the first and the foreign-header one: {reasons:#?}");
    assert_eq!(ids[1], good_id);
    for offset in [1, 3] {
        let reason = reasons
            .get(&offset)
            .unwrap_or_else(|| panic!("offset {offset} not dead-lettered: {reasons:#?}"));
        assert!(reason.contains("NUL"), "offset {offset}: {reason:?}");
    }
}

/// Reading the headers stays linear in their number, whatever a peer sends: a message
/// with 40 000 `ce_id` headers is dead-lettered, one with 40 000 foreign headers of
/// distinct names handled, both within seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_with_tens_of_thousands_of_headers_is_read_in_linear_time() {
    let f = Fixture::new(1);
    f.produce(&[event(0, "first")]).await;
    let valid = f.env.read_all(&f.topic, 1, Duration::from_secs(20))[0]
        .payload()
        .unwrap()
        .to_vec();
    let mut doubled = good_headers(&uuid::Uuid::new_v4().to_string());
    doubled.extend((0..40_000).map(|_| (b"ce_id".to_vec(), b"v".to_vec())));
    produce_raw_names(&f, &doubled, &valid).await;
    let foreign_id = uuid::Uuid::new_v4();
    let mut foreign = good_headers(&foreign_id.to_string());
    foreign.extend((0..40_000).map(|i| (format!("x{i}").into_bytes(), b"v".to_vec())));
    produce_raw_names(&f, &foreign, &valid).await;
    let received = collect();
    let options = KafkaConsumerOptions {
        max_messages: Some(3),
        ..Default::default()
    };
    let started = Instant::now();
    let stats = f
        .consumer(&unique("g"), options)
        .run(tokio::time::sleep(Duration::from_secs(20)))
        .await
        .unwrap();
    assert_eq!(
        (stats.handled, stats.dead_lettered),
        (2, 1),
        "{stats:?} after {:?}",
        started.elapsed()
    );
    assert_eq!(received.lock().unwrap().last().unwrap().0.id, foreign_id);
    // Quadratic reading took over 30 s here; linear reading well under one.
    assert!(
        started.elapsed() < Duration::from_secs(12),
        "three messages took {:?}",
        started.elapsed()
    );
}

/// A partition with nothing at or after the replay time starts at the high watermark read
/// during the lookup, not at an "end" resolved later when the group assigns it: a message
/// produced during start-up (after the lookup, before the assignment) is replayed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_from_a_time_after_the_last_message_keeps_messages_produced_during_start_up() {
    let f = Fixture::new(1);
    let received = collect();
    f.produce(&[event(1, "old")]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t = chrono::Utc::now().timestamp_millis();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let group = unique("g");
    let options = KafkaConsumerOptions {
        replay: Some(Replay::FromTimestampMs(t)),
        max_messages: Some(1),
        ..Default::default()
    };
    let consumer = f.consumer(&group, options);
    let run = tokio::spawn(consumer.run(tokio::time::sleep(Duration::from_secs(25))));
    tokio::time::sleep(Duration::from_millis(50)).await;
    let started = Instant::now();
    let new = f.produce(&[event(2, "new, after the replay time")]).await;
    eprintln!("new event produced {:?} after the consumer started", started.elapsed());
    let stats = run.await.unwrap().unwrap();
    let ids: Vec<uuid::Uuid> = received.lock().unwrap().iter().map(|r| r.0.id).collect();
    eprintln!("stats {stats:?}; received {ids:?}; new {:?}", new[0].id);
    assert_eq!(ids, [new[0].id], "the event after the replay time is replayed");
}
