//! The Redis Streams consumer, wire-compatible with edx-event-bus-redis.
//!
//! A [`RedisConsumer`] reads one stream (a full topic) as one member of a consumer group,
//! looks each message's event type up from its `type` field, decodes `event_data` with
//! the schema of the event defined in this binary, and re-sends the event through its
//! signal with the received metadata, marked as coming from the bus (so the producing
//! handler does not produce it again).
//!
//! # What happens to a message
//!
//! - Its receivers all succeed: it is acknowledged (`XACK`, after each batch).
//! - A receiver fails: it is left pending. Once it has been idle for
//!   [`ConsumerOptions::retry_delay`], a member of the group claims it again (`XCLAIM`)
//!   and retries it. After [`ConsumerOptions::max_retries`] retries it is dead-lettered.
//! - It cannot be decoded, has an unknown type or bad metadata (a metadata field or
//!   `event_data` given twice, a metadata value that is not UTF-8, a missing `id`, `time`
//!   or `event_data`...): it is dead-lettered at once, with the reason. Peer-supplied
//!   values (event type, id) are cut to 200 characters in the logs, and so is the reason,
//!   in the logs and in the dead letter.
//!
//! While a consumer holds a batch, a task of its own keeps the idle time of the batch's
//! messages not yet acknowledged (started or not) below a quarter of `retry_delay`, so the
//! other members never claim a message in hand, however long its receivers take. A
//! message is claimed by another member only once it was left for a retry, or its
//! consumer stopped (or lost Redis) for `retry_delay`.
//!
//! # Lost replies
//!
//! Redis assigns the messages of an `XREADGROUP` (or `XCLAIM`) to this consumer when it
//! runs the command, whether or not the reply comes back. After any failed Redis call
//! (a lost connection, a timed-out reply, a refusal), the consumer therefore first takes
//! up, in id order, the messages pending for it that it did not leave for a retry, before
//! reading new ones: order per stream is kept, and they are not left to be claimed after
//! `retry_delay` behind later ones. It takes them with their delivery count unchanged
//! (`XCLAIM ... RETRYCOUNT`), so a delivery whose reply was lost spends no retry:
//! [`ConsumerOptions::max_retries`] counts attempts where the receivers ran. (A delivery
//! whose reply was lost and that another member claims, because this consumer stopped or
//! lost Redis for `retry_delay`, still counts one.)
//!
//! Dead-lettering writes the message's original fields plus `error`, `original_id`,
//! `attempts`, `original_stream` and `group` to the dead-letter stream
//! ([`ConsumerOptions::dead_letter_for`]) and acknowledges the original, atomically (one
//! Lua script that stops at a refused `XADD`): when Redis refuses the dead letter (e.g.
//! the dead-letter key is not a stream), the original is not acknowledged; it stays
//! pending and is retried after `retry_delay`, so nothing is lost.
//! [`ConsumerOptions::max_consecutive_errors`] failed messages (or failed Redis calls)
//! in a row stop the consumer with an error.
//!
//! # Where a group starts
//!
//! A group is created (with `MKSTREAM`) at [`RedisConsumerOptions::start`] when it does
//! not exist; an existing group keeps its position across restarts, so events produced
//! while consumers were down are read. [`RedisConsumerOptions::reset_to`] moves an
//! existing group (`XGROUP SETID`), to replay from a message id or skip to the end.
//! A temporary refusal at set-up (`LOADING`, `BUSY`, `OOM`, `MASTERDOWN`...: a server
//! restarting with the service) is retried with backoff; a lasting one (`WRONGTYPE`: the
//! key is not a stream) stops the consumer with [`ConsumeError::Group`].
//!
//! Needs Redis 6.2 or later (`XPENDING ... IDLE`, exclusive ranges).
//!
//! # Shutdown
//!
//! When the shutdown future completes, the consumer finishes the message in hand,
//! acknowledges what succeeded and returns its [`ConsumeStats`]. Messages it had read
//! but not started are handed back: they stay pending in the group with their delivery
//! count set back (an attempt never started is not counted against
//! [`ConsumerOptions::max_retries`]) and look idle already, so any member claims them
//! at once (this consumer name too, at its next start).

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ::redis::aio::MultiplexedConnection;
use ::redis::{AsyncConnectionConfig, Client, RedisError, Value};
use tokio::sync::Notify;

use crate::consume::{dispatch, parse_metadata, ConsumerOptions, DispatchError, ErrorBudget, TooManyErrors};
use super::{is_transient_server_error, open_client, read_fields, stream_entries, RedisConfigError, StreamEntry};
use crate::retry::Backoff;

/// Where a new group starts reading, or where [`RedisConsumerOptions::reset_to`] moves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartPosition {
    /// The oldest message still in the stream (`0`).
    Beginning,
    /// Only messages added from now on (`$`).
    End,
    /// After this message id (`ms-seq`): the next message read is the first one after it.
    After(String),
}

impl StartPosition {
    fn as_arg(&self) -> &str {
        match self {
            StartPosition::Beginning => "0",
            StartPosition::End => "$",
            StartPosition::After(id) => id,
        }
    }
}

impl std::str::FromStr for StartPosition {
    type Err = std::convert::Infallible;
    /// `begin`/`beginning`/`0` → [`StartPosition::Beginning`], `end`/`$` → [`StartPosition::End`],
    /// anything else is a message id.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.trim() {
            "begin" | "beginning" | "0" | "0-0" => StartPosition::Beginning,
            "end" | "$" => StartPosition::End,
            id => StartPosition::After(id.to_owned()),
        })
    }
}

/// Options of the Redis consumer.
#[derive(Debug, Clone)]
pub struct RedisConsumerOptions {
    /// Retries, dead letters, error limit and batch size.
    pub common: ConsumerOptions,
    /// Where a group that does not exist yet starts (default: the beginning of the stream).
    pub start: StartPosition,
    /// Moves an existing group to this position at start (replay or skip).
    ///
    /// Every consumer that starts with it applies it, so N replicas of a service (or one
    /// restarting later) would each move the group back; set [`Self::reset_once`] for a
    /// service.
    pub reset_to: Option<StartPosition>,
    /// Applies [`Self::reset_to`] once per group and position: the first consumer that
    /// starts with it moves the group (or creates it) and records the position in the key
    /// [`RedisConsumer::reset_marker_key`], in the same Lua script; the others starting
    /// with the same position (replicas, restarts) leave the group where it is. To replay
    /// from the same position again, delete that key. (Default `false`: every start
    /// applies it, as a one-off tool wants.)
    pub reset_once: bool,
    /// Stop after this many messages were completed (acknowledged: handled or dead-lettered).
    pub max_count: Option<u64>,
    /// How long one `XREADGROUP` waits for new messages (also the longest delay before a
    /// shutdown request is noticed while idle).
    pub block: Duration,
    /// `MAXLEN ~` of the dead-letter stream (`None`: not trimmed).
    pub dead_letter_max_len: Option<usize>,
    /// Time allowed to connect.
    pub connect_timeout: Duration,
    /// Time allowed for a reply (beyond `block` for reads).
    pub response_timeout: Duration,
    /// First delay before reconnecting; it doubles up to `reconnect_max_delay`.
    pub reconnect_min_delay: Duration,
    /// Longest delay between reconnection attempts.
    pub reconnect_max_delay: Duration,
    /// PEM file of the certificate authorities trusted for `rediss://` (default: the web roots).
    pub tls_ca_file: Option<std::path::PathBuf>,
}

impl Default for RedisConsumerOptions {
    fn default() -> Self {
        Self {
            common: ConsumerOptions::default(),
            start: StartPosition::Beginning,
            reset_to: None,
            reset_once: false,
            max_count: None,
            block: Duration::from_secs(1),
            dead_letter_max_len: None,
            connect_timeout: Duration::from_secs(5),
            response_timeout: Duration::from_secs(10),
            reconnect_min_delay: Duration::from_millis(100),
            reconnect_max_delay: Duration::from_secs(5),
            tls_ca_file: None,
        }
    }
}

/// What a consumer did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConsumeStats {
    /// Messages delivered to this consumer (new ones and claimed ones).
    pub received: u64,
    /// Messages whose receivers all succeeded.
    pub succeeded: u64,
    /// Failed deliveries left pending for a retry.
    pub failed_attempts: u64,
    /// Messages moved to the dead-letter stream.
    pub dead_lettered: u64,
    /// Pending messages claimed from the group (retries, or messages of stopped consumers).
    pub claimed: u64,
    /// Acknowledgements Redis counted (one per completed message).
    pub acked: u64,
    /// Pending messages whose entry was gone from the stream (trimmed before being handled).
    pub vanished: u64,
    /// Reconnections.
    pub reconnects: u64,
}

/// Why the consumer stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ConsumeError {
    /// The URL or settings are unusable.
    #[error(transparent)]
    Config(#[from] RedisConfigError),
    /// Too many failures in a row.
    #[error(transparent)]
    TooManyErrors(#[from] TooManyErrors),
    /// Redis refused to create or move the group (e.g. the key is not a stream).
    #[error("cannot set up consumer group {group:?} on {topic:?}: {error}")]
    Group {
        /// The stream.
        topic: String,
        /// The group.
        group: String,
        /// What Redis said.
        error: String,
    },
}

/// A consumer of one stream, in one group. See the [module documentation](self).
#[derive(Debug)]
pub struct RedisConsumer {
    client: Client,
    url_redacted: String,
    topic: String,
    group: String,
    consumer: String,
    dead_letter: String,
    options: RedisConsumerOptions,
}

/// A received message on its way through the consumer.
struct Received {
    entry: StreamEntry,
    /// Deliveries so far, this one included.
    attempts: u64,
}

/// Why one step of the consumer loop stopped.
enum StepError {
    /// A Redis call failed: the connection is dropped and re-made.
    Lost(RedisError),
    /// Redis refused a command for now (`LOADING`, `BUSY`, `OOM`...): wait with backoff
    /// and try again on the same connection.
    Refused(RedisError),
    /// The consumer must stop.
    Fatal(ConsumeError),
}

impl From<RedisError> for StepError {
    fn from(e: RedisError) -> Self {
        StepError::Lost(e)
    }
}

type Step<T> = Result<T, StepError>;

/// What `handle` decided for one message.
enum Handled {
    Ack,
    Pending,
}

impl RedisConsumer {
    /// A consumer of the stream `topic` (the full topic, prefix applied) in `group`, under
    /// the name `consumer_name` (unique per running consumer: its pending messages are its own).
    pub fn new(
        url: &str,
        topic: impl Into<String>,
        group: impl Into<String>,
        consumer_name: impl Into<String>,
        options: RedisConsumerOptions,
    ) -> Result<Self, ConsumeError> {
        let client = open_client(url, options.tls_ca_file.as_deref())?;
        let topic = topic.into();
        Ok(Self {
            client,
            url_redacted: crate::settings::redact_url(url),
            dead_letter: options.common.dead_letter_for(&topic),
            topic,
            group: group.into(),
            consumer: consumer_name.into(),
            options,
        })
    }

    /// The dead-letter stream of this consumer.
    pub fn dead_letter_stream(&self) -> &str {
        &self.dead_letter
    }

    /// The key where [`RedisConsumerOptions::reset_once`] records the position the group
    /// was last moved to: `{topic}:oev-reset:{group}`.
    pub fn reset_marker_key(&self) -> String {
        format!("{}:oev-reset:{}", self.topic, self.group)
    }

    /// Consumes until `shutdown` completes, `max_count` messages are completed, or too many
    /// errors in a row.
    pub async fn run<S>(self, shutdown: S) -> Result<ConsumeStats, ConsumeError>
    where
        S: Future<Output = ()> + Send + 'static,
    {
        let stop = Arc::new(StopFlag::default());
        let watcher = {
            let stop = stop.clone();
            tokio::spawn(async move {
                shutdown.await;
                stop.set();
            })
        };
        let mut run = Run {
            c: &self,
            stop: stop.clone(),
            conn: None,
            connected_once: false,
            backoff: Backoff::new(self.options.reconnect_min_delay, self.options.reconnect_max_delay),
            budget: ErrorBudget::new(self.options.common.max_consecutive_errors),
            redis_budget: ErrorBudget::new(self.options.common.max_consecutive_errors),
            stats: ConsumeStats::default(),
            to_ack: Vec::new(),
            completed: 0,
            group_ready: false,
            own_pending_checked: false,
            resume_own: false,
            left_for_retry: HashSet::new(),
            next_claim: tokio::time::Instant::now(),
            in_hand: Arc::default(),
        };
        tracing::info!(
            url = %self.url_redacted,
            topic = %self.topic,
            group = %self.group,
            consumer = %self.consumer,
            "redis consumer starting"
        );
        let result = run.main().await;
        watcher.abort();
        let stats = run.stats;
        tracing::info!(
            topic = %self.topic,
            group = %self.group,
            consumer = %self.consumer,
            received = stats.received,
            succeeded = stats.succeeded,
            dead_lettered = stats.dead_lettered,
            "redis consumer stopped"
        );
        result.map(|()| stats)
    }
}

#[derive(Default)]
struct StopFlag {
    set: AtomicBool,
    notify: Notify,
}

impl StopFlag {
    fn set(&self) {
        self.set.store(true, Ordering::Release);
        self.notify.notify_waiters();
    }
    fn is_set(&self) -> bool {
        self.set.load(Ordering::Acquire)
    }
    async fn sleep(&self, d: Duration) {
        let notified = self.notify.notified();
        if self.is_set() {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(d) => {}
            _ = notified => {}
        }
    }
}

/// The state of one `run`.
struct Run<'a> {
    c: &'a RedisConsumer,
    stop: Arc<StopFlag>,
    conn: Option<MultiplexedConnection>,
    connected_once: bool,
    backoff: Backoff,
    /// Consecutive failed messages.
    budget: ErrorBudget,
    /// Consecutive failed Redis calls or connections.
    redis_budget: ErrorBudget,
    stats: ConsumeStats,
    to_ack: Vec<String>,
    completed: u64,
    group_ready: bool,
    own_pending_checked: bool,
    /// Set by a failed Redis call: before reading new messages, the messages Redis
    /// delivered to this consumer whose reply may have been lost are taken up again.
    resume_own: bool,
    /// Messages of this consumer left pending for a retry after a failed attempt (they
    /// wait for `retry_delay`, they are not taken up again by `resume_own_pending`).
    left_for_retry: HashSet<String>,
    next_claim: tokio::time::Instant,
    /// Ids of the messages in hand (see `process_batch`).
    in_hand: Arc<Mutex<Vec<String>>>,
}

impl Run<'_> {
    fn done(&self) -> bool {
        self.stop.is_set() || self.c.options.max_count.is_some_and(|m| self.completed >= m)
    }

    fn remaining(&self) -> usize {
        let batch = self.c.options.common.batch_size.max(1);
        match self.c.options.max_count {
            Some(m) => (m.saturating_sub(self.completed) as usize).clamp(1, batch),
            None => batch,
        }
    }

    async fn main(&mut self) -> Result<(), ConsumeError> {
        loop {
            if self.done() {
                return Ok(());
            }
            let Some(mut conn) = self.connection().await? else {
                return Ok(());
            };
            match self.step(&mut conn).await {
                Ok(()) => {
                    self.backoff.reset();
                    self.redis_budget.success();
                }
                Err(StepError::Fatal(e)) => return Err(e),
                Err(StepError::Lost(e)) if e.code() == Some("NOGROUP") => {
                    // The stream or the group was deleted meanwhile: set it up again.
                    tracing::warn!(topic = %self.c.topic, group = %self.c.group, error = %e, "consumer group gone; creating it again");
                    self.group_ready = false;
                    self.resume_own = true;
                    self.redis_budget.failure(&e.to_string())?;
                }
                Err(StepError::Refused(e)) => {
                    tracing::warn!(
                        topic = %self.c.topic,
                        group = %self.c.group,
                        error = %e,
                        "redis refused the consumer for now; retrying"
                    );
                    self.resume_own = true;
                    self.redis_budget.failure(&e.to_string())?;
                    let delay = self.backoff.next_delay();
                    self.stop.sleep(delay).await;
                }
                Err(StepError::Lost(e)) => {
                    tracing::warn!(
                        topic = %self.c.topic,
                        group = %self.c.group,
                        error = %e,
                        "redis consumer lost its connection; reconnecting"
                    );
                    self.conn = None;
                    self.resume_own = true;
                    self.redis_budget.failure(&e.to_string())?;
                    let delay = self.backoff.next_delay();
                    self.stop.sleep(delay).await;
                }
            }
        }
    }

    /// One turn: set up, take back due pending messages, read new ones, acknowledge.
    async fn step(&mut self, conn: &mut MultiplexedConnection) -> Step<()> {
        if !self.group_ready {
            self.setup_group(conn).await?;
            self.group_ready = true;
        }
        if !self.own_pending_checked {
            // This name's pending messages (from a previous run) are taken back at once.
            let me = self.c.consumer.clone();
            self.claim(conn, Some(&me), Duration::ZERO).await?;
            self.own_pending_checked = true;
            self.resume_own = false;
        }
        if self.resume_own {
            // A call failed: Redis may have delivered messages whose reply never came
            // back. They are ours and older than what `>` returns next: handle them first.
            self.flush_acks(conn).await?;
            self.resume_own_pending(conn).await?;
            self.resume_own = false;
        }
        if tokio::time::Instant::now() >= self.next_claim {
            let retry_delay = self.c.options.common.retry_delay;
            self.claim(conn, None, retry_delay).await?;
            let every = (retry_delay / 2).clamp(Duration::from_millis(50), Duration::from_secs(5));
            self.next_claim = tokio::time::Instant::now() + every;
        }
        if !self.done() {
            self.read_new(conn).await?;
        }
        self.flush_acks(conn).await
    }

    /// The connection, (re)connecting with backoff; `None` when asked to stop meanwhile.
    async fn connection(&mut self) -> Result<Option<MultiplexedConnection>, ConsumeError> {
        loop {
            if let Some(c) = &self.conn {
                return Ok(Some(c.clone()));
            }
            if self.stop.is_set() {
                return Ok(None);
            }
            let config = AsyncConnectionConfig::new()
                .set_connection_timeout(self.c.options.connect_timeout)
                .set_response_timeout(self.c.options.response_timeout + self.c.options.block);
            match self
                .c
                .client
                .get_multiplexed_async_connection_with_config(&config)
                .await
            {
                Ok(c) => {
                    if self.connected_once {
                        self.stats.reconnects += 1;
                        tracing::info!(topic = %self.c.topic, group = %self.c.group, "redis consumer reconnected");
                    }
                    self.connected_once = true;
                    self.conn = Some(c);
                }
                Err(e) => {
                    tracing::warn!(topic = %self.c.topic, error = %e, "redis consumer cannot connect");
                    self.redis_budget.failure(&e.to_string())?;
                    let delay = self.backoff.next_delay();
                    self.stop.sleep(delay).await;
                }
            }
        }
    }

    /// Creates the group if needed, or moves it when asked.
    async fn setup_group(&mut self, conn: &mut MultiplexedConnection) -> Step<()> {
        let o = &self.c.options;
        let created: Result<Value, RedisError> = ::redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&self.c.topic)
            .arg(&self.c.group)
            .arg(o.start.as_arg())
            .arg("MKSTREAM")
            .query_async(conn)
            .await;
        match created {
            Ok(_) => {
                tracing::info!(topic = %self.c.topic, group = %self.c.group, start = o.start.as_arg(), "consumer group created");
                if let (Some(pos), true) = (&o.reset_to, o.reset_once) {
                    // A new group needs no move: the replicas starting next must not move it.
                    let _: Value = ::redis::cmd("SET")
                        .arg(self.c.reset_marker_key())
                        .arg(pos.as_arg())
                        .query_async(conn)
                        .await?;
                }
            }
            Err(e) if e.code() == Some("BUSYGROUP") => {
                if let (Some(pos), true) = (&o.reset_to, o.reset_once) {
                    let moved: i64 = RESET_ONCE_SCRIPT
                        .key(&self.c.topic)
                        .key(self.c.reset_marker_key())
                        .arg(&self.c.group)
                        .arg(pos.as_arg())
                        .invoke_async(conn)
                        .await?;
                    if moved == 1 {
                        tracing::info!(topic = %self.c.topic, group = %self.c.group, position = pos.as_arg(), "consumer group moved");
                    } else {
                        tracing::info!(topic = %self.c.topic, group = %self.c.group, position = pos.as_arg(), "consumer group already moved there once; left where it is");
                    }
                } else if let Some(pos) = &o.reset_to {
                    let _: Value = ::redis::cmd("XGROUP")
                        .arg("SETID")
                        .arg(&self.c.topic)
                        .arg(&self.c.group)
                        .arg(pos.as_arg())
                        .query_async(conn)
                        .await?;
                    tracing::info!(topic = %self.c.topic, group = %self.c.group, position = pos.as_arg(), "consumer group moved");
                }
            }
            // The server is loading, busy, out of memory, without its master...: for now.
            Err(e) if e.code().is_some_and(is_transient_server_error) => return Err(StepError::Refused(e)),
            // A refusal (e.g. WRONGTYPE: the key is not a stream) will not go away.
            Err(e) if e.code().is_some() => {
                return Err(StepError::Fatal(ConsumeError::Group {
                    topic: self.c.topic.clone(),
                    group: self.c.group.clone(),
                    error: e.to_string(),
                }))
            }
            Err(e) => return Err(StepError::Lost(e)),
        }
        Ok(())
    }

    /// Claims pending messages idle for at least `min_idle` (of one consumer, or of all)
    /// and handles them.
    async fn claim(&mut self, conn: &mut MultiplexedConnection, owner: Option<&str>, min_idle: Duration) -> Step<()> {
        let mut cursor = "-".to_owned();
        loop {
            if self.done() {
                return Ok(());
            }
            let count = self.remaining();
            let mut cmd = ::redis::cmd("XPENDING");
            cmd.arg(&self.c.topic).arg(&self.c.group);
            if !min_idle.is_zero() {
                cmd.arg("IDLE").arg(min_idle.as_millis() as u64);
            }
            cmd.arg(&cursor).arg("+").arg(count);
            if let Some(owner) = owner {
                cmd.arg(owner);
            }
            let pending: Value = cmd.query_async(conn).await?;
            let pending = pending_entries(pending);
            if pending.is_empty() {
                return Ok(());
            }
            let full_page = pending.len() >= count;
            cursor = format!("({}", pending[pending.len() - 1].0);
            let deliveries: HashMap<String, u64> = pending.iter().cloned().collect();
            let mut xclaim = ::redis::cmd("XCLAIM");
            xclaim
                .arg(&self.c.topic)
                .arg(&self.c.group)
                .arg(&self.c.consumer)
                .arg(min_idle.as_millis() as u64);
            for (id, _) in &pending {
                xclaim.arg(id);
            }
            let claimed: Value = xclaim.query_async(conn).await?;
            let claimed = stream_entries(claimed);
            // An id missing from the reply was claimed by another consumer meanwhile, or its
            // entry is gone (Redis 7 then drops it from the group; older servers return it
            // without a body, which `handle` acknowledges).
            self.stats.claimed += claimed.len() as u64;
            let batch = claimed
                .into_iter()
                .map(|entry| {
                    let attempts = deliveries.get(&entry.id).copied().unwrap_or(0) + 1;
                    Received { entry, attempts }
                })
                .collect();
            self.process_batch(conn, batch).await?;
            if !full_page {
                return Ok(());
            }
        }
    }

    /// Takes up again, in id order, the messages pending for this consumer that it is not
    /// retrying later (those left after a failed attempt wait for `retry_delay`): after a
    /// lost reply (to `XREADGROUP`, `XCLAIM`, or a cut mid-batch) they were delivered to this
    /// consumer but never started, and must come before the messages read after them.
    ///
    /// Their delivery count is kept as it is (`XCLAIM ... RETRYCOUNT` with the current
    /// count, in one script): it counted the delivery whose reply was lost, which is the
    /// attempt made now, so a lost reply spends no retry (`XREADGROUP` with an id, or a
    /// plain `XCLAIM`, would count one delivery more each time).
    async fn resume_own_pending(&mut self, conn: &mut MultiplexedConnection) -> Step<()> {
        let mut cursor = "-".to_owned();
        let mut own: HashSet<String> = HashSet::new();
        loop {
            if self.done() {
                return Ok(());
            }
            let count = self.remaining();
            let pending: Value = ::redis::cmd("XPENDING")
                .arg(&self.c.topic)
                .arg(&self.c.group)
                .arg(&cursor)
                .arg("+")
                .arg(count)
                .arg(&self.c.consumer)
                .query_async(conn)
                .await?;
            let pending = pending_entries(pending);
            let Some((last, _)) = pending.last() else { break };
            let full_page = pending.len() >= count;
            cursor = format!("({last}");
            own.extend(pending.iter().map(|(id, _)| id.clone()));
            let ids: Vec<&String> = pending
                .iter()
                .map(|(id, _)| id)
                .filter(|id| !self.left_for_retry.contains(*id))
                .collect();
            if !ids.is_empty() {
                let mut invocation = RESUME_OWN_SCRIPT.key(&self.c.topic);
                invocation.arg(&self.c.group).arg(&self.c.consumer).arg(&ids);
                let taken: Value = invocation.invoke_async(conn).await?;
                let batch = resumed_entries(taken);
                if !batch.is_empty() {
                    tracing::info!(
                        topic = %self.c.topic,
                        group = %self.c.group,
                        messages = batch.len(),
                        "taking up messages delivered to this consumer whose reply was lost"
                    );
                }
                self.process_batch(conn, batch).await?;
            }
            if !full_page {
                break;
            }
        }
        // Forget the retries another member took meanwhile.
        self.left_for_retry.retain(|id| own.contains(id));
        Ok(())
    }

    /// Reads and handles one batch of new messages.
    async fn read_new(&mut self, conn: &mut MultiplexedConnection) -> Step<()> {
        let reply: Value = ::redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(&self.c.group)
            .arg(&self.c.consumer)
            .arg("COUNT")
            .arg(self.remaining())
            .arg("BLOCK")
            .arg(self.c.options.block.as_millis() as u64)
            .arg("STREAMS")
            .arg(&self.c.topic)
            .arg(">")
            .query_async(conn)
            .await?;
        self.backoff.reset();
        let batch = read_reply_entries(reply)
            .into_iter()
            .map(|entry| Received { entry, attempts: 1 })
            .collect();
        self.process_batch(conn, batch).await
    }

    /// Handles a batch of messages delivered to this consumer, in order, then acknowledges
    /// what succeeded.
    ///
    /// Meanwhile a task keeps the messages in hand (every one of the batch not yet
    /// acknowledged nor left for a retry, started or not) from looking idle to the other
    /// members, which claim what has been idle for `retry_delay`. When the consumer stops
    /// in the middle, the messages not started are handed back: their delivery count is
    /// set back (they spent no attempt) and they may be claimed at once.
    async fn process_batch(&mut self, conn: &mut MultiplexedConnection, batch: Vec<Received>) -> Step<()> {
        if batch.is_empty() {
            return Ok(());
        }
        *lock(&self.in_hand) = batch.iter().map(|r| r.entry.id.clone()).collect();
        let _keeper = AbortOnDrop(tokio::spawn(keep_in_hand(
            conn.clone(),
            self.c.topic.clone(),
            self.c.group.clone(),
            self.c.consumer.clone(),
            self.c.options.common.retry_delay,
            self.in_hand.clone(),
        )));
        let result = self.process_in_hand(conn, batch).await;
        lock(&self.in_hand).clear();
        result
    }

    async fn process_in_hand(&mut self, conn: &mut MultiplexedConnection, batch: Vec<Received>) -> Step<()> {
        let mut batch = batch.into_iter();
        while let Some(msg) = batch.next() {
            if self.done() {
                let not_started: Vec<Received> = std::iter::once(msg).chain(batch).collect();
                self.flush_acks(conn).await?;
                return self.hand_back(conn, &not_started).await;
            }
            let id = msg.entry.id.clone();
            match self.process(conn, msg).await? {
                Handled::Ack => {}
                // Left pending: it must look idle, to be retried after `retry_delay`.
                Handled::Pending => lock(&self.in_hand).retain(|i| *i != id),
            }
        }
        self.flush_acks(conn).await
    }

    /// Gives messages read but not started back to the group: their delivery count is
    /// set back to what it was before this consumer took them, and they look idle for
    /// `retry_delay` already, so any member (this one at its next start) takes them now.
    async fn hand_back(&mut self, conn: &mut MultiplexedConnection, not_started: &[Received]) -> Step<()> {
        if not_started.is_empty() {
            return Ok(());
        }
        let mut invocation = HAND_BACK_SCRIPT.key(&self.c.topic);
        invocation
            .arg(&self.c.group)
            .arg(&self.c.consumer)
            .arg(self.c.options.common.retry_delay.as_millis() as u64);
        for r in not_started {
            invocation.arg(&r.entry.id).arg(r.attempts.saturating_sub(1));
        }
        let handed: Result<u64, RedisError> = invocation.invoke_async(conn).await;
        match handed {
            Ok(n) => tracing::info!(
                topic = %self.c.topic,
                group = %self.c.group,
                messages = n,
                "messages read but not started handed back to the group"
            ),
            // They stay pending (their next delivery counts one attempt more).
            Err(e) => tracing::warn!(
                topic = %self.c.topic,
                group = %self.c.group,
                error = %e,
                "cannot hand back the messages not started"
            ),
        }
        Ok(())
    }

    async fn process(&mut self, conn: &mut MultiplexedConnection, msg: Received) -> Step<Handled> {
        self.stats.received += 1;
        let id = msg.entry.id.clone();
        self.left_for_retry.remove(&id);
        let handled = self.handle(conn, msg).await?;
        match handled {
            Handled::Ack => self.completed += 1,
            Handled::Pending => {
                self.left_for_retry.insert(id);
            }
        }
        Ok(handled)
    }

    /// Handles one message: dispatch, then decide acknowledge / retry / dead letter.
    async fn handle(&mut self, conn: &mut MultiplexedConnection, msg: Received) -> Step<Handled> {
        let Received { entry, attempts } = msg;
        if entry.deleted {
            self.stats.vanished += 1;
            tracing::warn!(topic = %self.c.topic, message_id = %entry.id, "pending message no longer in the stream");
            self.to_ack.push(entry.id);
            return Ok(Handled::Ack);
        }
        let (raw, data) = match read_fields(&entry.fields) {
            Ok((raw, data)) => (raw, Ok(data)),
            Err(e) => (RawMetadata::default(), Err(e)),
        };
        // Peer-supplied: cut before they reach a log.
        let event_id = bounded(raw.id.as_deref().unwrap_or_default()).into_owned();
        let event_type = bounded(raw.event_type.as_deref().unwrap_or_default()).into_owned();
        let result = match data {
            Err(e) => Err(e),
            Ok(data) => match (parse_metadata(&raw), data) {
                (Ok(metadata), Some(data)) => dispatch(metadata, data).await,
                (Ok(_), None) => Err(DispatchError::BadMetadata("missing `event_data`".into())),
                (Err(e), _) => Err(e),
            },
        };
        match result {
            Ok(()) => {
                self.stats.succeeded += 1;
                self.budget.success();
                self.to_ack.push(entry.id);
                Ok(Handled::Ack)
            }
            Err(e) => {
                // It may quote peer-supplied values (and receivers' messages): bounded in
                // the logs and in the dead letter.
                let error = bounded(&e.to_string()).into_owned();
                let give_up = e.is_permanent() || attempts > u64::from(self.c.options.common.max_retries);
                let mut dead_letter_failed = false;
                if give_up {
                    tracing::error!(
                        topic = %self.c.topic,
                        group = %self.c.group,
                        message_id = %entry.id,
                        event_type = %event_type,
                        event_id = %event_id,
                        attempts,
                        error = %error,
                        "message goes to dead letters"
                    );
                    if self.dead_letter(conn, &entry, &error, attempts).await? {
                        self.stats.dead_lettered += 1;
                    } else {
                        dead_letter_failed = true;
                    }
                } else {
                    tracing::warn!(
                        topic = %self.c.topic,
                        group = %self.c.group,
                        message_id = %entry.id,
                        event_type = %event_type,
                        event_id = %event_id,
                        attempts,
                        error = %error,
                        "message failed; it will be retried"
                    );
                    self.stats.failed_attempts += 1;
                }
                let completed = give_up && !dead_letter_failed;
                if let Err(too_many) = self.budget.failure(&error) {
                    // Keep what is done so far, then stop.
                    if completed {
                        self.completed += 1;
                    }
                    self.flush_acks(conn).await?;
                    return Err(StepError::Fatal(too_many.into()));
                }
                Ok(if completed { Handled::Ack } else { Handled::Pending })
            }
        }
    }

    /// Moves a message to the dead-letter stream and acknowledges it, atomically: one Lua
    /// script that stops at a failed `XADD`, so the original is acknowledged only once its
    /// dead letter is written (Redis does not roll a `MULTI`/`EXEC` back, it would have
    /// run the `XACK` anyway). Returns whether the dead letter was written; when Redis
    /// refused it (e.g. `WRONGTYPE`: the dead-letter key is not a stream, `OOM`), the
    /// message stays pending and is retried after [`ConsumerOptions::retry_delay`].
    async fn dead_letter(
        &mut self,
        conn: &mut MultiplexedConnection,
        entry: &StreamEntry,
        error: &str,
        attempts: u64,
    ) -> Step<bool> {
        let mut invocation = DEAD_LETTER_SCRIPT.key(&self.c.dead_letter);
        invocation.key(&self.c.topic).arg(&self.c.group).arg(&entry.id);
        if let Some(n) = self.c.options.dead_letter_max_len {
            invocation.arg("MAXLEN").arg("~").arg(n);
        }
        invocation.arg("*");
        for (k, v) in &entry.fields {
            invocation.arg(&k[..]).arg(&v[..]);
        }
        invocation
            .arg("error")
            .arg(error)
            .arg("original_id")
            .arg(&entry.id)
            .arg("attempts")
            .arg(attempts)
            .arg("original_stream")
            .arg(&self.c.topic)
            .arg("group")
            .arg(&self.c.group);
        let acked: Result<u64, RedisError> = invocation.invoke_async(conn).await;
        match acked {
            Ok(acked) => {
                self.stats.acked += acked;
                Ok(true)
            }
            // Redis refused the dead letter (the XADD): nothing was acknowledged.
            Err(e) if e.code().is_some() => {
                tracing::error!(
                    topic = %self.c.topic,
                    group = %self.c.group,
                    dead_letter = %self.c.dead_letter,
                    message_id = %entry.id,
                    error = %e,
                    "cannot write the dead letter; the message stays pending and will be retried"
                );
                Ok(false)
            }
            Err(e) => Err(StepError::Lost(e)),
        }
    }

    async fn flush_acks(&mut self, conn: &mut MultiplexedConnection) -> Step<()> {
        if self.to_ack.is_empty() {
            return Ok(());
        }
        let acked: u64 = ::redis::cmd("XACK")
            .arg(&self.c.topic)
            .arg(&self.c.group)
            .arg(&self.to_ack)
            .query_async(conn)
            .await?;
        if (acked as usize) < self.to_ack.len() {
            tracing::warn!(
                topic = %self.c.topic,
                group = %self.c.group,
                expected = self.to_ack.len(),
                acked,
                "some messages were no longer pending when acknowledged (claimed by another consumer?)"
            );
        }
        self.stats.acked += acked;
        self.to_ack.clear();
        Ok(())
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Keeps the idle time of the messages in hand near zero (a quarter of `retry_delay` at
/// most), so no other member claims them, until aborted. It runs as a task of its own, so
/// a receiver that holds its thread does not stop it.
async fn keep_in_hand(
    mut conn: MultiplexedConnection,
    topic: String,
    group: String,
    consumer: String,
    retry_delay: Duration,
    in_hand: Arc<Mutex<Vec<String>>>,
) {
    let every = (retry_delay / 4).max(Duration::from_millis(5));
    loop {
        tokio::time::sleep(every).await;
        let ids = lock(&in_hand).clone();
        if ids.is_empty() {
            continue;
        }
        let mut invocation = KEEP_IN_HAND_SCRIPT.key(&topic);
        invocation.arg(&group).arg(&consumer).arg(&ids);
        let kept: Result<u64, RedisError> = invocation.invoke_async(&mut conn).await;
        if let Err(e) = kept {
            tracing::warn!(topic = %topic, group = %group, error = %e, "cannot refresh the messages in hand");
        }
    }
}

/// Resets the idle time of the messages `ARGV[3..]` still pending for consumer `ARGV[2]`
/// of group `ARGV[1]` on stream `KEYS[1]` (`XCLAIM ... JUSTID` does not count a delivery);
/// a message another member took meanwhile is left to it.
static KEEP_IN_HAND_SCRIPT: std::sync::LazyLock<::redis::Script> = std::sync::LazyLock::new(|| {
    ::redis::Script::new(
        r"
local n = 0
for i = 3, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1, ARGV[2])
  if #p > 0 then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
    n = n + 1
  end
end
return n
",
    )
});

/// Hands messages back: for each pair `id, count` after `ARGV[3]` still pending for
/// consumer `ARGV[2]` of group `ARGV[1]`, sets its delivery count to `count` and its idle
/// time to `ARGV[3]` ms.
static HAND_BACK_SCRIPT: std::sync::LazyLock<::redis::Script> = std::sync::LazyLock::new(|| {
    ::redis::Script::new(
        r"
local n = 0
for i = 4, #ARGV - 1, 2 do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1, ARGV[2])
  if #p > 0 then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'IDLE', ARGV[3], 'RETRYCOUNT', ARGV[i + 1], 'JUSTID')
    n = n + 1
  end
end
return n
",
    )
});

/// Takes messages `ARGV[3..]` still pending for consumer `ARGV[2]` of group `ARGV[1]` on
/// stream `KEYS[1]`, keeping their delivery count: `XCLAIM` each with `RETRYCOUNT` set to
/// its current count. Returns `entry, count` pairs (an entry gone from the stream has no
/// fields; Redis 7 drops it from the group instead and it is left out).
static RESUME_OWN_SCRIPT: std::sync::LazyLock<::redis::Script> = std::sync::LazyLock::new(|| {
    ::redis::Script::new(
        r"
local out = {}
for i = 3, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1, ARGV[2])
  if #p > 0 then
    local e = redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'RETRYCOUNT', p[1][4])
    if #e > 0 then
      out[#out + 1] = e[1]
      out[#out + 1] = p[1][4]
    end
  end
end
return out
",
    )
});

/// Moves group `ARGV[1]` of stream `KEYS[1]` to `ARGV[2]` unless the marker `KEYS[2]`
/// says it was moved there already, then records it; 1 when moved.
static RESET_ONCE_SCRIPT: std::sync::LazyLock<::redis::Script> = std::sync::LazyLock::new(|| {
    ::redis::Script::new(
        r"
if redis.call('GET', KEYS[2]) == ARGV[2] then return 0 end
redis.call('XGROUP', 'SETID', KEYS[1], ARGV[1], ARGV[2])
redis.call('SET', KEYS[2], ARGV[2])
return 1
",
    )
});

/// Writes a dead letter and acknowledges the original, or neither.
///
/// `KEYS[1]` the dead-letter stream, `KEYS[2]` the stream; `ARGV[1]` the group, `ARGV[2]`
/// the message id, then the `XADD` arguments after the key. `redis.call` raises on a
/// refused `XADD`, which ends the script before the `XACK`.
static DEAD_LETTER_SCRIPT: std::sync::LazyLock<::redis::Script> = std::sync::LazyLock::new(|| {
    ::redis::Script::new(
        r"
local xadd = {}
for i = 3, #ARGV do xadd[#xadd + 1] = ARGV[i] end
redis.call('XADD', KEYS[1], unpack(xadd))
return redis.call('XACK', KEYS[2], ARGV[1], ARGV[2])
",
    )
});

/// Longest peer-supplied value (event type, id, error reason) in a log or a stored reason,
/// in characters.
const MAX_PEER_VALUE_CHARS: usize = 200;

/// `s` cut to [`MAX_PEER_VALUE_CHARS`] characters, saying how long it was when cut.
fn bounded(s: &str) -> std::borrow::Cow<'_, str> {
    match s.char_indices().nth(MAX_PEER_VALUE_CHARS) {
        None => s.into(),
        Some((end, _)) => format!("{}... ({} bytes in all)", &s[..end], s.len()).into(),
    }
}

/// The entries of an `XREADGROUP` reply (one stream): `[[stream, [entries]]]`, or nil.
fn read_reply_entries(v: Value) -> Vec<StreamEntry> {
    match v {
        Value::Array(streams) => streams
            .into_iter()
            .flat_map(|s| match s {
                Value::Array(mut pair) if pair.len() == 2 => stream_entries(pair.pop().unwrap_or(Value::Nil)),
                _ => Vec::new(),
            })
            .collect(),
        Value::Map(streams) => streams.into_iter().flat_map(|(_, e)| stream_entries(e)).collect(),
        _ => Vec::new(),
    }
}

/// The messages of a `RESUME_OWN_SCRIPT` reply, with their delivery count (which counts
/// the delivery now made).
fn resumed_entries(v: Value) -> Vec<Received> {
    let Value::Array(items) = v else {
        return Vec::new();
    };
    let mut out = Vec::with_capacity(items.len() / 2);
    let mut it = items.into_iter();
    while let (Some(entry), Some(count)) = (it.next(), it.next()) {
        let Value::Int(count) = count else { continue };
        if let Some(entry) = stream_entries(Value::Array(vec![entry])).pop() {
            out.push(Received {
                entry,
                attempts: u64::try_from(count).unwrap_or(0).max(1),
            });
        }
    }
    out
}

/// `(id, deliveries)` of an extended `XPENDING` reply.
fn pending_entries(v: Value) -> Vec<(String, u64)> {
    let Value::Array(items) = v else {
        return Vec::new();
    };
    items
        .into_iter()
        .filter_map(|item| {
            let Value::Array(fields) = item else { return None };
            let id = match fields.first()? {
                Value::BulkString(b) => String::from_utf8(b.clone()).ok()?,
                Value::SimpleString(s) => s.clone(),
                _ => return None,
            };
            let deliveries = match fields.get(3)? {
                Value::Int(n) => u64::try_from(*n).ok()?,
                _ => return None,
            };
            Some((id, deliveries))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_positions_parse() {
        assert_eq!("begin".parse::<StartPosition>().unwrap(), StartPosition::Beginning);
        assert_eq!("$".parse::<StartPosition>().unwrap(), StartPosition::End);
        assert_eq!(
            "1700000000000-3".parse::<StartPosition>().unwrap(),
            StartPosition::After("1700000000000-3".into())
        );
        assert_eq!(StartPosition::Beginning.as_arg(), "0");
    }

    #[test]
    fn peer_values_are_bounded() {
        assert_eq!(bounded("short"), "short");
        let cut = bounded(&"é".repeat(1000)).into_owned();
        assert!(cut.chars().count() < MAX_PEER_VALUE_CHARS + 40, "{cut}");
        assert!(cut.ends_with("(2000 bytes in all)"), "{cut}");
    }

    #[test]
    fn replies_parse() {
        let pending = Value::Array(vec![
            Value::Array(vec![
                Value::BulkString(b"1-0".to_vec()),
                Value::BulkString(b"c1".to_vec()),
                Value::Int(1000),
                Value::Int(3),
            ]),
            Value::Nil,
        ]);
        assert_eq!(pending_entries(pending), vec![("1-0".to_owned(), 3)]);
        let read = Value::Array(vec![Value::Array(vec![
            Value::BulkString(b"stream".to_vec()),
            Value::Array(vec![Value::Array(vec![
                Value::BulkString(b"5-1".to_vec()),
                Value::Array(vec![Value::BulkString(b"k".to_vec()), Value::BulkString(b"v".to_vec())]),
            ])]),
        ])]);
        let entries = read_reply_entries(read);
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].id, "5-1");
        assert!(read_reply_entries(Value::Nil).is_empty());
    }
}
