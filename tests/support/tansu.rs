//! A private tansu broker (a Kafka-protocol broker from crates.io) for a test: a child
//! process on a free port of 127.0.0.1 that advertises an address of the test's choosing,
//! such as a fault proxy in front of it, so that every connection a Kafka client makes
//! after its first metadata answer goes through that proxy too.
//!
//! The binary is `$TANSU` when set, else `tansu` on the `PATH` (or in `~/.cargo/bin`);
//! `.ci/run` installs it when it is missing (`cargo install tansu --locked --features
//! dynostore,libsql`). A test that needs it fails, naming that command, when it is not
//! there: it does not pass without having run.
#![allow(dead_code)]

use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running tansu broker, killed when dropped.
pub struct Tansu {
    child: Child,
    listen: SocketAddr,
    advertised: SocketAddr,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

/// A free port of 127.0.0.1 (free when asked; the caller binds it soon after).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The tansu binary: `$TANSU`, else `tansu` on the `PATH`, else `~/.cargo/bin/tansu`.
pub fn binary() -> PathBuf {
    if let Some(p) = std::env::var_os("TANSU").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join("tansu");
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_default();
    let candidate = home.join(".cargo/bin/tansu");
    assert!(
        candidate.is_file(),
        "this test needs the tansu broker: `cargo install tansu --locked --features dynostore,libsql` \
         (or set TANSU to its path); .ci/run installs it when missing"
    );
    candidate
}

impl Tansu {
    /// Starts tansu with in-memory storage on `listen_port` (0: a free one), advertising
    /// `advertised` (`None`: its own listener), and waits until it accepts connections.
    pub fn start(listen_port: u16, advertised: Option<SocketAddr>) -> Self {
        let port = if listen_port == 0 { free_port() } else { listen_port };
        let listen = SocketAddr::from(([127, 0, 0, 1], port));
        let advertised = advertised.unwrap_or(listen);
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("tansu.log");
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(binary())
            .arg("broker")
            .arg("--listener-url")
            .arg(format!("tcp://{listen}"))
            .arg("--advertised-listener-url")
            .arg(format!("tcp://{advertised}"))
            .arg("--storage-engine")
            .arg("memory://tansu/")
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("cannot start tansu");
        let mut me = Self {
            child,
            listen,
            advertised,
            log,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect_timeout(&listen, Duration::from_millis(200)).is_err() {
            if let Ok(Some(status)) = me.child.try_wait() {
                panic!("tansu exited at start ({status}):\n{}", me.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "tansu does not listen on {listen} after 30 s:\n{}",
                me.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        me
    }

    /// Where it listens.
    pub fn listen(&self) -> SocketAddr {
        self.listen
    }

    /// What it tells clients to connect to.
    pub fn advertised(&self) -> SocketAddr {
        self.advertised
    }

    /// What it has logged so far (for failure messages), at most the last 8 KiB.
    pub fn log_text(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let start = text.len().saturating_sub(8192);
        let start = (start..text.len()).find(|&i| text.is_char_boundary(i)).unwrap_or(0);
        text[start..].to_owned()
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // `OEV_KEEP_TANSU_LOG=<dir>` keeps the whole log there, to study a failure.
        if let Some(dir) = std::env::var_os("OEV_KEEP_TANSU_LOG") {
            let to = std::path::Path::new(&dir).join(format!("tansu-{}.log", self.listen.port()));
            match std::fs::copy(&self.log, &to) {
                Ok(_) => eprintln!("tansu's log kept in {}", to.display()),
                Err(e) => eprintln!("cannot keep tansu's log in {}: {e}", to.display()),
            }
        }
    }
}
