//! A service's own `openedx-events` tool: it defines its events, then hands over to the
//! tool, which knows them alongside the Open edX catalog.
//!
//! ```text
//! cargo run -p openedx-events-cli --example custom_events -- events --filter example
//! ```

use openedx_events::openedx_event;

/// Sent when a file is uploaded to this example service.
#[openedx_event("org.openedx.example.file.uploaded.v1", minor_version = 2)]
#[derive(Clone, Debug)]
pub struct FileUploaded {
    /// The file name.
    pub name: String,
    /// Its SHA-256.
    pub checksum: Vec<u8>,
    /// A small preview, when one was made.
    pub preview: Option<Vec<u8>>,
}

fn main() -> std::process::ExitCode {
    openedx_events_cli::run()
}
