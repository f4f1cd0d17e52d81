//! What is done with each message: decoded and re-sent through its signal, then
//! acknowledged, left pending for a retry, or dead-lettered with its reason (atomically
//! with its acknowledgement).

use ::redis::aio::MultiplexedConnection;
use ::redis::RedisError;

use super::replies::Received;
use super::run::{Handled, Run, Step, StepError};
use super::scripts::{keep_in_hand, lock, AbortOnDrop, DEAD_LETTER_SCRIPT, HAND_BACK_SCRIPT};
use crate::consume::{dispatch, parse_metadata, DispatchError, RawMetadata};
use crate::redis::{read_fields, StreamEntry};

impl Run<'_> {
    /// Handles a batch of messages delivered to this consumer, in order, then acknowledges
    /// what succeeded.
    ///
    /// Meanwhile a task keeps the messages in hand (every one of the batch not yet
    /// acknowledged nor left for a retry, started or not) from looking idle to the other
    /// members, which claim what has been idle for `retry_delay`. When the consumer stops
    /// in the middle, the messages not started are handed back: their delivery count is
    /// set back (they spent no attempt) and they may be claimed at once.
    pub(super) async fn process_batch(&mut self, conn: &mut MultiplexedConnection, batch: Vec<Received>) -> Step<()> {
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

    pub(super) async fn process_in_hand(&mut self, conn: &mut MultiplexedConnection, batch: Vec<Received>) -> Step<()> {
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
    pub(super) async fn hand_back(&mut self, conn: &mut MultiplexedConnection, not_started: &[Received]) -> Step<()> {
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

    pub(super) async fn process(&mut self, conn: &mut MultiplexedConnection, msg: Received) -> Step<Handled> {
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
    pub(super) async fn handle(&mut self, conn: &mut MultiplexedConnection, msg: Received) -> Step<Handled> {
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
    pub(super) async fn dead_letter(
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

    pub(super) async fn flush_acks(&mut self, conn: &mut MultiplexedConnection) -> Step<()> {
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

/// Longest peer-supplied value (event type, id, error reason) in a log or a stored reason,
/// in characters.
pub(super) const MAX_PEER_VALUE_CHARS: usize = 200;

/// `s` cut to [`MAX_PEER_VALUE_CHARS`] characters, saying how long it was when cut.
pub(super) fn bounded(s: &str) -> std::borrow::Cow<'_, str> {
    match s.char_indices().nth(MAX_PEER_VALUE_CHARS) {
        None => s.into(),
        Some((end, _)) => format!("{}... ({} bytes in all)", &s[..end], s.len()).into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_values_are_bounded() {
        assert_eq!(bounded("short"), "short");
        let cut = bounded(&"é".repeat(1000)).into_owned();
        assert!(cut.chars().count() < MAX_PEER_VALUE_CHARS + 40, "{cut}");
        assert!(cut.ends_with("(2000 bytes in all)"), "{cut}");
    }
}
