//! Closing librdkafka's clients off the async runtime's threads.

/// Holds a librdkafka client and closes it off the async runtime's threads when dropped.
///
/// Closing a consumer blocks: it commits, leaves its group and joins librdkafka's
/// threads, for as long as the broker takes to answer (seconds when it is unreachable).
/// `KafkaConsumer::run` closes its clients on tokio's blocking pool; this covers every
/// other way they go: a consumer dropped without running, or a `run` future dropped
/// half-way (its task aborted), inside a runtime. There the client is closed on the
/// runtime's blocking pool, which the runtime's shutdown waits for, so a process that
/// ends right after still commits what was handled and leaves its group (the partitions
/// move at once, not after the session timeout). Outside a runtime, or when the runtime
/// is already shutting down, it is closed in place.
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
        match tokio::runtime::Handle::try_current() {
            // A runtime shutting down drops the task, and with it the client, in place.
            Ok(runtime) => drop(runtime.spawn_blocking(move || drop(client))),
            Err(_) => drop(client),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::kafka::consumer::close::CloseOffRuntime;
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
    async fn dropped_inside_a_runtime_it_closes_off_the_runtime_thread_without_waiting() {
        let (tx, rx) = mpsc::channel();
        let began = Instant::now();
        drop(CloseOffRuntime::new(SlowClose(tx)));
        assert!(
            began.elapsed() < Duration::from_millis(200),
            "the drop waited for the close"
        );
        let thread = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_ne!(thread, std::thread::current().name().map(str::to_owned));
    }

    #[test]
    fn a_runtime_shutting_down_waits_for_the_close() {
        let (tx, rx) = mpsc::channel();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .unwrap();
        // A task that holds a client and never ends, as a consumer's `run` when `main` returns.
        runtime.spawn(async move {
            let _client = CloseOffRuntime::new(SlowClose(tx));
            std::future::pending::<()>().await;
        });
        std::thread::sleep(Duration::from_millis(50));
        drop(runtime);
        assert!(rx.try_recv().is_ok(), "the runtime ended before the client was closed");
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
