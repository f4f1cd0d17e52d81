//! The Lua scripts of the consumer (keep in hand, hand back, resume its own messages,
//! reset once, dead-letter), and the task that keeps the messages in hand from being claimed.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ::redis::aio::MultiplexedConnection;
use ::redis::RedisError;

pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Aborts a task when dropped.
pub(super) struct AbortOnDrop(pub(super) tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Keeps the idle time of the messages in hand near zero (a quarter of `retry_delay` at
/// most), so no other member claims them, until aborted. It runs as a task of its own, so
/// a receiver that holds its thread does not stop it.
pub(super) async fn keep_in_hand(
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
pub(super) static KEEP_IN_HAND_SCRIPT: std::sync::LazyLock<::redis::Script> = std::sync::LazyLock::new(|| {
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
pub(super) static HAND_BACK_SCRIPT: std::sync::LazyLock<::redis::Script> = std::sync::LazyLock::new(|| {
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
pub(super) static RESUME_OWN_SCRIPT: std::sync::LazyLock<::redis::Script> = std::sync::LazyLock::new(|| {
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
pub(super) static RESET_ONCE_SCRIPT: std::sync::LazyLock<::redis::Script> = std::sync::LazyLock::new(|| {
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
pub(super) static DEAD_LETTER_SCRIPT: std::sync::LazyLock<::redis::Script> = std::sync::LazyLock::new(|| {
    ::redis::Script::new(
        r"
local xadd = {}
for i = 3, #ARGV do xadd[#xadd + 1] = ARGV[i] end
redis.call('XADD', KEYS[1], unpack(xadd))
return redis.call('XACK', KEYS[2], ARGV[1], ARGV[2])
",
    )
});
