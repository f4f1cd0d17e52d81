//! One exponential backoff for every retry loop of the backends: Redis reconnections and
//! refused commands, Kafka schema registration and release of parked events, and the
//! Kafka consumer's wait for the schema registry.

use std::time::Duration;

/// Exponential backoff: each delay doubles the last, up to a maximum; [`Backoff::reset`]
/// starts again from the minimum (after a success).
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// Starts at `min`, doubling up to `max`.
    pub(crate) fn new(min: Duration, max: Duration) -> Self {
        Self { min, max, next: min }
    }

    /// The delay to wait now; the next one doubles.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d
    }

    /// The next delay is `min` again.
    pub(crate) fn reset(&mut self) {
        self.next = self.min;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_max() {
        let mut b = Backoff::new(Duration::from_millis(10), Duration::from_millis(35));
        assert_eq!(b.next_delay(), Duration::from_millis(10));
        assert_eq!(b.next_delay(), Duration::from_millis(20));
        assert_eq!(b.next_delay(), Duration::from_millis(35));
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(10));
    }
}
