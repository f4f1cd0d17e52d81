//! Writing to stdout, where a closed pipe (`| head`) ends the tool quietly.

use std::io::Write;

use crate::error::CliError;

/// Writes text to stdout; a closed pipe is not an error.
pub(crate) fn write_stdout(text: &str) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(CliError::problems(format!("cannot write to stdout: {e}"))),
    }
}

/// Prints a JSON value, indented, on stdout.
pub(crate) fn print_json_pretty(value: &serde_json::Value) -> Result<(), CliError> {
    let mut text = serde_json::to_string_pretty(value).unwrap_or_default();
    text.push('\n');
    write_stdout(&text)
}

/// Prints a JSON value on one line of stdout.
pub(crate) fn print_json_line(value: &serde_json::Value) -> Result<(), CliError> {
    let mut text = value.to_string();
    text.push('\n');
    write_stdout(&text)
}
