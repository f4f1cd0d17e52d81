//! Where a Kafka message landed: the producer reports delivery, not positions, so after a
//! flush the tool reads the newest messages of each partition of the topic and finds the
//! one whose `ce_id` header is the event's id.

use std::time::{Duration, Instant};

use openedx_events::producer::kafka::client_config;
use openedx_events::Settings;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use uuid::Uuid;

use crate::error::CliError;
use crate::produce::Position;

/// Messages read back per partition at most.
const WINDOW: i64 = 1000;

/// Finds the partition and offset of the message of `event_id` in `topic` (the full topic).
pub(crate) async fn find_position(
    settings: &Settings,
    topic: &str,
    event_id: Uuid,
    timeout: Duration,
) -> Result<Position, CliError> {
    let mut config = client_config(settings, "CONSUMER").map_err(CliError::bad_input)?;
    config
        .set(
            "group.id",
            format!("openedx-events-cli-lookup-{}", Uuid::new_v4().simple()),
        )
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false");
    let topic = topic.to_owned();
    let id = event_id.to_string();
    tokio::task::spawn_blocking(move || -> Result<Position, CliError> {
        let consumer: BaseConsumer = config
            .create()
            .map_err(|e| CliError::backend(format!("kafka: {e}")))?;
        let kafka = |e: rdkafka::error::KafkaError| CliError::backend(format!("kafka: {e}"));
        let metadata = consumer.fetch_metadata(Some(&topic), timeout).map_err(kafka)?;
        let mut tpl = TopicPartitionList::new();
        let mut ends = Vec::new();
        for t in metadata.topics().iter().filter(|t| t.name() == topic) {
            for p in t.partitions() {
                let (low, high) = consumer.fetch_watermarks(&topic, p.id(), timeout).map_err(kafka)?;
                if high > low {
                    tpl.add_partition_offset(&topic, p.id(), Offset::Offset(low.max(high - WINDOW)))
                        .map_err(kafka)?;
                    ends.push((p.id(), high));
                }
            }
        }
        if ends.is_empty() {
            return Err(CliError::backend(format!(
                "kafka: delivered, but {topic} holds no message to find it in"
            )));
        }
        consumer.assign(&tpl).map_err(kafka)?;
        let deadline = Instant::now() + timeout;
        while !ends.is_empty() && Instant::now() < deadline {
            let Some(message) = consumer.poll(Duration::from_millis(200)) else {
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
            ends.retain(|&(p, high)| !(p == partition && offset + 1 >= high));
        }
        Err(CliError::backend(format!(
            "kafka: delivered, but the message of event {id} was not found among the newest {WINDOW} of each partition of {topic}"
        )))
    })
    .await
    .map_err(|e| CliError::backend(format!("kafka lookup task: {e}")))?
}
