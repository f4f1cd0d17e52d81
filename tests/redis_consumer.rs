//! The Redis Streams consumer against a real Redis: catalog events round trip with their
//! metadata, order, retries and dead letters, error limit, group position across
//! restarts and replay, two consumers sharing a stream, claiming from a stopped consumer,
//! and graceful shutdown.

mod redis_support;

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::TimeZone;
// Glob imports: `producer_config!` finds the event types through hidden aliases.
use openedx_events::catalog::content_authoring::*;
use openedx_events::catalog::learning::{
    self, CourseEnrollmentCreated, CourseEnrollmentData, UserData, UserPersonalData,
};
use openedx_events::produce::{Producer, ProducerRecord};
use openedx_events::redis::{ConsumeError, RedisConsumer, RedisConsumerOptions, StartPosition};
use openedx_events::redis::{RedisProducer, RedisProducerConfig};
use openedx_events::{producer_config, EventBus, EventMetadata, OpenEdxEvent, Settings};
use redis_support::{connect, pending_count, read_stream, unique, url, xlen, Cleanup};

fn xblock(i: usize) -> XBlockPublished {
    XBlockPublished {
        xblock_info: XBlockData {
            usage_key: format!("block-v1:edX+DemoX+Demo_Course+type@problem+block@p{i}")
                .parse()
                .unwrap(),
            block_type: format!("b{i}"),
            version: (i % 2 == 1).then(|| {
                "block-v1:edX+DemoX+Demo_Course+type@video+block@0b9e39477cf34507a7a48f74be381fdd"
                    .parse()
                    .unwrap()
            }),
        },
    }
}

fn index_of(data: &XBlockPublished) -> usize {
    data.xblock_info.block_type[1..].parse().unwrap()
}

fn user(id: i64, email: &str) -> UserData {
    UserData {
        id,
        is_active: id % 2 == 0,
        pii: UserPersonalData {
            username: format!("user{id}"),
            email: email.to_owned(),
            name: "Ada Lovelace ✓".to_owned(),
        },
    }
}

fn enrollment(i: i64) -> CourseEnrollmentCreated {
    CourseEnrollmentCreated {
        enrollment: CourseEnrollmentData {
            user: user(i, &format!("u{i}@example.com")),
            course: learning::CourseData {
                course_key: "course-v1:edX+DemoX+Demo_Course".parse().unwrap(),
                display_name: "Demo".to_owned(),
                start: Some(chrono::Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap()),
                end: None,
            },
            mode: "verified".to_owned(),
            is_active: true,
            creation_date: chrono::Utc.timestamp_micros(1_764_000_000_123_456).unwrap(),
            created_by: (i % 2 == 0).then(|| user(99, "staff@example.com")),
        },
    }
}

fn record<E: OpenEdxEvent + Clone>(topic: &str, data: E) -> (ProducerRecord, EventMetadata) {
    let metadata = EventMetadata::generate(E::EVENT_TYPE, E::MINOR_VERSION);
    (
        ProducerRecord {
            topic: topic.into(),
            key: None,
            key_field: None,
            metadata: metadata.clone(),
            data: Arc::new(data),
        },
        metadata,
    )
}

async fn produce_xblocks(url: &str, topic: &str, range: std::ops::Range<usize>) -> Vec<EventMetadata> {
    let mut c = RedisProducerConfig::new(url);
    c.stream_max_len = 0;
    let p = RedisProducer::start(c).unwrap();
    let mut metas = Vec::new();
    for i in range {
        let (r, m) = record(topic, xblock(i));
        p.produce(r).unwrap();
        metas.push(m);
    }
    p.shutdown(Duration::from_secs(30)).await.unwrap();
    metas
}

fn options() -> RedisConsumerOptions {
    let mut o = RedisConsumerOptions {
        block: Duration::from_millis(100),
        ..Default::default()
    };
    o.common.retry_delay = Duration::from_millis(100);
    o
}

type Seen<E> = Arc<Mutex<Vec<(EventMetadata, E, bool)>>>;

fn record_received<E: OpenEdxEvent + Clone>() -> Seen<E> {
    let seen: Seen<E> = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    E::signal().connect(move |env: &openedx_events::Envelope<E>| {
        s.lock()
            .unwrap()
            .push((env.metadata.clone(), (*env.data).clone(), env.from_event_bus));
    });
    seen
}

fn never() -> futures::future::Pending<()> {
    futures::future::pending()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_events_round_trip_with_metadata_and_are_not_produced_again() {
    redis_support::init_tracing();
    let url = url();
    let prefix = unique("p");
    let topic = "mixed";
    let stream = format!("{prefix}-{topic}");
    let mut cleanup = Cleanup::new(&url, &[&stream]);
    // A bus that would produce both event types to the very stream being consumed.
    let bus = EventBus::builder()
        .producer_config(producer_config! {
            "org.openedx.content_authoring.xblock.published.v1" => [
                { topic: "mixed", event_key_field: "xblock_info.usage_key", enabled: true },
            ],
            "org.openedx.learning.course.enrollment.created.v1" => [
                { topic: "mixed", event_key_field: "enrollment.course.course_key", enabled: true },
            ],
        })
        .settings(
            Settings::new()
                .with("EVENT_BUS_PRODUCER", "redis")
                .with("EVENT_BUS_REDIS_CONNECTION_URL", &url)
                .with("EVENT_BUS_TOPIC_PREFIX", &prefix),
        )
        .start()
        .unwrap();
    let xblocks = record_received::<XBlockPublished>();
    let enrollments = record_received::<CourseEnrollmentCreated>();
    for i in 0..10 {
        XBlockPublished::signal().send_event(xblock(i));
        CourseEnrollmentCreated::signal().send_event(enrollment(i as i64));
    }
    bus.flush(Duration::from_secs(10)).await.unwrap();
    let sent_x: Vec<_> = xblocks.lock().unwrap().drain(..).collect();
    let sent_e: Vec<_> = enrollments.lock().unwrap().drain(..).collect();
    assert!(sent_x.iter().all(|(_, _, from_bus)| !from_bus));
    let mut conn = connect(&url);
    assert_eq!(xlen(&mut conn, &stream), 20);

    let group = unique("g");
    let consumer = RedisConsumer::new(&url, &stream, &group, "c1", {
        let mut o = options();
        o.max_count = Some(20);
        o
    })
    .unwrap();
    cleanup.add(consumer.dead_letter_stream());
    let stats = consumer.run(never()).await.unwrap();
    assert_eq!(
        (stats.received, stats.succeeded, stats.acked, stats.dead_lettered),
        (20, 20, 20, 0)
    );
    let got_x = xblocks.lock().unwrap().clone();
    let got_e = enrollments.lock().unwrap().clone();
    assert_eq!(got_x.len(), 10);
    assert_eq!(got_e.len(), 10);
    for (sent, got) in sent_x.iter().zip(&got_x) {
        assert_eq!(sent.0, got.0, "metadata");
        assert_eq!(sent.1, got.1, "data");
        assert!(got.2, "marked as from the bus");
    }
    for (sent, got) in sent_e.iter().zip(&got_e) {
        assert_eq!(sent.0, got.0, "metadata");
        assert_eq!(sent.1, got.1, "data");
        assert!(got.2, "marked as from the bus");
    }
    // Received events were not produced again.
    bus.shutdown(Duration::from_secs(10)).await.unwrap();
    assert_eq!(xlen(&mut conn, &stream), 20);
    assert_eq!(pending_count(&mut conn, &stream, &group), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_consumer_keeps_stream_order() {
    let url = url();
    let stream = unique("order");
    let mut cleanup = Cleanup::new(&url, &[&stream]);
    let n = 3000;
    produce_xblocks(&url, &stream, 0..n).await;
    let seen = record_received::<XBlockPublished>();
    let mut o = options();
    o.max_count = Some(n as u64);
    let consumer = RedisConsumer::new(&url, &stream, unique("g"), "c1", o).unwrap();
    cleanup.add(consumer.dead_letter_stream());
    let stats = consumer.run(never()).await.unwrap();
    assert_eq!(stats.succeeded, n as u64);
    let order: Vec<usize> = seen.lock().unwrap().iter().map(|(_, d, _)| index_of(d)).collect();
    assert_eq!(order, (0..n).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_message_is_retried_until_it_succeeds() {
    let url = url();
    let stream = unique("retry");
    let mut cleanup = Cleanup::new(&url, &[&stream]);
    produce_xblocks(&url, &stream, 0..1).await;
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    XBlockPublished::signal().connect(move |_: &openedx_events::Envelope<XBlockPublished>| {
        if c.fetch_add(1, Ordering::SeqCst) < 2 {
            Err("database is down".to_owned())
        } else {
            Ok(())
        }
    });
    let group = unique("g");
    let mut o = options();
    o.max_count = Some(1);
    o.common.max_retries = 3;
    let consumer = RedisConsumer::new(&url, &stream, &group, "c1", o).unwrap();
    cleanup.add(consumer.dead_letter_stream());
    let dlq = consumer.dead_letter_stream().to_owned();
    let stats = tokio::time::timeout(Duration::from_secs(20), consumer.run(never()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(
        (stats.failed_attempts, stats.succeeded, stats.dead_lettered),
        (2, 1, 0),
        "{stats:?}"
    );
    assert!(stats.claimed >= 2, "{stats:?}");
    let mut conn = connect(&url);
    assert_eq!(pending_count(&mut conn, &stream, &group), 0);
    assert_eq!(xlen(&mut conn, &dlq), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_failing_every_retry_goes_to_dead_letters_with_its_error() {
    let url = url();
    let stream = unique("dead");
    let mut cleanup = Cleanup::new(&url, &[&stream]);
    produce_xblocks(&url, &stream, 0..1).await;
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    XBlockPublished::signal().connect(move |_: &openedx_events::Envelope<XBlockPublished>| {
        c.fetch_add(1, Ordering::SeqCst);
        Err::<(), _>("always broken")
    });
    let group = unique("g");
    let mut o = options();
    o.max_count = Some(1);
    o.common.max_retries = 2;
    let consumer = RedisConsumer::new(&url, &stream, &group, "c1", o).unwrap();
    let dlq = consumer.dead_letter_stream().to_owned();
    cleanup.add(&dlq);
    let stats = tokio::time::timeout(Duration::from_secs(20), consumer.run(never()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 3, "one delivery and two retries");
    assert_eq!(
        (stats.failed_attempts, stats.dead_lettered, stats.acked),
        (2, 1, 1),
        "{stats:?}"
    );
    let mut conn = connect(&url);
    assert_eq!(pending_count(&mut conn, &stream, &group), 0);
    let original = &read_stream(&mut conn, &stream)[0];
    let dead = read_stream(&mut conn, &dlq);
    assert_eq!(dead.len(), 1);
    let d = &dead[0];
    assert_eq!(&d.fields[..8], &original.fields[..], "original fields first, in order");
    assert!(d.text("error").contains("always broken"), "{}", d.text("error"));
    assert_eq!(d.text("original_id"), original.id);
    assert_eq!(d.text("attempts"), "3");
    assert_eq!(d.text("original_stream"), stream);
    assert_eq!(d.text("group"), group);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_unknown_or_incomplete_messages_are_dead_lettered_at_once() {
    let url = url();
    let stream = unique("bad");
    let mut cleanup = Cleanup::new(&url, &[&stream]);
    let mut conn = connect(&url);
    let good = xblock(7);
    let good_bytes = openedx_events::avro::encode(&good).unwrap();
    let meta = |t: &str| {
        vec![
            ("type", t.as_bytes().to_vec()),
            ("id", uuid::Uuid::now_v1(&[1, 2, 3, 4, 5, 6]).to_string().into_bytes()),
            ("source", b"openedx/test/web".to_vec()),
            ("time", b"2026-11-27T13:20:05.364687+00:00".to_vec()),
            ("minorversion", b"0".to_vec()),
            ("sourcehost", b"h".to_vec()),
            ("sourcelib", b"10.5.0".to_vec()),
        ]
    };
    let xadd = |conn: &mut redis::Connection, fields: Vec<(&str, Vec<u8>)>| {
        let _: String = redis::cmd("XADD")
            .arg(&stream)
            .arg("*")
            .arg(fields)
            .query(conn)
            .unwrap();
    };
    let mut unknown = meta("org.openedx.nothing.here.v1");
    unknown.push(("event_data", good_bytes.clone()));
    xadd(&mut conn, unknown);
    let mut garbage = meta(XBlockPublished::EVENT_TYPE);
    garbage.push(("event_data", vec![0xff, 0xff, 0xff]));
    xadd(&mut conn, garbage);
    let mut no_id = meta(XBlockPublished::EVENT_TYPE);
    no_id.remove(1);
    no_id.push(("event_data", good_bytes.clone()));
    xadd(&mut conn, no_id);
    let mut fine = meta(XBlockPublished::EVENT_TYPE);
    fine.push(("event_data", good_bytes));
    xadd(&mut conn, fine);

    let seen = record_received::<XBlockPublished>();
    let group = unique("g");
    let mut o = options();
    o.max_count = Some(4);
    let consumer = RedisConsumer::new(&url, &stream, &group, "c1", o).unwrap();
    let dlq = consumer.dead_letter_stream().to_owned();
    cleanup.add(&dlq);
    let stats = consumer.run(never()).await.unwrap();
    assert_eq!(
        (stats.dead_lettered, stats.succeeded, stats.failed_attempts),
        (3, 1, 0),
        "{stats:?}"
    );
    assert_eq!(seen.lock().unwrap().len(), 1);
    assert_eq!(seen.lock().unwrap()[0].1, good);
    let dead = read_stream(&mut conn, &dlq);
    let errors: Vec<String> = dead.iter().map(|d| d.text("error")).collect();
    assert!(errors[0].contains("unknown event type"), "{errors:?}");
    assert!(errors[1].contains("cannot decode"), "{errors:?}");
    assert!(errors[2].contains("missing `id`"), "{errors:?}");
    assert!(dead.iter().all(|d| d.text("attempts") == "1"));
    assert_eq!(pending_count(&mut conn, &stream, &group), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_consecutive_errors_stop_the_consumer() {
    let url = url();
    let stream = unique("errors");
    let mut cleanup = Cleanup::new(&url, &[&stream]);
    let mut conn = connect(&url);
    for _ in 0..5 {
        let _: String = redis::cmd("XADD")
            .arg(&stream)
            .arg("*")
            .arg("type")
            .arg("org.openedx.nothing.here.v1")
            .query(&mut conn)
            .unwrap();
    }
    let mut o = options();
    o.common.max_consecutive_errors = 3;
    let consumer = RedisConsumer::new(&url, &stream, unique("g"), "c1", o).unwrap();
    let dlq = consumer.dead_letter_stream().to_owned();
    cleanup.add(&dlq);
    let err = tokio::time::timeout(Duration::from_secs(10), consumer.run(never()))
        .await
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(&err, ConsumeError::TooManyErrors(e) if e.count == 3 && e.limit == 3),
        "{err}"
    );
    assert_eq!(
        xlen(&mut conn, &dlq),
        3,
        "the failed messages were dead-lettered before stopping"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_keeps_its_position_across_restarts_and_can_replay() {
    let url = url();
    let stream = unique("position");
    let mut cleanup = Cleanup::new(&url, &[&stream]);
    let group = unique("g");
    let seen = record_received::<XBlockPublished>();
    let indexes = |seen: &Seen<XBlockPublished>| -> Vec<usize> {
        seen.lock().unwrap().drain(..).map(|(_, d, _)| index_of(&d)).collect()
    };
    let run = |o: RedisConsumerOptions| {
        let consumer = RedisConsumer::new(&url, &stream, &group, "c1", o).unwrap();
        tokio::time::timeout(Duration::from_secs(20), consumer.run(never()))
    };
    produce_xblocks(&url, &stream, 0..5).await;
    let mut o = options();
    o.max_count = Some(5);
    run(o).await.unwrap().unwrap();
    assert_eq!(indexes(&seen), [0, 1, 2, 3, 4]);
    // Produced while no consumer runs: read at the next start, even when asked to start at
    // the end (that applies to a new group only).
    produce_xblocks(&url, &stream, 5..10).await;
    let mut o = options();
    o.max_count = Some(5);
    o.start = StartPosition::End;
    run(o).await.unwrap().unwrap();
    assert_eq!(indexes(&seen), [5, 6, 7, 8, 9]);
    // Replay after the third message.
    let mut conn = connect(&url);
    let third = read_stream(&mut conn, &stream)[2].id.clone();
    let mut o = options();
    o.max_count = Some(7);
    o.reset_to = Some(StartPosition::After(third));
    run(o).await.unwrap().unwrap();
    assert_eq!(indexes(&seen), [3, 4, 5, 6, 7, 8, 9]);
    // A new group at the end sees nothing of what is there.
    let consumer = RedisConsumer::new(&url, &stream, unique("g"), "c1", {
        let mut o = options();
        o.start = StartPosition::End;
        o
    })
    .unwrap();
    cleanup.add(consumer.dead_letter_stream());
    let stats = consumer
        .run(tokio::time::sleep(Duration::from_millis(500)))
        .await
        .unwrap();
    assert_eq!(stats.received, 0);
    assert!(seen.lock().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_consumers_share_a_stream_without_loss_or_double_ack() {
    let url = url();
    let stream = unique("shared");
    let mut cleanup = Cleanup::new(&url, &[&stream]);
    let group = unique("g");
    let n = 4000;
    let seen: Arc<Mutex<Vec<(uuid::Uuid, std::thread::ThreadId)>>> = Arc::new(Mutex::new(Vec::new()));
    let done = Arc::new(tokio::sync::Notify::new());
    {
        let seen = seen.clone();
        let done = done.clone();
        XBlockPublished::signal().connect(move |env: &openedx_events::Envelope<XBlockPublished>| {
            let mut s = seen.lock().unwrap();
            s.push((env.metadata.id, std::thread::current().id()));
            if s.len() >= n {
                done.notify_waiters();
            }
        });
    }
    let start = |name: &str| {
        let mut o = options();
        o.common.batch_size = 50;
        // Nothing fails here, so nothing needs a quick retry: a retry_delay far above a
        // loaded machine's stalls keeps a message in hand from looking idle (100 ms was
        // seen exceeded once, giving 40 claimed duplicates).
        o.common.retry_delay = Duration::from_secs(3);
        let consumer = RedisConsumer::new(&url, &stream, &group, name, o).unwrap();
        let done = done.clone();
        tokio::spawn(consumer.run(async move {
            tokio::time::timeout(Duration::from_secs(60), done.notified())
                .await
                .ok();
        }))
    };
    let a = start("c1");
    let b = start("c2");
    let metas = produce_xblocks(&url, &stream, 0..n).await;
    let sa = a.await.unwrap().unwrap();
    let sb = b.await.unwrap().unwrap();
    cleanup.add(&format!("{stream}-dead-letter"));
    let seen = seen.lock().unwrap();
    let ids: HashSet<uuid::Uuid> = seen.iter().map(|(id, _)| *id).collect();
    assert_eq!(seen.len(), n, "no duplicate delivery: a {sa:?} b {sb:?}");
    assert_eq!(ids, metas.iter().map(|m| m.id).collect(), "no loss");
    assert_eq!(sa.acked + sb.acked, n as u64, "each message acknowledged once");
    assert!(
        sa.succeeded > 0 && sb.succeeded > 0,
        "both consumers took part: {sa:?} {sb:?}"
    );
    let mut conn = connect(&url);
    assert_eq!(pending_count(&mut conn, &stream, &group), 0);
    eprintln!("c1 {sa:?}\nc2 {sb:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_messages_of_a_stopped_consumer_are_claimed() {
    let url = url();
    let stream = unique("claim");
    let mut cleanup = Cleanup::new(&url, &[&stream]);
    let group = unique("g");
    produce_xblocks(&url, &stream, 0..2).await;
    let mut conn = connect(&url);
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&stream)
        .arg(&group)
        .arg("0")
        .query(&mut conn)
        .unwrap();
    // "ghost" reads both messages and dies without acknowledging them.
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg(&group)
        .arg("ghost")
        .arg("COUNT")
        .arg(2)
        .arg("STREAMS")
        .arg(&stream)
        .arg(">")
        .query(&mut conn)
        .unwrap();
    assert_eq!(pending_count(&mut conn, &stream, &group), 2);
    let seen = record_received::<XBlockPublished>();
    let mut o = options();
    o.max_count = Some(2);
    o.common.retry_delay = Duration::from_millis(300);
    let consumer = RedisConsumer::new(&url, &stream, &group, "c1", o).unwrap();
    cleanup.add(consumer.dead_letter_stream());
    let stats = tokio::time::timeout(Duration::from_secs(10), consumer.run(never()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((stats.claimed, stats.succeeded), (2, 2), "{stats:?}");
    assert_eq!(seen.lock().unwrap().len(), 2);
    assert_eq!(pending_count(&mut conn, &stream, &group), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_the_message_in_hand() {
    let url = url();
    let stream = unique("shutdown");
    let mut cleanup = Cleanup::new(&url, &[&stream]);
    let group = unique("g");
    produce_xblocks(&url, &stream, 0..3).await;
    let started = Arc::new(tokio::sync::Notify::new());
    let finished = Arc::new(AtomicUsize::new(0));
    let id = {
        let started = started.clone();
        let finished = finished.clone();
        XBlockPublished::signal().connect_async(move |_env: openedx_events::Envelope<XBlockPublished>| {
            let started = started.clone();
            let finished = finished.clone();
            async move {
                started.notify_one();
                tokio::time::sleep(Duration::from_millis(300)).await;
                finished.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    let consumer = RedisConsumer::new(&url, &stream, &group, "c1", options()).unwrap();
    cleanup.add(consumer.dead_letter_stream());
    let s = started.clone();
    let stats = consumer.run(async move { s.notified().await }).await.unwrap();
    assert_eq!(finished.load(Ordering::SeqCst), 1, "the message in hand was finished");
    assert_eq!((stats.succeeded, stats.acked), (1, 1), "{stats:?}");
    let mut conn = connect(&url);
    assert_eq!(
        pending_count(&mut conn, &stream, &group),
        2,
        "read but not started: still pending"
    );
    // The same consumer name takes its pending messages back at once when it starts again.
    XBlockPublished::signal().disconnect(id);
    let seen = record_received::<XBlockPublished>();
    let mut o = options();
    o.max_count = Some(2);
    o.common.retry_delay = Duration::from_secs(3600);
    let consumer = RedisConsumer::new(&url, &stream, &group, "c1", o).unwrap();
    let stats = tokio::time::timeout(Duration::from_secs(10), consumer.run(never()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stats.succeeded, 2);
    let order: Vec<usize> = seen.lock().unwrap().iter().map(|(_, d, _)| index_of(d)).collect();
    assert_eq!(order, [1, 2]);
    assert_eq!(pending_count(&mut conn, &stream, &group), 0);
}

/// The server restarts while the consumer runs: it reconnects, keeps its group's position
/// (append-only file on) and reads everything, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_reconnects_after_a_server_restart() {
    let server = redis_support::PrivateRedis::start(&["--appendonly", "yes", "--appendfsync", "always"]);
    let url = server.url();
    let stream = unique("reconnect");
    let seen = record_received::<XBlockPublished>();
    produce_xblocks(&url, &stream, 0..50).await;
    let mut o = options();
    o.max_count = Some(100);
    o.reconnect_min_delay = Duration::from_millis(20);
    o.reconnect_max_delay = Duration::from_millis(200);
    let group = unique("g");
    let consumer = RedisConsumer::new(&url, &stream, &group, "c1", o).unwrap();
    let run = tokio::spawn(consumer.run(never()));
    // Wait until the first half is handled, then restart the server.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while seen.lock().unwrap().len() < 50 {
        assert!(tokio::time::Instant::now() < deadline, "first half not consumed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // ... and acknowledged (otherwise they would rightly be delivered again after the restart).
    let mut conn = connect(&url);
    while pending_count(&mut conn, &stream, &group) > 0 {
        assert!(tokio::time::Instant::now() < deadline, "first half not acknowledged");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(conn);
    let server = tokio::task::spawn_blocking(move || {
        let mut server = server;
        server.restart();
        server
    })
    .await
    .unwrap();
    produce_xblocks(&url, &stream, 50..100).await;
    let stats = tokio::time::timeout(Duration::from_secs(20), run)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(stats.reconnects >= 1, "{stats:?}");
    let order: Vec<usize> = seen.lock().unwrap().iter().map(|(_, d, _)| index_of(d)).collect();
    assert_eq!(order, (0..100).collect::<Vec<_>>(), "{stats:?}");
    drop(server);
}

/// The stream (and so its groups) is deleted while the consumer runs: it sets the group up
/// again and reads what is produced next.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_sets_its_group_up_again_when_the_stream_is_deleted() {
    let url = url();
    let stream = unique("deleted");
    let mut cleanup = Cleanup::new(&url, &[&stream]);
    let seen = record_received::<XBlockPublished>();
    produce_xblocks(&url, &stream, 0..3).await;
    let mut o = options();
    o.max_count = Some(6);
    let consumer = RedisConsumer::new(&url, &stream, unique("g"), "c1", o).unwrap();
    cleanup.add(consumer.dead_letter_stream());
    let run = tokio::spawn(consumer.run(never()));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while seen.lock().unwrap().len() < 3 {
        assert!(tokio::time::Instant::now() < deadline, "first events not consumed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut conn = connect(&url);
    let _: () = redis::cmd("DEL").arg(&stream).query(&mut conn).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    produce_xblocks(&url, &stream, 3..6).await;
    let stats = tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(stats.succeeded, 6);
    let order: Vec<usize> = seen.lock().unwrap().iter().map(|(_, d, _)| index_of(d)).collect();
    assert_eq!(order, [0, 1, 2, 3, 4, 5]);
}

/// The dead-letter key is not a stream, so writing the dead letter fails (WRONGTYPE):
/// the original must stay pending (not acknowledged, not lost), and be dead-lettered
/// once the dead-letter stream can be written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_dead_letter_write_leaves_the_message_pending() {
    redis_support::init_tracing();
    let url = url();
    let stream = unique("dlq-fails");
    let mut cleanup = Cleanup::new(&url, &[&stream]);
    let mut conn = connect(&url);
    let _: String = redis::cmd("XADD")
        .arg(&stream)
        .arg("*")
        .arg("type")
        .arg("org.openedx.nothing.here.v1")
        .query(&mut conn)
        .unwrap();
    let group = unique("g");
    let mut o = options();
    o.max_count = Some(1);
    o.common.max_consecutive_errors = 1000;
    o.reconnect_min_delay = Duration::from_millis(20);
    o.reconnect_max_delay = Duration::from_millis(200);
    let consumer = RedisConsumer::new(&url, &stream, &group, "c1", o).unwrap();
    let dlq = consumer.dead_letter_stream().to_owned();
    cleanup.add(&dlq);
    let _: () = redis::cmd("SET")
        .arg(&dlq)
        .arg("not a stream")
        .query(&mut conn)
        .unwrap();
    let run = tokio::spawn(consumer.run(never()));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        pending_count(&mut conn, &stream, &group),
        1,
        "the dead letter was not written, so the message must stay pending"
    );
    assert!(!run.is_finished(), "the message is not completed: {:?}", run.await);
    let _: () = redis::cmd("DEL").arg(&dlq).query(&mut conn).unwrap();
    let stats = tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("completes once the dead letter can be written")
        .unwrap()
        .unwrap();
    assert_eq!(stats.dead_lettered, 1, "{stats:?}");
    assert_eq!(xlen(&mut conn, &dlq), 1);
    assert_eq!(pending_count(&mut conn, &stream, &group), 0);
}

/// Two consumers, a receiver of 100 ms, a batch of 10 and a retry delay of 500 ms: the
/// messages one consumer holds (started or not) must not look idle to the other, so each
/// is delivered once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_in_hand_are_not_claimed_by_other_consumers() {
    redis_support::init_tracing();
    let url = url();
    let stream = unique("in-hand");
    let mut cleanup = Cleanup::new(&url, &[&stream]);
    cleanup.add(&format!("{stream}-dead-letter"));
    let group = unique("g");
    let metas = produce_xblocks(&url, &stream, 0..10).await;
    let deliveries: Arc<Mutex<Vec<uuid::Uuid>>> = Arc::new(Mutex::new(Vec::new()));
    {
        let deliveries = deliveries.clone();
        XBlockPublished::signal().connect_async(move |env: openedx_events::Envelope<XBlockPublished>| {
            deliveries.lock().unwrap().push(env.metadata.id);
            tokio::time::sleep(Duration::from_millis(100))
        });
    }
    let start = |name: &str| {
        let mut o = options();
        o.common.batch_size = 10;
        o.common.retry_delay = Duration::from_millis(500);
        let consumer = RedisConsumer::new(&url, &stream, &group, name, o).unwrap();
        let deliveries = deliveries.clone();
        tokio::spawn(consumer.run(async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            while deliveries.lock().unwrap().len() < 10 && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            // Long enough for any wrong claim to show.
            tokio::time::sleep(Duration::from_millis(1500)).await;
        }))
    };
    let a = start("c1");
    let b = start("c2");
    let sa = a.await.unwrap().unwrap();
    let sb = b.await.unwrap().unwrap();
    let got = deliveries.lock().unwrap().clone();
    let distinct: HashSet<uuid::Uuid> = got.iter().copied().collect();
    assert_eq!(distinct, metas.iter().map(|m| m.id).collect(), "no loss");
    assert_eq!(
        got.len(),
        10,
        "{} deliveries for 10 messages: c1 {sa:?} c2 {sb:?}",
        got.len()
    );
    let mut conn = connect(&url);
    assert_eq!(pending_count(&mut conn, &stream, &group), 0);
}

/// The server refuses the group set-up for now (OOM, then BUSY): the consumer retries
/// with backoff instead of stopping, and consumes once the server recovers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn temporary_server_errors_at_group_setup_are_retried() {
    redis_support::init_tracing();
    let server = redis_support::PrivateRedis::start(&["--busy-reply-threshold", "100"]);
    let url = server.url();
    let mut conn = connect(&url);
    let mut o = options();
    o.max_count = Some(1);
    o.reconnect_min_delay = Duration::from_millis(20);
    o.reconnect_max_delay = Duration::from_millis(200);

    // OOM: no write (XGROUP CREATE ... MKSTREAM) is accepted.
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg(1)
        .query(&mut conn)
        .unwrap();
    let stream = unique("oom");
    let consumer = RedisConsumer::new(&url, &stream, unique("g"), "c1", o.clone()).unwrap();
    let run = tokio::spawn(consumer.run(never()));
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(!run.is_finished(), "OOM stopped the consumer: {:?}", run.await);
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg(0)
        .query(&mut conn)
        .unwrap();
    produce_xblocks(&url, &stream, 0..1).await;
    let stats = tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(stats.succeeded, 1, "{stats:?}");

    // BUSY: a script runs past the busy threshold.
    let mut busy_conn = connect(&url);
    let busy = std::thread::spawn(move || {
        let _: Result<(), _> = redis::cmd("EVAL").arg("while true do end").arg(0).query(&mut busy_conn);
    });
    std::thread::sleep(Duration::from_millis(300));
    let stream = unique("busy");
    let consumer = RedisConsumer::new(&url, &stream, unique("g"), "c1", o).unwrap();
    let run = tokio::spawn(consumer.run(never()));
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let finished = run.is_finished();
    let _: () = redis::cmd("SCRIPT").arg("KILL").query(&mut conn).unwrap();
    busy.join().unwrap();
    assert!(!finished, "BUSY stopped the consumer: {:?}", run.await);
    produce_xblocks(&url, &stream, 0..1).await;
    let stats = tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(stats.succeeded, 1, "{stats:?}");
}

/// A consumer stops with messages read but not started: they are handed back and spend
/// no attempt, so a message that fails once is retried (max_retries 1), not dead-lettered
/// as if it had failed twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_read_but_not_started_spend_no_retry() {
    redis_support::init_tracing();
    let url = url();
    let stream = unique("not-started");
    let mut cleanup = Cleanup::new(&url, &[&stream]);
    let group = unique("g");
    produce_xblocks(&url, &stream, 0..3).await;
    let started = Arc::new(tokio::sync::Notify::new());
    let slow = {
        let started = started.clone();
        XBlockPublished::signal().connect_async(move |_env: openedx_events::Envelope<XBlockPublished>| {
            started.notify_one();
            tokio::time::sleep(Duration::from_millis(300))
        })
    };
    let consumer = RedisConsumer::new(&url, &stream, &group, "c1", options()).unwrap();
    let dlq = consumer.dead_letter_stream().to_owned();
    cleanup.add(&dlq);
    let s = started.clone();
    let stats = consumer.run(async move { s.notified().await }).await.unwrap();
    assert_eq!(stats.succeeded, 1, "{stats:?}");
    XBlockPublished::signal().disconnect(slow);
    // Each message fails at its first delivery, then succeeds.
    let failed_once: Arc<Mutex<HashSet<uuid::Uuid>>> = Arc::default();
    {
        let failed_once = failed_once.clone();
        XBlockPublished::signal().connect(move |env: &openedx_events::Envelope<XBlockPublished>| {
            if failed_once.lock().unwrap().insert(env.metadata.id) {
                Err("first try fails".to_owned())
            } else {
                Ok(())
            }
        });
    }
    let mut o = options();
    o.max_count = Some(2);
    o.common.max_retries = 1;
    let consumer = RedisConsumer::new(&url, &stream, &group, "c2", o).unwrap();
    let stats = tokio::time::timeout(Duration::from_secs(10), consumer.run(never()))
        .await
        .unwrap()
        .unwrap();
    let mut conn = connect(&url);
    assert_eq!(
        (stats.succeeded, stats.dead_lettered, xlen(&mut conn, &dlq)),
        (2, 0, 0),
        "messages never started spent a retry: {stats:?}"
    );
    assert_eq!(pending_count(&mut conn, &stream, &group), 0);
}

/// Replicas of a service start with the same `reset_to` (replay from the beginning), one
/// after the other: with `reset_once` only the first moves the group, so the messages are
/// handled once, not once per replica. Without it every start replays (a one-off tool).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_once_is_applied_by_the_first_replica_only() {
    redis_support::init_tracing();
    let url = url();
    let stream = unique("reset-once");
    let mut cleanup = Cleanup::new(&url, &[&stream]);
    let group = unique("g");
    produce_xblocks(&url, &stream, 0..5).await;
    let seen = record_received::<XBlockPublished>();
    // The group exists and has read everything.
    let mut o = options();
    o.max_count = Some(5);
    let consumer = RedisConsumer::new(&url, &stream, &group, "c0", o).unwrap();
    cleanup.add(consumer.dead_letter_stream());
    cleanup.add(&consumer.reset_marker_key());
    consumer.run(never()).await.unwrap();
    seen.lock().unwrap().clear();
    let replica = |name: &str| {
        let mut o = options();
        o.reset_to = Some(StartPosition::Beginning);
        o.reset_once = true;
        RedisConsumer::new(&url, &stream, &group, name, o)
            .unwrap()
            .run(tokio::time::sleep(Duration::from_millis(700)))
    };
    let first = replica("r1").await.unwrap();
    assert_eq!(first.succeeded, 5, "the first replica replays: {first:?}");
    let second = replica("r2").await.unwrap();
    assert_eq!(
        second.received, 0,
        "the second replica must not replay again: {second:?}"
    );
    assert_eq!(seen.lock().unwrap().len(), 5);
    // Without reset_once, each start replays.
    let mut o = options();
    o.reset_to = Some(StartPosition::Beginning);
    let third = RedisConsumer::new(&url, &stream, &group, "r3", o)
        .unwrap()
        .run(tokio::time::sleep(Duration::from_millis(700)))
        .await
        .unwrap();
    assert_eq!(third.succeeded, 5, "{third:?}");
}

/// XADDs `fields` (names and values as bytes) to `stream`; returns the entry id.
fn xadd_raw(conn: &mut redis::Connection, stream: &str, fields: &[(&[u8], Vec<u8>)]) -> String {
    let mut cmd = redis::cmd("XADD");
    cmd.arg(stream).arg("*");
    for (k, v) in fields {
        cmd.arg(*k).arg(&v[..]);
    }
    cmd.query(conn).unwrap()
}

/// Metadata fields and `event_data` of a well-formed `XBlockPublished` entry.
fn good_raw_fields() -> Vec<(&'static [u8], Vec<u8>)> {
    vec![
        (b"type", XBlockPublished::EVENT_TYPE.as_bytes().to_vec()),
        (b"id", uuid::Uuid::new_v4().to_string().into_bytes()),
        (b"source", b"openedx/test/web".to_vec()),
        (b"time", b"2026-11-27T13:20:05.364687+00:00".to_vec()),
        (b"minorversion", b"0".to_vec()),
        (b"sourcehost", b"h".to_vec()),
        (b"sourcelib", b"10.5.0".to_vec()),
        (b"event_data", openedx_events::avro::encode(&xblock(3)).unwrap()),
    ]
}

/// A metadata field given twice is ambiguous (which one did the producer mean?) and a
/// value that is not UTF-8 is not "absent": each is dead-lettered with a reason naming
/// the field, never handled with the last value or a default.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doubled_or_non_utf8_metadata_fields_are_dead_lettered_naming_the_field() {
    let url = url();
    let stream = unique("doubled");
    let mut cleanup = Cleanup::new(&url, &[&stream]);
    let mut conn = connect(&url);
    let mut cases: Vec<(String, String)> = Vec::new();
    for name in [
        "type",
        "id",
        "source",
        "time",
        "minorversion",
        "sourcehost",
        "sourcelib",
        "event_data",
    ] {
        let mut f = good_raw_fields();
        let second = f.iter().find(|(k, _)| *k == name.as_bytes()).unwrap().1.clone();
        f.push((name.as_bytes(), second));
        let id = xadd_raw(&mut conn, &stream, &f);
        cases.push((id, format!("field `{name}` given twice")));
    }
    for name in [
        "type",
        "id",
        "source",
        "time",
        "minorversion",
        "sourcehost",
        "sourcelib",
    ] {
        let mut f = good_raw_fields();
        for (k, v) in &mut f {
            if *k == name.as_bytes() {
                v.push(0xff);
            }
        }
        let id = xadd_raw(&mut conn, &stream, &f);
        cases.push((id, format!("field `{name}` is not UTF-8")));
    }
    let seen = record_received::<XBlockPublished>();
    let group = unique("g");
    let mut o = options();
    o.max_count = Some(cases.len() as u64);
    let consumer = RedisConsumer::new(&url, &stream, &group, "c1", o).unwrap();
    let dlq = consumer.dead_letter_stream().to_owned();
    cleanup.add(&dlq);
    let stats = consumer.run(never()).await.unwrap();
    let dead = read_stream(&mut conn, &dlq);
    let reasons: std::collections::HashMap<String, String> =
        dead.iter().map(|d| (d.text("original_id"), d.text("error"))).collect();
    let wrong: Vec<String> = cases
        .iter()
        .filter(|(id, want)| !reasons.get(id).is_some_and(|r| r.contains(want.as_str())))
        .map(|(id, want)| format!("want {want:?}, got {:?}", reasons.get(id)))
        .collect();
    assert!(wrong.is_empty(), "{wrong:#?}\n{stats:?}");
    assert!(
        seen.lock().unwrap().is_empty(),
        "handled: {:?}",
        seen.lock().unwrap().len()
    );
    assert_eq!(pending_count(&mut conn, &stream, &group), 0);
}

/// Log output of the test, for checking what the consumer logs.
#[derive(Clone, Default)]
struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Peer-supplied values (a 1 MiB `type`, a 1 MiB `id`) are cut to a bounded length in the
/// logs and in the stored reason of the dead letter.
#[tokio::test(flavor = "current_thread")]
async fn peer_values_are_cut_to_a_bounded_length_in_logs_and_dead_letter_reasons() {
    let url = url();
    let stream = unique("huge-values");
    let mut cleanup = Cleanup::new(&url, &[&stream]);
    let mut conn = connect(&url);
    let mut ids = Vec::new();
    for name in ["type", "id"] {
        let mut f = good_raw_fields();
        for (k, v) in &mut f {
            if *k == name.as_bytes() {
                *v = vec![b'x'; 1 << 20];
            }
        }
        ids.push(xadd_raw(&mut conn, &stream, &f));
    }
    let logs = LogBuffer::default();
    let subscriber = {
        let logs = logs.clone();
        tracing_subscriber::fmt()
            .with_env_filter("openedx_events=info")
            .with_writer(move || logs.clone())
            .with_ansi(false)
            .finish()
    };
    let _default = tracing::subscriber::set_default(subscriber);
    let group = unique("g");
    let mut o = options();
    o.max_count = Some(2);
    let consumer = RedisConsumer::new(&url, &stream, &group, "c1", o).unwrap();
    let dlq = consumer.dead_letter_stream().to_owned();
    cleanup.add(&dlq);
    let stats = consumer.run(never()).await.unwrap();
    assert_eq!(stats.dead_lettered, 2, "{stats:?}");
    let logs = String::from_utf8_lossy(&logs.0.lock().unwrap()).into_owned();
    let longest = logs.lines().map(str::len).max().unwrap_or(0);
    assert!(logs.contains("dead letters"), "no dead-letter log line:\n{logs}");
    assert!(longest < 2000, "a log line of {longest} bytes");
    let dead = read_stream(&mut conn, &dlq);
    assert_eq!(dead.len(), 2);
    for d in &dead {
        let reason = d.text("error");
        assert!(
            !reason.is_empty() && reason.len() < 1000,
            "a reason of {} bytes",
            reason.len()
        );
    }
    assert_eq!(pending_count(&mut conn, &stream, &group), 0);
}
