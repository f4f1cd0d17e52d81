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
//!
//! # Where the code is
//!
//! This file: [`KafkaProducer`] (set-up, routes, `produce`, flush, shutdown; ~520 lines: the
//! handle's paths share its state, the parts below it are apart). `send.rs`: where an
//! event's bytes leave for Kafka (headers, framed key and value, the full-queue policy).
//! `routes.rs`: routes, their schema ids and the per-topic gate of parked events.
//! `registrar.rs`: schema registration at start-up and the release of parked events.
//! `delivery.rs`: delivery reports. `counting.rs`: event numbers, counters, waiters.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{Producer as _, ThreadedProducer};

mod counting;
mod delivery;
mod registrar;
mod routes;
mod send;

pub use counting::DeliveredAt;
pub use send::{headers_for, QueueFullPolicy};

use self::counting::{Counters, Padded, Waiters};
use self::delivery::DeliveryContext;
use self::registrar::registrar_thread;
use self::routes::{RouteKey, RouteState, TopicGate};
use self::send::{backend_error, registration_failed, Counting, Inner, BACKEND};
use super::client_config;
use super::registry::RegistryError;
use super::registry::SchemaRegistryClient;
use crate::produce::{KeyFieldInfo, ProduceError, Producer, ProducerRecord, RouteInfo};
use crate::settings::Settings;

/// How long a permanent registration failure holds by default.
const DEFAULT_RETRY_FAILED_AFTER: Duration = Duration::from_secs(30);

/// The longest librdkafka flush call of [`KafkaProducer::flush`]: between two, it checks
/// whether the events it waits for are done.
const FLUSH_STEP: Duration = Duration::from_millis(50);

thread_local! {
    /// The route of the last event produced from this thread.
    static LAST_ROUTE: std::cell::RefCell<Option<Arc<RouteState>>> = const { std::cell::RefCell::new(None) };
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
