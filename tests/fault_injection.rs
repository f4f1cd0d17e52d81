//! Fault injection: producers and consumers run N events through a TCP proxy (noxious, a
//! Rust port of Toxiproxy, in-process; see `support/proxy.rs`) that cuts connections
//! mid-batch, holds or delays replies and slows the link, on a schedule drawn from a
//! printed seed (`OEV_FAULT_SEED=<seed>` replays it). What arrived is counted from
//! outside: on a connection to Redis that does not go through the proxy, or by the
//! receivers. Then hostile input for every consumer: entries and messages a peer may
//! write, each dead-lettered with a reason, never a panic, never left pending.
//!
//! Kafka through the proxy runs against tansu, a Kafka-protocol broker started by the test
//! (see `support/tansu.rs`) that advertises the proxy's address, so that every connection
//! of the clients goes through the proxy (librdkafka's mock cluster advertises its own
//! listeners, so a client would bypass a proxy after its first metadata answer). Kafka also
//! runs under the mock cluster's own faults (brokers down, leaders moving, failed
//! requests), and hostile input runs on the mock cluster (or a `KAFKA_BOOTSTRAP_SERVERS`
//! broker).

#[path = "support/proxy.rs"]
mod proxy_support;
mod redis_support;

#[path = "support/kafka.rs"]
mod kafka_support;
#[path = "support/registry.rs"]
mod registry_support;
#[path = "support/tansu.rs"]
mod tansu_support;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openedx_events::catalog::content_authoring::*;
use openedx_events::produce::{Producer, ProducerRecord};
use openedx_events::redis::{RedisConsumer, RedisConsumerOptions, StartPosition};
use openedx_events::redis::{RedisProducer, RedisProducerConfig};
use openedx_events::{EventMetadata, OpenEdxEvent};
use proxy_support::{FaultProxy, Rng};
use redis_support::{unique, url, Cleanup};

/// Keys the events are spread over; order is checked per key.
const KEYS: usize = 16;

/// How many times the Kafka consumer is stopped and started again under faults.
const RESTARTS: usize = 6;

/// Event `seq`: key `seq % KEYS`, and `seq` itself in `block_type`, to be read back.
fn xblock(seq: usize) -> XBlockPublished {
    XBlockPublished {
        xblock_info: XBlockData {
            usage_key: format!("block-v1:edX+Faults+2026+type@problem+block@k{}", seq % KEYS)
                .parse()
                .unwrap(),
            block_type: format!("b{seq}"),
            version: None,
        },
    }
}

fn seq_of(data: &XBlockPublished) -> usize {
    data.xblock_info.block_type[1..].parse().unwrap()
}

fn record(topic: &str, seq: usize) -> ProducerRecord {
    ProducerRecord {
        topic: topic.into(),
        key: None,
        key_field: None,
        metadata: EventMetadata::generate(XBlockPublished::EVENT_TYPE, XBlockPublished::MINOR_VERSION),
        data: Arc::new(xblock(seq)),
    }
}

/// The fields of a stream entry, names and values as bytes.
type Fields = Vec<(Vec<u8>, Vec<u8>)>;

/// An `XRANGE` reply.
type Page = Vec<(String, Fields)>;

/// `host:port` of the Redis under test.
fn redis_addr(url: &str) -> String {
    match &redis::Client::open(url).unwrap().get_connection_info().addr {
        redis::ConnectionAddr::Tcp(host, port) => format!("{host}:{port}"),
        other => panic!("the fault tests need Redis over plain TCP, not {other:?}"),
    }
}

/// An async connection to Redis that does not go through the proxy.
async fn direct(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// The `id` field of every entry of a stream, in stream order.
async fn stream_ids(conn: &mut redis::aio::MultiplexedConnection, key: &str) -> Vec<uuid::Uuid> {
    let mut out = Vec::new();
    let mut start = "-".to_owned();
    loop {
        let page: Page = redis::cmd("XRANGE")
            .arg(key)
            .arg(&start)
            .arg("+")
            .arg("COUNT")
            .arg(5000)
            .query_async(conn)
            .await
            .unwrap();
        let n = page.len();
        if let Some((last, _)) = page.last() {
            start = format!("({last}");
        }
        for (entry, fields) in page {
            let id = fields
                .iter()
                .find(|(k, _)| k == b"id")
                .map(|(_, v)| std::str::from_utf8(v).unwrap().parse().unwrap())
                .unwrap_or_else(|| panic!("entry {entry} of {key} has no id"));
            out.push(id);
        }
        if n < 5000 {
            return out;
        }
    }
}

/// What a sequence of deliveries breaks: ids never delivered, ids delivered more than
/// once, and keys whose events came out of order (`(key, earlier seq, later seq)`).
#[derive(Debug, Default)]
struct Verdict {
    missing: Vec<usize>,
    doubled: Vec<(usize, usize)>,
    out_of_order: Vec<(usize, usize, usize)>,
    unknown: usize,
}

/// Compares deliveries (event ids, in delivery order) with what was sent (`seq` by id).
/// Order per key is checked on each id's first delivery.
/// Writes events `0..n` to `stream` straight to Redis (no proxy, never trimmed) and
/// returns each event's id with its sequence number.
async fn fill_stream(url: &str, stream: &str, n: usize) -> HashMap<uuid::Uuid, usize> {
    let mut sent = HashMap::new();
    let mut c = RedisProducerConfig::new(url);
    c.stream_max_len = 0;
    let p = RedisProducer::start(c).unwrap();
    for seq in 0..n {
        let r = record(stream, seq);
        sent.insert(r.metadata.id, seq);
        p.produce(r).unwrap();
    }
    p.shutdown(Duration::from_secs(30)).await.unwrap();
    sent
}

fn judge(sent: &HashMap<uuid::Uuid, usize>, delivered: &[uuid::Uuid]) -> Verdict {
    let mut v = Verdict::default();
    let mut count: HashMap<uuid::Uuid, usize> = HashMap::new();
    let mut last: HashMap<usize, usize> = HashMap::new();
    for id in delivered {
        let Some(&seq) = sent.get(id) else {
            v.unknown += 1;
            continue;
        };
        let c = count.entry(*id).or_default();
        *c += 1;
        if *c > 1 {
            continue;
        }
        let key = seq % KEYS;
        if let Some(&prev) = last.get(&key) {
            if prev > seq && v.out_of_order.len() < 20 {
                v.out_of_order.push((key, prev, seq));
            }
        }
        last.insert(key, seq.max(last.get(&key).copied().unwrap_or(0)));
    }
    let mut missing: Vec<usize> = sent
        .iter()
        .filter(|(id, _)| !count.contains_key(id))
        .map(|(_, &s)| s)
        .collect();
    missing.sort_unstable();
    v.missing = missing;
    let mut doubled: Vec<(usize, usize)> = count
        .iter()
        .filter(|(_, &c)| c > 1)
        .map(|(id, &c)| (sent[id], c))
        .collect();
    doubled.sort_unstable();
    v.doubled = doubled;
    v
}

fn short<T: std::fmt::Debug>(items: &[T]) -> String {
    if items.len() <= 20 {
        format!("{items:?}")
    } else {
        format!("{:?}... ({} in all)", &items[..20], items.len())
    }
}

/// The fault schedule in the background until `done`; returns the proxy with its history.
fn run_faults(
    proxy: FaultProxy,
    seed: u64,
    max_bytes_before_cut: u64,
) -> (tokio::sync::watch::Sender<bool>, tokio::task::JoinHandle<FaultProxy>) {
    run_faults_with_outage(proxy, seed, max_bytes_before_cut, None)
}

/// [`run_faults`] with one long outage, `(trigger, length)` (see
/// `FaultProxy::run_schedule_with_outage`).
fn run_faults_with_outage(
    mut proxy: FaultProxy,
    seed: u64,
    max_bytes_before_cut: u64,
    outage: Option<(tokio::sync::watch::Receiver<bool>, Duration)>,
) -> (tokio::sync::watch::Sender<bool>, tokio::task::JoinHandle<FaultProxy>) {
    let (done_tx, done_rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(async move {
        let mut rng = Rng::new(seed ^ 0x5eed);
        proxy
            .run_schedule_with_outage(&mut rng, max_bytes_before_cut, outage, &done_rx)
            .await;
        proxy
    });
    (done_tx, task)
}

/// N events through the proxy to Redis with `RedisProducer`, flushing every round while
/// more events are produced: each `flush` that returns Ok must find every event accepted
/// before it in the stream (read without the proxy), and at the end every event is there
/// exactly once (the module documentation promises at most a duplicate whose first copy
/// was pushed out of a 1,000-entry window, which these runs never reach), in order per key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_producer_through_faults_loses_doubles_and_reorders_nothing_and_flush_tells_the_truth() {
    redis_support::init_tracing();
    let seed = proxy_support::seed("redis producer");
    let mut rng = Rng::new(seed);
    let url = url();
    let stream = unique("fault-producer");
    let _cleanup = Cleanup::new(&url, &[&stream]);
    let mut check = direct(&url).await;

    let proxy = FaultProxy::start(&redis_addr(&url)).await;
    let mut config = RedisProducerConfig::new(format!("redis://{}/", proxy.addr()));
    config.stream_max_len = 0;
    config.batch_size = rng.range(20, 400) as usize;
    config.connect_timeout = Duration::from_millis(800);
    config.response_timeout = Duration::from_millis(rng.range(300, 1200));
    config.reconnect_min_delay = Duration::from_millis(10);
    config.reconnect_max_delay = Duration::from_millis(300);
    eprintln!(
        "batch_size {}, response_timeout {:?}",
        config.batch_size, config.response_timeout
    );
    let producer = Arc::new(RedisProducer::start(config).unwrap());
    let (done, faults) = run_faults(proxy, seed, 120_000);

    let n = 4000usize;
    let rounds = 8usize;
    let mut sent: HashMap<uuid::Uuid, usize> = HashMap::new();
    let mut accepted: Vec<uuid::Uuid> = Vec::new();
    let mut flush_lies: Vec<String> = Vec::new();
    let mut flush_errors: Vec<String> = Vec::new();
    let mut next = 0usize;
    // Produces `count` events in bursts with short pauses, so batches of every size are
    // in flight when the faults strike.
    let mut plan: Vec<(usize, u64)> = Vec::new();
    while plan.iter().map(|p| p.0).sum::<usize>() < n {
        plan.push((rng.range(1, 150) as usize, rng.range(0, 25)));
    }
    let mut plan = plan.into_iter();
    let produce_some = |count: usize,
                        plan: &mut std::vec::IntoIter<(usize, u64)>,
                        next: &mut usize,
                        sent: &mut HashMap<uuid::Uuid, usize>,
                        accepted: &mut Vec<uuid::Uuid>| {
        let producer = producer.clone();
        let stream = stream.clone();
        let mut steps = Vec::new();
        let mut left = count;
        while left > 0 {
            let (burst, pause) = plan.next().unwrap_or((left, 0));
            let burst = burst.min(left);
            let mut records = Vec::new();
            for _ in 0..burst {
                let r = record(&stream, *next);
                sent.insert(r.metadata.id, *next);
                accepted.push(r.metadata.id);
                records.push(r);
                *next += 1;
            }
            steps.push((records, pause));
            left -= burst;
        }
        async move {
            for (records, pause) in steps {
                for r in records {
                    let id = r.metadata.id;
                    producer
                        .produce(r)
                        .unwrap_or_else(|e| panic!("produce refused event {id}: {e}"));
                }
                tokio::time::sleep(Duration::from_millis(pause)).await;
            }
        }
    };
    let per_round = n / rounds;
    produce_some(per_round, &mut plan, &mut next, &mut sent, &mut accepted).await;
    for round in 1..=rounds {
        let before: Vec<uuid::Uuid> = accepted.clone();
        let more = if round < rounds { per_round } else { 0 };
        let producing = produce_some(more, &mut plan, &mut next, &mut sent, &mut accepted);
        let started = Instant::now();
        let (flushed, ()) = tokio::join!(producer.flush(Duration::from_secs(30)), producing);
        let in_stream: HashSet<uuid::Uuid> = stream_ids(&mut check, &stream).await.into_iter().collect();
        let missing = before.iter().filter(|id| !in_stream.contains(id)).count();
        match flushed {
            Ok(()) if missing > 0 => flush_lies.push(format!(
                "round {round}: flush returned Ok after {:?} with {missing} of the {} events accepted before it not in the stream",
                started.elapsed(),
                before.len()
            )),
            Ok(()) => {}
            Err(e) => flush_errors.push(format!("round {round}: flush failed after {:?}: {e}", started.elapsed())),
        }
    }
    done.send_replace(true);
    let proxy = faults.await.unwrap();
    let shutdown = producer.shutdown(Duration::from_secs(30)).await;
    let stats = producer.stats();
    let delivered = stream_ids(&mut check, &stream).await;
    let verdict = judge(&sent, &delivered);
    let report = format!(
        "seed {seed} (replay with OEV_FAULT_SEED={seed})\nstats {stats:?}\nshutdown {shutdown:?}\n\
         stream holds {} entries for {} events sent\nmissing (seq) {}\ndoubled (seq, copies) {}\n\
         out of order (key, seq before, seq after) {:?}\nflush lies {flush_lies:#?}\nflush errors {flush_errors:#?}\n\
         fault phases:\n  {}",
        delivered.len(),
        sent.len(),
        short(&verdict.missing),
        short(&verdict.doubled),
        verdict.out_of_order,
        proxy.history(),
    );
    eprintln!("{report}");
    assert_eq!(sent.len(), n);
    assert!(
        verdict.missing.is_empty()
            && verdict.doubled.is_empty()
            && verdict.out_of_order.is_empty()
            && verdict.unknown == 0
            && flush_lies.is_empty()
            && flush_errors.is_empty()
            && shutdown.is_ok()
            && delivered.len() == n,
        "{report}"
    );
}

/// A slow link (every connection through a slicer, about 100 KB/s towards Redis) and a
/// response timeout shorter than a batch takes to cross it: the timed-out connection is
/// not closed (the redis crate keeps it open until the replies of its requests arrive), so
/// the rest of the batch still reaches Redis after the new connection's check for entries
/// already written, and the events resent meanwhile are written twice. The README promises
/// "reconnects without losing or doubling events".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_producer_resending_after_a_reply_timeout_on_a_slow_link_writes_each_event_once() {
    redis_support::init_tracing();
    let url = url();
    let stream = unique("fault-slow");
    let _cleanup = Cleanup::new(&url, &[&stream]);
    let mut check = direct(&url).await;
    let mut proxy = FaultProxy::start(&redis_addr(&url)).await;
    proxy
        .set_phase(&proxy_support::Phase::Toxics(vec![proxy_support::toxic(
            noxious::toxic::ToxicKind::Slicer {
                average_size: 100,
                size_variation: 0,
                delay: 1000,
            },
            noxious::toxic::StreamDirection::Upstream,
        )]))
        .await;
    let mut config = RedisProducerConfig::new(format!("redis://{}/", proxy.addr()));
    config.stream_max_len = 0;
    config.batch_size = 300;
    config.response_timeout = Duration::from_millis(600);
    config.reconnect_min_delay = Duration::from_millis(10);
    config.reconnect_max_delay = Duration::from_millis(100);
    let producer = RedisProducer::start(config).unwrap();
    let n = 900;
    let mut sent = HashMap::new();
    for seq in 0..n {
        let r = record(&stream, seq);
        sent.insert(r.metadata.id, seq);
        producer.produce(r).unwrap();
    }
    let shutdown = producer.shutdown(Duration::from_secs(40)).await;
    let stats = producer.stats();
    // Whatever a connection still carries is in Redis once the proxy is idle.
    tokio::time::sleep(Duration::from_millis(500)).await;
    proxy.stop().await;
    let delivered = stream_ids(&mut check, &stream).await;
    let verdict = judge(&sent, &delivered);
    let report = format!(
        "stats {stats:?}\nshutdown {shutdown:?}\nstream holds {} entries for {n} events\nmissing (seq) {}\n\
         doubled (seq, copies) {}\nout of order {:?}",
        delivered.len(),
        short(&verdict.missing),
        short(&verdict.doubled),
        verdict.out_of_order
    );
    eprintln!("{report}");
    assert!(
        shutdown.is_ok() && verdict.missing.is_empty() && verdict.doubled.is_empty() && delivered.len() == n,
        "{report}"
    );
}

/// N events written to a stream, read by one consumer through the proxy under faults: the
/// receiver sees every event with its original id and data, in order per key (first
/// deliveries; a redelivery is what at-least-once allows), nothing goes to the dead
/// letters, and the group has nothing pending afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_consumer_through_faults_delivers_every_event_in_order_and_leaves_nothing_pending() {
    redis_support::init_tracing();
    let seed = proxy_support::seed("redis consumer");
    let mut rng = Rng::new(seed);
    let url = url();
    let stream = unique("fault-consumer");
    let group = unique("g");
    let mut cleanup = Cleanup::new(&url, &[&stream]);
    let mut check = direct(&url).await;

    // Written without faults, straight to Redis.
    let n = 3000usize;
    let sent = fill_stream(&url, &stream, n).await;
    assert_eq!(stream_ids(&mut check, &stream).await.len(), n);

    // Every delivery of one of our events: id, and whether its data is the original.
    let deliveries: Arc<Mutex<Vec<(uuid::Uuid, bool)>>> = Arc::default();
    {
        let sent = sent.clone();
        let deliveries = deliveries.clone();
        XBlockPublished::signal().connect(move |env: &openedx_events::Envelope<XBlockPublished>| {
            if let Some(&seq) = sent.get(&env.metadata.id) {
                let same = seq_of(&env.data) == seq && *env.data == xblock(seq);
                deliveries.lock().unwrap().push((env.metadata.id, same));
            }
        });
    }

    let proxy = FaultProxy::start(&redis_addr(&url)).await;
    let mut o = RedisConsumerOptions {
        start: StartPosition::Beginning,
        block: Duration::from_millis(100),
        connect_timeout: Duration::from_millis(800),
        response_timeout: Duration::from_millis(rng.range(300, 1200)),
        reconnect_min_delay: Duration::from_millis(10),
        reconnect_max_delay: Duration::from_millis(300),
        ..Default::default()
    };
    o.common.batch_size = rng.range(5, 200) as usize;
    o.common.retry_delay = Duration::from_millis(1000);
    eprintln!(
        "batch_size {}, response_timeout {:?}",
        o.common.batch_size, o.response_timeout
    );
    let consumer = RedisConsumer::new(&format!("redis://{}/", proxy.addr()), &stream, &group, "c1", o).unwrap();
    cleanup.add(consumer.dead_letter_stream());
    let dead_letter = consumer.dead_letter_stream().to_owned();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(consumer.run(async move {
        let _ = stop_rx.await;
    }));
    let (done, faults) = run_faults(proxy, seed, 60_000);

    // Faults until every event was seen once (or the time is up), then a clean link until
    // nothing is pending.
    let all_seen = |d: &[(uuid::Uuid, bool)]| d.iter().map(|x| x.0).collect::<HashSet<_>>().len() >= n;
    let deadline = Instant::now() + Duration::from_secs(40);
    while !all_seen(&deliveries.lock().unwrap()) && Instant::now() < deadline && !running.is_finished() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    done.send_replace(true);
    let proxy = faults.await.unwrap();
    let settle = Instant::now() + Duration::from_secs(15);
    while Instant::now() < settle && !running.is_finished() {
        if pending_of(&mut check, &stream, &group).await == 0 && all_seen(&deliveries.lock().unwrap()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = stop_tx.send(());
    let result = tokio::time::timeout(Duration::from_secs(20), running)
        .await
        .expect("the consumer did not stop within 20 s of its shutdown")
        .expect("the consumer task panicked");
    let pending = pending_of(&mut check, &stream, &group).await;
    let dead: usize = redis::cmd("XLEN")
        .arg(&dead_letter)
        .query_async(&mut check)
        .await
        .unwrap();

    let deliveries = deliveries.lock().unwrap().clone();
    let altered = deliveries.iter().filter(|d| !d.1).count();
    let ids: Vec<uuid::Uuid> = deliveries.iter().map(|d| d.0).collect();
    let verdict = judge(&sent, &ids);
    let report = format!(
        "seed {seed} (replay with OEV_FAULT_SEED={seed})\nconsumer {result:?}\n{} deliveries of {n} events; \
         {} redelivered (at least once allows it)\nmissing (seq) {}\naltered data {altered}\n\
         out of order (key, seq before, seq after) {:?}\npending after {pending}\ndead-lettered {dead}\n\
         fault phases:\n  {}",
        deliveries.len(),
        verdict.doubled.len(),
        short(&verdict.missing),
        verdict.out_of_order,
        proxy.history(),
    );
    eprintln!("{report}");
    assert!(
        result.is_ok()
            && verdict.missing.is_empty()
            && altered == 0
            && verdict.out_of_order.is_empty()
            && pending == 0
            && dead == 0,
        "{report}"
    );
}

/// A lost `XREADGROUP` reply, made deterministic: every connection is cut after 5,000
/// bytes from Redis (inside the first batch's reply, ~35 KB) for 400 ms, then the link is
/// clean. The batches read meanwhile are pending for this consumer but never delivered;
/// they must be handled before the messages after them (order per key), not claimed later
/// behind them once idle for `retry_delay`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_consumer_keeps_order_per_key_when_a_read_reply_is_lost() {
    redis_support::init_tracing();
    let url = url();
    let stream = unique("fault-lost-read");
    let group = unique("g");
    let mut cleanup = Cleanup::new(&url, &[&stream]);
    let mut check = direct(&url).await;
    let n = 2000usize;
    let sent = fill_stream(&url, &stream, n).await;
    let deliveries: Arc<Mutex<Vec<uuid::Uuid>>> = Arc::default();
    {
        let sent = sent.clone();
        let deliveries = deliveries.clone();
        XBlockPublished::signal().connect(move |env: &openedx_events::Envelope<XBlockPublished>| {
            if sent.contains_key(&env.metadata.id) {
                deliveries.lock().unwrap().push(env.metadata.id);
            }
        });
    }
    let mut proxy = FaultProxy::start(&redis_addr(&url)).await;
    proxy
        .set_phase(&proxy_support::Phase::Toxics(vec![proxy_support::toxic(
            noxious::toxic::ToxicKind::LimitData { bytes: 5000 },
            noxious::toxic::StreamDirection::Downstream,
        )]))
        .await;
    let mut o = RedisConsumerOptions {
        block: Duration::from_millis(100),
        max_count: Some(n as u64),
        reconnect_min_delay: Duration::from_millis(10),
        reconnect_max_delay: Duration::from_millis(50),
        ..Default::default()
    };
    o.common.batch_size = 100;
    o.common.retry_delay = Duration::from_millis(1000);
    let consumer = RedisConsumer::new(&format!("redis://{}/", proxy.addr()), &stream, &group, "c1", o).unwrap();
    cleanup.add(consumer.dead_letter_stream());
    let running = tokio::spawn(consumer.run(futures::future::pending()));
    tokio::time::sleep(Duration::from_millis(400)).await;
    proxy.set_phase(&proxy_support::Phase::Toxics(Vec::new())).await;
    let result = tokio::time::timeout(Duration::from_secs(30), running)
        .await
        .expect("the consumer did not complete the stream within 30 s")
        .expect("the consumer task panicked");
    let pending = pending_of(&mut check, &stream, &group).await;
    let ids = deliveries.lock().unwrap().clone();
    let verdict = judge(&sent, &ids);
    let report = format!(
        "consumer {result:?}\n{} deliveries of {n}\nmissing (seq) {}\nout of order (key, seq before, seq after) {:?}\n\
         pending after {pending}\nproxy phases: {}",
        ids.len(),
        short(&verdict.missing),
        verdict.out_of_order,
        proxy.history()
    );
    eprintln!("{report}");
    assert!(
        result.is_ok() && verdict.missing.is_empty() && verdict.out_of_order.is_empty() && pending == 0,
        "{report}"
    );
}

/// Deliveries whose reply was lost are not attempts: every connection is cut after 5,000
/// bytes from Redis for 1.5 s, so read and claim replies (~35 KB for 100 messages) are lost
/// again and again while Redis counts a delivery each time. Then each message's receiver
/// fails once and succeeds the next time; with `max_retries: 1` every message must end
/// handled, none dead-lettered for retries it never had.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_consumer_counts_only_real_attempts_toward_max_retries_when_replies_are_lost() {
    redis_support::init_tracing();
    let url = url();
    let stream = unique("fault-lost-claims");
    let group = unique("g");
    let mut cleanup = Cleanup::new(&url, &[&stream]);
    let mut check = direct(&url).await;
    let n = 200usize;
    let sent = fill_stream(&url, &stream, n).await;
    // Fails the first real attempt at each of our events, succeeds from the second.
    let tried: Arc<Mutex<HashSet<uuid::Uuid>>> = Arc::default();
    let handled: Arc<Mutex<HashSet<uuid::Uuid>>> = Arc::default();
    {
        let sent = sent.clone();
        let (tried, handled) = (tried.clone(), handled.clone());
        XBlockPublished::signal().connect(
            move |env: &openedx_events::Envelope<XBlockPublished>| -> Result<(), String> {
                if !sent.contains_key(&env.metadata.id) {
                    return Ok(());
                }
                if tried.lock().unwrap().insert(env.metadata.id) {
                    return Err("first attempt fails".to_owned());
                }
                handled.lock().unwrap().insert(env.metadata.id);
                Ok(())
            },
        );
    }
    let mut proxy = FaultProxy::start(&redis_addr(&url)).await;
    proxy
        .set_phase(&proxy_support::Phase::Toxics(vec![proxy_support::toxic(
            noxious::toxic::ToxicKind::LimitData { bytes: 5000 },
            noxious::toxic::StreamDirection::Downstream,
        )]))
        .await;
    let mut o = RedisConsumerOptions {
        block: Duration::from_millis(100),
        reconnect_min_delay: Duration::from_millis(10),
        reconnect_max_delay: Duration::from_millis(50),
        ..Default::default()
    };
    o.common.batch_size = 100;
    o.common.max_retries = 1;
    o.common.retry_delay = Duration::from_millis(200);
    o.common.max_consecutive_errors = 0;
    let consumer = RedisConsumer::new(&format!("redis://{}/", proxy.addr()), &stream, &group, "c1", o).unwrap();
    let dead_letter = consumer.dead_letter_stream().to_owned();
    cleanup.add(&dead_letter);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(consumer.run(async move {
        let _ = stop_rx.await;
    }));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    proxy.set_phase(&proxy_support::Phase::Toxics(Vec::new())).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let dead: usize = redis::cmd("XLEN")
            .arg(&dead_letter)
            .query_async(&mut check)
            .await
            .unwrap();
        let done = handled.lock().unwrap().len() + dead >= n;
        if (done && pending_of(&mut check, &stream, &group).await == 0) || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = stop_tx.send(());
    let result = tokio::time::timeout(Duration::from_secs(20), running)
        .await
        .expect("the consumer did not stop within 20 s of its shutdown")
        .expect("the consumer task panicked");
    let dead: usize = redis::cmd("XLEN")
        .arg(&dead_letter)
        .query_async(&mut check)
        .await
        .unwrap();
    let pending = pending_of(&mut check, &stream, &group).await;
    let handled = handled.lock().unwrap().len();
    let report = format!(
        "consumer {result:?}\n{handled} of {n} handled; {dead} dead-lettered; pending {pending}\nproxy phases: {}",
        proxy.history()
    );
    eprintln!("{report}");
    assert!(result.is_ok() && handled == n && dead == 0 && pending == 0, "{report}");
}

/// Two consumers of one group through the proxy under faults, claiming from each other
/// (order per key is not theirs to keep: the group spreads messages over them): every
/// event reaches a receiver with its original data, nothing is dead-lettered, and the
/// group has nothing pending afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_consumer_group_of_two_through_faults_loses_nothing_and_leaves_nothing_pending() {
    redis_support::init_tracing();
    let seed = proxy_support::seed("redis consumer group");
    let mut rng = Rng::new(seed);
    let url = url();
    let stream = unique("fault-group");
    let group = unique("g");
    let mut cleanup = Cleanup::new(&url, &[&stream]);
    let mut check = direct(&url).await;
    let n = 3000usize;
    let sent = fill_stream(&url, &stream, n).await;
    let deliveries: Arc<Mutex<Vec<(uuid::Uuid, bool)>>> = Arc::default();
    {
        let sent = sent.clone();
        let deliveries = deliveries.clone();
        XBlockPublished::signal().connect(move |env: &openedx_events::Envelope<XBlockPublished>| {
            if let Some(&seq) = sent.get(&env.metadata.id) {
                deliveries
                    .lock()
                    .unwrap()
                    .push((env.metadata.id, *env.data == xblock(seq)));
            }
        });
    }
    let proxy = FaultProxy::start(&redis_addr(&url)).await;
    let proxied = format!("redis://{}/", proxy.addr());
    let mut o = RedisConsumerOptions {
        block: Duration::from_millis(100),
        connect_timeout: Duration::from_millis(800),
        response_timeout: Duration::from_millis(rng.range(300, 1200)),
        reconnect_min_delay: Duration::from_millis(10),
        reconnect_max_delay: Duration::from_millis(300),
        ..Default::default()
    };
    o.common.batch_size = rng.range(5, 200) as usize;
    o.common.retry_delay = Duration::from_millis(1000);
    let mut stops = Vec::new();
    let mut runs = Vec::new();
    for name in ["c1", "c2"] {
        let consumer = RedisConsumer::new(&proxied, &stream, &group, name, o.clone()).unwrap();
        cleanup.add(consumer.dead_letter_stream());
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        stops.push(stop_tx);
        runs.push(tokio::spawn(consumer.run(async move {
            let _ = stop_rx.await;
        })));
    }
    let dead_letter = format!("{stream}-dead-letter");
    let (done, faults) = run_faults(proxy, seed, 60_000);
    let all_seen = |d: &[(uuid::Uuid, bool)]| d.iter().map(|x| x.0).collect::<HashSet<_>>().len() >= n;
    let deadline = Instant::now() + Duration::from_secs(40);
    while !all_seen(&deliveries.lock().unwrap()) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    done.send_replace(true);
    let proxy = faults.await.unwrap();
    let settle = Instant::now() + Duration::from_secs(15);
    while Instant::now() < settle {
        if pending_of(&mut check, &stream, &group).await == 0 && all_seen(&deliveries.lock().unwrap()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for stop in stops {
        let _ = stop.send(());
    }
    let mut results = Vec::new();
    for run in runs {
        results.push(
            tokio::time::timeout(Duration::from_secs(20), run)
                .await
                .expect("a consumer did not stop within 20 s of its shutdown")
                .expect("a consumer task panicked"),
        );
    }
    let pending = pending_of(&mut check, &stream, &group).await;
    let dead: usize = redis::cmd("XLEN")
        .arg(&dead_letter)
        .query_async(&mut check)
        .await
        .unwrap();
    let deliveries = deliveries.lock().unwrap().clone();
    let altered = deliveries.iter().filter(|d| !d.1).count();
    let ids: Vec<uuid::Uuid> = deliveries.iter().map(|d| d.0).collect();
    let verdict = judge(&sent, &ids);
    let report = format!(
        "seed {seed} (replay with OEV_FAULT_SEED={seed})\nconsumers {results:?}\n{} deliveries of {n} events; \
         {} redelivered (at least once allows it)\nmissing (seq) {}\naltered data {altered}\npending after {pending}\n\
         dead-lettered {dead}\nfault phases:\n  {}",
        deliveries.len(),
        verdict.doubled.len(),
        short(&verdict.missing),
        proxy.history(),
    );
    eprintln!("{report}");
    assert!(
        results.iter().all(|r| r.is_ok()) && verdict.missing.is_empty() && altered == 0 && pending == 0 && dead == 0,
        "{report}"
    );
}

async fn pending_of(conn: &mut redis::aio::MultiplexedConnection, stream: &str, group: &str) -> u64 {
    let v: redis::Value = redis::cmd("XPENDING")
        .arg(stream)
        .arg(group)
        .query_async(conn)
        .await
        .unwrap();
    match v {
        redis::Value::Array(items) => match items.first() {
            Some(redis::Value::Int(n)) => *n as u64,
            other => panic!("unexpected XPENDING reply {other:?}"),
        },
        other => panic!("unexpected XPENDING reply {other:?}"),
    }
}

/// One entry of the hostile-input test: what it is, and its fields as written.
type Hostile = (&'static str, Fields);

/// Metadata fields of a well-formed entry of `event_type`.
fn good_fields(event_type: &str, data: Vec<u8>) -> Fields {
    vec![
        (b"type".to_vec(), event_type.as_bytes().to_vec()),
        (b"id".to_vec(), uuid::Uuid::new_v4().to_string().into_bytes()),
        (b"source".to_vec(), b"openedx/test/web".to_vec()),
        (b"time".to_vec(), b"2026-11-27T13:20:05.364687+00:00".to_vec()),
        (b"minorversion".to_vec(), b"0".to_vec()),
        (b"sourcehost".to_vec(), b"h".to_vec()),
        (b"sourcelib".to_vec(), b"10.5.0".to_vec()),
        (b"event_data".to_vec(), data),
    ]
}

fn without(mut fields: Fields, name: &[u8]) -> Fields {
    fields.retain(|(k, _)| k != name);
    fields
}

fn replaced(mut fields: Fields, name: &[u8], value: Vec<u8>) -> Fields {
    for (k, v) in &mut fields {
        if k == name {
            *v = value.clone();
        }
    }
    fields
}

fn renamed(mut fields: Fields, name: &[u8], to: Vec<u8>) -> Fields {
    for (k, _) in &mut fields {
        if k == name {
            *k = to.clone();
        }
    }
    fields
}

fn doubled(mut fields: Fields, name: &[u8], second: Vec<u8>) -> Fields {
    fields.push((name.to_vec(), second));
    fields
}

/// Entries a peer may write that cannot be handled: each must go to the dead letters.
fn hostile_redis_entries() -> Vec<Hostile> {
    let t = XBlockPublished::EVENT_TYPE;
    let good = openedx_events::avro::encode(&xblock(1)).unwrap();
    let g = || good_fields(t, good.clone());
    let mut truncated = good.clone();
    truncated.truncate(good.len() / 2);
    // A string length of 2^62 in the first field: a decoder must not try to allocate it.
    let mut huge_length = Vec::new();
    let mut n: u64 = (1u64 << 62) << 1; // zigzag of 2^62
    while n >= 0x80 {
        huge_length.push((n as u8) | 0x80);
        n >>= 7;
    }
    huge_length.push(n as u8);
    huge_length.extend_from_slice(b"block-v1:");
    let enrollment_like = {
        // Valid Avro of other data: a long, a boolean, then strings.
        let mut v = vec![0x0a, 0x01];
        v.extend([0x08]);
        v.extend(b"user");
        v
    };
    vec![
        (
            "non-UTF-8 field names only",
            g().into_iter()
                .map(|(mut k, v)| {
                    k.push(0xff);
                    (k, v)
                })
                .collect(),
        ),
        (
            "non-UTF-8 name instead of `type`",
            renamed(g(), b"type", vec![0xc3, 0x28]),
        ),
        (
            "non-UTF-8 name instead of `event_data`",
            renamed(g(), b"event_data", vec![0xfe, 0xff]),
        ),
        ("non-UTF-8 `type` value", replaced(g(), b"type", vec![0xff, 0xfe, 0xfd])),
        ("non-UTF-8 `id` value", replaced(g(), b"id", vec![0x80; 36])),
        (
            "non-UTF-8 `time` value",
            replaced(g(), b"time", b"2026-11-27T13:20:05\xff".to_vec()),
        ),
        ("missing `type`", without(g(), b"type")),
        ("missing `id`", without(g(), b"id")),
        ("missing `time`", without(g(), b"time")),
        ("missing `event_data`", without(g(), b"event_data")),
        ("only `event_data`", vec![(b"event_data".to_vec(), good.clone())]),
        (
            "doubled `id` with two values",
            doubled(g(), b"id", uuid::Uuid::new_v4().to_string().into_bytes()),
        ),
        (
            "doubled `type`, the second unknown",
            doubled(g(), b"type", b"org.openedx.nothing.here.v1".to_vec()),
        ),
        (
            "doubled `event_data`, the second garbage",
            doubled(g(), b"event_data", vec![0xff; 9]),
        ),
        (
            "doubled `time` with two values",
            doubled(g(), b"time", b"2020-01-01T00:00:00+00:00".to_vec()),
        ),
        (
            "huge `event_data` (8 MiB of garbage)",
            replaced(g(), b"event_data", vec![0xfd; 8 << 20]),
        ),
        ("huge `type` (1 MiB)", replaced(g(), b"type", vec![b'x'; 1 << 20])),
        (
            "string length of 2^62 in `event_data`",
            replaced(g(), b"event_data", huge_length),
        ),
        ("`id` not a UUID", replaced(g(), b"id", b"42".to_vec())),
        ("`time` not a time", replaced(g(), b"time", b"yesterday".to_vec())),
        ("`time` a number", replaced(g(), b"time", b"1764249605".to_vec())),
        (
            "`minorversion` not a number",
            replaced(g(), b"minorversion", b"one".to_vec()),
        ),
        (
            "`minorversion` negative",
            replaced(g(), b"minorversion", b"-1".to_vec()),
        ),
        (
            "`sourcelib` not a version",
            replaced(g(), b"sourcelib", b"ten.five".to_vec()),
        ),
        (
            "unknown event type",
            replaced(g(), b"type", b"org.openedx.nothing.here.v1".to_vec()),
        ),
        ("empty event type", replaced(g(), b"type", Vec::new())),
        ("truncated Avro", replaced(g(), b"event_data", truncated)),
        ("empty Avro", replaced(g(), b"event_data", Vec::new())),
        ("Avro of other data", replaced(g(), b"event_data", enrollment_like)),
    ]
}

/// Hostile entries written straight to a stream, then one good event: the Redis consumer
/// dead-letters each hostile one to `{topic}-dead-letter` with a reason and its original
/// id, goes on to the good one, never panics, and leaves nothing pending.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_consumer_dead_letters_every_hostile_entry_with_a_reason_and_goes_on() {
    redis_support::init_tracing();
    let url = url();
    let stream = unique("hostile");
    let group = unique("g");
    let mut cleanup = Cleanup::new(&url, &[&stream]);
    let mut conn = direct(&url).await;
    let hostile = hostile_redis_entries();
    let mut written: Vec<(String, &str)> = Vec::new();
    for (what, fields) in &hostile {
        let mut cmd = redis::cmd("XADD");
        cmd.arg(&stream).arg("*");
        for (k, v) in fields {
            cmd.arg(&k[..]).arg(&v[..]);
        }
        let id: String = cmd.query_async(&mut conn).await.unwrap();
        written.push((id, what));
    }
    let good = xblock(99);
    let good_id = uuid::Uuid::new_v4();
    let mut fields = good_fields(
        XBlockPublished::EVENT_TYPE,
        openedx_events::avro::encode(&good).unwrap(),
    );
    fields[1].1 = good_id.to_string().into_bytes();
    let mut cmd = redis::cmd("XADD");
    cmd.arg(&stream).arg("*");
    for (k, v) in &fields {
        cmd.arg(&k[..]).arg(&v[..]);
    }
    let _: String = cmd.query_async(&mut conn).await.unwrap();

    let seen: Arc<Mutex<Vec<uuid::Uuid>>> = Arc::default();
    {
        let seen = seen.clone();
        XBlockPublished::signal().connect(move |env: &openedx_events::Envelope<XBlockPublished>| {
            seen.lock().unwrap().push(env.metadata.id);
        });
    }
    let mut o = RedisConsumerOptions {
        block: Duration::from_millis(100),
        max_count: Some(hostile.len() as u64 + 1),
        ..Default::default()
    };
    o.common.batch_size = 7;
    let consumer = RedisConsumer::new(&url, &stream, &group, "c1", o).unwrap();
    let dead_letter = consumer.dead_letter_stream().to_owned();
    cleanup.add(&dead_letter);
    let ran = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::spawn(consumer.run(futures::future::pending())),
    )
    .await;
    let result = match ran {
        Err(_) => Err("the consumer did not complete the entries within 30 s (stuck?)".to_owned()),
        Ok(Err(panic)) => Err(format!("the consumer panicked: {panic}")),
        Ok(Ok(r)) => r.map_err(|e| format!("the consumer stopped: {e}")),
    };

    // What reached the dead letters, by original id.
    let page: Page = redis::cmd("XRANGE")
        .arg(&dead_letter)
        .arg("-")
        .arg("+")
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut reasons: HashMap<String, String> = HashMap::new();
    for (_, fields) in page {
        let get = |name: &[u8]| {
            fields
                .iter()
                .rev()
                .find(|(k, _)| k == name)
                .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
        };
        if let Some(original) = get(b"original_id") {
            reasons.insert(original, get(b"error").unwrap_or_default());
        }
    }
    let mut problems = Vec::new();
    for (id, what) in &written {
        match reasons.get(id) {
            None => problems.push(format!("{what}: not dead-lettered")),
            Some(r) if r.trim().is_empty() => problems.push(format!("{what}: dead-lettered without a reason")),
            Some(_) => {}
        }
    }
    let pending = pending_of(&mut conn, &stream, &group).await;
    let seen = seen.lock().unwrap().clone();
    for (id, what) in &written {
        if let Some(r) = reasons.get(id) {
            eprintln!("{what}: {}", r.chars().take(160).collect::<String>());
        }
    }
    eprintln!(
        "consumer: {result:?}\ngood event seen: {}\npending: {pending}",
        seen.contains(&good_id)
    );
    assert!(
        problems.is_empty() && result.is_ok() && seen == vec![good_id] && pending == 0,
        "{problems:#?}\nconsumer: {result:?}\nreceived {seen:?} (expected only {good_id})\npending {pending}"
    );
}

// ---------------------------------------------------------------------------------------
// Kafka: hostile input on the mock cluster (or `KAFKA_BOOTSTRAP_SERVERS`).

/// Headers as a peer writes them: name bytes and value (`None`: a header without value).
type RawHeaders = Vec<(Vec<u8>, Option<Vec<u8>>)>;

/// rdkafka headers from raw names: UTF-8 names through the safe API, others (which it
/// cannot express) through librdkafka's `rd_kafka_header_add`, as a peer's client may.
fn owned_headers(hs: &RawHeaders) -> rdkafka::message::OwnedHeaders {
    use rdkafka::message::{BorrowedHeaders, Header, OwnedHeaders};
    let mut headers = OwnedHeaders::new_with_capacity(hs.len().max(1));
    for (name, value) in hs {
        match std::str::from_utf8(name) {
            Ok(key) => {
                headers = headers.insert(Header {
                    key,
                    value: value.as_deref(),
                })
            }
            Err(_) => {
                let ptr = headers.as_borrowed() as *const BorrowedHeaders as *mut rdkafka::bindings::rd_kafka_headers_t;
                let (v, len) = match value {
                    Some(v) => (v.as_ptr() as *const std::ffi::c_void, v.len() as isize),
                    None => (std::ptr::null(), 0),
                };
                // SAFETY: `ptr` is the live, writable header list `headers` owns (that is
                // what `as_borrowed` points at); librdkafka copies name and value.
                let err = unsafe {
                    rdkafka::bindings::rd_kafka_header_add(
                        ptr,
                        name.as_ptr() as *const std::ffi::c_char,
                        name.len() as isize,
                        v,
                        len,
                    )
                };
                assert_eq!(err, rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR);
            }
        }
    }
    headers
}

/// A topic (and its dead-letter topic) on the test broker, with the test registry.
struct KafkaHostile {
    env: kafka_support::KafkaEnv,
    registry: registry_support::RegistryHandle,
    prefix: String,
    topic: String,
}

impl KafkaHostile {
    fn new() -> Self {
        let env = kafka_support::KafkaEnv::start();
        let registry = registry_support::RegistryHandle::from_env_or_start();
        let prefix = kafka_support::unique("hostile");
        let topic = format!("{prefix}-xblock");
        env.create_topic(&topic, 1);
        env.create_topic(&format!("{topic}-dead-letter"), 1);
        Self {
            env,
            registry,
            prefix,
            topic,
        }
    }

    fn settings(&self) -> openedx_events::Settings {
        openedx_events::Settings::new()
            .with("EVENT_BUS_KAFKA_BOOTSTRAP_SERVERS", self.env.bootstrap())
            .with("EVENT_BUS_KAFKA_SCHEMA_REGISTRY_URL", self.registry.url())
            .with("EVENT_BUS_TOPIC_PREFIX", &self.prefix)
            .with("EVENTS_SERVICE_NAME", "fault-test")
    }

    /// Produces good events with our producer; returns their ids.
    async fn produce_good(&self, seqs: std::ops::Range<usize>) -> Vec<uuid::Uuid> {
        let producer = openedx_events::kafka::KafkaProducer::from_settings(&self.settings()).unwrap();
        let mut ids = Vec::new();
        for seq in seqs {
            let data = xblock(seq);
            let r = kafka_support::usage_key_record(&self.topic, &data.xblock_info.usage_key, data.clone());
            ids.push(r.metadata.id);
            producer.produce(r).unwrap();
        }
        producer.shutdown(Duration::from_secs(30)).await.unwrap();
        ids
    }

    /// Writes messages with plain rdkafka; returns their offsets.
    async fn produce_raw(&self, messages: &[(&'static str, RawHeaders, Option<Vec<u8>>)]) -> Vec<(i64, &'static str)> {
        use rdkafka::producer::{FutureProducer, FutureRecord};
        let producer: FutureProducer = rdkafka::config::ClientConfig::new()
            .set("bootstrap.servers", self.env.bootstrap())
            .set("message.max.bytes", "2000000")
            .create()
            .unwrap();
        let mut out = Vec::new();
        for (what, hs, payload) in messages {
            let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&self.topic).headers(owned_headers(hs));
            if let Some(p) = payload {
                record = record.payload(&p[..]);
            }
            let delivered = producer
                .send(record, Duration::from_secs(10))
                .await
                .unwrap_or_else(|(e, _)| panic!("cannot write the {what} message: {e}"));
            out.push((delivered.offset, *what));
        }
        out
    }

    /// The committed offset of `group` on the topic's one partition (-1: none).
    fn committed(&self, group: &str) -> i64 {
        use rdkafka::consumer::Consumer;
        let c: rdkafka::consumer::BaseConsumer = rdkafka::config::ClientConfig::new()
            .set("bootstrap.servers", self.env.bootstrap())
            .set("group.id", group)
            .create()
            .unwrap();
        let mut tpl = rdkafka::TopicPartitionList::new();
        tpl.add_partition(&self.topic, 0);
        let committed = c.committed_offsets(tpl, Duration::from_secs(10)).unwrap();
        match committed.elements()[0].offset() {
            rdkafka::Offset::Offset(o) => o,
            _ => -1,
        }
    }

    /// Runs a consumer until `max` messages are handled or dead-lettered (60 s at most);
    /// a panic or a stop is an error, never a hang.
    async fn consume(&self, group: &str, max: u64) -> Result<String, String> {
        use openedx_events::kafka::{KafkaConsumer, KafkaConsumerOptions};
        let options = KafkaConsumerOptions {
            common: openedx_events::consume::ConsumerOptions {
                max_retries: 1,
                retry_delay: Duration::from_millis(200),
                ..Default::default()
            },
            max_messages: Some(max),
            ..Default::default()
        };
        let consumer = KafkaConsumer::new(&self.settings(), "xblock", group, options).unwrap();
        let run = tokio::spawn(consumer.run(tokio::time::sleep(Duration::from_secs(60))));
        match run.await {
            Err(panic) => Err(format!("the consumer panicked: {panic}")),
            Ok(Err(e)) => Err(format!("the consumer stopped: {e}")),
            Ok(Ok(stats)) if stats.handled + stats.dead_lettered < max => {
                Err(format!("only {stats:?} of {max} messages within 60 s (stuck?)"))
            }
            Ok(Ok(stats)) => Ok(format!("{stats:?}")),
        }
    }

    /// `dead_letter_error` of each dead letter, by the original offset. Read with
    /// librdkafka's accessors: a dead letter keeps the original's headers, a key that is
    /// not UTF-8 among them, on which rdkafka's `Headers::iter` panics.
    fn dead_letters(&self, expected: usize) -> HashMap<i64, String> {
        let dead = self.env.read_raw(
            &format!("{}-dead-letter", self.topic),
            expected,
            Duration::from_secs(10),
        );
        let mut out = HashMap::new();
        for (hs, _) in &dead {
            let get = |name: &str| {
                hs.iter()
                    .rev()
                    .find(|(k, _)| k == name.as_bytes())
                    .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            };
            if let Some(offset) = get("dead_letter_offset").and_then(|o| o.parse().ok()) {
                out.insert(offset, get("dead_letter_error").unwrap_or_default());
            }
        }
        out
    }
}

/// The metadata headers of a good message of `id`.
fn ce_headers(id: &str) -> RawHeaders {
    [
        ("ce_type", XBlockPublished::EVENT_TYPE),
        ("ce_id", id),
        ("ce_source", "openedx/cms/web"),
        ("ce_specversion", "1.0"),
        ("ce_time", "2026-11-27T13:20:05.364687+00:00"),
        ("ce_minorversion", "0"),
        ("sourcehost", "h"),
        ("sourcelib", "10.5.0"),
        ("content-type", "application/avro"),
    ]
    .into_iter()
    .map(|(k, v)| (k.as_bytes().to_vec(), Some(v.as_bytes().to_vec())))
    .collect()
}

fn set_header(mut hs: RawHeaders, name: &str, value: Option<Vec<u8>>) -> RawHeaders {
    for (k, v) in &mut hs {
        if k == name.as_bytes() {
            *v = value.clone();
        }
    }
    hs
}

fn drop_header(mut hs: RawHeaders, name: &str) -> RawHeaders {
    hs.retain(|(k, _)| k != name.as_bytes());
    hs
}

fn add_header(mut hs: RawHeaders, name: &[u8], value: &[u8]) -> RawHeaders {
    hs.push((name.to_vec(), Some(value.to_vec())));
    hs
}

/// Messages a peer may write to a topic that cannot be handled, with a good message's
/// framed value and key (to build framings with a wrong schema).
fn hostile_kafka_messages(value: &[u8], key: &[u8]) -> Vec<(&'static str, RawHeaders, Option<Vec<u8>>)> {
    let h = || ce_headers(&uuid::Uuid::new_v4().to_string());
    let v = || Some(value.to_vec());
    let framed = |id: u32, body: &[u8]| {
        let mut out = vec![0u8];
        out.extend(id.to_be_bytes());
        out.extend_from_slice(body);
        Some(out)
    };
    let schema_id = u32::from_be_bytes([value[1], value[2], value[3], value[4]]);
    let body = &value[5..];
    vec![
        (
            "non-UTF-8 ce_type value",
            set_header(h(), "ce_type", Some(vec![0xff, 0xfe])),
            v(),
        ),
        (
            "non-UTF-8 ce_id value",
            set_header(h(), "ce_id", Some(vec![0x80; 36])),
            v(),
        ),
        (
            "non-UTF-8 ce_time value",
            set_header(h(), "ce_time", Some(b"2026-11-27T13:20:05\xff".to_vec())),
            v(),
        ),
        ("ce_id without a value", set_header(h(), "ce_id", None), v()),
        ("ce_type without a value", set_header(h(), "ce_type", None), v()),
        ("missing ce_time", drop_header(h(), "ce_time"), v()),
        ("missing ce_type", drop_header(h(), "ce_type"), v()),
        (
            "doubled ce_type, same value",
            add_header(h(), b"ce_type", XBlockPublished::EVENT_TYPE.as_bytes()),
            v(),
        ),
        (
            "doubled ce_time, two values",
            add_header(h(), b"ce_time", b"2020-01-01T00:00:00+00:00"),
            v(),
        ),
        ("ce_id not a UUID", set_header(h(), "ce_id", Some(b"42".to_vec())), v()),
        (
            "ce_time not a time",
            set_header(h(), "ce_time", Some(b"yesterday".to_vec())),
            v(),
        ),
        (
            "ce_minorversion not a number",
            set_header(h(), "ce_minorversion", Some(b"x".to_vec())),
            v(),
        ),
        (
            "huge ce_type (200 KB)",
            set_header(h(), "ce_type", Some(vec![b'x'; 200_000])),
            v(),
        ),
        ("no value (tombstone)", h(), None),
        ("empty value", h(), Some(Vec::new())),
        ("magic byte 1", h(), Some([&[1u8][..], &value[1..]].concat())),
        ("frame header only", h(), framed(schema_id, &[])),
        ("unknown schema id", h(), framed(u32::MAX, body)),
        ("the key's schema id (writer schema a string)", h(), Some(key.to_vec())),
        ("truncated body", h(), framed(schema_id, &body[..body.len() / 2])),
        (
            "huge body (900 KB of garbage)",
            h(),
            framed(schema_id, &vec![0xfd; 900_000]),
        ),
        (
            "string length of 2^62",
            h(),
            framed(schema_id, &[0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01]),
        ),
    ]
}

/// Hostile messages between two good ones: the Kafka consumer dead-letters each one to
/// `{topic}-dead-letter` with a reason, delivers the good ones, never panics, and commits
/// past everything (no stuck offset).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_consumer_dead_letters_every_hostile_message_with_a_reason_and_commits_past_it() {
    redis_support::init_tracing();
    let k = KafkaHostile::new();
    let seen: Arc<Mutex<Vec<uuid::Uuid>>> = Arc::default();
    {
        let seen = seen.clone();
        XBlockPublished::signal().connect(move |env: &openedx_events::Envelope<XBlockPublished>| {
            seen.lock().unwrap().push(env.metadata.id);
        });
    }
    let mut good = k.produce_good(0..1).await;
    let first = &k.env.read_all(&k.topic, 1, Duration::from_secs(20))[0];
    use rdkafka::Message;
    let (value, key) = (first.payload().unwrap().to_vec(), first.key().unwrap().to_vec());
    let hostile = hostile_kafka_messages(&value, &key);
    let offsets = k.produce_raw(&hostile).await;
    good.extend(k.produce_good(1..2).await);
    let total = hostile.len() as u64 + 2;
    let group = kafka_support::unique("g");
    let result = k.consume(&group, total).await;
    let reasons = k.dead_letters(hostile.len());
    let mut problems = Vec::new();
    for (offset, what) in &offsets {
        match reasons.get(offset) {
            None => problems.push(format!("{what} (offset {offset}): not dead-lettered")),
            Some(r) if r.trim().is_empty() => problems.push(format!("{what}: dead-lettered without a reason")),
            Some(r) => eprintln!("{what}: {}", r.chars().take(160).collect::<String>()),
        }
    }
    let committed = k.committed(&group);
    let seen = seen.lock().unwrap().clone();
    assert!(
        problems.is_empty() && result.is_ok() && seen == good && committed == total as i64,
        "{problems:#?}\nconsumer: {result:?}\nreceived {seen:?}, expected {good:?}\ncommitted {committed} of {total}"
    );
}

/// A message whose header name is not UTF-8 (another header than the metadata ones):
/// dead-lettered like any unreadable message, never a panic (rdkafka 0.39's
/// `BorrowedHeaders::iter` unwraps the name's UTF-8), and committed past.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_consumer_dead_letters_a_message_with_a_non_utf8_header_name() {
    redis_support::init_tracing();
    let k = KafkaHostile::new();
    let mut good = k.produce_good(0..1).await;
    let first = &k.env.read_all(&k.topic, 1, Duration::from_secs(20))[0];
    use rdkafka::Message;
    let value = first.payload().unwrap().to_vec();
    let hostile = vec![(
        "non-UTF-8 header name",
        add_header(ce_headers(&uuid::Uuid::new_v4().to_string()), b"x-\xff\xfe", b"v"),
        Some(value),
    )];
    let offsets = k.produce_raw(&hostile).await;
    good.extend(k.produce_good(1..2).await);
    let group = kafka_support::unique("g");
    let result = k.consume(&group, 3).await;
    let reasons = k.dead_letters(1);
    let committed = k.committed(&group);
    assert!(
        result.is_ok() && reasons.get(&offsets[0].0).is_some_and(|r| !r.is_empty()) && committed == 3,
        "consumer: {result:?}\ndead letters {reasons:?} (expected one for offset {})\ncommitted {committed} of 3",
        offsets[0].0
    );
}

// ---------------------------------------------------------------------------------------
// Kafka under broker faults. A TCP proxy needs a broker that advertises the proxy's
// address (librdkafka's mock cluster advertises its own listeners, so a client would
// bypass the proxy after the first metadata answer); until such a broker is part of the
// test set-up, the faults come from the mock cluster's own hooks: brokers down and up
// (their connections cut), slow round trips, retriable request errors and disconnects in
// the middle of produce and fetch requests, partition leaders moving.

/// One random broker fault on the mock cluster, applied now; returns how to undo it.
fn kafka_fault(
    rng: &mut Rng,
    mock: &rdkafka::mocking::MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
    topic: &str,
    partitions: i32,
    allowed: &[u64],
) -> (String, Option<i32>) {
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
    let broker = rng.range(1, 3) as i32;
    // `OEV_KAFKA_FAULTS=0,4` keeps only those kinds (to find which one a failure needs).
    let kinds: Vec<u64> = std::env::var("OEV_KAFKA_FAULTS")
        .ok()
        .map(|v| v.split(',').filter_map(|k| k.trim().parse().ok()).collect())
        .filter(|k: &Vec<u64>| !k.is_empty())
        .unwrap_or_else(|| allowed.to_vec());
    let kind = kinds[rng.range(0, kinds.len() as u64 - 1) as usize];
    match kind {
        0 => {
            mock.broker_down(broker).unwrap();
            (format!("broker {broker} down"), Some(broker))
        }
        1 => {
            let rtt = rng.range(50, 600);
            mock.broker_round_trip_time(broker, Duration::from_millis(rtt)).unwrap();
            (format!("broker {broker} round trip {rtt} ms"), None)
        }
        2 => {
            let errors: Vec<RDKafkaRespErr> = (0..rng.range(1, 6))
                .map(|_| match rng.range(0, 3) {
                    0 => RDKafkaRespErr::RD_KAFKA_RESP_ERR__TRANSPORT,
                    1 => RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
                    2 => RDKafkaRespErr::RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
                    _ => RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS,
                })
                .collect();
            mock.request_errors(RDKafkaApiKey::Produce, &errors);
            (format!("produce requests fail: {errors:?}"), None)
        }
        3 => {
            let errors: Vec<RDKafkaRespErr> = (0..rng.range(1, 4))
                .map(|_| match rng.range(0, 1) {
                    0 => RDKafkaRespErr::RD_KAFKA_RESP_ERR__TRANSPORT,
                    _ => RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
                })
                .collect();
            mock.request_errors(RDKafkaApiKey::Fetch, &errors);
            (format!("fetch requests fail: {errors:?}"), None)
        }
        4 => {
            let p = rng.range(0, partitions as u64 - 1) as i32;
            mock.partition_leader(topic, p, Some(broker)).unwrap();
            (format!("partition {p} leader now broker {broker}"), None)
        }
        _ => {
            mock.request_errors(
                RDKafkaApiKey::OffsetCommit,
                &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_COORDINATOR_NOT_AVAILABLE],
            );
            ("an offset commit fails".to_owned(), None)
        }
    }
}

/// Runs random broker faults until `done` is set, then undoes what lasts (brokers down,
/// slow round trips). Returns the faults applied.
async fn kafka_schedule(
    rng: &mut Rng,
    mock: &rdkafka::mocking::MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
    topic: &str,
    partitions: i32,
    allowed: &[u64],
    done: impl Fn() -> bool,
) -> Vec<String> {
    let mut log = Vec::new();
    while !done() {
        let (what, down) = kafka_fault(rng, mock, topic, partitions, allowed);
        let length = Duration::from_millis(rng.range(100, 700));
        log.push(format!("{what} for {length:?}"));
        let until = Instant::now() + length;
        while Instant::now() < until && !done() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if let Some(b) = down {
            mock.broker_up(b).unwrap();
        }
        for b in 1..=3 {
            mock.broker_round_trip_time(b, Duration::ZERO).unwrap();
        }
    }
    for api in [
        rdkafka::types::RDKafkaApiKey::Produce,
        rdkafka::types::RDKafkaApiKey::Fetch,
        rdkafka::types::RDKafkaApiKey::OffsetCommit,
    ] {
        mock.clear_request_errors(api);
    }
    log
}

/// N events produced to a 3-partition topic of a 3-broker mock cluster while brokers go
/// down, slow down, fail or cut requests and partition leaders move, then consumed back
/// under the same kind of faults. Counted from outside (a plain rdkafka reader, and the
/// receivers): every event in the topic with its original id; `shutdown` says Ok only when
/// all are there; the consumer sees every event in the topic's order per key (redeliveries
/// as at-least-once allows), dead-letters nothing and commits to the end.
///
/// Duplicates and order in the topic are printed, not asserted: the mock cluster checks
/// idempotent producers' sequence numbers only for transactional ones (librdkafka's
/// `rd_kafka_mock_validate_records` returns early without a `TransactionalId`), so a retried
/// request it had already appended is appended again, and a retry can land after later
/// batches, which a real broker refuses. On a real broker behind the fault proxy they
/// are to be asserted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_producer_and_consumer_through_broker_faults_lose_double_and_reorder_nothing() {
    use openedx_events::kafka::KafkaProducer;
    use openedx_events::kafka::{KafkaConsumer, KafkaConsumerOptions};
    redis_support::init_tracing();
    let seed = proxy_support::seed("kafka");
    let mut rng = Rng::new(seed);
    // Always the mock cluster: its hooks are the faults.
    let mock = rdkafka::mocking::MockCluster::new(3).unwrap();
    let bootstrap = mock.bootstrap_servers();
    let registry = registry_support::RegistryHandle::start();
    let prefix = kafka_support::unique("faults");
    let topic = format!("{prefix}-xblock");
    let partitions = 3;
    mock.create_topic(&topic, partitions, 1).unwrap();
    mock.create_topic(&format!("{topic}-dead-letter"), 1, 1).unwrap();
    let settings = openedx_events::Settings::new()
        .with("EVENT_BUS_KAFKA_BOOTSTRAP_SERVERS", &bootstrap)
        .with("EVENT_BUS_KAFKA_SCHEMA_REGISTRY_URL", registry.url())
        .with("EVENT_BUS_TOPIC_PREFIX", &prefix)
        .with("EVENTS_SERVICE_NAME", "fault-test")
        .with("EVENT_BUS_KAFKA_CONSUMER_CONFIG_SESSION_TIMEOUT_MS", "6000")
        .with("EVENT_BUS_KAFKA_CONSUMER_CONFIG_HEARTBEAT_INTERVAL_MS", "1000")
        // A broker back up is found again within half a second (librdkafka waits up to 10 s).
        .with("EVENT_BUS_KAFKA_CONFIG_RECONNECT_BACKOFF_MAX_MS", "500");

    // Produce under faults.
    let n = 3000usize;
    let producer = Arc::new(KafkaProducer::from_settings(&settings).unwrap());
    let (sent, records) = kafka_records(&topic, n, &mut rng);
    let producing = {
        tokio::spawn(produce_with_pauses(
            producer.clone(),
            records,
            Duration::from_millis(25),
        ))
    };
    let produced_flag = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (refused, mut faults) = {
        let flag = produced_flag.clone();
        // No injected produce-request errors here: the mock fails the one request and
        // accepts the next one in flight, which a real broker refuses to an idempotent
        // producer (OUT_OF_ORDER_SEQUENCE_NUMBER); librdkafka then takes the failed batch
        // for persisted (a later one was acknowledged) and reports it delivered: a loss,
        // and a reorder, made by the mock (seed 97855776328301841 lost 4 that way).
        let schedule = kafka_schedule(&mut rng, &mock, &topic, partitions, &[0, 1, 3, 4, 5], move || {
            flag.load(std::sync::atomic::Ordering::Acquire)
        });
        let wait = async {
            let refused = producing.await.unwrap();
            // Keep the faults on while the last batches are in flight.
            tokio::time::sleep(Duration::from_millis(500)).await;
            produced_flag.store(true, std::sync::atomic::Ordering::Release);
            refused
        };
        tokio::join!(wait, schedule)
    };
    let shutdown = producer.shutdown(Duration::from_secs(30)).await;
    let (in_topic, by_partition, _) = topic_ids(&bootstrap, &topic, partitions, n);
    let produced = judge(&sent, &by_partition);
    faults.push("-- consumer --".to_owned());

    // Consume under faults.
    let deliveries = record_deliveries(&sent, 0);
    let group = kafka_support::unique("g");
    let consumer = KafkaConsumer::new(&settings, "xblock", &group, KafkaConsumerOptions::default()).unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let consuming = tokio::spawn(consumer.run(async move {
        let _ = stop_rx.await;
    }));
    let distinct = |d: &Mutex<Vec<uuid::Uuid>>| d.lock().unwrap().iter().collect::<HashSet<_>>().len();
    let deadline = Instant::now() + Duration::from_secs(40);
    {
        let d = deliveries.clone();
        let want = in_topic.iter().collect::<HashSet<_>>().len();
        let log = kafka_schedule(&mut rng, &mock, &topic, partitions, &[0, 1, 2, 3, 4, 5], move || {
            distinct(&d) >= want || Instant::now() > deadline
        })
        .await;
        faults.extend(log);
    }
    let settle = Instant::now() + Duration::from_secs(20);
    while distinct(&deliveries) < in_topic.iter().collect::<HashSet<_>>().len() && Instant::now() < settle {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = stop_tx.send(());
    let consumed = tokio::time::timeout(Duration::from_secs(30), consuming)
        .await
        .expect("the consumer did not stop within 30 s of its shutdown")
        .expect("the consumer task panicked");
    let committed = committed_sum(&bootstrap, &group, &topic, partitions);
    let dead = {
        let c: rdkafka::consumer::BaseConsumer = rdkafka::config::ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("group.id", kafka_support::unique("reader"))
            .create()
            .unwrap();
        read_topic(&c, &format!("{topic}-dead-letter"), 1, 0).len()
    };
    let delivered = deliveries.lock().unwrap().clone();
    let received = judge(&sent, &delivered);
    // The consumer's order is judged against the topic's: for each key, first deliveries
    // in the order of first appearance in its partition.
    let consumer_order_breaks = order_breaks(&sent, &by_partition, &delivered);
    let report = format!(
        "seed {seed} (replay with OEV_FAULT_SEED={seed})\nproducer shutdown {shutdown:?}, refused {}\n\
         topic holds {} messages for {n} events: missing {}, doubled {}, out of order {:?}\n\
         consumer {consumed:?}: {} deliveries, missing {}, redelivered {}, out of order {:?}, \
         against the topic's order (key, seq) {consumer_order_breaks:?}\n\
         committed {committed} of {}; dead-lettered {dead}\nfaults:\n  {}",
        short(&refused),
        in_topic.len(),
        short(&produced.missing),
        short(&produced.doubled),
        produced.out_of_order,
        delivered.len(),
        short(&received.missing),
        received.doubled.len(),
        received.out_of_order,
        in_topic.len(),
        faults.join("\n  ")
    );
    eprintln!("{report}");
    assert!(
        refused.is_empty()
            && shutdown.is_ok()
            && produced.missing.is_empty()
            && consumed.is_ok()
            && received.missing.is_empty()
            && consumer_order_breaks.is_empty()
            && committed == in_topic.len() as i64
            && dead == 0,
        "{report}"
    );
}

/// N XBlock events for `topic` keyed by usage key, each with a 5% chance of a pause after
/// it, and the `seq` of each by id.
fn kafka_records(topic: &str, n: usize, rng: &mut Rng) -> (HashMap<uuid::Uuid, usize>, Vec<(ProducerRecord, bool)>) {
    let mut sent = HashMap::new();
    let mut records = Vec::new();
    for seq in 0..n {
        let data = xblock(seq);
        let r = kafka_support::usage_key_record(topic, &data.xblock_info.usage_key, data.clone());
        sent.insert(r.metadata.id, seq);
        records.push((r, rng.chance(5)));
    }
    (sent, records)
}

/// Produces `records` in order, sleeping `pause` after those marked; returns the refusals.
async fn produce_with_pauses(
    producer: Arc<openedx_events::kafka::KafkaProducer>,
    records: Vec<(ProducerRecord, bool)>,
    pause: Duration,
) -> Vec<String> {
    let mut refused = Vec::new();
    for (r, pause_after) in records {
        let id = r.metadata.id;
        if let Err(e) = producer.produce(r) {
            refused.push(format!("{id}: {e}"));
        }
        if pause_after {
            tokio::time::sleep(pause).await;
        }
    }
    refused
}

/// What a topic holds, read with a plain rdkafka reader: the ids in reading order, the
/// ids partition by partition (a key lives on one partition, so its order is the
/// partition's), and (partition, id) in reading order.
fn topic_ids(bootstrap: &str, topic: &str, partitions: i32, n: usize) -> (Vec<uuid::Uuid>, Vec<uuid::Uuid>, Written) {
    let reader: rdkafka::consumer::BaseConsumer = rdkafka::config::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", kafka_support::unique("reader"))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let written = read_topic(&reader, topic, partitions, n);
    let in_topic = written.iter().map(|(_, id)| *id).collect();
    let mut by_partition = Vec::new();
    for p in 0..partitions {
        by_partition.extend(written.iter().filter(|(part, _)| *part == p).map(|(_, id)| *id));
    }
    (in_topic, by_partition, written)
}

/// A topic's messages as (partition, `ce_id`), in offset order per partition.
type Written = Vec<(i32, uuid::Uuid)>;

/// The ids of the XBlock events of `sent` the receivers get, in delivery order, each only
/// with the data its id was sent with (a wrong payload under the right id counts as missing).
/// With `max_ms` above 0 the receiver is async and takes 0 to `max_ms` ms (drawn from the
/// event's sequence number) before it records the event, so that a consumer stopped in
/// the middle of a message leaves it unrecorded.
fn record_deliveries(sent: &HashMap<uuid::Uuid, usize>, max_ms: u64) -> Arc<Mutex<Vec<uuid::Uuid>>> {
    let deliveries: Arc<Mutex<Vec<uuid::Uuid>>> = Arc::default();
    let sent = Arc::new(sent.clone());
    let into = deliveries.clone();
    let record = move |env: &openedx_events::Envelope<XBlockPublished>| {
        if sent.get(&env.metadata.id) == Some(&seq_of(&env.data)) {
            into.lock().unwrap().push(env.metadata.id);
        }
    };
    if max_ms == 0 {
        XBlockPublished::signal().connect(record);
    } else {
        let record = Arc::new(record);
        XBlockPublished::signal().connect_async(move |env: openedx_events::Envelope<XBlockPublished>| {
            let record = record.clone();
            async move {
                let ms = (seq_of(&env.data) as u64).wrapping_mul(0x9e37_79b9) % (max_ms + 1);
                tokio::time::sleep(Duration::from_millis(ms)).await;
                record(&env);
            }
        });
    }
    deliveries
}

/// Creates `topics` (name, partitions) through the admin API: tansu does not create a
/// topic on first use.
async fn create_topics(bootstrap: &str, topics: &[(&str, i32)]) {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    let admin: AdminClient<rdkafka::client::DefaultClientContext> = rdkafka::config::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("admin client");
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|(name, partitions)| NewTopic::new(name, *partitions, TopicReplication::Fixed(1)))
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for result in admin.create_topics(&new, &options).await.expect("create_topics") {
        if let Err((topic, code)) = result {
            assert_eq!(
                code,
                rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists,
                "create topic {topic}"
            );
        }
    }
}

/// The sum of a group's committed offsets over `partitions` partitions of `topic`.
fn committed_sum(bootstrap: &str, group: &str, topic: &str, partitions: i32) -> i64 {
    committed_offsets(bootstrap, group, topic, partitions).iter().sum()
}

/// A group's committed offset of each of `partitions` partitions of `topic` (0 for none).
fn committed_offsets(bootstrap: &str, group: &str, topic: &str, partitions: i32) -> Vec<i64> {
    try_committed_offsets(bootstrap, group, topic, partitions).unwrap()
}

/// [`committed_offsets`], or why the broker did not say (e.g. under faults).
fn try_committed_offsets(
    bootstrap: &str,
    group: &str,
    topic: &str,
    partitions: i32,
) -> Result<Vec<i64>, rdkafka::error::KafkaError> {
    use rdkafka::consumer::Consumer;
    let c: rdkafka::consumer::BaseConsumer = rdkafka::config::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .create()
        .unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let committed = c.committed_offsets(tpl, Duration::from_secs(10))?;
    Ok(committed
        .elements()
        .iter()
        .map(|e| match e.offset() {
            rdkafka::Offset::Offset(o) => o,
            _ => 0,
        })
        .collect())
}

/// The ids of `in_topic` not among `delivered`.
fn not_delivered(in_topic: &[uuid::Uuid], delivered: &[uuid::Uuid]) -> Vec<uuid::Uuid> {
    let seen: HashSet<&uuid::Uuid> = delivered.iter().collect();
    in_topic.iter().filter(|id| !seen.contains(id)).copied().collect()
}

/// Where `ids` are in the topic, as offset ranges per partition (`written`: (partition,
/// id) in offset order per partition, from offset 0), e.g. `p0 [12-57, 60]`.
fn offset_ranges(written: &[(i32, uuid::Uuid)], ids: &[uuid::Uuid]) -> String {
    let wanted: HashSet<&uuid::Uuid> = ids.iter().collect();
    let mut next: HashMap<i32, i64> = HashMap::new();
    let mut found: std::collections::BTreeMap<i32, Vec<i64>> = Default::default();
    for (p, id) in written {
        let offset = next.entry(*p).or_default();
        if wanted.contains(id) {
            found.entry(*p).or_default().push(*offset);
        }
        *offset += 1;
    }
    let mut out = Vec::new();
    for (p, offsets) in found {
        let mut ranges: Vec<(i64, i64)> = Vec::new();
        for o in offsets {
            match ranges.last_mut() {
                Some((_, end)) if *end + 1 == o => *end = o,
                _ => ranges.push((o, o)),
            }
        }
        let ranges: Vec<String> = ranges
            .iter()
            .map(|(a, b)| if a == b { a.to_string() } else { format!("{a}-{b}") })
            .collect();
        out.push(format!("p{p} [{}]", ranges.join(", ")));
    }
    out.join("; ")
}

/// First deliveries that break the order of `by_partition` (the topic's order per key),
/// as (key, seq).
fn order_breaks(
    sent: &HashMap<uuid::Uuid, usize>,
    by_partition: &[uuid::Uuid],
    delivered: &[uuid::Uuid],
) -> Vec<(usize, usize)> {
    let mut rank = HashMap::new();
    for (i, id) in by_partition.iter().enumerate() {
        rank.entry(*id).or_insert(i);
    }
    let mut breaks = Vec::new();
    let mut last: HashMap<usize, usize> = HashMap::new();
    let mut seen = HashSet::new();
    for id in delivered {
        if !seen.insert(*id) {
            continue;
        }
        let (Some(&seq), Some(&r)) = (sent.get(id), rank.get(id)) else {
            continue;
        };
        let key = seq % KEYS;
        if let Some(&prev) = last.get(&key) {
            if prev > r && breaks.len() < 20 {
                breaks.push((key, seq));
            }
        }
        last.insert(key, r.max(last.get(&key).copied().unwrap_or(0)));
    }
    breaks
}

/// The order check itself can fail: a key's events delivered out of the topic's order
/// are found; other keys interleaving, and a redelivery after later events, are not breaks.
#[test]
fn the_order_check_finds_a_key_delivered_out_of_the_topics_order() {
    let ids: Vec<uuid::Uuid> = (0..4 * KEYS).map(|_| uuid::Uuid::new_v4()).collect();
    let sent: HashMap<uuid::Uuid, usize> = ids.iter().enumerate().map(|(seq, id)| (*id, seq)).collect();
    assert!(order_breaks(&sent, &ids, &ids).is_empty());
    // Events 1 and 1 + KEYS share key 1.
    let mut swapped = ids.clone();
    swapped.swap(1, 1 + KEYS);
    assert_eq!(order_breaks(&sent, &ids, &swapped), vec![(1, 1)]);
    let mut other_keys = ids.clone();
    other_keys.swap(1, 2);
    assert!(order_breaks(&sent, &ids, &other_keys).is_empty());
    let mut redelivered = ids.clone();
    redelivered.push(ids[1]);
    assert!(order_breaks(&sent, &ids, &redelivered).is_empty());
}

/// N events through the fault proxy to a real Kafka-protocol broker (tansu, advertising
/// the proxy's address, so that every connection of every client goes through the proxy):
/// the producer (about 8 s of producing), then the consumer, while the proxy cuts
/// connections mid-request, holds replies then cuts, delays, slows the link and refuses
/// connections, on a schedule drawn from the printed seed. The consumer's receiver takes
/// 0-3 ms; the consumer is stopped (gracefully or by aborting its task) and started again
/// in its group up to `RESTARTS` times, sometimes with two members at once, and the proxy
/// is down once for longer than the session timeout. Counted from outside, on a clean
/// link afterwards: the topic holds every event once, with its original id, in order per
/// key (an idempotent producer on a broker that checks sequence numbers); `shutdown` said
/// Ok only because all were there; the receivers saw every event, in the topic's order per
/// key (a redelivery is what at-least-once allows and is printed), each graceful stop
/// returned within 60 s, nothing was dead-lettered and the group's committed offsets reach
/// the end of every partition.
///
/// The seed replays the fault schedule and the stops, not the timing of threads and
/// network: a failure may not come back with its seed (run it a few times).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_through_a_proxy_to_a_real_broker_loses_doubles_and_reorders_nothing() {
    use openedx_events::kafka::{KafkaConsumer, KafkaConsumerOptions, KafkaProducer};
    redis_support::init_tracing();
    let seed = proxy_support::seed("kafka through a proxy");
    let mut rng = Rng::new(seed);
    let broker_port = tansu_support::free_port();
    let proxy = FaultProxy::start(&format!("127.0.0.1:{broker_port}")).await;
    let broker = tansu_support::Tansu::start(broker_port, Some(proxy.addr()));
    let bootstrap = proxy.addr().to_string();
    let registry = registry_support::RegistryHandle::start();
    let prefix = kafka_support::unique("proxied");
    let topic = format!("{prefix}-xblock");
    let dead_letter = format!("{topic}-dead-letter");
    let partitions = 3;
    create_topics(&bootstrap, &[(&topic, partitions), (&dead_letter, 1)]).await;
    let settings = openedx_events::Settings::new()
        .with("EVENT_BUS_KAFKA_BOOTSTRAP_SERVERS", &bootstrap)
        .with("EVENT_BUS_KAFKA_SCHEMA_REGISTRY_URL", registry.url())
        .with("EVENT_BUS_TOPIC_PREFIX", &prefix)
        .with("EVENTS_SERVICE_NAME", "fault-test")
        .with("EVENT_BUS_KAFKA_CONSUMER_CONFIG_SESSION_TIMEOUT_MS", "10000")
        .with("EVENT_BUS_KAFKA_CONSUMER_CONFIG_HEARTBEAT_INTERVAL_MS", "1000")
        .with("EVENT_BUS_KAFKA_CONFIG_RECONNECT_BACKOFF_MAX_MS", "500")
        // One record per batch: tansu 0.6.0 answers a fetch at an offset inside a batch
        // with the batches after it, so a consumer that resumes mid-batch (a restart, a
        // rebalance, a cut fetch) silently skips the rest of that batch, or polls nothing
        // forever when it is the partition's last. Fixed upstream after 0.6.0 (tansu
        // commit 87db6ea, "return the batch containing a mid-batch fetch offset"); found
        // by this test as events missing behind a committed offset and as stalled
        // partitions. With single-record batches no offset is inside a batch.
        .with("EVENT_BUS_KAFKA_PRODUCER_CONFIG_BATCH_NUM_MESSAGES", "1");

    // Produce under faults.
    let n = 2000usize;
    let producer = Arc::new(KafkaProducer::from_settings(&settings).unwrap());
    let (sent, records) = kafka_records(&topic, n, &mut rng);
    let (done, faults) = run_faults(proxy, seed, 60_000);
    let refused = {
        tokio::spawn(produce_with_pauses(
            producer.clone(),
            records,
            Duration::from_millis(80),
        ))
        .await
        .unwrap()
    };
    // Shut down while the faults go on, then drop the producer before reading the topic:
    // librdkafka discards what it still holds when its producer is dropped, so a shutdown
    // that said Ok too early shows as missing events.
    let shutdown = producer.shutdown(Duration::from_secs(60)).await;
    drop(producer);
    done.send(true).unwrap();
    let mut proxy = faults.await.unwrap();
    let mut history = vec![proxy.history()];
    proxy.log.clear();

    let (in_topic, by_partition, written) = topic_ids(&bootstrap, &topic, partitions, n);
    let produced = judge(&sent, &by_partition);

    let distinct = |d: &Mutex<Vec<uuid::Uuid>>| d.lock().unwrap().iter().collect::<HashSet<_>>().len();
    let want = in_topic.iter().collect::<HashSet<_>>().len();
    // Consume under faults, with a receiver that takes 0-3 ms per event and the consumer
    // stopped and started again in the same group `RESTARTS` times, at points drawn from
    // the seed while the events flow: gracefully or by aborting its task, sometimes with the next one started before the old one is gone (two members
    // sharing the partitions), and once with the proxy down for longer than the session
    // timeout (10 s). A stop in the middle of a message must leave it to be delivered
    // again: an offset stored or committed before its message was handled shows as a
    // missing event.
    let deliveries = record_deliveries(&sent, 3);
    let group = kafka_support::unique("g");
    let started = std::sync::atomic::AtomicUsize::new(0);
    let start_consumer = || {
        use tracing::Instrument;
        let consumer = KafkaConsumer::new(&settings, "xblock", &group, KafkaConsumerOptions::default()).unwrap();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let n = started.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        let run = consumer.run(async move {
            let _ = stop_rx.await;
        });
        let task = tokio::spawn(run.instrument(tracing::info_span!("consumer", n)));
        (stop_tx, task)
    };
    let (outage_tx, outage_rx) = tokio::sync::watch::channel(false);
    let (done, faults) =
        run_faults_with_outage(proxy, seed ^ 0xc0de, 60_000, Some((outage_rx, Duration::from_secs(13))));
    // The stops, and the long outage, at points drawn from the seed while the events flow.
    let mut restarts = Rng::new(seed ^ 0x5e55);
    let span = want as u64;
    let mut points: Vec<usize> = (0..RESTARTS)
        .map(|_| restarts.range(span / 20, span - span / 20) as usize)
        .collect();
    points.sort_unstable();
    let outage_at = restarts.range(span / 10, span / 2) as usize;
    let mut stops: Vec<String> = Vec::new();
    let mut graceful_failures: Vec<String> = Vec::new();
    let mut current = start_consumer();
    for point in points {
        let deadline = Instant::now() + Duration::from_secs(60);
        while distinct(&deliveries) < point && Instant::now() < deadline {
            if distinct(&deliveries) >= outage_at {
                outage_tx.send_replace(true);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let next = restarts.chance(30).then(start_consumer);
        let overlap = if next.is_some() {
            ", the next one started first"
        } else {
            ""
        };
        let at = format!("at {} of {want} delivered{overlap}", distinct(&deliveries));
        let (stop_tx, task) = current;
        if restarts.chance(50) {
            let began = Instant::now();
            let _ = stop_tx.send(());
            let outcome = match tokio::time::timeout(Duration::from_secs(60), task).await {
                Ok(Ok(Ok(stats))) if stats.dead_lettered == 0 => {
                    format!(
                        "stopped {at}: {} handled, in {} ms",
                        stats.handled,
                        began.elapsed().as_millis()
                    )
                }
                Ok(Ok(other)) => format!("stop {at} returned {other:?}"),
                Ok(Err(e)) => format!("stop {at}: the consumer task failed: {e}"),
                Err(_) => format!("stop {at}: not stopped within 60 s"),
            };
            if !outcome.starts_with("stopped") {
                graceful_failures.push(outcome.clone());
            }
            stops.push(outcome);
        } else {
            task.abort();
            let _ = task.await;
            stops.push(format!("aborted {at}"));
        }
        let missing = not_delivered(&by_partition, &deliveries.lock().unwrap());
        let committed = tokio::task::block_in_place(|| try_committed_offsets(&bootstrap, &group, &topic, partitions));
        stops.push(format!(
            "    then committed {committed:?}; not yet delivered {}",
            offset_ranges(&written, &missing)
        ));
        current = next.unwrap_or_else(start_consumer);
    }
    outage_tx.send_replace(true);
    let deadline = Instant::now() + Duration::from_secs(60);
    while distinct(&deliveries) < want && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A little longer under faults: commits and redeliveries of the last messages.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    done.send(true).unwrap();
    let proxy = faults.await.unwrap();
    history.push(proxy.history());
    // On the clean link: the last commits go through before the stop.
    let settle = Instant::now() + Duration::from_secs(20);
    while (distinct(&deliveries) < want || committed_sum(&bootstrap, &group, &topic, partitions) < want as i64)
        && Instant::now() < settle
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (stop_tx, consuming) = current;
    let _ = stop_tx.send(());
    let consumed = tokio::time::timeout(Duration::from_secs(30), consuming)
        .await
        .expect("the consumer did not stop within 30 s of its shutdown")
        .expect("the consumer task panicked");
    let committed = committed_sum(&bootstrap, &group, &topic, partitions);
    // What the dead-letter topic holds, from its watermarks (no waiting for messages
    // that may come): every consumer has stopped, and a message is dead-lettered only once
    // its write was acknowledged.
    let dead = {
        use rdkafka::consumer::Consumer;
        let reader: rdkafka::consumer::BaseConsumer = rdkafka::config::ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .create()
            .unwrap();
        let (low, high) = reader
            .fetch_watermarks(&dead_letter, 0, Duration::from_secs(10))
            .unwrap();
        high - low
    };
    let delivered = deliveries.lock().unwrap().clone();
    let received = judge(&sent, &delivered);
    let consumer_order_breaks = order_breaks(&sent, &by_partition, &delivered);
    let report = format!(
        "seed {seed} (replay with OEV_FAULT_SEED={seed})\nproducer shutdown {shutdown:?}, refused {}\n\
         topic holds {} messages for {n} events: missing {}, doubled {}, out of order {:?}, unknown {}\n\
         consumer {consumed:?}: {} deliveries, missing {} (offsets {}), redelivered {}, out of order \
         against the topic (key, seq) {consumer_order_breaks:?}\ncommitted {committed} of {}; dead-lettered {dead}\n\
         consumer stops and restarts:\n  {}\nproducer faults:\n  {}\nconsumer faults:\n  {}\ntansu log (tail):\n{}",
        short(&refused),
        in_topic.len(),
        short(&produced.missing),
        short(&produced.doubled),
        produced.out_of_order,
        produced.unknown,
        delivered.len(),
        short(&received.missing),
        offset_ranges(&written, &not_delivered(&by_partition, &delivered)),
        received.doubled.len(),
        in_topic.len(),
        stops.join("\n  "),
        history[0],
        history[1],
        broker.log_text()
    );
    eprintln!("{report}");
    assert!(
        refused.is_empty()
            && shutdown.is_ok()
            && produced.missing.is_empty()
            && produced.doubled.is_empty()
            && produced.out_of_order.is_empty()
            && produced.unknown == 0
            && in_topic.len() == n
            && consumed.as_ref().is_ok_and(|stats| stats.dead_lettered == 0)
            && graceful_failures.is_empty()
            && received.missing.is_empty()
            && consumer_order_breaks.is_empty()
            && committed == n as i64
            && dead == 0,
        "{report}"
    );
}

/// Every message of a topic as (partition, `ce_id`), in offset order per partition, read
/// until `expected` are there (then a short grace period for more) or 30 s.
fn read_topic(
    consumer: &rdkafka::consumer::BaseConsumer,
    topic: &str,
    partitions: i32,
    expected: usize,
) -> Vec<(i32, uuid::Uuid)> {
    use rdkafka::consumer::Consumer;
    use rdkafka::message::Headers;
    use rdkafka::Message;
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, rdkafka::Offset::Beginning).unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut grace: Option<Instant> = None;
    loop {
        if out.len() >= expected && grace.is_none() {
            grace = Some(Instant::now() + Duration::from_millis(1000));
        }
        if grace.is_some_and(|g| Instant::now() > g) || Instant::now() > deadline {
            return out;
        }
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            let id = m
                .headers()
                .and_then(|h| h.iter().find(|h| h.key == "ce_id").and_then(|h| h.value))
                .and_then(|v| std::str::from_utf8(v).ok())
                .and_then(|v| v.parse().ok())
                .unwrap_or_default();
            out.push((m.partition(), id));
        }
    }
}
