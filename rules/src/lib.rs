//! The rules of [openedx-events](https://docs.rs/openedx-events) that both its macros
//! (at build time) and its runtime (at start-up) apply, in one place, so that the same
//! mistake gets the same words wherever it is caught:
//!
//! - [`event_type`]: the grammar of an event type string, and the sentence for a type
//!   string that names no event;
//! - [`topic`]: Kafka's topic-name rules;
//! - [`key_path`]: `event_key_field` syntax, the field tree a path is resolved against,
//!   and the sentence for each way a path can be wrong;
//! - [`suggest`]: the "did you mean" distance;
//! - [`text`]: the `const` message builder that lets a build-time constant panic with
//!   the start-up check's sentence.
//!
//! ```
//! use openedx_events_rules::{event_type, suggest, topic};
//! assert!(event_type::check("org.openedx.learning.course.enrollment.created.v1").is_ok());
//! assert!(topic::check("learning-course").is_ok());
//! assert_eq!(suggest::nearest("enabeld", &["topic", "event_key_field", "enabled"]), Some("enabled"));
//! ```

pub mod event_type;
pub mod key_path;
pub mod suggest;
pub mod text;
pub mod topic;
