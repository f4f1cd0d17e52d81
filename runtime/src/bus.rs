//! The event bus: at start-up, connects one generic handler to each configured
//! signal; on each send, the handler produces the event once per enabled topic.

use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

use crate::config::{full_topic, ConfigErrors, ProducerConfig, Route, TopicSettings};
use crate::event::{registry, DuplicateEventType, ErasedKey, EventOps, OpenEdxEvent};
use crate::event_key::EventKey;
use crate::memory::MemoryProducer;
use crate::produce::{KeyFieldInfo, NoProducer, Producer};
use crate::settings::{NonUnicodeSetting, ProducerKind, Settings, UnknownProducer};
use crate::signal::ReceiverId;

mod handler;

use self::handler::{connect_handler, HandlerRoute};

/// The producer configuration declared with `producer_config!`, checked at build time.
#[derive(Debug, Clone, Default)]
pub struct CompiledConfig {
    routes: Vec<CompiledRoute>,
}

/// One (event type, topic) pair of a `producer_config!` block.
#[derive(Debug, Clone)]
pub struct CompiledRoute {
    /// The event type.
    pub event_type: &'static str,
    /// The topic, without prefix.
    pub topic: &'static str,
    /// The key path.
    pub event_key_field: &'static str,
    /// Whether it produces.
    pub enabled: bool,
    key: ErasedKey,
}

impl CompiledConfig {
    #[doc(hidden)]
    pub fn new(routes: Vec<CompiledRoute>) -> Self {
        Self { routes }
    }

    /// The pairs, in declaration order.
    pub fn routes(&self) -> &[CompiledRoute] {
        &self.routes
    }

    /// As a runtime configuration (to merge overrides onto).
    pub fn to_producer_config(&self) -> ProducerConfig {
        let mut c = ProducerConfig::new();
        for r in &self.routes {
            c.insert(
                r.event_type,
                r.topic,
                TopicSettings {
                    event_key_field: Some(r.event_key_field.to_owned()),
                    enabled: Some(r.enabled),
                },
            );
        }
        c
    }

    fn compiled_key(&self, event_type: &str, topic: &str, path: &str) -> Option<ErasedKey> {
        self.routes
            .iter()
            .find(|r| r.event_type == event_type && r.topic == topic && r.event_key_field == path)
            .map(|r| r.key.clone())
    }
}

/// Builds one compiled route; called by the code `producer_config!` expands to.
#[doc(hidden)]
pub fn compiled_route<E: OpenEdxEvent>(
    topic: &'static str,
    event_key_field: &'static str,
    enabled: bool,
    extract: fn(&E) -> Option<EventKey>,
) -> CompiledRoute {
    let parts = crate::event::split_key_path(event_key_field).expect("checked by producer_config!");
    let resolved = E::resolve_key_path(&parts)
        .unwrap_or_else(|e| panic!("producer_config!: {} {event_key_field}: {e}", E::EVENT_TYPE));
    CompiledRoute {
        event_type: E::EVENT_TYPE,
        topic,
        event_key_field,
        enabled,
        key: ErasedKey {
            accessor: Arc::new(move |any: &dyn Any| any.downcast_ref::<E>().and_then(extract)),
            field_name: resolved.field_name,
            avro_type: resolved.avro_type,
        },
    }
}

/// Why the event bus refused to start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Two structs declare one event type.
    #[error(transparent)]
    Duplicate(#[from] DuplicateEventType),
    /// An event's schema gives one Avro record name to two Rust types.
    #[error(transparent)]
    RecordNames(#[from] crate::event::RecordNameClashes),
    /// The producer configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigErrors),
    /// `EVENT_BUS_PRODUCER` names no backend.
    #[error(transparent)]
    UnknownProducer(#[from] UnknownProducer),
    /// An `EVENT_BUS_*` or `EVENTS_*` environment variable is not UTF-8.
    #[error(transparent)]
    Settings(#[from] NonUnicodeSetting),
    /// Another live [`EventBus`] of this process already produces these event types:
    /// a second one would produce each of their events twice.
    #[error(
        "another EventBus of this process already produces {}: a second one would produce each event twice \
         (drop or shut down the first one, or configure each event type on one bus only)",
        .event_types.join(", ")
    )]
    AlreadyProducing {
        /// The event types both buses would produce.
        event_types: Vec<&'static str>,
    },
    /// The backend could not be created.
    #[error("cannot start the {backend} producer: {message}")]
    Producer {
        /// The backend.
        backend: &'static str,
        /// Why.
        message: String,
    },
}

/// Builds an [`EventBus`].
#[derive(Default)]
pub struct EventBusBuilder {
    compiled: CompiledConfig,
    overrides: Vec<ProducerConfig>,
    settings: Option<Settings>,
    producer: Option<Arc<dyn Producer>>,
    memory_capacity: Option<usize>,
}

impl EventBusBuilder {
    /// The compile-time configuration from `producer_config!`.
    pub fn producer_config(mut self, config: CompiledConfig) -> Self {
        self.compiled = config;
        self
    }

    /// A runtime configuration merged over the compile-time one (later calls win).
    pub fn merge_config(mut self, config: ProducerConfig) -> Self {
        self.overrides.push(config);
        self
    }

    /// Reads a `.json` or `.toml` configuration file and merges it.
    pub fn config_file(self, path: impl AsRef<std::path::Path>) -> Result<Self, ConfigErrors> {
        let config = ProducerConfig::from_file(path)?;
        Ok(self.merge_config(config))
    }

    /// Uses these settings instead of the environment.
    pub fn settings(mut self, settings: Settings) -> Self {
        self.settings = Some(settings);
        self
    }

    /// Uses this producer instead of the one `EVENT_BUS_PRODUCER` selects.
    pub fn producer(mut self, producer: Arc<dyn Producer>) -> Self {
        self.producer = Some(producer);
        self
    }

    /// Events kept per topic by the in-memory bus.
    pub fn memory_capacity(mut self, capacity: usize) -> Self {
        self.memory_capacity = Some(capacity);
        self
    }

    /// The final configuration: compiled, then `EVENT_BUS_PRODUCER_CONFIG` (JSON),
    /// then the configurations added with [`Self::merge_config`], each merged over the last.
    pub fn effective_config(&self, settings: &Settings) -> Result<ProducerConfig, ConfigErrors> {
        let mut config = self.compiled.to_producer_config();
        if let Some(env) = settings.get("EVENT_BUS_PRODUCER_CONFIG") {
            config = config.merged(&ProducerConfig::from_json_str(env)?);
        }
        for o in &self.overrides {
            config = config.merged(o);
        }
        Ok(config)
    }

    /// Validates everything, creates the producer and connects the handlers.
    /// Redis and Kafka producers need to be started inside a tokio runtime.
    /// Refused when another live bus already produces one of the event types (see
    /// [`EventBus`]).
    pub fn start(self) -> Result<EventBus, StartError> {
        registry::check()?;
        registry::check_record_names()?;
        let settings = match self.settings.clone() {
            Some(s) => s,
            None => Settings::try_from_env()?,
        };
        if let Some(service) = settings.service_name() {
            crate::metadata::set_service_name(service);
        }
        let config = self.effective_config(&settings)?;
        let routes = config.validate()?;
        let prefix = settings.topic_prefix().map(str::to_owned);

        let mut by_event: Vec<(&'static dyn EventOps, Vec<HandlerRoute>)> = Vec::new();
        let mut active = Vec::new();
        for route in routes.into_iter().filter(|r| r.enabled) {
            let Route {
                descriptor,
                topic,
                event_key_field,
                key,
                ..
            } = route;
            let key = self
                .compiled
                .compiled_key(descriptor.event_type, &topic, &event_key_field)
                .unwrap_or(key);
            let full = full_topic(prefix.as_deref(), &topic);
            active.push(ActiveRoute {
                event_type: descriptor.event_type,
                topic: full.clone(),
                event_key_field,
            });
            let ops = descriptor.ops();
            let handler_route = HandlerRoute {
                topic: full.into(),
                key: Some(key),
            };
            match by_event.iter_mut().find(|(o, _)| o.event_type() == ops.event_type()) {
                Some((_, list)) => list.push(handler_route),
                None => by_event.push((ops, vec![handler_route])),
            }
        }
        // Checked before the producer is created: a refused bus connects to nothing.
        let reservation = Reservation::take(by_event.iter().map(|(ops, _)| ops.event_type()).collect())?;
        let producer = match self.producer.clone() {
            Some(p) => p,
            None => make_producer(&settings, self.memory_capacity)?,
        };
        let infos: Vec<crate::produce::RouteInfo> = by_event
            .iter()
            .flat_map(|(ops, list)| {
                list.iter().map(move |r| crate::produce::RouteInfo {
                    event_type: ops.event_type(),
                    topic: r.topic.clone(),
                    key_field: r.key.as_ref().map(|k| KeyFieldInfo {
                        name: k.field_name,
                        avro_type: k.avro_type,
                    }),
                })
            })
            .collect();
        producer.prepare(&infos);
        let mut connected = Vec::new();
        for (ops, list) in by_event {
            let id = connect_handler(ops, list.into(), producer.clone());
            connected.push((ops, id));
        }
        tracing::info!(
            producer = producer.name(),
            routes = active.len(),
            topic_prefix = prefix.as_deref().unwrap_or(""),
            "event bus started"
        );
        Ok(EventBus {
            producer,
            connected,
            active,
            reservation,
        })
    }
}

/// The event types that have a producing handler connected, process-wide: one live bus
/// per event type, so that no event is produced twice.
static PRODUCING: std::sync::Mutex<Vec<&'static str>> = std::sync::Mutex::new(Vec::new());

/// A bus's claim on its event types; released when dropped.
#[derive(Debug)]
struct Reservation(Vec<&'static str>);

impl Reservation {
    fn take(event_types: Vec<&'static str>) -> Result<Self, StartError> {
        let mut producing = PRODUCING.lock().unwrap_or_else(|e| e.into_inner());
        let taken: Vec<&'static str> = event_types.iter().copied().filter(|t| producing.contains(t)).collect();
        if !taken.is_empty() {
            return Err(StartError::AlreadyProducing { event_types: taken });
        }
        producing.extend(event_types.iter().copied());
        Ok(Self(event_types))
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let mut producing = PRODUCING.lock().unwrap_or_else(|e| e.into_inner());
        producing.retain(|t| !self.0.contains(t));
    }
}

fn make_producer(settings: &Settings, memory_capacity: Option<usize>) -> Result<Arc<dyn Producer>, StartError> {
    match settings.producer_kind()? {
        ProducerKind::Memory => Ok(Arc::new(match memory_capacity {
            Some(c) => MemoryProducer::with_capacity(c),
            None => MemoryProducer::default(),
        })),
        ProducerKind::None => Ok(Arc::new(NoProducer)),
        ProducerKind::Redis => redis_producer(settings),
        ProducerKind::Kafka => kafka_producer(settings),
    }
}

#[cfg(feature = "redis")]
fn redis_producer(settings: &Settings) -> Result<Arc<dyn Producer>, StartError> {
    crate::redis::RedisProducer::from_settings(settings)
        .map(|p| Arc::new(p) as Arc<dyn Producer>)
        .map_err(|e| StartError::Producer {
            backend: "redis",
            message: e.to_string(),
        })
}

#[cfg(not(feature = "redis"))]
fn redis_producer(_: &Settings) -> Result<Arc<dyn Producer>, StartError> {
    Err(StartError::Producer {
        backend: "redis",
        message: "built without the `redis` feature".to_owned(),
    })
}

#[cfg(feature = "kafka")]
fn kafka_producer(settings: &Settings) -> Result<Arc<dyn Producer>, StartError> {
    crate::kafka::KafkaProducer::from_settings(settings)
        .map(|p| Arc::new(p) as Arc<dyn Producer>)
        .map_err(|e| StartError::Producer {
            backend: "kafka",
            message: e.to_string(),
        })
}

#[cfg(not(feature = "kafka"))]
fn kafka_producer(_: &Settings) -> Result<Arc<dyn Producer>, StartError> {
    Err(StartError::Producer {
        backend: "kafka",
        message: "built without the `kafka` feature".to_owned(),
    })
}

/// One enabled (event type, full topic) pair of a running bus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveRoute {
    /// The event type.
    pub event_type: &'static str,
    /// The full topic (prefix applied).
    pub topic: String,
    /// The key path.
    pub event_key_field: String,
}

/// A running event bus: the handlers are connected while it lives.
///
/// A process has at most one live bus per event type: [`EventBusBuilder::start`]
/// refuses ([`StartError::AlreadyProducing`]) a bus that would produce an event type
/// another live bus produces, since each of its events would be produced twice.
/// Buses for disjoint event types may run side by side; dropping or shutting down a
/// bus releases its event types.
///
/// ```
/// use openedx_events::{openedx_event, producer_config, EventBus, OpenEdxEvent, Settings};
///
/// /// Sent when a learner gives kudos.
/// #[openedx_event("org.openedx.learning.kudos.given.v1")]
/// #[derive(Clone, Debug)]
/// pub struct KudosGiven {
///     /// The learner.
///     pub user_id: i64,
/// }
///
/// let bus = EventBus::builder()
///     .producer_config(producer_config! {
///         "org.openedx.learning.kudos.given.v1" => [
///             { topic: "learning-kudos", event_key_field: "user_id", enabled: true },
///         ],
///     })
///     .settings(Settings::new())
///     .start()
///     .unwrap();
/// KudosGiven::signal().send_event(KudosGiven { user_id: 7 });
/// let memory = bus.memory().unwrap();
/// assert_eq!(memory.len("learning-kudos"), 1);
/// assert_eq!(memory.events("learning-kudos")[0].key, Some(openedx_events::EventKey::Long(7)));
/// ```
pub struct EventBus {
    producer: Arc<dyn Producer>,
    connected: Vec<(&'static dyn EventOps, ReceiverId)>,
    active: Vec<ActiveRoute>,
    /// Released after the handlers are disconnected (the last field is dropped last).
    reservation: Reservation,
}

impl std::fmt::Debug for EventBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventBus")
            .field("producer", &self.producer.name())
            .field("routes", &self.active)
            .finish()
    }
}

impl EventBus {
    /// A builder with no compile-time configuration.
    pub fn builder() -> EventBusBuilder {
        EventBusBuilder::default()
    }

    /// The producer in use.
    pub fn producer(&self) -> &Arc<dyn Producer> {
        &self.producer
    }

    /// The in-memory bus, when it is the producer.
    pub fn memory(&self) -> Option<&MemoryProducer> {
        self.producer.as_any().downcast_ref::<MemoryProducer>()
    }

    /// The enabled routes.
    pub fn routes(&self) -> &[ActiveRoute] {
        &self.active
    }

    /// Waits until every event produced so far is delivered or reported failed.
    pub async fn flush(&self, timeout: Duration) -> Result<(), crate::produce::ProduceError> {
        self.producer.flush(timeout).await
    }

    /// Disconnects the handlers, then flushes and shuts the producer down.
    pub async fn shutdown(mut self, timeout: Duration) -> Result<(), crate::produce::ProduceError> {
        self.disconnect();
        self.producer.shutdown(timeout).await
    }

    fn disconnect(&mut self) {
        for (ops, id) in self.connected.drain(..) {
            ops.disconnect(id);
        }
        // The handlers are gone: another bus may produce these event types now.
        drop(std::mem::replace(&mut self.reservation, Reservation(Vec::new())));
    }
}

impl Drop for EventBus {
    fn drop(&mut self) {
        self.disconnect();
    }
}
