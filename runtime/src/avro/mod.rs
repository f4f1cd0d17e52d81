//! Avro schemas of events (as openedx-events generates them), the schemaless Avro codec
//! of event data, the schema-evolution check, and writing schemas to `.avsc` files.
//!
//! - [`EventSchema`]: one per event type, computed on first use, as a parsed schema and
//!   as JSON text in generated order, in the Schema Registry's sorted form and in Avro's
//!   Parsing Canonical Form.
//! - [`encode`] / [`encode_into`] / [`decode`]: event data to and from schemaless Avro.
//! - [`check_compatibility`]: fails when the current schemas cannot read data written with
//!   committed `.avsc` files, or the reverse.
//! - [`write_schemas`]: what openedx-events' `generate_avro_schemas` command does.

mod codec;
mod evolution;
mod files;
pub mod json_text;
mod schema;

pub(crate) use codec::check_item_budget;
pub use codec::{decode, decode_with_writer_schema, encode, encode_into, DecodeError, EncodeError};
pub use evolution::{
    assert_compatible, check_compatibility, schema_mismatches, Direction, Incompatibility, Mismatch, Problem,
};
pub use files::{schema_file_name, write_schema_files, write_schemas};
pub use schema::{canonical_form, EventSchema, SchemaCell, CLOUD_EVENT_DOC};
