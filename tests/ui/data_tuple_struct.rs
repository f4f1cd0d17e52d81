use openedx_events::{openedx_event, EventData};

/// A pair.
#[derive(EventData, Clone, Debug)]
pub struct Pair(i64, i64);

/// Sent when a pair is made: the derive's error above is the only one, not one more
/// for each use of `Pair`.
#[openedx_event("org.openedx.learning.pair.made.v1")]
#[derive(Clone, Debug)]
pub struct PairMade {
    /// The pair.
    pub pair: Pair,
}

fn main() {}
