//! What every consumer shares: reading received metadata, decoding and re-sending
//! an event through its signal (marked as from the bus), and deciding what happens
//! to a message that failed.
//!
//! A message is acknowledged only after its receivers succeed. A receiver failure
//! is retried (up to [`ConsumerOptions::max_retries`]), then dead-lettered; a message
//! that cannot be decoded, or has an unknown type, is dead-lettered at once.

use std::time::Duration;

use crate::event::registry;
use crate::metadata::{EventMetadata, SourceLib};
use crate::signal::{Outcome, SendMode};

/// Options shared by the Redis and Kafka consumers.
#[derive(Debug, Clone)]
pub struct ConsumerOptions {
    /// Deliveries of one message after the first one failed, before it is dead-lettered.
    pub max_retries: u32,
    /// How long a failed message waits before it is tried again.
    pub retry_delay: Duration,
    /// Consecutive failed messages after which the consumer stops with an error
    /// (0: never stop).
    pub max_consecutive_errors: u32,
    /// Messages read per batch.
    pub batch_size: usize,
    /// Where failed messages go; `None` derives `{topic}-dead-letter`.
    pub dead_letter_topic: Option<String>,
}

impl Default for ConsumerOptions {
    fn default() -> Self {
        Self {
            max_retries: 3,
            retry_delay: Duration::from_secs(5),
            max_consecutive_errors: 100,
            batch_size: 100,
            dead_letter_topic: None,
        }
    }
}

impl ConsumerOptions {
    /// The dead-letter destination for a full topic.
    pub fn dead_letter_for(&self, full_topic: &str) -> String {
        self.dead_letter_topic
            .clone()
            .unwrap_or_else(|| format!("{full_topic}-dead-letter"))
    }
}

/// The metadata of a received message, as strings off the wire.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawMetadata {
    /// `type` / `ce_type`.
    pub event_type: Option<String>,
    /// `id` / `ce_id`.
    pub id: Option<String>,
    /// `source` / `ce_source`.
    pub source: Option<String>,
    /// `time` / `ce_time`.
    pub time: Option<String>,
    /// `minorversion` / `ce_minorversion`.
    pub minorversion: Option<String>,
    /// `sourcehost`.
    pub sourcehost: Option<String>,
    /// `sourcelib`.
    pub sourcelib: Option<String>,
}

/// Why a message was not handled.
#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    /// No event of this type is registered here: dead-lettered at once.
    #[error("unknown event type {0:?}")]
    UnknownEventType(String),
    /// Metadata missing or malformed: dead-lettered at once.
    #[error("bad metadata: {0}")]
    BadMetadata(String),
    /// The data is not a datum of the event's schema: dead-lettered at once.
    #[error("cannot decode event data: {0}")]
    Undecodable(String),
    /// One or more receivers failed or panicked: retried.
    #[error("receivers failed: {}", .0.join("; "))]
    ReceiversFailed(Vec<String>),
}

impl DispatchError {
    /// Whether retrying cannot help (the message goes to the dead letters at once).
    pub fn is_permanent(&self) -> bool {
        !matches!(self, DispatchError::ReceiversFailed(_))
    }
}

/// Turns received metadata strings into [`EventMetadata`] for a known event type.
pub fn parse_metadata(raw: &RawMetadata) -> Result<EventMetadata, DispatchError> {
    let event_type = raw
        .event_type
        .as_deref()
        .ok_or_else(|| DispatchError::BadMetadata("no event type".into()))?;
    let descriptor = registry::find(event_type)
        .ok_or_else(|| DispatchError::UnknownEventType(event_type.chars().take(200).collect()))?;
    let need = |v: &Option<String>, name: &str| {
        v.clone()
            .ok_or_else(|| DispatchError::BadMetadata(format!("missing `{name}`")))
    };
    let id = need(&raw.id, "id")?;
    let id = uuid::Uuid::parse_str(&id).map_err(|e| DispatchError::BadMetadata(format!("id {id:?}: {e}")))?;
    let time = need(&raw.time, "time")?;
    let time = crate::time::parse(&time).map_err(|e| DispatchError::BadMetadata(format!("time: {e}")))?;
    let minorversion = match &raw.minorversion {
        Some(v) => v
            .trim()
            .parse::<u32>()
            .map_err(|e| DispatchError::BadMetadata(format!("minorversion {v:?}: {e}")))?,
        None => 0,
    };
    let sourcelib = match &raw.sourcelib {
        Some(v) => v
            .parse::<SourceLib>()
            .map_err(|e| DispatchError::BadMetadata(e.to_string()))?,
        None => SourceLib::from(&[][..]),
    };
    Ok(EventMetadata {
        event_type: descriptor.event_type,
        id,
        minorversion,
        source: raw.source.clone().unwrap_or_default().into(),
        sourcehost: raw.sourcehost.clone().unwrap_or_default().into(),
        time,
        sourcelib,
    })
}

/// Decodes a message and sends it to the event's receivers, awaiting async ones.
/// Succeeds only when every receiver succeeded.
pub async fn dispatch(metadata: EventMetadata, data: &[u8]) -> Result<(), DispatchError> {
    let descriptor = registry::find(metadata.event_type)
        .ok_or_else(|| DispatchError::UnknownEventType(metadata.event_type.to_owned()))?;
    let ops = descriptor.ops();
    let event = ops
        .decode_avro(data)
        .map_err(|e| DispatchError::Undecodable(e.to_string()))?;
    send_decoded(ops, event, metadata).await
}

/// Sends decoded data to the event's receivers with the received metadata (marked as
/// from the bus), awaiting async ones. Succeeds only when every receiver succeeded.
pub async fn send_decoded(
    ops: &'static dyn crate::event::EventOps,
    event: std::sync::Arc<dyn crate::event::AnyEvent>,
    metadata: EventMetadata,
) -> Result<(), DispatchError> {
    let responses = ops
        .send_from_bus_async(event, metadata, SendMode::Robust)
        .await
        .map_err(|e| DispatchError::ReceiversFailed(vec![e.to_string()]))?;
    let failures: Vec<String> = responses
        .into_iter()
        .filter_map(|r| match r.outcome {
            Outcome::Failed(e) => Some(format!("{}: {e}", r.receiver_name)),
            Outcome::Panicked(p) => Some(format!("{} panicked: {p}", r.receiver_name)),
            Outcome::Ok | Outcome::Spawned => None,
        })
        .collect();
    if failures.is_empty() {
        Ok(())
    } else {
        Err(DispatchError::ReceiversFailed(failures))
    }
}

/// Counts consecutive failed messages and says when to stop.
#[derive(Debug, Clone)]
pub struct ErrorBudget {
    limit: u32,
    consecutive: u32,
}

/// The consumer stopped after too many consecutive failures.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("consumer stopped after {count} consecutive failed messages (limit {limit}); last error: {last}")]
pub struct TooManyErrors {
    /// How many failed in a row.
    pub count: u32,
    /// The configured limit.
    pub limit: u32,
    /// The last error.
    pub last: String,
}

impl ErrorBudget {
    /// A budget of `limit` consecutive failures (0: unlimited).
    pub fn new(limit: u32) -> Self {
        Self { limit, consecutive: 0 }
    }

    /// A message succeeded.
    pub fn success(&mut self) {
        self.consecutive = 0;
    }

    /// A message failed; `Err` when the limit is reached.
    pub fn failure(&mut self, error: &str) -> Result<(), TooManyErrors> {
        self.consecutive += 1;
        if self.limit > 0 && self.consecutive >= self.limit {
            return Err(TooManyErrors {
                count: self.consecutive,
                limit: self.limit,
                last: error.to_owned(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_stops_at_limit() {
        let mut b = ErrorBudget::new(2);
        b.failure("a").unwrap();
        b.success();
        b.failure("b").unwrap();
        assert_eq!(b.failure("c").unwrap_err().count, 2);
        let mut unlimited = ErrorBudget::new(0);
        for _ in 0..1000 {
            unlimited.failure("x").unwrap();
        }
    }

    #[test]
    fn a_metadata_time_python_cannot_read_is_bad_metadata_naming_the_field() {
        for time in [
            "2016-12-31T23:59:60+00:00",
            "0000-01-01T00:00:00+00:00",
            "9999-12-31T23:00:00-05:00",
        ] {
            let raw = RawMetadata {
                event_type: Some("org.openedx.learning.course.enrollment.created.v1".into()),
                id: Some(uuid::Uuid::new_v4().to_string()),
                time: Some(time.into()),
                ..Default::default()
            };
            match parse_metadata(&raw) {
                Err(e @ DispatchError::BadMetadata(_)) => {
                    assert!(e.is_permanent());
                    assert!(e.to_string().starts_with("bad metadata: time: "), "{e}");
                }
                other => panic!("{time}: {other:?}"),
            }
        }
    }

    #[test]
    fn unknown_type_is_permanent() {
        let raw = RawMetadata {
            event_type: Some("org.openedx.nothing.here.v1".into()),
            ..Default::default()
        };
        let err = parse_metadata(&raw).unwrap_err();
        assert!(err.is_permanent());
        assert!(matches!(err, DispatchError::UnknownEventType(_)));
        assert!(!DispatchError::ReceiversFailed(vec![]).is_permanent());
    }
}
