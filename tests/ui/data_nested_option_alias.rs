use openedx_events::EventData;

/// An optional value, under another name.
pub type Maybe<T> = Option<T>;

/// Settings.
#[derive(EventData, Clone, Debug)]
pub struct Settings {
    /// An option inside an option, hidden by the alias, inside a list.
    pub values: Vec<Option<Maybe<i64>>>,
}

fn main() {}
