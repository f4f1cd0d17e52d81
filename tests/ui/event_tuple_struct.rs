use openedx_events::openedx_event;

/// Sent when something happens.
#[openedx_event("org.openedx.learning.thing.happened.v1")]
#[derive(Clone, Debug)]
pub struct ThingHappened(String);

fn main() {}
