//! Retrying, latest-wins sink.
//!
//! [`RetrySink`] is a [`futures::Sink`] of `(key, value)` that applies an async operation per
//! item (a status patch, in the sentinel) with these rules:
//!
//! * **Bounded concurrency**: at most [`RetryConfig::max_concurrent`] operations in flight, all
//!   polled by the sink itself (no task spawned), and at most one per key.
//! * **Latest wins per key**: an item replaces the item of the same key that is waiting for a
//!   slot or waiting to retry (it takes its place in line and its retry instant; its attempt
//!   count starts again). An item for a key whose operation is in flight waits for that
//!   operation to finish, then runs with the latest value; if the operation in flight fails, it
//!   is not retried, since a newer value is waiting. Each replaced item counts as *superseded*.
//! * **Retries**: the caller classifies each error as [`Retry::Transient`] (retried after an
//!   exponential backoff, `backoff_base * 2^(attempt-1)` capped at `backoff_max`, with "equal
//!   jitter": uniform in the upper half of that delay) or [`Retry::Permanent`] (failed at once).
//!   After `max_attempts` tries a transient error fails too.
//! * **Telemetry**: counts through a cloneable [`RetryStats`] handle, and an optional callback
//!   receiving the final [`Outcome`] of every item.
//!
//! The sink makes progress whenever it is polled: `poll_ready` (so `send_all`/`forward` drive it
//! while feeding), `poll_flush` (ready when every accepted item is final) and `poll_close` (the
//! same: closing flushes everything). It never applies backpressure: memory is bounded by the
//! number of distinct keys, since a key holds at most one running and one waiting item.
//!
//! ## Warning
//!
//! Keep a sink polled: between polls nothing runs, not even a due retry. With
//! `max_attempts: None` a key whose operation keeps failing transiently is retried forever, and
//! `close` does not finish.

use super::backoff::ExponentialBackoff;
use super::timer_heap::TimerHeap;
use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::stream::FuturesUnordered;
use futures::{Sink, Stream, TryFuture, ready};
use pin_project::pin_project;
use tokio::time::Instant;

/// How the caller classifies an operation's error.
///
/// ```
/// use kube_sentinel::stream::Retry;
/// fn classify(status: &u16) -> Retry {
///     if *status == 409 || *status == 429 || *status >= 500 { Retry::Transient } else { Retry::Permanent }
/// }
/// assert_eq!(classify(&503), Retry::Transient);
/// assert_eq!(classify(&422), Retry::Permanent);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retry {
    /// Worth retrying after a backoff (a timeout, a conflict, a 5xx).
    Transient,
    /// Retrying cannot help (a 4xx other than conflict): the item fails.
    Permanent,
}

/// Settings of a [`RetrySink`].
///
/// ```
/// use kube_sentinel::stream::RetryConfig;
/// use std::time::Duration;
/// let config = RetryConfig { max_concurrent: 16, ..RetryConfig::default() };
/// assert_eq!(config.max_attempts, Some(10));
/// assert_eq!(config.backoff_base, Duration::from_millis(100));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryConfig {
    /// Operations in flight at most (`0` is taken as `1`). Default 8.
    pub max_concurrent: usize,
    /// Delay before the first retry. Default 100 ms.
    pub backoff_base: Duration,
    /// Cap of the delay between retries. Default 30 s.
    pub backoff_max: Duration,
    /// Tries per item, the first included, before a transient error fails it; `None` retries
    /// forever. Default 10.
    pub max_attempts: Option<u32>,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_concurrent: 8,
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_secs(30),
            max_attempts: Some(10),
        }
    }
}

/// How an item ended (see [`RetrySink`]'s example).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Status<O, E> {
    /// The operation succeeded with this output.
    Sent(O),
    /// A permanent error, or a transient one after `max_attempts` tries.
    Failed(E),
    /// Replaced by a newer item of the same key, before running or after a failed try.
    Superseded,
}

/// The final result of one item, given to the [`RetrySink::on_outcome`] callback.
///
/// ```
/// use kube_sentinel::stream::{Outcome, Status};
/// fn log(outcome: Outcome<String, (), std::io::Error>) {
///     match outcome.status {
///         Status::Sent(()) => println!("{} patched after {} tries", outcome.key, outcome.attempts),
///         Status::Failed(error) => eprintln!("{}: {error}", outcome.key),
///         Status::Superseded => {}
///     }
/// }
/// log(Outcome { key: "web".into(), attempts: 1, status: Status::Sent(()) });
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome<K, O, E> {
    /// The item's key.
    pub key: K,
    /// Tries made for this item (0 if it was superseded before running).
    pub attempts: u32,
    /// How it ended.
    pub status: Status<O, E>,
}

/// Counts of a [`RetrySink`] at one instant, from [`RetryStats::snapshot`] (example there).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RetryCounts {
    /// Items given to the sink.
    pub accepted: u64,
    /// Items whose operation succeeded.
    pub sent: u64,
    /// Retries scheduled (one per transient error that was not final).
    pub retried: u64,
    /// Items replaced by a newer item of the same key.
    pub superseded: u64,
    /// Items that failed (permanent error or out of attempts).
    pub failed: u64,
    /// Items accepted and not yet final.
    pub pending: u64,
}

#[derive(Debug, Default)]
struct Counters {
    accepted: AtomicU64,
    sent: AtomicU64,
    retried: AtomicU64,
    superseded: AtomicU64,
    failed: AtomicU64,
}

/// A cloneable, lock-free view of a [`RetrySink`]'s counts (for metrics or logs).
///
/// ```
/// use kube_sentinel::stream::{Retry, RetryConfig, RetrySink};
/// let sink = RetrySink::new(
///     RetryConfig::default(),
///     |_key: u32, _value: u32| async { Ok::<(), std::io::Error>(()) },
///     |_error: &std::io::Error| Retry::Transient,
/// );
/// let stats = sink.stats_handle();
/// assert_eq!(stats.snapshot().pending, 0);
/// ```
#[derive(Clone, Debug, Default)]
pub struct RetryStats(Arc<Counters>);

impl RetryStats {
    /// The counts now.
    pub fn snapshot(&self) -> RetryCounts {
        let c = &self.0;
        let accepted = c.accepted.load(Ordering::Relaxed);
        let sent = c.sent.load(Ordering::Relaxed);
        let superseded = c.superseded.load(Ordering::Relaxed);
        let failed = c.failed.load(Ordering::Relaxed);
        RetryCounts {
            accepted,
            sent,
            retried: c.retried.load(Ordering::Relaxed),
            superseded,
            failed,
            pending: accepted.saturating_sub(sent + superseded + failed),
        }
    }

    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Where the waiting item of a key is.
#[derive(Debug, Clone, Copy)]
enum Place {
    /// Behind the key's operation in flight.
    Parked,
    /// In the ready line, under this sequence number.
    Ready(u64),
    /// In the retry heap, under this sequence number.
    Backoff(u64),
}

#[derive(Debug)]
struct Waiting<T> {
    value: T,
    attempts: u32,
    place: Place,
}

#[derive(Debug)]
struct Running<T> {
    value: T,
    attempts: u32,
}

#[derive(Debug)]
struct Slot<T> {
    running: Option<Running<T>>,
    waiting: Option<Waiting<T>>,
}

/// One operation in flight, tagged with its key.
#[pin_project]
#[must_use = "futures do nothing unless polled"]
struct Attempt<K, Fut> {
    key: Option<K>,
    #[pin]
    future: Fut,
}

impl<K, Fut: TryFuture> Future for Attempt<K, Fut> {
    type Output = (K, Result<Fut::Ok, Fut::Error>);

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.future.try_poll(cx));
        let key = this.key.take().expect(POLLED_ONCE_DONE);
        Poll::Ready((key, result))
    }
}

/// Why an attempt still has its key when its operation finishes.
const POLLED_ONCE_DONE: &str = "FuturesUnordered never polls a finished attempt again";

/// Why a key whose operation is in flight has a slot: the slot goes only once the key is idle.
const IN_FLIGHT_HAS_A_SLOT: &str = "a key in flight has a slot";

type OutcomeFn<K, O, E> = Box<dyn FnMut(Outcome<K, O, E>) + Send>;
type MergeFn<T> = Box<dyn FnMut(&mut T, T) + Send>;

/// A [`Sink`] of `(key, value)` applying `op` with bounded concurrency, latest-wins per key and
/// classified retries. See the [module documentation](self) for the rules.
///
/// ```
/// use futures::SinkExt;
/// use kube_sentinel::stream::{Retry, RetryConfig, RetrySink, Status};
/// use std::sync::{Arc, Mutex};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let outcomes = Arc::new(Mutex::new(Vec::new()));
/// let log = outcomes.clone();
/// let mut sink = RetrySink::new(
///     RetryConfig::default(),
///     |key: &'static str, trigger: u32| async move {
///         if trigger == 0 { Err("conflict") } else { Ok(format!("{key} <- {trigger}")) }
///     },
///     |_error: &&str| Retry::Permanent,
/// )
/// .on_outcome(move |outcome| log.lock().expect("lock").push(outcome.status));
/// let stats = sink.stats_handle();
/// sink.send(("web", 1)).await.expect("infallible");
/// sink.send(("db", 0)).await.expect("infallible");
/// sink.close().await.expect("infallible");
/// assert_eq!(
///     *outcomes.lock().expect("lock"),
///     vec![Status::Sent("web <- 1".to_string()), Status::Failed("conflict")]
/// );
/// assert_eq!((stats.snapshot().sent, stats.snapshot().failed), (1, 1));
/// # }
/// ```
#[must_use = "sinks do nothing unless polled"]
pub struct RetrySink<K, T, Op, Cl, Fut>
where
    Fut: TryFuture,
{
    config: RetryConfig,
    jitter: bool,
    op: Op,
    classify: Cl,
    on_outcome: Option<OutcomeFn<K, Fut::Ok, Fut::Error>>,
    merge: Option<MergeFn<T>>,
    slots: HashMap<K, Slot<T>>,
    ready: VecDeque<(u64, K)>,
    backoff: TimerHeap<K>,
    next_seq: u64,
    in_flight: FuturesUnordered<Attempt<K, Fut>>,
    stats: RetryStats,
}

// No field is ever pinned: operations are pinned inside `FuturesUnordered`'s own allocations.
impl<K, T, Op, Cl, Fut: TryFuture> Unpin for RetrySink<K, T, Op, Cl, Fut> {}

impl<K, T, Op, Cl, Fut: TryFuture> fmt::Debug for RetrySink<K, T, Op, Cl, Fut> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetrySink")
            .field("config", &self.config)
            .field("keys", &self.slots.len())
            .field("in_flight", &self.in_flight.len())
            .field("stats", &self.stats.snapshot())
            .finish_non_exhaustive()
    }
}

impl<K, T, Op, Cl, Fut> RetrySink<K, T, Op, Cl, Fut>
where
    K: Clone + Hash + Eq,
    T: Clone,
    Op: FnMut(K, T) -> Fut,
    Fut: TryFuture,
    Cl: FnMut(&Fut::Error) -> Retry,
{
    /// A sink applying `op(key, value)` per item, classifying errors with `classify`.
    /// `op` is called again with a clone of the value for each retry (wrap large values in an
    /// `Arc`).
    pub fn new(config: RetryConfig, op: Op, classify: Cl) -> Self {
        RetrySink {
            config,
            jitter: true,
            op,
            classify,
            on_outcome: None,
            merge: None,
            slots: HashMap::new(),
            ready: VecDeque::new(),
            backoff: TimerHeap::new(),
            next_seq: 0,
            in_flight: FuturesUnordered::new(),
            stats: RetryStats::default(),
        }
    }

    /// Calls `f` with the final [`Outcome`] of every item, in the order they become final.
    pub fn on_outcome(
        mut self,
        f: impl FnMut(Outcome<K, Fut::Ok, Fut::Error>) + Send + 'static,
    ) -> Self {
        self.on_outcome = Some(Box::new(f));
        self
    }

    /// Folds a superseded value into the one that replaces it, `merge(&mut newer, older)`,
    /// instead of dropping it: when an item replaces a waiting one, and when an operation fails
    /// while a newer item waits. For values that accumulate (the objects a trigger names), so
    /// that "latest wins" never loses what an older item carried. Superseded items are still
    /// counted and reported as such.
    pub fn merge_superseded(mut self, merge: impl FnMut(&mut T, T) + Send + 'static) -> Self {
        self.merge = Some(Box::new(merge));
        self
    }

    /// Retries exactly at `backoff_base * 2^(attempt-1)` (capped), without jitter: for tests,
    /// or when a single client cannot cause a thundering herd.
    pub fn without_jitter(mut self) -> Self {
        self.jitter = false;
        self
    }

    /// A handle on the sink's counts that stays valid after the sink is dropped.
    pub fn stats_handle(&self) -> RetryStats {
        self.stats.clone()
    }

    fn report(&mut self, key: K, attempts: u32, status: Status<Fut::Ok, Fut::Error>) {
        let counter = match status {
            Status::Sent(_) => &self.stats.0.sent,
            Status::Failed(_) => &self.stats.0.failed,
            Status::Superseded => &self.stats.0.superseded,
        };
        RetryStats::bump(counter);
        if let Some(f) = &mut self.on_outcome {
            f(Outcome {
                key,
                attempts,
                status,
            });
        }
    }

    fn accept(&mut self, key: K, value: T) {
        RetryStats::bump(&self.stats.0.accepted);
        let seq = self.next_seq;
        match self.slots.get_mut(&key) {
            Some(slot) => match &mut slot.waiting {
                Some(waiting) => {
                    let replaced = waiting.attempts;
                    let older = std::mem::replace(&mut waiting.value, value);
                    if let Some(merge) = &mut self.merge {
                        merge(&mut waiting.value, older);
                    }
                    waiting.attempts = 0;
                    tracing::trace!(attempts = replaced, "retry sink: item superseded");
                    self.report(key, replaced, Status::Superseded);
                }
                None => {
                    slot.waiting = Some(Waiting {
                        value,
                        attempts: 0,
                        place: Place::Parked,
                    });
                }
            },
            None => {
                let slot = Slot {
                    running: None,
                    waiting: Some(Waiting {
                        value,
                        attempts: 0,
                        place: Place::Ready(seq),
                    }),
                };
                self.slots.insert(key.clone(), slot);
                self.ready.push_back((seq, key));
                self.next_seq += 1;
            }
        }
    }

    fn delay(&self, attempts: u32) -> Duration {
        let backoff = ExponentialBackoff {
            base: self.config.backoff_base,
            max: self.config.backoff_max,
        };
        if self.jitter {
            backoff.jittered_delay(attempts)
        } else {
            backoff.delay(attempts)
        }
    }

    /// Moves due retries to the ready line.
    fn release_due(&mut self, now: Instant) {
        while let Some(due) = self.backoff.pop_due(now) {
            // Stale when the key's item was replaced (or the key forgotten) since.
            let Some(waiting) = self
                .slots
                .get_mut(&due.key)
                .and_then(|s| s.waiting.as_mut())
            else {
                continue;
            };
            if matches!(waiting.place, Place::Backoff(s) if s == due.seq) {
                waiting.place = Place::Ready(due.seq);
                self.ready.push_back((due.seq, due.key));
            }
        }
    }

    fn start_ready(&mut self) {
        let limit = self.config.max_concurrent.max(1);
        while self.in_flight.len() < limit {
            let Some((seq, key)) = self.ready.pop_front() else {
                return;
            };
            // An entry is stale when its key's item was replaced (or the key forgotten) since.
            let Some(slot) = self.slots.get_mut(&key) else {
                continue;
            };
            if slot.running.is_some() {
                continue;
            }
            let live = |w: &mut Waiting<T>| matches!(w.place, Place::Ready(s) if s == seq);
            let Some(waiting) = slot.waiting.take_if(live) else {
                continue;
            };
            let future = (self.op)(key.clone(), waiting.value.clone());
            slot.running = Some(Running {
                value: waiting.value,
                attempts: waiting.attempts + 1,
            });
            self.in_flight.push(Attempt {
                key: Some(key),
                future,
            });
        }
    }

    fn finish(&mut self, key: K, result: Result<Fut::Ok, Fut::Error>) {
        let slot = self.slots.get_mut(&key).expect(IN_FLIGHT_HAS_A_SLOT);
        let running = slot
            .running
            .take()
            .expect("a key in flight has a running item");
        let newer_waiting = slot.waiting.is_some();
        let attempts = running.attempts;
        match result {
            Ok(output) => self.report(key.clone(), attempts, Status::Sent(output)),
            Err(_) if newer_waiting => {
                if let Some(merge) = &mut self.merge {
                    let slot = self.slots.get_mut(&key).expect(IN_FLIGHT_HAS_A_SLOT);
                    let waiting = slot.waiting.as_mut().expect("a newer item waits");
                    merge(&mut waiting.value, running.value);
                }
                self.report(key.clone(), attempts, Status::Superseded);
            }
            Err(error) => {
                let out_of_attempts = self.config.max_attempts.is_some_and(|m| attempts >= m);
                match (self.classify)(&error) {
                    Retry::Transient if !out_of_attempts => {
                        RetryStats::bump(&self.stats.0.retried);
                        let at = Instant::now() + self.delay(attempts);
                        let seq = self.next_seq;
                        self.next_seq += 1;
                        tracing::debug!(attempts, "retry sink: transient error, backing off");
                        let slot = self.slots.get_mut(&key).expect(IN_FLIGHT_HAS_A_SLOT);
                        slot.waiting = Some(Waiting {
                            value: running.value,
                            attempts,
                            place: Place::Backoff(seq),
                        });
                        self.backoff.push(at, seq, key);
                        return;
                    }
                    _ => self.report(key.clone(), attempts, Status::Failed(error)),
                }
            }
        }
        // The key's operation is over: run the newer item, or forget the key.
        let seq = self.next_seq;
        let slot = self.slots.get_mut(&key).expect(IN_FLIGHT_HAS_A_SLOT);
        match &mut slot.waiting {
            Some(waiting) => {
                waiting.place = Place::Ready(seq);
                self.next_seq += 1;
                self.ready.push_back((seq, key));
            }
            None => {
                self.slots.remove(&key);
            }
        }
    }

    /// Runs everything that can run now; registers wake-ups on operations and the retry timer.
    fn poll_progress(&mut self, cx: &mut Context<'_>) {
        loop {
            self.release_due(Instant::now());
            self.start_ready();
            if let Poll::Ready(Some((key, result))) = Pin::new(&mut self.in_flight).poll_next(cx) {
                self.finish(key, result);
                continue;
            }
            if self.backoff.poll_earliest(cx).is_pending() {
                return;
            }
        }
    }
}

impl<K, T, Op, Cl, Fut> Sink<(K, T)> for RetrySink<K, T, Op, Cl, Fut>
where
    K: Clone + Hash + Eq,
    T: Clone,
    Op: FnMut(K, T) -> Fut,
    Fut: TryFuture,
    Cl: FnMut(&Fut::Error) -> Retry,
{
    type Error = Infallible;

    /// Always ready (latest-wins bounds memory per key); drives the operations meanwhile.
    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.get_mut().poll_progress(cx);
        Poll::Ready(Ok(()))
    }

    fn start_send(self: Pin<&mut Self>, (key, value): (K, T)) -> Result<(), Infallible> {
        self.get_mut().accept(key, value);
        Ok(())
    }

    /// Ready when every accepted item is final (sent, failed or superseded).
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        let this = self.get_mut();
        this.poll_progress(cx);
        if this.slots.is_empty() {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    }

    /// Flushes: retries until every item is final.
    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.poll_flush(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::{SinkExt, poll};
    use std::sync::Mutex;

    type Calls = Arc<Mutex<Vec<(Duration, &'static str, u32)>>>;

    type BoxedOp = Pin<Box<dyn Future<Output = Result<u32, &'static str>> + Send>>;

    /// An op that logs each call's instant, takes `op_time`, then returns
    /// `behaviour(key, value, how many calls the key has had, this one included)`.
    fn recorder(
        calls: Calls,
        op_time: Duration,
        behaviour: fn(&'static str, u32, usize) -> Result<u32, &'static str>,
    ) -> impl FnMut(&'static str, u32) -> BoxedOp {
        let t0 = Instant::now();
        move |key, value| {
            let n = {
                let mut calls = calls.lock().expect("lock");
                calls.push((Instant::now() - t0, key, value));
                calls.iter().filter(|c| c.1 == key).count()
            };
            Box::pin(async move {
                tokio::time::sleep(op_time).await;
                behaviour(key, value, n)
            })
        }
    }

    fn classify(e: &&'static str) -> Retry {
        if *e == "permanent" {
            Retry::Permanent
        } else {
            Retry::Transient
        }
    }

    fn config(max_concurrent: usize, max_attempts: Option<u32>) -> RetryConfig {
        RetryConfig {
            max_concurrent,
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(5),
            max_attempts,
        }
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[tokio::test(start_paused = true)]
    async fn transient_errors_back_off_exponentially_to_the_cap() {
        let calls = Calls::default();
        let mut sink = RetrySink::new(
            config(4, None),
            recorder(calls.clone(), Duration::ZERO, |_, _, n| {
                if n < 6 { Err("busy") } else { Ok(0) }
            }),
            classify,
        )
        .without_jitter();
        let stats = sink.stats_handle();
        sink.send(("a", 1)).await.expect("infallible");
        let instants: Vec<_> = calls.lock().expect("lock").iter().map(|c| c.0).collect();
        assert_eq!(
            instants,
            vec![secs(0), secs(1), secs(3), secs(7), secs(12), secs(17)]
        );
        let counts = stats.snapshot();
        assert_eq!((counts.sent, counts.retried, counts.pending), (1, 5, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn merge_keeps_what_superseded_items_carried() {
        let calls = Calls::default();
        // The first try of each key fails; values are bit sets, merged by union.
        let mut sink = RetrySink::new(
            config(1, None),
            recorder(calls.clone(), secs(1), |_, _, n| {
                if n < 2 { Err("busy") } else { Ok(0) }
            }),
            classify,
        )
        .without_jitter()
        .merge_superseded(|newer: &mut u32, older| *newer |= older);
        let stats = sink.stats_handle();
        // 0b001 runs and fails while 0b010 waits; 0b100 then replaces the waiting one.
        sink.feed(("a", 0b001)).await.expect("infallible");
        sink.feed(("a", 0b010)).await.expect("infallible");
        sink.feed(("a", 0b100)).await.expect("infallible");
        sink.flush().await.expect("infallible");
        let values: Vec<u32> = calls.lock().expect("lock").iter().map(|c| c.2).collect();
        assert_eq!(values, vec![0b001, 0b111]);
        let counts = stats.snapshot();
        assert_eq!((counts.sent, counts.superseded, counts.pending), (1, 2, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn jitter_stays_in_the_upper_half_of_the_backoff() {
        for _ in 0..20 {
            let calls = Calls::default();
            let mut sink = RetrySink::new(
                config(1, None),
                recorder(calls.clone(), Duration::ZERO, |_, _, n| {
                    if n < 3 { Err("busy") } else { Ok(0) }
                }),
                classify,
            );
            sink.send(("a", 1)).await.expect("infallible");
            let calls = calls.lock().expect("lock");
            let first = calls[1].0 - calls[0].0;
            let second = calls[2].0 - calls[1].0;
            assert!(
                first >= Duration::from_millis(500) && first <= secs(1),
                "{first:?}"
            );
            assert!(second >= secs(1) && second <= secs(2), "{second:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn permanent_errors_and_max_attempts_fail() {
        let outcomes = Arc::new(Mutex::new(Vec::new()));
        let log = outcomes.clone();
        let calls = Calls::default();
        let mut sink = RetrySink::new(
            config(4, Some(3)),
            recorder(calls.clone(), Duration::ZERO, |key, _, _| {
                if key == "p" {
                    Err("permanent")
                } else {
                    Err("busy")
                }
            }),
            classify,
        )
        .without_jitter()
        .on_outcome(move |o| {
            log.lock()
                .expect("lock")
                .push((o.key, o.attempts, o.status))
        });
        let stats = sink.stats_handle();
        sink.feed(("p", 1)).await.expect("infallible");
        sink.feed(("t", 1)).await.expect("infallible");
        sink.close().await.expect("infallible");
        assert_eq!(
            *outcomes.lock().expect("lock"),
            vec![
                ("p", 1, Status::Failed("permanent")),
                ("t", 3, Status::Failed("busy")),
            ]
        );
        let t_calls: Vec<_> = calls
            .lock()
            .expect("lock")
            .iter()
            .filter(|c| c.1 == "t")
            .map(|c| c.0)
            .collect();
        assert_eq!(t_calls, vec![secs(0), secs(1), secs(3)]);
        let counts = stats.snapshot();
        assert_eq!((counts.failed, counts.retried, counts.pending), (2, 2, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn newer_item_replaces_one_waiting_for_a_slot() {
        let calls = Calls::default();
        let mut sink = RetrySink::new(
            config(1, None),
            recorder(calls.clone(), secs(1), |_, v, _| Ok(v)),
            classify,
        );
        let stats = sink.stats_handle();
        for item in [("a", 1), ("b", 1), ("b", 2), ("b", 3)] {
            sink.feed(item).await.expect("infallible");
        }
        sink.flush().await.expect("infallible");
        assert_eq!(
            *calls.lock().expect("lock"),
            vec![(secs(0), "a", 1), (secs(1), "b", 3)]
        );
        let counts = stats.snapshot();
        assert_eq!((counts.accepted, counts.sent, counts.superseded), (4, 2, 2));
    }

    #[tokio::test(start_paused = true)]
    async fn newer_item_replaces_one_waiting_to_retry_and_keeps_its_instant() {
        let calls = Calls::default();
        let mut sink = RetrySink::new(
            config(4, None),
            recorder(calls.clone(), Duration::ZERO, |_, v, _| {
                if v == 1 { Err("busy") } else { Ok(v) }
            }),
            classify,
        )
        .without_jitter();
        let stats = sink.stats_handle();
        sink.feed(("a", 1)).await.expect("infallible");
        assert!(poll!(sink.flush()).is_pending()); // tried at 0, backing off until 1 s
        tokio::time::advance(Duration::from_millis(300)).await;
        sink.feed(("a", 2)).await.expect("infallible");
        sink.flush().await.expect("infallible");
        assert_eq!(
            *calls.lock().expect("lock"),
            vec![(secs(0), "a", 1), (secs(1), "a", 2)]
        );
        let counts = stats.snapshot();
        assert_eq!((counts.sent, counts.retried, counts.superseded), (1, 1, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn item_for_a_key_in_flight_waits_then_runs_with_the_latest() {
        let calls = Calls::default();
        let mut sink = RetrySink::new(
            config(4, None),
            recorder(calls.clone(), secs(5), |_, v, _| Ok(v)),
            classify,
        );
        let stats = sink.stats_handle();
        sink.feed(("a", 1)).await.expect("infallible");
        assert!(poll!(sink.flush()).is_pending()); // a=1 in flight until 5 s
        tokio::time::advance(secs(1)).await;
        sink.feed(("a", 2)).await.expect("infallible");
        sink.feed(("a", 3)).await.expect("infallible");
        sink.feed(("b", 1)).await.expect("infallible");
        sink.flush().await.expect("infallible");
        assert_eq!(
            *calls.lock().expect("lock"),
            vec![(secs(0), "a", 1), (secs(1), "b", 1), (secs(5), "a", 3)],
            "one op per key at a time; the latest value runs next"
        );
        let counts = stats.snapshot();
        assert_eq!((counts.sent, counts.superseded), (3, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn failure_in_flight_with_a_newer_item_is_superseded_not_retried() {
        let outcomes = Arc::new(Mutex::new(Vec::new()));
        let log = outcomes.clone();
        let calls = Calls::default();
        let mut sink = RetrySink::new(
            config(4, None),
            recorder(calls.clone(), secs(1), |_, v, _| {
                if v == 1 { Err("busy") } else { Ok(v) }
            }),
            classify,
        )
        .on_outcome(move |o| log.lock().expect("lock").push((o.attempts, o.status)));
        sink.feed(("a", 1)).await.expect("infallible");
        assert!(poll!(sink.flush()).is_pending());
        sink.feed(("a", 2)).await.expect("infallible");
        sink.close().await.expect("infallible");
        assert_eq!(
            *calls.lock().expect("lock"),
            vec![(secs(0), "a", 1), (secs(1), "a", 2)]
        );
        assert_eq!(
            *outcomes.lock().expect("lock"),
            vec![(1, Status::Superseded), (1, Status::Sent(2))]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn concurrency_is_bounded() {
        let calls = Calls::default();
        let mut sink = RetrySink::new(
            config(2, None),
            recorder(calls.clone(), secs(1), |_, v, _| Ok(v)),
            classify,
        );
        for key in ["a", "b", "c", "d", "e"] {
            sink.feed((key, 0)).await.expect("infallible");
        }
        sink.close().await.expect("infallible");
        let starts: Vec<_> = calls
            .lock()
            .expect("lock")
            .iter()
            .map(|c| c.0.as_secs())
            .collect();
        assert_eq!(starts, vec![0, 0, 1, 1, 2]);
    }

    proptest::proptest! {
        /// Over random feeding schedules, op durations and transient failures: at most one op
        /// per key and `max_concurrent` ops at once; per key, sent values only increase and the
        /// last value fed is sent; every item ends (sent, superseded or failed).
        #[test]
        fn latest_wins_and_nothing_is_lost(
            max_concurrent in 1usize..4,
            items in proptest::collection::vec((0u32..4, 0u64..40), 1..40),
        ) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .start_paused(true)
                .build()
                .expect("runtime");
            #[derive(Default)]
            struct Trace {
                running: Vec<u32>,
                max_running: usize,
                twice: bool,
                sent: Vec<(u32, u32)>,
            }
            let trace = Arc::new(Mutex::new(Trace::default()));
            let op_trace = trace.clone();
            let calls = Arc::new(Mutex::new(HashMap::<(u32, u32), u32>::new()));
            let mut sink = RetrySink::new(
                RetryConfig { max_concurrent, backoff_base: Duration::from_millis(10), backoff_max: Duration::from_millis(80), max_attempts: None },
                move |key: u32, value: u32| {
                    let trace = op_trace.clone();
                    let call = {
                        let mut calls = calls.lock().expect("lock");
                        let n = calls.entry((key, value)).or_default();
                        *n += 1;
                        *n
                    };
                    async move {
                        {
                            let mut t = trace.lock().expect("lock");
                            t.twice |= t.running.contains(&key);
                            t.running.push(key);
                            t.max_running = t.max_running.max(t.running.len());
                        }
                        tokio::time::sleep(Duration::from_millis(u64::from(value % 4) * 7)).await;
                        let mut t = trace.lock().expect("lock");
                        let at = t.running.iter().position(|k| *k == key).expect("running");
                        t.running.remove(at);
                        if (value + call).is_multiple_of(3) {
                            Err("busy")
                        } else {
                            t.sent.push((key, value));
                            Ok(())
                        }
                    }
                },
                |_: &&str| Retry::Transient,
            );
            let stats = sink.stats_handle();
            let mut last = HashMap::new();
            runtime.block_on(async {
                for (value, (key, gap)) in items.iter().enumerate() {
                    let _ = tokio::time::timeout(Duration::from_millis(*gap), sink.flush()).await;
                    sink.feed((*key, value as u32)).await.expect("infallible");
                    last.insert(*key, value as u32);
                }
                sink.close().await.expect("infallible");
            });
            let t = trace.lock().expect("lock");
            proptest::prop_assert!(!t.twice, "two ops on one key at once");
            proptest::prop_assert!(t.max_running <= max_concurrent);
            for (key, value) in &last {
                proptest::prop_assert!(t.sent.contains(&(*key, *value)), "last value of {} not sent", key);
                let per_key: Vec<u32> = t.sent.iter().filter(|s| s.0 == *key).map(|s| s.1).collect();
                proptest::prop_assert!(per_key.windows(2).all(|w| w[0] < w[1]), "older value sent after newer: {:?}", per_key);
            }
            let counts = stats.snapshot();
            proptest::prop_assert_eq!(counts.accepted, items.len() as u64);
            proptest::prop_assert_eq!(counts.pending, 0);
            proptest::prop_assert_eq!(counts.sent + counts.superseded + counts.failed, counts.accepted);
            proptest::prop_assert_eq!(counts.sent, t.sent.len() as u64);
        }
    }

    #[test]
    fn sink_is_send_when_its_parts_are() {
        fn assert_send<T: Send>(_: &T) {}
        let sink = RetrySink::new(
            RetryConfig::default(),
            |_k: String, _v: u32| async { Ok::<_, std::io::Error>(()) },
            |_e: &std::io::Error| Retry::Transient,
        )
        .on_outcome(|_| {});
        assert_send(&sink);
    }
}
