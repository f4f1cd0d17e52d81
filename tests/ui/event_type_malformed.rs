use openedx_events::openedx_event;

/// Sent when something happens.
#[openedx_event("com.example.thing.happened.v1")]
#[derive(Clone, Debug)]
pub struct ThingHappened {
    /// What.
    pub what: String,
}

fn main() {}
