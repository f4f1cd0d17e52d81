//! Taking messages: claiming those left idle by any member (`XCLAIM`), resuming this
//! consumer's own after a lost reply, reading new ones (`XREADGROUP`), and handing back
//! those read but not started at shutdown.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use ::redis::aio::MultiplexedConnection;
use ::redis::Value;

use super::replies::{pending_entries, read_reply_entries, resumed_entries, Received};
use super::run::{Run, Step};
use super::scripts::RESUME_OWN_SCRIPT;
use crate::redis::stream_entries;

impl Run<'_> {
    /// Claims pending messages idle for at least `min_idle` (of one consumer, or of all)
    /// and handles them.
    pub(super) async fn claim(
        &mut self,
        conn: &mut MultiplexedConnection,
        owner: Option<&str>,
        min_idle: Duration,
    ) -> Step<()> {
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
    pub(super) async fn resume_own_pending(&mut self, conn: &mut MultiplexedConnection) -> Step<()> {
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
    pub(super) async fn read_new(&mut self, conn: &mut MultiplexedConnection) -> Step<()> {
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
}
