//! Kafka, wire-compatible with edx-event-bus-kafka.
//!
//! - this file: the librdkafka client configuration from settings ([`client_config`]) and
//!   librdkafka's log lines sent to `tracing`.
//! - [`producer`]: [`KafkaProducer`]; an event's bytes leave for Kafka in
//!   `producer/send.rs` (CloudEvents headers, framed key and value, handed to librdkafka),
//!   schemas are registered at start-up by the registrar in `producer/registrar.rs`.
//! - [`consumer`]: [`KafkaConsumer`], offsets, replay from a time, dead letters.
//! - [`registry`]: the Confluent Schema Registry client and the framing of keys and values.
//!
//! The producer and the consumer share only what is here, [`registry`] and
//! [`crate::retry`]; neither imports the other.

use rdkafka::config::{ClientConfig, RDKafkaLogLevel};

use crate::settings::Settings;

pub mod consumer;
pub mod producer;
pub mod registry;

pub use consumer::{KafkaConsumer, KafkaConsumerError, KafkaConsumerOptions, KafkaConsumerStats, Replay};
pub use producer::{KafkaProducer, KafkaProducerStats, KafkaSetupError, QueueFullPolicy};
pub use registry::SchemaRegistryClient;

/// Builds a librdkafka configuration from the bus settings, as edx-event-bus-kafka
/// does (bootstrap servers, SASL_SSL + PLAIN when an API key and secret are set,
/// client id = service name), then applies `EVENT_BUS_KAFKA_CONFIG_<NAME>` and
/// `EVENT_BUS_KAFKA_<ROLE>_CONFIG_<NAME>` pass-through properties (`role` is
/// `PRODUCER` or `CONSUMER`). `<NAME>` is the property with `.` written `_`, any case.
pub fn client_config(settings: &Settings, role: &str) -> Result<ClientConfig, String> {
    let bootstrap = settings
        .get("EVENT_BUS_KAFKA_BOOTSTRAP_SERVERS")
        .ok_or("EVENT_BUS_KAFKA_BOOTSTRAP_SERVERS is not set")?;
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", bootstrap);
    if let (Some(key), Some(secret)) = (
        settings.get("EVENT_BUS_KAFKA_API_KEY"),
        settings.get("EVENT_BUS_KAFKA_API_SECRET"),
    ) {
        config
            .set("sasl.mechanism", "PLAIN")
            .set("security.protocol", "SASL_SSL")
            .set("sasl.username", key)
            .set("sasl.password", secret);
    }
    if let Some(service) = settings.service_name() {
        config.set("client.id", service);
    }
    let general = "EVENT_BUS_KAFKA_CONFIG_";
    let specific = format!("EVENT_BUS_KAFKA_{role}_CONFIG_");
    for prefix in [general, specific.as_str()] {
        for (name, value) in settings.iter() {
            if let Some(property) = name.strip_prefix(prefix) {
                if property.is_empty() {
                    continue;
                }
                config.set(property.to_ascii_lowercase().replace('_', "."), value);
            }
        }
    }
    Ok(config)
}

/// Sends librdkafka's log lines to `tracing` (target `librdkafka`).
fn forward_log(level: RDKafkaLogLevel, fac: &str, message: &str) {
    match level {
        RDKafkaLogLevel::Emerg | RDKafkaLogLevel::Alert | RDKafkaLogLevel::Critical | RDKafkaLogLevel::Error => {
            tracing::error!(target: "librdkafka", fac, "{message}")
        }
        RDKafkaLogLevel::Warning => tracing::warn!(target: "librdkafka", fac, "{message}"),
        RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => tracing::info!(target: "librdkafka", fac, "{message}"),
        RDKafkaLogLevel::Debug => tracing::debug!(target: "librdkafka", fac, "{message}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pass_through_properties() {
        let s = Settings::new()
            .with("EVENT_BUS_KAFKA_BOOTSTRAP_SERVERS", "h:9092")
            .with("EVENT_BUS_KAFKA_API_KEY", "k")
            .with("EVENT_BUS_KAFKA_API_SECRET", "s")
            .with("EVENTS_SERVICE_NAME", "cms")
            .with("EVENT_BUS_KAFKA_CONFIG_LINGER_MS", "7")
            .with("EVENT_BUS_KAFKA_CONFIG_compression.type", "lz4")
            .with("EVENT_BUS_KAFKA_PRODUCER_CONFIG_ACKS", "1")
            .with("EVENT_BUS_KAFKA_CONSUMER_CONFIG_FETCH_MIN_BYTES", "9");
        let c = client_config(&s, "PRODUCER").unwrap();
        assert_eq!(c.get("bootstrap.servers"), Some("h:9092"));
        assert_eq!(c.get("security.protocol"), Some("SASL_SSL"));
        assert_eq!(c.get("sasl.mechanism"), Some("PLAIN"));
        assert_eq!(c.get("sasl.username"), Some("k"));
        assert_eq!(c.get("client.id"), Some("cms"));
        assert_eq!(c.get("linger.ms"), Some("7"));
        assert_eq!(c.get("compression.type"), Some("lz4"));
        assert_eq!(c.get("acks"), Some("1"));
        assert_eq!(c.get("fetch.min.bytes"), None);
        assert!(client_config(&Settings::new(), "PRODUCER").is_err());
    }
}
