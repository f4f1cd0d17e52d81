//! Two structs declaring one event type in one binary: the bus refuses to start,
//! naming both.

mod first {
    /// Sent first.
    #[openedx_events::openedx_event("org.openedx.learning.test_duplicate.sent.v1")]
    #[derive(Clone, Debug)]
    pub struct Sent {
        /// A number.
        pub n: i64,
    }
}

mod second {
    /// Sent again, by another struct.
    #[openedx_events::openedx_event("org.openedx.learning.test_duplicate.sent.v1")]
    #[derive(Clone, Debug)]
    pub struct AlsoSent {
        /// A text.
        pub s: String,
    }
}

#[test]
fn start_up_names_both_structs() {
    let err = openedx_events::EventBus::builder()
        .settings(openedx_events::Settings::new())
        .start()
        .unwrap_err()
        .to_string();
    assert!(err.contains("org.openedx.learning.test_duplicate.sent.v1"), "{err}");
    assert!(err.contains("duplicate_event_type::first::Sent"), "{err}");
    assert!(err.contains("duplicate_event_type::second::AlsoSent"), "{err}");
    let _ = (first::Sent { n: 1 }, second::AlsoSent { s: String::new() });
}
