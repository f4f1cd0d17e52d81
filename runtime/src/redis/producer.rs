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

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ::redis::aio::{ConnectionLike, MultiplexedConnection};
use ::redis::{AsyncConnectionConfig, Client, Cmd, Pipeline, RedisError, RedisWrite, Value};
use futures::future::BoxFuture;
use tokio::runtime::Handle;
use tokio::sync::{mpsc, watch, Semaphore};

use super::{number, open_client, stream_entries, RedisConfigError, SETTING_TLS_CA_FILE, SETTING_URL};
use crate::produce::{ProduceError, Producer, ProducerRecord};
use crate::retry::Backoff;
use crate::settings::Settings;

/// Setting: approximate maximum length of each stream (`MAXLEN ~`); 0 disables trimming.
pub const SETTING_STREAM_MAX_LEN: &str = "EVENT_BUS_REDIS_STREAM_MAX_LEN";
/// Setting (this crate only): events the producer buffers before `produce` fails.
pub const SETTING_BUFFER_CAPACITY: &str = "EVENT_BUS_REDIS_PRODUCER_BUFFER_CAPACITY";
/// Setting (this crate only): milliseconds `produce` may wait for room, outside a tokio runtime.
pub const SETTING_BUFFER_FULL_WAIT_MS: &str = "EVENT_BUS_REDIS_PRODUCER_BUFFER_FULL_WAIT_MS";
/// Setting (this crate only): events sent per pipeline.
pub const SETTING_BATCH_SIZE: &str = "EVENT_BUS_REDIS_PRODUCER_BATCH_SIZE";

/// Default of `EVENT_BUS_REDIS_STREAM_MAX_LEN`, as in edx-event-bus-redis.
pub const DEFAULT_STREAM_MAX_LEN: usize = 10_000;
/// Default buffer capacity, in events.
pub const DEFAULT_BUFFER_CAPACITY: usize = 100_000;
/// Default wait for room in a full buffer (outside a tokio runtime).
pub const DEFAULT_BUFFER_FULL_WAIT: Duration = Duration::from_millis(1000);
/// Default number of events per pipeline.
pub const DEFAULT_BATCH_SIZE: usize = 1000;
/// Entries read beyond a batch's own count when checking, after a reconnect, which of its
/// events Redis already applied, when the server's `TIME` is not available (otherwise the
/// check reads back to the time the batch was first sent).
pub const DEDUP_MARGIN: usize = 1000;
/// Margin of the check of what is already written, before the time a batch was first sent.
pub const DEDUP_TIME_MARGIN: Duration = Duration::from_secs(2);
/// Most entries of one stream that the check of what is already written reads.
pub const DEDUP_SCAN_LIMIT: usize = 200_000;

/// How the Redis producer connects and buffers.
#[derive(Clone)]
pub struct RedisProducerConfig {
    /// The Redis URL; the password is never logged.
    pub url: String,
    /// `MAXLEN ~` of every stream; 0 disables trimming.
    pub stream_max_len: usize,
    /// Events accepted but not yet acknowledged (or failed) that the producer holds at most.
    pub buffer_capacity: usize,
    /// How long `produce` waits for room when the buffer is full, on a thread outside a
    /// tokio runtime (inside one it fails at once).
    pub buffer_full_wait: Duration,
    /// Events per pipeline, at most.
    pub batch_size: usize,
    /// Time allowed to connect.
    pub connect_timeout: Duration,
    /// Time allowed for the replies of one pipeline.
    pub response_timeout: Duration,
    /// First delay before reconnecting; it doubles up to `reconnect_max_delay`.
    pub reconnect_min_delay: Duration,
    /// Longest delay between reconnection attempts.
    pub reconnect_max_delay: Duration,
    /// Name given to the connection with `CLIENT SETNAME`, to find it in `CLIENT LIST`.
    pub client_name: Option<String>,
    /// PEM file of the certificate authorities trusted for `rediss://` (default: the web roots).
    pub tls_ca_file: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for RedisProducerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisProducerConfig")
            .field("url", &crate::settings::redact_url(&self.url))
            .field("stream_max_len", &self.stream_max_len)
            .field("buffer_capacity", &self.buffer_capacity)
            .field("buffer_full_wait", &self.buffer_full_wait)
            .field("batch_size", &self.batch_size)
            .field("connect_timeout", &self.connect_timeout)
            .field("response_timeout", &self.response_timeout)
            .field("reconnect_min_delay", &self.reconnect_min_delay)
            .field("reconnect_max_delay", &self.reconnect_max_delay)
            .field("client_name", &self.client_name)
            .field("tls_ca_file", &self.tls_ca_file)
            .finish()
    }
}

impl RedisProducerConfig {
    /// The defaults, for a URL.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            stream_max_len: DEFAULT_STREAM_MAX_LEN,
            buffer_capacity: DEFAULT_BUFFER_CAPACITY,
            buffer_full_wait: DEFAULT_BUFFER_FULL_WAIT,
            batch_size: DEFAULT_BATCH_SIZE,
            connect_timeout: Duration::from_secs(5),
            response_timeout: Duration::from_secs(10),
            reconnect_min_delay: Duration::from_millis(50),
            reconnect_max_delay: Duration::from_secs(5),
            client_name: None,
            tls_ca_file: None,
        }
    }

    /// Reads `EVENT_BUS_REDIS_CONNECTION_URL`, `EVENT_BUS_REDIS_STREAM_MAX_LEN` and this
    /// crate's `EVENT_BUS_REDIS_PRODUCER_*` settings.
    ///
    /// ```
    /// use openedx_events::redis::RedisProducerConfig;
    /// use openedx_events::Settings;
    /// let s = Settings::new().with("EVENT_BUS_REDIS_CONNECTION_URL", "redis://127.0.0.1:6379/0");
    /// let c = RedisProducerConfig::from_settings(&s).unwrap();
    /// assert_eq!(c.stream_max_len, 10_000);
    /// assert!(RedisProducerConfig::from_settings(&Settings::new()).is_err());
    /// ```
    pub fn from_settings(settings: &Settings) -> Result<Self, RedisConfigError> {
        let url = settings.get(SETTING_URL).ok_or(RedisConfigError::MissingUrl)?;
        let mut c = Self::new(url);
        c.stream_max_len = number(settings, SETTING_STREAM_MAX_LEN, DEFAULT_STREAM_MAX_LEN as u64)? as usize;
        c.buffer_capacity = number(settings, SETTING_BUFFER_CAPACITY, DEFAULT_BUFFER_CAPACITY as u64)? as usize;
        c.buffer_full_wait = Duration::from_millis(number(
            settings,
            SETTING_BUFFER_FULL_WAIT_MS,
            DEFAULT_BUFFER_FULL_WAIT.as_millis() as u64,
        )?);
        c.batch_size = number(settings, SETTING_BATCH_SIZE, DEFAULT_BATCH_SIZE as u64)? as usize;
        c.tls_ca_file = settings.get(SETTING_TLS_CA_FILE).map(Into::into);
        Ok(c)
    }
}

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

#[derive(Default)]
struct Counters {
    accepted: AtomicU64,
    delivered: AtomicU64,
    failed: AtomicU64,
    rejected: AtomicU64,
    retried: AtomicU64,
    deduplicated: AtomicU64,
    reconnects: AtomicU64,
}

struct Shared {
    counters: Counters,
    slots: Semaphore,
    /// The next event's sequence number (in the order `produce` took them).
    next_seq: AtomicU64,
    /// Every event numbered below this one is completed (delivered or failed).
    completed_below: watch::Sender<u64>,
    /// Completed events numbered above `completed_below`.
    completed_above: std::sync::Mutex<std::collections::BTreeSet<u64>>,
    /// Events completed, in all.
    completed_count: AtomicU64,
    stop: watch::Sender<bool>,
}

impl Shared {
    /// Records the events numbered `seqs` as completed (delivered, failed, or never
    /// sent) and frees their buffer slots.
    fn complete(&self, seqs: impl IntoIterator<Item = u64>) {
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
    fn pending_below(&self, target: u64) -> u64 {
        let above = self.completed_above.lock().unwrap_or_else(|e| e.into_inner());
        let below = *self.completed_below.borrow();
        let done_above = above.range(..target).count() as u64;
        target.saturating_sub(below).saturating_sub(done_above)
    }
}

/// One queued event: its command, and what logs and de-duplication need.
struct Queued {
    cmd: Cmd,
    meta: Meta,
}

/// What identifies a queued event in logs and in its stream.
struct Meta {
    /// The event's sequence number (see `Shared::next_seq`).
    seq: u64,
    topic: Arc<str>,
    event_type: &'static str,
    event_id: uuid::Uuid,
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

/// What became of one attempt at a batch.
enum Attempt {
    /// Every event is delivered or failed.
    Done,
    /// These events (indexes into the batch) must be sent again.
    Retry { indexes: Vec<usize>, uncertain: bool },
}

/// Replies of one pipeline, or why there are none.
type Replies = Result<Vec<Value>, RedisError>;

/// A batch sent and not answered yet.
struct InFlight {
    /// When it was sent.
    sent: tokio::time::Instant,
    pipe: Arc<Pipeline>,
    meta: Vec<Meta>,
    reply: futures::future::BoxFuture<'static, Replies>,
    /// [`Writer::conn_number`] of the connection it was sent on.
    conn_number: u64,
}

/// Batches sent before the replies of the previous one arrive (on the same connection,
/// so Redis applies them in order): Redis works on one while the next is being prepared.
const PIPELINE_DEPTH: usize = 2;

/// The background task: owns the connection, sends batches in order.
struct Writer {
    client: Client,
    config: RedisProducerConfig,
    shared: Arc<Shared>,
    conn: Option<MultiplexedConnection>,
    /// Counts the connections made: tells which one a batch in flight was sent on.
    conn_number: u64,
    /// Who `conn` is on the server, when Redis told it (`INFO server`, `CLIENT INFO`).
    conn_client: Option<ServerClient>,
    /// Dropped connections that may still hold commands Redis has not applied yet (their
    /// replies timed out): closed (`CLIENT KILL`) before checking what is written.
    stale: Vec<ServerClient>,
    connected_once: bool,
    backoff: Backoff,
    stop: watch::Receiver<bool>,
}

impl Writer {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Queued>) {
        let batch_size = self.config.batch_size.max(1);
        let mut batch: Vec<Queued> = Vec::with_capacity(batch_size);
        let mut inflight: std::collections::VecDeque<InFlight> = std::collections::VecDeque::new();
        let mut stop = self.stop.clone();
        loop {
            // Nothing new goes out on another connection than the one of the batches still
            // in flight (the connection was dropped on READONLY, or replaced while another
            // batch was resent): Redis orders only the commands of one connection, so the
            // new one could overtake them.
            let same_conn = self.conn.is_some() && inflight.iter().all(|f| f.conn_number == self.conn_number);
            let can_send = inflight.len() < PIPELINE_DEPTH && (inflight.is_empty() || same_conn);
            tokio::select! {
                biased;
                reply = async { inflight.front_mut().expect("checked").reply.as_mut().await }, if !inflight.is_empty() => {
                    let done = inflight.pop_front().expect("checked");
                    self.finish(done, reply, &mut inflight).await;
                }
                n = rx.recv_many(&mut batch, batch_size), if can_send => {
                    if n == 0 {
                        break;
                    }
                    let mut pipe = Pipeline::with_capacity(n);
                    let mut meta = Vec::with_capacity(n);
                    for q in batch.drain(..) {
                        pipe.add_command(q.cmd);
                        meta.push(q.meta);
                    }
                    match self.conn.clone() {
                        Some(mut conn) => {
                            let pipe = Arc::new(pipe);
                            let sent = pipe.clone();
                            let mut reply: futures::future::BoxFuture<'static, Replies> = Box::pin(
                                tokio::task::unconstrained(async move { conn.req_packed_commands(&sent, 0, n).await }),
                            );
                            // The first poll hands the pipeline to the connection's queue (it has
                            // room: this task is its only user, with at most PIPELINE_DEPTH + 1
                            // requests), so batches go out in the order they are made. Later
                            // polls only wait for the replies.
                            if let std::task::Poll::Ready(r) = futures::poll!(reply.as_mut()) {
                                reply = Box::pin(std::future::ready(r));
                            }
                            inflight.push_back(InFlight {
                                sent: tokio::time::Instant::now(),
                                pipe,
                                meta,
                                reply,
                                conn_number: self.conn_number,
                            });
                        }
                        // No connection: nothing is in flight (a failure waits for all of
                        // them); connect, then send this batch alone.
                        None => {
                            let todo = (0..meta.len()).collect();
                            self.deliver(&pipe, &meta, todo, false, tokio::time::Instant::now()).await;
                        }
                    }
                }
                _ = async { stop.wait_for(|s| *s).await.map(|_| ()) }, if inflight.is_empty() => break,
            }
        }
        while let Some(done) = inflight.pop_front() {
            let reply = done.reply.await;
            self.finish_one(done.sent, done.pipe, done.meta, reply).await;
        }
        // Stopped (shutdown timed out) or every sender gone: fail what is left.
        rx.close();
        let mut left = Vec::new();
        while let Ok(q) = rx.try_recv() {
            self.fail(&q.meta, "producer shut down before delivery");
            left.push(q.meta.seq);
        }
        if !left.is_empty() {
            tracing::error!(events = left.len(), "redis producer stopped with undelivered events");
        }
        self.shared.complete(left);
    }

    /// Handles the replies of the oldest batch in flight. After a connection failure the
    /// batches behind it are awaited too, then every failed one is sent again, in order.
    async fn finish(&mut self, done: InFlight, reply: Replies, inflight: &mut std::collections::VecDeque<InFlight>) {
        if reply_ok(&reply, done.meta.len()) {
            self.finish_one(done.sent, done.pipe, done.meta, reply).await;
            return;
        }
        let mut failed = vec![(done.sent, done.pipe, done.meta, reply)];
        while let Some(next) = inflight.pop_front() {
            let reply = next.reply.await;
            if reply_ok(&reply, next.meta.len()) {
                // Answered although an earlier batch was not (its replies timed out): the
                // earlier batch's missing events will land after these.
                self.finish_one(next.sent, next.pipe, next.meta, reply).await;
            } else {
                failed.push((next.sent, next.pipe, next.meta, reply));
            }
        }
        for (sent, pipe, meta, reply) in failed {
            self.finish_one(sent, pipe, meta, reply).await;
        }
    }

    /// Handles one batch's replies; resends what must be, then completes the batch.
    async fn finish_one(&mut self, sent: tokio::time::Instant, pipe: Arc<Pipeline>, meta: Vec<Meta>, reply: Replies) {
        let todo: Vec<usize> = (0..meta.len()).collect();
        match self.check_replies(&meta, &todo, reply).await {
            Attempt::Done => self.shared.complete(meta.iter().map(|m| m.seq)),
            Attempt::Retry { indexes, uncertain } => {
                self.shared
                    .counters
                    .retried
                    .fetch_add(indexes.len() as u64, Ordering::Relaxed);
                self.deliver(&pipe, &meta, indexes, uncertain, sent).await;
            }
        }
    }

    fn stopped(&self) -> bool {
        *self.stop.borrow()
    }

    fn fail(&self, m: &Meta, error: &str) {
        self.shared.counters.failed.fetch_add(1, Ordering::Relaxed);
        tracing::error!(
            event_type = m.event_type,
            topic = &*m.topic,
            event_id = %m.event_id,
            error,
            "event not delivered to redis"
        );
    }

    /// Sends the events `todo` of a batch (one command per event of `meta`) until each is
    /// delivered or failed, then completes the whole batch. `uncertain`: a previous attempt
    /// may have been applied in part, so check the streams before sending again. `sent`:
    /// when the batch was first sent (or earlier).
    async fn deliver(
        &mut self,
        pipe: &Pipeline,
        meta: &[Meta],
        mut todo: Vec<usize>,
        mut uncertain: bool,
        sent: tokio::time::Instant,
    ) {
        loop {
            if self.stopped() {
                for &i in &todo {
                    self.fail(&meta[i], "producer shut down before delivery");
                }
                break;
            }
            let Some(mut conn) = self.connection().await else {
                continue; // stopped while connecting: failed on the next turn
            };
            if uncertain {
                self.close_stale(&mut conn).await;
                match already_written(&mut conn, meta, &todo, sent).await {
                    Ok(written) => {
                        if !written.is_empty() {
                            let n = written.len() as u64;
                            self.shared.counters.deduplicated.fetch_add(n, Ordering::Relaxed);
                            self.shared.counters.delivered.fetch_add(n, Ordering::Relaxed);
                            tracing::info!(events = n, "events already written before the connection dropped");
                            todo.retain(|i| !written.contains(i));
                        }
                    }
                    Err(e) => {
                        self.connection_failed(&e).await;
                        continue;
                    }
                }
                if todo.is_empty() {
                    break;
                }
            }
            let reply = if todo.len() == meta.len() {
                conn.req_packed_commands(pipe, 0, todo.len()).await
            } else {
                let mut subset = Pipeline::with_capacity(todo.len());
                let mut want = todo.iter().copied().peekable();
                for (i, cmd) in pipe.cmd_iter().enumerate() {
                    if want.peek() == Some(&i) {
                        subset.add_command(cmd.clone());
                        want.next();
                    }
                }
                conn.req_packed_commands(&subset, 0, todo.len()).await
            };
            match self.check_replies(meta, &todo, reply).await {
                Attempt::Done => break,
                Attempt::Retry { indexes, uncertain: u } => {
                    self.shared
                        .counters
                        .retried
                        .fetch_add(indexes.len() as u64, Ordering::Relaxed);
                    todo = indexes;
                    uncertain = u;
                }
            }
        }
        self.shared.complete(meta.iter().map(|m| m.seq));
    }

    /// Counts delivered and failed events of one pipeline's replies for the events `todo`,
    /// and says which must be sent again.
    async fn check_replies(&mut self, meta: &[Meta], todo: &[usize], reply: Replies) -> Attempt {
        let replies = match reply {
            Ok(r) if r.len() == todo.len() => r,
            Ok(r) => {
                let e = RedisError::from((
                    ::redis::ErrorKind::ResponseError,
                    "wrong number of pipeline replies",
                    format!("{} for {} commands", r.len(), todo.len()),
                ));
                self.connection_failed(&e).await;
                return Attempt::Retry {
                    indexes: todo.to_vec(),
                    uncertain: true,
                };
            }
            Err(e) => {
                self.connection_failed(&e).await;
                return Attempt::Retry {
                    indexes: todo.to_vec(),
                    uncertain: true,
                };
            }
        };
        let mut retry = Vec::new();
        let mut delivered = 0u64;
        let mut reconnect = false;
        for (&i, reply) in todo.iter().zip(replies) {
            match reply {
                Value::ServerError(e) if is_transient_server_error(e.code()) => {
                    // A replica (e.g. the old master after a failover): another connection
                    // may reach the new master (DNS, proxy, load balancer).
                    reconnect |= e.code() == "READONLY";
                    tracing::warn!(
                        event_type = meta[i].event_type,
                        topic = &*meta[i].topic,
                        event_id = %meta[i].event_id,
                        error = %RedisError::from(e),
                        "redis refused an event for now; retrying"
                    );
                    retry.push(i);
                }
                Value::ServerError(e) => self.fail(&meta[i], &RedisError::from(e).to_string()),
                _ => delivered += 1,
            }
        }
        self.shared.counters.delivered.fetch_add(delivered, Ordering::Relaxed);
        if retry.is_empty() {
            self.backoff.reset();
            Attempt::Done
        } else {
            // Refused again: the delay keeps growing until Redis accepts.
            if reconnect {
                self.drop_connection();
            }
            let delay = self.backoff.next_delay();
            self.sleep(delay).await;
            Attempt::Retry {
                indexes: retry,
                uncertain: false,
            }
        }
    }

    /// The connection, (re)connecting with backoff; `None` if stopped meanwhile.
    async fn connection(&mut self) -> Option<MultiplexedConnection> {
        loop {
            if let Some(c) = &self.conn {
                return Some(c.clone());
            }
            if self.stopped() {
                return None;
            }
            let config = AsyncConnectionConfig::new()
                .set_connection_timeout(self.config.connect_timeout)
                .set_response_timeout(self.config.response_timeout);
            match self.client.get_multiplexed_async_connection_with_config(&config).await {
                Ok(mut c) => {
                    if let Some(name) = &self.config.client_name {
                        let set: Result<(), RedisError> = ::redis::cmd("CLIENT")
                            .arg("SETNAME")
                            .arg(name)
                            .query_async(&mut c)
                            .await;
                        if let Err(e) = set {
                            tracing::warn!(error = %e, "CLIENT SETNAME failed");
                        }
                    }
                    if self.connected_once {
                        self.shared.counters.reconnects.fetch_add(1, Ordering::Relaxed);
                        tracing::info!("redis producer reconnected");
                    }
                    self.conn_client = ServerClient::of(&mut c).await;
                    self.connected_once = true;
                    self.conn_number += 1;
                    self.conn = Some(c);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "redis producer cannot connect");
                    let delay = self.backoff.next_delay();
                    self.sleep(delay).await;
                }
            }
        }
    }

    async fn connection_failed(&mut self, e: &RedisError) {
        tracing::warn!(error = %e, "redis producer lost its connection; will reconnect and resend");
        if let Some(client) = self.conn_client.take() {
            self.stale.push(client);
        }
        self.conn = None;
        let delay = self.backoff.next_delay();
        self.sleep(delay).await;
    }

    /// Drops a working connection, to make a new one.
    fn drop_connection(&mut self) {
        self.conn = None;
        self.conn_client = None;
    }

    /// Closes the dropped connections that may still hold commands: once Redis killed a
    /// client, nothing it had not applied yet will be, so the check of what is written
    /// that follows sees the final state. (Without `CLIENT KILL` permission the check may
    /// be overtaken: an event can then be written twice, or out of order.)
    ///
    /// Redis numbers clients per server process, from the bottom again after a restart,
    /// and another node (a failover behind the same address) has its own numbers: a
    /// dropped connection is only killed on the process it was made to (same `run_id`),
    /// and only if the client of its id still has its address. A connection to another
    /// process is gone with that process's restart, or holds commands for another node.
    async fn close_stale(&mut self, conn: &mut MultiplexedConnection) {
        let run_id = self.conn_client.as_ref().map(|c| c.run_id.clone());
        let (same, other): (Vec<ServerClient>, Vec<ServerClient>) = std::mem::take(&mut self.stale)
            .into_iter()
            .partition(|old| run_id.as_deref() == Some(&*old.run_id));
        if !other.is_empty() {
            if run_id.is_some() {
                tracing::info!(
                    connections = other.len(),
                    "redis server restarted or replaced since the connection dropped; nothing to close"
                );
            } else {
                tracing::warn!(
                    connections = other.len(),
                    "cannot tell whether redis is the server the previous connection was made to, so it is \
                     not closed; commands it still holds may be applied after the resend"
                );
            }
        }
        for old in same {
            let mut kill = ::redis::cmd("CLIENT");
            kill.arg("KILL").arg("ID").arg(old.id);
            if let Some(addr) = &old.addr {
                kill.arg("ADDR").arg(addr);
            }
            kill.arg("SKIPME").arg("yes");
            let killed: Result<i64, RedisError> = kill.query_async(conn).await;
            if let Err(e) = killed {
                tracing::warn!(
                    error = %e,
                    "cannot close the previous connection; commands it still holds may be applied after the resend"
                );
            }
        }
    }

    /// Sleeps, or less if stopped.
    async fn sleep(&mut self, d: Duration) {
        let mut stop = self.stop.clone();
        tokio::select! {
            _ = tokio::time::sleep(d) => {}
            _ = stop.wait_for(|s| *s) => {}
        }
    }
}

/// A connection as the server knows it, to close it later (`CLIENT KILL`) and nothing else.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ServerClient {
    /// `run_id` of the Redis process (`INFO server`): client ids are numbered per process.
    run_id: String,
    /// `CLIENT ID`.
    id: i64,
    /// `addr` of `CLIENT INFO` (the client's address as the server sees it), when Redis
    /// has that command (6.2).
    addr: Option<String>,
}

impl ServerClient {
    /// Asks Redis who `conn` is; `None` (logged) if it does not say: that connection will
    /// not be closed if it drops.
    async fn of(conn: &mut MultiplexedConnection) -> Option<ServerClient> {
        let info: Result<String, RedisError> = ::redis::cmd("INFO").arg("server").query_async(conn).await;
        let run_id = match info.map(|text| info_field(&text, "run_id")) {
            Ok(Some(run_id)) => run_id,
            Ok(None) => {
                tracing::warn!(
                    "INFO server has no run_id; if this connection drops, commands it still holds may be \
                     applied after the resend"
                );
                return None;
            }
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    "cannot read INFO server; if this connection drops, commands it still holds may be \
                     applied after the resend"
                );
                return None;
            }
        };
        let client_info: Result<String, RedisError> = ::redis::cmd("CLIENT").arg("INFO").query_async(conn).await;
        if let Ok(line) = client_info {
            let id = client_field(&line, "id").and_then(|id| id.parse().ok());
            let addr = client_field(&line, "addr");
            if let (Some(id), Some(addr)) = (id, addr) {
                return Some(ServerClient {
                    run_id,
                    id,
                    addr: Some(addr.to_owned()),
                });
            }
        }
        let id: Result<i64, RedisError> = ::redis::cmd("CLIENT").arg("ID").query_async(conn).await;
        match id {
            Ok(id) => Some(ServerClient { run_id, id, addr: None }),
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    "cannot read CLIENT ID; if this connection drops, commands it still holds may be \
                     applied after the resend"
                );
                None
            }
        }
    }
}

/// The value of `field` in an `INFO` reply (`field:value` lines), if valid.
fn info_field(info: &str, field: &str) -> Option<String> {
    info.lines()
        .find_map(|l| l.trim_end().strip_prefix(field)?.strip_prefix(':'))
        .filter(|v| !v.is_empty() && v.len() <= 64 && v.bytes().all(|b| b.is_ascii_alphanumeric()))
        .map(str::to_owned)
}

/// The value of `field` in a `CLIENT INFO` line (`field=value` words).
fn client_field<'a>(line: &'a str, field: &str) -> Option<&'a str> {
    line.split_ascii_whitespace()
        .find_map(|w| w.strip_prefix(field)?.strip_prefix('='))
        .filter(|v| !v.is_empty())
}

fn reply_ok(reply: &Replies, n: usize) -> bool {
    matches!(reply, Ok(r) if r.len() == n)
}

/// Which of the events `todo` are already in their streams (compared by event id).
///
/// Every entry a batch wrote has an id (a server time in ms) at least the server time
/// when the batch was first sent, `sent`: that is, the server's `TIME` now less the time
/// elapsed since `sent` (measured here, so the clocks need not agree) and
/// [`DEDUP_TIME_MARGIN`]. Each stream is read from its newest entry back to that time (at
/// most [`DEDUP_SCAN_LIMIT`] entries), however many entries the batch in flight behind
/// this one or other producers wrote meanwhile. Without `TIME` (a restricted user), the
/// newest entries are read instead: the batch's count plus [`DEDUP_MARGIN`].
async fn already_written(
    conn: &mut MultiplexedConnection,
    meta: &[Meta],
    todo: &[usize],
    sent: tokio::time::Instant,
) -> Result<HashSet<usize>, RedisError> {
    let mut per_topic: HashMap<&str, HashSet<uuid::Uuid>> = HashMap::new();
    for &i in todo {
        per_topic.entry(&*meta[i].topic).or_default().insert(meta[i].event_id);
    }
    let time: Result<(u64, u64), RedisError> = ::redis::cmd("TIME").query_async(conn).await;
    let oldest_ms = match time {
        Ok((secs, micros)) => {
            let back = sent.elapsed() + DEDUP_TIME_MARGIN;
            Some((secs * 1000 + micros / 1000).saturating_sub(back.as_millis() as u64))
        }
        Err(e) if e.code().is_some_and(is_transient_server_error) => return Err(e),
        Err(e) if e.code().is_some() => {
            tracing::warn!(error = %e, "TIME refused; checking only the newest entries of each stream");
            None
        }
        Err(e) => return Err(e),
    };
    let mut seen: HashSet<(String, uuid::Uuid)> = HashSet::new();
    for (topic, wanted) in per_topic {
        let page = match oldest_ms {
            Some(_) => 1000,
            None => wanted.len() + DEDUP_MARGIN,
        };
        let mut end = "+".to_owned();
        let mut scanned = 0usize;
        let mut found = 0usize;
        loop {
            let entries: Result<Value, RedisError> = ::redis::cmd("XREVRANGE")
                .arg(topic)
                .arg(&end)
                .arg("-")
                .arg("COUNT")
                .arg(page)
                .query_async(conn)
                .await;
            let entries = match entries {
                Ok(entries) => stream_entries(entries),
                // Refused for now (LOADING, BUSY...): the check is tried again after a delay.
                Err(e) if e.code().is_some_and(is_transient_server_error) => return Err(e),
                // Refused for good for this key (WRONGTYPE: not a stream; NOPERM: no right to
                // read it): its events are sent again, and each XADD's reply decides (a
                // refused one fails that event only; an accepted one may be a second copy).
                Err(e) if e.code().is_some() => {
                    tracing::warn!(
                        topic,
                        error = %e,
                        events = wanted.len(),
                        "cannot check which events were already written; sending them again"
                    );
                    break;
                }
                Err(e) => return Err(e),
            };
            let mut older = false;
            for entry in &entries {
                if let (Some(oldest), Some(ms)) = (oldest_ms, entry_ms(&entry.id)) {
                    older |= ms < oldest;
                }
                let id = entry
                    .fields
                    .iter()
                    .find(|(k, _)| k == b"id")
                    .and_then(|(_, v)| std::str::from_utf8(v).ok())
                    .and_then(|v| uuid::Uuid::parse_str(v).ok());
                if let Some(id) = id.filter(|id| wanted.contains(id)) {
                    if seen.insert((topic.to_owned(), id)) {
                        found += 1;
                    }
                }
            }
            scanned += entries.len();
            let Some(last) = entries.last() else { break };
            if oldest_ms.is_none() || older || entries.len() < page || found == wanted.len() {
                break;
            }
            if scanned >= DEDUP_SCAN_LIMIT {
                tracing::warn!(
                    topic,
                    scanned,
                    "stopped checking which events were already written; the rest is sent again"
                );
                break;
            }
            end = format!("({}", last.id);
        }
    }
    Ok(todo
        .iter()
        .copied()
        .filter(|&i| seen.contains(&(meta[i].topic.to_string(), meta[i].event_id)))
        .collect())
}

/// The time part (ms) of a stream entry id `ms-seq`.
fn entry_ms(id: &str) -> Option<u64> {
    id.split_once('-').map_or(id, |(ms, _)| ms).parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_identity_fields_are_parsed() {
        let info = "# Server\r\nredis_version:7.2.4\r\nrun_idx:zz\r\nrun_id:3f2c9a\r\ntcp_port:6379\r\n";
        assert_eq!(info_field(info, "run_id").as_deref(), Some("3f2c9a"));
        assert_eq!(info_field("run_id:\r\n", "run_id"), None);
        assert_eq!(info_field("run_id:a b\r\n", "run_id"), None);
        let line = "id=12 addr=127.0.0.1:51234 laddr=127.0.0.1:6379 fd=8 name=p idle=0\n";
        assert_eq!(client_field(line, "id"), Some("12"));
        assert_eq!(client_field(line, "addr"), Some("127.0.0.1:51234"));
        assert_eq!(client_field(line, "laddr"), Some("127.0.0.1:6379"));
        assert_eq!(client_field("id= addr=x", "id"), None);
    }

    #[test]
    fn settings_are_read() {
        let s = Settings::new()
            .with(SETTING_URL, "rediss://user:pw@example.org:6380/2")
            .with(SETTING_STREAM_MAX_LEN, "500")
            .with(SETTING_BUFFER_CAPACITY, "7")
            .with(SETTING_BUFFER_FULL_WAIT_MS, "0")
            .with(SETTING_BATCH_SIZE, "3");
        let c = RedisProducerConfig::from_settings(&s).unwrap();
        assert_eq!(c.stream_max_len, 500);
        assert_eq!(c.buffer_capacity, 7);
        assert_eq!(c.buffer_full_wait, Duration::ZERO);
        assert_eq!(c.batch_size, 3);
        assert!(!format!("{c:?}").contains("pw"));
        let bad = s.clone().with(SETTING_STREAM_MAX_LEN, "lots");
        assert!(matches!(
            RedisProducerConfig::from_settings(&bad),
            Err(RedisConfigError::NotANumber { .. })
        ));
        // TLS URLs with user and password parse (with a crypto provider installed).
        let client = open_client(&c.url, None).unwrap();
        let info = client.get_connection_info();
        assert_eq!(info.redis.username.as_deref(), Some("user"));
        assert_eq!(info.redis.password.as_deref(), Some("pw"));
        assert_eq!(info.redis.db, 2);
        assert!(open_client("http://nope", None).is_err());
        let missing = std::path::Path::new("/nonexistent/ca.pem");
        assert!(matches!(
            open_client(&c.url, Some(missing)),
            Err(RedisConfigError::CaFile { .. })
        ));
    }


}
