//! Avro encode/decode of event data, side by side with the Python stack in one run.
//!
//! Rust: `avro::encode_into` (one reused buffer) and `avro::decode` of an
//! `XBlockPublished` and a `CourseEnrollmentCreated` event, with the data that
//! `shared/bench/py_avro.py` uses. Python: that script, run with the venv python of
//! `tests/python/setup.sh` (openedx-events' serializer, and fastavro with a pre-parsed
//! schema and a prepared dict). The table gives ns per event and how many times faster
//! the Rust codec is.
//!
//! Run: `cargo bench -p openedx-events --bench avro` (`-- --quick` for a short run,
//! `-- --no-python` to skip the Python side, `-- --parts` to add the cost of the pieces
//! and what serde_avro_fast itself costs on the enrollment bytes: walking them, and
//! decoding into serde-derived structs of borrowed or owned strings). The Rust figures are the median and 10th
//! percentile of short timed batches; the Python ones are the script's own (one timed loop
//! after warm-up).

#[path = "../tests/support/python.rs"]
mod python_support;

use std::hint::black_box;
use std::process::Command;
use std::time::Instant;

use chrono::{TimeZone, Utc};
use openedx_events::avro;
use openedx_events::catalog::content_authoring::{XBlockData, XBlockPublished};
use openedx_events::catalog::learning::{
    CourseData, CourseEnrollmentCreated, CourseEnrollmentData, UserData, UserPersonalData,
};
use openedx_events::OpenEdxEvent;

const PY_AVRO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/bench/py_avro.py");

/// Targets of the issue, ns per event.
const XBLOCK_ENCODE_TARGET: f64 = 100.0;
const ENROLLMENT_ENCODE_TARGET: f64 = 300.0;
const RATIO_TARGET: f64 = 20.0;

fn xblock() -> XBlockPublished {
    XBlockPublished {
        xblock_info: XBlockData {
            usage_key: "block-v1:edX+DemoX+Demo_Course+type@video+block@0b9e39477cf34507a7a48f74be381fdd"
                .parse()
                .expect("valid usage key"),
            block_type: "video".into(),
            version: None,
        },
    }
}

fn enrollment() -> CourseEnrollmentCreated {
    let user = UserData {
        id: 42,
        is_active: true,
        pii: UserPersonalData {
            username: "learner".into(),
            email: "learner@example.com".into(),
            name: "A Learner".into(),
        },
    };
    CourseEnrollmentCreated {
        enrollment: CourseEnrollmentData {
            user,
            course: CourseData {
                course_key: "course-v1:edX+DemoX+Demo_Course".parse().expect("valid course key"),
                display_name: "Demo".into(),
                start: Some(Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()),
                end: None,
            },
            mode: "verified".into(),
            is_active: true,
            creation_date: Utc.with_ymd_and_hms(2026, 11, 27, 13, 20, 5).unwrap()
                + chrono::Duration::microseconds(364_687),
            created_by: None,
        },
    }
}

/// ns per call of `f`: the median and the 10th percentile over `batches` batches of `n`
/// calls. Short batches and a low percentile show the codec's own cost on a shared
/// machine, where many batches are preempted.
fn time(n: u32, batches: usize, mut f: impl FnMut()) -> Stats {
    for _ in 0..n * 5 {
        f();
    }
    let mut samples: Vec<f64> = (0..batches)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..n {
                f();
            }
            t.elapsed().as_nanos() as f64 / f64::from(n)
        })
        .collect();
    samples.sort_by(f64::total_cmp);
    Stats {
        median: samples[samples.len() / 2],
        p10: samples[samples.len() / 10],
    }
}

#[derive(Clone, Copy)]
struct Stats {
    median: f64,
    p10: f64,
}

struct RustFigures {
    encode: Stats,
    decode: Stats,
    bytes: usize,
}

fn bench_event<E: OpenEdxEvent + PartialEq>(event: &E, n: u32, batches: usize) -> RustFigures {
    let bytes = avro::encode(event).expect("encodes");
    assert_eq!(&avro::decode::<E>(&bytes).expect("decodes"), event, "round trip");
    let mut buf = Vec::with_capacity(256);
    let encode = time(n, batches, || {
        buf.clear();
        avro::encode_into(black_box(event), &mut buf).expect("encodes");
        black_box(&buf);
    });
    let decode = time(n, batches, || {
        black_box(avro::decode::<E>(black_box(&bytes)).expect("decodes"));
    });
    RustFigures {
        encode,
        decode,
        bytes: bytes.len(),
    }
}

/// Python figures: (event, path) -> ns per event, from `py_avro.py N`.
fn python(n: u32) -> Result<Vec<(String, String, f64)>, String> {
    let py = python_support::try_python()?;
    let out = Command::new(&py)
        .arg(PY_AVRO)
        .arg(n.to_string())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", py.display()))?;
    if !out.status.success() {
        return Err(format!("py_avro.py failed: {}", String::from_utf8_lossy(&out.stderr)));
    }
    let mut rows = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        // "xblock fastavro ns_per_event=5315"
        let mut parts = line.split_whitespace();
        let (Some(event), Some(path), Some(value)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let Some(ns) = value.strip_prefix("ns_per_event=").and_then(|v| v.parse().ok()) else {
            continue;
        };
        rows.push((event.to_owned(), path.to_owned(), ns));
    }
    Ok(rows)
}

/// Costs of the pieces a decode or encode is made of (`-- --parts`).
fn parts(n: u32, batches: usize) {
    use openedx_events::keys::{CourseKey, UsageKey};
    let usage = "block-v1:edX+DemoX+Demo_Course+type@video+block@0b9e39477cf34507a7a48f74be381fdd";
    let t = enrollment().enrollment.creation_date;
    let text = openedx_events::time::IsoFormat(&t).to_string();
    let rows: Vec<(&str, Stats)> = vec![
        (
            "UsageKey::parse",
            time(n, batches, || {
                black_box(UsageKey::parse(black_box(usage)).unwrap());
            }),
        ),
        (
            "CourseKey::parse",
            time(n, batches, || {
                black_box(CourseKey::parse(black_box("course-v1:edX+DemoX+Demo_Course")).unwrap());
            }),
        ),
        (
            "String::from (80 B)",
            time(n, batches, || {
                black_box(String::from(black_box(usage)));
            }),
        ),
        (
            "time::parse",
            time(n, batches, || {
                black_box(openedx_events::time::parse(black_box(&text)).unwrap());
            }),
        ),
        (
            "time::format_into",
            time(n, batches, || {
                let mut buf = [0; openedx_events::time::ISO_LEN];
                black_box(openedx_events::time::format_into(black_box(&t), &mut buf));
            }),
        ),
    ];
    for (name, s) in rows {
        println!("{name:<22} {:>7.1} ns (p10 {:.1})", s.median, s.p10);
    }
    floors(n, batches);
}

/// What serde_avro_fast costs before any of our code runs, on the enrollment event's
/// bytes and schema: walking the datum without keeping anything (`IgnoredAny`), and
/// decoding into plain serde-derived structs (owned strings, no key or time checks).
/// These bound how fast a typed decode through the crate can be.
fn floors(n: u32, batches: usize) {
    // Strings as `S`: `String` (owned) or `&str` (borrowed from the bytes).
    #[derive(serde::Deserialize)]
    #[allow(dead_code)]
    struct Pii<S> {
        username: S,
        email: S,
        name: S,
    }
    #[derive(serde::Deserialize)]
    #[allow(dead_code)]
    struct User<S> {
        id: i64,
        is_active: bool,
        pii: Pii<S>,
    }
    #[derive(serde::Deserialize)]
    #[allow(dead_code)]
    struct Course<S> {
        course_key: S,
        display_name: S,
        start: Option<S>,
        end: Option<S>,
    }
    #[derive(serde::Deserialize)]
    #[allow(dead_code)]
    struct Enrollment<S> {
        user: User<S>,
        course: Course<S>,
        mode: S,
        is_active: bool,
        creation_date: S,
        created_by: Option<User<S>>,
    }
    #[derive(serde::Deserialize)]
    #[allow(dead_code)]
    struct Event<S> {
        enrollment: Enrollment<S>,
    }
    let bytes = avro::encode(&enrollment()).expect("encodes");
    let schema = CourseEnrollmentCreated::avro_schema().parsed();
    let borrowed = time(n, batches, || {
        let v: Event<&str> = serde_avro_fast::from_datum_slice(black_box(&bytes), schema).expect("decodes");
        black_box(v);
    });
    let walk = time(n, batches, || {
        let v: serde::de::IgnoredAny = serde_avro_fast::from_datum_slice(black_box(&bytes), schema).expect("decodes");
        black_box(v);
    });
    let plain = time(n, batches, || {
        let v: Event<String> = serde_avro_fast::from_datum_slice(black_box(&bytes), schema).expect("decodes");
        black_box(v);
    });
    println!(
        "{:<22} {:>7.1} ns (p10 {:.1})",
        "enrollment: walk only", walk.median, walk.p10
    );
    println!(
        "{:<22} {:>7.1} ns (p10 {:.1})",
        "enrollment: plain", plain.median, plain.p10
    );
    println!(
        "{:<22} {:>7.1} ns (p10 {:.1})",
        "enrollment: borrowed", borrowed.median, borrowed.p10
    );
}

/// `-- --profile=<xblock|enrollment>:<encode|decode>`: runs that one operation for about
/// three seconds and nothing else, for a profiler.
fn profile(spec: &str) {
    fn run<E: OpenEdxEvent>(event: &E, op: &str) {
        let bytes = avro::encode(event).expect("encodes");
        let mut buf = Vec::with_capacity(256);
        let t = Instant::now();
        while t.elapsed().as_secs() < 3 {
            for _ in 0..10_000 {
                if op == "encode" {
                    buf.clear();
                    avro::encode_into(black_box(event), &mut buf).expect("encodes");
                } else {
                    black_box(avro::decode::<E>(black_box(&bytes)).expect("decodes"));
                }
            }
        }
    }
    match spec.split_once(':') {
        Some(("xblock", op)) => run(&xblock(), op),
        Some(("enrollment", op)) => run(&enrollment(), op),
        _ => eprintln!("--profile=<xblock|enrollment>:<encode|decode>"),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(spec) = args.iter().find_map(|a| a.strip_prefix("--profile=")) {
        return profile(spec);
    }
    let quick = args.iter().any(|a| a == "--quick");
    let no_python = args.iter().any(|a| a == "--no-python");
    let (n, batches, py_n) = if quick {
        (2_000, 50, 5_000)
    } else {
        (2_000, 400, 20_000)
    };

    let rust = [
        ("xblock", bench_event(&xblock(), n, batches), XBLOCK_ENCODE_TARGET),
        (
            "enrollment",
            bench_event(&enrollment(), n, batches),
            ENROLLMENT_ENCODE_TARGET,
        ),
    ];
    if args.iter().any(|a| a == "--parts") {
        parts(n, batches);
    }
    let py = if no_python {
        Err("skipped (--no-python)".to_owned())
    } else {
        python(py_n)
    };
    let py_ns = |event: &str, path: &str| -> Option<f64> {
        py.as_ref()
            .ok()?
            .iter()
            .find(|(e, p, _)| e == event && p == path)
            .map(|r| r.2)
    };
    let ratio = |py: Option<f64>, rust: f64| py.map_or("-".to_owned(), |p| format!("{:.0}x", p / rust));
    let ns = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.0}"));

    println!();
    println!(
        "{:<11} {:<7} {:>5} {:>9} {:>7} {:>7} {:>12} {:>12} {:>12} {:>11}",
        "event", "op", "bytes", "rust ns", "p10 ns", "target", "fastavro ns", "openedx ns", "vs fastavro", "vs openedx"
    );
    let mut failed = Vec::new();
    for (event, r, target) in &rust {
        let rows = [
            (
                "encode",
                r.encode,
                Some(*target),
                py_ns(event, "fastavro"),
                py_ns(event, "serializer"),
            ),
            ("decode", r.decode, None, py_ns(event, "fastavro-decode"), None),
        ];
        for (op, stats, target, fastavro, openedx) in rows {
            println!(
                "{:<11} {:<7} {:>5} {:>9.1} {:>7.1} {:>7} {:>12} {:>12} {:>12} {:>11}",
                event,
                op,
                r.bytes,
                stats.median,
                stats.p10,
                target.map_or("-".to_owned(), |t| format!("{t:.0}")),
                ns(fastavro),
                ns(openedx),
                ratio(fastavro, stats.median),
                ratio(openedx, stats.median)
            );
            if let Some(t) = target.filter(|t| stats.median > *t) {
                failed.push(format!("{event} {op} {:.1} ns > {t} ns", stats.median));
            }
            if let Some(p) = fastavro.filter(|p| p / stats.median < RATIO_TARGET) {
                failed.push(format!("{event} {op} only {:.1}x fastavro", p / stats.median));
            }
        }
    }
    println!();
    println!(
        "rust: median (and 10th percentile) of {batches} batches of {n} calls; ratios use the median; \
         python: py_avro.py {py_n}, one timed loop each ({})",
        match &py {
            Ok(_) => "same run".to_owned(),
            Err(e) => e.clone(),
        }
    );
    if failed.is_empty() {
        println!("targets met (encode <= 100 ns xblock, <= 300 ns enrollment; >= {RATIO_TARGET}x fastavro)");
    } else {
        println!("targets missed: {}", failed.join("; "));
    }
}
