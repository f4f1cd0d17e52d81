//! Quick start: two events, a producer configuration declared in a macro block,
//! a receiver, a few sends, and what the embedded in-memory bus received.
//!
//! Run it with `cargo run --example quickstart`.

use openedx_events::keys::{CourseKey, UsageKey};
use openedx_events::{openedx_event, producer_config, EventBus, EventData, OpenEdxEvent};

/// An XBlock, as these events carry it.
#[derive(EventData, Clone, Debug, PartialEq)]
pub struct BlockInfo {
    /// The block's usage key.
    pub usage_key: UsageKey,
    /// The block type (`video`, `problem`...).
    pub block_type: String,
}

/// Sent when an author publishes a block.
#[openedx_event("org.openedx.quickstart.block.published.v1")]
#[derive(Clone, Debug, PartialEq)]
pub struct BlockPublished {
    /// The published block.
    pub block: BlockInfo,
}

/// Sent when a learner finishes a course.
#[openedx_event("org.openedx.quickstart.course.finished.v1")]
#[derive(Clone, Debug, PartialEq)]
pub struct CourseFinished {
    /// The learner's id.
    pub user_id: i64,
    /// The course.
    pub course_key: CourseKey,
    /// The grade, when one was computed.
    pub grade: Option<f64>,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Which events go to which topics, with which key: checked when this compiles.
    // EVENT_BUS_PRODUCER (memory by default), EVENT_BUS_TOPIC_PREFIX and
    // EVENT_BUS_PRODUCER_CONFIG are read from the environment at start-up.
    let bus = EventBus::builder()
        .producer_config(producer_config! {
            "org.openedx.quickstart.block.published.v1" => [
                { topic: "content-authoring-xblock-lifecycle", event_key_field: "block.usage_key", enabled: true },
                { topic: "content-authoring-xblock-published", event_key_field: "block.usage_key", enabled: true },
            ],
            "org.openedx.quickstart.course.finished.v1" => [
                { topic: "learning-course-completion", event_key_field: "course_key", enabled: true },
            ],
        })
        .start()?;

    // A receiver in this process, like a Django signal receiver.
    BlockPublished::signal().connect(|event| {
        println!(
            "receiver: {} published ({})",
            event.data.block.usage_key, event.metadata.id
        );
    });

    for (i, block_type) in ["video", "problem"].into_iter().enumerate() {
        BlockPublished::signal().send_event(BlockPublished {
            block: BlockInfo {
                usage_key: format!("block-v1:edX+DemoX+2026+type@{block_type}+block@b{i}").parse()?,
                block_type: block_type.to_owned(),
            },
        });
    }
    CourseFinished::signal().send_event(CourseFinished {
        user_id: 42,
        course_key: "course-v1:edX+DemoX+2026".parse()?,
        grade: Some(0.93),
    });

    match bus.memory() {
        Some(memory) => {
            for topic in memory.topics() {
                println!("topic {topic}:");
                for record in memory.events(&topic) {
                    let key = record.key.as_ref().map(ToString::to_string).unwrap_or_default();
                    println!("  {} key={key} id={}", record.metadata.event_type, record.metadata.id);
                }
            }
        }
        None => println!("produced with the {} producer", bus.producer().name()),
    }
    Ok(())
}
