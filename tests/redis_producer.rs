//! The Redis Streams producer against a real Redis: wire fields, order, MAXLEN trimming,
//! reconnecting after CLIENT KILL and after a server restart without losing or doubling
//! events, the full-buffer policy, flush and shutdown, refused commands, and
//! authentication over plain TCP and TLS.

mod redis_support;

use std::sync::Arc;
use std::time::{Duration, Instant};

// A glob import: `producer_config!` finds the event types through hidden aliases.
use openedx_events::catalog::content_authoring::*;
use openedx_events::produce::{ProduceError, Producer, ProducerRecord};
use openedx_events::redis::{RedisProducer, RedisProducerConfig};
use openedx_events::{producer_config, EventBus, EventMetadata, OpenEdxEvent, Settings};
use redis_support::{connect, read_stream, unique, url, xlen, Cleanup, PrivateRedis};

fn xblock(i: usize) -> XBlockPublished {
    XBlockPublished {
        xblock_info: XBlockData {
            usage_key: format!("block-v1:edX+DemoX+Demo_Course+type@problem+block@p{i}")
                .parse()
                .unwrap(),
            block_type: format!("b{i}"),
            version: if i % 2 == 0 {
                None
            } else {
                Some(
                    "block-v1:edX+DemoX+Demo_Course+type@video+block@0b9e39477cf34507a7a48f74be381fdd"
                        .parse()
                        .unwrap(),
                )
            },
        },
    }
}

fn record(topic: &str, i: usize) -> ProducerRecord {
    ProducerRecord {
        topic: topic.into(),
        key: None,
        key_field: None,
        metadata: EventMetadata::generate(XBlockPublished::EVENT_TYPE, 0),
        data: Arc::new(xblock(i)),
    }
}

/// The index `i` each entry was made from, in stream order.
fn indexes(entries: &[redis_support::Entry]) -> Vec<usize> {
    entries
        .iter()
        .map(|e| {
            let data: XBlockPublished = openedx_events::avro::decode(e.get("event_data").unwrap()).unwrap();
            data.xblock_info.block_type[1..].parse().unwrap()
        })
        .collect()
}

fn config(url: &str) -> RedisProducerConfig {
    let mut c = RedisProducerConfig::new(url);
    c.reconnect_min_delay = Duration::from_millis(10);
    c.reconnect_max_delay = Duration::from_millis(200);
    c.connect_timeout = Duration::from_secs(2);
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_event_writes_python_fields_in_order() {
    let url = url();
    let prefix = unique("prefix");
    let topic = "content-authoring-xblock-lifecycle";
    let stream = format!("{prefix}-{topic}");
    let _cleanup = Cleanup::new(&url, &[&stream]);
    let settings = Settings::new()
        .with("EVENT_BUS_PRODUCER", "redis")
        .with("EVENT_BUS_REDIS_CONNECTION_URL", &url)
        .with("EVENT_BUS_TOPIC_PREFIX", &prefix)
        .with("EVENTS_SERVICE_NAME", "cms");
    let bus = EventBus::builder()
        .producer_config(producer_config! {
            "org.openedx.content_authoring.xblock.published.v1" => [
                { topic: "content-authoring-xblock-lifecycle", event_key_field: "xblock_info.usage_key", enabled: true },
            ],
        })
        .settings(settings)
        .start()
        .unwrap();
    assert_eq!(bus.producer().name(), "redis");
    let n = 1000;
    let mut sent = Vec::new();
    let received = Arc::new(std::sync::Mutex::new(Vec::new()));
    let r = received.clone();
    XBlockPublished::signal().connect(move |env: &openedx_events::Envelope<XBlockPublished>| {
        r.lock().unwrap().push(env.metadata.clone());
    });
    for i in 0..n {
        let data = xblock(i);
        sent.push(data.clone());
        XBlockPublished::signal().send_event(data);
    }
    bus.flush(Duration::from_secs(30)).await.unwrap();
    let metadata = received.lock().unwrap().clone();

    let mut conn = connect(&url);
    let entries = read_stream(&mut conn, &stream);
    assert_eq!(entries.len(), n, "every event is in the stream once flush returned");
    for (i, e) in entries.iter().enumerate() {
        assert_eq!(
            e.names(),
            [
                "type",
                "id",
                "source",
                "time",
                "minorversion",
                "sourcehost",
                "sourcelib",
                "event_data"
            ]
        );
        let m = &metadata[i];
        assert_eq!(e.text("type"), XBlockPublished::EVENT_TYPE);
        assert_eq!(e.text("id"), m.id.hyphenated().to_string());
        assert_eq!(e.text("source"), "openedx/cms/web");
        assert_eq!(e.text("time"), m.time_string());
        assert_eq!(e.text("minorversion"), "0");
        assert_eq!(e.text("sourcehost"), &*m.sourcehost);
        assert_eq!(e.text("sourcelib"), m.sourcelib.to_string());
        let data: XBlockPublished = openedx_events::avro::decode(e.get("event_data").unwrap()).unwrap();
        assert_eq!(data, sent[i], "entry {i}");
    }
    bus.shutdown(Duration::from_secs(10)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maxlen_trims_approximately_and_zero_disables_it() {
    let url = url();
    let trimmed = unique("trim");
    let untrimmed = unique("untrimmed");
    let _cleanup = Cleanup::new(&url, &[&trimmed, &untrimmed]);
    let mut c = config(&url);
    c.stream_max_len = 100;
    let p = RedisProducer::start(c).unwrap();
    for i in 0..5000 {
        p.produce(record(&trimmed, i)).unwrap();
    }
    p.shutdown(Duration::from_secs(30)).await.unwrap();
    let mut conn = connect(&url);
    let len = xlen(&mut conn, &trimmed);
    // `~` trims whole macro nodes (100 entries by default): at least 100 stay, far fewer than 5000.
    assert!((100..=300).contains(&len), "XLEN {len}");
    let entries = read_stream(&mut conn, &trimmed);
    assert_eq!(*indexes(&entries).last().unwrap(), 4999, "the newest entries are kept");

    let mut c = config(&url);
    c.stream_max_len = 0;
    let p = RedisProducer::start(c).unwrap();
    for i in 0..500 {
        p.produce(record(&untrimmed, i)).unwrap();
    }
    p.shutdown(Duration::from_secs(30)).await.unwrap();
    assert_eq!(xlen(&mut conn, &untrimmed), 500);
}

/// Kills the producer's connection repeatedly (CLIENT KILL) while events are being sent:
/// the stream must hold every event exactly once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_kill_during_run_loses_and_doubles_nothing() {
    let url = url();
    let stream = unique("kill");
    let _cleanup = Cleanup::new(&url, &[&stream]);
    let name = unique("producer");
    let mut c = config(&url);
    c.client_name = Some(name.clone());
    c.stream_max_len = 0;
    c.batch_size = 200;
    let p = Arc::new(RedisProducer::start(c).unwrap());
    let n = 30_000;
    let sender = {
        let p = p.clone();
        let stream = stream.clone();
        std::thread::spawn(move || {
            for i in 0..n {
                p.produce(record(&stream, i)).unwrap();
                if i % 100 == 99 {
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        })
    };
    let killer = {
        let url = url.clone();
        std::thread::spawn(move || {
            let mut conn = connect(&url);
            let mut kills = 0;
            let deadline = Instant::now() + Duration::from_secs(20);
            while kills < 8 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
                let list: String = redis::cmd("CLIENT").arg("LIST").query(&mut conn).unwrap();
                for line in list.lines().filter(|l| l.contains(&format!(" name={name} "))) {
                    let id = line.split(' ').find_map(|f| f.strip_prefix("id=")).unwrap();
                    let k: i64 = redis::cmd("CLIENT")
                        .arg("KILL")
                        .arg("ID")
                        .arg(id)
                        .query(&mut conn)
                        .unwrap();
                    kills += k;
                }
            }
            kills
        })
    };
    let kills = tokio::task::spawn_blocking(move || {
        sender.join().unwrap();
        killer.join().unwrap()
    })
    .await
    .unwrap();
    p.shutdown(Duration::from_secs(60)).await.unwrap();
    let stats = p.stats();
    let mut conn = connect(&url);
    let entries = read_stream(&mut conn, &stream);
    assert!(kills >= 3, "the connection was killed {kills} times");
    assert!(stats.reconnects >= 3, "{stats:?}");
    assert_eq!(stats.failed, 0, "{stats:?}");
    assert_eq!(stats.delivered, n as u64, "{stats:?}");
    assert_eq!(entries.len(), n, "exactly N entries ({stats:?})");
    assert_eq!(indexes(&entries), (0..n).collect::<Vec<_>>(), "in order");
    eprintln!("kills={kills} {stats:?}");
}

/// Restarts the server (append-only file on) in the middle of a run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_restart_during_run_loses_and_doubles_nothing() {
    let mut server = PrivateRedis::start(&["--appendonly", "yes", "--appendfsync", "always"]);
    let url = server.url();
    let stream = unique("restart");
    let mut c = config(&url);
    c.stream_max_len = 0;
    let p = Arc::new(RedisProducer::start(c).unwrap());
    let n = 6000;
    let sender = {
        let p = p.clone();
        let stream = stream.clone();
        std::thread::spawn(move || {
            for i in 0..n {
                p.produce(record(&stream, i)).unwrap();
                if i % 100 == 99 {
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        })
    };
    let _server = tokio::task::spawn_blocking(move || {
        std::thread::sleep(Duration::from_millis(100));
        server.restart();
        sender.join().unwrap();
        server
    })
    .await
    .unwrap();
    p.shutdown(Duration::from_secs(60)).await.unwrap();
    let stats = p.stats();
    let mut conn = connect(&url);
    let entries = read_stream(&mut conn, &stream);
    assert!(stats.reconnects >= 1, "{stats:?}");
    assert_eq!(stats.failed, 0, "{stats:?}");
    assert_eq!(entries.len(), n, "exactly N entries ({stats:?})");
    assert_eq!(indexes(&entries), (0..n).collect::<Vec<_>>(), "in order");
}

/// Nothing listens: the buffer fills up. Inside the runtime `produce` fails at once, outside
/// it waits up to the configured time; shutdown reports the pending events as failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_buffer_policy_and_shutdown_timeout() {
    let port = redis_support::free_port();
    let url = format!("redis://127.0.0.1:{port}/");
    let stream = unique("full");
    let mut c = config(&url);
    c.buffer_capacity = 10;
    c.buffer_full_wait = Duration::from_millis(300);
    let p = Arc::new(RedisProducer::start(c).unwrap());
    for i in 0..10 {
        p.produce(record(&stream, i)).unwrap();
    }
    // Inside a runtime thread: at once.
    let t = Instant::now();
    let err = p.produce(record(&stream, 10)).unwrap_err();
    assert!(
        matches!(err, ProduceError::BufferFull { waited } if waited.is_zero()),
        "{err:?}"
    );
    assert!(t.elapsed() < Duration::from_millis(100));
    // Outside: waits, then fails.
    let p2 = p.clone();
    let s2 = stream.clone();
    let (err, waited) = tokio::task::spawn_blocking(move || {
        std::thread::spawn(move || {
            let t = Instant::now();
            (p2.produce(record(&s2, 11)).unwrap_err(), t.elapsed())
        })
        .join()
        .unwrap()
    })
    .await
    .unwrap();
    assert!(
        matches!(err, ProduceError::BufferFull { waited } if waited == Duration::from_millis(300)),
        "{err:?}"
    );
    assert!(waited >= Duration::from_millis(290), "{waited:?}");
    assert_eq!(p.stats().rejected, 2);
    assert_eq!(p.pending(), 10);
    // Flush cannot finish; shutdown gives up and reports the pending events failed.
    let err = p.flush(Duration::from_millis(200)).await.unwrap_err();
    assert!(matches!(err, ProduceError::Timeout { pending: 10, .. }), "{err:?}");
    let err = p.shutdown(Duration::from_millis(200)).await.unwrap_err();
    assert!(matches!(err, ProduceError::Timeout { pending: 10, .. }), "{err:?}");
    let stats = p.stats();
    assert_eq!(
        (stats.accepted, stats.delivered, stats.failed),
        (10, 0, 10),
        "{stats:?}"
    );
    assert!(matches!(p.produce(record(&stream, 12)), Err(ProduceError::Closed)));
}

/// A producer waiting outside the runtime gets its slot when the server comes up, and
/// everything accepted is delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_buffer_drains_when_the_server_comes_up() {
    let mut server = PrivateRedis::start(&[]);
    server.stop();
    let url = server.url();
    let stream = unique("late");
    let mut c = config(&url);
    c.buffer_capacity = 5;
    c.buffer_full_wait = Duration::from_secs(20);
    let p = Arc::new(RedisProducer::start(c).unwrap());
    let sender = {
        let p = p.clone();
        let stream = stream.clone();
        std::thread::spawn(move || {
            for i in 0..50 {
                p.produce(record(&stream, i)).unwrap();
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(p.stats().accepted, 5, "the buffer is full while the server is down");
    server.start_again();
    tokio::task::spawn_blocking(move || sender.join().unwrap())
        .await
        .unwrap();
    p.flush(Duration::from_secs(30)).await.unwrap();
    let mut conn = connect(&url);
    let entries = read_stream(&mut conn, &stream);
    assert_eq!(indexes(&entries), (0..50).collect::<Vec<_>>());
    p.shutdown(Duration::from_secs(5)).await.unwrap();
}

/// A command Redis refuses for good fails that event only, and flush says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_command_fails_only_its_event() {
    let url = url();
    let not_a_stream = unique("string");
    let stream = unique("ok");
    let _cleanup = Cleanup::new(&url, &[&not_a_stream, &stream]);
    let mut conn = connect(&url);
    let _: () = redis::cmd("SET").arg(&not_a_stream).arg("x").query(&mut conn).unwrap();
    let p = RedisProducer::start(config(&url)).unwrap();
    p.produce(record(&stream, 0)).unwrap();
    p.produce(record(&not_a_stream, 1)).unwrap();
    p.produce(record(&stream, 2)).unwrap();
    let err = p.flush(Duration::from_secs(10)).await.unwrap_err();
    assert!(matches!(err, ProduceError::Failed { failed: 1 }), "{err:?}");
    assert_eq!(indexes(&read_stream(&mut conn, &stream)), [0, 2]);
    let stats = p.stats();
    assert_eq!((stats.delivered, stats.failed), (2, 1));
    p.shutdown(Duration::from_secs(5)).await.unwrap();
}

/// `redis://user:password@` and `rediss://user:password@` (TLS) both work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_and_password_over_tcp_and_tls() {
    redis_support::init_tracing();
    let server = PrivateRedis::start_tls(&[
        "--user", "default", "off", "--user", "alice", "on", ">s3cret", "~*", "&*", "+@all",
    ]);
    let tls_port = server.tls_port.unwrap();
    for url in [
        format!("redis://alice:s3cret@127.0.0.1:{}/", server.port),
        format!("rediss://alice:s3cret@127.0.0.1:{tls_port}/"),
    ] {
        let stream = unique("auth");
        let settings = Settings::new()
            .with("EVENT_BUS_REDIS_CONNECTION_URL", &url)
            .with("EVENT_BUS_REDIS_TLS_CA_FILE", server.cert_file().display().to_string());
        let p = RedisProducer::from_settings(&settings).unwrap();
        for i in 0..10 {
            p.produce(record(&stream, i)).unwrap();
        }
        p.shutdown(Duration::from_secs(10)).await.unwrap();
        assert_eq!(p.stats().delivered, 10, "{url}");
        let mut conn = connect(&format!("redis://alice:s3cret@127.0.0.1:{}/", server.port));
        assert_eq!(xlen(&mut conn, &stream), 10, "{url}");
    }
    // A wrong password never delivers: the events are reported failed at shutdown.
    let settings = Settings::new().with(
        "EVENT_BUS_REDIS_CONNECTION_URL",
        format!("redis://alice:wrong@127.0.0.1:{}/", server.port),
    );
    let p = RedisProducer::from_settings(&settings).unwrap();
    p.produce(record(&unique("auth"), 0)).unwrap();
    assert!(p.shutdown(Duration::from_millis(500)).await.is_err());
    assert_eq!(p.stats().failed, 1);
}

#[test]
fn start_needs_a_runtime_and_a_url() {
    assert!(RedisProducer::start(RedisProducerConfig::new("redis://127.0.0.1:6379/")).is_err());
    let err = EventBus::builder()
        .settings(Settings::new().with("EVENT_BUS_PRODUCER", "redis"))
        .start()
        .unwrap_err();
    assert!(err.to_string().contains("EVENT_BUS_REDIS_CONNECTION_URL"), "{err}");
}

/// Once the runtime that ran the producer is gone, a full buffer fails at once with
/// `Closed` (no slot can free up) instead of waiting or panicking.
#[test]
fn full_buffer_after_the_runtime_is_gone_is_closed() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let port = redis_support::free_port();
    let mut c = config(&format!("redis://127.0.0.1:{port}/"));
    c.buffer_capacity = 1;
    c.buffer_full_wait = Duration::from_secs(30);
    let p = {
        let _guard = rt.enter();
        RedisProducer::start(c).unwrap()
    };
    let stream = unique("gone");
    p.produce(record(&stream, 0)).unwrap();
    drop(rt);
    let t = Instant::now();
    assert!(matches!(p.produce(record(&stream, 1)), Err(ProduceError::Closed)));
    assert!(t.elapsed() < Duration::from_secs(5));
}

/// A producer on a private server that answers nothing for a while (`DEBUG SLEEP`):
/// replies of what is sent meanwhile time out, so the retry after the reconnect checks
/// which events were written.
fn sleepy_config(url: &str) -> RedisProducerConfig {
    let mut c = config(url);
    c.stream_max_len = 0;
    c.response_timeout = Duration::from_millis(1000);
    c.connect_timeout = Duration::from_secs(5);
    c
}

/// After a reconnect, the check of what is already written meets a key that is not a
/// stream (WRONGTYPE): only that event fails, the others are delivered once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dedup_check_on_a_key_that_is_not_a_stream_fails_only_that_event() {
    redis_support::init_tracing();
    let server = PrivateRedis::start(&["--enable-debug-command", "yes"]);
    let url = server.url();
    let stream = unique("dedup-ok");
    let not_a_stream = unique("dedup-string");
    let mut conn = connect(&url);
    let _: () = redis::cmd("SET").arg(&not_a_stream).arg("x").query(&mut conn).unwrap();
    let p = RedisProducer::start(sleepy_config(&url)).unwrap();
    p.produce(record(&stream, 0)).unwrap();
    p.flush(Duration::from_secs(5)).await.unwrap();
    let sleeper = redis_support::debug_sleep(&url, 1.5);
    tokio::time::sleep(Duration::from_millis(200)).await;
    p.produce(record(&stream, 1)).unwrap();
    p.produce(record(&not_a_stream, 2)).unwrap();
    p.produce(record(&stream, 3)).unwrap();
    let result = p.flush(Duration::from_secs(8)).await;
    sleeper.join().unwrap();
    assert!(
        matches!(result, Err(ProduceError::Failed { failed: 1 })),
        "{result:?} {:?}",
        p.stats()
    );
    assert_eq!(indexes(&read_stream(&mut conn, &stream)), [0, 1, 3]);
    p.shutdown(Duration::from_secs(5)).await.unwrap();
}

/// A private Redis (debug commands on) whose only user is `alice` (password `pw`) with
/// these ACL `rules`, and the URL that logs in as her.
fn server_with_alice(rules: &[&str]) -> (PrivateRedis, String) {
    let mut args = vec![
        "--enable-debug-command",
        "yes",
        "--user",
        "default",
        "off",
        "--user",
        "alice",
        "on",
        ">pw",
    ];
    args.extend_from_slice(rules);
    let server = PrivateRedis::start(&args);
    let url = format!("redis://alice:pw@127.0.0.1:{}/", server.port);
    (server, url)
}

/// After a reconnect, the check of what is already written is refused (NOPERM: the user
/// may not XREVRANGE): the events are sent again (at least once), none is stuck or failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dedup_check_without_xrevrange_permission_still_delivers() {
    redis_support::init_tracing();
    let (_server, url) = server_with_alice(&["~*", "&*", "+@all", "-xrevrange"]);
    let stream = unique("noperm");
    let mut conn = connect(&url);
    let p = RedisProducer::start(sleepy_config(&url)).unwrap();
    p.produce(record(&stream, 0)).unwrap();
    p.flush(Duration::from_secs(5)).await.unwrap();
    let sleeper = redis_support::debug_sleep(&url, 1.5);
    tokio::time::sleep(Duration::from_millis(200)).await;
    for i in 1..4 {
        p.produce(record(&stream, i)).unwrap();
    }
    let result = p.flush(Duration::from_secs(8)).await;
    sleeper.join().unwrap();
    assert!(result.is_ok(), "{result:?} {:?}", p.stats());
    let got = indexes(&read_stream(&mut conn, &stream));
    let mut first = Vec::new();
    for i in got {
        if !first.contains(&i) {
            first.push(i);
        }
    }
    assert_eq!(first, [0, 1, 2, 3], "every event, first copies in order");
    p.shutdown(Duration::from_secs(5)).await.unwrap();
}

/// The first batch in flight times out and must be retried while the second one is
/// answered: a flush begun between the two waits for the first batch's event (which Redis
/// then refuses) instead of counting the second batch's events for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flush_waits_for_exactly_the_events_accepted_before_it() {
    redis_support::init_tracing();
    // alice may read but not write the `ro-*` keys.
    let (_server, url) = server_with_alice(&["%R~ro-*", "~oev-*", "&*", "+@all"]);
    let stream = unique("flush");
    let read_only = format!("ro-{}", uuid::Uuid::new_v4().simple());
    let mut conn = connect(&url);
    let p = Arc::new(RedisProducer::start(sleepy_config(&url)).unwrap());
    p.produce(record(&stream, 0)).unwrap();
    p.flush(Duration::from_secs(5)).await.unwrap();
    let sleeper = redis_support::debug_sleep(&url, 1.5);
    tokio::time::sleep(Duration::from_millis(200)).await;
    // First batch: one event Redis will refuse (NOPERM), sent while the server sleeps;
    // its replies time out after 1 s, before the server wakes.
    p.produce(record(&read_only, 1)).unwrap();
    let flush = {
        let p = p.clone();
        tokio::spawn(async move { p.flush(Duration::from_secs(10)).await })
    };
    // Second batch, 700 ms later: answered when the server wakes, within its timeout.
    tokio::time::sleep(Duration::from_millis(700)).await;
    for i in 2..5 {
        p.produce(record(&stream, i)).unwrap();
    }
    let result = flush.await.unwrap();
    sleeper.join().unwrap();
    assert!(
        matches!(result, Err(ProduceError::Failed { failed: 1 })),
        "flush must report the refused event accepted before it: {result:?} {:?}",
        p.stats()
    );
    p.flush(Duration::from_secs(5)).await.unwrap();
    assert_eq!(indexes(&read_stream(&mut conn, &stream)), [0, 2, 3, 4]);
    p.shutdown(Duration::from_secs(5)).await.unwrap();
}

/// A demoted node answers READONLY: the producer backs off (growing delays) and
/// reconnects, instead of retrying at the minimum delay on the same connection; once the
/// node is promoted the event is delivered once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readonly_refusals_back_off_and_reconnect() {
    redis_support::init_tracing();
    let master = PrivateRedis::start(&[]);
    let replica = PrivateRedis::start(&["--replicaof", "127.0.0.1", &master.port.to_string()]);
    let url = replica.url();
    let stream = unique("readonly");
    let mut conn = connect(&url);
    let connections_before: u64 = redis_support::info(&mut conn, "stats")["total_connections_received"]
        .parse()
        .unwrap();
    let mut c = config(&url);
    c.reconnect_min_delay = Duration::from_millis(10);
    c.reconnect_max_delay = Duration::from_secs(1);
    let p = RedisProducer::start(c).unwrap();
    p.produce(record(&stream, 0)).unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let attempts = redis_support::command_attempts(&mut conn, "xadd");
    let connections: u64 = redis_support::info(&mut conn, "stats")["total_connections_received"]
        .parse()
        .unwrap();
    let reconnections = connections - connections_before;
    assert!(
        (2..=20).contains(&attempts),
        "XADD tried {attempts} times in 3 s: the delay must grow"
    );
    assert!(
        reconnections >= 3,
        "{reconnections} connections in 3 s: READONLY must reconnect"
    );
    let _: () = redis::cmd("REPLICAOF").arg("NO").arg("ONE").query(&mut conn).unwrap();
    p.flush(Duration::from_secs(10)).await.unwrap();
    assert_eq!(xlen(&mut conn, &stream), 1);
    p.shutdown(Duration::from_secs(5)).await.unwrap();
}

/// Redis holds the commands of a connection whose replies time out (writes paused with
/// `CLIENT PAUSE ... WRITE`, as during a failover): when they are applied after the new
/// connection checked what is written, the resent events would be written twice. Each
/// event must land once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_held_on_a_timed_out_connection_are_not_applied_after_the_resend() {
    redis_support::init_tracing();
    let server = PrivateRedis::start(&[]);
    let url = server.url();
    let stream = unique("held");
    let mut conn = connect(&url);
    let p = RedisProducer::start(sleepy_config(&url)).unwrap();
    p.produce(record(&stream, 0)).unwrap();
    p.flush(Duration::from_secs(5)).await.unwrap();
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(2500)
        .arg("WRITE")
        .query(&mut conn)
        .unwrap();
    for i in 1..4 {
        p.produce(record(&stream, i)).unwrap();
    }
    let result = p.flush(Duration::from_secs(10)).await;
    assert!(result.is_ok(), "{result:?} {:?}", p.stats());
    assert_eq!(
        indexes(&read_stream(&mut conn, &stream)),
        [0, 1, 2, 3],
        "{:?}",
        p.stats()
    );
    p.shutdown(Duration::from_secs(5)).await.unwrap();
}

/// Between a batch whose replies were lost and the check after the reconnect, another
/// producer writes 2000 entries to the same stream (more than the batch's count plus
/// `DEDUP_MARGIN`): the check must still find the batch's entries, so none is written twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dedup_check_finds_entries_behind_what_others_wrote_since() {
    redis_support::init_tracing();
    let server = PrivateRedis::start(&["--enable-debug-command", "yes"]);
    let url = server.url();
    let stream = unique("dedup-deep");
    let mut conn = connect(&url);
    let mut c = sleepy_config(&url);
    // The reconnect (and so the check) comes 1 s after the timeout: after the server woke.
    c.reconnect_min_delay = Duration::from_secs(1);
    c.reconnect_max_delay = Duration::from_secs(1);
    let p = RedisProducer::start(c).unwrap();
    p.produce(record(&stream, 0)).unwrap();
    p.flush(Duration::from_secs(5)).await.unwrap();
    let sleeper = redis_support::debug_sleep(&url, 1.5);
    tokio::time::sleep(Duration::from_millis(200)).await;
    for i in 1..4 {
        p.produce(record(&stream, i)).unwrap();
    }
    // Once the server wakes (and applies the batch), another producer writes 2000 entries.
    let other = {
        let url = url.clone();
        let stream = stream.clone();
        std::thread::spawn(move || {
            sleeper.join().unwrap();
            let mut conn = connect(&url);
            let mut pipe = redis::pipe();
            for i in 0..2000 {
                pipe.cmd("XADD").arg(&stream).arg("*").arg("other").arg(i).ignore();
            }
            let _: () = pipe.query(&mut conn).unwrap();
        })
    };
    let result = p.flush(Duration::from_secs(10)).await;
    tokio::task::spawn_blocking(move || other.join().unwrap())
        .await
        .unwrap();
    assert!(result.is_ok(), "{result:?}");
    let entries = read_stream(&mut conn, &stream);
    let ours: Vec<_> = entries.into_iter().filter(|e| e.get("event_data").is_some()).collect();
    assert_eq!(indexes(&ours), [0, 1, 2, 3], "each event once: {:?}", p.stats());
    p.shutdown(Duration::from_secs(5)).await.unwrap();
}

/// Shutdown's timeout expires while the server sleeps; the events in flight are answered
/// during the grace the task gets to stop: shutdown reports what became of them (all
/// delivered: Ok), not a Timeout computed before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_reports_events_delivered_after_its_timeout_as_delivered() {
    redis_support::init_tracing();
    let server = PrivateRedis::start(&["--enable-debug-command", "yes"]);
    let url = server.url();
    let stream = unique("late-ok");
    let mut conn = connect(&url);
    let p = RedisProducer::start(config(&url)).unwrap();
    p.produce(record(&stream, 0)).unwrap();
    p.flush(Duration::from_secs(5)).await.unwrap();
    let sleeper = redis_support::debug_sleep(&url, 1.0);
    tokio::time::sleep(Duration::from_millis(200)).await;
    for i in 1..4 {
        p.produce(record(&stream, i)).unwrap();
    }
    let result = p.shutdown(Duration::from_millis(300)).await;
    tokio::task::spawn_blocking(move || sleeper.join().unwrap())
        .await
        .unwrap();
    assert_eq!(xlen(&mut conn, &stream), 4, "{:?}", p.stats());
    assert!(result.is_ok(), "every event was delivered: {result:?} {:?}", p.stats());
}

/// Threads produce while shutdown runs: every `produce` that returned Ok is in the stream
/// when shutdown returns Ok (none slips past the flush and is failed afterwards).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_racing_shutdown_is_delivered_or_refused() {
    let url = url();
    for round in 0..20 {
        let stream = unique("race");
        let _cleanup = Cleanup::new(&url, &[&stream]);
        let mut c = config(&url);
        c.stream_max_len = 0;
        // A small buffer: producers often wait for a slot while shutdown flushes.
        c.buffer_capacity = 4;
        c.buffer_full_wait = Duration::from_secs(10);
        let p = Arc::new(RedisProducer::start(c).unwrap());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let p = p.clone();
                let stream = stream.clone();
                std::thread::spawn(move || {
                    let mut ok = 0usize;
                    for i in 0.. {
                        match p.produce(record(&stream, i)) {
                            Ok(()) => ok += 1,
                            Err(ProduceError::Closed) => break,
                            Err(e) => panic!("{e:?}"),
                        }
                    }
                    ok
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(20)).await;
        let result = p.shutdown(Duration::from_secs(10)).await;
        let ok: usize = tokio::task::spawn_blocking(move || threads.into_iter().map(|t| t.join().unwrap()).sum())
            .await
            .unwrap();
        let mut conn = connect(&url);
        let len = xlen(&mut conn, &stream);
        assert!(result.is_ok(), "round {round}: {result:?}");
        assert_eq!(
            len,
            ok,
            "round {round}: produce returned Ok {ok} times; {:?}",
            p.stats()
        );
    }
}

/// A `time` a Python consumer cannot read (year 10000 in UTC, a leap second) is refused by
/// `produce` itself, not written as `+10000-...` or second 60: only the good events
/// reach the stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_refuses_a_time_python_cannot_read() {
    use chrono::NaiveDate;
    let url = url();
    let stream = unique("bad-time");
    let _cleanup = Cleanup::new(&url, &[&stream]);
    let mut conn = connect(&url);
    let p = RedisProducer::start(config(&url)).unwrap();
    p.produce(record(&stream, 0)).unwrap();
    let year_10000 = NaiveDate::from_ymd_opt(10000, 1, 1)
        .unwrap()
        .and_hms_opt(3, 0, 0)
        .unwrap()
        .and_utc();
    let leap_second = NaiveDate::from_ymd_opt(2016, 12, 31)
        .unwrap()
        .and_hms_milli_opt(23, 59, 59, 1500)
        .unwrap()
        .and_utc();
    for (i, time) in [(1, year_10000), (2, leap_second)] {
        let mut r = record(&stream, i);
        r.metadata.time = time;
        let refused = p.produce(r);
        assert!(refused.is_err(), "a record with time {time:?} was accepted");
        let message = refused.unwrap_err().to_string();
        assert!(message.contains("time"), "{message}");
    }
    p.produce(record(&stream, 3)).unwrap();
    p.flush(Duration::from_secs(10)).await.unwrap();
    let entries = read_stream(&mut conn, &stream);
    let times: Vec<String> = entries.iter().map(|e| e.text("time")).collect();
    assert_eq!(indexes(&entries), [0, 3], "times written: {times:?}");
    p.shutdown(Duration::from_secs(5)).await.unwrap();
}

/// Redis numbers client ids per server process, from the bottom again after a restart:
/// the id of the connection the producer lost then names another client, which the
/// producer must not kill.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_does_not_kill_the_client_that_got_the_old_connection_id() {
    redis_support::init_tracing();
    let mut server = PrivateRedis::start(&[]);
    let url = server.url();
    let stream = unique("restart-kill");
    let mut c = config(&url);
    c.client_name = Some("restart-kill-producer".into());
    let p = RedisProducer::start(c).unwrap();
    p.produce(record(&stream, 0)).unwrap();
    p.flush(Duration::from_secs(5)).await.unwrap();
    let old_id: i64 = {
        let mut conn = connect(&url);
        let list: String = redis::cmd("CLIENT").arg("LIST").query(&mut conn).unwrap();
        let line = list
            .lines()
            .find(|l| l.contains("name=restart-kill-producer"))
            .unwrap()
            .to_owned();
        line.split_whitespace()
            .next()
            .unwrap()
            .trim_start_matches("id=")
            .parse()
            .unwrap()
    };
    let victims = tokio::task::spawn_blocking(move || {
        server.restart();
        // Other services reconnect first (consumers, other producers): keep connections
        // until one holds the producer's old id.
        let mut victims = Vec::new();
        loop {
            let mut v = connect(&server.url());
            let id: i64 = redis::cmd("CLIENT").arg("ID").query(&mut v).unwrap();
            victims.push((id, v));
            if id >= old_id {
                break;
            }
        }
        (server, victims)
    })
    .await
    .unwrap();
    let (server, mut victims) = victims;
    assert!(
        victims.iter().any(|(id, _)| *id == old_id),
        "no client got the old id {old_id}"
    );
    p.produce(record(&stream, 1)).unwrap();
    p.flush(Duration::from_secs(10)).await.unwrap();
    let mut dead = Vec::new();
    for (id, v) in victims.iter_mut() {
        let pong: Result<String, _> = redis::cmd("PING").query(v);
        if pong.is_err() {
            dead.push(*id);
        }
    }
    p.shutdown(Duration::from_secs(5)).await.unwrap();
    let mut conn = connect(&server.url());
    assert_eq!(indexes(&read_stream(&mut conn, &stream)), vec![1]);
    assert!(dead.is_empty(), "the producer killed unrelated clients {dead:?}");
}

/// A TCP proxy on a free port: its first connection goes to `old`, the later ones to
/// `new` (a failover behind one address). On the first connection the first `-READONLY`
/// reply is held until the client has sent `xadds` `XADD`s (batches in flight), and the
/// replies after it are held `hold` more: the next batch's refusal comes late, as from a
/// slow old master.
async fn failover_proxy(old: u16, new: u16, xadds_before: usize, hold: Duration) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut first = true;
        loop {
            let Ok((client, _)) = listener.accept().await else {
                return;
            };
            let target = if first { old } else { new };
            let held = std::mem::take(&mut first);
            tokio::spawn(async move {
                let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", target)).await else {
                    return;
                };
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                let (xadds_tx, mut xadds) = tokio::sync::watch::channel(0usize);
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        let n = match cr.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        let seen = buf[..n].windows(4).filter(|w| w == b"XADD").count();
                        xadds_tx.send_modify(|x| *x += seen);
                        if sw.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
                let mut pending: Vec<u8> = Vec::new();
                let mut buf = vec![0u8; 64 * 1024];
                let mut holding = held;
                loop {
                    let n = match sr.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    pending.extend_from_slice(&buf[..n]);
                    if holding {
                        let at = pending.windows(9).position(|w| w == b"-READONLY");
                        let end =
                            at.and_then(|at| pending[at..].windows(2).position(|w| w == b"\r\n").map(|e| at + e + 2));
                        match end {
                            Some(end) => {
                                let _ = xadds.wait_for(|x| *x >= xadds_before).await;
                                if cw.write_all(&pending[..end]).await.is_err() {
                                    return;
                                }
                                pending.drain(..end);
                                tokio::time::sleep(hold).await;
                                holding = false;
                            }
                            None => {
                                // Whole lines before the refusal (the handshake) go through.
                                let upto = match at {
                                    Some(at) => at,
                                    None => pending.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1),
                                };
                                if cw.write_all(&pending[..upto]).await.is_err() {
                                    return;
                                }
                                pending.drain(..upto);
                                continue;
                            }
                        }
                    }
                    if cw.write_all(&pending).await.is_err() {
                        return;
                    }
                    pending.clear();
                }
            });
        }
    });
    port
}

/// After a failover (READONLY) the producer reconnects and resends the refused batch
/// while the next batch still waits for its replies on the old connection: nothing new
/// may go out on the new connection before that batch is answered and resent, or its
/// events land after later ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readonly_reconnect_sends_nothing_new_before_the_batch_still_on_the_old_connection() {
    redis_support::init_tracing();
    let old = PrivateRedis::start(&[]);
    let new = PrivateRedis::start(&[]);
    let hold = Duration::from_secs(3);
    // The warm-up event, then events 0 and 1 in flight together.
    let port = failover_proxy(old.port, new.port, 3, hold).await;
    let stream = unique("readonly-order");
    let warm_up = unique("readonly-order-warm-up");
    let mut c = config(&format!("redis://127.0.0.1:{port}"));
    c.batch_size = 1;
    c.response_timeout = Duration::from_secs(20);
    let p = RedisProducer::start(c).unwrap();
    p.produce(record(&warm_up, 9)).unwrap();
    p.flush(Duration::from_secs(10)).await.unwrap();
    // Failover: the old master becomes a replica of the new one.
    let mut old_conn = connect(&old.url());
    let _: () = redis::cmd("REPLICAOF")
        .arg("127.0.0.1")
        .arg(new.port)
        .query(&mut old_conn)
        .unwrap();
    p.produce(record(&stream, 0)).unwrap();
    p.produce(record(&stream, 1)).unwrap();
    // Event 0 refused (READONLY), resent on the new connection, lands on the new master
    // while event 1's refusal is still held.
    let mut conn = connect(&new.url());
    let started = Instant::now();
    while xlen(&mut conn, &stream) == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "event 0 never reached the new master"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        started.elapsed() < hold / 2,
        "event 0 took {:?} to reach the new master: the set-up is too slow to tell",
        started.elapsed()
    );
    p.produce(record(&stream, 2)).unwrap();
    p.flush(Duration::from_secs(15)).await.unwrap();
    p.shutdown(Duration::from_secs(5)).await.unwrap();
    assert_eq!(indexes(&read_stream(&mut conn, &stream)), vec![0, 1, 2]);
}
