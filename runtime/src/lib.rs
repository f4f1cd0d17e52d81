//! # openedx-events
//!
//! Open edX events for Rust services: define events as typed structs, send them
//! in-process like Django signals, and have them produced to the event bus
//! (Kafka, Redis Streams, or the embedded in-memory bus) by configuration alone,
//! as Open edX's ADR 12 decided, wire-compatible with the Python stack
//! (openedx-events, edx-event-bus-kafka, edx-event-bus-redis).
//!
//! The modules, each importing only those listed before it:
//! - the core: [`event`] (the event trait, its [`registry`] of type strings), [`signal`],
//!   [`data`], [`metadata`], [`event_key`], [`keys`], [`time`], [`settings`]; [`avro`];
//!   [`catalog`] (the Open edX events).
//! - [`produce`]: the [`Producer`](produce::Producer) trait every backend implements;
//!   [`consume`]: what every consumer shares.
//! - the backends: [`memory`] (the default), `redis` and `kafka` (features of the same names).
//! - [`config`] (producer configuration) and [`bus`] (start-up: merge the configuration,
//!   pick the backend, connect the generic handler).
//!
//! ```
//! use openedx_events::{openedx_event, producer_config, EventBus, EventData, OpenEdxEvent, Settings};
//!
//! /// A course, as events carry it.
//! #[derive(EventData, Clone, Debug, PartialEq)]
//! pub struct CourseInfo {
//!     /// The course key.
//!     pub course_key: openedx_events::keys::CourseKey,
//!     /// Its title, when known.
//!     pub title: Option<String>,
//! }
//!
//! /// Sent when a course is archived.
//! #[openedx_event("org.openedx.learning.course.archived.v1")]
//! #[derive(Clone, Debug, PartialEq)]
//! pub struct CourseArchived {
//!     /// The course.
//!     pub course: CourseInfo,
//! }
//!
//! let bus = EventBus::builder()
//!     .producer_config(producer_config! {
//!         "org.openedx.learning.course.archived.v1" => [
//!             { topic: "learning-course", event_key_field: "course.course_key", enabled: true },
//!         ],
//!     })
//!     .settings(Settings::new())
//!     .start()
//!     .unwrap();
//!
//! CourseArchived::signal().send_event(CourseArchived {
//!     course: CourseInfo { course_key: "course-v1:edX+DemoX+2026".parse().unwrap(), title: None },
//! });
//! assert_eq!(bus.memory().unwrap().len("learning-course"), 1);
//! ```
#![warn(missing_docs)]

extern crate self as openedx_events;

pub mod avro;
pub mod bus;
pub mod catalog;
pub mod config;
pub mod consume;
pub mod data;
pub mod event;
pub mod event_key;
#[cfg(feature = "kafka")]
pub mod kafka;
pub mod keys;
pub mod memory;
pub mod metadata;
pub mod produce;
#[cfg(feature = "redis")]
pub mod redis;
#[cfg(any(feature = "redis", feature = "kafka"))]
mod retry;
pub mod settings;
pub mod signal;
pub mod time;

#[doc(hidden)]
pub mod __private;

pub use bus::{EventBus, EventBusBuilder, StartError};
pub use data::{EventDataInfo, Map};
pub use event::{registry, EventOps, OpenEdxEvent};
pub use event_key::{EventKey, KeyPathError};
pub use metadata::EventMetadata;
pub use openedx_events_macros::{openedx_event, producer_config, EventData};
pub use settings::Settings;
pub use signal::{Envelope, Outcome, Response, SendError, SendMode, Signal};

/// The README's examples, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
