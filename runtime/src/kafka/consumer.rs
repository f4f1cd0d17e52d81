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
//! A message whose writer's schema the registry cannot give for a reason of the
//! registry's (unreachable, 5xx, 401/403, 429, an answer that is not the API's) is held
//! and tried again with backoff (100 ms to 10 s) until the registry answers: an outage
//! is not the message's fault, and dead-lettering it would let the later messages of its
//! key overtake it. A header key that is not UTF-8 makes a message unreadable
//! (dead-lettered, never a panic). So does a metadata header (`ce_id`, `ce_type`,
//! `ce_time`, `ce_source`, `ce_minorversion`, `ce_specversion`, `sourcehost`,
//! `sourcelib`, `content-type`) given more than once, even with the same value: no
//! "first or last wins". librdkafka's C API gives header names as NUL-terminated
//! strings, so a name with a NUL byte reads only up to it; such a name is found with
//! librdkafka's exact-name lookup and never taken for a metadata header (`ce_id\0x` is
//! refused, not read as `ce_id`; a foreign header with a NUL is ignored like any other).
//! Reasons in logs and in `dead_letter_error` are bounded (1000 characters, the middle
//! cut), peer values in logs to 200. A fatal librdkafka error (a static member fenced by
//! another with its `group.instance.id`, say) stops the consumer with
//! [`KafkaConsumerError::Fatal`].
//!
//! [`Replay::FromTimestampMs`] starts each partition at the broker's answer to "the first
//! offset at or after this time". `-1` means nothing is that recent, and the partition
//! starts at its end, unless its last message is that recent: then the broker cannot
//! search by time (librdkafka's mock cluster), and the partition is read from its start,
//! older messages skipped without storing their offsets, so the group's committed offset
//! never moves back into older data. A replay offset is applied again when a rebalance
//! takes the partition away before its first message is handled.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use openedx_events::kafka::{KafkaConsumer, KafkaConsumerOptions};
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

use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, RebalanceProtocol, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Header, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use super::registry::{parse_frame, RegistryError, SchemaRegistryClient};
use super::{client_config, forward_log};
use crate::consume::{parse_metadata, ConsumerOptions, DispatchError, ErrorBudget, RawMetadata, TooManyErrors};
use crate::config::full_topic;
use crate::event::registry;
use crate::retry::Backoff;
use crate::settings::Settings;

/// Where a consumer starts reading, instead of the group's committed offsets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replay {
    /// From the first message at or after this time (milliseconds since the epoch),
    /// in every partition of the topic. A time before 1970 replays from the first message
    /// (never taken for Kafka's logical offsets -1 and -2).
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
    /// librdkafka raised a fatal error (the consumer was fenced by another instance with
    /// its `group.instance.id`, say): this client cannot go on, so the consumer stops.
    #[error("fatal kafka consumer error: {reason}")]
    Fatal {
        /// librdkafka's description of the error.
        reason: String,
    },
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
///
/// A partition's replay offset is kept until a message of the partition is handled
/// (its offset stored): a rebalance during start-up that takes the partition away before
/// then and gives it back applies the replay again, instead of dropping it for the
/// committed offset. (A partition given to another member of the group is read from the
/// committed offset there: replay is this consumer's.)
struct ReplayContext {
    topic: String,
    pending: Mutex<HashMap<i32, Offset>>,
}

impl ReplayContext {
    /// A message of `partition` was handled: its replay is under way, and a later
    /// assignment goes on from the stored offsets.
    fn replayed(&self, partition: i32) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if !pending.is_empty() {
            pending.remove(&partition);
        }
    }
}

impl ClientContext for ReplayContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        forward_log(level, fac, message);
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
                let pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
                let partitions: Vec<i32> = tpl
                    .elements_for_topic(&self.topic)
                    .iter()
                    .map(|e| e.partition())
                    .collect();
                for p in partitions {
                    if let Some(&offset) = pending.get(&p) {
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
    /// The client configuration (without the group), for the short-lived consumer that
    /// reads the last message of a partition when a replay needs it.
    probe_config: ClientConfig,
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
        let probe_config = config.clone();
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
            probe_config,
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
                let probe_config = self.probe_config.clone();
                // Kafka reads a negative time as a logical offset (-1 latest, -2 earliest):
                // a time before 1970 means "from the first message", which 0 asks for.
                let ts = (*ts).max(0);
                let (offsets, skip) = tokio::task::spawn_blocking(move || -> Result<_, KafkaConsumerError> {
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
                    let mut skip = Vec::new();
                    let mut check_last = Vec::new();
                    for e in found.elements_for_topic(&topic) {
                        let p = e.partition();
                        let lookup = TimeLookup::of(e.error(), e.offset());
                        let (low, high) = match lookup {
                            TimeLookup::End | TimeLookup::Unsupported => {
                                consumer.fetch_watermarks(&topic, p, timeout)?
                            }
                            _ => (0, 0),
                        };
                        match replay_start(lookup, low, high).map_err(|code| {
                            tracing::error!(topic = %topic, partition = p, error = %code, "cannot find where to replay from");
                            KafkaConsumerError::Kafka(KafkaError::OffsetFetch(code))
                        })? {
                            ReplayStart::At(o) => offsets.push((p, Offset::Offset(o))),
                            ReplayStart::End(high) => offsets.push((p, Offset::Offset(high))),
                            ReplayStart::Scan => {
                                offsets.push((p, Offset::Offset(low)));
                                skip.push(p);
                            }
                            ReplayStart::CheckLast => check_last.push((p, low, high)),
                        }
                    }
                    if !check_last.is_empty() {
                        let last = last_message_times(&probe_config, &topic, &check_last, Duration::from_secs(10))?;
                        for (p, low, high) in check_last {
                            match after_last_message(last.get(&p).copied(), ts, high) {
                                ReplayStart::Scan => {
                                    offsets.push((p, Offset::Offset(low)));
                                    skip.push(p);
                                }
                                // `End(high)`: the high watermark read before the last message.
                                _ => offsets.push((p, Offset::Offset(high))),
                            }
                        }
                    }
                    Ok((offsets, skip))
                })
                .await
                .map_err(|e| KafkaConsumerError::Settings(format!("replay task: {e}")))??;
                if !skip.is_empty() {
                    tracing::info!(
                        topic = %self.topic,
                        partitions = ?skip,
                        "the broker cannot search these partitions by time: reading them from their start, skipping older messages"
                    );
                }
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
                    let fatal = self.consumer.client().fatal_error();
                    if fatal.is_some() || matches!(e, KafkaError::MessageConsumptionFatal(_)) {
                        // A fatal error ends this client: polling on would only spin.
                        let reason = fatal.map(|(_, reason)| reason).unwrap_or_else(|| e.to_string());
                        tracing::error!(topic = %self.topic, group = %self.group, error = %reason, "fatal kafka consumer error; stopping");
                        break Err(KafkaConsumerError::Fatal { reason });
                    }
                    tracing::warn!(topic = %self.topic, error = %e, "kafka consumer error");
                    continue;
                }
            };
            if self.older_than_replay(&message) {
                // Skipped without storing its offset: the group's committed offset stays
                // where it was until a replayed message is handled, and never moves back
                // into the older data read past here.
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
            self.consumer.context().replayed(message.partition());
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
        // Closing librdkafka's clients blocks (leaving the group, joining its threads):
        // never on a runtime thread. After a fatal error librdkafka's close may never
        // finish, so it runs on a thread of its own that nobody waits for (not tokio's
        // blocking pool, whose shutdown would wait for it).
        let fatal = matches!(result, Err(KafkaConsumerError::Fatal { .. }));
        let Self {
            consumer, dead_letters, ..
        } = self;
        let clients = (consumer, dead_letters);
        if fatal {
            let spawned = std::thread::Builder::new()
                .name("kafka-consumer-close".into())
                .spawn(move || drop(clients));
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start a thread to close the failed kafka consumer; leaking it");
            }
        } else {
            let _ = tokio::task::spawn_blocking(move || drop(clients)).await;
        }
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
        let mut outage = Backoff::new(REGISTRY_OUTAGE_FIRST_DELAY, REGISTRY_OUTAGE_MAX_DELAY);
        let error = loop {
            match self.deliver(message).await {
                Ok(()) => return Ok(Handled::Ok),
                Err(e) if e.is_registry_unavailable() => {
                    let delay = outage.next_delay();
                    // Not the message's fault: hold it, and its partition behind it, until the
                    // registry answers (dead-lettering it would let the later messages of its
                    // key overtake it). Shutdown interrupts the wait; the offset is not stored.
                    tracing::warn!(
                        topic = %self.topic,
                        partition = message.partition(),
                        offset = message.offset(),
                        event_type = %header_str(message, "ce_type"),
                        event_id = %header_str(message, "ce_id"),
                        retry_in_ms = delay.as_millis() as u64,
                        error = %bounded_reason(&e.to_string()),
                        "schema registry unavailable; holding the message until it answers"
                    );
                    tokio::time::sleep(delay).await;
                }
                Err(e) if e.is_permanent() || attempt >= self.options.common.max_retries => break e,
                Err(e) => {
                    attempt += 1;
                    stats.retried += 1;
                    tracing::warn!(
                        topic = %self.topic,
                        partition = message.partition(),
                        offset = message.offset(),
                        event_type = %header_str(message, "ce_type"),
                        event_id = %header_str(message, "ce_id"),
                        attempt,
                        error = %bounded_reason(&e.to_string()),
                        "message failed; retrying"
                    );
                    tokio::time::sleep(self.options.common.retry_delay).await;
                }
            }
        };
        let error = bounded_reason(&error.to_string()).into_owned();
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
        let error = bounded_reason(error);
        tracing::error!(
            topic = %self.topic,
            partition = message.partition(),
            offset = message.offset(),
            event_type = %header_str(message, "ce_type"),
            event_id = %header_str(message, "ce_id"),
            dead_letter_topic = %self.dead_letter_topic,
            error = %error,
            "message dead-lettered"
        );
        let mut headers = message.headers().map(|h| h.detach()).unwrap_or_default();
        let partition = message.partition().to_string();
        let offset = message.offset().to_string();
        for (key, value) in [
            ("dead_letter_error", &*error),
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

/// The first wait of a message held while the schema registry is unavailable.
const REGISTRY_OUTAGE_FIRST_DELAY: Duration = Duration::from_millis(100);
/// The longest wait between two tries of a message held while the registry is unavailable.
const REGISTRY_OUTAGE_MAX_DELAY: Duration = Duration::from_secs(10);

impl MessageError {
    /// Whether the writer's schema could not be fetched for a reason that is the
    /// registry's, not the message's: unreachable, an error status other than 404
    /// (5xx, 401/403 while credentials are fixed, 429...), or an answer that is not the API's.
    fn is_registry_unavailable(&self) -> bool {
        match self {
            MessageError::Registry(RegistryError::Status { status, .. }) => *status != 404,
            MessageError::Registry(RegistryError::Http { .. } | RegistryError::BadAnswer { .. }) => true,
            _ => false,
        }
    }

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

/// One header of a message, as librdkafka holds it.
struct RawHeader<'a> {
    /// The name's bytes up to its first NUL byte (librdkafka's C API gives names as
    /// NUL-terminated strings and does not say their length).
    key: &'a [u8],
    value: Option<&'a [u8]>,
    /// For a metadata header's name ([`METADATA_HEADERS`]): whether `key` is the whole
    /// name of every header that reads as it; false when one of them had a NUL byte and
    /// more after it (found by librdkafka's exact-name lookup, which compares lengths).
    /// Not checked (true) for other names.
    exact: bool,
}

/// The headers of a message, in order.
///
/// Read with librdkafka's own accessors: rdkafka's `Headers::iter` / `try_get` panic on
/// a header key that is not UTF-8, which any peer can send.
fn raw_headers<'a>(message: &'a BorrowedMessage<'_>) -> Vec<RawHeader<'a>> {
    use rdkafka::bindings as rd;
    use rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR;
    let mut out = Vec::new();
    let mut headers: *mut rd::rd_kafka_headers_t = std::ptr::null_mut();
    // SAFETY: `message.ptr()` is a valid message for as long as `message` is borrowed;
    // the headers librdkafka returns belong to the message and live as long as it; each
    // name is a NUL-terminated string and each value `size` bytes (or null), both owned
    // by the headers. The returned slices borrow `message`, so they cannot outlive it.
    unsafe {
        if rd::rd_kafka_message_headers(message.ptr(), &mut headers) != RD_KAFKA_RESP_ERR_NO_ERROR || headers.is_null()
        {
            return Vec::new();
        }
        for idx in 0.. {
            let mut name: *const std::os::raw::c_char = std::ptr::null();
            let mut value: *const std::os::raw::c_void = std::ptr::null();
            let mut size = 0usize;
            if rd::rd_kafka_header_get_all(headers, idx, &mut name, &mut value, &mut size) != RD_KAFKA_RESP_ERR_NO_ERROR
                || name.is_null()
            {
                break;
            }
            let key = std::ffi::CStr::from_ptr(name).to_bytes();
            let bytes = (!value.is_null()).then(|| std::slice::from_raw_parts(value.cast::<u8>(), size));
            out.push((key, bytes));
        }
        // `rd_kafka_header_get(name, i)` finds only the headers whose whole name is `name`
        // (it compares lengths too), a subset of those that read as `name`. So when `m`
        // headers read as a metadata header's name, they are all that name exactly if and
        // only if it finds an `m`-th; if not, one of them at least had a NUL byte in its
        // name, and (which one cannot be told) none of them is taken as exact. Linear in
        // the number of headers, whatever a peer sends; other names are not checked.
        let mut exact = vec![true; out.len()];
        for name in METADATA_HEADERS {
            let same: Vec<usize> = (0..out.len()).filter(|&j| out[j].0 == name.as_bytes()).collect();
            let Some(last) = same.len().checked_sub(1) else {
                continue;
            };
            let c_name = std::ffi::CString::new(name).expect("no NUL in a metadata header name");
            let mut value: *const std::os::raw::c_void = std::ptr::null();
            let mut size = 0usize;
            let all_exact = rd::rd_kafka_header_get(headers, last, c_name.as_ptr(), &mut value, &mut size)
                == RD_KAFKA_RESP_ERR_NO_ERROR;
            for j in same {
                exact[j] = all_exact;
            }
        }
        out.into_iter()
            .zip(exact)
            .map(|((key, value), exact)| RawHeader { key, value, exact })
            .collect()
    }
}

/// The longest peer value quoted in a log line or a reason.
const PEER_VALUE_MAX_CHARS: usize = 200;
/// The longest reason written to a log line or a dead letter's `dead_letter_error`.
const REASON_MAX_CHARS: usize = 1000;

/// `text` cut to `max` characters, saying how much was cut.
fn cut(text: &str, max: usize) -> std::borrow::Cow<'_, str> {
    match text.char_indices().nth(max) {
        None => text.into(),
        Some((at, _)) => format!("{}... ({} more chars)", &text[..at], text[at..].chars().count()).into(),
    }
}

/// A reason bounded to [`REASON_MAX_CHARS`]: its start and its end (where the error's
/// own words usually are), the middle (usually a peer's value) cut.
fn bounded_reason(reason: &str) -> std::borrow::Cow<'_, str> {
    let total = reason.chars().count();
    if total <= REASON_MAX_CHARS {
        return reason.into();
    }
    let head: String = reason.chars().take(REASON_MAX_CHARS * 6 / 10).collect();
    let tail: String = reason.chars().skip(total - REASON_MAX_CHARS * 3 / 10).collect();
    format!(
        "{head} ... ({} chars cut) ... {tail}",
        total - REASON_MAX_CHARS * 9 / 10
    )
    .into()
}

/// The value of the first header called `name` (exactly), when it is UTF-8, cut for logs.
fn header_str<'a>(message: &'a BorrowedMessage<'_>, name: &str) -> std::borrow::Cow<'a, str> {
    raw_headers(message)
        .into_iter()
        .find(|h| h.exact && h.key == name.as_bytes())
        .and_then(|h| h.value)
        .and_then(|v| std::str::from_utf8(v).ok())
        .map(|v| cut(v, PEER_VALUE_MAX_CHARS))
        .unwrap_or_default()
}

/// The metadata headers this consumer reads or that the Python producer writes once.
const METADATA_HEADERS: [&str; 9] = [
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

/// The metadata headers of a message. `ce_id` and `ce_type` are required; each metadata
/// header may be given once at most (a second one, even with the same value, makes the
/// message unreadable: no "first or last wins"); every header key must be UTF-8 (as the
/// Kafka protocol wants it); a key that reads as a metadata header's name followed by a
/// NUL byte and more is refused (it is not one, and could be taken for one). Other
/// headers are ignored.
fn raw_metadata(message: &BorrowedMessage<'_>) -> Result<RawMetadata, DispatchError> {
    let mut raw = RawMetadata::default();
    let mut seen = [0usize; METADATA_HEADERS.len()];
    for (idx, header) in raw_headers(message).into_iter().enumerate() {
        let key = std::str::from_utf8(header.key).map_err(|_| {
            DispatchError::BadMetadata(format!(
                "header {idx} has a key that is not UTF-8 ({:?})",
                cut(&String::from_utf8_lossy(header.key), 100)
            ))
        })?;
        let Some(which) = METADATA_HEADERS.iter().position(|name| *name == key) else {
            continue;
        };
        if !header.exact {
            return Err(DispatchError::BadMetadata(format!(
                "a header key reads as {key:?} but has a NUL byte and more after it: not the {key} header"
            )));
        }
        seen[which] += 1;
        if seen[which] > 1 {
            return Err(DispatchError::BadMetadata(format!(
                "header {key} is given more than once (it must be given once at most)"
            )));
        }
        let slot = match key {
            "ce_id" => &mut raw.id,
            "ce_type" => &mut raw.event_type,
            "ce_source" => &mut raw.source,
            "ce_time" => &mut raw.time,
            "ce_minorversion" => &mut raw.minorversion,
            "sourcehost" => &mut raw.sourcehost,
            "sourcelib" => &mut raw.sourcelib,
            _ => continue,
        };
        let text = std::str::from_utf8(header.value.unwrap_or_default())
            .map_err(|_| DispatchError::BadMetadata(format!("header {key} is not UTF-8")))?;
        *slot = Some(text.to_owned());
    }
    if seen[0] != 1 || seen[1] != 1 {
        return Err(DispatchError::BadMetadata(format!(
            "expected exactly one ce_id and one ce_type header, found {} ce_id and {} ce_type",
            seen[0], seen[1]
        )));
    }
    Ok(raw)
}

/// A broker's answer, for one partition, to "the first offset at or after this time".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TimeLookup {
    /// This offset.
    Offset(i64),
    /// `-1`: no message at or after the time (or, from a broker that cannot search by
    /// time but says so in no other way, such as librdkafka's mock cluster: unknown).
    End,
    /// The broker said it cannot search this partition by time.
    Unsupported,
    /// Another error.
    Failed(rdkafka::error::RDKafkaErrorCode),
}

impl TimeLookup {
    fn of(error: Result<(), KafkaError>, offset: Offset) -> Self {
        use rdkafka::error::RDKafkaErrorCode as Code;
        match error {
            Err(e) => match e.rdkafka_error_code() {
                Some(Code::UnsupportedForMessageFormat | Code::UnsupportedVersion | Code::UnsupportedFeature) => {
                    Self::Unsupported
                }
                Some(code) => Self::Failed(code),
                None => Self::Failed(Code::Fail),
            },
            Ok(()) => match offset {
                Offset::Offset(o) if o >= 0 => Self::Offset(o),
                Offset::End => Self::End,
                // Anything else is not an answer to the question.
                _ => Self::Unsupported,
            },
        }
    }
}

/// Where a partition replayed from a time starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReplayStart {
    /// At this offset.
    At(i64),
    /// At the end: nothing is that recent. The end is the high watermark read during the
    /// lookup, never a logical "end" that the group would resolve only when it assigns the
    /// partition (seconds later: the messages produced meanwhile would be skipped).
    End(i64),
    /// "End" from a partition holding messages: read the last one's time to tell a real
    /// "nothing that recent" from a broker that cannot search by time.
    CheckLast,
    /// The broker cannot search by time: read from the start (low watermark), skipping
    /// older messages without storing their offsets.
    Scan,
}

/// Decides where a partition starts from the broker's answer and its watermarks
/// (`low`, `high`: read only for `End` and `Unsupported`).
fn replay_start(lookup: TimeLookup, low: i64, high: i64) -> Result<ReplayStart, rdkafka::error::RDKafkaErrorCode> {
    match lookup {
        TimeLookup::Offset(o) => Ok(ReplayStart::At(o)),
        TimeLookup::End if high <= low => Ok(ReplayStart::End(high)),
        TimeLookup::End => Ok(ReplayStart::CheckLast),
        TimeLookup::Unsupported if high <= low => Ok(ReplayStart::End(high)),
        TimeLookup::Unsupported => Ok(ReplayStart::Scan),
        TimeLookup::Failed(code) => Err(code),
    }
}

/// After an "end" answer: when the partition's last message is at or after the time
/// (or its time cannot be read), the answer was wrong and the partition is scanned;
/// otherwise the end is the end: `high`, the high watermark read before the last message.
fn after_last_message(last_time: Option<i64>, ts: i64, high: i64) -> ReplayStart {
    match last_time {
        Some(t) if t < ts => ReplayStart::End(high),
        _ => ReplayStart::Scan,
    }
}

/// The timestamps of the last message of these partitions (partition, low, high), read
/// with a consumer outside any group; a partition whose last message does not come in
/// `timeout` (a transaction marker, say) is left out.
fn last_message_times(
    config: &ClientConfig,
    topic: &str,
    partitions: &[(i32, i64, i64)],
    timeout: Duration,
) -> Result<HashMap<i32, i64>, KafkaError> {
    let mut config = config.clone();
    config
        .set(
            "group.id",
            format!("openedx-events-replay-probe-{}", uuid::Uuid::new_v4().simple()),
        )
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false");
    let probe: BaseConsumer = config.create()?;
    let mut tpl = TopicPartitionList::new();
    for &(p, _, high) in partitions {
        tpl.add_partition_offset(topic, p, Offset::Offset(high - 1))?;
    }
    probe.assign(&tpl)?;
    let deadline = std::time::Instant::now() + timeout;
    let mut times = HashMap::new();
    while times.len() < partitions.len() {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            break;
        }
        match probe.poll(left.min(Duration::from_millis(200))) {
            Some(Ok(m)) => {
                if let Some(t) = m.timestamp().to_millis() {
                    times.entry(m.partition()).or_insert(t);
                }
            }
            Some(Err(e)) => tracing::warn!(topic, error = %e, "reading the last message for a replay"),
            None => {}
        }
    }
    Ok(times)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::error::RDKafkaErrorCode as Code;

    /// A consumer with a replay context, without a broker (assignment is local).
    fn replaying(pending: &[(i32, i64)]) -> BaseConsumer<ReplayContext> {
        let context = ReplayContext {
            topic: "t".into(),
            pending: Mutex::new(pending.iter().map(|&(p, o)| (p, Offset::Offset(o))).collect()),
        };
        ClientConfig::new()
            .set("bootstrap.servers", "127.0.0.1:9")
            .create_with_context(context)
            .unwrap()
    }

    fn rebalance(
        consumer: &BaseConsumer<ReplayContext>,
        err: RDKafkaRespErr,
        partitions: &[i32],
    ) -> TopicPartitionList {
        let mut tpl = TopicPartitionList::new();
        for &p in partitions {
            tpl.add_partition("t", p);
        }
        consumer.context().rebalance(consumer, err, &mut tpl);
        tpl
    }

    fn offset(tpl: &TopicPartitionList, p: i32) -> Offset {
        tpl.find_partition("t", p).unwrap().offset()
    }

    /// A rebalance during start-up, before a partition's first message is handled, does
    /// not drop its replay: the next assignment applies it again.
    #[test]
    fn a_rebalance_before_a_partition_is_read_keeps_its_replay() {
        use RDKafkaRespErr::{
            RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS as ASSIGN, RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS as REVOKE,
        };
        let consumer = replaying(&[(0, 5), (1, 7)]);
        let first = rebalance(&consumer, ASSIGN, &[0, 1]);
        assert_eq!(
            (offset(&first, 0), offset(&first, 1)),
            (Offset::Offset(5), Offset::Offset(7))
        );
        rebalance(&consumer, REVOKE, &[0, 1]);
        let again = rebalance(&consumer, ASSIGN, &[1]);
        assert_eq!(offset(&again, 1), Offset::Offset(7), "replay applied again");
    }

    /// Once a message of a partition is handled, later assignments go on from the stored
    /// offsets (the replay is not applied twice).
    #[test]
    fn a_partition_read_since_its_replay_goes_on_from_its_stored_offset() {
        use RDKafkaRespErr::{
            RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS as ASSIGN, RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS as REVOKE,
        };
        let consumer = replaying(&[(0, 5), (1, 7)]);
        rebalance(&consumer, ASSIGN, &[0, 1]);
        consumer.context().replayed(0);
        rebalance(&consumer, REVOKE, &[0, 1]);
        let again = rebalance(&consumer, ASSIGN, &[0, 1]);
        assert_eq!(offset(&again, 0), Offset::Invalid, "the committed or stored offset");
        assert_eq!(offset(&again, 1), Offset::Offset(7));
    }

    /// Every answer a broker can give to "the first offset at or after this time".
    #[test]
    fn replay_start_for_every_broker_answer() {
        // Found: start there.
        let found = TimeLookup::of(Ok(()), Offset::Offset(42));
        assert_eq!(found, TimeLookup::Offset(42));
        assert_eq!(replay_start(found, 0, 100), Ok(ReplayStart::At(42)));
        // -1: nothing that recent. An empty partition starts at the end; one with
        // messages is checked against its last message.
        let end = TimeLookup::of(Ok(()), Offset::End);
        assert_eq!(end, TimeLookup::End);
        assert_eq!(replay_start(end, 7, 7), Ok(ReplayStart::End(7)));
        assert_eq!(replay_start(end, 0, 100), Ok(ReplayStart::CheckLast));
        // Last message older than the time: the end is the end (no scan, no offset stored).
        // The end is the high watermark read during the lookup, not a logical end.
        assert_eq!(after_last_message(Some(999), 1000, 100), ReplayStart::End(100));
        // Last message at or after the time while the broker said "end": it cannot
        // search by time (librdkafka's mock cluster), so scan.
        assert_eq!(after_last_message(Some(1000), 1000, 100), ReplayStart::Scan);
        assert_eq!(after_last_message(Some(5000), 1000, 100), ReplayStart::Scan);
        assert_eq!(after_last_message(None, 1000, 100), ReplayStart::Scan);
        // A broker that says it cannot search: scan, unless there is nothing to read.
        for code in [
            Code::UnsupportedForMessageFormat,
            Code::UnsupportedVersion,
            Code::UnsupportedFeature,
        ] {
            let lookup = TimeLookup::of(Err(KafkaError::OffsetFetch(code)), Offset::Invalid);
            assert_eq!(lookup, TimeLookup::Unsupported, "{code:?}");
            assert_eq!(replay_start(lookup, 0, 10), Ok(ReplayStart::Scan));
            assert_eq!(replay_start(lookup, 10, 10), Ok(ReplayStart::End(10)));
        }
        // Any other error is reported, never taken for "cannot search".
        let failed = TimeLookup::of(
            Err(KafkaError::OffsetFetch(Code::NotLeaderForPartition)),
            Offset::Invalid,
        );
        assert_eq!(failed, TimeLookup::Failed(Code::NotLeaderForPartition));
        assert!(replay_start(failed, 0, 10).is_err());
        // An answer that is no offset at all (-1001, a logical offset) is not trusted.
        assert_eq!(TimeLookup::of(Ok(()), Offset::Invalid), TimeLookup::Unsupported);
        assert_eq!(TimeLookup::of(Ok(()), Offset::Beginning), TimeLookup::Unsupported);
    }
}
