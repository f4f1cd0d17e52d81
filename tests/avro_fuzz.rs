//! Decoding what a peer sends never panics and never allocates without bound: random bytes,
//! mutated vectors, and forged length prefixes (a string of 2^62 bytes, a block of 2^60
//! elements) give errors, and what a decode allocates is measured by a counting allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::OnceLock;

use openedx_events::avro::{self, DecodeError};
use openedx_events::{openedx_event, registry, EventData, Map, OpenEdxEvent};
use proptest::prelude::*;
use serde_json::Value;

/// Counts, per thread and only while asked to, the bytes allocated and still live, and
/// their peak.
struct Counting;

thread_local! {
    static TRACK: Cell<bool> = const { Cell::new(false) };
    static LIVE: Cell<usize> = const { Cell::new(0) };
    static PEAK: Cell<usize> = const { Cell::new(0) };
}

fn note(grow: usize, shrink: usize) {
    // `try_with`: the allocator may be called while thread-locals are torn down.
    if TRACK.try_with(Cell::get).unwrap_or(false) {
        let live = LIVE.with(Cell::get).saturating_add(grow).saturating_sub(shrink);
        LIVE.with(|l| l.set(live));
        PEAK.with(|p| p.set(p.get().max(live)));
    }
}

// SAFETY: every call is forwarded to the system allocator unchanged; the counting only
// touches const-initialised thread-locals, which never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size(), 0);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        note(0, layout.size());
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size, layout.size());
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Runs `f` and returns its result with the peak of bytes it had allocated at once.
fn peak_allocation<T>(f: impl FnOnce() -> T) -> (T, usize) {
    LIVE.with(|l| l.set(0));
    PEAK.with(|p| p.set(0));
    TRACK.with(|t| t.set(true));
    let out = f();
    TRACK.with(|t| t.set(false));
    (out, PEAK.with(Cell::get))
}

/// A record with no fields: an array of them is written in zero bytes per element.
#[derive(EventData, Clone, Debug, PartialEq)]
pub struct Nothing {}

/// A record with a bit of everything.
#[derive(EventData, Clone, Debug, PartialEq)]
pub struct Part {
    /// A name.
    pub name: String,
    /// A count, maybe.
    pub count: Option<i64>,
}

/// Sent by this test only.
#[openedx_event("org.openedx.learning.avro_fuzz.sample.v1")]
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// Strings.
    pub tags: Vec<String>,
    /// A map of numbers.
    pub extra: Map<i64>,
    /// Records.
    pub parts: Vec<Part>,
    /// Records of no size.
    pub nothings: Vec<Nothing>,
    /// Bytes.
    pub blob: Vec<u8>,
    /// A time.
    pub at: chrono::DateTime<chrono::Utc>,
}

/// Avro `long` (zig-zag varint).
fn long(v: i64) -> Vec<u8> {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    let mut out = Vec::new();
    loop {
        let b = (z & 0x7f) as u8;
        z >>= 7;
        if z == 0 {
            out.push(b);
            return out;
        }
        out.push(b | 0x80);
    }
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

fn time_bytes() -> Vec<u8> {
    let t = b"2026-11-27T13:20:05+00:00";
    cat(&[&long(t.len() as i64), t])
}

#[test]
fn a_valid_sample_round_trips() {
    let sample = Sample {
        tags: vec!["a".into(), "b".into()],
        extra: Map::from_iter([("k".to_owned(), 3)]),
        parts: vec![Part {
            name: "p".into(),
            count: None,
        }],
        nothings: vec![Nothing {}, Nothing {}],
        blob: vec![1, 2, 3],
        at: openedx_events::time::parse("2026-11-27T13:20:05+00:00").unwrap(),
    };
    let bytes = avro::encode(&sample).unwrap();
    assert_eq!(avro::decode::<Sample>(&bytes).unwrap(), sample);
    // The allocation counter sees a decode's strings and lists.
    let (decoded, peak) = peak_allocation(|| avro::decode::<Sample>(&bytes));
    assert!(decoded.is_ok());
    assert!(peak > 0 && peak < 4096, "{peak}");
}

/// Every single-byte change of every vector, exhaustively: some still decode (a changed
/// letter in a string), most do not, none panics.
#[test]
fn every_single_byte_change_of_every_vector() {
    let (mut decoded, mut refused) = (0, 0);
    for (event_type, bytes) in vectors() {
        for i in 0..bytes.len() {
            for delta in [1u8, 0x40, 0x80] {
                let mut changed = bytes.clone();
                changed[i] = changed[i].wrapping_add(delta);
                match decode_checked(event_type, &changed) {
                    Ok(true) => decoded += 1,
                    Ok(false) => refused += 1,
                    Err(e) => panic!("{event_type}, byte {i} + {delta}: {e}"),
                }
            }
        }
    }
    assert!(decoded > 1000 && refused > 1000, "{decoded} decoded, {refused} refused");
}

/// Forged lengths and counts: each is refused, quickly, having allocated next to nothing.
#[test]
fn forged_lengths_and_counts_are_refused_without_allocating() {
    let empty_tail = cat(&[&[0; 5], &time_bytes()]);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        // tags: a block of 2^60 strings, then one short string.
        ("array count 2^60", cat(&[&long(1 << 60), &[2, b'a']])),
        // tags: a negative block count (-2^60) with its byte size.
        ("negative array count", cat(&[&long(-(1 << 60)), &long(2), &[2, b'a']])),
        ("array count i64::MIN", cat(&[&long(i64::MIN), &long(0)])),
        // tags: one string said to hold 2^62 bytes.
        ("string length 2^62", cat(&[&long(1), &long(1 << 62), b"abc"])),
        ("negative string length", cat(&[&long(1), &long(-5), b"abc"])),
        // extra: a map of 2^60 entries.
        ("map count 2^60", cat(&[&[0], &long(1 << 60), &[2, b'k', 2]])),
        // nothings: 2^60 records of zero bytes each.
        (
            "zero-size items 2^60",
            cat(&[&[0], &[0], &[0], &long(1 << 60), &[0], &[0]]),
        ),
        // blob: 2^40 bytes said to follow.
        (
            "bytes length 2^40",
            cat(&[&[0], &[0], &[0], &[0], &long(1 << 40), b"x"]),
        ),
        // A varint that never ends.
        ("endless varint", vec![0xff; 64]),
        // The whole datum, then more.
        ("trailing bytes", cat(&[&empty_tail, &[0]])),
    ];
    // The schema is built on first use: not part of what a decode allocates.
    Sample::avro_schema();
    for (name, bytes) in cases {
        let start = std::time::Instant::now();
        let (result, peak) = peak_allocation(|| avro::decode::<Sample>(&bytes));
        assert!(result.is_err(), "{name}: decoded {result:?}");
        assert!(
            peak < 64 * 1024,
            "{name}: {peak} bytes allocated for {} bytes of input",
            bytes.len()
        );
        assert!(start.elapsed().as_millis() < 500, "{name}: took {:?}", start.elapsed());
    }
    // And the empty sample itself is fine.
    assert!(avro::decode::<Sample>(&empty_tail).is_ok());
}

/// A long run of zero-size items is bounded too (by a fixed limit, since the input's
/// length says nothing about them).
#[test]
fn zero_size_items_are_bounded() {
    let ok = cat(&[&[0], &[0], &[0], &long(1000), &[0], &[0], &time_bytes()]);
    assert_eq!(avro::decode::<Sample>(&ok).unwrap().nothings.len(), 1000);
    let too_many = cat(&[&[0], &[0], &[0], &long(1 << 21), &[0], &[0], &time_bytes()]);
    let err = avro::decode::<Sample>(&too_many).unwrap_err();
    assert!(matches!(err, DecodeError::Avro { .. }), "{err}");
}

/// The Python vectors: (event type, bytes), read once.
fn vectors() -> &'static [(String, Vec<u8>)] {
    static VECTORS: OnceLock<Vec<(String, Vec<u8>)>> = OnceLock::new();
    VECTORS.get_or_init(|| {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/avro-vectors.json");
        let raw: Vec<Value> = serde_json::from_str(&std::fs::read_to_string(path).expect("vectors")).expect("JSON");
        raw.into_iter()
            .map(|v| {
                let hex = v["avro_hex"].as_str().expect("hex");
                let bytes = (0..hex.len())
                    .step_by(2)
                    .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
                    .collect();
                (v["event_type"].as_str().expect("type").to_owned(), bytes)
            })
            .collect()
    })
}

/// Decodes `bytes` as `event_type`; when that works, the event must encode again and
/// the new bytes decode to the same JSON. Returns whether it decoded.
fn decode_checked(event_type: &str, bytes: &[u8]) -> Result<bool, TestCaseError> {
    let ops = registry::find(event_type).expect("registered").ops();
    // The schema is built on first use: not part of what a decode allocates.
    ops.schema();
    let (result, peak) = peak_allocation(|| ops.decode_avro(bytes));
    // Strings, records and lists are built from the input: at most a small multiple of
    // its length (a list element takes at least one byte on the wire).
    prop_assert!(
        peak <= 4096 + 128 * bytes.len(),
        "{event_type}: {peak} bytes for {}",
        bytes.len()
    );
    let Ok(event) = result else { return Ok(false) };
    let mut again = Vec::new();
    event
        .encode_avro(&mut again)
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    let back = ops
        .decode_avro(&again)
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(back.to_json(), event.to_json());
    Ok(true)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

    /// Random bytes, for every registered event type.
    #[test]
    fn random_bytes_never_panic(index in 0usize..1000, bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let events = registry::events();
        let def = events[index % events.len()];
        decode_checked(def.event_type, &bytes)?;
    }

    /// Vectors with bytes changed, removed, inserted, or cut off.
    #[test]
    fn mutated_vectors_never_panic(
        pick in 0usize..216,
        edits in proptest::collection::vec((0usize..4, any::<prop::sample::Index>(), any::<u8>()), 1..6),
    ) {
        let vectors = vectors();
        let (event_type, mut bytes) = vectors[pick % vectors.len()].clone();
        for (kind, at, byte) in edits {
            let len = bytes.len();
            match kind {
                0 if len > 0 => { let i = at.index(len); bytes[i] = byte; }
                1 if len > 0 => { bytes.remove(at.index(len)); }
                2 => { bytes.insert(at.index(len + 1), byte); }
                _ if len > 0 => bytes.truncate(at.index(len)),
                _ => {}
            }
        }
        decode_checked(&event_type, &bytes)?;
    }

    /// Valid vectors with something appended are always refused.
    #[test]
    fn extended_vectors_are_refused(pick in 0usize..216, tail in proptest::collection::vec(any::<u8>(), 1..16)) {
        let vectors = vectors();
        let (event_type, bytes) = &vectors[pick % vectors.len()];
        let long = [&bytes[..], &tail[..]].concat();
        let ops = registry::find(event_type).expect("registered").ops();
        let is_trailing = matches!(ops.decode_avro(&long), Err(DecodeError::TrailingBytes { .. }));
        prop_assert!(is_trailing);
    }
}

/// The empty sample with `at` written as `text`.
fn sample_at(text: &str) -> Vec<u8> {
    cat(&[&[0; 5], &long(text.len() as i64), text.as_bytes()])
}

/// Times Python's `datetime.fromisoformat` cannot read (a leap second, year 0, a value
/// that an offset pushes past 9999 or before year 1) are refused when read, naming the
/// reason, and a `DateTime<Utc>` Python cannot hold is refused at encode.
#[test]
fn times_python_cannot_read_are_refused_at_decode_and_at_encode() {
    assert!(avro::decode::<Sample>(&sample_at("2016-12-31T23:59:59+00:00")).is_ok());
    for (text, why) in [
        ("2016-12-31T23:59:60+00:00", "leap second"),
        ("2016-12-31T23:59:60.500000Z", "leap second"),
        ("0000-06-01T00:00:00+00:00", "9999"),
        ("9999-12-31T23:00:00-05:00", "9999"),
        ("0001-01-01T00:30:00+01:00", "9999"),
    ] {
        let err = avro::decode::<Sample>(&sample_at(text))
            .map(|s| s.at.to_rfc3339())
            .unwrap_err()
            .to_string();
        assert!(err.contains(why), "{text}: {err}");
    }
    let mut sample = avro::decode::<Sample>(&sample_at("2016-12-31T23:59:59+00:00")).unwrap();
    for at in [
        chrono::NaiveDate::from_ymd_opt(10000, 1, 1)
            .unwrap()
            .and_hms_opt(0, 0, 0)
            .unwrap()
            .and_utc(),
        chrono::NaiveDate::from_ymd_opt(0, 1, 1)
            .unwrap()
            .and_hms_opt(0, 0, 0)
            .unwrap()
            .and_utc(),
        chrono::NaiveDate::from_ymd_opt(2016, 12, 31)
            .unwrap()
            .and_hms_milli_opt(23, 59, 59, 1_500)
            .unwrap()
            .and_utc(),
    ] {
        sample.at = at;
        let err = avro::encode(&sample).map(hex_of).unwrap_err().to_string();
        assert!(err.contains("Python"), "{at:?}: {err}");
    }
}

fn hex_of(bytes: Vec<u8>) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Sent by this test only: arrays of arrays of zero-size records.
#[openedx_event("org.openedx.learning.avro_fuzz.nested.v1")]
#[derive(Clone, Debug, PartialEq)]
pub struct Nested {
    /// Rows of nothing.
    pub grid: Vec<Vec<Nothing>>,
}

/// Each array of zero-size items is bounded; nested arrays multiply the bounds, so a
/// forged message of a few hundred bytes could demand 2^20 iterations per inner array,
/// times the outer count: the iterations of a whole message are bounded too.
#[test]
fn nested_arrays_of_zero_size_items_are_bounded_per_message() {
    let ok = cat(&[&long(3), &long(2), &[0], &[0], &long(1), &[0], &[0]]);
    assert_eq!(
        avro::decode::<Nested>(&ok)
            .unwrap()
            .grid
            .iter()
            .map(Vec::len)
            .sum::<usize>(),
        3
    );
    let row = cat(&[&long(1 << 20), &[0]]);
    let rows = 64;
    let mut forged = long(rows);
    for _ in 0..rows {
        forged.extend_from_slice(&row);
    }
    forged.push(0);
    assert!(forged.len() < 400, "{} bytes", forged.len());
    let start = std::time::Instant::now();
    let result = avro::decode::<Nested>(&forged).map(|n| n.grid.len());
    let took = start.elapsed();
    assert!(
        result.is_err(),
        "decoded {result:?}: 2^26 items from {} bytes, in {took:?}",
        forged.len()
    );
    assert!(took.as_millis() < 2000, "took {took:?}");
    // Through a writer schema (a schema a peer registered) too.
    let writer: serde_avro_fast::Schema = Nested::avro_schema().registry_text().parse().unwrap();
    let start = std::time::Instant::now();
    assert!(avro::decode_with_writer_schema::<Nested>(&forged, &writer).is_err());
    assert!(start.elapsed().as_millis() < 2000, "took {:?}", start.elapsed());
}

/// Decodes 64 rows of 2^20 zero-size items (a few hundred bytes) with `writer`, whose
/// field `grid` is an array of arrays of some zero-size record, and checks the per-datum
/// item budget refused it quickly. `tail` is written after the grid.
fn assert_grid_refused_by_item_budget(writer: &Value, tail: &[u8]) {
    let writer: serde_avro_fast::Schema = writer.to_string().parse().unwrap();
    let row = cat(&[&long(1 << 20), &[0]]);
    let rows = 64;
    let mut forged = long(rows);
    for _ in 0..rows {
        forged.extend_from_slice(&row);
    }
    forged.push(0);
    forged.extend_from_slice(tail);
    assert!(forged.len() < 400, "{} bytes", forged.len());
    let start = std::time::Instant::now();
    let result =
        avro::decode_with_writer_schema::<Nested>(&forged, &writer).map(|n| n.grid.iter().map(Vec::len).sum::<usize>());
    let took = start.elapsed();
    match result {
        Ok(items) => panic!("decoded {items} items from {} bytes in {took:?}", forged.len()),
        Err(e) => assert!(
            e.to_string().contains("array items and map entries"),
            "refused, but not by the item budget: {e}"
        ),
    }
    assert!(took.as_millis() < 2000, "took {took:?}");
}

/// A writer schema whose zero-size record is declared with a dotted name (`"name": "x.Z"`)
/// and referenced by it still gets the per-datum item budget.
#[test]
fn item_budget_applies_to_a_writer_schema_whose_zero_size_record_has_a_dotted_name() {
    let mut json: Value = serde_json::from_str(Nested::avro_schema().registry_text()).unwrap();
    json["fields"] = serde_json::json!([
        {"name": "def", "type": {"type": "record", "name": "x.Z", "fields": []}},
        {"name": "grid", "type": {"type": "array", "items": {"type": "array", "items": "x.Z"}}}
    ]);
    assert_grid_refused_by_item_budget(&json, &[]);
}

/// Two writer records of one short name in two namespaces: the one with a field does not
/// hide the zero-size one, and the per-datum item budget applies.
#[test]
fn item_budget_applies_when_two_writer_records_share_a_short_name() {
    let mut json: Value = serde_json::from_str(Nested::avro_schema().registry_text()).unwrap();
    json["fields"] = serde_json::json!([
        {"name": "def", "type": {"type": "record", "name": "Z", "namespace": "a", "fields": []}},
        {"name": "grid", "type": {"type": "array", "items": {"type": "array", "items": "a.Z"}}},
        {"name": "other", "type": ["null", {"type": "record", "name": "Z", "namespace": "b", "fields": [
            {"name": "s", "type": "string"}]}]}
    ]);
    // `other`: the null branch.
    assert_grid_refused_by_item_budget(&json, &[0]);
}

/// A writer record whose fields name one zero-size record twice is itself zero-size, and
/// the per-datum item budget applies to arrays of it.
#[test]
fn item_budget_applies_to_a_writer_record_naming_one_zero_size_record_twice() {
    let mut json: Value = serde_json::from_str(Nested::avro_schema().registry_text()).unwrap();
    json["fields"] = serde_json::json!([
        {"name": "def", "type": {"type": "record", "name": "Z", "fields": []}},
        {"name": "grid", "type": {"type": "array", "items": {"type": "array", "items": {
            "type": "record", "name": "P", "fields": [{"name": "a", "type": "Z"}, {"name": "b", "type": "Z"}]}}}}
    ]);
    assert_grid_refused_by_item_budget(&json, &[]);
}
