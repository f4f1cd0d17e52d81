//! Kafka throughput, side by side in one run on the same broker and schema registry:
//! 1. our producer: `send_event` of the catalog's XBlockPublished through the generic
//!    handler to the Kafka producer, until every event is delivered (flush confirmed);
//! 2. raw rdkafka producing the same bytes (same framed key and value, same headers,
//!    same librdkafka settings), until delivered;
//! 3. the Python stack (`../shared/bench/py_baseline.py N kafka`: openedx-events +
//!    edx-event-bus-kafka + confluent-kafka) pointed at the same broker and registry;
//! 4. our consumer reading back what (1) produced, with one receiver.
//!
//! The broker is librdkafka's mock cluster unless `KAFKA_BOOTSTRAP_SERVERS` is set; the
//! registry is the project's test registry unless `EVENT_BUS_KAFKA_SCHEMA_REGISTRY_URL` is.
//! Run: `cargo bench -p openedx-events --bench kafka`. Sizes: `KAFKA_BENCH_EVENTS`
//! (default 500000), `KAFKA_BENCH_PY_EVENTS` (default 20000). `OEV_VENV_PYTHON` names a Python
//! with the stack installed; otherwise `tests/python/setup.sh` makes the venv.

#[path = "../tests/support/kafka.rs"]
mod kafka_support;
#[path = "../tests/support/registry.rs"]
mod registry_support;

#[path = "../tests/support/python.rs"]
mod python_support;

use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kafka_support::KafkaEnv;
use openedx_events::catalog::content_authoring::*;
use openedx_events::kafka::producer::headers_for;
use openedx_events::kafka::registry::{frame_header, key_subject, value_subject, SchemaRegistryClient};
use openedx_events::kafka::KafkaProducer;
use openedx_events::kafka::{KafkaConsumer, KafkaConsumerOptions};
use openedx_events::produce::{Producer as _, ProducerRecord};
use openedx_events::{producer_config, EventBus, EventMetadata, OpenEdxEvent, Settings};
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;
use registry_support::RegistryHandle;

const USAGE_KEY: &str = "block-v1:edX+DemoX+Demo_Course+type@video+block@0b9e39477cf34507a7a48f74be381fdd";

fn event() -> XBlockPublished {
    XBlockPublished {
        xblock_info: XBlockData {
            usage_key: USAGE_KEY.parse().unwrap(),
            block_type: "video".into(),
            version: None,
        },
    }
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// librdkafka settings shared by our producer and the raw one.
const PRODUCER_PROPERTIES: &[(&str, &str)] = &[("enable.idempotence", "true"), ("linger.ms", "5")];

fn settings(env: &KafkaEnv, registry: &RegistryHandle, prefix: &str) -> Settings {
    let mut s = Settings::new()
        .with("EVENT_BUS_PRODUCER", "kafka")
        .with("EVENT_BUS_KAFKA_BOOTSTRAP_SERVERS", env.bootstrap())
        .with("EVENT_BUS_KAFKA_SCHEMA_REGISTRY_URL", registry.url())
        .with("EVENT_BUS_TOPIC_PREFIX", prefix)
        .with("EVENTS_SERVICE_NAME", "cms")
        // A sending thread that may block: wait for room rather than refuse (back-pressure).
        .with("EVENT_BUS_KAFKA_QUEUE_FULL_WAIT_MS", "60000")
        .with("EVENT_BUS_KAFKA_CONSUMER_CONFIG_SESSION_TIMEOUT_MS", "6000");
    for (k, v) in PRODUCER_PROPERTIES {
        s.set(format!("EVENT_BUS_KAFKA_PRODUCER_CONFIG_{}", k.replace('.', "_")), *v);
    }
    s
}

struct Counter(Arc<(AtomicU64, AtomicU64)>);
impl ClientContext for Counter {}
impl ProducerContext for Counter {
    type DeliveryOpaque = ();
    fn delivery(&self, r: &DeliveryResult<'_>, _: ()) {
        match r {
            Ok(_) => self.0 .0.fetch_add(1, Ordering::Relaxed),
            Err(_) => self.0 .1.fetch_add(1, Ordering::Relaxed),
        };
    }
}

/// Raw rdkafka: the same framed key, value and headers, per message, until delivered.
struct Raw {
    producer: ThreadedProducer<Counter>,
    counts: Arc<(AtomicU64, AtomicU64)>,
    topic: String,
    key: Vec<u8>,
    value: Vec<u8>,
    metadata: EventMetadata,
}

impl Raw {
    fn new(env: &KafkaEnv, topic: &str, key: Vec<u8>, value: Vec<u8>) -> Self {
        let counts = Arc::new((AtomicU64::new(0), AtomicU64::new(0)));
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", env.bootstrap()).set("client.id", "cms");
        for (k, v) in PRODUCER_PROPERTIES {
            config.set(*k, *v);
        }
        let producer = config.create_with_context(Counter(counts.clone())).unwrap();
        let metadata = EventMetadata::generate(XBlockPublished::EVENT_TYPE, 0);
        Self {
            producer,
            counts,
            topic: topic.to_owned(),
            key,
            value,
            metadata,
        }
    }

    /// Events per second of `n` sends, until delivered.
    fn round(&self, n: usize) -> f64 {
        let before = self.counts.0.load(Ordering::Relaxed);
        let started = Instant::now();
        for _ in 0..n {
            let mut record = BaseRecord::to(&self.topic)
                .key(&self.key[..])
                .payload(&self.value[..])
                .headers(headers_for(&self.metadata));
            loop {
                match self.producer.send(record) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        record = back;
                        std::thread::sleep(Duration::from_micros(500));
                    }
                    Err((e, _)) => panic!("raw send: {e}"),
                }
            }
        }
        self.producer.flush(Duration::from_secs(120)).unwrap();
        let dt = started.elapsed().as_secs_f64();
        assert_eq!(
            self.counts.0.load(Ordering::Relaxed) - before,
            n as u64,
            "raw: all delivered"
        );
        n as f64 / dt
    }
}

/// Our producer: events per second of `n` `send_event`s, until delivered (flush).
fn ours_round(rt: &tokio::runtime::Runtime, bus: &EventBus, data: &XBlockPublished, n: usize) -> f64 {
    let before = bus.producer().as_any().downcast_ref::<KafkaProducer>().unwrap().stats();
    let started = Instant::now();
    for _ in 0..n {
        XBlockPublished::signal().send_event(data.clone());
    }
    rt.block_on(bus.flush(Duration::from_secs(300))).unwrap();
    let rate = n as f64 / started.elapsed().as_secs_f64();
    let stats = bus.producer().as_any().downcast_ref::<KafkaProducer>().unwrap().stats();
    assert_eq!(
        (stats.delivered - before.delivered, stats.failed, stats.rejected),
        (n as u64, 0, 0),
        "ours: all delivered"
    );
    rate
}

/// Our producer alone (no signal, no metadata generation): `produce` of records holding
/// the same data and metadata each time, so the bytes equal the raw producer's.
fn direct_round(rt: &tokio::runtime::Runtime, producer: &KafkaProducer, template: &ProducerRecord, n: usize) -> f64 {
    let before = producer.stats();
    let started = Instant::now();
    for _ in 0..n {
        producer.produce(template.clone()).unwrap();
    }
    rt.block_on(producer.flush(Duration::from_secs(300))).unwrap();
    let rate = n as f64 / started.elapsed().as_secs_f64();
    let stats = producer.stats();
    assert_eq!(stats.delivered - before.delivered, n as u64, "direct: all delivered");
    rate
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Nanoseconds per call of the steps of producing one event, without a broker.
fn breakdown() {
    use std::hint::black_box;
    let data = event();
    let m = 200_000;
    let time = |name: &str, f: &mut dyn FnMut()| {
        let t = Instant::now();
        for _ in 0..m {
            f();
        }
        println!("  {name:<28} {:>6.0} ns", t.elapsed().as_nanos() as f64 / m as f64);
    };
    let meta = EventMetadata::generate(XBlockPublished::EVENT_TYPE, 0);
    let mut buf = Vec::new();
    time("metadata generate", &mut || {
        black_box(EventMetadata::generate(XBlockPublished::EVENT_TYPE, 0));
    });
    time("data clone", &mut || {
        black_box(data.clone());
    });
    time("avro encode", &mut || {
        buf.clear();
        openedx_events::avro::encode_into(black_box(&data), &mut buf).unwrap();
    });
    time("headers", &mut || {
        black_box(headers_for(black_box(&meta)));
    });
    let bus = EventBus::builder()
        .producer_config(producer_config! {
            "org.openedx.content_authoring.xblock.published.v1" => [
                { topic: "xblock-lifecycle", event_key_field: "xblock_info.usage_key", enabled: true },
            ],
        })
        .settings(Settings::new().with("EVENT_BUS_PRODUCER", "none"))
        .start()
        .unwrap();
    time("send_event, no producer", &mut || {
        black_box(XBlockPublished::signal().send_event(data.clone()));
    });
    drop(bus);
}

/// Messages the broker holds for `topic` (high minus low watermark, summed).
fn retained(env: &KafkaEnv, topic: &str) -> u64 {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", env.bootstrap())
        .create()
        .unwrap();
    let metadata = c.fetch_metadata(Some(topic), Duration::from_secs(10)).unwrap();
    let mut total = 0;
    for t in metadata.topics() {
        for p in t.partitions() {
            let (low, high) = c.fetch_watermarks(topic, p.id(), Duration::from_secs(10)).unwrap();
            total += (high - low) as u64;
        }
    }
    total
}

/// The venv's python, or `None` (with the reason on stderr): Rust figures only then.
fn python() -> Option<std::path::PathBuf> {
    python_support::try_python()
        .map_err(|e| eprintln!("no Python side: {e}"))
        .ok()
}

fn python_stack(env: &KafkaEnv, registry: &RegistryHandle, n: usize) -> Option<f64> {
    let py = python()?;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/bench/py_baseline.py");
    let out = Command::new(py)
        .arg(script)
        .arg(n.to_string())
        .arg("kafka")
        .env("KAFKA_BOOTSTRAP_SERVERS", env.bootstrap())
        .env("SCHEMA_REGISTRY_URL", registry.url())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        eprintln!("py_baseline.py failed: {text}{}", String::from_utf8_lossy(&out.stderr));
        return None;
    }
    println!("  python: {}", text.trim());
    text.split_whitespace()
        .find_map(|w| w.strip_prefix("events_per_s="))
        .and_then(|v| v.parse().ok())
}

fn main() {
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let n = env_usize("KAFKA_BENCH_EVENTS", 500_000);
    if std::env::var_os("KAFKA_BENCH_BREAKDOWN").is_some() {
        breakdown();
    }
    let py_n = env_usize("KAFKA_BENCH_PY_EVENTS", 20_000);
    let env = KafkaEnv::start();
    let registry = RegistryHandle::from_env_or_start();
    let broker = if env.mock().is_some() {
        "librdkafka mock cluster (3 brokers)"
    } else {
        env.bootstrap()
    };
    println!("kafka bench: {n} events (python {py_n}) on {broker}");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let _enter = rt.enter();

    // 1 and 2. Our producer through send_event, and raw rdkafka producing the same
    // bytes, in alternating rounds (the median of each is reported: the machine is shared).
    let rounds = env_usize("KAFKA_BENCH_ROUNDS", 5);
    let prefix = "bench-rs";
    let topic = format!("{prefix}-xblock-lifecycle");
    env.create_topic(&topic, 3);
    let bus = EventBus::builder()
        .producer_config(producer_config! {
            "org.openedx.content_authoring.xblock.published.v1" => [
                { topic: "xblock-lifecycle", event_key_field: "xblock_info.usage_key", enabled: true },
            ],
        })
        .settings(settings(&env, &registry, prefix))
        .start()
        .unwrap();
    let data = event();
    ours_round(&rt, &bus, &data, 1000); // registers the schemas

    let client = SchemaRegistryClient::new(registry.url(), None).unwrap();
    let schema = XBlockPublished::avro_schema().registry_text();
    let value_id = rt
        .block_on(client.register(&value_subject(&topic, XBlockPublished::EVENT_TYPE), schema))
        .unwrap();
    let key_id = rt
        .block_on(client.register(
            &key_subject(&topic, "string"),
            r#"{"name": "usage_key", "type": "string"}"#,
        ))
        .unwrap();
    let mut value = frame_header(value_id).to_vec();
    value.extend(openedx_events::avro::encode(&data).unwrap());
    let mut key = frame_header(key_id).to_vec();
    let mut len = (USAGE_KEY.len() as u64) << 1; // Avro long, zig-zag, varint
    while len >= 0x80 {
        key.push((len as u8) | 0x80);
        len >>= 7;
    }
    key.push(len as u8);
    key.extend_from_slice(USAGE_KEY.as_bytes());
    let raw_topic = "bench-raw-xblock-lifecycle";
    env.create_topic(raw_topic, 3);
    let raw_producer = Raw::new(&env, raw_topic, key, value);
    raw_producer.round(1000);

    let direct = KafkaProducer::from_settings(&settings(&env, &registry, prefix)).unwrap();
    let template = kafka_support::usage_key_record(&topic, &data.xblock_info.usage_key, data.clone());
    direct_round(&rt, &direct, &template, 1000);

    let (mut ours_rates, mut raw_rates, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    let (mut direct_rates, mut direct_ratios) = (Vec::new(), Vec::new());
    for r in 0..rounds {
        // The order rotates: whichever runs right after another round may find the
        // broker still busy with it.
        let (mut o, mut d, mut w) = (0.0, 0.0, 0.0);
        for step in 0..3 {
            match (r + step) % 3 {
                0 => o = ours_round(&rt, &bus, &data, n),
                1 => d = direct_round(&rt, &direct, &template, n),
                _ => w = raw_producer.round(n),
            }
        }
        println!(
            "  round {r}: send_event {o:>8.0}/s ({:.1}% of raw), produce {d:>8.0}/s ({:.1}%), raw {w:>8.0}/s",
            100.0 * o / w,
            100.0 * d / w
        );
        ours_rates.push(o);
        raw_rates.push(w);
        ratios.push(o / w);
        direct_rates.push(d);
        direct_ratios.push(d / w);
    }
    let (direct_rate, direct_ratio) = (median(direct_rates), median(direct_ratios));
    rt.block_on(direct.shutdown(Duration::from_secs(60))).unwrap();
    let (ours, raw, ratio) = (median(ours_rates), median(raw_rates), median(ratios));
    println!(
        "  ours:   {ours:>10.0} events/s delivered, median ({:.2} us/event)",
        1e6 / ours
    );
    println!(
        "  raw:    {raw:>10.0} events/s delivered, median ({:.2} us/event)",
        1e6 / raw
    );
    rt.block_on(bus.shutdown(Duration::from_secs(60))).unwrap();
    drop(raw_producer);

    // 3. The Python stack on the same broker and registry.
    let py = if py_n > 0 {
        python_stack(&env, &registry, py_n)
    } else {
        None
    };

    // 4. Our consumer: a topic of 16 partitions holding events of 64 keys, produced by our
    // producer (the mock cluster keeps 5 MB per partition, so everything stays).
    let consumer_n = env_usize("KAFKA_BENCH_CONSUMER_EVENTS", 60_000);
    let consumer_topic = "bench-consume";
    env.create_topic(consumer_topic, 16);
    let no_prefix = settings(&env, &registry, "").with("EVENT_BUS_TOPIC_PREFIX", "");
    let producer = KafkaProducer::from_settings(&no_prefix).unwrap();
    for i in 0..consumer_n {
        let mut ev = event();
        ev.xblock_info.usage_key = format!("block-v1:edX+DemoX+Demo_Course+type@video+block@k{}", i % 64)
            .parse()
            .unwrap();
        producer
            .produce(kafka_support::usage_key_record(
                consumer_topic,
                &ev.xblock_info.usage_key.clone(),
                ev,
            ))
            .unwrap();
    }
    rt.block_on(producer.shutdown(Duration::from_secs(120))).unwrap();
    let total = retained(&env, consumer_topic);
    assert_eq!(total, consumer_n as u64, "every event retained by the broker");
    let seen = Arc::new(AtomicU64::new(0));
    let window: Arc<Mutex<Option<(Instant, Instant)>>> = Arc::default();
    {
        let (seen, window) = (seen.clone(), window.clone());
        XBlockPublished::signal().connect(move |_: &openedx_events::Envelope<XBlockPublished>| {
            let now = Instant::now();
            let mut w = window.lock().unwrap();
            *w = Some(w.map_or((now, now), |(first, _)| (first, now)));
            seen.fetch_add(1, Ordering::Relaxed);
        });
    }
    let options = KafkaConsumerOptions {
        max_messages: Some(total),
        ..Default::default()
    };
    let consumer = KafkaConsumer::new(&no_prefix, consumer_topic, "bench", options).unwrap();
    let cstats = rt
        .block_on(consumer.run(tokio::time::sleep(Duration::from_secs(600))))
        .unwrap();
    assert_eq!(cstats.handled, total, "{cstats:?}");
    let (first, last) = window.lock().unwrap().unwrap();
    let consumer_rate = total as f64 / (last - first).as_secs_f64();
    println!(
        "  consumer: {consumer_rate:>8.0} events/s handled over {total} messages (writer-schema decode, dispatch, offset store)"
    );

    println!("summary:");
    println!(
        "  ours {ours:.0}/s, raw rdkafka {raw:.0}/s (medians): ours is {:.1}% of raw by the median of the \
         per-round ratios (target >= 80%)",
        100.0 * ratio
    );
    println!(
        "  our producer alone (produce, same bytes as raw): {direct_rate:.0}/s, {:.1}% of raw (median of \
         per-round ratios)",
        100.0 * direct_ratio
    );
    println!(
        "  ours vs target 200000/s: {}",
        if ours >= 200_000.0 { "met" } else { "NOT met" }
    );
    match py {
        Some(py) => println!("  python stack {py:.0}/s: ours is {:.1}x (target >= 25x)", ours / py),
        None => println!("  python stack: not measured (no venv)"),
    }
    println!("  consumer {consumer_rate:.0}/s");
}
