//! Cost per event of `send_event` → generic handler → key extraction → in-memory
//! producer, side by side with the Python stack's same path
//! (`../shared/bench/py_baseline.py N null`: openedx-events' generic handler with a
//! do-nothing producer), measured in one run.
//!
//! Run: `cargo bench -p openedx-events --bench send_event`. Set `OEV_VENV_PYTHON` to a
//! Python with openedx-events installed, or let it run `tests/python/setup.sh`.

#[path = "../tests/support/python.rs"]
mod python_support;

use std::hint::black_box;
use std::process::Command;
use std::time::Instant;

use openedx_events::catalog::content_authoring::{XBlockData, XBlockPublished};
use openedx_events::{producer_config, EventBus, OpenEdxEvent, Settings};

fn event() -> XBlockPublished {
    XBlockPublished {
        xblock_info: XBlockData {
            usage_key: "block-v1:edX+DemoX+Demo_Course+type@video+block@0b9e39477cf34507a7a48f74be381fdd"
                .parse()
                .unwrap(),
            block_type: "video".into(),
            version: None,
        },
    }
}

/// Median nanoseconds per event over `rounds` rounds of `n` sends.
fn measure(n: u32, rounds: usize) -> f64 {
    let data = event();
    let mut samples = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let start = Instant::now();
        for _ in 0..n {
            black_box(XBlockPublished::signal().send_event(black_box(data.clone())));
        }
        samples.push(start.elapsed().as_nanos() as f64 / f64::from(n));
    }
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

/// The venv's python, or `None` (with the reason on stderr): Rust figures only then.
fn python() -> Option<std::path::PathBuf> {
    python_support::try_python()
        .map_err(|e| eprintln!("no Python side: {e}"))
        .ok()
}

fn python_us_per_event(python: &std::path::Path, n: u32) -> Option<f64> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/bench/py_baseline.py");
    let out = Command::new(python)
        .arg(script)
        .arg(n.to_string())
        .arg("null")
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .find_map(|w| w.strip_prefix("us_per_event="))
        .and_then(|v| v.parse().ok())
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("send_event: bench");
        return;
    }
    let bus = EventBus::builder()
        .producer_config(producer_config! {
            "org.openedx.content_authoring.xblock.published.v1" => [
                { topic: "content-authoring-xblock-lifecycle", event_key_field: "xblock_info.usage_key", enabled: true },
            ],
        })
        .settings(Settings::new().with("EVENT_BUS_TOPIC_PREFIX", "bench"))
        .start()
        .expect("bus starts");
    measure(50_000, 1); // warm-up
    let rust_ns = measure(200_000, 9);
    let memory = bus.memory().unwrap();
    assert_eq!(
        memory.len("bench-content-authoring-xblock-lifecycle"),
        memory.capacity()
    );

    println!("send_event -> handler -> key -> in-memory producer (XBLOCK_PUBLISHED, 1 topic)");
    println!("  rust   : {rust_ns:>10.0} ns/event");
    match python().and_then(|p| python_us_per_event(&p, 20_000)) {
        Some(us) => {
            let py_ns = us * 1000.0;
            println!("  python : {py_ns:>10.0} ns/event  (py_baseline.py null: generic handler, no-op producer)");
            println!("  ratio  : {:>10.1}x faster", py_ns / rust_ns);
            println!(
                "  target : <= 1000 ns/event and >= 50x: {}",
                if rust_ns <= 1000.0 && py_ns / rust_ns >= 50.0 {
                    "met"
                } else {
                    "NOT met"
                }
            );
        }
        None => println!("  python : unavailable (set OEV_VENV_PYTHON or fix tests/python/setup.sh)"),
    }
}
