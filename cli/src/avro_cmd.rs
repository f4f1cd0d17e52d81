//! `avro encode` / `avro decode`: the schemaless Avro of one event's data, by hand
//! (what to reach for when a consumer says it cannot read a message).

use clap::{Args, Subcommand};

use crate::error::{find_event, CliError};
use crate::input::{data_json, load_event_data, parse_hex, read_arg};
use crate::output::{print_json_line, print_json_pretty, write_stdout};

/// `avro` subcommands.
#[derive(Debug, Subcommand)]
pub enum AvroCommand {
    /// Print the schemaless Avro of event data (given as JSON) as hex.
    Encode(EncodeArgs),
    /// Print schemaless Avro event data (given as hex) as JSON.
    Decode(DecodeArgs),
}

/// Arguments of `avro encode`.
#[derive(Debug, Args)]
pub struct EncodeArgs {
    /// The event type.
    #[arg(long, value_name = "TYPE")]
    event_type: String,
    /// The event data as JSON (the Avro datum form: keys and times as strings, bytes as hex),
    /// or @FILE (@- for standard input).
    #[arg(long, value_name = "JSON|@FILE")]
    data: String,
}

/// Arguments of `avro decode`.
#[derive(Debug, Args)]
pub struct DecodeArgs {
    /// The event type.
    #[arg(long, value_name = "TYPE")]
    event_type: String,
    /// The bytes as hex, or @FILE holding hex (@- for standard input).
    #[arg(value_name = "HEX|@FILE")]
    input: String,
    /// The file holds the raw bytes, not hex.
    #[arg(long)]
    binary: bool,
    /// The bytes start with Confluent Schema Registry framing (a Kafka message value):
    /// skip the magic byte and schema id (printed on stderr).
    #[arg(long)]
    framed: bool,
    /// Indent the JSON.
    #[arg(long)]
    pretty: bool,
}

/// Runs an `avro` subcommand.
pub(crate) fn run(cmd: AvroCommand) -> Result<(), CliError> {
    match cmd {
        AvroCommand::Encode(args) => encode(args),
        AvroCommand::Decode(args) => decode(args),
    }
}

fn encode(args: EncodeArgs) -> Result<(), CliError> {
    let event = find_event(&args.event_type)?;
    let data = load_event_data(event, &args.data)?;
    let mut bytes = Vec::new();
    data.encode_avro(&mut bytes)
        .map_err(|e| CliError::bad_input(e.to_string()))?;
    write_stdout(&format!("{}\n", hex::encode(bytes)))
}

fn decode(args: DecodeArgs) -> Result<(), CliError> {
    let event = find_event(&args.event_type)?;
    if args.binary && !args.input.starts_with('@') {
        return Err(CliError::bad_input("--binary needs @FILE"));
    }
    let bytes = if args.binary {
        read_arg(&args.input)?.0
    } else {
        let (text, origin) = read_arg(&args.input)?;
        let origin = if args.input.starts_with('@') {
            origin
        } else {
            "the input".to_owned()
        };
        let text = String::from_utf8(text)
            .map_err(|_| CliError::bad_input(format!("{origin} is not hex text; use --binary for raw bytes")))?;
        parse_hex(&text, &origin)?
    };
    let body = if args.framed {
        let (id, body) = openedx_events_frame(&bytes)?;
        eprintln!("schema id {id}");
        body
    } else {
        &bytes[..]
    };
    let data = event
        .ops()
        .decode_avro_traced(body)
        .map_err(|e| CliError::bad_input(e.to_string()))?;
    let json = data_json(&*data);
    if args.pretty {
        print_json_pretty(&json)
    } else {
        print_json_line(&json)
    }
}

/// Splits Confluent framing: magic byte 0, 4-byte big-endian schema id, body.
#[cfg(feature = "kafka")]
fn openedx_events_frame(bytes: &[u8]) -> Result<(u32, &[u8]), CliError> {
    openedx_events::kafka::registry::parse_frame(bytes).map_err(|e| CliError::bad_input(format!("--framed: {e}")))
}

#[cfg(not(feature = "kafka"))]
fn openedx_events_frame(_: &[u8]) -> Result<(u32, &[u8]), CliError> {
    Err(CliError::bad_input(
        "--framed needs the tool built with the kafka feature",
    ))
}
