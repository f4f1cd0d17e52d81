//! A Kafka broker for tests: librdkafka's mock cluster in-process by default, or the
//! broker named by `KAFKA_BOOTSTRAP_SERVERS` when it is set; plus small helpers to
//! create topics and read a topic back with plain rdkafka.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use openedx_events::keys::UsageKey;
use openedx_events::producer::{KeyFieldInfo, ProducerRecord};
use openedx_events::{EventKey, EventMetadata, OpenEdxEvent};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::OwnedMessage;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use rdkafka::{Message, Offset, TopicPartitionList};

/// The broker of a test.
pub struct KafkaEnv {
    cluster: Option<MockCluster<'static, DefaultProducerContext>>,
    bootstrap: String,
}

impl KafkaEnv {
    /// `KAFKA_BOOTSTRAP_SERVERS` when set, else a new 3-broker mock cluster.
    pub fn start() -> Self {
        match std::env::var("KAFKA_BOOTSTRAP_SERVERS").ok().filter(|v| !v.is_empty()) {
            Some(bootstrap) => Self {
                cluster: None,
                bootstrap,
            },
            None => {
                let cluster = MockCluster::new(3).expect("mock cluster");
                let bootstrap = cluster.bootstrap_servers();
                Self {
                    cluster: Some(cluster),
                    bootstrap,
                }
            }
        }
    }

    /// The bootstrap servers.
    pub fn bootstrap(&self) -> &str {
        &self.bootstrap
    }

    /// The mock cluster, when the test runs on one.
    pub fn mock(&self) -> Option<&MockCluster<'static, DefaultProducerContext>> {
        self.cluster.as_ref()
    }

    /// Creates a topic with `partitions` partitions ("already exists" is fine).
    pub fn create_topic(&self, name: &str, partitions: i32) {
        if let Some(c) = &self.cluster {
            c.create_topic(name, partitions, 1).expect("mock create_topic");
            return;
        }
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .create()
            .expect("admin client");
        let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
        let result =
            futures::executor::block_on(admin.create_topics([&topic], &AdminOptions::new())).expect("create_topics");
        for r in result {
            if let Err((t, code)) = r {
                assert_eq!(
                    code,
                    rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists,
                    "create topic {t}"
                );
            }
        }
    }

    /// Reads `expected` messages of `topic` from the beginning of every partition
    /// (stops early at `timeout`), with a plain rdkafka consumer.
    pub fn read_all(&self, topic: &str, expected: usize, timeout: Duration) -> Vec<OwnedMessage> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .set("group.id", unique("reader"))
            .set("enable.auto.commit", "false")
            .create()
            .expect("consumer");
        let metadata = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .expect("metadata");
        let mut tpl = TopicPartitionList::new();
        for t in metadata.topics() {
            for p in t.partitions() {
                tpl.add_partition_offset(topic, p.id(), Offset::Beginning).unwrap();
            }
        }
        consumer.assign(&tpl).expect("assign");
        let deadline = Instant::now() + timeout;
        let mut out = Vec::new();
        while out.len() < expected && Instant::now() < deadline {
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
                out.push(m.detach());
            }
        }
        // Anything beyond `expected` would show up within a short grace period.
        let grace = Instant::now() + Duration::from_millis(300);
        while Instant::now() < grace {
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(50)) {
                out.push(m.detach());
            }
        }
        out
    }
}

/// A name unique to this run: `{base}-{uuid}`.
pub fn unique(base: &str) -> String {
    format!("{base}-{}", uuid::Uuid::new_v4().simple())
}

/// Headers of a message as (name, value) pairs in order.
pub fn headers(m: &OwnedMessage) -> Vec<(String, String)> {
    use rdkafka::message::Headers;
    let mut out = Vec::new();
    if let Some(h) = m.headers() {
        for header in h.iter() {
            out.push((
                header.key.to_owned(),
                String::from_utf8_lossy(header.value.unwrap_or_default()).into_owned(),
            ));
        }
    }
    out
}

/// A record of an XBlock event for `topic`, keyed as `event_key_field:
/// "xblock_info.usage_key"` keys it, with new metadata.
pub fn usage_key_record<E: OpenEdxEvent>(topic: &str, usage_key: &UsageKey, data: E) -> ProducerRecord {
    ProducerRecord {
        topic: topic.into(),
        key: Some(EventKey::String(usage_key.to_string())),
        key_field: Some(KeyFieldInfo {
            name: "usage_key",
            avro_type: "string",
        }),
        metadata: EventMetadata::generate(E::EVENT_TYPE, E::MINOR_VERSION),
        data: Arc::new(data),
    }
}
