use openedx_events::openedx_event;

/// Sent when a thing happens.
#[openedx_event("org.openedx.learning.thing.happened.v1")]
pub struct ThingHappened {
    /// What happened.
    pub what: String,
}

fn main() {}
