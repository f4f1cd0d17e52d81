//! The Kafka consumer, wire-compatible with edx-event-bus-kafka's producer.
//!
//! A consumer group on one topic. For each message: the event type from the single
//! `ce_type` header, the metadata from the headers (exactly one `ce_id` and one
//! `ce_type`, else the message is refused), the data decoded with the writer's schema
//! (fetched from the registry by the id in the framing) into the local event type,
//! then the signal re-sent with the received metadata, marked as from the bus.
//!
//! Unlike the Python consumer, an offset is stored for commit only once the message
//! is handled: receivers succeeded, or the message was written to the dead-letter
//! topic. A receiver failure is retried [`ConsumerOptions::max_retries`] times, then
//! dead-lettered; a message that cannot be read (headers, unknown type, framing,
//! undecodable data) is dead-lettered at once. Dead-lettered messages keep their key,
//! value and headers, plus `dead_letter_*` headers saying where they came from and why.
//! Too many consecutive failed messages stop the consumer with an error.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use openedx_events::consumer::kafka::{KafkaConsumer, KafkaConsumerOptions};
//! let settings = openedx_events::Settings::from_env();
//! let consumer = KafkaConsumer::new(&settings, "content-authoring-xblock-lifecycle", "my-group",
//!     KafkaConsumerOptions::default())?;
//! let stats = consumer.run(async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! println!("{} messages handled", stats.handled);
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, RebalanceProtocol, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Header, Headers, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use super::{parse_metadata, ConsumerOptions, DispatchError, ErrorBudget, RawMetadata, TooManyErrors};
use crate::config::full_topic;
use crate::event::registry;
use crate::producer::kafka::client_config;
use crate::schema_registry::{parse_frame, RegistryError, SchemaRegistryClient};
use crate::settings::Settings;

/// Where a consumer starts reading, instead of the group's committed offsets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replay {
    /// From the first message at or after this time (milliseconds since the epoch),
    /// in every partition of the topic.
    FromTimestampMs(i64),
    /// From these offsets: (partition, offset). Other partitions use the committed offsets.
    FromOffsets(Vec<(i32, i64)>),
}

/// Options of a [`KafkaConsumer`].
#[derive(Debug, Clone)]
pub struct KafkaConsumerOptions {
    /// Retries, retry delay, error limit, dead-letter topic.
    pub common: ConsumerOptions,
    /// Replay from a time or from offsets, then go on consuming.
    pub replay: Option<Replay>,
    /// Stop after this many messages were handled (delivered or dead-lettered).
    pub max_messages: Option<u64>,
    /// `auto.offset.reset` for a group without committed offsets (`earliest` by default,
    /// so nothing produced before the group's first start is skipped).
    pub offset_reset: String,
}

impl Default for KafkaConsumerOptions {
    fn default() -> Self {
        Self {
            common: ConsumerOptions::default(),
            replay: None,
            max_messages: None,
            offset_reset: "earliest".into(),
        }
    }
}

/// Counters of a consumer run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KafkaConsumerStats {
    /// Messages received.
    pub received: u64,
    /// Messages whose receivers all succeeded.
    pub handled: u64,
    /// Deliveries retried after a failure.
    pub retried: u64,
    /// Messages written to the dead-letter topic.
    pub dead_lettered: u64,
}

/// Why a consumer could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum KafkaConsumerError {
    /// A setting is missing or invalid.
    #[error("{0}")]
    Settings(String),
    /// librdkafka failed.
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    /// The schema registry client could not be made.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// Too many consecutive failed messages.
    #[error(transparent)]
    TooManyErrors(#[from] TooManyErrors),
    /// A message could not be written to the dead-letter topic; it is not committed.
    #[error("cannot write to dead-letter topic {topic}: {message}")]
    DeadLetter {
        /// The dead-letter topic.
        topic: String,
        /// What failed.
        message: String,
    },
}

/// Applies replay offsets when partitions are assigned.
struct ReplayContext {
    topic: String,
    pending: Mutex<HashMap<i32, Offset>>,
}

impl ClientContext for ReplayContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        crate::producer::kafka::forward_log(level, fac, message);
    }
    fn error(&self, error: KafkaError, reason: &str) {
        tracing::error!(topic = %self.topic, error = %error, reason, "librdkafka error");
    }
}

impl ConsumerContext for ReplayContext {
    fn rebalance(&self, consumer: &BaseConsumer<Self>, err: RDKafkaRespErr, tpl: &mut TopicPartitionList) {
        let cooperative = matches!(consumer.rebalance_protocol(), RebalanceProtocol::Cooperative);
        let result = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
                let partitions: Vec<i32> = tpl
                    .elements_for_topic(&self.topic)
                    .iter()
                    .map(|e| e.partition())
                    .collect();
                for p in partitions {
                    if let Some(offset) = pending.remove(&p) {
                        tracing::info!(topic = %self.topic, partition = p, offset = ?offset, "replaying from offset");
                        if let Err(e) = tpl.set_partition_offset(&self.topic, p, offset) {
                            tracing::error!(topic = %self.topic, partition = p, error = %e, "cannot set replay offset");
                        }
                    }
                }
                if cooperative {
                    consumer.incremental_assign(tpl)
                } else {
                    consumer.assign(tpl)
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                if cooperative {
                    consumer.incremental_unassign(tpl)
                } else {
                    consumer.unassign()
                }
            }
            other => {
                tracing::error!(topic = %self.topic, error = ?other, "rebalance error");
                consumer.unassign()
            }
        };
        if let Err(e) = result {
            tracing::error!(topic = %self.topic, error = %e, "cannot apply partition assignment");
        }
    }
}

/// A Kafka consumer of Open edX events on one topic.
pub struct KafkaConsumer {
    consumer: Arc<StreamConsumer<ReplayContext>>,
    dead_letters: FutureProducer,
    registry: SchemaRegistryClient,
    topic: String,
    group: String,
    dead_letter_topic: String,
    options: KafkaConsumerOptions,
    /// Partitions replayed by reading from their start: (partition, time in ms) before
    /// which messages are skipped.
    skip_older: Mutex<HashMap<i32, i64>>,
}

impl std::fmt::Debug for KafkaConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaConsumer")
            .field("topic", &self.topic)
            .field("group", &self.group)
            .field("dead_letter_topic", &self.dead_letter_topic)
            .finish_non_exhaustive()
    }
}

/// What became of one message.
enum Handled {
    Ok,
    DeadLettered(String),
}

impl KafkaConsumer {
    /// A consumer of `topic` (the configured topic: `EVENT_BUS_TOPIC_PREFIX` is applied)
    /// in consumer group `group`, with the Kafka settings of the producer
    /// (`EVENT_BUS_KAFKA_CONSUMER_CONFIG_<NAME>` for consumer-only properties).
    pub fn new(
        settings: &Settings,
        topic: &str,
        group: &str,
        options: KafkaConsumerOptions,
    ) -> Result<Self, KafkaConsumerError> {
        let full = full_topic(settings.topic_prefix(), topic);
        let mut config = client_config(settings, "CONSUMER").map_err(KafkaConsumerError::Settings)?;
        config.set("group.id", group).set("enable.auto.offset.store", "false");
        for (k, v) in [
            ("enable.auto.commit", "true"),
            ("auto.commit.interval.ms", "1000"),
            ("auto.offset.reset", options.offset_reset.as_str()),
        ] {
            if config.get(k).is_none() {
                config.set(k, v);
            }
        }
        let context = ReplayContext {
            topic: full.clone(),
            pending: Mutex::default(),
        };
        let consumer: StreamConsumer<ReplayContext> = config.create_with_context(context)?;
        let producer_config = client_config(settings, "PRODUCER").map_err(KafkaConsumerError::Settings)?;
        let dead_letters: FutureProducer = producer_config.create()?;
        let registry = SchemaRegistryClient::from_settings(settings)?;
        let dead_letter_topic = options.common.dead_letter_for(&full);
        Ok(Self {
            consumer: Arc::new(consumer),
            dead_letters,
            registry,
            topic: full,
            group: group.to_owned(),
            dead_letter_topic,
            options,
            skip_older: Mutex::default(),
        })
    }

    /// The full topic consumed.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The dead-letter topic.
    pub fn dead_letter_topic(&self) -> &str {
        &self.dead_letter_topic
    }

    async fn prepare_replay(&self) -> Result<(), KafkaConsumerError> {
        let offsets: Vec<(i32, Offset)> = match &self.options.replay {
            None => return Ok(()),
            Some(Replay::FromOffsets(list)) => list.iter().map(|&(p, o)| (p, Offset::Offset(o))).collect(),
            Some(Replay::FromTimestampMs(ts)) => {
                let consumer = self.consumer.clone();
                let topic = self.topic.clone();
                let ts = *ts;
                let (offsets, skip) = tokio::task::spawn_blocking(move || -> Result<_, KafkaError> {
                    let mut skip = Vec::new();
                    let timeout = Duration::from_secs(30);
                    let metadata = consumer.fetch_metadata(Some(&topic), timeout)?;
                    let mut tpl = TopicPartitionList::new();
                    for t in metadata.topics().iter().filter(|t| t.name() == topic) {
                        for p in t.partitions() {
                            tpl.add_partition_offset(&topic, p.id(), Offset::Offset(ts))?;
                        }
                    }
                    let found = consumer.offsets_for_times(tpl, timeout)?;
                    let mut offsets = Vec::new();
                    for e in found.elements_for_topic(&topic) {
                        let p = e.partition();
                        match e.offset() {
                            Offset::Offset(o) => offsets.push((p, Offset::Offset(o))),
                            _ => {
                                // No offset for the time: either nothing is that recent, or the
                                // broker cannot search by time (librdkafka's mock cluster). Read
                                // the partition from its start and skip what is older.
                                let (low, high) = consumer.fetch_watermarks(&topic, p, timeout)?;
                                if high > low {
                                    offsets.push((p, Offset::Offset(low)));
                                    skip.push(p);
                                } else {
                                    offsets.push((p, Offset::End));
                                }
                            }
                        }
                    }
                    Ok((offsets, skip))
                })
                .await
                .map_err(|e| KafkaConsumerError::Settings(format!("replay task: {e}")))??;
                let mut older = self.skip_older.lock().unwrap_or_else(|e| e.into_inner());
                older.extend(skip.into_iter().map(|p| (p, ts)));
                offsets
            }
        };
        tracing::info!(topic = %self.topic, partitions = offsets.len(), "replay prepared");
        let mut pending = self
            .consumer
            .context()
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        pending.extend(offsets);
        Ok(())
    }

    /// Consumes until `shutdown` completes, `max_messages` were handled, or too many
    /// consecutive messages failed (an error). Stored offsets are committed on the way out.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<KafkaConsumerStats, KafkaConsumerError> {
        self.prepare_replay().await?;
        self.consumer.subscribe(&[&self.topic])?;
        tracing::info!(topic = %self.topic, group = %self.group, "kafka consumer started");
        let mut stats = KafkaConsumerStats::default();
        let mut budget = ErrorBudget::new(self.options.common.max_consecutive_errors);
        tokio::pin!(shutdown);
        let result = loop {
            if let Some(max) = self.options.max_messages {
                if stats.handled + stats.dead_lettered >= max {
                    break Ok(());
                }
            }
            let message = tokio::select! {
                biased;
                _ = &mut shutdown => break Ok(()),
                m = self.consumer.recv() => m,
            };
            let message = match message {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(topic = %self.topic, error = %e, "kafka consumer error");
                    continue;
                }
            };
            if self.older_than_replay(&message) {
                let _ = self.consumer.store_offset_from_message(&message);
                continue;
            }
            stats.received += 1;
            let outcome = tokio::select! {
                biased;
                _ = &mut shutdown => break Ok(()),
                o = self.handle(&message, &mut stats) => o,
            };
            let outcome = match outcome {
                Ok(o) => o,
                Err(e) => break Err(e),
            };
            if let Err(e) = self.consumer.store_offset_from_message(&message) {
                tracing::error!(topic = %self.topic, error = %e, "cannot store offset");
            }
            match outcome {
                Handled::Ok => {
                    stats.handled += 1;
                    budget.success();
                }
                Handled::DeadLettered(error) => {
                    stats.dead_lettered += 1;
                    if let Err(e) = budget.failure(&error) {
                        break Err(e.into());
                    }
                }
            }
        };
        self.commit().await;
        tracing::info!(
            topic = %self.topic,
            group = %self.group,
            received = stats.received,
            handled = stats.handled,
            retried = stats.retried,
            dead_lettered = stats.dead_lettered,
            "kafka consumer stopped"
        );
        result.map(|()| stats)
    }

    /// Whether a message comes before the replay time on a partition read from its start.
    fn older_than_replay(&self, message: &BorrowedMessage<'_>) -> bool {
        let mut skip = self.skip_older.lock().unwrap_or_else(|e| e.into_inner());
        let Some(&ts) = skip.get(&message.partition()) else {
            return false;
        };
        match message.timestamp().to_millis() {
            Some(t) if t < ts => true,
            _ => {
                skip.remove(&message.partition());
                false
            }
        }
    }

    async fn commit(&self) {
        let consumer = self.consumer.clone();
        let topic = self.topic.clone();
        let _ = tokio::task::spawn_blocking(move || match consumer.commit_consumer_state(CommitMode::Sync) {
            Ok(()) | Err(KafkaError::ConsumerCommit(rdkafka::error::RDKafkaErrorCode::NoOffset)) => {}
            Err(e) => tracing::error!(topic = %topic, error = %e, "final offset commit failed"),
        })
        .await;
    }

    async fn handle(
        &self,
        message: &BorrowedMessage<'_>,
        stats: &mut KafkaConsumerStats,
    ) -> Result<Handled, KafkaConsumerError> {
        let mut attempt = 0u32;
        let error = loop {
            match self.deliver(message).await {
                Ok(()) => return Ok(Handled::Ok),
                Err(e) if e.is_permanent() || attempt >= self.options.common.max_retries => break e,
                Err(e) => {
                    attempt += 1;
                    stats.retried += 1;
                    tracing::warn!(
                        topic = %self.topic,
                        partition = message.partition(),
                        offset = message.offset(),
                        event_type = header_str(message, "ce_type").unwrap_or_default(),
                        event_id = header_str(message, "ce_id").unwrap_or_default(),
                        attempt,
                        error = %e,
                        "message failed; retrying"
                    );
                    tokio::time::sleep(self.options.common.retry_delay).await;
                }
            }
        };
        let error = error.to_string();
        self.dead_letter(message, &error).await?;
        Ok(Handled::DeadLettered(error))
    }

    /// Reads, decodes and dispatches one message.
    async fn deliver(&self, message: &BorrowedMessage<'_>) -> Result<(), MessageError> {
        let raw = raw_metadata(message)?;
        let metadata = parse_metadata(&raw)?;
        let payload = message
            .payload()
            .ok_or_else(|| DispatchError::Undecodable("message has no value".into()))?;
        let (id, body) = parse_frame(payload).map_err(|e| DispatchError::Undecodable(e.to_string()))?;
        let writer = self.registry.schema(id).await.map_err(MessageError::Registry)?;
        let ops = registry::find(metadata.event_type)
            .ok_or_else(|| DispatchError::UnknownEventType(metadata.event_type.to_owned()))?
            .ops();
        let event = ops
            .decode_avro_with_schema(body, &writer.parsed)
            .map_err(|e| DispatchError::Undecodable(format!("with writer schema {id}: {e}")))?;
        Ok(super::send_decoded(ops, event, metadata).await?)
    }

    async fn dead_letter(&self, message: &BorrowedMessage<'_>, error: &str) -> Result<(), KafkaConsumerError> {
        tracing::error!(
            topic = %self.topic,
            partition = message.partition(),
            offset = message.offset(),
            event_type = header_str(message, "ce_type").unwrap_or_default(),
            event_id = header_str(message, "ce_id").unwrap_or_default(),
            dead_letter_topic = %self.dead_letter_topic,
            error,
            "message dead-lettered"
        );
        let mut headers = message.headers().map(|h| h.detach()).unwrap_or_default();
        let partition = message.partition().to_string();
        let offset = message.offset().to_string();
        let error: String = error.chars().take(4000).collect();
        for (key, value) in [
            ("dead_letter_error", error.as_str()),
            ("dead_letter_topic", self.topic.as_str()),
            ("dead_letter_partition", partition.as_str()),
            ("dead_letter_offset", offset.as_str()),
            ("dead_letter_group", self.group.as_str()),
        ] {
            headers = headers.insert(Header {
                key,
                value: Some(value.as_bytes()),
            });
        }
        let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&self.dead_letter_topic).headers(headers);
        if let Some(key) = message.key() {
            record = record.key(key);
        }
        if let Some(payload) = message.payload() {
            record = record.payload(payload);
        }
        self.dead_letters
            .send(record, Duration::from_secs(30))
            .await
            .map(|_| ())
            .map_err(|(e, _)| KafkaConsumerError::DeadLetter {
                topic: self.dead_letter_topic.clone(),
                message: e.to_string(),
            })
    }
}

/// A failure of one message.
#[derive(Debug, thiserror::Error)]
enum MessageError {
    #[error(transparent)]
    Dispatch(#[from] DispatchError),
    /// The writer's schema could not be fetched.
    #[error("writer schema: {0}")]
    Registry(RegistryError),
}

impl MessageError {
    fn is_permanent(&self) -> bool {
        match self {
            MessageError::Dispatch(e) => e.is_permanent(),
            // An id the registry does not know will not appear later; a registry that
            // is down may come back.
            MessageError::Registry(RegistryError::Status { status, .. }) => *status == 404,
            MessageError::Registry(RegistryError::BadSchema { .. }) => true,
            MessageError::Registry(_) => false,
        }
    }
}

fn header_str<'a>(message: &'a BorrowedMessage<'_>, name: &str) -> Option<&'a str> {
    let headers = message.headers()?;
    headers
        .iter()
        .find(|h| h.key == name)
        .and_then(|h| h.value)
        .and_then(|v| std::str::from_utf8(v).ok())
}

/// The metadata headers of a message; exactly one `ce_id` and one `ce_type` are required.
fn raw_metadata(message: &BorrowedMessage<'_>) -> Result<RawMetadata, DispatchError> {
    let mut raw = RawMetadata::default();
    let (mut ids, mut types) = (0usize, 0usize);
    if let Some(headers) = message.headers() {
        for h in headers.iter() {
            let slot = match h.key {
                "ce_id" => {
                    ids += 1;
                    &mut raw.id
                }
                "ce_type" => {
                    types += 1;
                    &mut raw.event_type
                }
                "ce_source" => &mut raw.source,
                "ce_time" => &mut raw.time,
                "ce_minorversion" => &mut raw.minorversion,
                "sourcehost" => &mut raw.sourcehost,
                "sourcelib" => &mut raw.sourcelib,
                _ => continue,
            };
            let value = h.value.unwrap_or_default();
            let text = std::str::from_utf8(value)
                .map_err(|_| DispatchError::BadMetadata(format!("header {} is not UTF-8", h.key)))?;
            *slot = Some(text.to_owned());
        }
    }
    if ids != 1 || types != 1 {
        return Err(DispatchError::BadMetadata(format!(
            "expected exactly one ce_id and one ce_type header, found {ids} ce_id and {types} ce_type"
        )));
    }
    Ok(raw)
}
