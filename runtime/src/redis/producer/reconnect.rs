//! Who a connection is on the server (`INFO server` run id, `CLIENT ID`, address), so that
//! after a reconnect the dropped connection can be closed (`CLIENT KILL`) before the check
//! of what is already written: Redis could otherwise still apply commands it holds.

use ::redis::aio::MultiplexedConnection;
use ::redis::RedisError;

/// A connection as the server knows it, to close it later (`CLIENT KILL`) and nothing else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ServerClient {
    /// `run_id` of the Redis process (`INFO server`): client ids are numbered per process.
    pub(super) run_id: String,
    /// `CLIENT ID`.
    pub(super) id: i64,
    /// `addr` of `CLIENT INFO` (the client's address as the server sees it), when Redis
    /// has that command (6.2).
    pub(super) addr: Option<String>,
}

impl ServerClient {
    /// Asks Redis who `conn` is; `None` (logged) if it does not say: that connection will
    /// not be closed if it drops.
    pub(super) async fn of(conn: &mut MultiplexedConnection) -> Option<ServerClient> {
        let info: Result<String, RedisError> = ::redis::cmd("INFO").arg("server").query_async(conn).await;
        let run_id = match info.map(|text| info_field(&text, "run_id")) {
            Ok(Some(run_id)) => run_id,
            Ok(None) => {
                tracing::warn!(
                    "INFO server has no run_id; if this connection drops, commands it still holds may be \
                     applied after the resend"
                );
                return None;
            }
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    "cannot read INFO server; if this connection drops, commands it still holds may be \
                     applied after the resend"
                );
                return None;
            }
        };
        let client_info: Result<String, RedisError> = ::redis::cmd("CLIENT").arg("INFO").query_async(conn).await;
        if let Ok(line) = client_info {
            let id = client_field(&line, "id").and_then(|id| id.parse().ok());
            let addr = client_field(&line, "addr");
            if let (Some(id), Some(addr)) = (id, addr) {
                return Some(ServerClient {
                    run_id,
                    id,
                    addr: Some(addr.to_owned()),
                });
            }
        }
        let id: Result<i64, RedisError> = ::redis::cmd("CLIENT").arg("ID").query_async(conn).await;
        match id {
            Ok(id) => Some(ServerClient { run_id, id, addr: None }),
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    "cannot read CLIENT ID; if this connection drops, commands it still holds may be \
                     applied after the resend"
                );
                None
            }
        }
    }
}

/// The value of `field` in an `INFO` reply (`field:value` lines), if valid.
pub(super) fn info_field(info: &str, field: &str) -> Option<String> {
    info.lines()
        .find_map(|l| l.trim_end().strip_prefix(field)?.strip_prefix(':'))
        .filter(|v| !v.is_empty() && v.len() <= 64 && v.bytes().all(|b| b.is_ascii_alphanumeric()))
        .map(str::to_owned)
}

/// The value of `field` in a `CLIENT INFO` line (`field=value` words).
pub(super) fn client_field<'a>(line: &'a str, field: &str) -> Option<&'a str> {
    line.split_ascii_whitespace()
        .find_map(|w| w.strip_prefix(field)?.strip_prefix('='))
        .filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_identity_fields_are_parsed() {
        let info = "# Server\r\nredis_version:7.2.4\r\nrun_idx:zz\r\nrun_id:3f2c9a\r\ntcp_port:6379\r\n";
        assert_eq!(info_field(info, "run_id").as_deref(), Some("3f2c9a"));
        assert_eq!(info_field("run_id:\r\n", "run_id"), None);
        assert_eq!(info_field("run_id:a b\r\n", "run_id"), None);
        let line = "id=12 addr=127.0.0.1:51234 laddr=127.0.0.1:6379 fd=8 name=p idle=0\n";
        assert_eq!(client_field(line, "id"), Some("12"));
        assert_eq!(client_field(line, "addr"), Some("127.0.0.1:51234"));
        assert_eq!(client_field(line, "laddr"), Some("127.0.0.1:6379"));
        assert_eq!(client_field("id= addr=x", "id"), None);
    }
}
