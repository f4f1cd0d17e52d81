//! `schema`: print or write the Avro schemas of events, as openedx-events'
//! `generate_avro_schemas` writes them.

use std::path::PathBuf;

use clap::Args;
use openedx_events::avro::{schema_file_name, write_schema_files};
use openedx_events::event::EventDescriptor;

use crate::error::{find_event, CliError};

/// Arguments of `schema`.
#[derive(Debug, Args)]
#[command(arg_required_else_help = true)]
pub struct SchemaArgs {
    /// Event types whose schema to print (or write, with --out).
    #[arg(value_name = "TYPE", required_unless_present = "all", conflicts_with = "all")]
    event_types: Vec<String>,
    /// Every event type this binary knows.
    #[arg(long)]
    all: bool,
    /// Write one file per event to this directory (created if missing), named like
    /// `org+openedx+learning+course+enrollment+created+v1_schema.avsc`.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Overwrite files that already exist in --out.
    #[arg(long, requires = "out")]
    force: bool,
}

pub(crate) fn run(args: SchemaArgs) -> Result<(), CliError> {
    let events: Vec<&'static EventDescriptor> = if args.all {
        openedx_events::registry::events()
    } else {
        args.event_types
            .iter()
            .map(|t| find_event(t))
            .collect::<Result<_, _>>()?
    };
    let Some(dir) = args.out else {
        let mut text = String::new();
        for event in &events {
            text.push_str(&event.ops().schema().file_text());
            text.push('\n');
        }
        return crate::output::write_stdout(&text);
    };
    if !args.force {
        let existing: Vec<String> = events
            .iter()
            .map(|e| dir.join(schema_file_name(e.event_type)))
            .filter(|p| p.exists())
            .map(|p| p.display().to_string())
            .collect();
        if !existing.is_empty() {
            return Err(CliError::bad_input(format!(
                "{} file(s) already exist; use --force to overwrite them: {}",
                existing.len(),
                existing.join(", ")
            )));
        }
    }
    let written = write_schema_files(&dir, events.iter().copied())
        .map_err(|e| CliError::problems(format!("cannot write schemas to {}: {e}", dir.display())))?;
    eprintln!("wrote {} schema file(s) to {}", written.len(), dir.display());
    Ok(())
}
