//! Signal semantics (Django-like): connection order, disconnect, robust and strict
//! sending, panics, async receivers, enable/disable, metadata of `send_event`, and
//! events re-sent from the bus.

use std::sync::{Arc, Mutex};

use openedx_events::metadata::EventMetadata;
use openedx_events::{openedx_event, OpenEdxEvent, Outcome, SendError, SendMode};

/// Sent in these tests.
#[openedx_event("org.openedx.learning.test_signal.sent.v1", minor_version = 3)]
#[derive(Clone, Debug, PartialEq)]
pub struct TestSent {
    /// A number.
    pub n: i64,
}

fn log() -> Arc<Mutex<Vec<String>>> {
    Arc::new(Mutex::new(Vec::new()))
}

#[test]
fn receivers_run_in_connection_order_and_disconnect() {
    let calls = log();
    let ids: Vec<_> = ["a", "b", "c"]
        .into_iter()
        .map(|name| {
            let calls = calls.clone();
            TestSent::signal().connect(move |ev| calls.lock().unwrap().push(format!("{name}{}", ev.data.n)))
        })
        .collect();
    let responses = TestSent::signal().send_event(TestSent { n: 1 });
    assert_eq!(responses.len(), 3);
    assert_eq!(responses.iter().map(|r| r.receiver).collect::<Vec<_>>(), ids);
    assert!(TestSent::signal().disconnect(ids[1]));
    assert!(
        !TestSent::signal().disconnect(ids[1]),
        "second disconnect finds nothing"
    );
    TestSent::signal().send_event(TestSent { n: 2 });
    assert_eq!(*calls.lock().unwrap(), ["a1", "b1", "c1", "a2", "c2"]);
    assert_eq!(TestSent::signal().receiver_count(), 2);
}

#[test]
fn robust_send_reports_failures_and_panics_and_runs_the_rest() {
    let calls = log();
    TestSent::signal().connect(|_| -> Result<(), std::io::Error> { Err(std::io::Error::other("boom")) });
    TestSent::signal().connect(|ev| assert!(ev.data.n < 0, "receiver exploded"));
    let c = calls.clone();
    TestSent::signal().connect(move |_| c.lock().unwrap().push("last".to_owned()));
    let responses = TestSent::signal().send_event(TestSent { n: 1 });
    assert!(matches!(&responses[0].outcome, Outcome::Failed(e) if e.to_string() == "boom"));
    assert!(matches!(&responses[1].outcome, Outcome::Panicked(m) if m == "receiver exploded"));
    assert!(matches!(responses[2].outcome, Outcome::Ok));
    assert_eq!(*calls.lock().unwrap(), ["last"]);
}

#[test]
fn strict_send_stops_at_the_first_failure() {
    let calls = log();
    TestSent::signal().connect(|_| -> Result<(), std::io::Error> { Err(std::io::Error::other("refused")) });
    let c = calls.clone();
    TestSent::signal().connect(move |_| c.lock().unwrap().push("after".to_owned()));
    let err = TestSent::signal().send_event_strict(TestSent { n: 1 }).unwrap_err();
    match err {
        SendError::Receiver { event_type, error, .. } => {
            assert_eq!(event_type, "org.openedx.learning.test_signal.sent.v1");
            assert_eq!(error.to_string(), "refused");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(
        calls.lock().unwrap().is_empty(),
        "receivers after the failing one must not run"
    );
}

#[test]
fn send_event_generates_metadata_as_the_spec_says() {
    let seen: Arc<Mutex<Vec<EventMetadata>>> = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    TestSent::signal().connect(move |ev| {
        assert!(!ev.from_event_bus);
        s.lock().unwrap().push(ev.metadata.clone());
    });
    let before = chrono::Utc::now();
    TestSent::signal().send_event(TestSent { n: 1 });
    TestSent::signal().send_event(TestSent { n: 2 });
    let seen = seen.lock().unwrap();
    let m = &seen[0];
    assert_eq!(m.event_type, "org.openedx.learning.test_signal.sent.v1");
    assert_eq!(m.id.get_version_num(), 1, "version-1 UUID");
    assert_ne!(seen[0].id, seen[1].id);
    assert_eq!(m.minorversion, 3);
    let service = std::env::var("EVENTS_SERVICE_NAME").unwrap_or_else(|_| "SERVICE_NAME_UNSET".into());
    assert_eq!(&*m.source, format!("openedx/{service}/web"));
    assert_eq!(&*m.sourcehost, hostname::get().unwrap().to_str().unwrap());
    assert_eq!(m.sourcelib.to_string(), env!("CARGO_PKG_VERSION"));
    assert!(m.time >= before - chrono::Duration::milliseconds(1) && m.time <= chrono::Utc::now());
    assert!(m.time_string().ends_with("+00:00"));
}

#[test]
fn disabled_signal_sends_nothing_until_enabled() {
    let calls = log();
    let c = calls.clone();
    TestSent::signal().connect(move |ev| c.lock().unwrap().push(ev.data.n.to_string()));
    TestSent::signal().disable();
    assert!(TestSent::signal().send_event(TestSent { n: 1 }).is_empty());
    TestSent::signal().enable();
    TestSent::signal().send_event(TestSent { n: 2 });
    assert_eq!(*calls.lock().unwrap(), ["2"]);
}

#[test]
fn custom_metadata_is_kept_and_marked_from_the_bus() {
    let seen = Arc::new(Mutex::new(None));
    let s = seen.clone();
    TestSent::signal().connect(move |ev| *s.lock().unwrap() = Some((ev.metadata.clone(), ev.from_event_bus)));
    let mut metadata = EventMetadata::generate(TestSent::EVENT_TYPE, 0);
    metadata.source = "openedx/lms/web".into();
    TestSent::signal()
        .send_event_with_custom_metadata(metadata.clone(), TestSent { n: 5 }, SendMode::Robust)
        .unwrap();
    let (got, from_bus) = seen.lock().unwrap().clone().unwrap();
    assert_eq!(got, metadata);
    assert!(from_bus);

    let wrong = EventMetadata::generate("org.openedx.learning.other.v1", 0);
    let err = TestSent::signal()
        .send_event_with_custom_metadata(wrong, TestSent { n: 5 }, SendMode::Robust)
        .unwrap_err();
    assert!(matches!(err, SendError::WrongEventType { .. }));
}

#[tokio::test]
async fn async_receivers_are_awaited_in_order() {
    let calls = log();
    let c = calls.clone();
    TestSent::signal().connect_async(move |ev| {
        let c = c.clone();
        async move {
            tokio::task::yield_now().await;
            c.lock().unwrap().push(format!("async{}", ev.data.n));
        }
    });
    let c = calls.clone();
    TestSent::signal().connect(move |ev| c.lock().unwrap().push(format!("sync{}", ev.data.n)));
    TestSent::signal().connect_async(|_| async { Err::<(), _>(std::io::Error::other("async failure")) });
    let responses = TestSent::signal().send_event_async(TestSent { n: 1 }).await;
    assert_eq!(*calls.lock().unwrap(), ["async1", "sync1"]);
    assert!(matches!(&responses[2].outcome, Outcome::Failed(e) if e.to_string() == "async failure"));
}

#[tokio::test]
async fn plain_send_spawns_async_receivers_on_the_runtime() {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let tx = Mutex::new(Some(tx));
    TestSent::signal().connect_async(move |ev| {
        let tx = tx.lock().unwrap().take();
        async move {
            if let Some(tx) = tx {
                tx.send(ev.data.n).unwrap();
            }
        }
    });
    let responses = TestSent::signal().send_event(TestSent { n: 9 });
    assert!(matches!(responses[0].outcome, Outcome::Spawned));
    assert_eq!(rx.await.unwrap(), 9);
}

#[test]
fn plain_send_outside_a_runtime_reports_async_receivers() {
    TestSent::signal().connect_async(|_| async {});
    let responses = TestSent::signal().send_event(TestSent { n: 1 });
    assert!(matches!(&responses[0].outcome, Outcome::Failed(e) if e.to_string().contains("send_event_async")));
}

/// An async receiver whose synchronous part (before the first `.await`) panics, as
/// `connect_async(|ev| { ev.data.x.unwrap(); async {} })` does.
fn panicking_before_its_future(ev: openedx_events::Envelope<TestSent>) -> std::future::Ready<()> {
    assert!(ev.data.n < 0, "sync part exploded");
    std::future::ready(())
}

#[tokio::test]
async fn panic_in_the_sync_part_of_an_async_receiver_is_reported_by_send_event_async() {
    let calls = log();
    TestSent::signal().connect_async(panicking_before_its_future);
    let c = calls.clone();
    TestSent::signal().connect(move |_| c.lock().unwrap().push("after".to_owned()));
    let responses = TestSent::signal().send_event_async(TestSent { n: 1 }).await;
    assert!(
        matches!(&responses[0].outcome, Outcome::Panicked(m) if m == "sync part exploded"),
        "{responses:?}"
    );
    assert!(matches!(responses[1].outcome, Outcome::Ok));
    assert_eq!(*calls.lock().unwrap(), ["after"], "the receivers after it still run");
}

#[tokio::test]
async fn panic_in_the_sync_part_of_an_async_receiver_is_reported_by_plain_send_event() {
    let calls = log();
    TestSent::signal().connect_async(panicking_before_its_future);
    let c = calls.clone();
    TestSent::signal().connect(move |_| c.lock().unwrap().push("after".to_owned()));
    let responses = TestSent::signal().send_event(TestSent { n: 1 });
    assert!(
        matches!(&responses[0].outcome, Outcome::Panicked(m) if m == "sync part exploded"),
        "{responses:?}"
    );
    assert_eq!(*calls.lock().unwrap(), ["after"], "the receivers after it still run");
}

#[tokio::test]
async fn panic_in_the_sync_part_of_an_async_receiver_fails_a_consumed_message_without_unwinding() {
    TestSent::signal().connect_async(panicking_before_its_future);
    let metadata = EventMetadata::generate(TestSent::EVENT_TYPE, 0);
    let data = openedx_events::avro::encode(&TestSent { n: 1 }).unwrap();
    // `consumer::dispatch` is what both backends await per message: it must return an
    // error (retried, then dead-lettered), not unwind through the consumer loop.
    let result = openedx_events::consume::dispatch(metadata, &data).await;
    match result {
        Err(openedx_events::consume::DispatchError::ReceiversFailed(f)) => {
            assert!(f[0].contains("panicked: sync part exploded"), "{f:?}")
        }
        other => panic!("expected ReceiversFailed, got {other:?}"),
    }
}

/// Touches `TestSent`'s signal when dropped, as a receiver's captured state may.
struct TouchesTheSignalOnDrop;

impl Drop for TouchesTheSignalOnDrop {
    fn drop(&mut self) {
        TestSent::signal().connect(|_| {});
    }
}

/// Runs `f` on a thread and fails if it has not returned within 10 s (a deadlock).
fn within_10s(f: impl FnOnce() + Send + 'static) {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        f();
        let _ = tx.send(());
    });
    rx.recv_timeout(std::time::Duration::from_secs(10))
        .expect("deadlock: did not return within 10 s");
}

#[test]
fn disconnect_drops_the_receiver_outside_the_signal_lock() {
    let state = TouchesTheSignalOnDrop;
    let id = TestSent::signal().connect(move |_| {
        let _ = &state;
    });
    within_10s(move || assert!(TestSent::signal().disconnect(id)));
    assert_eq!(
        TestSent::signal().receiver_count(),
        1,
        "the receiver the drop connected"
    );
}
