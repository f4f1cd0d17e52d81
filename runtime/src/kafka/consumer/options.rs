//! How a Kafka consumer runs ([`KafkaConsumerOptions`], [`Replay`]), what it counts
//! ([`KafkaConsumerStats`]) and why it stops ([`KafkaConsumerError`]).

use rdkafka::error::KafkaError;

use crate::consume::{ConsumerOptions, TooManyErrors};
use crate::kafka::registry::RegistryError;

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
