//! The writer task: takes the queued events in batches, sends each batch as one pipeline
//! on its one connection (two in flight at most), checks the replies, retries what Redis
//! refused for now, and after a lost connection reconnects with backoff and resends what
//! was not applied (see the [producer's documentation](super)).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use ::redis::aio::{ConnectionLike, MultiplexedConnection};
use ::redis::{AsyncConnectionConfig, Client, Pipeline, RedisError, Value};
use tokio::sync::{mpsc, watch};

use super::config::RedisProducerConfig;
use super::dedup::already_written;
use super::reconnect::ServerClient;
use super::state::{Meta, Queued, Shared};
use crate::redis::is_transient_server_error;
use crate::retry::Backoff;

/// What became of one attempt at a batch.
pub(super) enum Attempt {
    /// Every event is delivered or failed.
    Done,
    /// These events (indexes into the batch) must be sent again.
    Retry { indexes: Vec<usize>, uncertain: bool },
}

/// Replies of one pipeline, or why there are none.
pub(super) type Replies = Result<Vec<Value>, RedisError>;

/// A batch sent and not answered yet.
pub(super) struct InFlight {
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
pub(super) const PIPELINE_DEPTH: usize = 2;

/// The background task: owns the connection, sends batches in order.
pub(super) struct Writer {
    pub(super) client: Client,
    pub(super) config: RedisProducerConfig,
    pub(super) shared: Arc<Shared>,
    pub(super) conn: Option<MultiplexedConnection>,
    /// Counts the connections made: tells which one a batch in flight was sent on.
    pub(super) conn_number: u64,
    /// Who `conn` is on the server, when Redis told it (`INFO server`, `CLIENT INFO`).
    pub(super) conn_client: Option<ServerClient>,
    /// Dropped connections that may still hold commands Redis has not applied yet (their
    /// replies timed out): closed (`CLIENT KILL`) before checking what is written.
    pub(super) stale: Vec<ServerClient>,
    pub(super) connected_once: bool,
    pub(super) backoff: Backoff,
    pub(super) stop: watch::Receiver<bool>,
}

impl Writer {
    pub(super) async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Queued>) {
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
    pub(super) async fn finish(
        &mut self,
        done: InFlight,
        reply: Replies,
        inflight: &mut std::collections::VecDeque<InFlight>,
    ) {
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
    pub(super) async fn finish_one(
        &mut self,
        sent: tokio::time::Instant,
        pipe: Arc<Pipeline>,
        meta: Vec<Meta>,
        reply: Replies,
    ) {
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

    pub(super) fn stopped(&self) -> bool {
        *self.stop.borrow()
    }

    pub(super) fn fail(&self, m: &Meta, error: &str) {
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
    pub(super) async fn deliver(
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
    pub(super) async fn check_replies(&mut self, meta: &[Meta], todo: &[usize], reply: Replies) -> Attempt {
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
    pub(super) async fn connection(&mut self) -> Option<MultiplexedConnection> {
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

    pub(super) async fn connection_failed(&mut self, e: &RedisError) {
        tracing::warn!(error = %e, "redis producer lost its connection; will reconnect and resend");
        if let Some(client) = self.conn_client.take() {
            self.stale.push(client);
        }
        self.conn = None;
        let delay = self.backoff.next_delay();
        self.sleep(delay).await;
    }

    /// Drops a working connection, to make a new one.
    pub(super) fn drop_connection(&mut self) {
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
    pub(super) async fn close_stale(&mut self, conn: &mut MultiplexedConnection) {
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
    pub(super) async fn sleep(&mut self, d: Duration) {
        let mut stop = self.stop.clone();
        tokio::select! {
            _ = tokio::time::sleep(d) => {}
            _ = stop.wait_for(|s| *s) => {}
        }
    }
}

pub(super) fn reply_ok(reply: &Replies, n: usize) -> bool {
    matches!(reply, Ok(r) if r.len() == n)
}
