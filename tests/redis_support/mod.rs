//! Helpers shared by the Redis tests and benchmark: the Redis under test, unique stream
//! names that are deleted at the end, private `redis-server` processes (to restart them,
//! or to run them with a password or TLS), and reading streams back.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Logs of the crate to the test output (`RUST_LOG` filters; default `info`).
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_test_writer()
        .try_init();
}

/// The shared Redis under test (`REDIS_URL`, default `redis://127.0.0.1:6379/`).
pub fn url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".to_owned())
}

/// A name nobody else uses: `oev-test-{what}-{uuid}`.
pub fn unique(what: &str) -> String {
    format!("oev-test-{what}-{}", uuid::Uuid::new_v4().simple())
}

/// A blocking connection to `url`.
pub fn connect(url: &str) -> redis::Connection {
    redis::Client::open(url)
        .and_then(|c| c.get_connection())
        .unwrap_or_else(|e| panic!("cannot connect to the Redis under test at {url}: {e}"))
}

/// Keys deleted when dropped (also when the test fails).
pub struct Cleanup {
    url: String,
    keys: Vec<String>,
}

impl Cleanup {
    /// Deletes `keys` from `url` at the end.
    pub fn new(url: &str, keys: &[&str]) -> Self {
        Self {
            url: url.to_owned(),
            keys: keys.iter().map(|k| (*k).to_owned()).collect(),
        }
    }

    /// One more key to delete.
    pub fn add(&mut self, key: &str) {
        self.keys.push(key.to_owned());
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Ok(mut c) = redis::Client::open(self.url.as_str()).and_then(|c| c.get_connection()) {
            let _: Result<(), _> = redis::cmd("DEL").arg(&self.keys).query(&mut c);
        }
    }
}

/// One stream entry: id and fields in order.
#[derive(Debug, Clone)]
pub struct Entry {
    pub id: String,
    pub fields: Vec<(String, Vec<u8>)>,
}

impl Entry {
    /// A field's value.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.fields.iter().find(|(k, _)| k == name).map(|(_, v)| &v[..])
    }

    /// A field's value as text.
    pub fn text(&self, name: &str) -> String {
        String::from_utf8(self.get(name).unwrap_or_else(|| panic!("no field {name}")).to_vec()).unwrap()
    }

    /// The field names in order.
    pub fn names(&self) -> Vec<&str> {
        self.fields.iter().map(|(k, _)| k.as_str()).collect()
    }
}

/// An `XRANGE` reply.
type Page = Vec<(String, Vec<(String, Vec<u8>)>)>;

/// Every entry of a stream, oldest first.
pub fn read_stream(conn: &mut redis::Connection, key: &str) -> Vec<Entry> {
    let mut out = Vec::new();
    let mut start = "-".to_owned();
    loop {
        let page: Page = redis::cmd("XRANGE")
            .arg(key)
            .arg(&start)
            .arg("+")
            .arg("COUNT")
            .arg(10_000)
            .query(conn)
            .unwrap();
        let n = page.len();
        if let Some((last, _)) = page.last() {
            start = format!("({last}");
        }
        out.extend(page.into_iter().map(|(id, fields)| Entry { id, fields }));
        if n < 10_000 {
            return out;
        }
    }
}

/// `XLEN`.
pub fn xlen(conn: &mut redis::Connection, key: &str) -> usize {
    redis::cmd("XLEN").arg(key).query(conn).unwrap()
}

/// Number of pending messages of a group.
pub fn pending_count(conn: &mut redis::Connection, key: &str, group: &str) -> u64 {
    let v: redis::Value = redis::cmd("XPENDING").arg(key).arg(group).query(conn).unwrap();
    match v {
        redis::Value::Array(items) => match items.first() {
            Some(redis::Value::Int(n)) => *n as u64,
            _ => panic!("unexpected XPENDING reply"),
        },
        _ => panic!("unexpected XPENDING reply"),
    }
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A `redis-server` of the test's own, on a free port, stopped when dropped.
pub struct PrivateRedis {
    pub port: u16,
    pub tls_port: Option<u16>,
    pub dir: PathBuf,
    args: Vec<String>,
    child: Option<Child>,
}

impl PrivateRedis {
    /// Starts `redis-server` with extra arguments (`--name value` pairs).
    pub fn start(extra: &[&str]) -> Self {
        Self::start_on(free_port(), None, extra)
    }

    /// Starts a server that also listens with TLS (self-signed certificate, no client certs).
    pub fn start_tls(extra: &[&str]) -> Self {
        let port = free_port();
        let tls = free_port();
        Self::start_on(port, Some(tls), extra)
    }

    fn start_on(port: u16, tls_port: Option<u16>, extra: &[&str]) -> Self {
        let dir = std::env::temp_dir().join(format!("oev-redis-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut args: Vec<String> = vec![
            "--port".into(),
            port.to_string(),
            "--bind".into(),
            "127.0.0.1".into(),
            "--dir".into(),
            dir.display().to_string(),
            "--save".into(),
            "".into(),
        ];
        if let Some(tls) = tls_port {
            // A CA, and a server certificate for 127.0.0.1 signed by it.
            std::fs::write(dir.join("ext.cnf"), "subjectAltName=IP:127.0.0.1,DNS:localhost\n").unwrap();
            let openssl = |args: &[&str]| {
                let status = Command::new("openssl")
                    .args(args)
                    .current_dir(&dir)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .expect("openssl is needed for the TLS test");
                assert!(status.success(), "openssl {args:?} failed");
            };
            openssl(&[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "1",
                "-subj",
                "/CN=oev-test-ca",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
            ]);
            openssl(&[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                "/CN=localhost",
                "-keyout",
                "key.pem",
                "-out",
                "server.csr",
            ]);
            openssl(&[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "1",
                "-extfile",
                "ext.cnf",
                "-out",
                "cert.pem",
            ]);
            args.extend([
                "--tls-port".into(),
                tls.to_string(),
                "--tls-cert-file".into(),
                dir.join("cert.pem").display().to_string(),
                "--tls-key-file".into(),
                dir.join("key.pem").display().to_string(),
                "--tls-auth-clients".into(),
                "no".into(),
            ]);
        }
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        let mut me = Self {
            port,
            tls_port,
            dir,
            args,
            child: None,
        };
        me.spawn();
        me
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "private redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The certificate of the CA that signed the TLS port's certificate (PEM), to trust it.
    pub fn cert_file(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// `redis://127.0.0.1:port/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Stops the server (SIGTERM, so it saves its append-only file if it has one) and waits.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }

    /// Stops, then starts again on the same port and directory.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Starts again after [`Self::stop`].
    pub fn start_again(&mut self) {
        self.spawn();
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[path = "../support/python.rs"]
mod python_support;
#[allow(unused_imports)] // each test binary uses a part
pub use python_support::{interop_events, json_lines, metadata_json, python, python_dir, try_python};

/// `INFO section` as `name → value` pairs (`cmdstat_xadd` → `calls=3,usec=...`).
pub fn info(conn: &mut redis::Connection, section: &str) -> std::collections::HashMap<String, String> {
    let text: String = redis::cmd("INFO").arg(section).query(conn).unwrap();
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

/// Calls of a command that Redis counted, refused ones included (`INFO commandstats`).
pub fn command_attempts(conn: &mut redis::Connection, command: &str) -> u64 {
    let stats = info(conn, "commandstats");
    let Some(line) = stats.get(&format!("cmdstat_{command}")) else {
        return 0;
    };
    line.split(',')
        .filter_map(|kv| kv.split_once('='))
        .filter(|(k, _)| matches!(*k, "calls" | "rejected_calls"))
        .map(|(_, v)| v.parse::<u64>().unwrap())
        .sum()
}

/// Blocks the server for `seconds` (`DEBUG SLEEP`, the server needs
/// `--enable-debug-command yes`) from a thread of its own; join the handle to wait.
pub fn debug_sleep(url: &str, seconds: f64) -> std::thread::JoinHandle<()> {
    let url = url.to_owned();
    let mut conn = connect(&url);
    std::thread::spawn(move || {
        let _: () = redis::cmd("DEBUG").arg("SLEEP").arg(seconds).query(&mut conn).unwrap();
    })
}
