//! The embedded in-memory bus: the default producer, so everything runs without
//! a broker. It keeps what was produced per topic, in order, for inspection and
//! draining, bounded so that a service that forgot to configure a backend cannot
//! run out of memory.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;

use crate::produce::{ProduceError, Producer, ProducerRecord};

/// Default number of events kept per topic.
pub const DEFAULT_CAPACITY_PER_TOPIC: usize = 10_000;

/// The in-memory bus. Each topic keeps its newest `capacity` events; older ones
/// are dropped (and counted in [`MemoryProducer::dropped`]), as `MAXLEN` trims a stream.
///
/// ```
/// use openedx_events::memory::MemoryProducer;
/// let bus = MemoryProducer::with_capacity(2);
/// assert!(bus.topics().is_empty());
/// assert_eq!(bus.capacity(), 2);
/// ```
#[derive(Debug)]
pub struct MemoryProducer {
    capacity: usize,
    topics: Mutex<HashMap<Arc<str>, VecDeque<ProducerRecord>>>,
    produced: AtomicU64,
    dropped: AtomicU64,
}

impl Default for MemoryProducer {
    fn default() -> Self {
        Self::with_capacity(DEFAULT_CAPACITY_PER_TOPIC)
    }
}

impl MemoryProducer {
    /// A bus keeping at most `capacity` events per topic (at least 1).
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            topics: Mutex::new(HashMap::new()),
            produced: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        }
    }

    /// Events kept per topic.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, VecDeque<ProducerRecord>>> {
        self.topics.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The topics that received events, sorted.
    pub fn topics(&self) -> Vec<String> {
        let mut t: Vec<String> = self.lock().keys().map(|k| k.to_string()).collect();
        t.sort();
        t
    }

    /// A copy of what a topic holds, oldest first.
    pub fn events(&self, topic: &str) -> Vec<ProducerRecord> {
        self.lock()
            .get(topic)
            .map(|q| q.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Takes everything a topic holds, oldest first.
    pub fn drain(&self, topic: &str) -> Vec<ProducerRecord> {
        self.lock()
            .get_mut(topic)
            .map(|q| q.drain(..).collect())
            .unwrap_or_default()
    }

    /// Number of events a topic holds now.
    pub fn len(&self, topic: &str) -> usize {
        self.lock().get(topic).map_or(0, VecDeque::len)
    }

    /// Whether no topic holds an event.
    pub fn is_empty(&self) -> bool {
        self.lock().values().all(VecDeque::is_empty)
    }

    /// Events produced since start.
    pub fn produced(&self) -> u64 {
        self.produced.load(Ordering::Relaxed)
    }

    /// Events dropped because their topic was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl Producer for MemoryProducer {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn produce(&self, record: ProducerRecord) -> Result<(), ProduceError> {
        let mut topics = self.lock();
        let queue = match topics.get_mut(&*record.topic) {
            Some(q) => q,
            None => topics.entry(record.topic.clone()).or_default(),
        };
        let evicted = if queue.len() >= self.capacity {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            queue.pop_front()
        } else {
            None
        };
        queue.push_back(record);
        self.produced.fetch_add(1, Ordering::Relaxed);
        drop(topics);
        // Dropped outside the lock: dropping the last reference to its data runs the event
        // type's `Drop`, which may use this bus.
        drop(evicted);
        Ok(())
    }

    fn flush(&self, _: Duration) -> BoxFuture<'_, Result<(), ProduceError>> {
        Box::pin(async { Ok(()) })
    }

    fn shutdown(&self, _: Duration) -> BoxFuture<'_, Result<(), ProduceError>> {
        Box::pin(async { Ok(()) })
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Weak;

    use super::*;
    use crate::catalog::content_authoring::{XBlockData, XBlockPublished};
    use crate::event::{AnyEvent, EventOps};
    use crate::metadata::EventMetadata;
    use crate::OpenEdxEvent;

    /// Event data whose `Drop` reads the bus holding it, as a user type's `Drop` may.
    #[derive(Debug)]
    struct ReadsTheBusOnDrop {
        bus: Weak<MemoryProducer>,
        inner: XBlockPublished,
    }

    impl Drop for ReadsTheBusOnDrop {
        fn drop(&mut self) {
            if let Some(bus) = self.bus.upgrade() {
                let _ = bus.len("t");
            }
        }
    }

    impl AnyEvent for ReadsTheBusOnDrop {
        fn as_any(&self) -> &dyn std::any::Any {
            self
        }
        fn ops(&self) -> &'static dyn EventOps {
            self.inner.ops()
        }
        fn encode_avro(&self, buf: &mut Vec<u8>) -> Result<(), crate::avro::EncodeError> {
            self.inner.encode_avro(buf)
        }
        fn to_json(&self) -> serde_json::Value {
            self.inner.to_json()
        }
    }

    fn record(bus: &Arc<MemoryProducer>) -> ProducerRecord {
        ProducerRecord {
            topic: "t".into(),
            key: None,
            key_field: None,
            metadata: EventMetadata::generate(XBlockPublished::EVENT_TYPE, 0),
            data: Arc::new(ReadsTheBusOnDrop {
                bus: Arc::downgrade(bus),
                inner: XBlockPublished {
                    xblock_info: XBlockData {
                        usage_key: "block-v1:edX+DemoX+Demo_Course+type@problem+block@p1".parse().unwrap(),
                        block_type: "problem".into(),
                        version: None,
                    },
                },
            }),
        }
    }

    #[test]
    fn the_oldest_record_is_dropped_outside_the_lock() {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let bus = Arc::new(MemoryProducer::with_capacity(1));
            bus.produce(record(&bus)).unwrap();
            // Pushes the first record out: its data's `Drop` reads the bus.
            bus.produce(record(&bus)).unwrap();
            let _ = tx.send((bus.len("t"), bus.dropped()));
        });
        let got = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("deadlock (or panic): the evicted record was dropped under the bus lock");
        assert_eq!(got, (1, 1));
    }
}
