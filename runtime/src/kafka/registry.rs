//! A client of a Confluent-compatible Schema Registry, and the Schema Registry
//! framing of Kafka keys and values, as edx-event-bus-kafka uses them.
//!
//! Framing: byte `0x00`, the schema id as 4 bytes big-endian, then the schemaless
//! Avro body. Subjects follow the topic-record strategy: `<full_topic>-<record name>`.
//!
//! The client caches ids per (subject, schema) and schemas per id, so the registry is
//! called once per subject and schema, never per event.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use crate::settings::Settings;

/// The first byte of a Schema Registry framed key or value.
pub const MAGIC_BYTE: u8 = 0;

/// Length of the framing before the Avro body.
pub const FRAME_HEADER_LEN: usize = 5;

/// The framing prefix of a body written with schema `id`.
pub fn frame_header(id: u32) -> [u8; FRAME_HEADER_LEN] {
    let b = id.to_be_bytes();
    [MAGIC_BYTE, b[0], b[1], b[2], b[3]]
}

/// A key or value that is not Schema Registry framed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    /// Fewer than five bytes.
    #[error("message of {0} bytes is too short for Schema Registry framing")]
    TooShort(usize),
    /// The first byte is not `0`.
    #[error("unknown magic byte {0:#04x} (expected 0x00)")]
    BadMagic(u8),
}

/// Splits a framed key or value into its schema id and Avro body.
///
/// ```
/// use openedx_events::kafka::registry::{frame_header, parse_frame};
/// let mut bytes = frame_header(7).to_vec();
/// bytes.push(42);
/// assert_eq!(parse_frame(&bytes).unwrap(), (7, &[42u8][..]));
/// assert!(parse_frame(&[1, 0, 0, 0, 7]).is_err());
/// ```
pub fn parse_frame(bytes: &[u8]) -> Result<(u32, &[u8]), FramingError> {
    if bytes.len() < FRAME_HEADER_LEN {
        return Err(FramingError::TooShort(bytes.len()));
    }
    if bytes[0] != MAGIC_BYTE {
        return Err(FramingError::BadMagic(bytes[0]));
    }
    let id = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
    Ok((id, &bytes[FRAME_HEADER_LEN..]))
}

/// The value subject of an event type on a full topic: `<full_topic>-<event_type>.CloudEvent`.
pub fn value_subject(full_topic: &str, event_type: &str) -> String {
    format!("{full_topic}-{event_type}.CloudEvent")
}

/// The key subject of a primitive key on a full topic: `<full_topic>-<avro_type>`
/// (a primitive's record name is its type, as confluent-kafka's serializer sees it).
pub fn key_subject(full_topic: &str, avro_type: &str) -> String {
    format!("{full_topic}-{avro_type}")
}

/// Why a registry call failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The registry could not be reached or did not answer in time.
    #[error("schema registry request to {url} failed: {message}")]
    Http {
        /// The URL called (without credentials).
        url: String,
        /// What went wrong.
        message: String,
    },
    /// The registry answered with an error status.
    #[error("schema registry answered {status} to {url}: {body}")]
    Status {
        /// The HTTP status.
        status: u16,
        /// The URL called.
        url: String,
        /// The answer (truncated).
        body: String,
    },
    /// The answer was not what the API defines.
    #[error("unexpected schema registry answer from {url}: {message}")]
    BadAnswer {
        /// The URL called.
        url: String,
        /// What was wrong.
        message: String,
    },
    /// No registry URL is configured.
    #[error("EVENT_BUS_KAFKA_SCHEMA_REGISTRY_URL is not set")]
    NotConfigured,
    /// The schema the registry returned is not a valid Avro schema.
    #[error("schema {id} from the registry does not parse: {message}")]
    BadSchema {
        /// The schema id.
        id: u32,
        /// The parser's message.
        message: String,
    },
}

/// A schema fetched by id, with its parsed form.
pub struct FetchedSchema {
    /// The schema id.
    pub id: u32,
    /// The schema text, as the registry holds it.
    pub text: String,
    /// The parsed schema.
    pub parsed: serde_avro_fast::Schema,
}

impl std::fmt::Debug for FetchedSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FetchedSchema")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// A Confluent Schema Registry client with caches.
///
/// One client should be used from one tokio runtime (its connection pool belongs to it).
pub struct SchemaRegistryClient {
    base: String,
    http: reqwest::Client,
    auth: Option<(String, String)>,
    ids: Mutex<HashMap<(String, String), u32>>,
    schemas: Mutex<HashMap<u32, Arc<FetchedSchema>>>,
}

impl std::fmt::Debug for SchemaRegistryClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SchemaRegistryClient")
            .field("url", &crate::settings::redact_url(&self.base))
            .field("basic_auth", &self.auth.is_some())
            .finish_non_exhaustive()
    }
}

const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

impl SchemaRegistryClient {
    /// A client of the registry at `url`, with optional basic-auth key and secret.
    pub fn new(url: &str, auth: Option<(String, String)>) -> Result<Self, RegistryError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| RegistryError::Http {
                url: url.to_owned(),
                message: e.to_string(),
            })?;
        Ok(Self {
            base: url.trim_end_matches('/').to_owned(),
            http,
            auth,
            ids: Mutex::default(),
            schemas: Mutex::default(),
        })
    }

    /// From `EVENT_BUS_KAFKA_SCHEMA_REGISTRY_URL`, with `EVENT_BUS_KAFKA_SCHEMA_REGISTRY_API_KEY`
    /// and `_API_SECRET` as basic auth when set.
    pub fn from_settings(settings: &Settings) -> Result<Self, RegistryError> {
        let url = settings
            .get("EVENT_BUS_KAFKA_SCHEMA_REGISTRY_URL")
            .ok_or(RegistryError::NotConfigured)?;
        let key = settings.get("EVENT_BUS_KAFKA_SCHEMA_REGISTRY_API_KEY");
        let secret = settings.get("EVENT_BUS_KAFKA_SCHEMA_REGISTRY_API_SECRET");
        let auth = match (key, secret) {
            (None, None) => None,
            (k, s) => Some((k.unwrap_or_default().to_owned(), s.unwrap_or_default().to_owned())),
        };
        Self::new(url, auth)
    }

    /// The cached id of a (subject, schema) pair, if registered through this client.
    pub fn cached_id(&self, subject: &str, schema: &str) -> Option<u32> {
        let ids = self.ids.lock().unwrap_or_else(|e| e.into_inner());
        ids.get(&(subject.to_owned(), schema.to_owned())).copied()
    }

    /// Registers `schema` (Avro JSON text) under `subject` (or finds it registered)
    /// and returns its id; cached, so the registry is called once per pair.
    pub async fn register(&self, subject: &str, schema: &str) -> Result<u32, RegistryError> {
        if let Some(id) = self.cached_id(subject, schema) {
            return Ok(id);
        }
        let url = format!("{}/subjects/{}/versions", self.base, encode_path(subject));
        let body = serde_json::json!({ "schema": schema }).to_string();
        let answer = self.send(self.http.post(&url).body(body), &url).await?;
        let id = answer
            .get("id")
            .and_then(Value::as_u64)
            .and_then(|id| u32::try_from(id).ok())
            .ok_or_else(|| RegistryError::BadAnswer {
                url: url.clone(),
                message: "no integer `id`".into(),
            })?;
        let mut ids = self.ids.lock().unwrap_or_else(|e| e.into_inner());
        ids.insert((subject.to_owned(), schema.to_owned()), id);
        Ok(id)
    }

    /// The schema registered with `id`, parsed; cached.
    pub async fn schema(&self, id: u32) -> Result<Arc<FetchedSchema>, RegistryError> {
        if let Some(s) = self.schemas.lock().unwrap_or_else(|e| e.into_inner()).get(&id) {
            return Ok(s.clone());
        }
        let url = format!("{}/schemas/ids/{id}", self.base);
        let answer = self.send(self.http.get(&url), &url).await?;
        if let Some(t) = answer.get("schemaType").and_then(Value::as_str) {
            if t != "AVRO" {
                return Err(RegistryError::BadSchema {
                    id,
                    message: format!("schema type {t}, not AVRO"),
                });
            }
        }
        let text = answer
            .get("schema")
            .and_then(Value::as_str)
            .ok_or_else(|| RegistryError::BadAnswer {
                url: url.clone(),
                message: "no string `schema`".into(),
            })?
            .to_owned();
        let parsed = text
            .parse::<serde_avro_fast::Schema>()
            .map_err(|e| RegistryError::BadSchema {
                id,
                message: e.to_string(),
            })?;
        let fetched = Arc::new(FetchedSchema { id, text, parsed });
        let mut schemas = self.schemas.lock().unwrap_or_else(|e| e.into_inner());
        Ok(schemas.entry(id).or_insert(fetched).clone())
    }

    async fn send(&self, request: reqwest::RequestBuilder, url: &str) -> Result<Value, RegistryError> {
        let mut request = request
            .header(reqwest::header::ACCEPT, CONTENT_TYPE)
            .header(reqwest::header::CONTENT_TYPE, CONTENT_TYPE);
        if let Some((user, password)) = &self.auth {
            request = request.basic_auth(user, Some(password));
        }
        let http_err = |e: reqwest::Error| RegistryError::Http {
            url: url.to_owned(),
            message: e.without_url().to_string(),
        };
        let response = request.send().await.map_err(http_err)?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(http_err)?;
        if !status.is_success() {
            return Err(RegistryError::Status {
                status: status.as_u16(),
                url: url.to_owned(),
                body: String::from_utf8_lossy(&bytes).chars().take(500).collect(),
            });
        }
        serde_json::from_slice(&bytes).map_err(|e| RegistryError::BadAnswer {
            url: url.to_owned(),
            message: e.to_string(),
        })
    }
}

/// Percent-encodes a subject for a URL path (subjects hold dots, dashes, underscores).
fn encode_path(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_and_paths() {
        assert_eq!(value_subject("dev-t", "org.x.v1"), "dev-t-org.x.v1.CloudEvent");
        assert_eq!(key_subject("dev-t", "string"), "dev-t-string");
        assert_eq!(encode_path("a b/c.d"), "a%20b%2Fc.d");
    }
}
