//! [`RetrySink`]: the ready line, the retry heap and the operations in flight.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::fmt;
use std::hash::Hash;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::stream::FuturesUnordered;
use futures::{Sink, Stream, TryFuture};
use tokio::time::Instant;

use super::state::{Attempt, Place, Running, Slot, Waiting};
use super::stats::RetryStats;
use super::types::{Delivery, Retry, RetryConfig, RetryOutcome};
use crate::stream::backoff::ExponentialBackoff;
use crate::stream::timer_heap::TimerHeap;

/// Why a key whose operation is in flight has a slot: the slot goes only once the key is idle.
const IN_FLIGHT_HAS_A_SLOT: &str = "a key in flight has a slot";

type OutcomeFn<K, O, E> = Box<dyn FnMut(RetryOutcome<K, O, E>) + Send>;
type MergeFn<T> = Box<dyn FnMut(&mut T, T) + Send>;
type RetryFn<K, E> = Box<dyn FnMut(&K, u32, Duration, &E) + Send>;

/// A [`Sink`] of `(key, value)` applying `op` with bounded concurrency, latest-wins per key and
/// classified retries. See the [module documentation](crate::stream::retry_sink) for the rules.
///
/// ```
/// use futures::SinkExt;
/// use kube_sentinel::stream::{Retry, RetryConfig, RetrySink, Delivery};
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
/// .on_outcome(move |outcome| log.lock().expect("lock").push(outcome.delivery));
/// let stats = sink.stats_handle();
/// sink.send(("web", 1)).await.expect("infallible");
/// sink.send(("db", 0)).await.expect("infallible");
/// sink.close().await.expect("infallible");
/// assert_eq!(
///     *outcomes.lock().expect("lock"),
///     vec![Delivery::Sent("web <- 1".to_string()), Delivery::Failed("conflict")]
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
    on_retry: Option<RetryFn<K, Fut::Error>>,
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
            on_retry: None,
            merge: None,
            slots: HashMap::new(),
            ready: VecDeque::new(),
            backoff: TimerHeap::new(),
            next_seq: 0,
            in_flight: FuturesUnordered::new(),
            stats: RetryStats::default(),
        }
    }

    /// Calls `f` with the final [`RetryOutcome`] of every item, in the order they become final.
    pub fn on_outcome(
        mut self,
        f: impl FnMut(RetryOutcome<K, Fut::Ok, Fut::Error>) + Send + 'static,
    ) -> Self {
        self.on_outcome = Some(Box::new(f));
        self
    }

    /// Calls `f(key, attempts, delay, error)` each time a transient error is retried, when the
    /// retry is scheduled (`attempts` tries so far, the next after `delay`): retries counted as
    /// they happen, not only once an item is final.
    pub fn on_retry(
        mut self,
        f: impl FnMut(&K, u32, Duration, &Fut::Error) + Send + 'static,
    ) -> Self {
        self.on_retry = Some(Box::new(f));
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

    fn report(&mut self, key: K, attempts: u32, delivery: Delivery<Fut::Ok, Fut::Error>) {
        self.stats.delivered(&delivery);
        if let Some(f) = &mut self.on_outcome {
            f(RetryOutcome {
                key,
                attempts,
                delivery,
            });
        }
    }

    fn accept(&mut self, key: K, value: T) {
        self.stats.accepted();
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
                    self.report(key, replaced, Delivery::Superseded);
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
            Ok(output) => self.report(key.clone(), attempts, Delivery::Sent(output)),
            Err(_) if newer_waiting => {
                if let Some(merge) = &mut self.merge {
                    let slot = self.slots.get_mut(&key).expect(IN_FLIGHT_HAS_A_SLOT);
                    let waiting = slot.waiting.as_mut().expect("a newer item waits");
                    merge(&mut waiting.value, running.value);
                }
                self.report(key.clone(), attempts, Delivery::Superseded);
            }
            Err(error) => {
                let out_of_attempts = self.config.max_attempts.is_some_and(|m| attempts >= m);
                match (self.classify)(&error) {
                    Retry::Transient if !out_of_attempts => {
                        self.stats.retried();
                        let delay = self.delay(attempts);
                        if let Some(f) = &mut self.on_retry {
                            f(&key, attempts, delay, &error);
                        }
                        let at = Instant::now() + delay;
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
                    _ => self.report(key.clone(), attempts, Delivery::Failed(error)),
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
