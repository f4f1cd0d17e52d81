//! Signals with Django-signal semantics: receivers are connected to an event type
//! and called, in connection order, for every event sent.
//!
//! Why one file of ~520 lines: one type and its send paths (plain and async, robust and
//! strict), whose two dispatch loops must stay alike.

use std::any::type_name;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use futures::future::BoxFuture;
use futures::FutureExt;

use crate::metadata::EventMetadata;

/// What a signal needs of its event type: the type string and minor version that its
/// sends put in fresh metadata. Every [`OpenEdxEvent`](crate::OpenEdxEvent) is one (a
/// blanket impl in `event.rs`), so there is no reason to implement it by hand; it keeps
/// this module below `event.rs`, which names [`Signal`].
///
/// ```
/// use openedx_events::signal::SignalEvent;
/// use openedx_events::catalog::learning::CourseEnrollmentCreated;
/// assert_eq!(CourseEnrollmentCreated::TYPE, "org.openedx.learning.course.enrollment.created.v1");
/// ```
pub trait SignalEvent: Send + Sync + 'static {
    /// The event type string.
    const TYPE: &'static str;
    /// The minor version.
    const MINOR: u32;
}

/// The error type receivers return.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// One event as receivers see it: its data, its metadata, and whether it came
/// from the event bus (a consumer re-sending it) rather than from this process.
#[derive(Debug)]
pub struct Envelope<E> {
    /// The event data.
    pub data: Arc<E>,
    /// The event metadata.
    pub metadata: EventMetadata,
    /// `true` when a consumer re-sent this event from the bus.
    pub from_event_bus: bool,
}

impl<E> Clone for Envelope<E> {
    fn clone(&self) -> Self {
        Self {
            data: self.data.clone(),
            metadata: self.metadata.clone(),
            from_event_bus: self.from_event_bus,
        }
    }
}

/// Identifies a connected receiver, for [`Signal::disconnect`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ReceiverId(u64);

/// What a receiver's return value means: `()` is success, `Result` is itself.
pub trait IntoReceiverResult {
    /// Converts to the receiver's outcome.
    fn into_receiver_result(self) -> Result<(), BoxError>;
}

impl IntoReceiverResult for () {
    fn into_receiver_result(self) -> Result<(), BoxError> {
        Ok(())
    }
}

impl<E: Into<BoxError>> IntoReceiverResult for Result<(), E> {
    fn into_receiver_result(self) -> Result<(), BoxError> {
        self.map_err(Into::into)
    }
}

type SyncFn<E> = Arc<dyn Fn(&Envelope<E>) -> Result<(), BoxError> + Send + Sync>;
type AsyncFn<E> = Arc<dyn Fn(Envelope<E>) -> BoxFuture<'static, Result<(), BoxError>> + Send + Sync>;

enum Callback<E> {
    Sync(SyncFn<E>),
    Async(AsyncFn<E>),
}

impl<E> Clone for Callback<E> {
    fn clone(&self) -> Self {
        match self {
            Callback::Sync(f) => Callback::Sync(f.clone()),
            Callback::Async(f) => Callback::Async(f.clone()),
        }
    }
}

struct Entry<E> {
    id: ReceiverId,
    name: &'static str,
    callback: Callback<E>,
}

impl<E> Clone for Entry<E> {
    fn clone(&self) -> Self {
        Self {
            id: self.id,
            name: self.name,
            callback: self.callback.clone(),
        }
    }
}

/// How one receiver fared.
#[derive(Debug)]
pub enum Outcome {
    /// It returned successfully.
    Ok,
    /// It returned an error.
    Failed(BoxError),
    /// It panicked; carries the panic message.
    Panicked(String),
    /// An async receiver reached from a plain `send_event`: it was spawned on the
    /// current tokio runtime and runs on its own.
    Spawned,
}

impl Outcome {
    /// `true` unless the receiver failed or panicked.
    pub fn is_ok(&self) -> bool {
        matches!(self, Outcome::Ok | Outcome::Spawned)
    }
}

/// The response of one receiver to one send.
#[derive(Debug)]
pub struct Response {
    /// The receiver.
    pub receiver: ReceiverId,
    /// The receiver's type name, for logs.
    pub receiver_name: &'static str,
    /// How it fared.
    pub outcome: Outcome,
}

/// Why a send did not complete.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// Strict sending: a receiver failed; the receivers after it were not called.
    #[error("receiver {receiver_name} failed on {event_type}: {error}")]
    Receiver {
        /// The event type.
        event_type: &'static str,
        /// The failing receiver.
        receiver_name: &'static str,
        /// Its error.
        error: BoxError,
    },
    /// Custom metadata given for another event type.
    #[error("metadata is for {found}, not for {expected}")]
    WrongEventType {
        /// The signal's event type.
        expected: &'static str,
        /// The metadata's event type.
        found: &'static str,
    },
}

/// How `send` treats failing receivers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendMode {
    /// Every receiver runs; failures and panics are reported in the responses
    /// (Django's `send_robust`, openedx-events' default).
    Robust,
    /// The first failing receiver stops the send with an error (Django's `send`).
    Strict,
}

/// The signal of one event type. Get it with `MyEvent::signal()`.
///
/// ```
/// use openedx_events::{openedx_event, OpenEdxEvent};
///
/// /// Sent in this example.
/// #[openedx_event("org.openedx.learning.example.happened.v1")]
/// #[derive(Clone, Debug)]
/// pub struct ExampleHappened {
///     /// What happened.
///     pub what: String,
/// }
///
/// let id = ExampleHappened::signal().connect(|ev| {
///     assert_eq!(ev.data.what, "it");
/// });
/// let responses = ExampleHappened::signal().send_event(ExampleHappened { what: "it".into() });
/// assert!(responses.iter().all(|r| r.outcome.is_ok()));
/// ExampleHappened::signal().disconnect(id);
/// ```
pub struct Signal<E> {
    receivers: RwLock<Option<Arc<[Entry<E>]>>>,
    disabled: AtomicBool,
}

static NEXT_RECEIVER: AtomicU64 = AtomicU64::new(1);

impl<E: SignalEvent> Default for Signal<E> {
    fn default() -> Self {
        Self::new()
    }
}

impl<E: SignalEvent> Signal<E> {
    /// A signal with no receivers. The event attribute makes one static signal per
    /// event type; there is rarely a reason to make another.
    pub const fn new() -> Self {
        Self {
            receivers: RwLock::new(None),
            disabled: AtomicBool::new(false),
        }
    }

    /// The event type of this signal.
    pub fn event_type(&self) -> &'static str {
        E::TYPE
    }

    fn push(&self, name: &'static str, callback: Callback<E>) -> ReceiverId {
        let id = ReceiverId(NEXT_RECEIVER.fetch_add(1, Ordering::Relaxed));
        let mut guard = self.receivers.write().unwrap_or_else(|e| e.into_inner());
        let mut list: Vec<Entry<E>> = guard.as_deref().map(<[_]>::to_vec).unwrap_or_default();
        list.push(Entry { id, name, callback });
        let old = guard.replace(list.into());
        drop(guard);
        // Dropped after the lock is released (see `disconnect`).
        drop(old);
        id
    }

    /// Connects a plain receiver; it returns `()` or `Result<(), E>`.
    pub fn connect<F, R>(&self, receiver: F) -> ReceiverId
    where
        F: Fn(&Envelope<E>) -> R + Send + Sync + 'static,
        R: IntoReceiverResult,
    {
        self.push(
            type_name::<F>(),
            Callback::Sync(Arc::new(move |ev| receiver(ev).into_receiver_result())),
        )
    }

    /// Connects an async receiver. `send_event_async` awaits it in order; plain
    /// `send_event` spawns it on the current tokio runtime.
    pub fn connect_async<F, Fut, R>(&self, receiver: F) -> ReceiverId
    where
        F: Fn(Envelope<E>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = R> + Send + 'static,
        R: IntoReceiverResult,
    {
        self.push(
            type_name::<F>(),
            Callback::Async(Arc::new(move |ev| {
                let fut = receiver(ev);
                async move { fut.await.into_receiver_result() }.boxed()
            })),
        )
    }

    /// Disconnects a receiver; returns `false` if it was not connected.
    ///
    /// The receiver (and what its closure captured) is dropped after the signal's lock
    /// is released, so a captured value whose `Drop` uses this signal (connects,
    /// disconnects, sends) does not deadlock. When a send running on another thread
    /// still holds the receiver, it is dropped when that send ends.
    pub fn disconnect(&self, id: ReceiverId) -> bool {
        let mut guard = self.receivers.write().unwrap_or_else(|e| e.into_inner());
        let Some(list) = guard.as_deref() else { return false };
        if !list.iter().any(|e| e.id == id) {
            return false;
        }
        let kept: Vec<Entry<E>> = list.iter().filter(|e| e.id != id).cloned().collect();
        let removed = std::mem::replace(&mut *guard, if kept.is_empty() { None } else { Some(kept.into()) });
        drop(guard);
        // The last reference to the removed receiver may be in `removed`: drop it
        // without holding the lock.
        drop(removed);
        true
    }

    /// Number of connected receivers.
    pub fn receiver_count(&self) -> usize {
        self.snapshot().map_or(0, |l| l.len())
    }

    /// Stops sending: `send_event` returns no responses until [`Signal::enable`].
    pub fn disable(&self) {
        self.disabled.store(true, Ordering::Relaxed);
    }

    /// Sends again after [`Signal::disable`].
    pub fn enable(&self) {
        self.disabled.store(false, Ordering::Relaxed);
    }

    /// Whether the signal sends.
    pub fn is_enabled(&self) -> bool {
        !self.disabled.load(Ordering::Relaxed)
    }

    fn snapshot(&self) -> Option<Arc<[Entry<E>]>> {
        self.receivers.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Sends an event with fresh metadata to every receiver, robustly: a failing or
    /// panicking receiver is reported in the responses and the others still run.
    pub fn send_event(&self, data: E) -> Vec<Response> {
        let env = Envelope {
            metadata: EventMetadata::generate(E::TYPE, E::MINOR),
            data: Arc::new(data),
            from_event_bus: false,
        };
        self.dispatch(&env, SendMode::Robust).unwrap_or_default()
    }

    /// Sends an event with fresh metadata, strictly: the first failing receiver
    /// stops the send and its error is returned (panics unwind to the caller).
    pub fn send_event_strict(&self, data: E) -> Result<Vec<Response>, SendError> {
        let env = Envelope {
            metadata: EventMetadata::generate(E::TYPE, E::MINOR),
            data: Arc::new(data),
            from_event_bus: false,
        };
        self.dispatch(&env, SendMode::Strict)
    }

    /// Sends an event that came from the event bus, with the metadata it carried.
    /// Receivers see `from_event_bus == true`, so the producing handler skips it.
    pub fn send_event_with_custom_metadata(
        &self,
        metadata: EventMetadata,
        data: E,
        mode: SendMode,
    ) -> Result<Vec<Response>, SendError> {
        let env = self.bus_envelope(metadata, data)?;
        self.dispatch(&env, mode)
    }

    fn bus_envelope(&self, metadata: EventMetadata, data: E) -> Result<Envelope<E>, SendError> {
        if metadata.event_type != E::TYPE {
            return Err(SendError::WrongEventType {
                expected: E::TYPE,
                found: metadata.event_type,
            });
        }
        Ok(Envelope {
            data: Arc::new(data),
            metadata,
            from_event_bus: true,
        })
    }

    /// Sends an already built envelope to the receivers.
    pub fn dispatch(&self, env: &Envelope<E>, mode: SendMode) -> Result<Vec<Response>, SendError> {
        if !self.is_enabled() {
            return Ok(Vec::new());
        }
        let Some(list) = self.snapshot() else {
            return Ok(Vec::new());
        };
        let mut out = Vec::with_capacity(list.len());
        for entry in list.iter() {
            let outcome = match &entry.callback {
                Callback::Sync(f) => call_sync(f, env, mode),
                Callback::Async(f) => match tokio::runtime::Handle::try_current() {
                    Ok(handle) => {
                        let fut = match start_async(f, env, mode) {
                            Ok(fut) => fut,
                            Err(panicked) => {
                                out.push(respond::<E>(entry, panicked, mode)?);
                                continue;
                            }
                        };
                        let name = entry.name;
                        let event_type = E::TYPE;
                        let id = env.metadata.id;
                        handle.spawn(async move {
                            match AssertUnwindSafe(fut).catch_unwind().await {
                                Ok(Ok(())) => {}
                                Ok(Err(error)) => {
                                    tracing::error!(event_type, event_id = %id, receiver = name, %error, "async receiver failed")
                                }
                                Err(p) => {
                                    tracing::error!(event_type, event_id = %id, receiver = name, panic = %panic_message(&*p), "async receiver panicked")
                                }
                            }
                        });
                        Outcome::Spawned
                    }
                    Err(_) => Outcome::Failed(
                        "async receiver reached outside a tokio runtime: call send_event_async, or send from within a runtime".into(),
                    ),
                },
            };
            out.push(respond::<E>(entry, outcome, mode)?);
        }
        Ok(out)
    }

    /// Sends an event with fresh metadata, awaiting async receivers in connection
    /// order (plain receivers are called in place). Robust, like [`Signal::send_event`].
    pub async fn send_event_async(&self, data: E) -> Vec<Response> {
        let env = Envelope {
            metadata: EventMetadata::generate(E::TYPE, E::MINOR),
            data: Arc::new(data),
            from_event_bus: false,
        };
        self.dispatch_async(env, SendMode::Robust).await.unwrap_or_default()
    }

    /// Async counterpart of [`Signal::send_event_with_custom_metadata`].
    pub async fn send_event_with_custom_metadata_async(
        &self,
        metadata: EventMetadata,
        data: E,
        mode: SendMode,
    ) -> Result<Vec<Response>, SendError> {
        let env = self.bus_envelope(metadata, data)?;
        self.dispatch_async(env, mode).await
    }

    /// Sends an envelope, awaiting async receivers in order.
    pub async fn dispatch_async(&self, env: Envelope<E>, mode: SendMode) -> Result<Vec<Response>, SendError> {
        if !self.is_enabled() {
            return Ok(Vec::new());
        }
        let Some(list) = self.snapshot() else {
            return Ok(Vec::new());
        };
        let mut out = Vec::with_capacity(list.len());
        for entry in list.iter() {
            let outcome = match &entry.callback {
                Callback::Sync(f) => call_sync(f, &env, mode),
                Callback::Async(f) => {
                    let fut = match start_async(f, &env, mode) {
                        Ok(fut) => fut,
                        Err(panicked) => {
                            out.push(respond::<E>(entry, panicked, mode)?);
                            continue;
                        }
                    };
                    if mode == SendMode::Strict {
                        match fut.await {
                            Ok(()) => Outcome::Ok,
                            Err(e) => Outcome::Failed(e),
                        }
                    } else {
                        match AssertUnwindSafe(fut).catch_unwind().await {
                            Ok(Ok(())) => Outcome::Ok,
                            Ok(Err(e)) => Outcome::Failed(e),
                            Err(p) => Outcome::Panicked(panic_message(&*p)),
                        }
                    }
                }
            };
            out.push(respond::<E>(entry, outcome, mode)?);
        }
        Ok(out)
    }
}

/// The response of one receiver; in strict mode a failure ends the send instead.
fn respond<E: SignalEvent>(entry: &Entry<E>, outcome: Outcome, mode: SendMode) -> Result<Response, SendError> {
    match outcome {
        Outcome::Failed(error) if mode == SendMode::Strict => Err(SendError::Receiver {
            event_type: E::TYPE,
            receiver_name: entry.name,
            error,
        }),
        outcome => Ok(Response {
            receiver: entry.id,
            receiver_name: entry.name,
            outcome,
        }),
    }
}

/// Runs the synchronous part of an async receiver (the call that makes its future).
/// Robust sending catches a panic there as it catches one in the future: `Err` holds
/// the [`Outcome::Panicked`]. Strict sending lets it unwind, as it does for plain
/// receivers.
fn start_async<E>(
    f: &AsyncFn<E>,
    env: &Envelope<E>,
    mode: SendMode,
) -> Result<BoxFuture<'static, Result<(), BoxError>>, Outcome> {
    if mode == SendMode::Strict {
        return Ok(f(env.clone()));
    }
    catch_unwind(AssertUnwindSafe(|| f(env.clone()))).map_err(|p| Outcome::Panicked(panic_message(&*p)))
}

fn call_sync<E>(f: &SyncFn<E>, env: &Envelope<E>, mode: SendMode) -> Outcome {
    if mode == SendMode::Strict {
        return match f(env) {
            Ok(()) => Outcome::Ok,
            Err(e) => Outcome::Failed(e),
        };
    }
    match catch_unwind(AssertUnwindSafe(|| f(env))) {
        Ok(Ok(())) => Outcome::Ok,
        Ok(Err(e)) => Outcome::Failed(e),
        Err(p) => Outcome::Panicked(panic_message(&*p)),
    }
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}
