use openedx_events::openedx_event;

/// Sent when something happens.
#[openedx_event("org.openedx.learning.thing.happened.v1")]
#[derive(Clone, Debug)]
pub struct ThingHappened {
    /// What.
    pub what: String,
    /// When, as a monotonic instant: not something the wire can carry.
    pub when: std::time::Instant,
}

fn main() {}
