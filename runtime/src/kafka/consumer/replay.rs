//! Replay: the offsets a consumer starts from instead of the group's committed ones
//! (kept across a rebalance until each partition is read), and the start of a partition
//! for a time, from the broker's answer.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};

use crate::kafka::forward_log;

/// Applies replay offsets when partitions are assigned.
///
/// A partition's replay offset is kept until a message of the partition is handled
/// (its offset stored): a rebalance during start-up that takes the partition away before
/// then and gives it back applies the replay again, instead of dropping it for the
/// committed offset. (A partition given to another member of the group is read from the
/// committed offset there: replay is this consumer's.)
pub(super) struct ReplayContext {
    pub(super) topic: String,
    pub(super) pending: Mutex<HashMap<i32, Offset>>,
}

impl ReplayContext {
    /// A message of `partition` was handled: its replay is under way, and a later
    /// assignment goes on from the stored offsets.
    pub(super) fn replayed(&self, partition: i32) {
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
                tracing::info!(topic = %self.topic, partitions = ?partitions, "partitions assigned");
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
                let partitions: Vec<i32> = tpl
                    .elements_for_topic(&self.topic)
                    .iter()
                    .map(|e| e.partition())
                    .collect();
                tracing::info!(topic = %self.topic, partitions = ?partitions, "partitions revoked");
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

/// A broker's answer, for one partition, to "the first offset at or after this time".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TimeLookup {
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
    pub(super) fn of(error: Result<(), KafkaError>, offset: Offset) -> Self {
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
pub(super) enum ReplayStart {
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
pub(super) fn replay_start(
    lookup: TimeLookup,
    low: i64,
    high: i64,
) -> Result<ReplayStart, rdkafka::error::RDKafkaErrorCode> {
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
pub(super) fn after_last_message(last_time: Option<i64>, ts: i64, high: i64) -> ReplayStart {
    match last_time {
        Some(t) if t < ts => ReplayStart::End(high),
        _ => ReplayStart::Scan,
    }
}

/// The timestamps of the last message of these partitions (partition, low, high), read
/// with a consumer outside any group; a partition whose last message does not come in
/// `timeout` (a transaction marker, say) is left out.
pub(super) fn last_message_times(
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
