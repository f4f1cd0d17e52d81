//! How a Redis consumer runs ([`RedisConsumerOptions`], [`StartPosition`]), what it counts
//! ([`ConsumeStats`]) and why it stops ([`ConsumeError`]).

use std::time::Duration;

use crate::consume::{ConsumerOptions, TooManyErrors};
use crate::redis::RedisConfigError;

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
    pub(super) fn as_arg(&self) -> &str {
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
}
