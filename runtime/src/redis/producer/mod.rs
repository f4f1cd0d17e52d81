//! The Redis Streams producer, wire-compatible with edx-event-bus-redis.
//!
//! Each event becomes `XADD <full topic> MAXLEN ~ <N> * type .. id .. source .. time ..
//! minorversion .. sourcehost .. sourcelib .. event_data ..` (the fields, order and
//! encodings of the Python stack; `event_data` is the schemaless Avro of the data).
//!
//! # How events travel
//!
//! [`RedisProducer::produce`] never waits on the network: it encodes the event on the
//! sending thread (so an encoding error is returned to the sender at once), takes a slot
//! of the bounded buffer and hands the command to a background task. That task takes
//! whatever is queued (up to [`RedisProducerConfig::batch_size`] events) and sends it as
//! one pipeline on its one connection; it sends the next batch while Redis works on the
//! previous one (two batches in flight at most), in order on that connection, so events
//! reach Redis in the order they were accepted (per topic and overall).
//!
//! # When the buffer is full
//!
//! The buffer holds at most [`RedisProducerConfig::buffer_capacity`] events that are not yet
//! acknowledged by Redis (queued or in flight). When it is full:
//! - called from a thread that runs inside a tokio runtime, `produce` fails at once
//!   with [`ProduceError::BufferFull`] (blocking there would stall the runtime,
//!   possibly the very task that drains the buffer);
//! - called from any other thread, `produce` waits up to
//!   [`RedisProducerConfig::buffer_full_wait`] for a slot, then fails with
//!   [`ProduceError::BufferFull`].
//!
//! The generic handler logs that error (event type, topic, event id, never the data)
//! and the producer counts it in [`RedisProducerStats::rejected`].
//!
//! # When the connection drops
//!
//! The task waits for the replies of every batch in flight, reconnects with exponential
//! backoff and sends the failed batches again, in order. Redis may have applied part of
//! a pipeline whose replies were lost, so after a reconnect the task first reads each
//! stream of the batch back from its newest entry to the time the batch was first sent
//! (by the server's clock, less [`DEDUP_TIME_MARGIN`]; `XREVRANGE` pages), whatever the
//! other batch in flight or other producers wrote to it meanwhile, and drops from the
//! retry every event whose `id` is already there. An event is written twice only in
//! these corners: its entry was trimmed by `MAXLEN` before the check, more than
//! [`DEDUP_SCAN_LIMIT`] entries were written to its stream since it was sent, or the
//! user may not run `TIME` (then only the batch's count plus [`DEDUP_MARGIN`] newest
//! entries are read). Delivery is therefore at least once, and exactly once otherwise.
//!
//! Before that check the task closes the dropped connection on the server (`CLIENT KILL
//! ID`): Redis may still hold commands of a connection whose replies timed out (writes
//! paused, a slow network), and would otherwise apply them after the check, writing
//! those events twice. Client ids are numbered per server process, so only a connection
//! made to the same process (`run_id` of `INFO server`) is killed, by id and address:
//! after a restart, or on another node behind the same address, the old id names another
//! client. (A user without `CLIENT KILL`, `CLIENT ID` or `INFO` permission loses that
//! guarantee; it is logged.) When Redis refuses the check itself for a stream for good (`WRONGTYPE`:
//! the key is not a stream; `NOPERM`: the user may not `XREVRANGE` it), that stream's
//! events are sent again unchecked: the `XADD` replies decide, so a refused event fails
//! alone and an accepted one may be written twice; a temporary refusal is retried.
//!
//! A command that Redis refuses with a transient error (`LOADING`, `BUSY`, `TRYAGAIN`,
//! `MASTERDOWN`, `READONLY`, `OOM`, ...) is retried with backoff, the delay doubling at
//! each refusal up to [`RedisProducerConfig::reconnect_max_delay`]; on `READONLY` (a
//! replica, e.g. the old master after a failover) the task also reconnects, to reach
//! the new master through the same address (DNS, proxy). Any other refusal (e.g.
//! `WRONGTYPE`: the key is not a stream) fails that event: it is logged and counted in
//! [`RedisProducerStats::failed`].
//!
//! **Order when an event is retried.** The rest of its pipeline was applied, and so was
//! the other batch in flight, if any: a retried event lands in its stream *after* the
//! later events of those two batches (of every key), and before the events accepted
//! after them (the task sends nothing new while it retries). The same holds for the
//! events of a batch resent after a connection loss. A consumer that needs the order of
//! one key must not count on it across such a retry (compare the events' `time`).
//!
//! # Flush and shutdown
//!
//! [`Producer::flush`] returns once every event accepted before the call is
//! acknowledged by Redis or reported failed: the events are numbered as `produce`
//! takes them and the flush waits for exactly those numbered before it, so events
//! accepted later (a second batch answered while the first is being retried) do not
//! stand in for them. [`Producer::shutdown`] refuses new events,
//! flushes, then stops the task; events still pending when its timeout expires are
//! reported failed and counted. Its result says what became of the events once the task
//! stopped: an event answered during the grace the task gets to stop (at least a second)
//! counts as delivered, and a `produce` racing the shutdown either returns
//! [`ProduceError::Closed`] or is covered by the shutdown's flush.
//!
//! # Where the code is
//!
//! This file: [`RedisProducer`] (the handle `produce` runs on, flush, shutdown). `config.rs`:
//! [`RedisProducerConfig`] and its settings. `state.rs`: what the handle and the writer task
//! share. `pipeline.rs`: the writer task (batches, replies, retries, reconnection).
//! `reconnect.rs`: who a connection is on the server, to close a dropped one. `dedup.rs`:
//! what a batch already wrote, read back after a reconnect. The `XADD` command itself is
//! built in the backend's `mod.rs` ([`crate::redis::xadd_command`]).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::runtime::Handle;
use tokio::sync::{mpsc, watch, Semaphore};

mod config;
mod dedup;
mod pipeline;
mod reconnect;
mod state;

pub use config::{
    RedisProducerConfig, DEFAULT_BATCH_SIZE, DEFAULT_BUFFER_CAPACITY, DEFAULT_BUFFER_FULL_WAIT, DEFAULT_STREAM_MAX_LEN,
    SETTING_BATCH_SIZE, SETTING_BUFFER_CAPACITY, SETTING_BUFFER_FULL_WAIT_MS, SETTING_STREAM_MAX_LEN,
};
pub use dedup::{DEDUP_MARGIN, DEDUP_SCAN_LIMIT, DEDUP_TIME_MARGIN};

use self::pipeline::Writer;
use self::state::{Counters, Meta, Queued, Shared};
use super::{open_client, RedisConfigError};
use crate::produce::{ProduceError, Producer, ProducerRecord};
use crate::retry::Backoff;
use crate::settings::Settings;

/// Counters of a Redis producer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RedisProducerStats {
    /// Events accepted by `produce`.
    pub accepted: u64,
    /// Events acknowledged by Redis.
    pub delivered: u64,
    /// Accepted events reported failed (refused by Redis, or pending at a shutdown timeout).
    pub failed: u64,
    /// Events refused by `produce` because the buffer stayed full.
    pub rejected: u64,
    /// Events sent again after a connection loss or a transient error.
    pub retried: u64,
    /// Events found already written after a reconnect, and so not sent again.
    pub deduplicated: u64,
    /// Connections made after the first one.
    pub reconnects: u64,
}

/// The Redis Streams producer. See the [module documentation](self) for its guarantees.
pub struct RedisProducer {
    shared: Arc<Shared>,
    tx: mpsc::UnboundedSender<Queued>,
    closed: AtomicBool,
    /// Calls of `produce` in progress (shutdown waits for them: each is then accepted,
    /// and flushed, or refused).
    active: AtomicU64,
    handle: Handle,
    task: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    config: RedisProducerConfig,
    /// Failures already reported by a flush: each flush reports those since the last one.
    failed_reported: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for RedisProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisProducer")
            .field("config", &self.config)
            .field("stats", &self.stats())
            .finish()
    }
}

impl RedisProducer {
    /// Creates the producer from settings (see [`RedisProducerConfig::from_settings`]).
    /// Must be called inside a tokio runtime; it does not wait for the connection.
    pub fn from_settings(settings: &Settings) -> Result<Self, RedisConfigError> {
        Self::start(RedisProducerConfig::from_settings(settings)?)
    }

    /// Starts the producer's background task on the current tokio runtime. The first
    /// connection is made by the task: an unreachable server delays events, it does not
    /// fail the start.
    pub fn start(config: RedisProducerConfig) -> Result<Self, RedisConfigError> {
        let handle = Handle::try_current().map_err(|_| RedisConfigError::NoRuntime)?;
        let client = open_client(&config.url, config.tls_ca_file.as_deref())?;
        let capacity = config.buffer_capacity.clamp(1, Semaphore::MAX_PERMITS);
        let shared = Arc::new(Shared {
            counters: Counters::default(),
            slots: Semaphore::new(capacity),
            next_seq: AtomicU64::new(0),
            completed_below: watch::Sender::new(0),
            completed_above: std::sync::Mutex::default(),
            completed_count: AtomicU64::new(0),
            stop: watch::Sender::new(false),
        });
        let (tx, rx) = mpsc::unbounded_channel();
        let writer = Writer {
            client,
            config: config.clone(),
            shared: shared.clone(),
            conn: None,
            conn_number: 0,
            conn_client: None,
            stale: Vec::new(),
            connected_once: false,
            backoff: Backoff::new(config.reconnect_min_delay, config.reconnect_max_delay),
            stop: shared.stop.subscribe(),
        };
        let task = handle.spawn(writer.run(rx));
        tracing::info!(
            url = %crate::settings::redact_url(&config.url),
            stream_max_len = config.stream_max_len,
            buffer_capacity = capacity,
            "redis producer started"
        );
        Ok(Self {
            shared,
            tx,
            closed: AtomicBool::new(false),
            active: AtomicU64::new(0),
            handle,
            task: std::sync::Mutex::new(Some(task)),
            config,
            failed_reported: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// The configuration in use.
    pub fn config(&self) -> &RedisProducerConfig {
        &self.config
    }

    /// The counters so far.
    pub fn stats(&self) -> RedisProducerStats {
        let c = &self.shared.counters;
        RedisProducerStats {
            accepted: c.accepted.load(Ordering::Relaxed),
            delivered: c.delivered.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            rejected: c.rejected.load(Ordering::Relaxed),
            retried: c.retried.load(Ordering::Relaxed),
            deduplicated: c.deduplicated.load(Ordering::Relaxed),
            reconnects: c.reconnects.load(Ordering::Relaxed),
        }
    }

    /// Events accepted and not yet delivered nor failed.
    pub fn pending(&self) -> u64 {
        let taken = self.shared.next_seq.load(Ordering::Acquire);
        taken.saturating_sub(self.shared.completed_count.load(Ordering::Acquire))
    }

    /// Takes one buffer slot, by the policy of the module documentation.
    fn acquire_slot(&self) -> Result<(), ProduceError> {
        if let Ok(permit) = self.shared.slots.try_acquire() {
            permit.forget();
            return Ok(());
        }
        let wait = self.config.buffer_full_wait;
        if Handle::try_current().is_ok() || wait.is_zero() {
            return Err(ProduceError::BufferFull { waited: Duration::ZERO });
        }
        let task_ended = self
            .task
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .is_none_or(|t| t.is_finished());
        if task_ended {
            // Shut down, or its runtime is gone: no slot will ever free up.
            return Err(ProduceError::Closed);
        }
        let acquired = self
            .handle
            .block_on(async { tokio::time::timeout(wait, self.shared.slots.acquire()).await });
        match acquired {
            Ok(Ok(permit)) => {
                permit.forget();
                Ok(())
            }
            Ok(Err(_)) => Err(ProduceError::Closed),
            Err(_) => Err(ProduceError::BufferFull { waited: wait }),
        }
    }

    /// Waits until every event numbered below `target` is completed.
    async fn wait_completed(&self, target: u64, timeout: Duration) -> Result<(), ProduceError> {
        let mut rx = self.shared.completed_below.subscribe();
        let waited = tokio::time::timeout(timeout, async { rx.wait_for(|c| *c >= target).await.map(|_| ()) }).await;
        match waited {
            Ok(Ok(())) => Ok(()),
            // The task ended: whatever it did not complete will never be.
            Ok(Err(_)) => Err(ProduceError::Closed),
            Err(_) => Err(ProduceError::Timeout {
                pending: self.shared.pending_below(target) as usize,
                waited: timeout,
            }),
        }
    }

    async fn flush_inner(&self, timeout: Duration) -> Result<(), ProduceError> {
        // Exactly the events taken before this call (by number, not by count: a later
        // batch completing first does not stand in for an earlier one being retried).
        let target = self.shared.next_seq.load(Ordering::Acquire);
        self.wait_completed(target, timeout).await?;
        // Failures since the last flush, including those reported before this one began.
        let failed_now = self.shared.counters.failed.load(Ordering::Acquire);
        let failed = failed_now.saturating_sub(self.failed_reported.swap(failed_now, Ordering::AcqRel));
        if failed > 0 {
            return Err(ProduceError::Failed { failed });
        }
        Ok(())
    }
}

impl Producer for RedisProducer {
    fn name(&self) -> &'static str {
        "redis"
    }

    fn produce(&self, record: ProducerRecord) -> Result<(), ProduceError> {
        // Counted in progress before looking at `closed` (and shutdown sets `closed` before
        // waiting for none in progress; both SeqCst): a produce that finds the producer
        // open is covered by shutdown's flush.
        self.active.fetch_add(1, Ordering::SeqCst);
        struct Done<'a>(&'a AtomicU64);
        impl Drop for Done<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        let _done = Done(&self.active);
        if self.closed.load(Ordering::SeqCst) {
            return Err(ProduceError::Closed);
        }
        let cmd = super::xadd_command(&record, self.config.stream_max_len)?;
        if let Err(e) = self.acquire_slot() {
            self.shared.counters.rejected.fetch_add(1, Ordering::Relaxed);
            return Err(e);
        }
        let seq = self.shared.next_seq.fetch_add(1, Ordering::AcqRel);
        let queued = Queued {
            cmd,
            meta: Meta {
                seq,
                topic: record.topic,
                event_type: record.metadata.event_type,
                event_id: record.metadata.id,
            },
        };
        if self.tx.send(queued).is_err() {
            // Never sent: completed at once (frees its slot, does not hold flushes).
            self.shared.complete([seq]);
            return Err(ProduceError::Closed);
        }
        self.shared.counters.accepted.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    fn flush(&self, timeout: Duration) -> BoxFuture<'_, Result<(), ProduceError>> {
        Box::pin(self.flush_inner(timeout))
    }

    fn shutdown(&self, timeout: Duration) -> BoxFuture<'_, Result<(), ProduceError>> {
        Box::pin(async move {
            self.closed.store(true, Ordering::SeqCst);
            let started = tokio::time::Instant::now();
            // The produces that found the producer open finish taking their number (or
            // fail); later ones see it closed.
            while self.active.load(Ordering::SeqCst) > 0 && started.elapsed() < timeout {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            let target = self.shared.next_seq.load(Ordering::SeqCst);
            let waited = self
                .wait_completed(target, timeout.saturating_sub(started.elapsed()))
                .await;
            // Whatever is still pending now is failed by the task as it stops; what is in
            // flight is still answered meanwhile.
            self.shared.stop.send_replace(true);
            let task = self.task.lock().unwrap_or_else(|e| e.into_inner()).take();
            if let Some(task) = task {
                let left = timeout.saturating_sub(started.elapsed()).max(Duration::from_secs(1));
                if tokio::time::timeout(left, task).await.is_err() {
                    tracing::warn!("redis producer task did not stop in time");
                }
            }
            // What became of the events, now that the task stopped: an event delivered
            // after the timeout is delivered.
            let failed_now = self.shared.counters.failed.load(Ordering::Acquire);
            let failed = failed_now.saturating_sub(self.failed_reported.swap(failed_now, Ordering::AcqRel));
            let pending = self.shared.pending_below(target);
            let result = match waited {
                Ok(()) if failed > 0 => Err(ProduceError::Failed { failed }),
                Ok(()) => Ok(()),
                // Not delivered in time: failed by the stop (or refused), or still pending.
                Err(ProduceError::Timeout { .. }) if failed + pending > 0 => Err(ProduceError::Timeout {
                    pending: (failed + pending) as usize,
                    waited: timeout,
                }),
                Err(ProduceError::Timeout { .. }) => Ok(()),
                Err(e) => Err(e),
            };
            let stats = self.stats();
            tracing::info!(
                delivered = stats.delivered,
                failed = stats.failed,
                rejected = stats.rejected,
                "redis producer shut down"
            );
            result
        })
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

impl Drop for RedisProducer {
    fn drop(&mut self) {
        // Without a shutdown, the task still delivers what is queued, then ends when it
        // finds the channel closed.
        let pending = self.pending();
        if pending > 0 && !self.closed.load(Ordering::Acquire) {
            tracing::warn!(
                pending,
                "redis producer dropped without shutdown; delivering in the background"
            );
        }
    }
}
