//! Opaque keys, checked against edx-opaque-keys itself: for thousands of strings (valid
//! keys of every form, and each with one character replaced, inserted or removed), each
//! key type accepts exactly the strings that the Python class openedx-events parses that
//! field with accepts. A key we accept and Python refuses would make a Python consumer
//! drop our event; one Python accepts and we refuse would dead-letter its event here.

#[path = "support/python.rs"]
mod python_support;

use std::collections::BTreeSet;
use std::io::Write;
use std::process::{Command, Stdio};

use openedx_events::keys::{
    CcxLocator, CourseKey, LibraryCollectionLocator, LibraryContainerLocator, LibraryLocatorV2, LibraryUsageLocatorV2,
    UsageKey,
};

/// Valid keys of every form the seven types take.
const SEEDS: &[&str] = &[
    "course-v1:edX+DemoX+Demo_Course",
    "course-v1:edX+DemoX+Demo_Course+branch@published",
    "course-v1:edX+DemoX+Demo_Course+version@519665f6223ebd6980884f2b",
    "course-v1:edX+DemoX+Demo_Course+branch@draft+version@519665f6223ebd6980884f2b",
    "course-v1:version@519665f6223ebd6980884f2b",
    "course-v1:Org.é+Cours~e-1+2024:T1",
    "edX/DemoX/Demo_Course",
    "library-v1:edX+lib1",
    "ccx-v1:edX+DemoX+Demo_Course+ccx@3",
    "block-v1:edX+DemoX+Demo_Course+type@video+block@0b9e39477cf34507a7a48f74be381fdd",
    "block-v1:edX+DemoX+Demo_Course+branch@published+type@problem+block@p1%20x",
    "lib-block-v1:edX+lib1+type@html+block@h1",
    "ccx-block-v1:edX+DemoX+Demo_Course+ccx@3+type@html+block@h1",
    "i4x://edX/DemoX/video/abc",
    "i4x://edX/DemoX/video/abc@draft",
    "asset-v1:edX+DemoX+Demo_Course+type@asset+block@logo.png",
    "/c4x/edX/DemoX/asset/logo.png",
    "lib:org:slug",
    "lib:org:slügé.1",
    "lb:org:lib:html:abc-1",
    "lib-collection:org:slug:col1",
    "lct:org:slug:unit:u1",
];

const CHARS: &[char] = &[
    ' ', '+', ':', '@', '/', '_', '-', '~', '.', '%', 'é', 'ß', 'Ⅻ', '²', '\u{301}', '#', '\n', 'A', '0', 'f',
];

fn corpus() -> Vec<String> {
    let mut out = BTreeSet::new();
    for seed in SEEDS {
        let chars: Vec<char> = seed.chars().collect();
        out.insert(seed.to_string());
        for i in 0..=chars.len() {
            for &c in CHARS {
                let mut inserted = chars.clone();
                inserted.insert(i, c);
                out.insert(inserted.into_iter().collect());
                if i < chars.len() {
                    let mut replaced = chars.clone();
                    replaced[i] = c;
                    out.insert(replaced.into_iter().collect());
                }
            }
            if i < chars.len() {
                let mut removed = chars.clone();
                removed.remove(i);
                out.insert(removed.into_iter().collect());
            }
        }
    }
    out.into_iter().collect()
}

type Check = fn(&str) -> bool;

const TYPES: &[(&str, Check)] = &[
    ("CourseKey", |s| CourseKey::parse(s).is_ok()),
    ("UsageKey", |s| UsageKey::parse(s).is_ok()),
    ("CcxLocator", |s| CcxLocator::parse(s).is_ok()),
    ("LibraryLocatorV2", |s| LibraryLocatorV2::parse(s).is_ok()),
    ("LibraryUsageLocatorV2", |s| LibraryUsageLocatorV2::parse(s).is_ok()),
    ("LibraryCollectionLocator", |s| {
        LibraryCollectionLocator::parse(s).is_ok()
    }),
    ("LibraryContainerLocator", |s| LibraryContainerLocator::parse(s).is_ok()),
];

#[test]
fn every_key_type_accepts_what_edx_opaque_keys_accepts() {
    let strings = corpus();
    let python = python_support::python();
    let mut child = Command::new(python)
        .arg(python_support::python_dir().join("keys_check.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("runs keys_check.py");
    let input = serde_json::to_vec(&strings).unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(out.status.success(), "keys_check.py failed");
    let verdicts: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();

    let mut report = Vec::new();
    let mut accepted = 0;
    for (name, ours) in TYPES {
        let theirs = verdicts[*name].as_array().expect("one list per type");
        assert_eq!(theirs.len(), strings.len());
        let mut wrong = Vec::new();
        for (s, t) in strings.iter().zip(theirs) {
            let t = t.as_bool().unwrap();
            accepted += usize::from(t);
            if ours(s) != t {
                wrong.push(format!("{}: {s:?}", if t { "we refuse" } else { "we accept" }));
            }
        }
        if !wrong.is_empty() {
            report.push(format!(
                "{name}: {} differences, e.g.\n  {}",
                wrong.len(),
                wrong[..wrong.len().min(25)].join("\n  ")
            ));
        }
    }
    // The corpus holds keys Python accepts, not only malformed ones.
    assert!(accepted > 1_000, "only {accepted} accepted strings");
    assert!(report.is_empty(), "{} strings:\n{}", strings.len(), report.join("\n"));
}
