//! # openedx-events-cli
//!
//! The `openedx-events` command-line tool: what operators of the Python stack do with
//! `manage.py generate_avro_schemas`, `produce_event` and `consume_events`, without a
//! Django project, plus checking a deployment's producer configuration before it ships
//! and encoding/decoding the Avro of one event by hand.
//!
//! ```text
//! openedx-events events [--json]
//! openedx-events schema TYPE... | --all [--out DIR [--force]]
//! openedx-events check-config FILE [--merge FILE] [--json]
//! openedx-events produce --event-type T --topic X [--key-field P] --data JSON|@FILE
//! openedx-events consume --topic X --group G [--from-beginning|--from-time ISO|--from-id ID] [--max N]
//! openedx-events avro encode --event-type T --data JSON|@FILE
//! openedx-events avro decode --event-type T HEX|@FILE
//! ```
//!
//! The tool knows every event registered in the binary: the Open edX catalog, and in a
//! service's own binary, that service's events too. To build such a binary, define the
//! events and call [`run`] from `main`:
//!
//! ```no_run
//! use openedx_events::openedx_event;
//!
//! /// Sent when a widget is made.
//! #[openedx_event("org.openedx.learning.widget.created.v1")]
//! #[derive(Clone, Debug)]
//! pub struct WidgetCreated {
//!     /// The widget's name.
//!     pub name: String,
//! }
//!
//! fn main() -> std::process::ExitCode {
//!     openedx_events_cli::run()
//! }
//! ```
//!
//! # Exit codes
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success |
//! | 1 | `check-config` found problems; a file could not be written |
//! | 2 | bad arguments or bad input: usage errors, unknown event type, invalid JSON, data or hex, a file that would be overwritten without `--force`, an unusable `EVENT_BUS_*` setting |
//! | 3 | the backend failed: cannot connect, delivery failed, the consumer stopped with an error |
#![warn(missing_docs)]

use std::ffi::OsString;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod avro_cmd;
mod check_config;
mod consume;
mod error;
mod events;
mod input;
mod output;
mod produce;
mod schema;

pub use error::{CliError, Exit};

/// Event types, schemas, producer configs and the event bus, from a terminal.
#[derive(Debug, Parser)]
#[command(
    name = "openedx-events",
    version,
    about = "Open edX events from a terminal: list events, export Avro schemas, check producer configs, produce, consume, encode and decode",
    after_help = EXIT_CODES,
    propagate_version = true
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

const EXIT_CODES: &str = "Exit codes: 0 success; 1 problems found (check-config) or a file could not be written; \
2 bad arguments or bad input; 3 backend failure.\n\
The event bus is configured as in the Python stack: EVENT_BUS_PRODUCER (memory, redis, kafka), \
EVENT_BUS_TOPIC_PREFIX, EVENT_BUS_REDIS_CONNECTION_URL, EVENT_BUS_KAFKA_BOOTSTRAP_SERVERS, \
EVENT_BUS_KAFKA_SCHEMA_REGISTRY_URL, EVENTS_SERVICE_NAME. Logs go to stderr (RUST_LOG, default warn).";

#[derive(Debug, Subcommand)]
enum Command {
    /// List the event types this binary knows, with minor version and description.
    Events(events::EventsArgs),
    /// Print or write the Avro schemas of events, named as openedx-events names them.
    Schema(schema::SchemaArgs),
    /// Validate a producer config (JSON or TOML, ADR 12 or ADR 14 shape) against the events.
    CheckConfig(check_config::CheckConfigArgs),
    /// Produce one event to the configured event bus and print where it was delivered.
    Produce(produce::ProduceArgs),
    /// Consume events of a topic and print each as one JSON line with its metadata.
    ///
    /// Each line is `{"topic", "metadata", "data"}`: the metadata as openedx-events writes it
    /// (`EventsMetadata.to_json_data()`), the data decoded (the Avro datum form, bytes as hex).
    /// An event is acknowledged once printed. A message the tool cannot read (unknown event
    /// type, bad metadata, undecodable data) is handled as this crate's consumers handle it:
    /// reported on stderr and moved to the dead-letter topic `{topic}-dead-letter`. Progress
    /// goes to stderr; Ctrl-C stops cleanly (exit 0).
    Consume(consume::ConsumeArgs),
    /// Encode event data as schemaless Avro, or decode it back to JSON.
    #[command(subcommand)]
    Avro(avro_cmd::AvroCommand),
}

/// Runs the tool with the process's arguments. Call it from `main` after defining
/// your own events: they are registered and the tool knows them.
pub fn run() -> ExitCode {
    main_with_args(std::env::args_os())
}

/// Runs the tool with the given arguments (the first one is the program name).
pub fn main_with_args<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            // Help and version go to stdout with 0; usage errors to stderr with 2.
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { Exit::BadInput.code() } else { 0 });
        }
    };
    init_tracing();
    match execute(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit().code())
        }
    }
}

/// Runs a parsed command.
pub fn execute(cli: Cli) -> Result<(), CliError> {
    openedx_events::registry::check().map_err(|e| CliError::bad_input(e.to_string()))?;
    match cli.command {
        Command::Events(args) => events::run(args),
        Command::Schema(args) => schema::run(args),
        Command::CheckConfig(args) => check_config::run(args),
        Command::Produce(args) => with_runtime(produce::run(args)),
        Command::Consume(args) => with_runtime(consume::run(args)),
        Command::Avro(cmd) => avro_cmd::run(cmd),
    }
}

fn with_runtime<F: std::future::Future<Output = Result<(), CliError>>>(fut: F) -> Result<(), CliError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| CliError::backend(format!("cannot start the async runtime: {e}")))?;
    runtime.block_on(fut)
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}
