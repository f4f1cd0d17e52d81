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
//! topic. A receiver failure is retried [`ConsumerOptions::max_retries`](crate::consume::ConsumerOptions::max_retries) times, then
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
//!
//! # Where the code is
//!
//! This file: [`KafkaConsumer`] (set-up, the message loop, retries, dead letters; ~530
//! lines: one state that every step uses). `options.rs`: options, stats, errors.
//! `headers.rs`: headers read into metadata. `replay.rs`: replay offsets and the start
//! of a partition for a time. `close.rs`: closing librdkafka's clients off the runtime's
//! threads, however the consumer goes.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Header, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

mod close;
mod headers;
mod options;
mod replay;

pub use options::{KafkaConsumerError, KafkaConsumerOptions, KafkaConsumerStats, Replay};

use self::close::CloseOffRuntime;
use self::headers::{bounded_reason, header_str, raw_metadata};
use self::replay::{after_last_message, last_message_times, replay_start, ReplayContext, ReplayStart, TimeLookup};
use super::client_config;
use super::registry::{parse_frame, RegistryError, SchemaRegistryClient};
use crate::config::full_topic;
use crate::consume::{parse_metadata, DispatchError, ErrorBudget};
use crate::event::registry;
use crate::retry::Backoff;
use crate::settings::Settings;

/// A Kafka consumer of Open edX events on one topic.
pub struct KafkaConsumer {
    consumer: CloseOffRuntime<Arc<StreamConsumer<ReplayContext>>>,
    dead_letters: CloseOffRuntime<FutureProducer>,
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
            consumer: CloseOffRuntime::new(Arc::new(consumer)),
            dead_letters: CloseOffRuntime::new(dead_letters),
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
                let consumer = Arc::clone(&self.consumer);
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
            tracing::debug!(
                topic = %self.topic,
                partition = message.partition(),
                offset = message.offset(),
                "message handled; its offset stored"
            );
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
        let clients = (consumer.take(), dead_letters.take());
        if fatal {
            // Handed over through a slot, so that a failed spawn (which drops its closure
            // here) leaves the clients to be leaked, not closed on this runtime thread.
            let slot = Arc::new(Mutex::new(Some(clients)));
            let theirs = Arc::clone(&slot);
            let spawned = std::thread::Builder::new()
                .name("kafka-consumer-close".into())
                .spawn(move || drop(theirs.lock().unwrap_or_else(|e| e.into_inner()).take()));
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start a thread to close the failed kafka consumer; leaking it");
                std::mem::forget(slot.lock().unwrap_or_else(|e| e.into_inner()).take());
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
        let consumer = Arc::clone(&self.consumer);
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
        Ok(crate::consume::send_decoded(ops, event, metadata).await?)
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
