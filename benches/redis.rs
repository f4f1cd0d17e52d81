//! Redis Streams throughput, side by side in one run on the same Redis:
//!
//! 1. our producer: `XBlockPublished::signal().send_event(..)` → generic handler → Redis
//!    producer (Avro encoding, `XADD .. MAXLEN ~ 10000 *`), sustained events per second
//!    until a flush has every event acknowledged by Redis;
//! 2. `redis-benchmark` sending the same `XADD` (same key shape, same field names and value
//!    sizes, `MAXLEN ~ 10000`) pipelined, on one connection (`-c 1 -P 100`) and on four
//!    (`-c 4 -P 100`);
//! 3. the Python stack (`../shared/bench/py_baseline.py N redis`: openedx-events +
//!    edx-event-bus-redis from the venv of `tests/python/setup.sh`);
//! 4. our consumer: `XREADGROUP` batches → decode → signal → `XACK`, events per second.
//!
//! Run: `cargo bench -p openedx-events --bench redis`. `REDIS_URL` (default
//! `redis://127.0.0.1:6379/`), `OEV_BENCH_N` (default 200000 events for ours and
//! redis-benchmark), `OEV_BENCH_PY_N` (default 5000 for Python), `OEV_VENV_PYTHON` (else the venv),
//! `OEV_BENCH_ONLY=consumer` (the consumer part alone, on `OEV_BENCH_N` events).

#[path = "../tests/redis_support/mod.rs"]
mod redis_support;

use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use openedx_events::catalog::content_authoring::*;
use openedx_events::redis::{RedisConsumer, RedisConsumerOptions};
use openedx_events::{producer_config, EventBus, OpenEdxEvent, Settings};
use redis_support::{connect, read_stream, unique, Cleanup};

fn event() -> XBlockPublished {
    // The event of py_baseline.py.
    XBlockPublished {
        xblock_info: XBlockData {
            usage_key: "block-v1:edX+DemoX+Demo_Course+type@video+block@0b9e39477cf34507a7a48f74be381fdd"
                .parse()
                .unwrap(),
            block_type: "video".into(),
            version: None,
        },
    }
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn host_port(url: &str) -> (String, String) {
    let rest = url.split("://").nth(1).unwrap_or("127.0.0.1:6379/");
    let rest = rest.rsplit('@').next().unwrap_or(rest);
    let hostport = rest.split('/').next().unwrap_or("127.0.0.1:6379");
    match hostport.rsplit_once(':') {
        Some((h, p)) => (h.to_owned(), p.to_owned()),
        None => (hostport.to_owned(), "6379".to_owned()),
    }
}

/// Our producer: sustained events/s of `n` sends, flush included. Returns the rate and
/// the stream it wrote (to copy its field sizes).
fn ours(rt: &tokio::runtime::Runtime, url: &str, n: u64, cleanup: &mut Cleanup) -> (f64, String) {
    let prefix = unique("bench");
    let stream = format!("{prefix}-content-authoring-xblock-lifecycle");
    cleanup.add(&stream);
    let mut settings = Settings::new();
    if let Ok(batch) = std::env::var("EVENT_BUS_REDIS_PRODUCER_BATCH_SIZE") {
        settings.set("EVENT_BUS_REDIS_PRODUCER_BATCH_SIZE", batch);
    }
    let settings = settings
        .with("EVENT_BUS_PRODUCER", "redis")
        .with("EVENT_BUS_REDIS_CONNECTION_URL", url)
        .with("EVENT_BUS_TOPIC_PREFIX", &prefix)
        .with("EVENTS_SERVICE_NAME", "cms");
    let bus = {
        let _guard = rt.enter();
        EventBus::builder()
            .producer_config(producer_config! {
                "org.openedx.content_authoring.xblock.published.v1" => [
                    { topic: "content-authoring-xblock-lifecycle", event_key_field: "xblock_info.usage_key", enabled: true },
                ],
            })
            .settings(settings)
            .start()
            .unwrap()
    };
    let data = event();
    // Warm-up, as py_baseline does.
    for _ in 0..2000 {
        XBlockPublished::signal().send_event(data.clone());
    }
    rt.block_on(bus.flush(Duration::from_secs(30))).unwrap();
    // Sent from this thread, outside the runtime: a full buffer makes send_event wait
    // (the back-pressure policy), so this is the sustained rate.
    let start = Instant::now();
    for _ in 0..n {
        XBlockPublished::signal().send_event(data.clone());
    }
    rt.block_on(bus.flush(Duration::from_secs(120))).unwrap();
    let secs = start.elapsed().as_secs_f64();
    rt.block_on(bus.shutdown(Duration::from_secs(10))).unwrap();
    (n as f64 / secs, stream)
}

/// redis-benchmark's rate for the same XADD (field values of the same sizes).
fn redis_benchmark(url: &str, sample_stream: &str, n: u64, clients: u32, cleanup: &mut Cleanup) -> Option<f64> {
    let mut conn = connect(url);
    let entries = read_stream(&mut conn, sample_stream);
    let sample = entries.last()?;
    let key = unique("redis-benchmark");
    cleanup.add(&key);
    let (host, port) = host_port(url);
    let mut cmd = Command::new("redis-benchmark");
    cmd.args(["-h", &host, "-p", &port, "-c", &clients.to_string(), "-P", "100"])
        .args(["-n", &n.to_string(), "--csv"])
        .args(["XADD", &key, "MAXLEN", "~", "10000", "*"]);
    for (name, value) in &sample.fields {
        // Binary Avro cannot go through argv: same length, printable bytes.
        let text = match std::str::from_utf8(value) {
            Ok(t) if !t.contains('\0') => t.to_owned(),
            _ => "x".repeat(value.len()),
        };
        cmd.arg(name).arg(text);
    }
    let out = cmd.output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let last = text.lines().last()?;
    let rps = last.split("\",\"").nth(1)?;
    rps.trim_matches('"').parse().ok()
}

fn python_rate(url: &str, n: u64) -> Option<f64> {
    let python = redis_support::try_python()
        .map_err(|e| eprintln!("no Python side: {e}"))
        .ok()?;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/bench/py_baseline.py");
    let out = Command::new(python)
        .arg(script)
        .arg(n.to_string())
        .arg("redis")
        .env("REDIS_URL", url)
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .find_map(|w| w.strip_prefix("events_per_s="))
        .and_then(|v| v.parse().ok())
}

/// Our consumer: events/s handling `n` messages already in a stream.
fn consumer(rt: &tokio::runtime::Runtime, url: &str, n: u64, cleanup: &mut Cleanup) -> f64 {
    let stream = unique("bench-consume");
    cleanup.add(&stream);
    cleanup.add(&format!("{stream}-dead-letter"));
    rt.block_on(async {
        let mut config = openedx_events::redis::RedisProducerConfig::new(url);
        config.stream_max_len = 0;
        let p = openedx_events::redis::RedisProducer::start(config).unwrap();
        let data = Arc::new(event());
        for _ in 0..n {
            let record = openedx_events::produce::ProducerRecord {
                topic: stream.as_str().into(),
                key: None,
                key_field: None,
                metadata: openedx_events::EventMetadata::generate(XBlockPublished::EVENT_TYPE, 0),
                data: data.clone(),
            };
            while openedx_events::produce::Producer::produce(&p, record.clone()).is_err() {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        openedx_events::produce::Producer::shutdown(&p, Duration::from_secs(60))
            .await
            .unwrap();
    });
    let count = Arc::new(AtomicU64::new(0));
    let c = count.clone();
    let id = XBlockPublished::signal().connect(move |_: &openedx_events::Envelope<XBlockPublished>| {
        c.fetch_add(1, Ordering::Relaxed);
    });
    let mut options = RedisConsumerOptions {
        max_count: Some(n),
        ..Default::default()
    };
    options.common.batch_size = 500;
    let consumer = RedisConsumer::new(url, &stream, "bench", "c1", options).unwrap();
    let start = Instant::now();
    let stats = rt.block_on(consumer.run(futures::future::pending())).unwrap();
    let secs = start.elapsed().as_secs_f64();
    XBlockPublished::signal().disconnect(id);
    assert_eq!(stats.succeeded, n);
    assert_eq!(count.load(Ordering::Relaxed), n);
    n as f64 / secs
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        println!("redis: bench");
        return;
    }
    if !args.iter().any(|a| a == "--bench") {
        // `cargo test` runs benches without `--bench`: keep that quick.
        println!("redis bench: run with `cargo bench --bench redis`");
        return;
    }
    let url = redis_support::url();
    let n = env_number("OEV_BENCH_N", 200_000);
    let py_n = env_number("OEV_BENCH_PY_N", 5_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut cleanup = Cleanup::new(&url, &[]);
    if std::env::var("OEV_BENCH_ONLY").as_deref() == Ok("consumer") {
        let consumed = consumer(&rt, &url, n, &mut cleanup);
        println!("redis consumer (XREADGROUP 500 -> decode -> signal -> XACK): {consumed:>10.0} events/s");
        return;
    }

    // Interleaved rounds, so that a change of load on the machine hits every contender.
    let mut rates = Vec::new();
    let mut rb1s = Vec::new();
    let mut rb4s = Vec::new();
    for _ in 0..3 {
        let (rate, stream) = ours(&rt, &url, n, &mut cleanup);
        rates.push(rate);
        rb1s.extend(redis_benchmark(&url, &stream, n, 1, &mut cleanup));
        rb4s.extend(redis_benchmark(&url, &stream, n, 4, &mut cleanup));
    }
    let median = |v: &mut Vec<f64>| -> Option<f64> {
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied()
    };
    let ours_rate = median(&mut rates).expect("three rounds");
    let rb1 = median(&mut rb1s);
    let rb4 = median(&mut rb4s);
    let py = python_rate(&url, py_n);
    let consumed = consumer(&rt, &url, 100_000.min(n), &mut cleanup);

    println!("redis producer, XBlockPublished, MAXLEN ~ 10000, same Redis ({url}), one run:");
    println!(
        "  ours (send_event -> redis, flush included): {ours_rate:>10.0} events/s  (median of 3 x {n}; runs {:.0} / {:.0} / {:.0})",
        rates[0], rates[1], rates[2]
    );
    println!("  (redis-benchmark: median of 3 rounds of {n}, interleaved with ours)");
    let show = |name: &str, rate: Option<f64>| match rate {
        Some(r) => println!("  {name}: {r:>10.0} events/s  ours/that = {:.2}", ours_rate / r),
        None => println!("  {name}: not measured"),
    };
    show("redis-benchmark XADD -c 1 -P 100          ", rb1);
    show("redis-benchmark XADD -c 4 -P 100          ", rb4);
    show(&format!("python stack (py_baseline.py {py_n} redis)"), py);
    println!("redis consumer (XREADGROUP 500 -> decode -> signal -> XACK): {consumed:>10.0} events/s");
    let best_rb = rb1.into_iter().chain(rb4).fold(f64::NAN, f64::max);
    println!(
        "targets: >= 100000/s: {}; >= 60% of pipelined redis-benchmark (best {best_rb:.0}/s): {:.0}%; >= 25x python: {}",
        if ours_rate >= 100_000.0 { "yes" } else { "NO" },
        100.0 * ours_rate / best_rb,
        match py {
            Some(p) => format!("{:.0}x", ours_rate / p),
            None => "not measured".to_owned(),
        }
    );
}
