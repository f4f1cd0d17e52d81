//! A Kafka broker for tests: librdkafka's mock cluster in-process by default, or the
//! broker named by `KAFKA_BOOTSTRAP_SERVERS` when it is set; plus small helpers to
//! create topics and read a topic back with plain rdkafka.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use openedx_events::keys::UsageKey;
use openedx_events::produce::{KeyFieldInfo, ProducerRecord};
use openedx_events::{EventKey, EventMetadata, OpenEdxEvent};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::OwnedMessage;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use rdkafka::{Message, Offset, TopicPartitionList};

/// The broker of a test.
pub struct KafkaEnv {
    cluster: Option<MockCluster<'static, DefaultProducerContext>>,
    bootstrap: String,
}

impl KafkaEnv {
    /// `KAFKA_BOOTSTRAP_SERVERS` when set, else a new 3-broker mock cluster.
    pub fn start() -> Self {
        match std::env::var("KAFKA_BOOTSTRAP_SERVERS").ok().filter(|v| !v.is_empty()) {
            Some(bootstrap) => Self {
                cluster: None,
                bootstrap,
            },
            None => {
                let cluster = MockCluster::new(3).expect("mock cluster");
                let bootstrap = cluster.bootstrap_servers();
                Self {
                    cluster: Some(cluster),
                    bootstrap,
                }
            }
        }
    }

    /// The bootstrap servers.
    pub fn bootstrap(&self) -> &str {
        &self.bootstrap
    }

    /// The mock cluster, when the test runs on one.
    pub fn mock(&self) -> Option<&MockCluster<'static, DefaultProducerContext>> {
        self.cluster.as_ref()
    }

    /// Creates a topic with `partitions` partitions ("already exists" is fine).
    pub fn create_topic(&self, name: &str, partitions: i32) {
        if let Some(c) = &self.cluster {
            c.create_topic(name, partitions, 1).expect("mock create_topic");
            return;
        }
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .create()
            .expect("admin client");
        let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
        let result =
            futures::executor::block_on(admin.create_topics([&topic], &AdminOptions::new())).expect("create_topics");
        for r in result {
            if let Err((t, code)) = r {
                assert_eq!(
                    code,
                    rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists,
                    "create topic {t}"
                );
            }
        }
    }

    /// Reads `expected` messages of `topic` from the beginning of every partition
    /// (stops early at `timeout`), with a plain rdkafka consumer.
    pub fn read_all(&self, topic: &str, expected: usize, timeout: Duration) -> Vec<OwnedMessage> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .set("group.id", unique("reader"))
            .set("enable.auto.commit", "false")
            .create()
            .expect("consumer");
        let metadata = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .expect("metadata");
        let mut tpl = TopicPartitionList::new();
        for t in metadata.topics() {
            for p in t.partitions() {
                tpl.add_partition_offset(topic, p.id(), Offset::Beginning).unwrap();
            }
        }
        consumer.assign(&tpl).expect("assign");
        let deadline = Instant::now() + timeout;
        let mut out = Vec::new();
        while out.len() < expected && Instant::now() < deadline {
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
                out.push(m.detach());
            }
        }
        // Anything beyond `expected` would show up within a short grace period.
        let grace = Instant::now() + Duration::from_millis(300);
        while Instant::now() < grace {
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(50)) {
                out.push(m.detach());
            }
        }
        out
    }
}

/// A name unique to this run: `{base}-{uuid}`.
pub fn unique(base: &str) -> String {
    format!("{base}-{}", uuid::Uuid::new_v4().simple())
}

/// Headers of a message as (name, value) pairs in order.
pub fn headers(m: &OwnedMessage) -> Vec<(String, String)> {
    use rdkafka::message::Headers;
    let mut out = Vec::new();
    if let Some(h) = m.headers() {
        for header in h.iter() {
            out.push((
                header.key.to_owned(),
                String::from_utf8_lossy(header.value.unwrap_or_default()).into_owned(),
            ));
        }
    }
    out
}

/// A record of an XBlock event for `topic`, keyed as `event_key_field:
/// "xblock_info.usage_key"` keys it, with new metadata.
pub fn usage_key_record<E: OpenEdxEvent>(topic: &str, usage_key: &UsageKey, data: E) -> ProducerRecord {
    ProducerRecord {
        topic: topic.into(),
        key: Some(EventKey::String(usage_key.to_string())),
        key_field: Some(KeyFieldInfo {
            name: "usage_key",
            avro_type: "string",
        }),
        metadata: EventMetadata::generate(E::EVENT_TYPE, E::MINOR_VERSION),
        data: Arc::new(data),
    }
}

/// Header keys and values as raw bytes, as a peer may send them.
pub type RawHeaders = Vec<(Vec<u8>, Vec<u8>)>;

impl KafkaEnv {
    /// Produces one message whose header keys and values are any bytes, even not UTF-8
    /// (which rdkafka's `OwnedHeaders` cannot write), with librdkafka's `rd_kafka_produceva`.
    pub fn produce_raw_headers(&self, topic: &str, headers: &[(&[u8], &[u8])], payload: &[u8]) {
        use rdkafka::bindings as rd;
        use rdkafka::bindings::rd_kafka_vtype_t as V;
        use rdkafka::producer::{BaseProducer, Producer};
        use std::ffi::CString;
        let producer: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .create()
            .expect("producer");
        let topic_name = CString::new(topic).unwrap();
        let names: Vec<CString> = headers.iter().map(|(k, _)| CString::new(k.to_vec()).unwrap()).collect();
        let vu = |vtype, u| rd::rd_kafka_vu_t { vtype, u };
        let mut args = vec![
            vu(
                V::RD_KAFKA_VTYPE_TOPIC,
                rd::rd_kafka_vu_s__bindgen_ty_1 {
                    cstr: topic_name.as_ptr(),
                },
            ),
            vu(
                V::RD_KAFKA_VTYPE_MSGFLAGS,
                rd::rd_kafka_vu_s__bindgen_ty_1 {
                    i: rd::RD_KAFKA_MSG_F_COPY,
                },
            ),
            vu(
                V::RD_KAFKA_VTYPE_VALUE,
                rd::rd_kafka_vu_s__bindgen_ty_1 {
                    mem: rd::rd_kafka_vu_s__bindgen_ty_1__bindgen_ty_1 {
                        ptr: payload.as_ptr() as *mut std::os::raw::c_void,
                        size: payload.len(),
                    },
                },
            ),
        ];
        for ((_, value), name) in headers.iter().zip(&names) {
            args.push(vu(
                V::RD_KAFKA_VTYPE_HEADER,
                rd::rd_kafka_vu_s__bindgen_ty_1 {
                    header: rd::rd_kafka_vu_s__bindgen_ty_1__bindgen_ty_2 {
                        name: name.as_ptr(),
                        val: value.as_ptr().cast(),
                        size: value.len() as isize,
                    },
                },
            ));
        }
        // SAFETY: every pointer refers to data alive until the call returns; librdkafka
        // copies the payload (RD_KAFKA_MSG_F_COPY), the topic name and the headers.
        let error = unsafe { rd::rd_kafka_produceva(producer.client().native_ptr(), args.as_ptr(), args.len()) };
        assert!(error.is_null(), "rd_kafka_produceva failed");
        producer.flush(Duration::from_secs(10)).expect("flushed");
    }

    /// Reads `expected` messages of `topic` from the beginning, as (headers, payload) with
    /// header keys and values as raw bytes: safe on keys that are not UTF-8, on which
    /// rdkafka's `Headers::iter` panics.
    pub fn read_raw(&self, topic: &str, expected: usize, timeout: Duration) -> Vec<(RawHeaders, Option<Vec<u8>>)> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .set("group.id", unique("raw-reader"))
            .set("enable.auto.commit", "false")
            .create()
            .expect("consumer");
        let metadata = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .expect("metadata");
        let mut tpl = TopicPartitionList::new();
        for t in metadata.topics() {
            for p in t.partitions() {
                tpl.add_partition_offset(topic, p.id(), Offset::Beginning).unwrap();
            }
        }
        consumer.assign(&tpl).expect("assign");
        let deadline = Instant::now() + timeout;
        let mut out = Vec::new();
        let grace = Duration::from_millis(300);
        let mut end = deadline;
        while Instant::now() < end {
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(50)) {
                out.push((raw_headers(&m), m.payload().map(<[u8]>::to_vec)));
            }
            if out.len() >= expected && end == deadline {
                end = Instant::now() + grace;
            }
        }
        out
    }
}

/// The headers of a message with librdkafka's accessors (keys as bytes).
pub fn raw_headers(m: &rdkafka::message::BorrowedMessage<'_>) -> RawHeaders {
    use rdkafka::bindings as rd;
    use rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR;
    let mut out = Vec::new();
    let mut headers: *mut rd::rd_kafka_headers_t = std::ptr::null_mut();
    // SAFETY: the message and its headers are valid while `m` is borrowed; the bytes are
    // copied out before it ends.
    unsafe {
        if rd::rd_kafka_message_headers(m.ptr(), &mut headers) != RD_KAFKA_RESP_ERR_NO_ERROR {
            return out;
        }
        for idx in 0.. {
            let mut name: *const std::os::raw::c_char = std::ptr::null();
            let mut value: *const std::os::raw::c_void = std::ptr::null();
            let mut size = 0usize;
            if rd::rd_kafka_header_get_all(headers, idx, &mut name, &mut value, &mut size) != RD_KAFKA_RESP_ERR_NO_ERROR
            {
                break;
            }
            let key = std::ffi::CStr::from_ptr(name).to_bytes().to_vec();
            let value = if value.is_null() {
                Vec::new()
            } else {
                std::slice::from_raw_parts(value.cast::<u8>(), size).to_vec()
            };
            out.push((key, value));
        }
    }
    out
}
