use openedx_events::openedx_event;

/// Sent when something happens.
#[openedx_event]
#[derive(Clone, Debug)]
pub struct ThingHappened {
    /// What.
    pub what: String,
}

fn main() {}
