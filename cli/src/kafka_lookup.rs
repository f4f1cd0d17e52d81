//! Where a Kafka message landed. The producer reports delivery, not positions, so the tool
//! notes the end of every partition of the topic before producing, and after the flush
//! reads what was appended since then, to find the message whose `ce_id` header is the
//! event's id. Only the messages produced meanwhile are read, however busy the topic.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use openedx_events::producer::kafka::client_config;
use openedx_events::Settings;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use uuid::Uuid;

use crate::error::CliError;
use crate::produce::Position;

fn kafka(e: KafkaError) -> CliError {
    CliError::backend(format!("kafka: {e}"))
}

/// The ends of a topic's partitions before producing, and a consumer to read on from them.
pub(crate) struct Lookup {
    consumer: BaseConsumer,
    topic: String,
    /// Partition → offset of the next message at the time of the snapshot.
    before: HashMap<i32, i64>,
    timeout: Duration,
}

impl Lookup {
    /// Notes the end of every partition of `topic` (the full topic; none if it does not exist yet).
    pub(crate) async fn snapshot(settings: &Settings, topic: &str, timeout: Duration) -> Result<Self, CliError> {
        let mut config = client_config(settings, "CONSUMER").map_err(CliError::bad_input)?;
        config
            .set(
                "group.id",
                format!("openedx-events-cli-lookup-{}", Uuid::new_v4().simple()),
            )
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("allow.auto.create.topics", "false");
        let topic = topic.to_owned();
        tokio::task::spawn_blocking(move || {
            let consumer: BaseConsumer = config.create().map_err(kafka)?;
            let before = ends(&consumer, &topic, timeout)?
                .into_iter()
                .map(|(p, (_, high))| (p, high))
                .collect();
            Ok(Self {
                consumer,
                topic,
                before,
                timeout,
            })
        })
        .await
        .map_err(|e| CliError::backend(format!("kafka lookup task: {e}")))?
    }

    /// The partition and offset of the message of `event_id`, produced after the snapshot.
    pub(crate) async fn find(self, event_id: Uuid) -> Result<Position, CliError> {
        tokio::task::spawn_blocking(move || self.find_blocking(&event_id.to_string()))
            .await
            .map_err(|e| CliError::backend(format!("kafka lookup task: {e}")))?
    }

    fn find_blocking(&self, id: &str) -> Result<Position, CliError> {
        let topic = &self.topic;
        let mut tpl = TopicPartitionList::new();
        let mut pending = Vec::new();
        for (p, (low, high)) in ends(&self.consumer, topic, self.timeout)? {
            let from = self.before.get(&p).copied().unwrap_or(low).max(low);
            if high > from {
                tpl.add_partition_offset(topic, p, Offset::Offset(from))
                    .map_err(kafka)?;
                pending.push((p, high));
            }
        }
        if !pending.is_empty() {
            self.consumer.assign(&tpl).map_err(kafka)?;
        }
        let deadline = Instant::now() + self.timeout;
        while !pending.is_empty() && Instant::now() < deadline {
            let Some(message) = self.consumer.poll(Duration::from_millis(200)) else {
                continue;
            };
            let message = message.map_err(kafka)?;
            let is_it = message.headers().is_some_and(|h| {
                h.iter()
                    .any(|header| header.key == "ce_id" && header.value == Some(id.as_bytes()))
            });
            if is_it {
                return Ok(Position::Kafka {
                    partition: message.partition(),
                    offset: message.offset(),
                });
            }
            let (partition, offset) = (message.partition(), message.offset());
            pending.retain(|&(p, high)| !(p == partition && offset + 1 >= high));
        }
        Err(CliError::backend(format!(
            "kafka: delivered, but the message of event {id} was not found among those appended to {topic} meanwhile"
        )))
    }
}

/// Partition → (low, high) watermarks of a topic; empty when the topic does not exist.
fn ends(consumer: &BaseConsumer, topic: &str, timeout: Duration) -> Result<HashMap<i32, (i64, i64)>, CliError> {
    let metadata = consumer.fetch_metadata(Some(topic), timeout).map_err(kafka)?;
    let mut out = HashMap::new();
    for t in metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
    {
        for p in t.partitions() {
            out.insert(
                p.id(),
                consumer.fetch_watermarks(topic, p.id(), timeout).map_err(kafka)?,
            );
        }
    }
    Ok(out)
}
