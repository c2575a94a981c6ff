//! The per-key state of the sink: a slot with the running and the waiting item, and the
//! operation in flight.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::{TryFuture, ready};
use pin_project::pin_project;

/// Where the waiting item of a key is.
#[derive(Debug, Clone, Copy)]
pub(super) enum Place {
    /// Behind the key's operation in flight.
    Parked,
    /// In the ready line, under this sequence number.
    Ready(u64),
    /// In the retry heap, under this sequence number.
    Backoff(u64),
}

/// The item of a key that waits: for a slot, behind the key's operation, or for its retry.
#[derive(Debug)]
pub(super) struct Waiting<T> {
    pub(super) value: T,
    pub(super) attempts: u32,
    pub(super) place: Place,
}

/// The item of a key whose operation is in flight.
#[derive(Debug)]
pub(super) struct Running<T> {
    pub(super) value: T,
    pub(super) attempts: u32,
}

/// A key's items: at most one running and one waiting.
#[derive(Debug)]
pub(super) struct Slot<T> {
    pub(super) running: Option<Running<T>>,
    pub(super) waiting: Option<Waiting<T>>,
}

/// One operation in flight, tagged with its key.
#[pin_project]
#[must_use = "futures do nothing unless polled"]
pub(super) struct Attempt<K, Fut> {
    pub(super) key: Option<K>,
    #[pin]
    pub(super) future: Fut,
}

impl<K, Fut: TryFuture> Future for Attempt<K, Fut> {
    type Output = (K, Result<Fut::Ok, Fut::Error>);

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.future.try_poll(cx));
        let key = this
            .key
            .take()
            .expect("FuturesUnordered never polls a finished attempt again");
        Poll::Ready((key, result))
    }
}
