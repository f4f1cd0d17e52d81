//! Runtime producer configuration: both Python shapes, JSON, TOML and files,
//! `merge_producer_configs` semantics, and every start-up error naming the event,
//! topic and field.

use openedx_events::config::{ConfigError, ProducerConfig, TopicSettings};
use openedx_events::{openedx_event, EventBus, EventData, Settings};

/// A block.
#[derive(EventData, Clone, Debug)]
pub struct BlockData {
    /// Its key.
    pub usage_key: String,
    /// Its tags.
    pub tags: Vec<String>,
    /// Extra fields.
    pub extra: openedx_events::Map<String>,
}

/// Sent when a block changes.
#[openedx_event("org.openedx.content_authoring.test_block.changed.v1")]
#[derive(Clone, Debug)]
pub struct BlockChanged {
    /// The block.
    pub block: BlockData,
}

const EVENT: &str = "org.openedx.content_authoring.test_block.changed.v1";

fn errors(json: &str) -> Vec<ConfigError> {
    match ProducerConfig::from_json_str(json).and_then(|c| c.validate()) {
        Ok(_) => panic!("accepted: {json}"),
        Err(e) => e.0,
    }
}

#[test]
fn both_shapes_read_the_same() {
    let list = ProducerConfig::from_json_str(&format!(
        r#"{{"{EVENT}": [{{"topic": "blocks", "event_key_field": "block.usage_key", "enabled": true}}]}}"#
    ))
    .unwrap();
    let mapping = ProducerConfig::from_json_str(&format!(
        r#"{{"{EVENT}": {{"blocks": {{"event_key_field": "block.usage_key", "enabled": true}}}}}}"#
    ))
    .unwrap();
    assert_eq!(list, mapping);
    let routes = list.validate().unwrap();
    assert_eq!(routes.len(), 1);
    assert_eq!(routes[0].key.field_name, "usage_key");
}

#[test]
fn toml_in_both_shapes_and_files() {
    let mapping = format!("[\"{EVENT}\".blocks]\nevent_key_field = \"block.usage_key\"\nenabled = true\n");
    let list = format!("[[\"{EVENT}\"]]\ntopic = \"blocks\"\nevent_key_field = \"block.usage_key\"\nenabled = true\n");
    let a = ProducerConfig::from_toml_str(&mapping).unwrap();
    let b = ProducerConfig::from_toml_str(&list).unwrap();
    assert_eq!(a, b);
    a.validate().unwrap();

    let dir = std::env::temp_dir().join(format!("oe-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let toml_path = dir.join("producer.toml");
    std::fs::write(&toml_path, &mapping).unwrap();
    assert_eq!(ProducerConfig::from_file(&toml_path).unwrap(), a);
    let json_path = dir.join("producer.json");
    std::fs::write(&json_path, a.to_json().to_string()).unwrap();
    assert_eq!(ProducerConfig::from_file(&json_path).unwrap(), a);
    let yaml_path = dir.join("producer.yaml");
    std::fs::write(&yaml_path, "x").unwrap();
    let err = ProducerConfig::from_file(&yaml_path).unwrap_err().to_string();
    assert!(err.contains(".json or .toml"), "{err}");
    let err = ProducerConfig::from_file(dir.join("missing.json"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("missing.json"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn merge_follows_merge_producer_configs() {
    let base = ProducerConfig::from_json_str(&format!(
        r#"{{"{EVENT}": {{"a": {{"event_key_field": "block.usage_key", "enabled": true}},
                         "b": {{"event_key_field": "block.usage_key", "enabled": false}}}}}}"#
    ))
    .unwrap();
    let overrides = ProducerConfig::from_json_str(&format!(
        r#"{{"{EVENT}": {{"b": {{"enabled": true}}, "c": {{"event_key_field": "block.usage_key", "enabled": true}}}},
            "org.openedx.other.thing.v1": {{"d": {{"enabled": true}}}}}}"#
    ))
    .unwrap();
    let merged = base.merged(&overrides);
    assert_eq!(
        merged.get(EVENT, "a"),
        base.get(EVENT, "a"),
        "pairs only in base are kept"
    );
    assert_eq!(
        merged.get(EVENT, "b"),
        Some(&TopicSettings {
            event_key_field: Some("block.usage_key".into()),
            enabled: Some(true)
        }),
        "override sets enabled, keeps the key path"
    );
    assert!(merged.get(EVENT, "c").is_some(), "new pairs are added");
    assert!(
        merged.get("org.openedx.other.thing.v1", "d").is_some(),
        "new event types are added"
    );
    assert_eq!(
        base.get(EVENT, "b").unwrap().enabled,
        Some(false),
        "merging does not change the base"
    );
}

#[test]
fn malformed_json_and_toml() {
    let e = ProducerConfig::from_json_str("{\"x\": [").unwrap_err().to_string();
    assert!(
        e.contains("JSON producer config is malformed") && e.contains("line 1"),
        "{e}"
    );
    let e = ProducerConfig::from_toml_str("[a\nb = ").unwrap_err().to_string();
    assert!(e.contains("TOML producer config is malformed"), "{e}");
}

#[test]
fn wrong_shapes() {
    let e = ProducerConfig::from_json_str("[1, 2]").unwrap_err().to_string();
    assert!(e.contains("must be a mapping of event types"), "{e}");
    let e = ProducerConfig::from_json_str(&format!(r#"{{"{EVENT}": "blocks"}}"#))
        .unwrap_err()
        .to_string();
    assert!(e.contains(EVENT) && e.contains("found a string"), "{e}");
    let e = ProducerConfig::from_json_str(&format!(r#"{{"{EVENT}": ["blocks"]}}"#))
        .unwrap_err()
        .to_string();
    assert!(e.contains("item #0 must be a mapping"), "{e}");
}

#[test]
fn unknown_event_type_suggests_the_closest() {
    let errs = errors(
        r#"{"org.openedx.content_authoring.test_block.changd.v1": {"t": {"event_key_field": "block.usage_key", "enabled": true}}}"#,
    );
    match &errs[..] {
        [ConfigError::UnknownEventType { event_type, suggestion }] => {
            assert_eq!(event_type, "org.openedx.content_authoring.test_block.changd.v1");
            assert_eq!(suggestion.as_deref(), Some(EVENT));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn bad_key_paths_name_event_topic_and_field() {
    let cases = [
        (
            "block.usage_kye",
            "no field `usage_kye` in BlockData; valid fields: usage_key, tags, extra",
        ),
        ("blok", "no field `blok` in CloudEvent; valid fields: block"),
        (
            "block",
            "must end on a scalar field, but `block` is a record (BlockData)",
        ),
        ("block.tags", "must end on a scalar field, but `tags` is a list"),
        ("block.extra", "must end on a scalar field, but `extra` is a map"),
        (
            "block.usage_key.x",
            "field `usage_key` is a scalar (string), it has no field `x`",
        ),
        ("block..usage_key", "is empty or has an empty segment"),
    ];
    for (path, expected) in cases {
        let errs = errors(&format!(
            r#"{{"{EVENT}": {{"blocks": {{"event_key_field": "{path}", "enabled": true}}}}}}"#
        ));
        assert_eq!(errs.len(), 1, "{errs:?}");
        let msg = errs[0].to_string();
        assert!(
            msg.contains(EVENT) && msg.contains("\"blocks\"") && msg.contains(path),
            "{msg}"
        );
        assert!(msg.contains(expected), "{path}: {msg}");
    }
}

#[test]
fn wrong_types_and_missing_keys() {
    let errs = errors(&format!(
        r#"{{"{EVENT}": {{"blocks": {{"event_key_field": 3, "enabled": "yes"}}}}}}"#
    ));
    let msgs: Vec<String> = errs.iter().map(ToString::to_string).collect();
    assert!(
        msgs.iter()
            .any(|m| m.contains("\"event_key_field\" must be a string, found a number")),
        "{msgs:?}"
    );
    assert!(
        msgs.iter()
            .any(|m| m.contains("\"enabled\" must be a boolean, found a string")),
        "{msgs:?}"
    );
    assert!(
        msgs.iter().all(|m| m.contains(EVENT) && m.contains("\"blocks\"")),
        "{msgs:?}"
    );

    let errs = errors(&format!(
        r#"{{"{EVENT}": {{"blocks": {{"event_key_field": "block.usage_key"}}}}}}"#
    ));
    assert_eq!(
        errs[0].to_string(),
        format!("{EVENT} / topic \"blocks\": missing \"enabled\"")
    );
    let errs = errors(&format!(
        r#"{{"{EVENT}": [{{"event_key_field": "block.usage_key", "enabled": true}}]}}"#
    ));
    assert_eq!(
        errs[0].to_string(),
        format!("{EVENT} / topic \"#0\": missing \"topic\"")
    );
    let errs = errors(&format!(
        r#"{{"{EVENT}": {{"blocks": {{"event_key_field": "block.usage_key", "enabled": true, "enbled": false}}}}}}"#
    ));
    assert!(errs[0].to_string().contains("unknown key \"enbled\""), "{errs:?}");
}

#[test]
fn duplicate_topic_in_the_list_shape() {
    let errs = errors(&format!(
        r#"{{"{EVENT}": [{{"topic": "blocks", "event_key_field": "block.usage_key", "enabled": true}},
                       {{"topic": "blocks", "event_key_field": "block.usage_key", "enabled": false}}]}}"#
    ));
    assert_eq!(
        errs[0].to_string(),
        format!("{EVENT}: topic \"blocks\" is configured twice")
    );
}

#[test]
fn illegal_topics() {
    for (topic, why) in [("", "it is empty"), ("a b", "only ASCII letters"), ("..", "reserved")] {
        let errs = errors(&format!(
            r#"{{"{EVENT}": {{"{topic}": {{"event_key_field": "block.usage_key", "enabled": true}}}}}}"#
        ));
        assert!(errs[0].to_string().contains(why), "{errs:?}");
    }
    let long = "t".repeat(250);
    let errs = errors(&format!(
        r#"{{"{EVENT}": {{"{long}": {{"event_key_field": "block.usage_key", "enabled": true}}}}}}"#
    ));
    assert!(errs[0].to_string().contains("longer than 249"), "{errs:?}");
}

#[test]
fn every_problem_is_reported_and_start_is_refused() {
    let settings = Settings::new().with(
        "EVENT_BUS_PRODUCER_CONFIG",
        format!(
            r#"{{"{EVENT}": {{"a": {{"event_key_field": "block.nope", "enabled": true}},
                              "b b": {{"event_key_field": "block.usage_key", "enabled": true}}}},
                "org.openedx.missing.event.v1": {{"c": {{"event_key_field": "x", "enabled": true}}}}}}"#
        ),
    );
    let err = EventBus::builder().settings(settings).start().unwrap_err().to_string();
    assert!(err.starts_with("invalid producer config (3 problems):"), "{err}");
    assert!(
        err.contains("`nope`") && err.contains("\"b b\"") && err.contains("org.openedx.missing.event.v1"),
        "{err}"
    );
}

/// The only test of this binary that starts a bus from the process environment (the
/// others give settings), so the variables it sets reach no other test.
#[test]
fn settings_from_an_environment_with_non_utf8_values_never_panic() {
    use std::os::unix::ffi::OsStrExt;
    let not_utf8 = std::ffi::OsStr::from_bytes(b"caf\xe9");
    // A variable that is none of ours does not matter.
    std::env::set_var("OEV_TEST_UNRELATED_NON_UTF8", not_utf8);
    let settings = Settings::from_env();
    assert!(settings.iter().all(|(k, _)| k.starts_with("EVENT")), "{settings:?}");
    let bus = EventBus::builder().start().expect("an unrelated variable is ignored");
    drop(bus);
    // One of ours that is not UTF-8: start-up is refused, naming the variable.
    std::env::set_var("EVENT_BUS_OEV_TEST_NON_UTF8", not_utf8);
    let err = EventBus::builder().start().map(drop).unwrap_err().to_string();
    std::env::remove_var("EVENT_BUS_OEV_TEST_NON_UTF8");
    std::env::remove_var("OEV_TEST_UNRELATED_NON_UTF8");
    assert!(
        err.contains("EVENT_BUS_OEV_TEST_NON_UTF8") && err.contains("UTF-8"),
        "{err}"
    );
}

#[test]
fn an_override_for_an_unknown_event_type_with_no_topics_is_reported() {
    let base = ProducerConfig::from_json_str(&format!(
        r#"{{"{EVENT}": {{"blocks": {{"event_key_field": "block.usage_key", "enabled": true}}}}}}"#
    ))
    .unwrap();
    let overrides = ProducerConfig::from_json_str(r#"{"org.openedx.bogus.v1": {}}"#).unwrap();
    let merged = base.merged(&overrides);
    let errs = merged.validate().map(drop).unwrap_err().0;
    assert!(
        matches!(&errs[..], [ConfigError::UnknownEventType { event_type, .. }] if event_type == "org.openedx.bogus.v1"),
        "{errs:?}"
    );
    // The list shape too, and through start-up.
    let settings = Settings::new().with("EVENT_BUS_PRODUCER_CONFIG", r#"{"org.openedx.bogus.v1": []}"#);
    let err = EventBus::builder()
        .settings(settings)
        .start()
        .map(drop)
        .unwrap_err()
        .to_string();
    assert!(err.contains("org.openedx.bogus.v1"), "{err}");
}

#[test]
fn a_key_given_twice_in_a_json_config_is_refused_naming_it() {
    let entry = r#"{"event_key_field": "block.usage_key", "enabled": true}"#;
    let twice = format!(
        r#"{{"{EVENT}": {{"blocks": {entry}, "blocks": {{"event_key_field": "block.nope", "enabled": false}}}}}}"#
    );
    let errs = ProducerConfig::from_json_str(&twice).map(drop).unwrap_err().0;
    assert!(
        errs[0]
            .to_string()
            .contains(&format!("`\"{EVENT}\".blocks` is given twice")),
        "{errs:?}"
    );
    let settings = Settings::new().with(
        "EVENT_BUS_PRODUCER_CONFIG",
        format!(r#"{{"{EVENT}": {{"blocks": {entry}}}, "{EVENT}": {{}}}}"#),
    );
    let err = EventBus::builder()
        .settings(settings)
        .start()
        .map(drop)
        .unwrap_err()
        .to_string();
    assert!(err.contains("is given twice"), "{err}");
}
