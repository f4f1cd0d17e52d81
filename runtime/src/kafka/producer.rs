//! The Kafka producer, wire-compatible with edx-event-bus-kafka.
//!
//! Each event becomes one message: the CloudEvents headers of the spec (in the order
//! the Python producer writes them), the key and the value framed for the Schema
//! Registry (magic byte, schema id, schemaless Avro). Schemas are registered
//! automatically under the topic-record subjects, once per (subject, schema).
//!
//! [`KafkaProducer::produce`] never waits on the network: an event whose schema ids
//! are known is encoded and handed to librdkafka's local queue; an event of a route
//! whose schemas are still being registered is parked, and a background registrar
//! thread registers them, then releases the parked events. Parking is per topic: while
//! an event waits for its schemas, the later events of its topic wait behind it, whatever
//! their type, so that no event overtakes an earlier one of the same key. Delivery reports
//! are handled on librdkafka's polling thread: a failure is logged with event type,
//! topic, event id and error (never the data) and counted. [`KafkaProducer::flush`]
//! and [`KafkaProducer::shutdown`] return only when every event accepted before they
//! were called is delivered or reported failed: events are numbered as `produce` takes
//! them, and flush waits for every number below its start (an event stuck on a slow
//! partition is never stood in for by later events completing elsewhere). A record whose
//! metadata `time` a Python consumer could not read (a leap second, a year outside
//! 1..=9999 in UTC) is refused by `produce` with [`ProduceError::Backend`], never written.
//!
//! Settings: `EVENT_BUS_KAFKA_BOOTSTRAP_SERVERS`, `EVENT_BUS_KAFKA_SCHEMA_REGISTRY_URL`
//! (+ `EVENT_BUS_KAFKA_SCHEMA_REGISTRY_API_KEY` / `_API_SECRET`), `EVENT_BUS_KAFKA_API_KEY` /
//! `_API_SECRET` (SASL_SSL with PLAIN), `EVENTS_SERVICE_NAME` (client id), any librdkafka
//! property as `EVENT_BUS_KAFKA_CONFIG_<NAME>` (e.g. `EVENT_BUS_KAFKA_CONFIG_LINGER_MS=10`
//! sets `linger.ms`; `EVENT_BUS_KAFKA_PRODUCER_CONFIG_<NAME>` for the producer only),
//! the full-queue policy `EVENT_BUS_KAFKA_QUEUE_FULL_WAIT_MS` (see [`QueueFullPolicy`]),
//! and `EVENT_BUS_KAFKA_SCHEMA_RETRY_AFTER_MS`: how long a schema the registry refused for
//! good (or refused with 401/403) stays refused before the next event of its route tries
//! to register it again (default 30000).
//!
//! [`KafkaProducer::shutdown`] waits for the `produce` calls already under way, flushes,
//! then reports failed (logged, counted, and answered to `produce_and_confirm`) every event
//! still waiting for its schema: no accepted event is left unreported.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use rdkafka::config::ClientConfig;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer as _, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;
use serde_json::Value;

use super::registry::{self, RegistryError, SchemaRegistryClient};
use super::{client_config, forward_log};
use crate::produce::{KeyFieldInfo, ProduceError, Producer, ProducerRecord, RouteInfo};
use crate::event_key::EventKey;
use crate::metadata::EventMetadata;
use crate::retry::Backoff;
use crate::settings::Settings;

const BACKEND: &str = "kafka";

/// How long a permanent registration failure holds by default.
const DEFAULT_RETRY_FAILED_AFTER: Duration = Duration::from_secs(30);

/// How long a sender waiting for room in a full queue sleeps between tries.
const QUEUE_FULL_STEP: Duration = Duration::from_micros(500);

/// What `produce` does when librdkafka's local queue is full
/// (`queue.buffering.max.messages` / `.kbytes` reached).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueFullPolicy {
    /// Refuse the event at once with [`ProduceError::BufferFull`] (logged by the bus
    /// with event type, topic and id, and counted as rejected). The default: never
    /// blocks the sending thread.
    Reject,
    /// Wait up to this long for room (blocking the sending thread, in 0.5 ms steps),
    /// then refuse the event. Set with `EVENT_BUS_KAFKA_QUEUE_FULL_WAIT_MS`; only for
    /// services that send from threads that may block.
    Wait(Duration),
}

impl QueueFullPolicy {
    fn from_settings(settings: &Settings) -> Result<Self, String> {
        match settings.get("EVENT_BUS_KAFKA_QUEUE_FULL_WAIT_MS") {
            None => Ok(Self::Reject),
            Some(v) => match v.trim().parse::<u64>() {
                Ok(0) => Ok(Self::Reject),
                Ok(ms) => Ok(Self::Wait(Duration::from_millis(ms))),
                Err(e) => Err(format!("EVENT_BUS_KAFKA_QUEUE_FULL_WAIT_MS={v:?}: {e}")),
            },
        }
    }
}

/// Counters of a [`KafkaProducer`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KafkaProducerStats {
    /// Events accepted by `produce`.
    pub accepted: u64,
    /// Events the broker acknowledged.
    pub delivered: u64,
    /// Accepted events reported failed (delivery error, or their schema could not be registered).
    pub failed: u64,
    /// Events refused by `produce` (full queue, closed producer, encoding error).
    pub rejected: u64,
    /// Accepted events waiting for their schemas to be registered.
    pub parked: u64,
}

/// A value alone on its cache line: the sending threads count accepted events and
/// the polling thread delivered ones, without sharing a line.
#[derive(Default)]
#[repr(align(128))]
struct Padded<T>(T);

impl<T> std::ops::Deref for Padded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

#[derive(Default)]
struct Counters {
    numbers: Numbers,
    accepted: Padded<AtomicU64>,
    delivered: Padded<AtomicU64>,
    failed: AtomicU64,
    rejected: AtomicU64,
    parked: AtomicUsize,
    failed_reported: AtomicU64,
}

/// The numbers of the events `produce` took, and which of them are done (delivered,
/// failed or refused). Every number taken is marked done exactly once.
#[derive(Default)]
struct Numbers {
    /// The next number to give.
    next: Padded<AtomicUsize>,
    done: Mutex<DoneNumbers>,
}

/// Every number below `below` is done, and so are those in the ranges of `above`: each
/// entry `start -> end` holds the done numbers `start..end`; ranges are disjoint and never
/// adjacent, so their count is the number of gaps, not of events (an event stuck for an
/// hour while millions of later ones complete costs one range, not millions of entries).
#[derive(Default)]
struct DoneNumbers {
    below: usize,
    above: std::collections::BTreeMap<usize, usize>,
}

impl DoneNumbers {
    /// Records `n` as done (a number already done is ignored).
    fn insert(&mut self, n: usize) {
        if n < self.below {
            return;
        }
        if n == self.below {
            self.below += 1;
            if let Some(end) = self.above.remove(&self.below) {
                self.below = end;
            }
            return;
        }
        // The range ending at or holding `n`, if any.
        let mut start = n;
        if let Some((&s, &e)) = self.above.range(..=n).next_back() {
            if n < e {
                return;
            }
            if e == n {
                start = s;
            }
        }
        let mut end = n + 1;
        if let Some(e) = self.above.remove(&end) {
            end = e;
        }
        self.above.insert(start, end);
    }

    /// How many numbers below `target` are not done.
    fn pending_below(&self, target: usize) -> usize {
        if self.below >= target {
            return 0;
        }
        let done_above: usize = self
            .above
            .range(..target)
            .map(|(&start, &end)| end.min(target) - start)
            .sum();
        target - self.below - done_above
    }
}

impl Numbers {
    /// Numbers an event `produce` is taking.
    fn take(&self) -> usize {
        self.next.fetch_add(1, Ordering::AcqRel)
    }

    /// The number the next event will get: the events taken before are numbered below.
    fn next(&self) -> usize {
        self.next.load(Ordering::Acquire)
    }

    /// Marks an event done (after its counters are updated: whoever sees it done sees them).
    fn done(&self, n: usize) {
        self.done.lock().unwrap_or_else(|e| e.into_inner()).insert(n);
    }

    /// How many of the events numbered below `target` are not done yet.
    fn pending_below(&self, target: usize) -> usize {
        self.done
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pending_below(target)
    }
}

/// The callers of [`KafkaProducer::produce_and_confirm`] waiting for their message's
/// delivery report, by the event's number (which the message carries to librdkafka).
#[derive(Default)]
struct Waiters {
    /// How many wait: delivery reports skip the lock when nobody does.
    len: AtomicUsize,
    waiting: Mutex<HashMap<usize, tokio::sync::oneshot::Sender<Result<DeliveredAt, String>>>>,
}

impl Waiters {
    fn add(&self, n: usize, tx: tokio::sync::oneshot::Sender<Result<DeliveredAt, String>>) {
        let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        waiting.insert(n, tx);
        self.len.store(waiting.len(), Ordering::Release);
    }

    fn take(&self, n: usize) -> Option<tokio::sync::oneshot::Sender<Result<DeliveredAt, String>>> {
        if self.len.load(Ordering::Acquire) == 0 {
            return None;
        }
        let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        let tx = waiting.remove(&n);
        self.len.store(waiting.len(), Ordering::Release);
        tx
    }

    fn resolve(&self, n: usize, outcome: Result<DeliveredAt, String>) {
        if let Some(tx) = self.take(n) {
            let _ = tx.send(outcome);
        }
    }
}

/// Where the broker stored a delivered message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliveredAt {
    /// The partition.
    pub partition: i32,
    /// The message's offset in it.
    pub offset: i64,
}

struct DeliveryContext {
    counters: Arc<Counters>,
    waiters: Arc<Waiters>,
}

impl ClientContext for DeliveryContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        forward_log(level, fac, message);
    }
    fn error(&self, error: KafkaError, reason: &str) {
        tracing::error!(error = %error, reason, "librdkafka error");
    }
}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, number: usize) {
        match result {
            Ok(message) => {
                self.counters.delivered.fetch_add(1, Ordering::AcqRel);
                self.counters.numbers.done(number);
                self.waiters.resolve(
                    number,
                    Ok(DeliveredAt {
                        partition: message.partition(),
                        offset: message.offset(),
                    }),
                );
            }
            Err((error, message)) => {
                self.counters.failed.fetch_add(1, Ordering::AcqRel);
                self.counters.numbers.done(number);
                self.waiters.resolve(number, Err(error.to_string()));
                // What to log is read back from the message's headers: never the data.
                let header = |name: &str| {
                    message
                        .headers()
                        .and_then(|h| h.iter().find(|h| h.key == name))
                        .and_then(|h| h.value)
                        .and_then(|v| std::str::from_utf8(v).ok())
                        .unwrap_or_default()
                };
                tracing::error!(
                    event_type = header("ce_type"),
                    topic = message.topic(),
                    event_id = header("ce_id"),
                    error = %error,
                    "kafka delivery failed"
                );
            }
        }
    }
}

type RouteKey = (Arc<str>, &'static str, Option<(&'static str, &'static str)>);

/// Schema ids of one (topic, event type, key field) route.
struct RouteIds {
    value_id: u32,
    key_id: Option<u32>,
}

struct RouteState {
    /// The id of the producer this route belongs to (for the per-thread cache).
    owner: u64,
    topic: Arc<str>,
    event_type: &'static str,
    key_field: Option<KeyFieldInfo>,
    ready: OnceLock<RouteIds>,
    /// Whether `failure` holds one (read without its lock on the fast path).
    has_failed: AtomicBool,
    /// The last permanent registration failure, set and cleared under the gate's lock.
    failure: Mutex<Option<Failure>>,
    /// The parked events of this route's topic.
    gate: Arc<TopicGate>,
    requested: AtomicBool,
}

/// A permanent registration failure: it holds for the producer's retry interval, then
/// the next event of the route registers again.
struct Failure {
    error: Arc<str>,
    at: Instant,
}

impl RouteState {
    /// Whether registration has ended, either way.
    fn settled(&self) -> bool {
        self.ready.get().is_some() || self.has_failed.load(Ordering::Acquire)
    }

    /// The route's registration failure, if any.
    fn failure(&self) -> Option<Arc<str>> {
        if !self.has_failed.load(Ordering::Acquire) {
            return None;
        }
        let failure = self.failure.lock().unwrap_or_else(|e| e.into_inner());
        failure.as_ref().map(|f| f.error.clone())
    }

    /// The route's registration failure, if it is younger than `retry_after`.
    fn fresh_failure(&self, retry_after: Duration) -> Option<Arc<str>> {
        if !self.has_failed.load(Ordering::Acquire) {
            return None;
        }
        let failure = self.failure.lock().unwrap_or_else(|e| e.into_inner());
        failure
            .as_ref()
            .filter(|f| f.at.elapsed() < retry_after)
            .map(|f| f.error.clone())
    }

    /// Records a permanent failure (under the gate's lock).
    fn set_failure(&self, error: String) {
        *self.failure.lock().unwrap_or_else(|e| e.into_inner()) = Some(Failure {
            error: error.into(),
            at: Instant::now(),
        });
        self.has_failed.store(true, Ordering::Release);
    }

    /// Forgets an old failure so that the route registers again (under the gate's lock).
    fn clear_failure(&self) {
        *self.failure.lock().unwrap_or_else(|e| e.into_inner()) = None;
        self.has_failed.store(false, Ordering::Release);
        self.requested.store(false, Ordering::Release);
    }
}

/// The events of one topic parked until their schemas are registered, in the order
/// they were produced. The first one always belongs to a route still being registered:
/// the events behind it (of any route) are released when it is.
#[derive(Default)]
struct TopicGate {
    /// Each with its number.
    parked: Mutex<std::collections::VecDeque<Parked>>,
    /// How many are parked, read without the lock on the fast path; counts the events a
    /// release took out of `parked` until each is sent or failed.
    len: AtomicUsize,
    /// Set (under the lock) while a release sends a chunk outside the lock: events of
    /// the topic queue behind it even when `parked` is empty.
    releasing: AtomicBool,
}

/// A parked event: the record, its route, its number (see [`Numbers`]).
type Parked = (ProducerRecord, Arc<RouteState>, usize);

/// Whether [`Inner::send`] counts the event (a new one) or not (a released one, counted
/// accepted when it was parked).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Counting {
    New,
    Released,
}

/// The longest librdkafka flush call of [`KafkaProducer::flush`]: between two, it checks
/// whether the events it waits for are done.
const FLUSH_STEP: Duration = Duration::from_millis(50);

/// How many events a release takes out of a topic's queue at once: the lock is held to
/// take them, never to encode or send them.
const RELEASE_CHUNK: usize = 256;

struct Inner {
    /// Unique among the producers of the process.
    id: u64,
    producer: ThreadedProducer<DeliveryContext>,
    counters: Arc<Counters>,
    routes: RwLock<HashMap<RouteKey, Arc<RouteState>>>,
    gates: Mutex<HashMap<Arc<str>, Arc<TopicGate>>>,
    waiters: Arc<Waiters>,
    registrar: Mutex<Option<tokio::sync::mpsc::UnboundedSender<Arc<RouteState>>>>,
    closed: AtomicBool,
    /// `produce` calls under way: shutdown waits for those that passed the `closed`
    /// check before it was set.
    producing: Padded<AtomicUsize>,
    policy: QueueFullPolicy,
    max_parked: usize,
    /// How long a permanent registration failure holds, in milliseconds.
    retry_failed_after_ms: AtomicU64,
}

/// The Kafka producer. Cheap to clone (shared state).
#[derive(Clone)]
pub struct KafkaProducer {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for KafkaProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaProducer")
            .field("stats", &self.stats())
            .field("policy", &self.inner.policy)
            .finish_non_exhaustive()
    }
}

/// Why a Kafka producer could not be created.
#[derive(Debug, thiserror::Error)]
pub enum KafkaSetupError {
    /// A setting is missing or invalid.
    #[error("{0}")]
    Settings(String),
    /// librdkafka refused the configuration.
    #[error("librdkafka: {0}")]
    Kafka(#[from] KafkaError),
    /// The schema registry client could not be made.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The registrar thread could not be started.
    #[error("cannot start the schema registrar thread: {0}")]
    Thread(std::io::Error),
}

impl KafkaProducer {
    /// Creates the producer from settings (see the module documentation).
    pub fn from_settings(settings: &Settings) -> Result<Self, KafkaSetupError> {
        let config = client_config(settings, "PRODUCER").map_err(KafkaSetupError::Settings)?;
        let registry = SchemaRegistryClient::from_settings(settings)?;
        let policy = QueueFullPolicy::from_settings(settings).map_err(KafkaSetupError::Settings)?;
        let retry_after =
            match settings.get("EVENT_BUS_KAFKA_SCHEMA_RETRY_AFTER_MS") {
                None => DEFAULT_RETRY_FAILED_AFTER,
                Some(v) => Duration::from_millis(v.trim().parse::<u64>().map_err(|e| {
                    KafkaSetupError::Settings(format!("EVENT_BUS_KAFKA_SCHEMA_RETRY_AFTER_MS={v:?}: {e}"))
                })?),
            };
        let producer = Self::new(config, registry, policy)?;
        producer.set_registration_retry_after(retry_after);
        Ok(producer)
    }

    /// Sets how long a schema the registry refused for good stays refused: events of its
    /// route are refused meanwhile, and the first one after it registers again (a schema
    /// made compatible, credentials fixed). 30 s by default.
    ///
    /// ```no_run
    /// # fn example(producer: openedx_events::kafka::KafkaProducer) {
    /// producer.set_registration_retry_after(std::time::Duration::from_secs(5));
    /// # }
    /// ```
    pub fn set_registration_retry_after(&self, after: Duration) {
        self.inner
            .retry_failed_after_ms
            .store(after.as_millis().min(u64::MAX as u128) as u64, Ordering::Relaxed);
    }

    /// Creates the producer from a librdkafka configuration and a registry client.
    /// Idempotence is on unless the configuration says otherwise, so retries keep the
    /// order per partition and never duplicate.
    pub fn new(
        mut config: ClientConfig,
        registry: SchemaRegistryClient,
        policy: QueueFullPolicy,
    ) -> Result<Self, KafkaSetupError> {
        if config.get("enable.idempotence").is_none() {
            config.set("enable.idempotence", "true");
        }
        let max_parked = config
            .get("queue.buffering.max.messages")
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(100_000);
        let counters = Arc::new(Counters::default());
        let waiters = Arc::new(Waiters::default());
        let producer: ThreadedProducer<DeliveryContext> = config.create_with_context(DeliveryContext {
            counters: counters.clone(),
            waiters: waiters.clone(),
        })?;
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        let inner = Arc::new(Inner {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            producer,
            counters,
            routes: RwLock::default(),
            gates: Mutex::default(),
            waiters,
            registrar: Mutex::new(Some(tx)),
            closed: AtomicBool::new(false),
            producing: Padded::default(),
            policy,
            max_parked,
            retry_failed_after_ms: AtomicU64::new(DEFAULT_RETRY_FAILED_AFTER.as_millis() as u64),
        });
        let weak = Arc::downgrade(&inner);
        std::thread::Builder::new()
            .name("kafka-schema-registrar".into())
            .spawn(move || registrar_thread(weak, registry, rx))
            .map_err(KafkaSetupError::Thread)?;
        Ok(Self { inner })
    }

    /// The counters so far.
    pub fn stats(&self) -> KafkaProducerStats {
        let c = &self.inner.counters;
        KafkaProducerStats {
            accepted: c.accepted.load(Ordering::Acquire),
            delivered: c.delivered.load(Ordering::Acquire),
            failed: c.failed.load(Ordering::Acquire),
            rejected: c.rejected.load(Ordering::Acquire),
            parked: c.parked.load(Ordering::Acquire) as u64,
        }
    }

    fn route(&self, record: &ProducerRecord) -> Arc<RouteState> {
        // Most events of a thread go to the route of the one before: skip the map then.
        let cached = LAST_ROUTE.with(|last| {
            let last = last.borrow();
            last.as_ref()
                .filter(|r| {
                    r.owner == self.inner.id
                        && r.event_type == record.metadata.event_type
                        && r.key_field == record.key_field
                        && (Arc::ptr_eq(&r.topic, &record.topic) || r.topic == record.topic)
                })
                .cloned()
        });
        if let Some(route) = cached {
            return route;
        }
        let route = self.lookup_route(record);
        LAST_ROUTE.with(|last| *last.borrow_mut() = Some(route.clone()));
        route
    }

    fn lookup_route(&self, record: &ProducerRecord) -> Arc<RouteState> {
        self.route_of(&record.topic, record.metadata.event_type, record.key_field)
    }

    fn route_of(&self, topic: &Arc<str>, event_type: &'static str, key_field: Option<KeyFieldInfo>) -> Arc<RouteState> {
        let key: RouteKey = (topic.clone(), event_type, key_field.map(|k| (k.name, k.avro_type)));
        if let Some(r) = self.inner.routes.read().unwrap_or_else(|e| e.into_inner()).get(&key) {
            return r.clone();
        }
        let mut routes = self.inner.routes.write().unwrap_or_else(|e| e.into_inner());
        routes
            .entry(key)
            .or_insert_with(|| {
                let gate = self
                    .inner
                    .gates
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .entry(topic.clone())
                    .or_default()
                    .clone();
                Arc::new(RouteState {
                    owner: self.inner.id,
                    topic: topic.clone(),
                    event_type,
                    key_field,
                    ready: OnceLock::new(),
                    has_failed: AtomicBool::new(false),
                    failure: Mutex::new(None),
                    gate,
                    requested: AtomicBool::new(false),
                })
            })
            .clone()
    }

    /// Asks the registrar to register a route's schemas, once.
    fn request_registration(&self, route: &Arc<RouteState>) {
        if !route.requested.swap(true, Ordering::AcqRel) {
            let registrar = self.inner.registrar.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(tx) = registrar.as_ref() {
                let _ = tx.send(route.clone());
            }
        }
    }

    /// Registers the schemas of these routes in the background, so that their first
    /// events need not wait for the registry. [`Producer::prepare`] calls it.
    pub fn register_routes(&self, routes: &[RouteInfo]) {
        for r in routes {
            let route = self.route_of(&r.topic, r.event_type, r.key_field);
            self.request_registration(&route);
        }
    }

    /// Produces one event, as [`Producer::produce`] does, and waits for the broker to
    /// acknowledge it: returns where it landed, or why it was not delivered. Only the
    /// returned future waits; the event goes out with the others, in order.
    ///
    /// ```no_run
    /// # async fn example(producer: openedx_events::kafka::KafkaProducer,
    /// #                  record: openedx_events::produce::ProducerRecord) {
    /// let at = producer.produce_and_confirm(record).await.expect("delivered");
    /// println!("partition {} offset {}", at.partition, at.offset);
    /// # }
    /// ```
    pub async fn produce_and_confirm(&self, record: ProducerRecord) -> Result<DeliveredAt, ProduceError> {
        let (tx, delivered) = tokio::sync::oneshot::channel();
        self.produce_record(record, Some(tx))?;
        match delivered.await {
            Ok(Ok(at)) => Ok(at),
            Ok(Err(error)) => Err(backend_error(error)),
            // The producer went away with the message.
            Err(_) => Err(ProduceError::Closed),
        }
    }

    fn produce_record(
        &self,
        record: ProducerRecord,
        confirm: Option<tokio::sync::oneshot::Sender<Result<DeliveredAt, String>>>,
    ) -> Result<(), ProduceError> {
        // Counted before `closed` is read, so that shutdown, which sets `closed` and then
        // reads this, waits for every call that may still accept an event.
        self.inner.producing.fetch_add(1, Ordering::SeqCst);
        let number = self.inner.counters.numbers.take();
        if let Some(tx) = confirm {
            // Before the message reaches librdkafka, whose report may come at once.
            self.inner.waiters.add(number, tx);
        }
        let result = self.produce_open(record, number);
        if result.is_err() {
            // Refused: nobody waits for it.
            self.inner.waiters.take(number);
            self.inner.counters.numbers.done(number);
        }
        self.inner.producing.fetch_sub(1, Ordering::Release);
        result
    }

    fn retry_failed_after(&self) -> Duration {
        Duration::from_millis(self.inner.retry_failed_after_ms.load(Ordering::Relaxed))
    }

    /// Sends or parks an event; refused, its number is left for the caller to mark done.
    fn produce_open(&self, record: ProducerRecord, number: usize) -> Result<(), ProduceError> {
        if self.inner.closed.load(Ordering::SeqCst) {
            return Err(self.inner.reject(ProduceError::Closed));
        }
        if let Err(problem) = crate::time::check_python(&record.metadata.time) {
            // A Python consumer could not read its `ce_time` (`+10000-…`, second 60): refused,
            // as the bus handler refuses it, rather than written.
            return Err(self.inner.reject(ProduceError::Backend {
                backend: "kafka",
                message: format!(
                    "event {} not produced: its metadata time is {problem}",
                    record.metadata.id
                ),
            }));
        }
        let route = self.route(&record);
        if let Some(error) = route.fresh_failure(self.retry_failed_after()) {
            return Err(self.inner.reject(registration_failed(&error)));
        }
        if route.gate.len.load(Ordering::Acquire) == 0 {
            if let Some(ids) = route.ready.get() {
                return self.inner.send(&record, ids, self.inner.policy, number, Counting::New);
            }
        }
        let mut parked = route.gate.parked.lock().unwrap_or_else(|e| e.into_inner());
        // The route may have been settled, and the topic's parked events released, while
        // we waited for the lock. A route settles under this lock, so what is read here
        // stays true until the event is queued: an event of a failed route is never parked
        // after its route's release ran (nothing would release it, and it would hold every
        // later event of its topic).
        if route.has_failed.load(Ordering::Acquire) {
            match route.fresh_failure(self.retry_failed_after()) {
                Some(error) => {
                    drop(parked);
                    return Err(self.inner.reject(registration_failed(&error)));
                }
                // Failed long enough ago: this event registers again.
                None => route.clear_failure(),
            }
        }
        if parked.is_empty() && !route.gate.releasing.load(Ordering::Acquire) {
            if let Some(ids) = route.ready.get() {
                drop(parked);
                return self.inner.send(&record, ids, self.inner.policy, number, Counting::New);
            }
        }
        if self.inner.counters.parked.load(Ordering::Acquire) >= self.inner.max_parked {
            drop(parked);
            return Err(self.inner.reject(ProduceError::BufferFull { waited: Duration::ZERO }));
        }
        let settled = route.settled();
        parked.push_back((record, route.clone(), number));
        route.gate.len.fetch_add(1, Ordering::AcqRel);
        self.inner.counters.parked.fetch_add(1, Ordering::AcqRel);
        self.inner.counters.accepted.fetch_add(1, Ordering::AcqRel);
        drop(parked);
        if !settled {
            self.request_registration(&route);
        }
        Ok(())
    }

    async fn flush_inner(&self, timeout: Duration) -> Result<(), ProduceError> {
        let deadline = Instant::now() + timeout;
        // Exactly the events taken before this call, by number, not by count: later events
        // completing (on another partition, say) never stand in for an earlier one.
        let target = self.inner.counters.numbers.next();
        loop {
            let pending = self.inner.counters.numbers.pending_below(target);
            if pending == 0 {
                break;
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(ProduceError::Timeout {
                    pending,
                    waited: timeout,
                });
            }
            if self.inner.producer.in_flight_count() == 0 {
                // Parked until their schemas are registered, or their last delivery
                // reports are being handled on the polling thread.
                tokio::time::sleep(Duration::from_millis(2)).await;
                continue;
            }
            // librdkafka sends what it queued at once (whatever `linger.ms`) and reports
            // deliveries; in short steps, as other threads may keep producing meanwhile.
            let inner = self.inner.clone();
            let step = remaining.min(FLUSH_STEP);
            let flushed = tokio::task::spawn_blocking(move || inner.producer.flush(step))
                .await
                .map_err(|e| backend_error(format!("flush task: {e}")))?;
            match flushed {
                Ok(()) => tokio::time::sleep(Duration::from_millis(1)).await,
                Err(KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut)) => {}
                Err(e) => return Err(backend_error(e.to_string())),
            }
        }
        let failed = self.inner.counters.failed.load(Ordering::Acquire);
        let before = self.inner.counters.failed_reported.swap(failed, Ordering::AcqRel);
        if failed > before {
            return Err(ProduceError::Failed {
                failed: failed - before,
            });
        }
        Ok(())
    }

    /// Reports every parked event failed (at shutdown).
    fn fail_all_parked(&self, error: &str) {
        let gates: Vec<Arc<TopicGate>> = self
            .inner
            .gates
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        for gate in gates {
            let mut parked = gate.parked.lock().unwrap_or_else(|e| e.into_inner());
            while let Some((record, _, number)) = parked.pop_front() {
                gate.len.fetch_sub(1, Ordering::AcqRel);
                self.inner.counters.parked.fetch_sub(1, Ordering::AcqRel);
                self.inner.fail_parked(&record, error, number);
            }
        }
    }
}

/// The refusal of an event whose route's schemas could not be registered.
fn registration_failed(error: &str) -> ProduceError {
    backend_error(format!("schema registration failed: {error}"))
}

fn backend_error(message: String) -> ProduceError {
    ProduceError::Backend {
        backend: BACKEND,
        message,
    }
}

/// The schema registry's text of the key schema and the value schema of a route.
struct RouteSchemas {
    value_subject: String,
    value_schema: String,
    key: Option<(String, String)>,
}

fn route_schemas(route: &RouteState) -> Result<RouteSchemas, String> {
    let descriptor = crate::event::registry::find(route.event_type)
        .ok_or_else(|| format!("unknown event type {}", route.event_type))?;
    let schema_json = descriptor.ops().schema().json();
    let key = route.key_field.map(|k| {
        let text = key_schema_text(schema_json, k);
        (registry::key_subject(&route.topic, k.avro_type), text)
    });
    Ok(RouteSchemas {
        value_subject: registry::value_subject(&route.topic, route.event_type),
        value_schema: descriptor.ops().schema().registry_text().to_owned(),
        key,
    })
}

/// The key schema as edx-event-bus-kafka registers it: the field entry of the key,
/// found by its name in the event schema (the path's last segment), as sorted JSON.
fn key_schema_text(event_schema: &Value, key: KeyFieldInfo) -> String {
    let entry = find_field_entry(event_schema, key.name)
        .filter(|e| e.get("type").and_then(Value::as_str) == Some(key.avro_type))
        .unwrap_or_else(|| serde_json::json!({"name": key.name, "type": key.avro_type}));
    crate::avro::json_text::sorted_compact(&entry)
}

fn find_field_entry(schema: &Value, name: &str) -> Option<Value> {
    match schema {
        Value::Object(map) => {
            if let Some(fields) = map.get("fields").and_then(Value::as_array) {
                for f in fields {
                    if f.get("name").and_then(Value::as_str) == Some(name) {
                        return Some(f.clone());
                    }
                }
            }
            map.values().find_map(|v| find_field_entry(v, name))
        }
        Value::Array(items) => items.iter().find_map(|v| find_field_entry(v, name)),
        _ => None,
    }
}

/// Appends an Avro `long` (zig-zag, variable length).
fn put_long(n: i64, out: &mut Vec<u8>) {
    let mut v = ((n << 1) ^ (n >> 63)) as u64;
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Writes a key as a framed Avro primitive (the key schema is a primitive field entry).
fn encode_key(key: &EventKey, id: u32, out: &mut Vec<u8>) {
    out.extend_from_slice(&registry::frame_header(id));
    match key {
        EventKey::String(s) => {
            put_long(s.len() as i64, out);
            out.extend_from_slice(s.as_bytes());
        }
        EventKey::Long(n) => put_long(*n, out),
        EventKey::Boolean(b) => out.push(u8::from(*b)),
        EventKey::Double(d) => out.extend_from_slice(&d.to_le_bytes()),
    }
}

/// The headers of the spec, in the order edx-event-bus-kafka writes them.
///
/// A `time` a Python consumer cannot read (a leap second, a year outside 1..=9999 in UTC)
/// is written as [`EventMetadata::time_string`] gives it; [`KafkaProducer::produce`]
/// refuses such a record before it gets here (see [`crate::time::check_python`]).
pub fn headers_for(metadata: &EventMetadata) -> OwnedHeaders {
    const DIGITS: [&str; 10] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];
    let mut id_buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
    let id = metadata.id.hyphenated().encode_lower(&mut id_buf);
    let mut time_buf = [0u8; crate::time::ISO_LEN];
    let time_owned;
    let time = match crate::time::format_into(&metadata.time, &mut time_buf) {
        Some(t) => t,
        None => {
            time_owned = metadata.time_string();
            &time_owned
        }
    };
    let minor_owned;
    let minor = match DIGITS.get(metadata.minorversion as usize) {
        Some(d) => *d,
        None => {
            minor_owned = metadata.minorversion.to_string();
            &minor_owned
        }
    };
    SOURCELIB.with(|cache| {
        let mut cache = cache.borrow_mut();
        if cache.as_ref().is_none_or(|(lib, _)| *lib != metadata.sourcelib) {
            *cache = Some((metadata.sourcelib.clone(), metadata.sourcelib.to_string()));
        }
        let sourcelib = cache.as_ref().map(|(_, s)| s.as_str()).unwrap_or_default();
        let pairs: [(&str, &str); 10] = [
            ("ce_specversion", "1.0"),
            ("content-type", "application/avro"),
            ("ce_datacontenttype", "application/avro"),
            ("ce_type", metadata.event_type),
            ("ce_id", id),
            ("ce_source", &metadata.source),
            ("ce_time", time),
            ("ce_minorversion", minor),
            ("sourcehost", &metadata.sourcehost),
            ("sourcelib", sourcelib),
        ];
        let mut headers = OwnedHeaders::new_with_capacity(pairs.len());
        for (key, value) in pairs {
            headers = headers.insert(Header {
                key,
                value: Some(value.as_bytes()),
            });
        }
        headers
    })
}

thread_local! {
    static SOURCELIB: std::cell::RefCell<Option<(crate::metadata::SourceLib, String)>> = const { std::cell::RefCell::new(None) };
    /// The route of the last event produced from this thread.
    static LAST_ROUTE: std::cell::RefCell<Option<Arc<RouteState>>> = const { std::cell::RefCell::new(None) };
    static BUFFERS: std::cell::RefCell<(Vec<u8>, Vec<u8>)> = const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
}

impl Inner {
    /// Counts a refusal of `produce` and returns it.
    fn reject(&self, error: ProduceError) -> ProduceError {
        self.counters.rejected.fetch_add(1, Ordering::Relaxed);
        error
    }

    /// Encodes and enqueues one event whose schema ids are known; a new event is counted
    /// accepted or rejected, a released one was counted accepted when it was parked.
    fn send(
        &self,
        record: &ProducerRecord,
        ids: &RouteIds,
        policy: QueueFullPolicy,
        number: usize,
        counting: Counting,
    ) -> Result<(), ProduceError> {
        let count = |counter: &AtomicU64| {
            if counting == Counting::New {
                counter.fetch_add(1, Ordering::AcqRel);
            }
        };
        BUFFERS.with(|cell| {
            let mut guard = cell.borrow_mut();
            let (key_buf, value_buf) = &mut *guard;
            key_buf.clear();
            value_buf.clear();
            value_buf.extend_from_slice(&registry::frame_header(ids.value_id));
            if let Err(e) = record.data.encode_avro(value_buf) {
                count(&self.counters.rejected);
                return Err(ProduceError::Encode(e));
            }
            let has_key = match (&record.key, ids.key_id) {
                (Some(key), Some(id)) => {
                    encode_key(key, id, key_buf);
                    true
                }
                _ => false,
            };
            let mut base = BaseRecord::with_opaque_to(&record.topic, number)
                .payload(&value_buf[..])
                .headers(headers_for(&record.metadata));
            if has_key {
                base = base.key(&key_buf[..]);
            }
            let mut started = None;
            loop {
                match self.producer.send(base) {
                    Ok(()) => {
                        count(&self.counters.accepted);
                        return Ok(());
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        let waited = started.get_or_insert_with(Instant::now).elapsed();
                        match policy {
                            QueueFullPolicy::Wait(limit) if waited < limit => {
                                base = back;
                                std::thread::sleep(QUEUE_FULL_STEP);
                            }
                            _ => {
                                count(&self.counters.rejected);
                                return Err(ProduceError::BufferFull { waited });
                            }
                        }
                    }
                    Err((e, _)) => {
                        count(&self.counters.rejected);
                        return Err(backend_error(e.to_string()));
                    }
                }
            }
        })
    }

    /// Marks a parked event failed (its schemas could not be registered, or the producer
    /// shut down first).
    fn fail_parked(&self, record: &ProducerRecord, error: &str, number: usize) {
        self.counters.failed.fetch_add(1, Ordering::AcqRel);
        self.counters.numbers.done(number);
        self.waiters.resolve(number, Err(error.to_owned()));
        tracing::error!(
            event_type = record.metadata.event_type,
            topic = &*record.topic,
            event_id = %record.metadata.id,
            error,
            "kafka event dropped before its schema was registered"
        );
    }
}

/// Registers schemas in the background and releases parked events.
fn registrar_thread(
    inner: std::sync::Weak<Inner>,
    registry: SchemaRegistryClient,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<Arc<RouteState>>,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the schema registrar runtime");
            return;
        }
    };
    let registry = Arc::new(registry);
    runtime.block_on(async move {
        while let Some(route) = rx.recv().await {
            let inner = inner.clone();
            let registry = registry.clone();
            tokio::spawn(async move { register_route(inner, registry, route).await });
        }
    });
}

async fn register_route(inner: std::sync::Weak<Inner>, registry: Arc<SchemaRegistryClient>, route: Arc<RouteState>) {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
    let outcome = loop {
        match register_once(&registry, &route).await {
            Ok(ids) => break Ok(ids),
            Err(Attempt::Permanent(e)) => break Err(e),
            Err(Attempt::Retry(e)) => {
                let delay = backoff.next_delay();
                tracing::warn!(
                    event_type = route.event_type,
                    topic = &*route.topic,
                    error = %e,
                    retry_in_ms = delay.as_millis() as u64,
                    "schema registration failed; retrying"
                );
                match inner.upgrade() {
                    Some(i) if !i.closed.load(Ordering::Acquire) || i.counters.parked.load(Ordering::Acquire) > 0 => {}
                    _ => return,
                }
                tokio::time::sleep(delay).await;
            }
        }
    };
    // Settle the route under the topic's lock, then release the topic's events in order.
    {
        let _parked = route.gate.parked.lock().unwrap_or_else(|e| e.into_inner());
        match outcome {
            Ok(ids) => {
                tracing::info!(
                    event_type = route.event_type,
                    topic = &*route.topic,
                    value_schema_id = ids.value_id,
                    key_schema_id = ids.key_id,
                    "schemas registered"
                );
                let _ = route.ready.set(ids);
            }
            Err(error) => {
                tracing::error!(event_type = route.event_type, topic = &*route.topic, error = %error, "schema registration failed");
                route.set_failure(error);
            }
        }
    }
    release_gate(inner, &route).await;
}

/// Releases the settled events at the front of a route's topic queue, in order: takes up
/// to [`RELEASE_CHUNK`] of them under the topic's lock, then encodes and sends them
/// without it (producers of the topic queue behind meanwhile, and are never blocked for
/// longer than a chunk is taken). When librdkafka's queue is full the rest of the chunk
/// goes back to the front and it tries again a little later. One release runs per topic
/// at a time; a route settled while one runs is released by it.
async fn release_gate(inner: std::sync::Weak<Inner>, route: &RouteState) {
    let gate = &route.gate;
    {
        let _parked = gate.parked.lock().unwrap_or_else(|e| e.into_inner());
        if gate.releasing.swap(true, Ordering::AcqRel) {
            // The running release sees this route settled when it next looks.
            return;
        }
    }
    let mut backoff = Backoff::new(Duration::from_millis(1), Duration::from_millis(100));
    let mut released = 0usize;
    loop {
        let Some(inner) = inner.upgrade() else {
            gate.releasing.store(false, Ordering::Release);
            return;
        };
        let chunk = {
            let mut parked = gate.parked.lock().unwrap_or_else(|e| e.into_inner());
            let settled = parked
                .iter()
                .take(RELEASE_CHUNK)
                .take_while(|(_, r, _)| r.settled())
                .count();
            if settled == 0 {
                gate.releasing.store(false, Ordering::Release);
                tracing::debug!(
                    topic = &*route.topic,
                    released,
                    still_parked = parked.len(),
                    "parked events released"
                );
                return;
            }
            parked.drain(..settled).collect::<Vec<Parked>>()
        };
        let sent = chunk
            .iter()
            .take_while(|entry| release_one(&inner, gate, entry))
            .count();
        released += sent;
        let queue_full = sent < chunk.len();
        if queue_full {
            // No room in librdkafka's queue: the rest goes back to the front, in order.
            let mut parked = gate.parked.lock().unwrap_or_else(|e| e.into_inner());
            for entry in chunk.into_iter().skip(sent).rev() {
                parked.push_front(entry);
            }
        }
        drop(inner);
        if queue_full {
            tracing::debug!(
                topic = &*route.topic,
                released,
                "librdkafka's queue is full; releasing later"
            );
            tokio::time::sleep(backoff.next_delay()).await;
        } else {
            backoff.reset();
        }
    }
}

/// Sends (or fails) one parked event whose route is settled; false (and nothing done)
/// when librdkafka's queue is full.
fn release_one(inner: &Inner, gate: &TopicGate, entry: &Parked) -> bool {
    let (record, route, number) = entry;
    let failure = if let Some(ids) = route.ready.get() {
        // Counted as accepted when parked: it stays parked or is reported failed.
        match inner.send(record, ids, QueueFullPolicy::Reject, *number, Counting::Released) {
            Ok(()) => None,
            Err(e) => {
                if matches!(e, ProduceError::BufferFull { .. }) {
                    return false;
                }
                Some(e.to_string())
            }
        }
    } else {
        Some(
            route
                .failure()
                .map(|e| e.to_string())
                .unwrap_or_else(|| "schema registration failed".to_owned()),
        )
    };
    gate.len.fetch_sub(1, Ordering::AcqRel);
    inner.counters.parked.fetch_sub(1, Ordering::AcqRel);
    // Reported after the counts, so that whoever hears of it sees them up to date.
    if let Some(error) = failure {
        inner.fail_parked(record, &error, *number);
    }
    true
}

enum Attempt {
    Retry(String),
    Permanent(String),
}

async fn register_once(registry: &SchemaRegistryClient, route: &RouteState) -> Result<RouteIds, Attempt> {
    let schemas = route_schemas(route).map_err(Attempt::Permanent)?;
    let classify = |e: RegistryError| match &e {
        RegistryError::Status { status, .. } if (400..500).contains(status) && *status != 408 && *status != 429 => {
            Attempt::Permanent(e.to_string())
        }
        RegistryError::NotConfigured | RegistryError::BadSchema { .. } => Attempt::Permanent(e.to_string()),
        _ => Attempt::Retry(e.to_string()),
    };
    let key_id = match &schemas.key {
        Some((subject, text)) => Some(registry.register(subject, text).await.map_err(classify)?),
        None => None,
    };
    let value_id = registry
        .register(&schemas.value_subject, &schemas.value_schema)
        .await
        .map_err(classify)?;
    Ok(RouteIds { value_id, key_id })
}

impl Producer for KafkaProducer {
    fn name(&self) -> &'static str {
        BACKEND
    }

    fn prepare(&self, routes: &[RouteInfo]) {
        self.register_routes(routes);
    }

    fn produce(&self, record: ProducerRecord) -> Result<(), ProduceError> {
        self.produce_record(record, None)
    }

    fn flush(&self, timeout: Duration) -> BoxFuture<'_, Result<(), ProduceError>> {
        Box::pin(self.flush_inner(timeout))
    }

    fn shutdown(&self, timeout: Duration) -> BoxFuture<'_, Result<(), ProduceError>> {
        Box::pin(async move {
            let deadline = Instant::now() + timeout;
            self.inner.closed.store(true, Ordering::SeqCst);
            // The calls that passed the `closed` check before it was set may still accept
            // their event: flush must count them.
            while self.inner.producing.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            let result = self
                .flush_inner(deadline.saturating_duration_since(Instant::now()))
                .await;
            // Stops the registrar once its work is done.
            self.inner.registrar.lock().unwrap_or_else(|e| e.into_inner()).take();
            // Nothing releases what is still parked now: report it failed.
            self.fail_all_parked("the producer shut down before the event's schema was registered");
            let stats = self.stats();
            tracing::info!(
                accepted = stats.accepted,
                delivered = stats.delivered,
                failed = stats.failed,
                rejected = stats.rejected,
                "kafka producer shut down"
            );
            result
        })
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_done_out_of_order_count_only_below_the_target() {
        let numbers = Numbers::default();
        let taken: Vec<usize> = (0..5).map(|_| numbers.take()).collect();
        assert_eq!(taken, [0, 1, 2, 3, 4]);
        let target = numbers.next();
        // Later events done first never stand in for the first one.
        for n in [4, 2, 1] {
            numbers.done(n);
        }
        assert_eq!(numbers.pending_below(target), 2);
        assert_eq!(numbers.pending_below(2), 1);
        numbers.done(0);
        assert_eq!(numbers.pending_below(3), 0);
        assert_eq!(numbers.pending_below(target), 1);
        numbers.done(3);
        assert_eq!(numbers.pending_below(target), 0);
        // Everything done moved below: nothing is kept above.
        assert!(numbers.done.lock().unwrap().above.is_empty());
    }

    #[test]
    fn one_stuck_event_costs_one_range_however_many_later_ones_complete() {
        let numbers = Numbers::default();
        let stuck = numbers.take();
        for _ in 0..1_000_000 {
            let n = numbers.take();
            numbers.done(n);
        }
        let target = numbers.next();
        {
            let done = numbers.done.lock().unwrap();
            assert_eq!(done.above.len(), 1, "later completions merge into one range");
        }
        assert_eq!(numbers.pending_below(target), 1);
        numbers.done(stuck);
        assert_eq!(numbers.pending_below(target), 0);
        let done = numbers.done.lock().unwrap();
        assert!(done.above.is_empty());
        assert_eq!(done.below, target);
    }

    #[test]
    fn done_numbers_agree_with_a_plain_set_in_any_order() {
        // A small deterministic generator (xorshift): orders with repeats and gaps.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for round in 0..200 {
            let len = 1 + (next() % 64) as usize;
            let mut done = DoneNumbers::default();
            let mut model = std::collections::HashSet::new();
            for _ in 0..len * 2 {
                let n = (next() % len as u64) as usize;
                done.insert(n);
                model.insert(n);
                for target in 0..=len {
                    let want = (0..target).filter(|k| !model.contains(k)).count();
                    assert_eq!(done.pending_below(target), want, "round {round}, target {target}");
                }
                // Ranges stay disjoint, non-adjacent and above `below`.
                let mut last_end = done.below;
                for (&start, &end) in &done.above {
                    assert!(start > last_end && start < end, "round {round}: {:?}", done.above);
                    last_end = end;
                }
            }
        }
    }

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

    #[test]
    fn queue_full_policy_setting() {
        let s = Settings::new().with("EVENT_BUS_KAFKA_QUEUE_FULL_WAIT_MS", "25");
        assert_eq!(
            QueueFullPolicy::from_settings(&s),
            Ok(QueueFullPolicy::Wait(Duration::from_millis(25)))
        );
        assert_eq!(
            QueueFullPolicy::from_settings(&Settings::new()),
            Ok(QueueFullPolicy::Reject)
        );
        assert!(QueueFullPolicy::from_settings(&s.with("EVENT_BUS_KAFKA_QUEUE_FULL_WAIT_MS", "x")).is_err());
    }

    #[test]
    fn key_encoding_is_framed_avro() {
        let mut out = Vec::new();
        encode_key(&EventKey::String("ab".into()), 3, &mut out);
        assert_eq!(out, [0, 0, 0, 0, 3, 4, b'a', b'b']);
        out.clear();
        encode_key(&EventKey::Long(-1), 1, &mut out);
        assert_eq!(out, [0, 0, 0, 0, 1, 1]);
        out.clear();
        encode_key(&EventKey::Long(-65), 1, &mut out);
        assert_eq!(out, [0, 0, 0, 0, 1, 0x81, 0x01]);
        out.clear();
        encode_key(&EventKey::Long(i64::MIN), 1, &mut out);
        assert_eq!(&out[5..], [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
        // Same bytes as the Avro codec writes for the primitive.
        let schema: serde_avro_fast::Schema = "\"string\"".parse().unwrap();
        let s = "é".repeat(100);
        out.clear();
        encode_key(&EventKey::String(s.clone()), 0, &mut out);
        let mut config = serde_avro_fast::ser::SerializerConfig::new(&schema);
        assert_eq!(out[5..], serde_avro_fast::to_datum_vec(&s, &mut config).unwrap());
    }
}
