//! [`DebounceKeyed`], the stream: each poll drains the ready input, then fires due bursts.

use std::{
    fmt,
    hash::Hash,
    ops::ControlFlow,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use futures::{
    Stream, StreamExt,
    stream::{self, Fuse},
};
use pin_project::pin_project;
use tokio::time::Instant;

use super::config::{DebounceConfig, Debounced, OnInputEnd, Timing};
use super::store::{Bursts, MillisTiming, nanos};

/// How many ready input items one poll folds before it yields, so that a flooding input
/// cannot starve the deadlines or the rest of the task.
pub(super) const DRAIN_BUDGET: usize = 512;

/// Stream returned by
/// [`ControllerStreamExt::debounce_keyed`](crate::stream::ControllerStreamExt::debounce_keyed)
/// and [`debounce_keyed_with`](crate::stream::ControllerStreamExt::debounce_keyed_with).
///
/// [`settle_on`](Self::settle_on) adds a second input: keys whose leading emission has been
/// dealt with.
#[pin_project(project = DebounceKeyedProj)]
#[must_use = "streams do nothing unless polled"]
pub struct DebounceKeyed<S, K, A, KF, TF, F, St = stream::Pending<K>> {
    #[pin]
    input: S,
    input_done: bool,
    #[pin]
    settled: Fuse<St>,
    key_of: KF,
    timing_of: TF,
    fold: F,
    config: DebounceConfig,
    /// `config.timing`, converted once.
    default_timing: MillisTiming,
    pub(super) bursts: Bursts<K, A>,
    /// Instant 0 of the bursts' nanosecond clock, set at the first poll (inside the runtime,
    /// so a paused clock is honoured).
    base: Option<Instant>,
    /// The latest clock reading (or fired deadline), in nanoseconds since `base`.
    seen_now: u64,
}

/// Reads the clock at most once per poll, and only when needed: to stamp an input item, or
/// when the earliest deadline is later than the last reading.
struct Clock {
    base: Instant,
    read: Option<Instant>,
}

impl Clock {
    /// Now, as an instant and in nanoseconds since `base`.
    fn now(&mut self) -> (Instant, u64) {
        let now = *self.read.get_or_insert_with(Instant::now);
        (now, nanos(now.saturating_duration_since(self.base)))
    }

    /// The instant `offset` nanoseconds after `base`.
    fn instant(&self, offset: u64) -> Instant {
        let base = self.base;
        base.checked_add(Duration::from_nanos(offset))
            .unwrap_or(base)
    }
}

impl<S, K, A, KF, TF, F> DebounceKeyed<S, K, A, KF, TF, F>
where
    K: Hash + Eq,
{
    pub(crate) fn new(
        input: S,
        config: DebounceConfig,
        key_of: KF,
        timing_of: TF,
        fold: F,
    ) -> Self {
        Self {
            input,
            input_done: false,
            settled: stream::pending().fuse(),
            key_of,
            timing_of,
            fold,
            config,
            default_timing: config.timing.into(),
            bursts: Bursts::new(),
            base: None,
            seen_now: 0,
        }
    }
}

impl<S, K, A, KF, TF, F, St> DebounceKeyed<S, K, A, KF, TF, F, St>
where
    K: Hash + Eq,
{
    /// How many keys have a burst open (waiting for a trailing emission or, in leading+trailing
    /// mode, for their window to close).
    pub fn pending_keys(&self) -> usize {
        self.bursts.len()
    }

    /// Ends the hold of a leading emission early: each key from `settled` whose
    /// leading+trailing burst has taken in nothing since its leading emission is settled, and
    /// the next item of that key is emitted at once as the leading item of a new burst. A
    /// burst that has taken in items keeps its trailing emission (a storm stays one), and
    /// trailing bursts are not affected. For a caller that learns when a leading emission has
    /// been acted on (the sentinel: the operator acknowledged the trigger), so that a new item
    /// after that does not wait out the window.
    ///
    /// ```
    /// use futures::{StreamExt, channel::mpsc};
    /// use kube_sentinel::stream::{ControllerStreamExt, DebounceConfig};
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let (items, input) = mpsc::unbounded();
    /// let (done, settled) = mpsc::unbounded();
    /// let debounced = input
    ///     .debounce_keyed(
    ///         DebounceConfig::leading_trailing(Duration::from_secs(2)),
    ///         |(key, _): &(&str, u32)| *key,
    ///         |_, (_, value)| value,
    ///     )
    ///     .settle_on(settled);
    /// futures::pin_mut!(debounced);
    /// items.unbounded_send(("web", 1)).unwrap();
    /// assert_eq!(debounced.next().await.map(|d| d.value), Some(1)); // leading, at once
    /// done.unbounded_send("web").unwrap(); // acted on; nothing came since
    /// items.unbounded_send(("web", 2)).unwrap();
    /// let next = debounced.next().await.expect("emitted");
    /// assert_eq!((next.value, next.leading), (2, true)); // at once, not after 2 s
    /// # }
    /// ```
    pub fn settle_on<St2>(self, settled: St2) -> DebounceKeyed<S, K, A, KF, TF, F, St2>
    where
        St2: Stream<Item = K>,
    {
        let Self {
            input,
            input_done,
            settled: _,
            key_of,
            timing_of,
            fold,
            config,
            default_timing,
            bursts,
            base,
            seen_now,
        } = self;
        DebounceKeyed {
            input,
            input_done,
            settled: settled.fuse(),
            key_of,
            timing_of,
            fold,
            config,
            default_timing,
            bursts,
            base,
            seen_now,
        }
    }
}

impl<S, K, A, KF, TF, F, St> fmt::Debug for DebounceKeyed<S, K, A, KF, TF, F, St> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DebounceKeyed")
            .field("config", &self.config)
            .field("pending_keys", &self.bursts.len())
            .field("input_done", &self.input_done)
            .finish_non_exhaustive()
    }
}

impl<S, K, A, KF, TF, F, St> DebounceKeyedProj<'_, S, K, A, KF, TF, F, St>
where
    S: Stream,
    St: Stream<Item = K>,
    K: Hash + Eq + Clone,
    KF: FnMut(&S::Item) -> K,
    TF: FnMut(&S::Item) -> Option<Timing>,
    F: FnMut(Option<A>, S::Item) -> A,
{
    /// Settles the bursts of the ready settled keys, at most [`DRAIN_BUDGET`] of them; returns
    /// whether the budget ran out (more may be ready).
    fn drain_settled(&mut self, cx: &mut Context<'_>) -> bool {
        for _ in 0..DRAIN_BUDGET {
            match self.settled.as_mut().poll_next(cx) {
                Poll::Ready(Some(key)) => {
                    self.bursts.settle(&key);
                }
                Poll::Ready(None) | Poll::Pending => return false,
            }
        }
        true
    }

    /// Folds the ready input items into their bursts, at most [`DRAIN_BUDGET`] of them.
    /// Breaks with the leading emission of an item that opens a leading+trailing burst;
    /// otherwise continues with whether the budget ran out (more input may be ready).
    fn drain_input(
        &mut self,
        cx: &mut Context<'_>,
        clock: &mut Clock,
    ) -> ControlFlow<Debounced<K, A>, bool> {
        if *self.input_done {
            return ControlFlow::Continue(false);
        }
        for _ in 0..DRAIN_BUDGET {
            let item = match self.input.as_mut().poll_next(cx) {
                Poll::Ready(Some(item)) => item,
                Poll::Ready(None) => {
                    tracing::debug!(pending = self.bursts.len(), "debounce: input ended");
                    *self.input_done = true;
                    return ControlFlow::Continue(false);
                }
                Poll::Pending => return ControlFlow::Continue(false),
            };
            let (now_instant, now) = clock.now();
            *self.seen_now = (*self.seen_now).max(now);
            let key = (self.key_of)(&item);
            let default_timing = *self.default_timing;
            let timing_of = &mut *self.timing_of;
            if let Some((key, value, leading)) = self.bursts.absorb(
                key,
                item,
                now,
                |item| timing_of(item).map_or(default_timing, MillisTiming::from),
                self.config.max_jitter,
                &mut *self.fold,
            ) {
                return ControlFlow::Break(Debounced {
                    key,
                    value,
                    first_seen: now_instant,
                    absorbed: 1,
                    leading,
                });
            }
        }
        ControlFlow::Continue(true)
    }

    /// Emits the earliest burst whose deadline has passed, or arms the one timer for the
    /// earliest deadline; ends the stream once the input has ended and no burst is open.
    fn poll_fire_due(
        &mut self,
        cx: &mut Context<'_>,
        clock: &mut Clock,
    ) -> Poll<Option<Debounced<K, A>>> {
        let flush = *self.input_done && self.config.on_input_end == OnInputEnd::Immediately;
        loop {
            // A clock reading from an earlier poll is a safe "now": it can only make a
            // deadline look later, never earlier.
            let now = if flush { u64::MAX } else { *self.seen_now };
            if let Some(burst) = self.bursts.pop_due(now) {
                return Poll::Ready(Some(Debounced {
                    key: burst.key,
                    value: burst.value,
                    first_seen: clock.instant(burst.first_seen),
                    absorbed: burst.absorbed,
                    leading: false,
                }));
            }
            let Some(deadline) = self.bursts.next_deadline() else {
                return if *self.input_done {
                    Poll::Ready(None)
                } else {
                    Poll::Pending
                };
            };
            if clock.read.is_none() {
                *self.seen_now = (*self.seen_now).max(clock.now().1);
                continue;
            }
            let at = clock.instant(deadline);
            if self.bursts.deadlines.poll_timer(at, cx).is_pending() {
                return Poll::Pending;
            }
            // The timer has fired: trust it even if the clock reads a hair earlier.
            *self.seen_now = (*self.seen_now).max(deadline);
        }
    }
}

impl<S, K, A, KF, TF, F, St> Stream for DebounceKeyed<S, K, A, KF, TF, F, St>
where
    S: Stream,
    St: Stream<Item = K>,
    K: Hash + Eq + Clone,
    KF: FnMut(&S::Item) -> K,
    TF: FnMut(&S::Item) -> Option<Timing>,
    F: FnMut(Option<A>, S::Item) -> A,
{
    type Item = Debounced<K, A>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut this = self.project();
        let base = *this.base.get_or_insert_with(Instant::now);
        let mut clock = Clock { base, read: None };
        // Settled keys first: an item that arrives with its key's settlement leads at once.
        let settled_spent = this.drain_settled(cx);
        let budget_spent = match this.drain_input(cx, &mut clock) {
            ControlFlow::Break(leading) => return Poll::Ready(Some(leading)),
            ControlFlow::Continue(budget_spent) => budget_spent || settled_spent,
        };
        let fired = this.poll_fire_due(cx, &mut clock);
        if fired.is_pending() && budget_spent {
            // More input may be ready: come back for it once the other tasks have run.
            cx.waker().wake_by_ref();
        }
        fired
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let (_, upper) = self.input.size_hint();
        // At most two emissions per item (leading+trailing) plus one per open burst.
        let upper = upper
            .and_then(|upper| upper.checked_mul(2))
            .and_then(|upper| upper.checked_add(self.bursts.len()));
        (0, upper)
    }
}
