//! Delivery reports, on librdkafka's polling thread: each event's outcome counted, logged
//! when it failed (event type, topic, event id, never the data) and answered to a waiting
//! `produce_and_confirm`; librdkafka's own log lines and errors sent to `tracing`.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{DeliveryResult, ProducerContext};
use rdkafka::ClientContext;

use super::counting::{Counters, DeliveredAt, Waiters};
use crate::kafka::forward_log;

pub(super) struct DeliveryContext {
    pub(super) counters: Arc<Counters>,
    pub(super) waiters: Arc<Waiters>,
}

impl ClientContext for DeliveryContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        forward_log(level, fac, message);
    }
    fn error(&self, error: KafkaError, reason: &str) {
        tracing::error!(error = %error, reason, "librdkafka error");
    }
}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, number: usize) {
        match result {
            Ok(message) => {
                self.counters.delivered.fetch_add(1, Ordering::AcqRel);
                self.counters.numbers.done(number);
                self.waiters.resolve(
                    number,
                    Ok(DeliveredAt {
                        partition: message.partition(),
                        offset: message.offset(),
                    }),
                );
            }
            Err((error, message)) => {
                self.counters.failed.fetch_add(1, Ordering::AcqRel);
                self.counters.numbers.done(number);
                self.waiters.resolve(number, Err(error.to_string()));
                // What to log is read back from the message's headers: never the data.
                let header = |name: &str| {
                    message
                        .headers()
                        .and_then(|h| h.iter().find(|h| h.key == name))
                        .and_then(|h| h.value)
                        .and_then(|v| std::str::from_utf8(v).ok())
                        .unwrap_or_default()
                };
                tracing::error!(
                    event_type = header("ce_type"),
                    topic = message.topic(),
                    event_id = header("ce_id"),
                    error = %error,
                    "kafka delivery failed"
                );
            }
        }
    }
}
