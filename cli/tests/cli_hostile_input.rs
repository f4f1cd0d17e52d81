//! Hostile input on every input path of the tool (`check-config` files, the
//! environment, `produce --data`, `avro encode/decode`, `consume --from-time`): bytes
//! that are not UTF-8, missing and doubled fields, huge values, wrong types. Each one is
//! a clear error naming where it is, with exit code 2; never a panic (exit 101).

mod common;
#[path = "../../tests/redis_support/mod.rs"]
mod redis_support;

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

/// Runs the tool and returns (exit code, stderr), failing on a panic (exit 101) or a
/// signal (no code: a stack overflow aborts).
fn run(cmd: &mut assert_cmd::Command) -> (i32, String) {
    let a = cmd.assert();
    let err = stderr(&a);
    let code = a.get_output().status.code();
    assert!(
        code.is_some() && code != Some(101) && !err.contains("panicked"),
        "code {code:?}: {err}"
    );
    (code.unwrap(), err)
}

/// `avro encode --data TEXT` and `produce --data TEXT` (to the in-memory bus).
fn data_commands(text: &str) -> Vec<assert_cmd::Command> {
    let mut encode = cli();
    encode.args(["avro", "encode", "--event-type", ENROLLMENT, "--data", text]);
    let mut produce = cli();
    produce.args(["produce", "--event-type", ENROLLMENT, "--topic", "t", "--data", text]);
    vec![encode, produce]
}

fn assert_bad_input(text: &str, wanted: &[&str]) {
    for mut cmd in data_commands(text) {
        let (code, err) = run(&mut cmd);
        assert_eq!(code, 2, "{}: {err}", text.chars().take(200).collect::<String>());
        for w in wanted {
            assert!(err.contains(w), "{w:?} not in {err}");
        }
    }
}

#[test]
fn json_data_with_a_doubled_field_is_refused_naming_it() {
    let good = common::enrollment_data().to_string();
    for mut cmd in data_commands(&good) {
        assert_eq!(run(&mut cmd).0, 0);
    }
    let doubled = good.replacen(r#""mode":"audit""#, r#""mode":"audit","mode":"honor""#, 1);
    assert_ne!(doubled, good);
    assert_bad_input(&doubled, &["enrollment.mode", "twice"]);
    let top = format!(r#"{{"enrollment": null, {}"#, &good[1..]);
    assert_bad_input(&top, &["enrollment", "twice"]);
}

#[test]
fn json_data_that_is_not_utf8_is_refused_naming_where_it_came_from() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("data.json");
    let good = common::enrollment_data().to_string();
    let mut bytes = good.replacen("Ada Lovelace", "Ada", 1).into_bytes();
    let at = bytes.windows(3).position(|w| w == b"Ada").unwrap();
    bytes[at + 1] = 0xe9;
    std::fs::write(&file, &bytes).unwrap();
    assert_bad_input(
        &format!("@{}", file.display()),
        &[&file.display().to_string(), "not valid JSON"],
    );
    // A lone surrogate escape is no Unicode text either.
    let surrogate = good.replacen("Ada Lovelace", r"Ada \ud800", 1);
    assert_bad_input(&surrogate, &["--data is not valid JSON"]);
    // Nor is a command-line argument that is not UTF-8.
    let (code, err) = run(cli()
        .args(["avro", "encode", "--event-type", ENROLLMENT, "--data"])
        .arg(OsStr::from_bytes(NOT_UTF8)));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("UTF-8"), "{err}");
}

#[test]
fn huge_json_values_are_refused_naming_the_path() {
    let good = common::enrollment_data().to_string();
    for (id, wanted) in [
        ("1e400", "--data is not valid JSON"),
        ("18446744073709551616", "enrollment.user.id"),
        ("9223372036854775808", "enrollment.user.id"),
        ("-9223372036854775809", "enrollment.user.id"),
    ] {
        let text = good.replacen(r#""id":42"#, &format!(r#""id":{id}"#), 1);
        assert_ne!(text, good);
        assert_bad_input(&text, &[wanted]);
    }
    // Nested deeper than any event: refused, not a stack overflow.
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("deep.json");
    std::fs::write(&file, &deep).unwrap();
    assert_bad_input(&format!("@{}", file.display()), &["not valid JSON"]);
    let deep_object = format!("{}1{}", r#"{"enrollment":"#.repeat(100_000), "}".repeat(100_000));
    std::fs::write(&file, &deep_object).unwrap();
    assert_bad_input(&format!("@{}", file.display()), &["not valid JSON"]);
}

#[test]
fn json_data_of_the_wrong_shape_is_refused_naming_the_path() {
    for (text, wanted) in [
        ("[]", "invalid type: sequence, expected record"),
        ("null", "invalid type"),
        ("\"enrollment\"", "invalid type"),
        (r#"{"enrollment": []}"#, "enrollment"),
        (r#"{"enrollment": {"user": 7}}"#, "enrollment"),
        ("", "not valid JSON"),
        ("{} {}", "not valid JSON"),
    ] {
        assert_bad_input(text, &[wanted]);
    }
}

#[test]
fn hostile_avro_input_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("data.bin");
    let text_file = dir.path().join("data.hex");
    std::fs::write(&text_file, NOT_UTF8).unwrap();
    std::fs::write(&bin, [0xff; 64]).unwrap();
    let decode = |args: &[&OsStr]| {
        let mut c = cli();
        c.args(["avro", "decode", "--event-type", ENROLLMENT]).args(args);
        run(&mut c)
    };
    let at = |p: &std::path::Path| std::ffi::OsString::from(format!("@{}", p.display()));
    let cases: Vec<(Vec<std::ffi::OsString>, &str)> = vec![
        (vec![at(&text_file)], "not hex text"),
        (vec![at(&bin), "--binary".into()], "cannot decode"),
        (vec!["abc".into()], "not valid hex"),
        (vec!["zz".into()], "not valid hex"),
        (vec!["".into()], "cannot decode"),
        // A string said to hold 2^62 bytes; an array of 2^60 items.
        (vec!["8080808080808080808001".into()], "cannot decode"),
        (vec!["02808080808080808080800102".into()], "cannot decode"),
        (vec!["00".into(), "--framed".into()], "--framed"),
        (vec![OsStr::from_bytes(NOT_UTF8).into()], "UTF-8"),
    ];
    for (args, wanted) in cases {
        let args: Vec<&OsStr> = args.iter().map(|a| a.as_os_str()).collect();
        let (code, err) = decode(&args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains(wanted), "{args:?}: {wanted:?} not in {err}");
    }
    // A datum whose string is not UTF-8: the first string is the user's username.
    let good = {
        let mut c = cli();
        c.args(["avro", "encode", "--event-type", ENROLLMENT, "--data"])
            .arg(common::enrollment_data().to_string());
        let a = c.assert().success();
        common::stdout(&a).trim().to_owned()
    };
    let ada = "616461"; // "ada"
    let bad = good.replacen(ada, "61e961", 1);
    assert_ne!(bad, good);
    let (code, err) = decode(&[OsStr::new(&bad)]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("cannot decode") && err.contains("enrollment.user.pii.username"),
        "{err}"
    );
}

#[test]
fn hostile_config_files_are_reported_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, bytes: &[u8]| {
        let p = dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    };
    let ok = r#"{"org.openedx.learning.course.enrollment.created.v1": {"t": {"event_key_field": "enrollment.course.course_key", "enabled": true}}}"#;
    // Not UTF-8: the file cannot be read as text.
    let p = write("latin1.json", &[ok.as_bytes(), b" \xe9"].concat());
    let (code, err) = run(cli().arg("check-config").arg(&p));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("latin1.json") && err.contains("UTF-8"), "{err}");
    // A topic or an event type given twice: the second would silently replace the first.
    let doubled_topic = ok.replacen(
        r#""t": {"#,
        r#""t": {"event_key_field": "enrollment.user.id", "enabled": false}, "t": {"#,
        1,
    );
    let doubled_event = format!("{}, {}", &ok[..ok.len() - 1], &ok[1..]);
    for (name, text, wanted) in [
        (
            "doubled_topic.json",
            doubled_topic.as_str(),
            r#"`"org.openedx.learning.course.enrollment.created.v1".t` is given twice"#,
        ),
        (
            "doubled_event.json",
            doubled_event.as_str(),
            r#"`"org.openedx.learning.course.enrollment.created.v1"` is given twice"#,
        ),
        (
            "doubled_field.json",
            &ok.replacen(r#""enabled": true"#, r#""enabled": true, "enabled": false"#, 1),
            r#"`"org.openedx.learning.course.enrollment.created.v1".t.enabled` is given twice"#,
        ),
    ] {
        let p = write(name, text.as_bytes());
        let (code, err) = run(cli().arg("check-config").arg(&p));
        assert_ne!(code, 0, "{name} accepted: {err}");
        let a = cli().arg("check-config").arg(&p).assert();
        let all = format!("{}{}", common::stdout(&a), stderr(&a));
        assert!(all.contains("twice") && all.contains(wanted), "{name}: {all}");
    }
    // Wrong types, deep nesting, huge numbers: problems, never a panic.
    for (name, text) in [
        ("array.json", "[1, 2]".to_owned()),
        ("deep.json", format!("{}{}", "[".repeat(100_000), "]".repeat(100_000))),
        ("huge.json", ok.replacen("true", "1e400", 1)),
        ("wrong.json", ok.replacen("true", "\"yes\"", 1)),
        (
            "deep.toml",
            format!("a = {}1{}", "[".repeat(100_000), "]".repeat(100_000)),
        ),
    ] {
        let p = write(name, text.as_bytes());
        let (code, err) = run(cli().arg("check-config").arg(&p));
        assert!(code == 1 || code == 2, "{name}: {code} {err}");
    }
}

/// The fields of one stream entry, as bytes.
type Fields = Vec<(Vec<u8>, Vec<u8>)>;

/// Hostile entries on a Redis stream: `consume` reports and dead-letters each one, goes
/// on, and prints only the good events; it never panics.
#[test]
fn consume_dead_letters_hostile_redis_entries_and_prints_the_good_ones() {
    let prefix = common::unique("hostile");
    let full = format!("{prefix}-t");
    let dead = format!("{full}-dead-letter");
    let _cleanup = redis_support::Cleanup::new(&redis_support::url(), &[&full, &dead]);
    let tool = || {
        let mut c = cli();
        c.env("EVENT_BUS_PRODUCER", "redis")
            .env("EVENT_BUS_REDIS_CONNECTION_URL", redis_support::url())
            .env("EVENT_BUS_TOPIC_PREFIX", &prefix);
        c
    };
    let produce = || {
        let (code, err) = run(tool()
            .args(["produce", "--event-type", ENROLLMENT, "--topic", "t", "--data"])
            .arg(common::enrollment_data().to_string()));
        assert_eq!(code, 0, "{err}");
    };
    produce();
    let mut conn = redis_support::connect(&redis_support::url());
    let good = redis_support::read_stream(&mut conn, &full).remove(0);
    let _: () = redis::cmd("DEL").arg(&full).query(&mut conn).unwrap();
    // The good entry's fields with one change each.
    let with = |name: &[u8], value: Option<&[u8]>| -> Fields {
        let mut fields: Fields = good
            .fields
            .iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v.clone()))
            .filter(|(k, _)| k != name)
            .collect();
        if let Some(v) = value {
            fields.push((name.to_vec(), v.to_vec()));
        }
        fields
    };
    let renamed = |from: &str, to: &[u8]| -> Fields {
        good.fields
            .iter()
            .map(|(k, v)| {
                let k = if k == from { to.to_vec() } else { k.as_bytes().to_vec() };
                (k, v.clone())
            })
            .collect()
    };
    let mut doubled_type = with(b"type", Some(ENROLLMENT.as_bytes()));
    doubled_type.push((b"type".to_vec(), b"org.openedx.nobody.knows.v1".to_vec()));
    let mut doubled_data = with(b"event_data", Some(good.get("event_data").unwrap()));
    doubled_data.push((b"event_data".to_vec(), vec![0xff; 8]));
    let hostile: Vec<(&str, Fields)> = vec![
        ("type name not UTF-8", renamed("type", b"typ\xe9")),
        ("type value not UTF-8", with(b"type", Some(b"org.openedx.caf\xe9.v1"))),
        ("id name not UTF-8", renamed("id", b"\xff\xfe")),
        ("no id", with(b"id", None)),
        ("no time", with(b"time", None)),
        ("no event_data", with(b"event_data", None)),
        ("type twice", doubled_type),
        ("event_data twice", doubled_data),
        ("id not a UUID", with(b"id", Some(b"not-a-uuid"))),
        ("time not a time", with(b"time", Some(b"yesterday"))),
        ("time a leap second", with(b"time", Some(b"2016-12-31T23:59:60+00:00"))),
        (
            "huge minorversion",
            with(b"minorversion", Some(b"99999999999999999999999")),
        ),
        ("minorversion not a number", with(b"minorversion", Some(b"three"))),
        ("sourcelib not a version", with(b"sourcelib", Some(b"1.x"))),
        ("event_data garbage", with(b"event_data", Some(&[0xff; 64]))),
        ("event_data huge", with(b"event_data", Some(&vec![0x80; 1 << 20]))),
        ("time huge", with(b"time", Some(&vec![b'9'; 1 << 16]))),
    ];
    for (_, fields) in &hostile {
        let mut cmd = redis::cmd("XADD");
        cmd.arg(&full).arg("*");
        for (k, v) in fields {
            cmd.arg(&k[..]).arg(&v[..]);
        }
        let _: String = cmd.query(&mut conn).unwrap();
    }
    produce();
    let n = hostile.len() + 1;
    let (code, err) = run(tool()
        .args([
            "consume",
            "--topic",
            "t",
            "--group",
            "g",
            "--from-beginning",
            "--timeout",
            "60",
        ])
        .args(["--max", &n.to_string(), "--max-errors", "0"]));
    assert_eq!(code, 0, "{err}");
    let a = tool()
        .args([
            "consume",
            "--topic",
            "t",
            "--group",
            "g2",
            "--from-beginning",
            "--quiet",
        ])
        .args(["--max", &n.to_string(), "--max-errors", "0", "--timeout", "60"])
        .assert()
        .success();
    let lines: Vec<serde_json::Value> = common::stdout(&a)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "only the good event is printed: {lines:?}");
    assert_eq!(lines[0]["data"], common::enrollment_data());
    assert_eq!(
        redis_support::xlen(&mut conn, &dead),
        2 * hostile.len(),
        "each hostile entry dead-lettered by each group: {}",
        stderr(&a)
    );
}
