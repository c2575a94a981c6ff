//! One timer for many deadlines: a min-heap of [`Due`] entries and a single tokio `Sleep`.
//!
//! The queue's delayed keys, the retry sink's backoffs and the debounce's bursts each keep all
//! their deadlines in one [`TimerHeap`] and sleep on one timer, armed for the earliest entry
//! and reset only when that changes, in the manner of kube-runtime's scheduler (which keeps a
//! `DelayQueue`). A heap cannot remove an entry from its middle, so each owner recognises a
//! *stale* entry (one that no longer matches its key's state) when it comes to the top and
//! drops it there.

use std::{
    cmp::Reverse,
    collections::{BinaryHeap, binary_heap::PeekMut},
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use tokio::time::{Instant, Sleep};

/// A timer-heap entry: `key` due at `at`, ordered by `(at, seq)` and never by key, so that
/// entries due at the same instant leave in the order of their sequence numbers.
///
/// `At` is the instant type ([`Instant`], or the debounce's compact offset) and `Seq` the
/// tie-breaker, unique per live entry (a sequence number, or the debounce's slot).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Due<K, At = Instant, Seq = u64> {
    pub(crate) at: At,
    pub(crate) seq: Seq,
    pub(crate) key: K,
}

impl<K, At: Ord, Seq: Ord> PartialEq for Due<K, At, Seq> {
    fn eq(&self, other: &Self) -> bool {
        (&self.at, &self.seq) == (&other.at, &other.seq)
    }
}

impl<K, At: Ord, Seq: Ord> Eq for Due<K, At, Seq> {}

impl<K, At: Ord, Seq: Ord> PartialOrd for Due<K, At, Seq> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl<K, At: Ord, Seq: Ord> Ord for Due<K, At, Seq> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (&self.at, &self.seq).cmp(&(&other.at, &other.seq))
    }
}

/// A min-heap of [`Due`] entries, earliest first, and the one timer its owner sleeps on.
pub(crate) struct TimerHeap<K, At = Instant, Seq = u64> {
    heap: BinaryHeap<Reverse<Due<K, At, Seq>>>,
    /// Created at the first wait (inside the runtime); boxed once so the owner stays `Unpin`.
    timer: Option<Pin<Box<Sleep>>>,
}

impl<K, At: Ord, Seq: Ord> TimerHeap<K, At, Seq> {
    /// An empty heap; the timer is created at the first wait.
    pub(crate) fn new() -> Self {
        Self::with_capacity(0)
    }

    /// An empty heap with room for `capacity` entries.
    pub(crate) fn with_capacity(capacity: usize) -> Self {
        Self {
            heap: BinaryHeap::with_capacity(capacity),
            timer: None,
        }
    }

    /// Entries, stale ones included.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.heap.len()
    }

    /// True when there is no entry.
    pub(crate) fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// Entries the heap holds without reallocating.
    #[cfg(test)]
    pub(crate) fn capacity(&self) -> usize {
        self.heap.capacity()
    }

    /// Adds `key`, due at `at`.
    pub(crate) fn push(&mut self, at: At, seq: Seq, key: K) {
        self.heap.push(Reverse(Due { at, seq, key }));
    }

    /// The earliest entry.
    pub(crate) fn peek(&self) -> Option<&Due<K, At, Seq>> {
        self.heap.peek().map(|Reverse(due)| due)
    }

    /// The earliest entry, to change in place or pop (see [`PeekMut`]).
    pub(crate) fn peek_mut(&mut self) -> Option<PeekMut<'_, Reverse<Due<K, At, Seq>>>> {
        self.heap.peek_mut()
    }

    /// Removes the earliest entry.
    pub(crate) fn pop(&mut self) -> Option<Due<K, At, Seq>> {
        self.heap.pop().map(|Reverse(due)| due)
    }

    /// Removes the earliest entry if it is due at or before `now`.
    pub(crate) fn pop_due(&mut self, now: At) -> Option<Due<K, At, Seq>> {
        let top = self.heap.peek_mut()?;
        if top.0.at > now {
            return None;
        }
        Some(PeekMut::pop(top).0)
    }

    /// Drops every entry and gives their memory back, keeping room for `capacity` (and the
    /// timer): for an owner that rebuilds its entries after compacting its storage.
    pub(crate) fn clear_to_capacity(&mut self, capacity: usize) {
        self.heap = BinaryHeap::with_capacity(capacity);
    }

    /// Sleeps until `deadline` on the single timer: creates it at the first call, resets it
    /// only when the deadline changes, and polls it (`Ready` once it has fired).
    pub(crate) fn poll_timer(&mut self, deadline: Instant, cx: &mut Context<'_>) -> Poll<()> {
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if timer.deadline() != deadline {
            timer.as_mut().reset(deadline);
        }
        timer.as_mut().poll(cx)
    }
}

impl<K, Seq: Ord> TimerHeap<K, Instant, Seq> {
    /// Sleeps until the earliest entry is due: `Ready` once the timer has fired for it,
    /// `Pending` (without a wake-up) when the heap is empty.
    pub(crate) fn poll_earliest(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        match self.peek() {
            Some(due) => {
                let at = due.at;
                self.poll_timer(at, cx)
            }
            None => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::{future::poll_fn, poll};
    use std::time::Duration;

    #[test]
    fn earliest_first_then_by_sequence_never_by_key() {
        let t0 = Instant::now();
        let mut heap = TimerHeap::new();
        heap.push(t0 + Duration::from_secs(2), 0, "late");
        heap.push(t0 + Duration::from_secs(1), 2, "b");
        heap.push(t0 + Duration::from_secs(1), 1, "z");
        let order: Vec<_> = std::iter::from_fn(|| heap.pop().map(|due| due.key)).collect();
        assert_eq!(order, ["z", "b", "late"]);
    }

    #[test]
    fn pop_due_leaves_what_is_not_due() {
        let t0 = Instant::now();
        let mut heap = TimerHeap::new();
        heap.push(t0, 0, 'a');
        heap.push(t0 + Duration::from_secs(1), 1, 'b');
        assert_eq!(heap.pop_due(t0).map(|due| due.key), Some('a'));
        assert!(heap.pop_due(t0).is_none());
        assert_eq!(heap.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn one_timer_follows_the_earliest_entry() {
        let t0 = Instant::now();
        let mut heap = TimerHeap::new();
        assert!(poll!(poll_fn(|cx| heap.poll_earliest(cx))).is_pending());
        heap.push(t0 + Duration::from_secs(5), 0, ());
        assert!(poll!(poll_fn(|cx| heap.poll_earliest(cx))).is_pending());
        heap.push(t0 + Duration::from_secs(1), 1, ());
        poll_fn(|cx| heap.poll_earliest(cx)).await;
        assert_eq!(Instant::now(), t0 + Duration::from_secs(1));
    }
}
