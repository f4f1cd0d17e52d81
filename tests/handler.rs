//! The generic handler against the in-memory bus: one produce per enabled topic,
//! prefix, key, metadata, recursion guard, producer errors kept from the sender,
//! and the bound of the in-memory bus.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use openedx_events::metadata::EventMetadata;
use openedx_events::produce::{ProduceError, Producer, ProducerRecord};
use openedx_events::{openedx_event, producer_config, EventBus, EventData, EventKey, OpenEdxEvent, SendMode, Settings};

/// A user.
#[derive(EventData, Clone, Debug, PartialEq)]
pub struct UserInfo {
    /// The id.
    pub id: i64,
    /// The e-mail address (PII).
    pub email: String,
}

/// A certificate.
#[derive(EventData, Clone, Debug, PartialEq)]
pub struct CertInfo {
    /// The learner.
    pub user: UserInfo,
    /// The course.
    pub course_key: openedx_events::keys::CourseKey,
    /// The mentor, if any.
    pub mentor: Option<UserInfo>,
}

/// Sent when a certificate is granted.
#[openedx_event("org.openedx.learning.test_cert.granted.v1")]
#[derive(Clone, Debug, PartialEq)]
pub struct CertGranted {
    /// The certificate.
    pub cert: CertInfo,
}

fn cert(id: i64, mentor: Option<i64>) -> CertGranted {
    CertGranted {
        cert: CertInfo {
            user: UserInfo {
                id,
                email: format!("learner{id}@example.com"),
            },
            course_key: "course-v1:edX+DemoX+2026".parse().unwrap(),
            mentor: mentor.map(|id| UserInfo {
                id,
                email: "mentor@example.com".into(),
            }),
        },
    }
}

fn config() -> openedx_events::bus::CompiledConfig {
    producer_config! {
        "org.openedx.learning.test_cert.granted.v1" => [
            { topic: "learning-certificates", event_key_field: "cert.course_key", enabled: true },
            { topic: "learning-cert-users", event_key_field: "cert.user.id", enabled: true },
            { topic: "learning-cert-mentors", event_key_field: "cert.mentor.id", enabled: true },
            { topic: "learning-cert-off", event_key_field: "cert.user.id", enabled: false },
        ],
    }
}

#[test]
fn produces_once_per_enabled_topic_with_key_and_metadata() {
    let bus = EventBus::builder()
        .producer_config(config())
        .settings(Settings::new().with("EVENT_BUS_TOPIC_PREFIX", "stage"))
        .start()
        .unwrap();
    let received = Arc::new(Mutex::new(None));
    let r = received.clone();
    CertGranted::signal().connect(move |ev| *r.lock().unwrap() = Some(ev.metadata.clone()));
    CertGranted::signal().send_event(cert(7, Some(3)));
    CertGranted::signal().send_event(cert(8, None));

    let memory = bus.memory().expect("memory is the default producer");
    assert_eq!(
        memory.topics(),
        [
            "stage-learning-cert-mentors",
            "stage-learning-cert-users",
            "stage-learning-certificates"
        ]
    );
    let certs = memory.events("stage-learning-certificates");
    assert_eq!(certs.len(), 2);
    assert_eq!(certs[0].key, Some(EventKey::String("course-v1:edX+DemoX+2026".into())));
    assert_eq!(certs[0].key_field.unwrap().name, "course_key");
    assert_eq!(certs[0].key_field.unwrap().avro_type, "string");
    let users = memory.events("stage-learning-cert-users");
    assert_eq!(
        users.iter().map(|r| r.key.clone()).collect::<Vec<_>>(),
        [Some(EventKey::Long(7)), Some(EventKey::Long(8))]
    );
    assert_eq!(users[0].key_field.unwrap().avro_type, "long");
    // Through an optional record: absent mentor gives no key, but the event is produced.
    let mentors = memory.events("stage-learning-cert-mentors");
    assert_eq!(
        mentors.iter().map(|r| r.key.clone()).collect::<Vec<_>>(),
        [Some(EventKey::Long(3)), None]
    );
    // Same metadata as the receivers saw, same data.
    assert_eq!(Some(users[1].metadata.clone()), *received.lock().unwrap());
    let data = users[0].data.as_any().downcast_ref::<CertGranted>().unwrap();
    assert_eq!(data, &cert(7, Some(3)));
    assert_eq!(
        memory.len("stage-learning-cert-off"),
        0,
        "disabled topics produce nothing"
    );
    assert_eq!(bus.routes().len(), 3);
}

#[test]
fn events_from_the_bus_are_not_produced_again() {
    let bus = EventBus::builder()
        .producer_config(config())
        .settings(Settings::new())
        .start()
        .unwrap();
    let metadata = EventMetadata::generate(CertGranted::EVENT_TYPE, 0);
    let responses = CertGranted::signal()
        .send_event_with_custom_metadata(metadata, cert(1, None), SendMode::Strict)
        .unwrap();
    assert_eq!(responses.len(), 1, "the handler is connected and was called");
    assert!(bus.memory().unwrap().is_empty(), "recursion guard: nothing produced");
}

#[test]
fn runtime_config_overrides_the_compiled_one() {
    let overrides = openedx_events::config::ProducerConfig::from_json_str(
        r#"{"org.openedx.learning.test_cert.granted.v1": {
              "learning-certificates": {"enabled": false},
              "learning-cert-off": {"enabled": true, "event_key_field": "cert.user.email"}
           }}"#,
    )
    .unwrap();
    let bus = EventBus::builder()
        .producer_config(config())
        .merge_config(overrides)
        .settings(Settings::new())
        .start()
        .unwrap();
    CertGranted::signal().send_event(cert(2, None));
    let memory = bus.memory().unwrap();
    assert_eq!(memory.len("learning-certificates"), 0);
    let off = memory.events("learning-cert-off");
    assert_eq!(off[0].key, Some(EventKey::String("learner2@example.com".into())));
}

#[test]
fn env_config_is_merged_and_validated() {
    let settings = Settings::new().with(
        "EVENT_BUS_PRODUCER_CONFIG",
        r#"{"org.openedx.learning.test_cert.granted.v1": [{"topic": "learning-cert-off", "enabled": true}]}"#,
    );
    let bus = EventBus::builder()
        .producer_config(config())
        .settings(settings)
        .start()
        .unwrap();
    CertGranted::signal().send_event(cert(3, None));
    assert_eq!(bus.memory().unwrap().len("learning-cert-off"), 1);

    let bad = Settings::new().with(
        "EVENT_BUS_PRODUCER_CONFIG",
        r#"{"org.openedx.learning.test_cert.granted.v1": {"x": {"enabled": true, "event_key_field": "cert.nope"}}}"#,
    );
    let err = EventBus::builder()
        .producer_config(config())
        .settings(bad)
        .start()
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("org.openedx.learning.test_cert.granted.v1") && msg.contains("\"x\"") && msg.contains("`nope`"),
        "{msg}"
    );
    assert!(msg.contains("valid fields: user, course_key, mentor"), "{msg}");
}

#[derive(Default)]
struct FailingProducer {
    attempts: Mutex<Vec<String>>,
}

impl Producer for FailingProducer {
    fn name(&self) -> &'static str {
        "failing"
    }
    fn produce(&self, record: ProducerRecord) -> Result<(), ProduceError> {
        self.attempts.lock().unwrap().push(record.topic.to_string());
        Err(ProduceError::Backend {
            backend: "failing",
            message: "broker unreachable".into(),
        })
    }
    fn flush(&self, _: Duration) -> BoxFuture<'_, Result<(), ProduceError>> {
        Box::pin(async { Ok(()) })
    }
    fn shutdown(&self, _: Duration) -> BoxFuture<'_, Result<(), ProduceError>> {
        Box::pin(async { Ok(()) })
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

/// Captures what `tracing` writes.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn producer_errors_never_reach_the_sender_and_logs_hold_no_data() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let producer = Arc::new(FailingProducer::default());
    let _bus = EventBus::builder()
        .producer_config(config())
        .settings(Settings::new())
        .producer(producer.clone())
        .start()
        .unwrap();
    let responses = CertGranted::signal().send_event_strict(cert(4, Some(5))).unwrap();
    assert!(responses.iter().all(|r| r.outcome.is_ok()), "the sender sees success");
    assert_eq!(producer.attempts.lock().unwrap().len(), 3);

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("failed to produce event"), "{logs}");
    assert!(
        logs.contains("event bus started") && logs.contains("producer=\"failing\"")
            || logs.contains("producer=failing"),
        "start-up names the producer: {logs}"
    );
    assert!(
        logs.contains("event_type=\"org.openedx.learning.test_cert.granted.v1\"")
            || logs.contains("event_type=org.openedx.learning.test_cert.granted.v1"),
        "{logs}"
    );
    assert!(
        logs.contains("topic=learning-cert-users") || logs.contains("topic=\"learning-cert-users\""),
        "{logs}"
    );
    assert!(logs.contains("event_id="), "{logs}");
    assert!(logs.contains("broker unreachable"), "{logs}");
    assert!(!logs.contains("example.com"), "event data must never be logged: {logs}");
}

#[test]
fn dropping_the_bus_disconnects_the_handler() {
    let bus = EventBus::builder()
        .producer_config(config())
        .settings(Settings::new())
        .start()
        .unwrap();
    assert_eq!(CertGranted::signal().receiver_count(), 1);
    drop(bus);
    assert_eq!(CertGranted::signal().receiver_count(), 0);
}

#[test]
fn memory_bus_is_bounded_per_topic() {
    let bus = EventBus::builder()
        .producer_config(config())
        .settings(Settings::new())
        .memory_capacity(5)
        .start()
        .unwrap();
    for i in 0..12 {
        CertGranted::signal().send_event(cert(i, None));
    }
    let memory = bus.memory().unwrap();
    let users = memory.events("learning-cert-users");
    assert_eq!(users.len(), 5);
    assert_eq!(users[0].key, Some(EventKey::Long(7)), "the oldest are dropped first");
    assert_eq!(memory.dropped(), 3 * 7);
    assert_eq!(memory.drain("learning-cert-users").len(), 5);
    assert_eq!(memory.len("learning-cert-users"), 0);
}

#[test]
fn producer_selection_by_setting() {
    let none = EventBus::builder()
        .producer_config(config())
        .settings(Settings::new().with("EVENT_BUS_PRODUCER", "none"))
        .start()
        .unwrap();
    assert_eq!(none.producer().name(), "none");
    drop(none);
    let err = EventBus::builder()
        .settings(Settings::new().with("EVENT_BUS_PRODUCER", "rabbitmq"))
        .start()
        .unwrap_err();
    assert!(err.to_string().contains("use memory, redis, kafka or none"), "{err}");
}

#[test]
fn catalog_events_are_found_by_type_string() {
    use openedx_events::catalog::content_authoring::{XBlockData, XBlockPublished};
    let bus = EventBus::builder()
        .producer_config(producer_config! {
            "org.openedx.content_authoring.xblock.published.v1" => [
                { topic: "content-authoring-xblock-lifecycle", event_key_field: "xblock_info.usage_key", enabled: true },
            ],
        })
        .settings(Settings::new())
        .start()
        .unwrap();
    let usage_key: openedx_events::keys::UsageKey =
        "block-v1:edX+DemoX+Demo_Course+type@video+block@0b9e39477cf34507a7a48f74be381fdd"
            .parse()
            .unwrap();
    XBlockPublished::signal().send_event(XBlockPublished {
        xblock_info: XBlockData {
            usage_key: usage_key.clone(),
            block_type: "video".into(),
            version: None,
        },
    });
    let produced = bus.memory().unwrap().events("content-authoring-xblock-lifecycle");
    assert_eq!(produced.len(), 1);
    assert_eq!(produced[0].key, Some(EventKey::String(usage_key.to_string())));
}

#[tokio::test]
async fn an_async_receiver_panicking_before_its_future_does_not_stop_the_event_being_produced() {
    // Connected before the bus, so it runs before the producing handler.
    CertGranted::signal().connect_async(|ev: openedx_events::Envelope<CertGranted>| {
        let mentor = ev.data.cert.mentor.clone().expect("a mentor");
        async move { drop(mentor) }
    });
    let bus = EventBus::builder()
        .producer_config(config())
        .settings(Settings::new())
        .start()
        .unwrap();
    let responses = CertGranted::signal().send_event(cert(7, None));
    assert!(matches!(&responses[0].outcome, openedx_events::Outcome::Panicked(m) if m == "a mentor"));
    assert_eq!(
        bus.memory().unwrap().len("learning-cert-users"),
        1,
        "the bus handler after the panicking receiver ran"
    );
}

#[test]
fn an_event_whose_metadata_time_python_cannot_read_is_not_produced() {
    let bus = EventBus::builder()
        .producer_config(config())
        .settings(Settings::new())
        .start()
        .unwrap();
    let mut metadata = EventMetadata::generate(CertGranted::EVENT_TYPE, 0);
    metadata.time = chrono::NaiveDate::from_ymd_opt(10000, 1, 1)
        .unwrap()
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc();
    let env = openedx_events::Envelope {
        data: Arc::new(cert(7, None)),
        metadata,
        from_event_bus: false,
    };
    CertGranted::signal().dispatch(&env, SendMode::Robust).unwrap();
    assert!(
        bus.memory().unwrap().is_empty(),
        "a time past 9999 would be written as +10000-..., which Python cannot read"
    );
}

#[test]
fn a_second_live_bus_producing_the_same_event_type_is_refused() {
    let first = EventBus::builder()
        .producer_config(config())
        .settings(Settings::new())
        .start()
        .unwrap();
    let err = EventBus::builder()
        .producer_config(config())
        .settings(Settings::new())
        .start()
        .map(drop)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(CertGranted::EVENT_TYPE) && err.contains("already"),
        "{err}"
    );
    // A bus for other event types may run beside it.
    let other = EventBus::builder()
        .producer_config(producer_config! {
            "org.openedx.content_authoring.xblock.published.v1" => [
                { topic: "content-authoring-xblock-lifecycle", event_key_field: "xblock_info.usage_key", enabled: true },
            ],
        })
        .settings(Settings::new())
        .start()
        .expect("no event type in common");
    CertGranted::signal().send_event(cert(7, None));
    assert_eq!(first.memory().unwrap().len("learning-cert-users"), 1, "produced once");
    assert_eq!(CertGranted::signal().receiver_count(), 1, "one producing handler");
    drop(first);
    let second = EventBus::builder()
        .producer_config(config())
        .settings(Settings::new())
        .start()
        .expect("the first bus is gone");
    drop((second, other));
}
