//! Closing librdkafka's clients off the async runtime's threads.

/// Holds a librdkafka client and closes it off the async runtime's threads when dropped.
///
/// Closing a consumer blocks: it commits, leaves its group and joins librdkafka's
/// threads, for as long as the broker takes to answer (seconds when it is unreachable).
/// `KafkaConsumer::run` closes its clients on tokio's blocking pool; this covers every
/// other way they go: a consumer dropped without running, or a `run` future dropped
/// half-way (its task aborted), inside a runtime. There the client is closed on a
/// thread of its own, which nobody waits for; outside a runtime, in place.
pub(super) struct CloseOffRuntime<T: Send + 'static>(Option<T>);

impl<T: Send + 'static> CloseOffRuntime<T> {
    pub(super) fn new(client: T) -> Self {
        Self(Some(client))
    }

    /// The client, for a caller that closes it itself.
    pub(super) fn take(mut self) -> T {
        match self.0.take() {
            Some(client) => client,
            // `take` consumes the holder, and only `take` and `drop` empty it.
            None => unreachable!("a CloseOffRuntime is emptied only by take or drop"),
        }
    }
}

impl<T: Send + 'static> std::ops::Deref for CloseOffRuntime<T> {
    type Target = T;

    fn deref(&self) -> &T {
        match &self.0 {
            Some(client) => client,
            None => unreachable!("a CloseOffRuntime is emptied only by take or drop"),
        }
    }
}

impl<T: Send + 'static> Drop for CloseOffRuntime<T> {
    fn drop(&mut self) {
        let Some(client) = self.0.take() else { return };
        if tokio::runtime::Handle::try_current().is_err() {
            return drop(client);
        }
        let spawned = std::thread::Builder::new()
            .name("kafka-client-close".into())
            .spawn(move || drop(client));
        if let Err(e) = spawned {
            // The client went with the failed spawn's closure: it was closed in place.
            tracing::error!(error = %e, "cannot start a thread to close a kafka client; it was closed on this thread");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::CloseOffRuntime;
    use std::sync::mpsc;
    use std::time::{Duration, Instant};

    /// Sends the name of the thread it is dropped on, after a pause.
    struct SlowClose(mpsc::Sender<Option<String>>);
    impl Drop for SlowClose {
        fn drop(&mut self) {
            std::thread::sleep(Duration::from_millis(300));
            let _ = self.0.send(std::thread::current().name().map(str::to_owned));
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn dropped_inside_a_runtime_it_closes_on_a_thread_of_its_own_without_waiting() {
        let (tx, rx) = mpsc::channel();
        let began = Instant::now();
        drop(CloseOffRuntime::new(SlowClose(tx)));
        assert!(
            began.elapsed() < Duration::from_millis(200),
            "the drop waited for the close"
        );
        let thread = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(thread.as_deref(), Some("kafka-client-close"));
    }

    #[test]
    fn dropped_outside_a_runtime_it_closes_in_place() {
        let (tx, rx) = mpsc::channel();
        drop(CloseOffRuntime::new(SlowClose(tx)));
        assert_eq!(rx.try_recv().unwrap(), std::thread::current().name().map(str::to_owned));
    }

    #[test]
    fn take_gives_the_client_back_to_be_closed_by_the_caller() {
        let (tx, rx) = mpsc::channel();
        let client = CloseOffRuntime::new(SlowClose(tx)).take();
        assert!(rx.try_recv().is_err(), "closed before the caller dropped it");
        drop(client);
        assert!(rx.try_recv().is_ok());
    }
}
