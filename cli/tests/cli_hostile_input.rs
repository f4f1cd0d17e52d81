//! Hostile input on every input path of the tool (`check-config` files, the
//! environment, `produce --data`, `avro encode/decode`, `consume --from-time`): bytes
//! that are not UTF-8, missing and doubled fields, huge values, wrong types. Each one is
//! a clear error naming where it is, with exit code 2; never a panic (exit 101).

mod common;

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use common::{cli, stderr, ENROLLMENT};

const NOT_UTF8: &[u8] = b"caf\xe9";

fn config_file(dir: &std::path::Path) -> std::path::PathBuf {
    let p = dir.join("producer.json");
    std::fs::write(
        &p,
        r#"{"org.openedx.learning.course.enrollment.created.v1":
             {"learning-course-enrollment": {"event_key_field": "enrollment.course.course_key", "enabled": true}}}"#,
    )
    .unwrap();
    p
}

#[test]
fn an_unrelated_environment_variable_that_is_not_utf8_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let file = config_file(dir.path());
    let a = cli()
        .arg("check-config")
        .arg(&file)
        .env("X", OsStr::from_bytes(NOT_UTF8))
        .assert();
    let code = a.get_output().status.code();
    assert_eq!(code, Some(0), "{}", stderr(&a));
}

#[test]
fn an_event_bus_setting_that_is_not_utf8_is_a_bad_input_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = config_file(dir.path());
    let a = cli()
        .arg("check-config")
        .arg(&file)
        .env("EVENT_BUS_TOPIC_PREFIX", OsStr::from_bytes(NOT_UTF8))
        .assert();
    let err = stderr(&a);
    assert_eq!(a.get_output().status.code(), Some(2), "{err}");
    assert!(err.contains("EVENT_BUS_TOPIC_PREFIX") && err.contains("UTF-8"), "{err}");
    let a = cli()
        .args(["produce", "--event-type", ENROLLMENT, "--topic", "t", "--data"])
        .arg(common::enrollment_data().to_string())
        .env("EVENT_BUS_PRODUCER", OsStr::from_bytes(NOT_UTF8))
        .assert();
    let err = stderr(&a);
    assert_eq!(a.get_output().status.code(), Some(2), "{err}");
    assert!(err.contains("EVENT_BUS_PRODUCER"), "{err}");
}

#[test]
fn a_time_python_cannot_read_is_a_bad_input_naming_the_field() {
    for (time, why) in [
        ("2016-12-31T23:59:60+00:00", "leap second"),
        ("0000-01-01T00:00:00+00:00", "9999"),
        ("9999-12-31T23:00:00-05:00", "9999"),
    ] {
        let mut data = common::enrollment_data();
        data["enrollment"]["creation_date"] = serde_json::json!(time);
        for sub in [&["avro", "encode"][..], &["produce", "--topic", "t"]] {
            let a = cli()
                .args(sub)
                .args(["--event-type", ENROLLMENT, "--data"])
                .arg(data.to_string())
                .assert();
            let err = stderr(&a);
            assert_eq!(a.get_output().status.code(), Some(2), "{sub:?} {time}: {err}");
            assert!(
                err.contains("enrollment.creation_date") && err.contains(why),
                "{sub:?} {time}: {err}"
            );
        }
    }
}
