use openedx_events::{openedx_event, producer_config, EventData};

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

fn main() {
    let _ = producer_config! {
        "org.openedx.content_authoring.block.published.v1" => [
            { topic: "blocks", event_key_field: "self", enabled: true },
        ],
    };
}
