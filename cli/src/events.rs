//! `events`: the event types this binary knows.

use clap::Args;
use serde_json::json;

use crate::error::CliError;
use crate::output::print_json_pretty;

/// Arguments of `events`.
#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Print a JSON array (event_type, minor_version, description, rust_type) instead of a table.
    #[arg(long)]
    json: bool,
    /// Only the event types containing this text.
    #[arg(long, value_name = "TEXT")]
    filter: Option<String>,
}

pub(crate) fn run(args: EventsArgs) -> Result<(), CliError> {
    let events: Vec<_> = openedx_events::registry::events()
        .into_iter()
        .filter(|d| args.filter.as_deref().is_none_or(|f| d.event_type.contains(f)))
        .collect();
    if args.json {
        let list: Vec<_> = events
            .iter()
            .map(|d| {
                json!({
                    "event_type": d.event_type,
                    "minor_version": d.minor_version(),
                    "description": one_line(d.description()),
                    "rust_type": d.rust_type,
                })
            })
            .collect();
        return print_json_pretty(&serde_json::Value::Array(list));
    }
    let width = events.iter().map(|d| d.event_type.len()).max().unwrap_or(0);
    let mut out = String::new();
    for d in &events {
        out.push_str(&format!(
            "{:width$}  {:>3}  {}\n",
            d.event_type,
            format!("v{}", d.minor_version()),
            one_line(d.description())
        ));
    }
    crate::output::write_stdout(&out)
}

/// The first line of a description, whitespace collapsed.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}
