//! How the Redis producer connects and buffers: [`RedisProducerConfig`] and the settings it
//! reads.

use std::time::Duration;

use crate::redis::{number, RedisConfigError, SETTING_TLS_CA_FILE, SETTING_URL};
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redis::open_client;

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
