use openedx_events::EventData;

/// A counter.
#[derive(EventData, Clone, Debug)]
pub struct Counter {
    /// An unsigned 64-bit count does not fit Avro's signed long.
    pub count: u64,
}

fn main() {}
