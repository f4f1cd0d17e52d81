use openedx_events::EventData;

/// A pair.
#[derive(EventData, Clone, Debug)]
pub struct Pair(i64, i64);

fn main() {}
