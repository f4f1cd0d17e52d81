use openedx_events::{openedx_event, EventData};

/// A thing.
#[derive(EventData)]
pub struct ThingData {
    /// Its name.
    pub name: String,
}

/// Sent when a thing happens.
#[openedx_event("org.openedx.learning.thing.happened.v1")]
#[derive(Clone, Debug)]
pub struct ThingHappened {
    /// The thing.
    pub thing: ThingData,
}

fn main() {}
