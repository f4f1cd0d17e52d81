//! The Python side of the interoperability tests: the venv of `tests/python/setup.sh`,
//! its scripts, the shared interop events and the JSON forms they print.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Stdio};

use openedx_events::EventMetadata;
use serde_json::{json, Value};

/// Runs `bash tests/python/setup.sh` once per process and returns the venv's python.
/// Panics (the test fails) when the venv cannot be made.
pub fn python() -> PathBuf {
    try_python().unwrap_or_else(|e| panic!("{e}: the Python interop venv is required"))
}

/// The venv's python: `OEV_VENV_PYTHON` when set (a Python that already has the
/// packages of tests/python/requirements.txt), else the one `tests/python/setup.sh` makes
/// (run once per process; its `OEV_PYTHON` is the interpreter the venv is made from).
/// Benchmarks use the error to report Rust figures alone.
pub fn try_python() -> Result<PathBuf, String> {
    static PY: std::sync::OnceLock<Result<PathBuf, String>> = std::sync::OnceLock::new();
    PY.get_or_init(|| {
        if let Some(p) = std::env::var_os("OEV_VENV_PYTHON") {
            return Ok(PathBuf::from(p));
        }
        let script = python_dir().join("setup.sh");
        let out = Command::new("bash")
            .arg(&script)
            .stderr(Stdio::inherit())
            .output()
            .map_err(|e| format!("cannot run tests/python/setup.sh: {e}"))?;
        if !out.status.success() {
            return Err(format!("tests/python/setup.sh failed ({})", out.status));
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        let path = PathBuf::from(stdout.lines().last().ok_or("setup.sh printed no python path")?.trim());
        if !path.exists() {
            return Err(format!("setup.sh printed {path:?}, which does not exist"));
        }
        Ok(path)
    })
    .clone()
}

/// The directory of the Python interop scripts.
pub fn python_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/python"))
}

/// The events of `tests/python/interop_events.json` (at least five catalog types).
pub fn interop_events() -> Vec<Value> {
    let path = python_dir().join("interop_events.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let events: Vec<Value> = serde_json::from_str(&text).unwrap();
    let types: std::collections::HashSet<&str> = events.iter().map(|e| e["event_type"].as_str().unwrap()).collect();
    assert!(events.len() >= 5 && types.len() >= 5, "at least five catalog events");
    events
}

/// Metadata in the JSON form of openedx-events' `EventsMetadata.to_json_data()`.
pub fn metadata_json(m: &EventMetadata) -> Value {
    json!({
        "event_type": m.event_type,
        "id": m.id.hyphenated().to_string(),
        "minorversion": m.minorversion,
        "source": &*m.source,
        "sourcehost": &*m.sourcehost,
        "time": m.time_string(),
        "sourcelib": m.sourcelib.parts(),
    })
}

/// The JSON lines a script printed.
pub fn json_lines(stdout: &[u8]) -> Vec<Value> {
    String::from_utf8(stdout.to_vec())
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}
