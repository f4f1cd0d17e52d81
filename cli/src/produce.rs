//! `produce`: one event to the configured event bus, with fresh metadata, then the
//! position it was delivered at.

use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use openedx_events::config::{check_topic_name, full_topic};
use openedx_events::produce::{KeyFieldInfo, Producer, ProducerRecord};
use openedx_events::settings::ProducerKind;
use openedx_events::{EventMetadata, Settings};
use serde_json::{json, Value};

use crate::error::{find_event, CliError};
use crate::input::load_event_data;
use crate::output::{print_json_line, write_stdout};

/// Arguments of `produce`.
#[derive(Debug, Args)]
pub struct ProduceArgs {
    /// The event type.
    #[arg(long, value_name = "TYPE")]
    event_type: String,
    /// The topic, without EVENT_BUS_TOPIC_PREFIX (applied as the producers apply it).
    #[arg(long, value_name = "TOPIC")]
    topic: String,
    /// Period-delimited path of the key field in the data (the Kafka message key), e.g.
    /// `xblock_info.usage_key`.
    #[arg(long, value_name = "PATH")]
    key_field: Option<String>,
    /// The event data as JSON (the Avro datum form: keys and times as strings, bytes as hex),
    /// or @FILE (@- for standard input).
    #[arg(long, value_name = "JSON|@FILE")]
    data: String,
    /// Seconds allowed to connect and deliver.
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    timeout: u64,
    /// Print the position as JSON.
    #[arg(long)]
    json: bool,
}

/// Where an event was delivered.
#[cfg_attr(not(all(feature = "redis", feature = "kafka")), allow(dead_code))]
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Position {
    /// Index in the in-memory bus of this process.
    Memory(usize),
    /// A Redis stream entry id.
    Redis(String),
    /// A Kafka partition and offset.
    Kafka { partition: i32, offset: i64 },
}

pub(crate) async fn run(args: ProduceArgs) -> Result<(), CliError> {
    let event = find_event(&args.event_type)?;
    let ops = event.ops();
    check_topic_name(&args.topic).map_err(|reason| {
        CliError::bad_input(format!("--topic {:?} is not a valid topic name: {reason}", args.topic))
    })?;
    let data = load_event_data(event, &args.data)?;
    let (key, key_field) = match &args.key_field {
        Some(path) => {
            let resolved = ops
                .resolve_key(path)
                .map_err(|e| CliError::bad_input(format!("--key-field {path:?}: {e}")))?;
            let key = (resolved.accessor)(data.as_any());
            let info = KeyFieldInfo {
                name: resolved.field_name,
                avro_type: resolved.avro_type,
            };
            (key, Some(info))
        }
        None => (None, None),
    };
    let settings = Settings::try_from_env().map_err(|e| CliError::bad_input(e.to_string()))?;
    let kind = settings
        .producer_kind()
        .map_err(|e| CliError::bad_input(e.to_string()))?;
    if let Some(service) = settings.service_name() {
        openedx_events::metadata::set_service_name(service);
    }
    let metadata = EventMetadata::generate(event.event_type, ops.minor_version());
    let topic = full_topic(settings.topic_prefix(), &args.topic);
    let record = ProducerRecord {
        topic: Arc::from(topic.as_str()),
        key,
        key_field,
        metadata: metadata.clone(),
        data,
    };
    let timeout = Duration::from_secs(args.timeout.max(1));
    let position = match kind {
        ProducerKind::Memory => produce_memory(record, timeout).await?,
        ProducerKind::Redis => produce_redis(&settings, record, timeout).await?,
        ProducerKind::Kafka => produce_kafka(&settings, record, timeout).await?,
        ProducerKind::None => {
            return Err(CliError::bad_input(
                "EVENT_BUS_PRODUCER=none drops every event; set it to redis, kafka or memory",
            ))
        }
    };
    let mut out = json!({
        "event_type": event.event_type,
        "event_id": metadata.id.to_string(),
        "topic": topic,
    });
    let text = match &position {
        Position::Memory(i) => {
            out["backend"] = "memory".into();
            out["position"] = (*i).into();
            format!("produced {} event {} to memory topic {topic} at position {i} (the in-memory bus lives only in this process)", event.event_type, metadata.id)
        }
        Position::Redis(id) => {
            out["backend"] = "redis".into();
            out["stream_id"] = Value::String(id.clone());
            format!(
                "produced {} event {} to redis stream {topic} at id {id}",
                event.event_type, metadata.id
            )
        }
        Position::Kafka { partition, offset } => {
            out["backend"] = "kafka".into();
            out["partition"] = (*partition).into();
            out["offset"] = (*offset).into();
            format!(
                "produced {} event {} to kafka topic {topic} at partition {partition} offset {offset}",
                event.event_type, metadata.id
            )
        }
    };
    if args.json {
        print_json_line(&out)
    } else {
        write_stdout(&format!("{text}\n"))
    }
}

async fn produce_memory(record: ProducerRecord, timeout: Duration) -> Result<Position, CliError> {
    let bus = openedx_events::memory::MemoryProducer::default();
    let topic = record.topic.clone();
    bus.produce(record).map_err(|e| CliError::backend(e.to_string()))?;
    bus.flush(timeout).await.map_err(|e| CliError::backend(e.to_string()))?;
    Ok(Position::Memory(bus.len(&topic).saturating_sub(1)))
}

#[cfg(feature = "redis")]
async fn produce_redis(settings: &Settings, record: ProducerRecord, timeout: Duration) -> Result<Position, CliError> {
    use openedx_events::redis::{xadd_command, RedisProducerConfig};
    let config = RedisProducerConfig::from_settings(settings).map_err(|e| CliError::bad_input(e.to_string()))?;
    let client = redis_client(&config.url, config.tls_ca_file.as_deref())?;
    // The producer's own command (fields, order, encodings, MAXLEN), sent on one
    // connection so that Redis's reply gives the entry id.
    let cmd = xadd_command(&record, config.stream_max_len).map_err(|e| CliError::bad_input(e.to_string()))?;
    let redacted = redact(&config.url);
    let mut conn = tokio::time::timeout(timeout, client.get_multiplexed_async_connection())
        .await
        .map_err(|_| CliError::backend(format!("redis {redacted}: no connection after {timeout:?}")))?
        .map_err(|e| CliError::backend(format!("redis {redacted}: {e}")))?;
    let id: String = tokio::time::timeout(timeout, cmd.query_async(&mut conn))
        .await
        .map_err(|_| CliError::backend(format!("redis {redacted}: no reply to XADD after {timeout:?}")))?
        .map_err(|e| CliError::backend(format!("redis {redacted}: XADD {}: {e}", record.topic)))?;
    Ok(Position::Redis(id))
}

/// A Redis client for a URL, trusting the authorities of `ca_file` for `rediss://` when given.
#[cfg(feature = "redis")]
fn redis_client(url: &str, ca_file: Option<&std::path::Path>) -> Result<redis::Client, CliError> {
    if url.starts_with("rediss://") {
        // Several providers may be compiled in; pick one (a no-op when one is already chosen).
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
    let client = match ca_file {
        None => redis::Client::open(url),
        Some(path) => {
            let pem =
                std::fs::read(path).map_err(|e| CliError::bad_input(format!("cannot read {}: {e}", path.display())))?;
            redis::Client::build_with_tls(
                url,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem),
                },
            )
        }
    };
    client.map_err(|e| CliError::bad_input(format!("invalid Redis URL {}: {e}", redact(url))))
}

#[cfg(not(feature = "redis"))]
async fn produce_redis(_: &Settings, _: ProducerRecord, _: Duration) -> Result<Position, CliError> {
    Err(CliError::bad_input("this tool was built without the redis feature"))
}

/// A URL with its user information hidden.
#[cfg(feature = "redis")]
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s + 3 => format!("{}***{}", &url[..s + 3], &url[at..]),
        _ => url.to_owned(),
    }
}

#[cfg(feature = "kafka")]
async fn produce_kafka(settings: &Settings, record: ProducerRecord, timeout: Duration) -> Result<Position, CliError> {
    use openedx_events::kafka::{KafkaProducer, KafkaSetupError};
    let producer = KafkaProducer::from_settings(settings).map_err(|e| match e {
        KafkaSetupError::Settings(m) => CliError::bad_input(m),
        other => CliError::backend(other.to_string()),
    })?;
    let topic = record.topic.to_string();
    // The delivery report names the partition and offset.
    let confirmed = tokio::time::timeout(timeout, producer.produce_and_confirm(record)).await;
    let _ = producer.shutdown(Duration::from_secs(1)).await;
    match confirmed {
        Ok(Ok(at)) => Ok(Position::Kafka {
            partition: at.partition,
            offset: at.offset,
        }),
        Ok(Err(e)) => Err(CliError::backend(format!("kafka: {topic}: {e}"))),
        Err(_) => Err(CliError::backend(format!(
            "kafka: the event was not delivered to {topic} within {timeout:?}"
        ))),
    }
}

#[cfg(not(feature = "kafka"))]
async fn produce_kafka(_: &Settings, _: ProducerRecord, _: Duration) -> Result<Position, CliError> {
    Err(CliError::bad_input("this tool was built without the kafka feature"))
}
