//! Settings of the event bus, named as the Python stack names them
//! (`EVENT_BUS_PRODUCER`, `EVENT_BUS_TOPIC_PREFIX`, `EVENTS_SERVICE_NAME`...).
//!
//! Read from the environment by default; tests and tools can build them by hand.

use std::collections::BTreeMap;
use std::fmt;

/// A set of `NAME=value` settings.
///
/// ```
/// use openedx_events::Settings;
/// let s = Settings::new().with("EVENT_BUS_TOPIC_PREFIX", "dev");
/// assert_eq!(s.get("EVENT_BUS_TOPIC_PREFIX"), Some("dev"));
/// assert_eq!(s.topic_prefix(), Some("dev"));
/// ```
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Settings {
    values: BTreeMap<String, String>,
}

/// The producer backends `EVENT_BUS_PRODUCER` selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProducerKind {
    /// The embedded in-memory bus (the default).
    Memory,
    /// Redis Streams.
    Redis,
    /// Kafka.
    Kafka,
    /// Drop every event.
    None,
}

/// An `EVENT_BUS_PRODUCER` value that names no backend.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("EVENT_BUS_PRODUCER={0:?} names no producer; use memory, redis, kafka or none")]
pub struct UnknownProducer(pub String);

/// An `EVENT_BUS_*` or `EVENTS_*` environment variable whose value is not UTF-8.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("environment variable {name} is not valid UTF-8")]
pub struct NonUnicodeSetting {
    /// The variable's name (lossily decoded if the name itself is not UTF-8).
    pub name: String,
}

impl Settings {
    /// No settings.
    pub fn new() -> Self {
        Self::default()
    }

    /// The process environment's `EVENT_BUS_*` and `EVENTS_*` variables.
    ///
    /// Never panics: variables that are none of ours are ignored whatever their bytes,
    /// and one of ours that is not UTF-8 is left out with an error log naming it (its
    /// value is not logged). [`Settings::try_from_env`] refuses it instead, as
    /// [`EventBus::start`](crate::EventBus) does.
    pub fn from_env() -> Self {
        let mut values = BTreeMap::new();
        for item in Self::read_env() {
            match item {
                Ok((k, v)) => {
                    values.insert(k, v);
                }
                Err(e) => tracing::error!(variable = %e.name, "ignoring a setting that is not UTF-8"),
            }
        }
        Self { values }
    }

    /// The process environment's `EVENT_BUS_*` and `EVENTS_*` variables, refusing one
    /// whose value (or name) is not UTF-8. Variables that are none of ours are ignored,
    /// whatever their bytes.
    ///
    /// ```
    /// let settings = openedx_events::Settings::try_from_env().expect("UTF-8 settings");
    /// assert!(settings.iter().all(|(k, _)| k.starts_with("EVENT")));
    /// ```
    pub fn try_from_env() -> Result<Self, NonUnicodeSetting> {
        let values = Self::read_env().collect::<Result<_, _>>()?;
        Ok(Self { values })
    }

    fn read_env() -> impl Iterator<Item = Result<(String, String), NonUnicodeSetting>> {
        fn ours(name: &[u8]) -> bool {
            name.starts_with(b"EVENT_BUS_") || name.starts_with(b"EVENTS_")
        }
        // `vars_os`: `std::env::vars` panics on any variable that is not UTF-8.
        std::env::vars_os().filter_map(|(k, v)| {
            if !ours(k.as_encoded_bytes()) {
                return None;
            }
            Some(match (k.into_string(), v.into_string()) {
                (Ok(k), Ok(v)) => Ok((k, v)),
                (Ok(name), Err(_)) => Err(NonUnicodeSetting { name }),
                (Err(k), _) => Err(NonUnicodeSetting {
                    name: k.to_string_lossy().into_owned(),
                }),
            })
        })
    }

    /// Sets one setting, by value.
    pub fn with(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.set(name, value);
        self
    }

    /// Sets one setting.
    pub fn set(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.values.insert(name.into(), value.into());
    }

    /// One setting; an empty value counts as unset.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str).filter(|v| !v.is_empty())
    }

    /// Every setting.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.values.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// `EVENT_BUS_TOPIC_PREFIX`.
    pub fn topic_prefix(&self) -> Option<&str> {
        self.get("EVENT_BUS_TOPIC_PREFIX")
    }

    /// `EVENTS_SERVICE_NAME`.
    pub fn service_name(&self) -> Option<&str> {
        self.get("EVENTS_SERVICE_NAME")
    }

    /// `EVENT_BUS_PRODUCER`: `memory` (default), `redis`, `kafka`, `none`; the Python
    /// stack's dotted paths (`edx_event_bus_redis.create_producer`...) are understood too.
    pub fn producer_kind(&self) -> Result<ProducerKind, UnknownProducer> {
        let Some(v) = self.get("EVENT_BUS_PRODUCER") else {
            return Ok(ProducerKind::Memory);
        };
        match v.trim().to_ascii_lowercase().as_str() {
            "memory" => Ok(ProducerKind::Memory),
            "redis" | "edx_event_bus_redis.create_producer" => Ok(ProducerKind::Redis),
            "kafka" | "edx_event_bus_kafka.create_producer" => Ok(ProducerKind::Kafka),
            "none" | "openedx_events.event_bus.noeventbusproducer" => Ok(ProducerKind::None),
            _ => Err(UnknownProducer(v.to_owned())),
        }
    }
}

fn is_secret(name: &str) -> bool {
    ["SECRET", "PASSWORD", "API_KEY"].iter().any(|s| name.contains(s))
}

/// Hides the password of a URL such as `redis://user:pass@host`.
pub(crate) fn redact_url(value: &str) -> String {
    match (value.find("://"), value.rfind('@')) {
        (Some(s), Some(at)) if at > s + 3 => {
            let userinfo = &value[s + 3..at];
            match userinfo.find(':') {
                Some(c) => format!("{}{}:***{}", &value[..s + 3], &userinfo[..c], &value[at..]),
                None => value.to_owned(),
            }
        }
        _ => value.to_owned(),
    }
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut m = f.debug_map();
        for (k, v) in &self.values {
            if is_secret(k) {
                m.entry(k, &"***");
            } else {
                m.entry(k, &redact_url(v));
            }
        }
        m.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_secrets() {
        let s = Settings::new()
            .with("EVENT_BUS_KAFKA_API_SECRET", "hunter2")
            .with("EVENT_BUS_REDIS_CONNECTION_URL", "redis://u:hunter2@h:6379/0");
        let d = format!("{s:?}");
        assert!(!d.contains("hunter2"), "{d}");
        assert!(d.contains("redis://u:***@h:6379/0"), "{d}");
    }

    #[test]
    fn producer_kinds() {
        assert_eq!(Settings::new().producer_kind(), Ok(ProducerKind::Memory));
        let s = Settings::new().with("EVENT_BUS_PRODUCER", "edx_event_bus_redis.create_producer");
        assert_eq!(s.producer_kind(), Ok(ProducerKind::Redis));
        assert!(Settings::new()
            .with("EVENT_BUS_PRODUCER", "rabbit")
            .producer_kind()
            .is_err());
    }
}
