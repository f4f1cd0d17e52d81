//! A TCP fault proxy for the tests, on `noxious` (a Rust port of Toxiproxy, run in-process
//! on the test's tokio runtime), and fault schedules drawn from a printed seed.
//!
//! [`FaultProxy`] listens on a free port of 127.0.0.1 and forwards to an upstream address
//! through Toxiproxy's toxics (latency, bandwidth, timeout, slicer, limit_data). A toxic is
//! only ever changed together with a cut of every connection ([`FaultProxy::set_phase`]):
//! noxious re-links live connections when their toxics change and drops the bytes that are
//! inside the toxics at that moment, while the connection stays up, which no real network
//! does (TCP loses nothing in the middle of a stream). Cutting at each change keeps every
//! fault one a real network can produce: delays, slow links, and connections that die with
//! whatever they still carried.
//!
//! Two more limits of noxious 1.0.4 that the schedules stay clear of: the `bandwidth`
//! toxic panics (and so kills the connection) on a chunk larger than `rate * 100` bytes,
//! and sends such chunks at 1 KB/s whatever the rate, so rates below 400 KB/s are not used
//! (chunks are at most 32 KiB); slow links are made with `slicer` delays instead.
#![allow(dead_code)]

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use noxious::proxy::{ProxyConfig, ProxyRunner, Runner, Toxics};
use noxious::signal::{Close, Stop, Stopper};
use noxious::socket::TcpListener;
use noxious::toxic::{StreamDirection, Toxic, ToxicEvent, ToxicEventResult, ToxicKind};

/// A small deterministic generator (SplitMix64), so that a seed replays a schedule.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }

    /// True with probability `percent`/100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.next_u64() % 100 < percent
    }
}

/// The seed of this run: `OEV_FAULT_SEED` when set (to replay a failure), else a fresh one.
/// Printed either way, with the variable that replays it.
pub fn seed(test: &str) -> u64 {
    let seed = match std::env::var("OEV_FAULT_SEED") {
        Ok(s) => s.trim().parse().expect("OEV_FAULT_SEED must be an unsigned integer"),
        Err(_) => {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64;
            Rng::new(t ^ u64::from(std::process::id())).next_u64()
        }
    };
    eprintln!("{test}: fault seed {seed} (replay with OEV_FAULT_SEED={seed})");
    seed
}

/// One stretch of a schedule: the toxics every connection gets, or the proxy down.
#[derive(Debug, Clone)]
pub enum Phase {
    /// Connections pass through with these toxics (none: a clean link).
    Toxics(Vec<Toxic>),
    /// Nothing listens: connection attempts are refused.
    Down,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Phase::Down => write!(f, "down"),
            Phase::Toxics(t) if t.is_empty() => write!(f, "clean"),
            Phase::Toxics(t) => {
                let parts: Vec<String> = t
                    .iter()
                    .map(|t| {
                        let dir = match t.direction {
                            StreamDirection::Upstream => "up",
                            StreamDirection::Downstream => "down",
                        };
                        match t.kind {
                            ToxicKind::Latency { latency, jitter } => format!("latency {latency}±{jitter}ms {dir}"),
                            ToxicKind::Timeout { timeout } => format!("hold {timeout}ms then cut {dir}"),
                            ToxicKind::Bandwidth { rate } => format!("bandwidth {rate}KB/s {dir}"),
                            ToxicKind::Slicer {
                                average_size, delay, ..
                            } => format!("slicer {average_size}B/{delay}µs {dir}"),
                            ToxicKind::LimitData { bytes } => format!("cut after {bytes}B {dir}"),
                            ref k => format!("{k:?} {dir}"),
                        }
                    })
                    .collect();
                write!(f, "{}", parts.join(", "))
            }
        }
    }
}

/// A toxic that is always active, named after its kind and direction.
pub fn toxic(kind: ToxicKind, direction: StreamDirection) -> Toxic {
    let name = format!("{}_{}", kind.get_name(), direction);
    Toxic {
        kind,
        name,
        toxicity: 1.0,
        direction,
    }
}

/// A random phase, with its length: a clean link, the proxy down, delays, a slow link, held
/// replies (a timeout toxic: nothing passes, then the connection is cut), or a cut after at
/// most `max_bytes_before_cut` bytes in one direction (mid-batch).
pub fn random_phase(rng: &mut Rng, max_bytes_before_cut: u64) -> (Phase, Duration) {
    use StreamDirection::{Downstream, Upstream};
    let dir = |rng: &mut Rng| if rng.chance(50) { Upstream } else { Downstream };
    let phase = match rng.range(0, 9) {
        0 => Phase::Toxics(Vec::new()),
        1 => Phase::Down,
        2 => Phase::Toxics(vec![toxic(
            ToxicKind::Latency {
                latency: rng.range(5, 150),
                jitter: rng.range(0, 5),
            },
            dir(rng),
        )]),
        3 => Phase::Toxics(vec![toxic(
            ToxicKind::Bandwidth {
                rate: rng.range(400, 2000),
            },
            Upstream,
        )]),
        4 => Phase::Toxics(vec![toxic(
            ToxicKind::Slicer {
                average_size: rng.range(16, 512),
                size_variation: 8,
                delay: rng.range(0, 1000),
            },
            dir(rng),
        )]),
        5 => Phase::Toxics(vec![toxic(
            ToxicKind::Timeout {
                timeout: rng.range(100, 1500),
            },
            dir(rng),
        )]),
        // Cuts mid-batch: each connection dies after some bytes in one direction.
        6 | 7 => Phase::Toxics(vec![toxic(
            ToxicKind::LimitData {
                bytes: rng.range(1, max_bytes_before_cut),
            },
            dir(rng),
        )]),
        _ => {
            // Several at once: a cut after some bytes behind a slow, delayed link.
            Phase::Toxics(vec![
                toxic(
                    ToxicKind::Latency {
                        latency: rng.range(5, 60),
                        jitter: 0,
                    },
                    Downstream,
                ),
                toxic(
                    ToxicKind::Slicer {
                        average_size: rng.range(64, 1024),
                        size_variation: 16,
                        delay: rng.range(0, 500),
                    },
                    Upstream,
                ),
                toxic(
                    ToxicKind::LimitData {
                        bytes: rng.range(1, max_bytes_before_cut),
                    },
                    dir(rng),
                ),
            ])
        }
    };
    let length = match phase {
        Phase::Down => Duration::from_millis(rng.range(20, 400)),
        _ => Duration::from_millis(rng.range(100, 700)),
    };
    (phase, length)
}

struct Running {
    stopper: Stopper,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    closed: Close,
    /// Kept so that noxious' toxic-event listener keeps waiting (it is never sent to:
    /// toxics change only with a cut, see the module documentation).
    _events: bmrng::RequestSender<ToxicEvent, ToxicEventResult>,
}

/// A noxious proxy on a fixed local port, whose toxics change only with a cut.
pub struct FaultProxy {
    listen: SocketAddr,
    upstream: String,
    running: Option<Running>,
    /// Phases applied so far, for the failure message.
    pub log: Vec<String>,
}

impl FaultProxy {
    /// A clean proxy to `upstream` (`host:port`) on a free local port.
    pub async fn start(upstream: &str) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut me = Self {
            listen: SocketAddr::from(([127, 0, 0, 1], port)),
            upstream: upstream.to_owned(),
            running: None,
            log: Vec::new(),
        };
        me.set_phase(&Phase::Toxics(Vec::new())).await;
        me
    }

    /// `host:port` to connect to instead of the upstream.
    pub fn addr(&self) -> SocketAddr {
        self.listen
    }

    /// Cuts every connection (each dies with what it still carried), then applies `phase`
    /// to the connections made from now on.
    pub async fn set_phase(&mut self, phase: &Phase) {
        self.stop().await;
        self.log.push(phase.to_string());
        let Phase::Toxics(toxics) = phase else { return };
        let mut t = Toxics::empty();
        for x in toxics {
            match x.direction {
                StreamDirection::Upstream => t.upstream.push(x.clone()),
                StreamDirection::Downstream => t.downstream.push(x.clone()),
            }
        }
        let config = ProxyConfig {
            name: "fault".to_owned(),
            listen: self.listen.to_string(),
            upstream: self.upstream.clone(),
            enabled: true,
            rand_seed: Some(1),
        };
        // The port was just released by the previous listener: binding again may need a moment.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let (listener, info) = loop {
            match ProxyRunner::initialize_proxy::<TcpListener>(config.clone(), t.clone()).await {
                Ok(x) => break x,
                Err(e) => {
                    assert!(
                        std::time::Instant::now() < deadline,
                        "cannot listen on {} again: {e}",
                        self.listen
                    );
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        };
        let (stop, stopper) = Stop::new();
        let (closed, closer) = Close::new();
        let (events, receiver) = bmrng::channel::<ToxicEvent, ToxicEventResult>(1);
        let task = tokio::spawn(ProxyRunner::run_proxy(listener, info, receiver, stop, closer));
        self.running = Some(Running {
            stopper,
            task,
            closed,
            _events: events,
        });
    }

    /// Cuts every connection and stops listening.
    pub async fn stop(&mut self) {
        if let Some(r) = self.running.take() {
            r.stopper.stop();
            // The listener is dropped before the close signal; each link is torn down by
            // the same stop signal.
            let _ = tokio::time::timeout(Duration::from_secs(10), r.closed.recv()).await;
            let _ = tokio::time::timeout(Duration::from_secs(10), r.task).await;
        }
    }

    /// Runs random phases (from `rng`) until `done` is set, then leaves a clean link.
    pub async fn run_schedule(
        &mut self,
        rng: &mut Rng,
        max_bytes_before_cut: u64,
        done: &tokio::sync::watch::Receiver<bool>,
    ) {
        self.run_schedule_with_outage(rng, max_bytes_before_cut, None, done)
            .await;
    }

    /// [`run_schedule`](Self::run_schedule), with one long outage: once `outage`'s
    /// trigger is set, the current phase ends and the proxy is down for its length (e.g.
    /// longer than a consumer group's session timeout).
    pub async fn run_schedule_with_outage(
        &mut self,
        rng: &mut Rng,
        max_bytes_before_cut: u64,
        outage: Option<(tokio::sync::watch::Receiver<bool>, Duration)>,
        done: &tokio::sync::watch::Receiver<bool>,
    ) {
        let mut done = done.clone();
        let mut outage = outage;
        while !*done.borrow() {
            let (phase, length) = match outage.take_if(|(trigger, _)| *trigger.borrow()) {
                Some((_, length)) => {
                    self.log
                        .push(format!("(the long outage: down for {} ms)", length.as_millis()));
                    (Phase::Down, length)
                }
                None => random_phase(rng, max_bytes_before_cut),
            };
            self.set_phase(&phase).await;
            let triggered = async {
                match &mut outage {
                    // A trigger whose sender is gone never fires.
                    Some((trigger, _)) => {
                        if trigger.wait_for(|t| *t).await.is_err() {
                            std::future::pending::<()>().await;
                        }
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(length) => {}
                _ = done.wait_for(|d| *d) => {}
                _ = triggered => {}
            }
        }
        self.set_phase(&Phase::Toxics(Vec::new())).await;
    }

    /// The phases so far, one line each.
    pub fn history(&self) -> String {
        self.log.join("\n  ")
    }
}
