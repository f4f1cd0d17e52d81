//! After a reconnect: which events of a batch Redis already applied (read back from each
//! stream by event id), so that they are not written twice.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use ::redis::aio::MultiplexedConnection;
use ::redis::{RedisError, Value};

use super::state::Meta;
use crate::redis::{is_transient_server_error, stream_entries};

/// Entries read beyond a batch's own count when checking, after a reconnect, which of its
/// events Redis already applied, when the server's `TIME` is not available (otherwise the
/// check reads back to the time the batch was first sent).
pub const DEDUP_MARGIN: usize = 1000;
/// Margin of the check of what is already written, before the time a batch was first sent.
pub const DEDUP_TIME_MARGIN: Duration = Duration::from_secs(2);
/// Most entries of one stream that the check of what is already written reads.
pub const DEDUP_SCAN_LIMIT: usize = 200_000;

/// Which of the events `todo` are already in their streams (compared by event id).
///
/// Every entry a batch wrote has an id (a server time in ms) at least the server time
/// when the batch was first sent, `sent`: that is, the server's `TIME` now less the time
/// elapsed since `sent` (measured here, so the clocks need not agree) and
/// [`DEDUP_TIME_MARGIN`]. Each stream is read from its newest entry back to that time (at
/// most [`DEDUP_SCAN_LIMIT`] entries), however many entries the batch in flight behind
/// this one or other producers wrote meanwhile. Without `TIME` (a restricted user), the
/// newest entries are read instead: the batch's count plus [`DEDUP_MARGIN`].
pub(super) async fn already_written(
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
pub(super) fn entry_ms(id: &str) -> Option<u64> {
    id.split_once('-').map_or(id, |(ms, _)| ms).parse().ok()
}
