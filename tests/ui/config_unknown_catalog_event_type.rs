use openedx_events::producer_config;

fn main() {
    let _ = producer_config! {
        "org.openedx.content_authoring.xblock.publishd.v1" => [
            { topic: "blocks", event_key_field: "xblock_info.usage_key", enabled: true },
        ],
    };
}
