use openedx_events::EventData;

/// A setting.
#[derive(EventData, Clone, Debug)]
pub struct Setting {
    /// `Some(None)` cannot be told from `None` on the wire, and Avro refuses a union in a union.
    pub value: Option<Option<String>>,
}

fn main() {}
