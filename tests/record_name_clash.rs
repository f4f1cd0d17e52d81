//! Two record types with one Avro name in one event: the schema would define the name
//! once and every encode of the event would fail. The bus refuses to start, naming both
//! Rust types and the name.

use openedx_events::{openedx_event, EventData, OpenEdxEvent};

mod m1 {
    /// A record named `Inner`.
    #[derive(openedx_events::EventData, Clone, Debug, PartialEq)]
    pub struct Inner {
        /// A number.
        pub n: i64,
    }
}

mod m2 {
    /// Another record named `Inner`.
    #[derive(openedx_events::EventData, Clone, Debug, PartialEq)]
    pub struct Inner {
        /// A text.
        pub s: String,
    }
}

/// Renamed onto the name of `m1::Inner`.
#[derive(EventData, Clone, Debug, PartialEq)]
#[event_data(name = "Inner")]
pub struct Renamed {
    /// A flag.
    pub b: bool,
}

/// Sent in this test: two different records both named `Inner`.
#[openedx_event("org.openedx.learning.test_clash.modules.v1")]
#[derive(Clone, Debug, PartialEq)]
pub struct ByModule {
    /// The first.
    pub first: m1::Inner,
    /// The second.
    pub second: m2::Inner,
}

/// Sent in this test: a record renamed onto another's name.
#[openedx_event("org.openedx.learning.test_clash.renamed.v1")]
#[derive(Clone, Debug, PartialEq)]
pub struct ByRename {
    /// The first.
    pub first: m1::Inner,
    /// In a list, the renamed one.
    pub others: Vec<Renamed>,
}

/// Sent in this test: one record type used twice is no clash.
#[openedx_event("org.openedx.learning.test_clash.reused.v1")]
#[derive(Clone, Debug, PartialEq)]
pub struct Reused {
    /// The first.
    pub first: m1::Inner,
    /// Again.
    pub again: Option<m1::Inner>,
}

#[test]
fn two_records_with_one_avro_name_stop_the_start_naming_both() {
    let err = openedx_events::EventBus::builder()
        .settings(openedx_events::Settings::new())
        .start()
        .expect_err("two records named Inner")
        .to_string();
    for part in [
        "Inner",
        "record_name_clash::m1::Inner",
        "record_name_clash::m2::Inner",
        ByModule::EVENT_TYPE,
    ] {
        assert!(err.contains(part), "{part:?} in {err}");
    }
    let clashes = openedx_events::registry::record_name_clashes();
    let found: Vec<(&str, &str, &str, &str)> = clashes
        .iter()
        .map(|c| (c.event_type, c.record_name, c.first, c.second))
        .collect();
    assert_eq!(
        found,
        [
            (
                ByModule::EVENT_TYPE,
                "Inner",
                "record_name_clash::m1::Inner",
                "record_name_clash::m2::Inner"
            ),
            (
                ByRename::EVENT_TYPE,
                "Inner",
                "record_name_clash::m1::Inner",
                "record_name_clash::Renamed"
            ),
        ]
    );
    // One type used twice is defined once and referenced by name.
    assert_eq!(
        Reused::avro_schema().json()["fields"][1]["type"],
        serde_json::json!(["null", "Inner"])
    );
    let event = Reused {
        first: m1::Inner { n: 1 },
        again: Some(m1::Inner { n: 2 }),
    };
    let bytes = openedx_events::avro::encode(&event).expect("encoded");
    assert_eq!(openedx_events::avro::decode::<Reused>(&bytes).expect("decoded"), event);
}
