//! What the producer handle and its writer task share: the counters, the buffer slots,
//! the numbering of events and what is known of their completion, and the queued events.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use ::redis::Cmd;
use tokio::sync::{watch, Semaphore};

#[derive(Default)]
pub(super) struct Counters {
    pub(super) accepted: AtomicU64,
    pub(super) delivered: AtomicU64,
    pub(super) failed: AtomicU64,
    pub(super) rejected: AtomicU64,
    pub(super) retried: AtomicU64,
    pub(super) deduplicated: AtomicU64,
    pub(super) reconnects: AtomicU64,
}

pub(super) struct Shared {
    pub(super) counters: Counters,
    pub(super) slots: Semaphore,
    /// The next event's sequence number (in the order `produce` took them).
    pub(super) next_seq: AtomicU64,
    /// Every event numbered below this one is completed (delivered or failed).
    pub(super) completed_below: watch::Sender<u64>,
    /// Completed events numbered above `completed_below`.
    pub(super) completed_above: std::sync::Mutex<std::collections::BTreeSet<u64>>,
    /// Events completed, in all.
    pub(super) completed_count: AtomicU64,
    pub(super) stop: watch::Sender<bool>,
}

impl Shared {
    /// Records the events numbered `seqs` as completed (delivered, failed, or never
    /// sent) and frees their buffer slots.
    pub(super) fn complete(&self, seqs: impl IntoIterator<Item = u64>) {
        let mut n = 0usize;
        let mut above = self.completed_above.lock().unwrap_or_else(|e| e.into_inner());
        let mut below = *self.completed_below.borrow();
        for seq in seqs {
            n += 1;
            if seq == below {
                below += 1;
                while above.remove(&below) {
                    below += 1;
                }
            } else {
                above.insert(seq);
            }
        }
        if n == 0 {
            return;
        }
        self.completed_count.fetch_add(n as u64, Ordering::AcqRel);
        self.completed_below.send_if_modified(|b| {
            let moved = *b != below;
            *b = below;
            moved
        });
        drop(above);
        self.slots.add_permits(n);
    }

    /// Events numbered below `target` not completed yet.
    pub(super) fn pending_below(&self, target: u64) -> u64 {
        let above = self.completed_above.lock().unwrap_or_else(|e| e.into_inner());
        let below = *self.completed_below.borrow();
        let done_above = above.range(..target).count() as u64;
        target.saturating_sub(below).saturating_sub(done_above)
    }
}

/// One queued event: its command, and what logs and de-duplication need.
pub(super) struct Queued {
    pub(super) cmd: Cmd,
    pub(super) meta: Meta,
}

/// What identifies a queued event in logs and in its stream.
pub(super) struct Meta {
    /// The event's sequence number (see `Shared::next_seq`).
    pub(super) seq: u64,
    pub(super) topic: Arc<str>,
    pub(super) event_type: &'static str,
    pub(super) event_id: uuid::Uuid,
}
