//! Compile-time mistakes: each file under tests/ui is one mistake, with the
//! message the user must see in the matching .stderr file; and the same mistakes made
//! in a configuration read at start-up, which must be told in the same words.

use openedx_events::config::ProducerConfig;
use openedx_events::{openedx_event, EventData};

#[test]
fn compile_errors() {
    let t = trybuild::TestCases::new();
    t.compile_fail(concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/ui/*.rs"));
}

/// The data and event of the `config_*` cases, registered here so that the start-up
/// check can be given the same configurations.
mod same_event {
    use super::*;

    /// A block.
    #[derive(EventData, Clone, Debug)]
    pub struct BlockData {
        /// Its key.
        pub usage_key: String,
        /// Its tags.
        pub tags: Vec<String>,
        /// Its owner.
        pub owner: Option<OwnerData>,
    }

    /// An owner.
    #[derive(EventData, Clone, Debug)]
    pub struct OwnerData {
        /// The id.
        pub id: i64,
    }

    /// Sent when a block is published.
    #[openedx_event("org.openedx.content_authoring.block.published.v1")]
    #[derive(Clone, Debug)]
    pub struct BlockPublished {
        /// The block.
        pub block: BlockData,
    }
}

/// The start-up check's message for one (event type, topic, key path) entry.
fn start_up_error(event_type: &str, topic: &str, path: &str) -> String {
    let json = serde_json::json!({ event_type: { topic: { "event_key_field": path, "enabled": true } } });
    let config = ProducerConfig::from_value(&json).expect("well-formed");
    let errors = config.validate().expect_err("a mistake").0;
    assert_eq!(errors.len(), 1, "{errors:?}");
    errors[0].to_string()
}

/// The error line of a case's .stderr (`error...: <message>`), without the prefix.
fn build_error(case: &str) -> String {
    let path = format!("{}/../tests/ui/{case}.stderr", env!("CARGO_MANIFEST_DIR"));
    let stderr = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let line = stderr.lines().next().expect("an error line");
    let message = line.split_once(": ").expect("error: message").1;
    message
        .strip_prefix("evaluation panicked: ")
        .unwrap_or(message)
        .to_owned()
}

const EVENT: &str = "org.openedx.content_authoring.block.published.v1";

/// A key-path typo: the build error and the start-up error carry the same sentence,
/// with the corrected string.
#[test]
fn key_path_typo_same_words_at_build_time_and_start_up() {
    let build = build_error("config_key_path_unknown_nested_field");
    let start = start_up_error(EVENT, "blocks", "block.usage_kye");
    let sentence = r#"bad event_key_field "block.usage_kye": no field `usage_kye` in BlockData; valid fields: usage_key, tags, owner; did you mean "block.usage_key"?"#;
    assert_eq!(build, sentence);
    assert!(start.ends_with(sentence), "{start}");
}

/// An event-type typo: same sentence, suggesting the type string (not the alias).
#[test]
fn event_type_typo_same_words_at_build_time_and_start_up() {
    let build = build_error("config_unknown_event_type");
    let start = start_up_error(
        "org.openedx.content_authoring.block.publishd.v1",
        "blocks",
        "block.usage_key",
    );
    assert_eq!(
        start,
        r#"no event of type "org.openedx.content_authoring.block.publishd.v1" is registered in this binary; did you mean "org.openedx.content_authoring.block.published.v1"?"#
    );
    assert!(build.starts_with(&start), "{build}");
}

/// A bad topic: same sentence.
#[test]
fn bad_topic_same_words_at_build_time_and_start_up() {
    let build = build_error("config_topic_illegal_characters");
    let start = start_up_error(EVENT, "content authoring/blocks", "block.usage_key");
    assert_eq!(
        build,
        r#"topic "content authoring/blocks" is not a valid topic name: ' ' is not allowed: only ASCII letters, digits, `.`, `_` and `-` are allowed"#
    );
    assert_eq!(start, format!("{EVENT}: {build}"));
}
