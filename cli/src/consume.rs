//! `consume`: read a topic in a consumer group and print each event as one JSON line
//! (metadata and decoded data), as the consumers of this crate receive them.
//!
//! The consumers re-send every event through its signal; the tool connects one printing
//! receiver to the signal of every event type it knows. An event is acknowledged once it
//! is printed. Progress goes to stderr.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use openedx_events::config::{check_topic_name, full_topic};
use openedx_events::event::{AnyEvent, ErasedReceiver};
use openedx_events::settings::ProducerKind;
use openedx_events::{EventMetadata, Settings};
use serde_json::{json, Value};
use tokio::sync::Notify;

use crate::error::CliError;
use crate::input::data_json;

/// Arguments of `consume`.
#[derive(Debug, Args)]
pub struct ConsumeArgs {
    /// The topic, without EVENT_BUS_TOPIC_PREFIX (applied as the producers apply it).
    #[arg(long, value_name = "TOPIC")]
    topic: String,
    /// The consumer group. A group that exists goes on from its position; a new one
    /// starts at the end (only new events) unless a --from-* option says otherwise.
    #[arg(long, value_name = "GROUP")]
    group: String,
    /// Start from the oldest event the topic holds (moves an existing group).
    #[arg(long, conflicts_with_all = ["from_time", "from_id"])]
    from_beginning: bool,
    /// Start from the first event at or after this time (ISO 8601 with an offset, e.g.
    /// 2026-11-27T13:20:05Z).
    #[arg(long, value_name = "ISO", conflicts_with = "from_id")]
    from_time: Option<String>,
    /// Start from this message, included: a Redis stream id (`1764250000000-0`), or Kafka
    /// `PARTITION:OFFSET` pairs separated by commas (`0:42,1:17`).
    #[arg(long, value_name = "ID")]
    from_id: Option<String>,
    /// Stop after this many messages.
    #[arg(long, value_name = "N")]
    max: Option<u64>,
    /// Stop after this many seconds.
    #[arg(long, value_name = "SECONDS")]
    timeout: Option<u64>,
    /// Consecutive failures (messages or reconnections) after which the tool gives up.
    #[arg(long, value_name = "N", default_value_t = 10)]
    max_errors: u32,
    /// No progress lines on stderr.
    #[arg(long)]
    quiet: bool,
    /// Milliseconds between progress lines on stderr.
    #[arg(long, value_name = "MS", default_value_t = 5000, hide = true)]
    progress_every_ms: u64,
}

/// Where to start.
#[derive(Debug, Clone, PartialEq, Eq)]
enum From {
    /// The group's own position (a new group: the end).
    Group,
    Beginning,
    TimeMs(i64),
    Id(String),
}

pub(crate) async fn run(args: ConsumeArgs) -> Result<(), CliError> {
    let settings = Settings::try_from_env().map_err(|e| CliError::bad_input(e.to_string()))?;
    let kind = settings
        .producer_kind()
        .map_err(|e| CliError::bad_input(e.to_string()))?;
    check_topic_name(&args.topic).map_err(|reason| {
        CliError::bad_input(format!("--topic {:?} is not a valid topic name: {reason}", args.topic))
    })?;
    if args.group.trim().is_empty() {
        return Err(CliError::bad_input("--group must not be empty"));
    }
    let from = if args.from_beginning {
        From::Beginning
    } else if let Some(t) = &args.from_time {
        let time =
            openedx_events::time::parse(t).map_err(|e| CliError::bad_input(format!("--from-time {t:?}: {e}")))?;
        // A time before 1970 is negative: both backends take it as "from the oldest
        // event" (the Kafka consumer's `Replay::FromTimestampMs`, `before_time` for Redis).
        From::TimeMs(time.timestamp_millis())
    } else if let Some(id) = &args.from_id {
        From::Id(id.clone())
    } else {
        From::Group
    };
    let full = full_topic(settings.topic_prefix(), &args.topic);
    let printer = Printer::new(full.clone());
    printer.connect_all();
    let shutdown = {
        let stop = printer.stop.clone();
        let timeout = args.timeout;
        async move {
            let deadline = async {
                match timeout {
                    Some(s) => tokio::time::sleep(Duration::from_secs(s)).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = stop.notified() => {}
                _ = deadline => {}
            }
        }
    };
    let progress = (!args.quiet).then(|| printer.spawn_progress(Duration::from_millis(args.progress_every_ms.max(10))));
    let started = Instant::now();
    let result = match kind {
        ProducerKind::Redis => consume_redis(&settings, &full, &args, from, shutdown).await,
        ProducerKind::Kafka => consume_kafka(&settings, &args, from, shutdown).await,
        ProducerKind::Memory | ProducerKind::None => Err(CliError::bad_input(
            "consume reads Redis or Kafka: set EVENT_BUS_PRODUCER=redis or kafka \
             (the in-memory bus lives inside one process; there is nothing to read from another)",
        )),
    };
    if let Some(p) = progress {
        p.abort();
    }
    if !args.quiet {
        eprintln!(
            "consumed {} event(s) from {full} in {:.1}s",
            printer.count.load(Ordering::Relaxed),
            started.elapsed().as_secs_f64()
        );
    }
    result?;
    if printer.write_failed.load(Ordering::Relaxed) {
        return Err(CliError::problems("cannot write to stdout"));
    }
    Ok(())
}

/// Prints every received event as one JSON line.
struct Printer {
    topic: Arc<str>,
    count: Arc<AtomicU64>,
    stop: Arc<Notify>,
    write_failed: Arc<AtomicBool>,
}

impl Printer {
    fn new(topic: String) -> Self {
        Self {
            topic: topic.into(),
            count: Arc::default(),
            stop: Arc::default(),
            write_failed: Arc::default(),
        }
    }

    /// Connects the printing receiver to every event type's signal.
    fn connect_all(&self) {
        let topic = self.topic.clone();
        let count = self.count.clone();
        let stop = self.stop.clone();
        let write_failed = self.write_failed.clone();
        let receiver: ErasedReceiver = Arc::new(move |metadata: &EventMetadata, data: &dyn AnyEvent, _| {
            let line = json!({
                "topic": &*topic,
                "metadata": metadata_json(metadata),
                "data": data_json(data),
            });
            let mut text = line.to_string();
            text.push('\n');
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
                Ok(()) => {
                    count.fetch_add(1, Ordering::Relaxed);
                    Ok(())
                }
                Err(e) => {
                    // Stop, leaving the message unacknowledged: it was not delivered.
                    if e.kind() != std::io::ErrorKind::BrokenPipe {
                        write_failed.store(true, Ordering::Relaxed);
                    }
                    stop.notify_one();
                    Err(Box::new(e) as openedx_events::signal::BoxError)
                }
            }
        });
        for event in openedx_events::registry::events() {
            event.ops().connect_erased(receiver.clone());
        }
    }

    fn spawn_progress(&self, every: Duration) -> tokio::task::JoinHandle<()> {
        let count = self.count.clone();
        let topic = self.topic.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let mut last = 0;
            loop {
                tokio::time::sleep(every).await;
                let n = count.load(Ordering::Relaxed);
                if n != last {
                    let rate = n as f64 / started.elapsed().as_secs_f64().max(0.001);
                    eprintln!("... {n} event(s) from {topic} so far ({rate:.0}/s)");
                    last = n;
                }
            }
        })
    }
}

/// The metadata as openedx-events' `EventsMetadata.to_json_data()` writes it.
fn metadata_json(m: &EventMetadata) -> Value {
    json!({
        "event_type": m.event_type,
        "id": m.id.to_string(),
        "minorversion": m.minorversion,
        "source": &*m.source,
        "sourcehost": &*m.sourcehost,
        "time": m.time_string(),
        "sourcelib": m.sourcelib.parts(),
    })
}

#[cfg(feature = "redis")]
async fn consume_redis<S>(
    settings: &Settings,
    full: &str,
    args: &ConsumeArgs,
    from: From,
    shutdown: S,
) -> Result<(), CliError>
where
    S: std::future::Future<Output = ()> + Send + 'static,
{
    use openedx_events::redis::{
        ConsumeError, RedisConsumer, RedisConsumerOptions, RedisProducerConfig, StartPosition,
    };
    let config = RedisProducerConfig::from_settings(settings).map_err(|e| CliError::bad_input(e.to_string()))?;
    let position = match from {
        From::Group => None,
        From::Beginning => Some(StartPosition::Beginning),
        From::TimeMs(ms) => Some(before_time(ms)),
        From::Id(id) => Some(before_id(&id)?),
    };
    let mut options = RedisConsumerOptions {
        start: position.clone().unwrap_or(StartPosition::End),
        reset_to: position,
        max_count: args.max,
        reconnect_max_delay: Duration::from_secs(1),
        tls_ca_file: config.tls_ca_file.clone(),
        ..RedisConsumerOptions::default()
    };
    options.common.max_consecutive_errors = args.max_errors;
    let host = hostname::get()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_default();
    let name = format!("openedx-events-cli-{host}-{}", std::process::id());
    let consumer = RedisConsumer::new(&config.url, full, &args.group, name, options).map_err(|e| match e {
        ConsumeError::Config(e) => CliError::bad_input(e.to_string()),
        other => CliError::backend(other.to_string()),
    })?;
    match consumer.run(shutdown).await {
        Ok(_) => Ok(()),
        Err(ConsumeError::Config(e)) => Err(CliError::bad_input(e.to_string())),
        Err(e) => Err(CliError::backend(format!("redis: {e}"))),
    }
}

#[cfg(not(feature = "redis"))]
async fn consume_redis<S>(_: &Settings, _: &str, _: &ConsumeArgs, _: From, _: S) -> Result<(), CliError> {
    Err(CliError::bad_input("this tool was built without the redis feature"))
}

/// The Redis position just before the first entry at or after `ms` (entry ids are
/// `milliseconds-sequence`; the group reads what comes after its position).
#[cfg(feature = "redis")]
fn before_time(ms: i64) -> openedx_events::redis::StartPosition {
    use openedx_events::redis::StartPosition;
    if ms <= 0 {
        StartPosition::Beginning
    } else {
        StartPosition::After(format!("{}-{}", ms - 1, u64::MAX))
    }
}

/// The Redis position just before entry `id` (`ms-seq`, or `ms` for `ms-0`), so that `id`
/// is the first entry read.
#[cfg(feature = "redis")]
fn before_id(id: &str) -> Result<openedx_events::redis::StartPosition, CliError> {
    use openedx_events::redis::StartPosition;
    let bad = || {
        CliError::bad_input(format!(
            "--from-id {id:?}: a Redis stream id is MILLISECONDS-SEQUENCE, e.g. 1764250000000-0"
        ))
    };
    let (ms, seq) = match id.trim().split_once('-') {
        Some((ms, seq)) => (
            ms.parse::<u64>().map_err(|_| bad())?,
            seq.parse::<u64>().map_err(|_| bad())?,
        ),
        None => (id.trim().parse::<u64>().map_err(|_| bad())?, 0),
    };
    Ok(match (ms, seq) {
        (0, 0) => StartPosition::Beginning,
        (ms, 0) => StartPosition::After(format!("{}-{}", ms - 1, u64::MAX)),
        (ms, seq) => StartPosition::After(format!("{ms}-{}", seq - 1)),
    })
}

#[cfg(feature = "kafka")]
async fn consume_kafka<S>(settings: &Settings, args: &ConsumeArgs, from: From, shutdown: S) -> Result<(), CliError>
where
    S: std::future::Future<Output = ()> + Send + 'static,
{
    use openedx_events::kafka::{KafkaConsumer, KafkaConsumerError, KafkaConsumerOptions, Replay};
    let mut options = KafkaConsumerOptions {
        max_messages: args.max,
        offset_reset: "latest".into(),
        ..KafkaConsumerOptions::default()
    };
    options.common.max_consecutive_errors = args.max_errors;
    options.replay = match from {
        From::Group => None,
        // The first message at or after the epoch: the oldest one.
        From::Beginning => Some(Replay::FromTimestampMs(0)),
        From::TimeMs(ms) => Some(Replay::FromTimestampMs(ms)),
        From::Id(id) => Some(Replay::FromOffsets(kafka_offsets(&id)?)),
    };
    let consumer = KafkaConsumer::new(settings, &args.topic, &args.group, options).map_err(|e| match e {
        KafkaConsumerError::Settings(m) => CliError::bad_input(m),
        other => CliError::backend(other.to_string()),
    })?;
    match consumer.run(shutdown).await {
        Ok(_) => Ok(()),
        Err(KafkaConsumerError::Settings(m)) => Err(CliError::bad_input(m)),
        Err(e) => Err(CliError::backend(e.to_string())),
    }
}

#[cfg(not(feature = "kafka"))]
async fn consume_kafka<S>(_: &Settings, _: &ConsumeArgs, _: From, _: S) -> Result<(), CliError> {
    Err(CliError::bad_input("this tool was built without the kafka feature"))
}

/// `PARTITION:OFFSET[,PARTITION:OFFSET...]`.
#[cfg(feature = "kafka")]
fn kafka_offsets(text: &str) -> Result<Vec<(i32, i64)>, CliError> {
    text.split(',')
        .map(|pair| {
            let parsed = pair.trim().split_once(':').and_then(|(p, o)| {
                let p = p.trim().parse::<i32>().ok().filter(|p| *p >= 0)?;
                let o = o.trim().parse::<i64>().ok().filter(|o| *o >= 0)?;
                Some((p, o))
            });
            parsed.ok_or_else(|| {
                CliError::bad_input(format!(
                    "--from-id {text:?}: a Kafka position is PARTITION:OFFSET, e.g. 0:42 (several: 0:42,1:17)"
                ))
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(feature = "redis")]
    #[test]
    fn redis_positions_include_the_given_entry() {
        use openedx_events::redis::StartPosition;
        assert_eq!(before_id("5-3").unwrap(), StartPosition::After("5-2".into()));
        assert_eq!(
            before_id("5-0").unwrap(),
            StartPosition::After(format!("4-{}", u64::MAX))
        );
        assert_eq!(before_id("5").unwrap(), StartPosition::After(format!("4-{}", u64::MAX)));
        assert_eq!(before_id("0-0").unwrap(), StartPosition::Beginning);
        assert!(before_id("x-1").is_err());
        assert!(before_id("1-").is_err());
        assert_eq!(before_time(1000), StartPosition::After(format!("999-{}", u64::MAX)));
        assert_eq!(before_time(0), StartPosition::Beginning);
    }

    #[cfg(feature = "kafka")]
    #[test]
    fn kafka_positions() {
        assert_eq!(kafka_offsets("0:42, 1:17").unwrap(), vec![(0, 42), (1, 17)]);
        assert!(kafka_offsets("42").is_err());
        assert!(kafka_offsets("0:-1").is_err());
    }
}
