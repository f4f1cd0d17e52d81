//! The accounting of a producer: events are numbered as `produce` takes them, the numbers
//! done are kept as ranges (so a flush waits for exactly the events before it), the
//! counters, and the callers of `produce_and_confirm` waiting for their event's report.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

/// A value alone on its cache line: the sending threads count accepted events and
/// the polling thread delivered ones, without sharing a line.
#[derive(Default)]
#[repr(align(128))]
pub(super) struct Padded<T>(T);

impl<T> std::ops::Deref for Padded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

#[derive(Default)]
pub(super) struct Counters {
    pub(super) numbers: Numbers,
    pub(super) accepted: Padded<AtomicU64>,
    pub(super) delivered: Padded<AtomicU64>,
    pub(super) failed: AtomicU64,
    pub(super) rejected: AtomicU64,
    pub(super) parked: AtomicUsize,
    pub(super) failed_reported: AtomicU64,
}

/// The numbers of the events `produce` took, and which of them are done (delivered,
/// failed or refused). Every number taken is marked done exactly once.
#[derive(Default)]
pub(super) struct Numbers {
    /// The next number to give.
    pub(super) next: Padded<AtomicUsize>,
    pub(super) done: Mutex<DoneNumbers>,
}

/// Every number below `below` is done, and so are those in the ranges of `above`: each
/// entry `start -> end` holds the done numbers `start..end`; ranges are disjoint and never
/// adjacent, so their count is the number of gaps, not of events (an event stuck for an
/// hour while millions of later ones complete costs one range, not millions of entries).
#[derive(Default)]
pub(super) struct DoneNumbers {
    pub(super) below: usize,
    pub(super) above: std::collections::BTreeMap<usize, usize>,
}

impl DoneNumbers {
    /// Records `n` as done (a number already done is ignored).
    pub(super) fn insert(&mut self, n: usize) {
        if n < self.below {
            return;
        }
        if n == self.below {
            self.below += 1;
            if let Some(end) = self.above.remove(&self.below) {
                self.below = end;
            }
            return;
        }
        // The range ending at or holding `n`, if any.
        let mut start = n;
        if let Some((&s, &e)) = self.above.range(..=n).next_back() {
            if n < e {
                return;
            }
            if e == n {
                start = s;
            }
        }
        let mut end = n + 1;
        if let Some(e) = self.above.remove(&end) {
            end = e;
        }
        self.above.insert(start, end);
    }

    /// How many numbers below `target` are not done.
    pub(super) fn pending_below(&self, target: usize) -> usize {
        if self.below >= target {
            return 0;
        }
        let done_above: usize = self
            .above
            .range(..target)
            .map(|(&start, &end)| end.min(target) - start)
            .sum();
        target - self.below - done_above
    }
}

impl Numbers {
    /// Numbers an event `produce` is taking.
    pub(super) fn take(&self) -> usize {
        self.next.fetch_add(1, Ordering::AcqRel)
    }

    /// The number the next event will get: the events taken before are numbered below.
    pub(super) fn next(&self) -> usize {
        self.next.load(Ordering::Acquire)
    }

    /// Marks an event done (after its counters are updated: whoever sees it done sees them).
    pub(super) fn done(&self, n: usize) {
        self.done.lock().unwrap_or_else(|e| e.into_inner()).insert(n);
    }

    /// How many of the events numbered below `target` are not done yet.
    pub(super) fn pending_below(&self, target: usize) -> usize {
        self.done
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pending_below(target)
    }
}

/// The callers of [`KafkaProducer::produce_and_confirm`] waiting for their message's
/// delivery report, by the event's number (which the message carries to librdkafka).
#[derive(Default)]
pub(super) struct Waiters {
    /// How many wait: delivery reports skip the lock when nobody does.
    pub(super) len: AtomicUsize,
    pub(super) waiting: Mutex<HashMap<usize, tokio::sync::oneshot::Sender<Result<DeliveredAt, String>>>>,
}

impl Waiters {
    pub(super) fn add(&self, n: usize, tx: tokio::sync::oneshot::Sender<Result<DeliveredAt, String>>) {
        let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        waiting.insert(n, tx);
        self.len.store(waiting.len(), Ordering::Release);
    }

    pub(super) fn take(&self, n: usize) -> Option<tokio::sync::oneshot::Sender<Result<DeliveredAt, String>>> {
        if self.len.load(Ordering::Acquire) == 0 {
            return None;
        }
        let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        let tx = waiting.remove(&n);
        self.len.store(waiting.len(), Ordering::Release);
        tx
    }

    pub(super) fn resolve(&self, n: usize, outcome: Result<DeliveredAt, String>) {
        if let Some(tx) = self.take(n) {
            let _ = tx.send(outcome);
        }
    }
}

/// Where the broker stored a delivered message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliveredAt {
    /// The partition.
    pub partition: i32,
    /// The message's offset in it.
    pub offset: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_done_out_of_order_count_only_below_the_target() {
        let numbers = Numbers::default();
        let taken: Vec<usize> = (0..5).map(|_| numbers.take()).collect();
        assert_eq!(taken, [0, 1, 2, 3, 4]);
        let target = numbers.next();
        // Later events done first never stand in for the first one.
        for n in [4, 2, 1] {
            numbers.done(n);
        }
        assert_eq!(numbers.pending_below(target), 2);
        assert_eq!(numbers.pending_below(2), 1);
        numbers.done(0);
        assert_eq!(numbers.pending_below(3), 0);
        assert_eq!(numbers.pending_below(target), 1);
        numbers.done(3);
        assert_eq!(numbers.pending_below(target), 0);
        // Everything done moved below: nothing is kept above.
        assert!(numbers.done.lock().unwrap().above.is_empty());
    }

    #[test]
    fn one_stuck_event_costs_one_range_however_many_later_ones_complete() {
        let numbers = Numbers::default();
        let stuck = numbers.take();
        for _ in 0..1_000_000 {
            let n = numbers.take();
            numbers.done(n);
        }
        let target = numbers.next();
        {
            let done = numbers.done.lock().unwrap();
            assert_eq!(done.above.len(), 1, "later completions merge into one range");
        }
        assert_eq!(numbers.pending_below(target), 1);
        numbers.done(stuck);
        assert_eq!(numbers.pending_below(target), 0);
        let done = numbers.done.lock().unwrap();
        assert!(done.above.is_empty());
        assert_eq!(done.below, target);
    }

    #[test]
    fn done_numbers_agree_with_a_plain_set_in_any_order() {
        // A small deterministic generator (xorshift): orders with repeats and gaps.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for round in 0..200 {
            let len = 1 + (next() % 64) as usize;
            let mut done = DoneNumbers::default();
            let mut model = std::collections::HashSet::new();
            for _ in 0..len * 2 {
                let n = (next() % len as u64) as usize;
                done.insert(n);
                model.insert(n);
                for target in 0..=len {
                    let want = (0..target).filter(|k| !model.contains(k)).count();
                    assert_eq!(done.pending_below(target), want, "round {round}, target {target}");
                }
                // Ranges stay disjoint, non-adjacent and above `below`.
                let mut last_end = done.below;
                for (&start, &end) in &done.above {
                    assert!(start > last_end && start < end, "round {round}: {:?}", done.above);
                    last_end = end;
                }
            }
        }
    }
}
