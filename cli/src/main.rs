//! The `openedx-events` binary: the Open edX event catalog and the command-line tool.

fn main() -> std::process::ExitCode {
    openedx_events_cli::run()
}
