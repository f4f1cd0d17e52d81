//! Writing event schemas to `.avsc` files, as openedx-events' `generate_avro_schemas`
//! management command does, for committing them and checking evolution against them.

use std::io;
use std::path::{Path, PathBuf};

use crate::event::{registry, EventDescriptor};

/// The file name openedx-events gives the schema of `event_type`: the type with `.`
/// replaced by `+`, then `_schema.avsc`.
///
/// ```
/// assert_eq!(
///     openedx_events::avro::schema_file_name("org.openedx.content_authoring.xblock.published.v1"),
///     "org+openedx+content_authoring+xblock+published+v1_schema.avsc"
/// );
/// ```
pub fn schema_file_name(event_type: &str) -> String {
    format!("{}_schema.avsc", event_type.replace('.', "+"))
}

/// Writes the schema of every event type registered in this binary to `dir` (created if
/// missing), one file per event named by [`schema_file_name`], with the text openedx-events
/// writes (`json.dumps(schema, indent=2)`). Existing files are overwritten. Returns the
/// paths written, sorted by event type.
pub fn write_schemas(dir: impl AsRef<Path>) -> io::Result<Vec<PathBuf>> {
    write_schema_files(dir, registry::events())
}

/// Like [`write_schemas`], for the given event types only (e.g. the one you just added:
/// openedx-events recommends leaving committed schemas unchanged).
pub fn write_schema_files<'a>(
    dir: impl AsRef<Path>,
    events: impl IntoIterator<Item = &'a EventDescriptor>,
) -> io::Result<Vec<PathBuf>> {
    let dir = dir.as_ref();
    std::fs::create_dir_all(dir)?;
    let mut written = Vec::new();
    for event in events {
        let path = dir.join(schema_file_name(event.event_type));
        std::fs::write(&path, event.ops().schema().file_text())?;
        written.push(path);
    }
    Ok(written)
}
