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
//!   [`ConsumerOptions::retry_delay`](crate::consume::ConsumerOptions::retry_delay), a member of the group claims it again (`XCLAIM`)
//!   and retries it. After [`ConsumerOptions::max_retries`](crate::consume::ConsumerOptions::max_retries) retries it is dead-lettered.
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
//! [`ConsumerOptions::max_retries`](crate::consume::ConsumerOptions::max_retries) counts attempts where the receivers ran. (A delivery
//! whose reply was lost and that another member claims, because this consumer stopped or
//! lost Redis for `retry_delay`, still counts one.)
//!
//! Dead-lettering writes the message's original fields plus `error`, `original_id`,
//! `attempts`, `original_stream` and `group` to the dead-letter stream
//! ([`ConsumerOptions::dead_letter_for`](crate::consume::ConsumerOptions::dead_letter_for)) and acknowledges the original, atomically (one
//! Lua script that stops at a refused `XADD`): when Redis refuses the dead letter (e.g.
//! the dead-letter key is not a stream), the original is not acknowledged; it stays
//! pending and is retried after `retry_delay`, so nothing is lost.
//! [`ConsumerOptions::max_consecutive_errors`](crate::consume::ConsumerOptions::max_consecutive_errors) failed messages (or failed Redis calls)
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
//! [`ConsumerOptions::max_retries`](crate::consume::ConsumerOptions::max_retries)) and look idle already, so any member claims them
//! at once (this consumer name too, at its next start).
//!
//! # Where the code is
//!
//! This file: [`RedisConsumer`]. `options.rs`: its options, stats and errors. `run.rs`: the
//! loop of one run (connection, group set-up, stop). `claim.rs`: claiming, resuming, reading
//! and handing back messages. `handle.rs`: one message decoded, re-sent, acknowledged, left
//! for a retry or dead-lettered. `replies.rs`: Redis replies read into messages.
//! `scripts.rs`: the Lua scripts and the task that keeps messages in hand.

use ::redis::Client;

mod claim;
mod handle;
mod options;
mod replies;
mod run;
mod scripts;

pub use options::{ConsumeError, ConsumeStats, RedisConsumerOptions, StartPosition};

use super::open_client;

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
}
