//! What the CLI tests share: the binary under test, run with a clean environment.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// The `openedx-events` binary.
pub fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_openedx-events"))
}

/// The tool, with no inherited environment (so no `EVENT_BUS_*` of the caller leaks in).
pub fn cli() -> assert_cmd::Command {
    command(bin())
}

/// A command for a binary, with a clean environment.
pub fn command(path: &Path) -> assert_cmd::Command {
    let mut cmd = assert_cmd::Command::new(path);
    cmd.env_clear();
    cmd.timeout(std::time::Duration::from_secs(120));
    cmd
}

/// The example binary `custom_events` (a service's own tool), built if missing.
pub fn custom_events_bin() -> PathBuf {
    let dir = bin().parent().expect("target dir");
    let path = dir
        .join("examples")
        .join(format!("custom_events{}", std::env::consts::EXE_SUFFIX));
    if !path.exists() {
        let status = std::process::Command::new(env!("CARGO"))
            .args(["build", "-j2", "-p", "openedx-events-cli", "--example", "custom_events"])
            .status()
            .expect("run cargo");
        assert!(status.success(), "cargo build --example custom_events failed");
    }
    path
}

/// The shared test data directory (`../shared` beside the repository).
pub fn shared(path: &str) -> PathBuf {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared")).join(path)
}

/// stdout of an assertion, as text.
pub fn stdout(a: &assert_cmd::assert::Assert) -> String {
    String::from_utf8_lossy(&a.get_output().stdout).into_owned()
}

/// stderr of an assertion, as text.
pub fn stderr(a: &assert_cmd::assert::Assert) -> String {
    String::from_utf8_lossy(&a.get_output().stderr).into_owned()
}

/// A name nobody else uses.
pub fn unique(what: &str) -> String {
    format!("oev-cli-{what}-{}", uuid::Uuid::new_v4().simple())
}

/// The Open edX event most tests use, and one valid datum of it.
pub const ENROLLMENT: &str = "org.openedx.learning.course.enrollment.created.v1";

/// A valid enrollment datum.
pub fn enrollment_data() -> serde_json::Value {
    serde_json::json!({"enrollment": {
        "user": {"id": 42, "is_active": true,
                 "pii": {"username": "ada", "email": "ada@example.com", "name": "Ada Lovelace"}},
        "course": {"course_key": "course-v1:edX+DemoX+2026", "display_name": "Demo",
                   "start": null, "end": null},
        "mode": "audit", "is_active": true,
        "creation_date": "2026-11-27T13:20:05.364687+00:00", "created_by": null}})
}
