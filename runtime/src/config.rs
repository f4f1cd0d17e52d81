//! Producer configuration (ADR 12 / ADR 14): which event types are produced to
//! which topics, with which key.
//!
//! Two shapes are read, as the Python stack reads them:
//! - ADR 12 (list): `{event_type: [{"topic", "event_key_field", "enabled"}, ...]}`
//! - ADR 14 (mapping): `{event_type: {topic: {"event_key_field", "enabled"}}}`
//!
//! from JSON, TOML, a file, or the `EVENT_BUS_PRODUCER_CONFIG` environment variable,
//! merged over the compile-time config of `producer_config!` with the semantics of
//! Python's `merge_producer_configs`, and validated against the registry at start-up.
//!
//! Why one file of ~630 lines: the two shapes, the merge and the validation work on the
//! same few types, in this order; the rule texts shared with the macros are kept with
//! the validation that applies them.

use std::fmt;
use std::path::Path;

use indexmap::IndexMap;
use serde_json::Value;

use crate::event::{registry, ErasedKey, EventDescriptor};
use crate::event_key::KeyPathError;

/// The settings of one (event type, topic) pair. A field left `None` is not set
/// (an override that sets only `enabled` keeps the base's key path).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopicSettings {
    /// Period-delimited path to the key field in the event data.
    pub event_key_field: Option<String>,
    /// Whether events are produced to this topic.
    pub enabled: Option<bool>,
}

/// A producer configuration: event type → topic → settings, in the order given.
///
/// ```
/// use openedx_events::config::ProducerConfig;
/// let base = ProducerConfig::from_json_str(r#"{"org.openedx.learning.a.v1":
///     {"topic-a": {"event_key_field": "x.id", "enabled": true}}}"#).unwrap();
/// let overrides = ProducerConfig::from_json_str(r#"{"org.openedx.learning.a.v1":
///     [{"topic": "topic-a", "enabled": false}]}"#).unwrap();
/// let merged = base.merged(&overrides);
/// let s = merged.get("org.openedx.learning.a.v1", "topic-a").unwrap();
/// assert_eq!(s.enabled, Some(false));
/// assert_eq!(s.event_key_field.as_deref(), Some("x.id"));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProducerConfig {
    events: IndexMap<String, IndexMap<String, TopicSettings>>,
}

/// A problem in a producer configuration, naming the event type, topic and field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The text is not valid JSON or TOML.
    #[error("{format} producer config is malformed: {message}")]
    Malformed {
        /// `JSON` or `TOML`.
        format: &'static str,
        /// The parser's message, with line and column.
        message: String,
    },
    /// The file could not be read, or has an unknown extension.
    #[error("cannot read producer config {path}: {message}")]
    File {
        /// The path.
        path: String,
        /// Why.
        message: String,
    },
    /// The top level, or an event type's entry, has the wrong shape.
    #[error("{0}")]
    Shape(String),
    /// No registered event has this type. The sentence is the one `producer_config!`
    /// gives for the same mistake; a string that is not an event type at all says why.
    #[error("{}{}", openedx_events_rules::event_type::unknown(event_type, suggestion.as_deref()), openedx_events_rules::event_type::check(event_type).err().map(|e| format!(" ({e})")).unwrap_or_default())]
    UnknownEventType {
        /// The type string.
        event_type: String,
        /// The closest registered type, if one is close.
        suggestion: Option<String>,
    },
    /// An entry lacks a required key.
    #[error("{event_type} / topic {topic:?}: missing {key:?}")]
    MissingKey {
        /// The event type.
        event_type: String,
        /// The topic.
        topic: String,
        /// `event_key_field` or `enabled`.
        key: &'static str,
    },
    /// An entry's value has the wrong JSON type.
    #[error("{event_type} / topic {topic:?}: {key:?} must be {expected}, found {found}")]
    WrongType {
        /// The event type.
        event_type: String,
        /// The topic (or `#n` for the n-th list item without one).
        topic: String,
        /// The key.
        key: String,
        /// The expected type.
        expected: &'static str,
        /// What was found.
        found: &'static str,
    },
    /// An entry has a key that is not `topic`, `event_key_field` or `enabled`.
    #[error("{event_type} / topic {topic:?}: unknown key {key:?} (valid: topic, event_key_field, enabled)")]
    UnknownKey {
        /// The event type.
        event_type: String,
        /// The topic.
        topic: String,
        /// The key.
        key: String,
    },
    /// The same topic is listed twice for one event type (the ambiguity ADR 14 removed).
    #[error("{event_type}: topic {topic:?} is configured twice")]
    DuplicateTopic {
        /// The event type.
        event_type: String,
        /// The topic.
        topic: String,
    },
    /// The topic name is not a legal Kafka topic name.
    #[error("{event_type}: {}", openedx_events_rules::topic::message(topic, reason))]
    IllegalTopic {
        /// The event type.
        event_type: String,
        /// The topic.
        topic: String,
        /// Why.
        reason: TopicError,
    },
    /// The key path does not resolve to a scalar field of the event.
    #[error("{event_type} / topic {topic:?}: {}", openedx_events_rules::key_path::bad_key_path(path, &source.to_string()))]
    BadKeyPath {
        /// The event type.
        event_type: String,
        /// The topic.
        topic: String,
        /// The path.
        path: String,
        /// What is wrong with it.
        #[source]
        source: KeyPathError,
    },
}

/// Every problem found in a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid producer config ({} problem{}):",
            self.0.len(),
            if self.0.len() == 1 { "" } else { "s" }
        )?;
        for e in &self.0 {
            write!(f, "\n  - {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl From<ConfigError> for ConfigErrors {
    fn from(e: ConfigError) -> Self {
        ConfigErrors(vec![e])
    }
}

/// Why a topic name is refused (the rules crate's, which `producer_config!` applies too).
pub use openedx_events_rules::topic::TopicError;

/// Checks a topic name against Kafka's rules: 1 to 249 characters of
/// `[A-Za-z0-9._-]`, and not `.` or `..`.
///
/// ```
/// use openedx_events::config::{check_topic_name, TopicError};
/// assert!(check_topic_name("course-catalog.v1").is_ok());
/// assert_eq!(check_topic_name("bad topic"), Err(TopicError::BadChar(' ')));
/// ```
pub fn check_topic_name(topic: &str) -> Result<(), TopicError> {
    openedx_events_rules::topic::check(topic)
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

impl ProducerConfig {
    /// An empty configuration.
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses JSON in either shape. A key given twice in one object (an event type, a
    /// topic, a setting) is refused: the second would silently replace the first.
    pub fn from_json_str(text: &str) -> Result<Self, ConfigErrors> {
        let value: Value = parse_json_unique_keys(text.as_bytes()).map_err(|e| ConfigError::Malformed {
            format: "JSON",
            message: e.to_string(),
        })?;
        Self::from_value(&value)
    }

    /// Parses TOML in either shape (the list shape as arrays of tables).
    pub fn from_toml_str(text: &str) -> Result<Self, ConfigErrors> {
        let value: toml::Value = toml::from_str(text).map_err(|e| ConfigError::Malformed {
            format: "TOML",
            message: e.to_string(),
        })?;
        let value = serde_json::to_value(value).map_err(|e| ConfigError::Malformed {
            format: "TOML",
            message: e.to_string(),
        })?;
        Self::from_value(&value)
    }

    /// Reads a `.json` or `.toml` file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, ConfigErrors> {
        let path = path.as_ref();
        let file_error = |message: String| ConfigError::File {
            path: path.display().to_string(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| file_error(e.to_string()))?;
        match path.extension().and_then(|e| e.to_str()) {
            Some("json") => Self::from_json_str(&text),
            Some("toml") => Self::from_toml_str(&text),
            _ => Err(file_error("the file name must end in .json or .toml".to_owned()).into()),
        }
    }

    /// Reads a parsed JSON value in either shape, reporting every problem.
    pub fn from_value(value: &Value) -> Result<Self, ConfigErrors> {
        let Value::Object(top) = value else {
            return Err(ConfigError::Shape(format!(
                "producer config must be a mapping of event types to topics, found {}",
                json_type(value)
            ))
            .into());
        };
        let mut errors = Vec::new();
        let mut events = IndexMap::new();
        for (event_type, entry) in top {
            let mut topics: IndexMap<String, TopicSettings> = IndexMap::new();
            match entry {
                // ADR 12: a list of {topic, event_key_field, enabled}.
                Value::Array(items) => {
                    for (i, item) in items.iter().enumerate() {
                        let Value::Object(obj) = item else {
                            errors.push(ConfigError::Shape(format!(
                                "{event_type}: item #{i} must be a mapping with topic, event_key_field and enabled, found {}",
                                json_type(item)
                            )));
                            continue;
                        };
                        let topic = match obj.get("topic") {
                            Some(Value::String(t)) => t.clone(),
                            Some(other) => {
                                errors.push(ConfigError::WrongType {
                                    event_type: event_type.clone(),
                                    topic: format!("#{i}"),
                                    key: "topic".into(),
                                    expected: "a string",
                                    found: json_type(other),
                                });
                                continue;
                            }
                            None => {
                                errors.push(ConfigError::MissingKey {
                                    event_type: event_type.clone(),
                                    topic: format!("#{i}"),
                                    key: "topic",
                                });
                                continue;
                            }
                        };
                        let settings = read_settings(event_type, &topic, obj, true, &mut errors);
                        if topics.contains_key(&topic) {
                            errors.push(ConfigError::DuplicateTopic {
                                event_type: event_type.clone(),
                                topic,
                            });
                        } else {
                            topics.insert(topic, settings);
                        }
                    }
                }
                // ADR 14: {topic: {event_key_field, enabled}}.
                Value::Object(map) => {
                    for (topic, item) in map {
                        let Value::Object(obj) = item else {
                            errors.push(ConfigError::Shape(format!(
                                "{event_type} / topic {topic:?}: must be a mapping with event_key_field and enabled, found {}",
                                json_type(item)
                            )));
                            continue;
                        };
                        let settings = read_settings(event_type, topic, obj, false, &mut errors);
                        topics.insert(topic.clone(), settings);
                    }
                }
                other => errors.push(ConfigError::Shape(format!(
                    "{event_type}: must be a list of topic entries or a mapping of topics, found {}",
                    json_type(other)
                ))),
            }
            events.insert(event_type.clone(), topics);
        }
        if errors.is_empty() {
            Ok(Self { events })
        } else {
            Err(ConfigErrors(errors))
        }
    }

    /// Adds or replaces one (event type, topic) entry.
    pub fn insert(&mut self, event_type: impl Into<String>, topic: impl Into<String>, settings: TopicSettings) {
        self.events
            .entry(event_type.into())
            .or_default()
            .insert(topic.into(), settings);
    }

    /// The settings of one pair.
    pub fn get(&self, event_type: &str, topic: &str) -> Option<&TopicSettings> {
        self.events.get(event_type)?.get(topic)
    }

    /// Every (event type, topic, settings), in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str, &TopicSettings)> {
        self.events
            .iter()
            .flat_map(|(e, topics)| topics.iter().map(move |(t, s)| (e.as_str(), t.as_str(), s)))
    }

    /// Whether there is no entry.
    pub fn is_empty(&self) -> bool {
        self.events.values().all(IndexMap::is_empty)
    }

    /// `merge_producer_configs(self, overrides)`: every pair of `overrides` is
    /// added; for a pair in both, each setting the override sets wins. An event type
    /// the override lists with no topic is kept (with no topic), so that
    /// [`ProducerConfig::validate`] reports it if no event has that type.
    pub fn merged(&self, overrides: &ProducerConfig) -> ProducerConfig {
        let mut out = self.clone();
        for (event_type, topics) in &overrides.events {
            // The event type is kept even when it lists no topic, so that `validate`
            // reports an unknown one (as Python's start-up does) instead of dropping it.
            let event = out.events.entry(event_type.clone()).or_default();
            for (topic, o) in topics {
                let entry = event.entry(topic.clone()).or_default();
                if o.event_key_field.is_some() {
                    entry.event_key_field = o.event_key_field.clone();
                }
                if o.enabled.is_some() {
                    entry.enabled = o.enabled;
                }
            }
        }
        out
    }

    /// The configuration as JSON in the ADR 14 shape.
    pub fn to_json(&self) -> Value {
        let mut top = serde_json::Map::new();
        for (event_type, topics) in &self.events {
            let mut t = serde_json::Map::new();
            for (topic, s) in topics {
                let mut o = serde_json::Map::new();
                if let Some(k) = &s.event_key_field {
                    o.insert("event_key_field".into(), Value::String(k.clone()));
                }
                if let Some(e) = s.enabled {
                    o.insert("enabled".into(), Value::Bool(e));
                }
                t.insert(topic.clone(), Value::Object(o));
            }
            top.insert(event_type.clone(), Value::Object(t));
        }
        Value::Object(top)
    }

    /// Validates against the event registry: known event types, legal topics,
    /// both settings present, key paths resolving to scalar fields. Returns the
    /// routes (enabled or not) or every problem found.
    pub fn validate(&self) -> Result<Vec<Route>, ConfigErrors> {
        let mut errors = Vec::new();
        let mut routes = Vec::new();
        for (event_type, topics) in &self.events {
            let Some(descriptor) = registry::find(event_type) else {
                errors.push(ConfigError::UnknownEventType {
                    event_type: event_type.clone(),
                    suggestion: closest_event_type(event_type),
                });
                continue;
            };
            for (topic, s) in topics {
                if let Err(reason) = check_topic_name(topic) {
                    errors.push(ConfigError::IllegalTopic {
                        event_type: event_type.clone(),
                        topic: topic.clone(),
                        reason,
                    });
                }
                let Some(path) = &s.event_key_field else {
                    errors.push(ConfigError::MissingKey {
                        event_type: event_type.clone(),
                        topic: topic.clone(),
                        key: "event_key_field",
                    });
                    continue;
                };
                let Some(enabled) = s.enabled else {
                    errors.push(ConfigError::MissingKey {
                        event_type: event_type.clone(),
                        topic: topic.clone(),
                        key: "enabled",
                    });
                    continue;
                };
                match descriptor.ops().resolve_key(path) {
                    Ok(key) => routes.push(Route {
                        descriptor,
                        topic: topic.clone(),
                        event_key_field: path.clone(),
                        enabled,
                        key,
                    }),
                    Err(source) => errors.push(ConfigError::BadKeyPath {
                        event_type: event_type.clone(),
                        topic: topic.clone(),
                        path: path.clone(),
                        source,
                    }),
                }
            }
        }
        if errors.is_empty() {
            Ok(routes)
        } else {
            Err(ConfigErrors(errors))
        }
    }
}

/// Parses JSON text like `serde_json::from_slice`, but refuses an object that has a key
/// twice (serde_json keeps the last one silently), naming the key's path.
///
/// ```
/// use openedx_events::config::parse_json_unique_keys;
/// assert!(parse_json_unique_keys(br#"{"a": {"b": 1, "c": [2]}}"#).is_ok());
/// let err = parse_json_unique_keys(br#"{"a": {"b": 1, "b": 2}}"#).unwrap_err();
/// assert!(err.to_string().starts_with("`a.b` is given twice"), "{err}");
/// let err = parse_json_unique_keys(br#"{"org.x.v1": {"t": 1, "t": 2}}"#).unwrap_err();
/// assert!(err.to_string().starts_with(r#"`"org.x.v1".t` is given twice"#), "{err}");
/// ```
pub fn parse_json_unique_keys(text: &[u8]) -> Result<Value, serde_json::Error> {
    use serde::de::{DeserializeSeed, Deserializer, Error, MapAccess, SeqAccess, Visitor};

    struct Unique<'a>(&'a str);

    impl Unique<'_> {
        /// `parent.key`; a key that is not a plain name (an event type has dots) is quoted.
        fn child(&self, key: &str) -> String {
            let plain = !key.is_empty() && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            let key = if plain { key.to_owned() } else { format!("{key:?}") };
            if self.0.is_empty() {
                key
            } else {
                format!("{}.{key}", self.0)
            }
        }
    }

    impl<'de> DeserializeSeed<'de> for Unique<'_> {
        type Value = Value;
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
            d.deserialize_any(self)
        }
    }

    impl<'de> Visitor<'de> for Unique<'_> {
        type Value = Value;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a JSON value")
        }
        fn visit_bool<E: Error>(self, v: bool) -> Result<Value, E> {
            Ok(Value::Bool(v))
        }
        fn visit_i64<E: Error>(self, v: i64) -> Result<Value, E> {
            Ok(Value::from(v))
        }
        fn visit_u64<E: Error>(self, v: u64) -> Result<Value, E> {
            Ok(Value::from(v))
        }
        fn visit_f64<E: Error>(self, v: f64) -> Result<Value, E> {
            Ok(Value::from(v))
        }
        fn visit_str<E: Error>(self, v: &str) -> Result<Value, E> {
            Ok(Value::String(v.to_owned()))
        }
        fn visit_string<E: Error>(self, v: String) -> Result<Value, E> {
            Ok(Value::String(v))
        }
        fn visit_unit<E: Error>(self) -> Result<Value, E> {
            Ok(Value::Null)
        }
        fn visit_none<E: Error>(self) -> Result<Value, E> {
            Ok(Value::Null)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
            d.deserialize_any(self)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
            let mut out = Vec::new();
            loop {
                let path = format!("{}[{}]", self.0, out.len());
                match seq.next_element_seed(Unique(&path))? {
                    Some(v) => out.push(v),
                    None => return Ok(Value::Array(out)),
                }
            }
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
            let mut out = serde_json::Map::new();
            while let Some(key) = map.next_key::<String>()? {
                let path = self.child(&key);
                if out.contains_key(&key) {
                    return Err(A::Error::custom(format_args!("`{path}` is given twice")));
                }
                let value = map.next_value_seed(Unique(&path))?;
                out.insert(key, value);
            }
            Ok(Value::Object(out))
        }
    }

    let mut de = serde_json::Deserializer::from_slice(text);
    let value = Unique("").deserialize(&mut de)?;
    de.end()?;
    Ok(value)
}

fn read_settings(
    event_type: &str,
    topic: &str,
    obj: &serde_json::Map<String, Value>,
    list_shape: bool,
    errors: &mut Vec<ConfigError>,
) -> TopicSettings {
    let mut s = TopicSettings::default();
    for (k, v) in obj {
        match (k.as_str(), v) {
            ("topic", _) if list_shape => {}
            ("event_key_field", Value::String(p)) => s.event_key_field = Some(p.clone()),
            ("enabled", Value::Bool(b)) => s.enabled = Some(*b),
            ("event_key_field" | "enabled", other) => errors.push(ConfigError::WrongType {
                event_type: event_type.to_owned(),
                topic: topic.to_owned(),
                key: k.clone(),
                expected: if k == "enabled" { "a boolean" } else { "a string" },
                found: json_type(other),
            }),
            _ => errors.push(ConfigError::UnknownKey {
                event_type: event_type.to_owned(),
                topic: topic.to_owned(),
                key: k.clone(),
            }),
        }
    }
    s
}

/// The registered event type closest to `wanted` (by the rules crate's "did you mean"
/// distance, which `producer_config!` uses too), if close.
///
/// ```
/// use openedx_events::config::closest_event_type;
/// assert_eq!(
///     closest_event_type("org.openedx.learning.course.enrollment.create.v1").as_deref(),
///     Some("org.openedx.learning.course.enrollment.created.v1")
/// );
/// ```
pub fn closest_event_type(wanted: &str) -> Option<String> {
    let events = registry::events();
    openedx_events_rules::suggest::nearest_in(wanted, events.iter().map(|d| d.event_type)).map(str::to_owned)
}

/// One validated (event type, topic) pair.
#[derive(Debug, Clone)]
pub struct Route {
    /// The event.
    pub descriptor: &'static EventDescriptor,
    /// The configured topic (without prefix).
    pub topic: String,
    /// The key path.
    pub event_key_field: String,
    /// Whether events are produced.
    pub enabled: bool,
    /// The resolved key.
    pub key: ErasedKey,
}

/// Full topic name: `{prefix}-{topic}` when a prefix is configured.
///
/// ```
/// assert_eq!(openedx_events::config::full_topic(Some("prod"), "xblock"), "prod-xblock");
/// assert_eq!(openedx_events::config::full_topic(None, "xblock"), "xblock");
/// ```
pub fn full_topic(prefix: Option<&str>, topic: &str) -> String {
    match prefix.filter(|p| !p.is_empty()) {
        Some(p) => format!("{p}-{topic}"),
        None => topic.to_owned(),
    }
}
