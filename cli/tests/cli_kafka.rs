//! `produce` and `consume` against Kafka, as a user runs the tool: librdkafka's mock
//! cluster (or `KAFKA_BOOTSTRAP_SERVERS`) and the project's test schema registry (or
//! `EVENT_BUS_KAFKA_SCHEMA_REGISTRY_URL`), both living in the test process while the
//! tool runs as a child process.

mod common;
#[path = "../../tests/support/kafka.rs"]
mod kafka_support;
#[path = "../../tests/support/registry.rs"]
mod registry_support;

use std::time::Duration;

use common::{cli, stderr, stdout};
use kafka_support::{headers, unique, KafkaEnv};
use predicates::prelude::*;
use rdkafka::Message;
use registry_support::RegistryHandle;
use serde_json::{json, Value};

const XBLOCK: &str = "org.openedx.content_authoring.xblock.published.v1";
const TOPIC: &str = "xblock-lifecycle";

struct Fixture {
    env: KafkaEnv,
    registry: RegistryHandle,
    prefix: String,
    full: String,
}

impl Fixture {
    fn new(partitions: i32) -> Self {
        let env = KafkaEnv::start();
        let registry = RegistryHandle::from_env_or_start();
        let prefix = unique("cli");
        let full = format!("{prefix}-{TOPIC}");
        env.create_topic(&full, partitions);
        env.create_topic(&format!("{full}-dead-letter"), 1);
        Self {
            env,
            registry,
            prefix,
            full,
        }
    }

    /// The tool, configured for this cluster and registry.
    fn tool(&self) -> assert_cmd::Command {
        let mut c = cli();
        c.env("EVENT_BUS_PRODUCER", "kafka")
            .env("EVENT_BUS_KAFKA_BOOTSTRAP_SERVERS", self.env.bootstrap())
            .env("EVENT_BUS_KAFKA_SCHEMA_REGISTRY_URL", self.registry.url())
            .env("EVENT_BUS_TOPIC_PREFIX", &self.prefix)
            .env("EVENTS_SERVICE_NAME", "cli-kafka-test")
            .env("EVENT_BUS_KAFKA_CONSUMER_CONFIG_SESSION_TIMEOUT_MS", "6000")
            .env("EVENT_BUS_KAFKA_CONSUMER_CONFIG_HEARTBEAT_INTERVAL_MS", "1000");
        c
    }

    /// Produces with the tool (keyed by the usage key); returns its JSON report.
    fn produce(&self, data: &Value) -> Value {
        let a = self
            .tool()
            .args(["produce", "--json", "--event-type", XBLOCK, "--topic", TOPIC])
            .args(["--key-field", "xblock_info.usage_key", "--data"])
            .arg(data.to_string())
            .assert()
            .success();
        serde_json::from_str(&stdout(&a)).unwrap()
    }
}

/// XBlock data of block `n`.
fn block(n: u32) -> Value {
    json!({"xblock_info": {
        "usage_key": format!("block-v1:OpenedX+CS101+2026_T1+type@problem+block@p{n}"),
        "block_type": "problem",
        "version": null}})
}

fn lines(a: &assert_cmd::assert::Assert) -> Vec<Value> {
    stdout(a).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn produce_prints_the_partition_and_offset_of_the_delivered_message() {
    let f = Fixture::new(3);
    let reports: Vec<Value> = (1..=4).map(|n| f.produce(&block(n))).collect();
    let messages = f.env.read_all(&f.full, 4, Duration::from_secs(20));
    assert_eq!(messages.len(), 4);
    for (n, report) in (1..=4).zip(&reports) {
        assert_eq!(report["backend"], "kafka");
        assert_eq!(report["topic"], f.full);
        let m = messages
            .iter()
            .find(|m| {
                i64::from(m.partition()) == report["partition"].as_i64().unwrap()
                    && m.offset() == report["offset"].as_i64().unwrap()
            })
            .unwrap_or_else(|| panic!("no message at {report}"));
        let h = headers(m);
        assert!(
            h.contains(&("ce_id".to_owned(), report["event_id"].as_str().unwrap().to_owned())),
            "{h:?}"
        );
        assert!(h.contains(&("ce_type".to_owned(), XBLOCK.to_owned())));
        assert!(h.contains(&("ce_source".to_owned(), "openedx/cli-kafka-test/web".to_owned())));
        // Key: framed Avro string of the usage key. Value: framed Avro of the data.
        let key = m.key().unwrap();
        assert_eq!(key[0], 0);
        let usage_key = block(n)["xblock_info"]["usage_key"].as_str().unwrap().to_owned();
        assert!(key.ends_with(usage_key.as_bytes()));
        let a = cli()
            .args(["avro", "encode", "--event-type", XBLOCK, "--data"])
            .arg(block(n).to_string())
            .assert()
            .success();
        assert_eq!(hex::encode(&m.payload().unwrap()[5..]), stdout(&a).trim());
    }
    if f.registry.is_local() {
        let subjects = f.registry.subjects();
        assert!(
            subjects.contains_key(&format!("{}-{XBLOCK}.CloudEvent", f.full)),
            "{subjects:?}"
        );
        assert!(subjects.contains_key(&format!("{}-string", f.full)), "{subjects:?}");
    }
    let a = f
        .tool()
        .args(["produce", "--event-type", XBLOCK, "--topic", TOPIC, "--data"])
        .arg(block(9).to_string())
        .assert()
        .success();
    assert!(
        stdout(&a).contains(&format!("to kafka topic {} at partition ", f.full)),
        "{}",
        stdout(&a)
    );
}

/// The message at one position, read with plain rdkafka.
fn message_at(env: &KafkaEnv, topic: &str, partition: i32, offset: i64) -> rdkafka::message::OwnedMessage {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", env.bootstrap())
        .set("group.id", unique("at"))
        .create()
        .unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, rdkafka::Offset::Offset(offset))
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::time::Instant::now() < deadline {
        if let Some(m) = consumer.poll(Duration::from_millis(100)) {
            return m.unwrap().detach();
        }
    }
    panic!("no message at {topic} {partition}:{offset}");
}

#[test]
fn produce_finds_its_message_while_others_produce_to_the_topic() {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let f = Fixture::new(1);
    let watcher: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", f.env.bootstrap())
        .set("group.id", unique("w"))
        .create()
        .unwrap();
    let high = || watcher.fetch_watermarks(&f.full, 0, Duration::from_secs(10)).unwrap().1;
    // Another producer writes about 20 000 messages a second, 40 000 at most, meanwhile.
    let stop = Arc::new(AtomicBool::new(false));
    let noise = {
        let (stop, topic, bootstrap) = (stop.clone(), f.full.clone(), f.env.bootstrap().to_owned());
        std::thread::spawn(move || {
            let producer: ThreadedProducer<DefaultProducerContext> = rdkafka::ClientConfig::new()
                .set("bootstrap.servers", &bootstrap)
                .set("linger.ms", "5")
                .create()
                .unwrap();
            let mut sent = 0;
            while !stop.load(Ordering::Relaxed) && sent < 40_000 {
                if producer.send(BaseRecord::<(), _>::to(&topic).payload("noise")).is_ok() {
                    sent += 1;
                    if sent % 200 == 0 {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                } else {
                    producer.poll(Duration::from_millis(1));
                }
            }
            producer.flush(Duration::from_secs(10)).unwrap();
        })
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while high() < 500 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    let report = f.produce(&block(1));
    stop.store(true, Ordering::Relaxed);
    noise.join().unwrap();
    // Many others landed before and after this event: the printed position is its own
    // (the delivery report's), not a guess from the newest messages.
    let offset = report["offset"].as_i64().unwrap();
    let after = high() - offset;
    assert!(
        offset >= 500 && after > 1000,
        "offset {offset}, {after} messages after it"
    );
    let m = message_at(&f.env, &f.full, report["partition"].as_i64().unwrap() as i32, offset);
    assert!(headers(&m).contains(&("ce_id".to_owned(), report["event_id"].as_str().unwrap().to_owned())));
}

#[test]
fn consume_prints_events_from_the_beginning_an_offset_or_a_time() {
    let f = Fixture::new(1);
    let mut reports = Vec::new();
    let mut times = Vec::new();
    for n in 1..=3 {
        std::thread::sleep(Duration::from_millis(20));
        times.push(chrono::Utc::now());
        std::thread::sleep(Duration::from_millis(20));
        reports.push(f.produce(&block(n)));
    }
    let a = f
        .tool()
        .args([
            "consume",
            "--topic",
            TOPIC,
            "--group",
            &unique("g"),
            "--from-beginning",
            "--max",
            "3",
        ])
        .assert()
        .success();
    let got = lines(&a);
    assert_eq!(got.len(), 3, "{}\n{}", stdout(&a), stderr(&a));
    for (n, (line, report)) in got.iter().zip(&reports).enumerate() {
        assert_eq!(line["data"], block(n as u32 + 1));
        assert_eq!(line["metadata"]["id"], report["event_id"]);
        assert_eq!(line["metadata"]["event_type"], XBLOCK);
        assert_eq!(line["metadata"]["source"], "openedx/cli-kafka-test/web");
        assert_eq!(line["topic"], f.full);
    }
    assert!(stderr(&a).contains(&format!("consumed 3 event(s) from {}", f.full)));

    // From an offset, included.
    let offset = reports[1]["offset"].as_i64().unwrap();
    let a = f
        .tool()
        .args(["consume", "--topic", TOPIC, "--group", &unique("g"), "--max", "2"])
        .arg("--from-id")
        .arg(format!("0:{offset}"))
        .assert()
        .success();
    let got: Vec<Value> = lines(&a).into_iter().map(|l| l["data"].clone()).collect();
    assert_eq!(got, vec![block(2), block(3)]);

    // From a time: the events produced after it.
    let time = times[2].to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let a = f
        .tool()
        .args([
            "consume",
            "--topic",
            TOPIC,
            "--group",
            &unique("g"),
            "--max",
            "1",
            "--from-time",
            &time,
        ])
        .assert()
        .success();
    let got: Vec<Value> = lines(&a).into_iter().map(|l| l["data"].clone()).collect();
    assert_eq!(got, vec![block(3)]);

    // A new group without --from-*: only new events.
    let a = f
        .tool()
        .args(["consume", "--topic", TOPIC, "--group", &unique("g"), "--timeout", "4"])
        .assert()
        .success();
    assert_eq!(stdout(&a), "");
}

/// A time before 1970 is a negative timestamp, and Kafka reads -1 as "the end" and -2
/// as "the start": the first event at or after such a time is the oldest one.
#[test]
fn consume_from_a_time_before_1970_starts_at_the_oldest_event() {
    let f = Fixture::new(1);
    for n in 1..=2 {
        f.produce(&block(n));
    }
    for time in ["1969-12-31T23:59:59.999Z", "1900-01-01T00:00:00Z"] {
        let a = f
            .tool()
            .args(["consume", "--topic", TOPIC, "--group", &unique("g"), "--max", "2"])
            .args(["--timeout", "15", "--from-time", time])
            .assert()
            .success();
        let got: Vec<Value> = lines(&a).into_iter().map(|l| l["data"].clone()).collect();
        assert_eq!(got, vec![block(1), block(2)], "{time}: {}", stderr(&a));
    }
}

#[test]
fn kafka_bad_arguments_and_backend_failures_have_their_exit_codes() {
    let f = Fixture::new(1);
    f.tool()
        .args(["consume", "--topic", TOPIC, "--group", "g", "--from-id", "17"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("PARTITION:OFFSET"));
    // A registry that does not answer: the event cannot be framed, so it is not delivered.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    f.tool()
        .env(
            "EVENT_BUS_KAFKA_SCHEMA_REGISTRY_URL",
            format!("http://127.0.0.1:{port}"),
        )
        .args([
            "produce",
            "--event-type",
            XBLOCK,
            "--topic",
            TOPIC,
            "--timeout",
            "5",
            "--data",
        ])
        .arg(block(1).to_string())
        .assert()
        .code(3)
        .stdout("");
    // A broker that does not answer.
    f.tool()
        .env("EVENT_BUS_KAFKA_BOOTSTRAP_SERVERS", format!("127.0.0.1:{port}"))
        .args([
            "produce",
            "--event-type",
            XBLOCK,
            "--topic",
            TOPIC,
            "--timeout",
            "3",
            "--data",
        ])
        .arg(block(1).to_string())
        .assert()
        .code(3)
        .stdout("");
}
