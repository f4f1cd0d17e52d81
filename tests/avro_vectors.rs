//! The Python-serialized vectors (`shared/avro-vectors.json`, three per event type, written by
//! openedx-events 11.2.0's serializer over fastavro) against the codec: the bytes decode into
//! the typed event, whose JSON is the vector's datum and whose encoding is the same bytes;
//! every cut-short or lengthened copy of the bytes is refused.

use openedx_events::avro::{self, DecodeError};
use openedx_events::catalog::content_authoring::XBlockPublished;
use openedx_events::catalog::learning::CourseEnrollmentCreated;
use openedx_events::{registry, OpenEdxEvent};
use serde_json::Value;

const VECTORS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/avro-vectors.json");

struct Vector {
    event_type: String,
    datum: Value,
    bytes: Vec<u8>,
}

fn vectors() -> Vec<Vector> {
    let text = std::fs::read_to_string(VECTORS).unwrap_or_else(|e| panic!("cannot read {VECTORS}: {e}"));
    let raw: Vec<Value> = serde_json::from_str(&text).expect("vectors are JSON");
    raw.into_iter()
        .map(|v| {
            let hex = v["avro_hex"].as_str().expect("avro_hex");
            Vector {
                event_type: v["event_type"].as_str().expect("event_type").to_owned(),
                bytes: (0..hex.len())
                    .step_by(2)
                    .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
                    .collect(),
                datum: v["datum"].clone(),
            }
        })
        .collect()
}

#[test]
fn every_vector_decodes_to_its_datum_and_encodes_to_its_bytes() {
    let vectors = vectors();
    assert_eq!(vectors.len(), 216, "three vectors for each of the 72 event types");
    let mut failures = Vec::new();
    for (i, v) in vectors.iter().enumerate() {
        let Some(def) = registry::find(&v.event_type) else {
            failures.push(format!("#{i} {}: not registered", v.event_type));
            continue;
        };
        let event = match def.ops().decode_avro(&v.bytes) {
            Ok(e) => e,
            Err(e) => {
                failures.push(format!("#{i} {}: {e}", v.event_type));
                continue;
            }
        };
        // serde_json's maps compare without regard to key order (the datum's keys are sorted).
        if event.to_json() != v.datum {
            failures.push(format!(
                "#{i} {}: decoded {} but the datum is {}",
                v.event_type,
                event.to_json(),
                v.datum
            ));
        }
        let mut again = Vec::new();
        match event.encode_avro(&mut again) {
            Ok(()) if again == v.bytes => {}
            Ok(()) => failures.push(format!("#{i} {}: re-encoded bytes differ", v.event_type)),
            Err(e) => failures.push(format!("#{i} {}: {e}", v.event_type)),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Every strict prefix of a vector is an error (the datum is incomplete), and so is the
/// vector followed by anything (oversized input).
#[test]
fn cut_short_or_lengthened_vectors_are_refused() {
    for v in vectors() {
        let ops = registry::find(&v.event_type).expect("registered").ops();
        for len in 0..v.bytes.len() {
            assert!(
                ops.decode_avro(&v.bytes[..len]).is_err(),
                "{}: a prefix of {len} of {} bytes decoded",
                v.event_type,
                v.bytes.len()
            );
        }
        for extra in [&[0u8][..], &[2], &v.bytes] {
            let mut long = v.bytes.clone();
            long.extend_from_slice(extra);
            match ops.decode_avro(&long) {
                Err(DecodeError::TrailingBytes { trailing, .. }) => assert_eq!(trailing, extra.len()),
                other => panic!("{}: {} extra bytes gave {other:?}", v.event_type, extra.len()),
            }
        }
    }
}

/// The typed API, on the two events of the benchmark: `decode` gives the struct,
/// `encode_into` appends the same bytes to a buffer that already holds some.
fn typed_round_trip<E: OpenEdxEvent + PartialEq>() {
    let mut seen = 0;
    for v in vectors().into_iter().filter(|v| v.event_type == E::EVENT_TYPE) {
        let event: E = avro::decode(&v.bytes).unwrap_or_else(|e| panic!("{e}"));
        // The schema is computed once per type and shared.
        assert!(std::ptr::eq(E::avro_schema(), E::avro_schema()));
        let mut buf = b"prefix".to_vec();
        avro::encode_into(&event, &mut buf).expect("encodes");
        assert_eq!(&buf[..6], b"prefix");
        assert_eq!(&buf[6..], &v.bytes[..]);
        assert_eq!(avro::encode(&event).expect("encodes"), v.bytes);
        seen += 1;
    }
    assert_eq!(seen, 3, "{}", E::EVENT_TYPE);
}

#[test]
fn typed_xblock_published() {
    typed_round_trip::<XBlockPublished>();
}

#[test]
fn typed_course_enrollment_created() {
    typed_round_trip::<CourseEnrollmentCreated>();
}

/// Decoding with the writer's schema (here the committed `.avsc` of 11.2.0, as a Schema
/// Registry would hand it out) gives the same events, and refuses the same bad input.
#[test]
fn vectors_decode_with_the_committed_schema_as_the_writers() {
    fn check<E: OpenEdxEvent + PartialEq>() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/openedx-schemas");
        let path = std::path::Path::new(dir).join(avro::schema_file_name(E::EVENT_TYPE));
        let writer: serde_avro_fast::Schema = std::fs::read_to_string(path).expect("schema").parse().expect("parses");
        for v in vectors().into_iter().filter(|v| v.event_type == E::EVENT_TYPE) {
            let event: E = avro::decode_with_writer_schema(&v.bytes, &writer).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(event, avro::decode::<E>(&v.bytes).expect("decodes"));
            let long = [&v.bytes[..], &[0]].concat();
            assert!(matches!(
                avro::decode_with_writer_schema::<E>(&long, &writer),
                Err(DecodeError::TrailingBytes { trailing: 1, .. })
            ));
            assert!(avro::decode_with_writer_schema::<E>(&v.bytes[..v.bytes.len() - 1], &writer).is_err());
        }
    }
    check::<XBlockPublished>();
    check::<CourseEnrollmentCreated>();
}
