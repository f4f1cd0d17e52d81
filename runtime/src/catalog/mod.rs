//! The catalog of Open edX events: the 72 event types that openedx-events 11.2.0 can put on the
//! event bus, as typed Rust structs.
//!
//! Modules follow the architecture subdomains of openedx-events (`openedx_events.<subdomain>`).
//! Each module holds the data types of its subdomain (named like the Python attrs classes, since
//! those names are the Avro record names on the wire) and one struct per event type (named after
//! the Python signal in CamelCase, e.g. `XBLOCK_PUBLISHED` becomes
//! [`content_authoring::XBlockPublished`]).
//!
//! Not in the catalog: the three signals that openedx-events declares unfit for the event bus
//! (`KNOWN_UNSERIALIZABLE_SIGNALS`): `COURSE_CERTIFICATE_CONFIG_CHANGED` and
//! `COURSE_CERTIFICATE_CONFIG_DELETED` (their data carries a binary file object) and
//! `EXTERNAL_GRADER_SCORE_SUBMITTED`. No wire schema exists for them.

pub mod analytics;
pub mod authz;
pub mod content_authoring;
pub mod enterprise;
pub mod learning;

/// The hidden aliases that name each catalog event by its type string, so that
/// `producer_config!` finds catalog events by type string without imports.
#[doc(hidden)]
#[allow(ambiguous_glob_reexports)] // only the aliases are used, and they are unique
pub mod __aliases {
    pub use super::analytics::*;
    pub use super::authz::*;
    pub use super::content_authoring::*;
    pub use super::enterprise::*;
    pub use super::learning::*;
}
