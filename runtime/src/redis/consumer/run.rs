//! One run of a consumer: the loop that (re)connects, sets the group up, claims, resumes
//! and reads messages, and stops on shutdown or too many errors. What is done with each
//! message is in `handle.rs`; claiming, resuming and handing back in `claim.rs`.

use std::collections::HashSet;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ::redis::aio::MultiplexedConnection;
use ::redis::{AsyncConnectionConfig, RedisError, Value};
use tokio::sync::Notify;

use super::options::{ConsumeError, ConsumeStats};
use super::scripts::RESET_ONCE_SCRIPT;
use super::RedisConsumer;
use crate::consume::ErrorBudget;
use crate::redis::is_transient_server_error;
use crate::retry::Backoff;

impl RedisConsumer {
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

/// Why one step of the consumer loop stopped.
pub(super) enum StepError {
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

pub(super) type Step<T> = Result<T, StepError>;

/// What `handle` decided for one message.
pub(super) enum Handled {
    Ack,
    Pending,
}

#[derive(Default)]
pub(super) struct StopFlag {
    set: AtomicBool,
    notify: Notify,
}

impl StopFlag {
    pub(super) fn set(&self) {
        self.set.store(true, Ordering::Release);
        self.notify.notify_waiters();
    }
    pub(super) fn is_set(&self) -> bool {
        self.set.load(Ordering::Acquire)
    }
    pub(super) async fn sleep(&self, d: Duration) {
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
pub(super) struct Run<'a> {
    pub(super) c: &'a RedisConsumer,
    pub(super) stop: Arc<StopFlag>,
    pub(super) conn: Option<MultiplexedConnection>,
    pub(super) connected_once: bool,
    pub(super) backoff: Backoff,
    /// Consecutive failed messages.
    pub(super) budget: ErrorBudget,
    /// Consecutive failed Redis calls or connections.
    pub(super) redis_budget: ErrorBudget,
    pub(super) stats: ConsumeStats,
    pub(super) to_ack: Vec<String>,
    pub(super) completed: u64,
    pub(super) group_ready: bool,
    pub(super) own_pending_checked: bool,
    /// Set by a failed Redis call: before reading new messages, the messages Redis
    /// delivered to this consumer whose reply may have been lost are taken up again.
    pub(super) resume_own: bool,
    /// Messages of this consumer left pending for a retry after a failed attempt (they
    /// wait for `retry_delay`, they are not taken up again by `resume_own_pending`).
    pub(super) left_for_retry: HashSet<String>,
    pub(super) next_claim: tokio::time::Instant,
    /// Ids of the messages in hand (see `process_batch`).
    pub(super) in_hand: Arc<Mutex<Vec<String>>>,
}

impl Run<'_> {
    pub(super) fn done(&self) -> bool {
        self.stop.is_set() || self.c.options.max_count.is_some_and(|m| self.completed >= m)
    }

    pub(super) fn remaining(&self) -> usize {
        let batch = self.c.options.common.batch_size.max(1);
        match self.c.options.max_count {
            Some(m) => (m.saturating_sub(self.completed) as usize).clamp(1, batch),
            None => batch,
        }
    }

    pub(super) async fn main(&mut self) -> Result<(), ConsumeError> {
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
    pub(super) async fn step(&mut self, conn: &mut MultiplexedConnection) -> Step<()> {
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
    pub(super) async fn connection(&mut self) -> Result<Option<MultiplexedConnection>, ConsumeError> {
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
    pub(super) async fn setup_group(&mut self, conn: &mut MultiplexedConnection) -> Step<()> {
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
}
