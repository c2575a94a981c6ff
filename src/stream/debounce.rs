//! Keyed debounce window: one emission per key per burst.
//!
//! Items are grouped by a key; the items of one key that arrive close together (a *burst*) are
//! folded into one value by a caller-supplied fold and emitted once, as a [`Debounced`].
//!
//! * **Trailing** ([`DebounceMode::Trailing`], the default): a burst is emitted once its key
//!   has been quiet for `window` (plus the key's jitter). With `max_wait`, it is emitted at the
//!   latest `max_wait` after its first item, however fast items keep coming.
//! * **Leading + trailing** ([`DebounceMode::LeadingTrailing`]): an item for a *quiet* key (one
//!   with no burst open) is emitted at once (`leading: true`) and opens a burst. Items that
//!   arrive while the burst is open are folded and extend it like the trailing mode; when it
//!   closes they are emitted once (`leading: false`). A burst with no further item closes
//!   silently. Either way the key is quiet again afterwards: at most two emissions per burst.
//! * **Jitter**: an optional per-key delay in `[0, max_jitter)`, in whole milliseconds,
//!   derived deterministically from the key's hash (clamped below one second), added to the
//!   quiet deadline so that keys which drift together do not fire in the same instant. It never
//!   delays past `max_wait`.
//! * **End of input**: bursts still open are emitted at their deadlines
//!   ([`OnInputEnd::AtDeadline`]) or at once ([`OnInputEnd::Immediately`]); then the stream
//!   ends. No item is lost.
//!
//! Each emission carries the fold of its items, how many it absorbed, and `first_seen`: when
//! the burst's first item arrived (for a trailing emission after a leading one, the leading
//! item), so that `first_seen` to emission is the burst's latency. Durations have millisecond
//! resolution, like tokio's timer.
//!
//! An item that is ready on the input when a deadline is reached is folded into that burst:
//! each poll drains the ready input (at most a fixed budget of items, then the task wakes itself
//! so others may run) before it fires deadlines.
//!
//! # Design
//! One timer for the whole combinator. Open bursts live in a [`slab::Slab`], found by key
//! through a [`hashbrown::HashTable`] of slab indices (the key is stored once), and a binary
//! min-heap of `(deadline, slab index)` drives a single [`tokio::time::Sleep`], reset only when
//! the earliest deadline changes. A burst's deadline only ever moves later, so the heap keeps
//! exactly one entry per open burst, possibly earlier than its true deadline: when it comes up
//! early it is pushed back at the true deadline. There is no generation counter and no stale
//! entry, an item costs one hash lookup (and a heap push when it opens a burst), and an emission
//! frees the burst. Memory is proportional to the open bursts: the storage is compacted when
//! fewer than a quarter of its slots are in use.

use std::{
    collections::binary_heap::PeekMut,
    fmt,
    hash::{BuildHasher, DefaultHasher, Hash, Hasher},
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use futures::Stream;
use hashbrown::{DefaultHashBuilder, HashTable, hash_table::Entry};
use pin_project::pin_project;
use slab::Slab;
use tokio::time::Instant;

use super::timer_heap::{Due, TimerHeap};

/// How many ready input items one poll folds before it yields, so that a flooding input
/// cannot starve the deadlines or the rest of the task.
const DRAIN_BUDGET: usize = 512;

/// Storage is compacted when fewer than `1 / COMPACT_RATIO` of its slots are in use...
const COMPACT_RATIO: usize = 4;
/// ...and it holds at least this many slots (small tables are not worth the work).
const COMPACT_MIN_CAPACITY: usize = 1024;

/// Jitter is sub-second: a larger `max_jitter` is clamped to this.
const MAX_JITTER: Duration = Duration::from_millis(999);

/// When a burst is emitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DebounceMode {
    /// Emit once the key has been quiet for the window (or at `max_wait`).
    #[default]
    Trailing,
    /// Emit the first item of a quiet key at once, then at most one trailing emission for the
    /// items that arrive while its burst is open.
    LeadingTrailing,
}

/// The timing rules of a burst: window, max-wait cap and mode.
///
/// Durations are rounded up to whole milliseconds (the resolution of tokio's timer) and
/// capped at about 49 days.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// Quiet time after the last item of a burst before the burst is emitted.
    pub window: Duration,
    /// The latest a burst is emitted after its first item, even under continuous items.
    /// `None`: no cap (a key that never goes quiet is never emitted; see the warning on
    /// [`ControllerStreamExt::debounce_keyed`](crate::stream::ControllerStreamExt::debounce_keyed)).
    pub max_wait: Option<Duration>,
    /// Trailing only, or leading and trailing.
    pub mode: DebounceMode,
}

impl Timing {
    /// Trailing emission after `window` of quiet, no max-wait cap.
    pub fn trailing(window: Duration) -> Self {
        Self {
            window,
            max_wait: None,
            mode: DebounceMode::Trailing,
        }
    }

    /// Leading emission for a quiet key, then a trailing one after `window` of quiet.
    pub fn leading_trailing(window: Duration) -> Self {
        Self {
            window,
            max_wait: None,
            mode: DebounceMode::LeadingTrailing,
        }
    }

    /// Caps a burst at `max_wait` after its first item.
    pub fn max_wait(self, max_wait: Duration) -> Self {
        Self {
            max_wait: Some(max_wait),
            ..self
        }
    }
}

/// What happens to open bursts when the input stream ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnInputEnd {
    /// Each open burst is emitted at its deadline, as if the input had merely gone quiet.
    #[default]
    AtDeadline,
    /// All open bursts are emitted at once, earliest deadline first.
    Immediately,
}

/// Configuration of [`ControllerStreamExt::debounce_keyed`](crate::stream::ControllerStreamExt::debounce_keyed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DebounceConfig {
    /// Timing of every key, unless overridden per key by
    /// [`debounce_keyed_with`](crate::stream::ControllerStreamExt::debounce_keyed_with).
    pub timing: Timing,
    /// Upper bound (exclusive) of the per-key jitter added to the quiet deadline; zero for
    /// none. Clamped below one second; the jitter is a whole number of milliseconds.
    pub max_jitter: Duration,
    /// What happens to open bursts when the input ends.
    pub on_input_end: OnInputEnd,
}

impl DebounceConfig {
    /// Trailing debounce with `window`, no max-wait, no jitter, emitting at deadlines after
    /// the input ends.
    pub fn trailing(window: Duration) -> Self {
        Self {
            timing: Timing::trailing(window),
            max_jitter: Duration::ZERO,
            on_input_end: OnInputEnd::AtDeadline,
        }
    }

    /// Leading and trailing debounce with `window`, no max-wait, no jitter.
    pub fn leading_trailing(window: Duration) -> Self {
        Self {
            timing: Timing::leading_trailing(window),
            ..Self::trailing(window)
        }
    }

    /// Caps every burst at `max_wait` after its first item.
    pub fn max_wait(self, max_wait: Duration) -> Self {
        Self {
            timing: self.timing.max_wait(max_wait),
            ..self
        }
    }

    /// Adds a deterministic per-key jitter in `[0, max)` (whole milliseconds, `max` clamped
    /// below one second) to each key's quiet deadline.
    pub fn jitter(self, max: Duration) -> Self {
        Self {
            max_jitter: max,
            ..self
        }
    }

    /// Sets what happens to open bursts when the input ends.
    pub fn on_input_end(self, on_input_end: OnInputEnd) -> Self {
        Self {
            on_input_end,
            ..self
        }
    }
}

/// One emission: the folded value of (part of) a burst of one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Debounced<K, A> {
    /// The key.
    pub key: K,
    /// The fold of the items this emission absorbed.
    pub value: A,
    /// When the burst's first item arrived. For the trailing emission of a leading+trailing
    /// burst that is the item already emitted as the leading one, so the time from
    /// `first_seen` to the emission is always the latency of the burst.
    pub first_seen: Instant,
    /// How many items `value` folds (at least one).
    pub absorbed: u64,
    /// `true` for the immediate emission of a quiet key in
    /// [`DebounceMode::LeadingTrailing`] (then `absorbed` is 1).
    pub leading: bool,
}

/// The jitter of `key`: a whole number of milliseconds in `[0, max)`, from a fixed-key hash
/// (std's SipHash-1-3 with zero keys), so the same key gets the same jitter in every run of a
/// build.
fn jitter_of<K: Hash>(key: &K, max: Duration) -> Duration {
    let max_ms = u64::try_from(max.min(MAX_JITTER).as_millis()).unwrap_or(0);
    if max_ms == 0 {
        return Duration::ZERO;
    }
    let mut hasher = DefaultHasher::new();
    key.hash(&mut hasher);
    Duration::from_millis(hasher.finish() % max_ms)
}

/// Nanoseconds, saturating (584 years is as good as forever here).
fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

const NANOS_PER_MILLI: u64 = 1_000_000;

/// `u32::MAX` milliseconds in [`Burst::max_wait_ms`]: no cap.
const NO_CAP: u32 = u32::MAX;

/// Whole milliseconds, rounded up (tokio's timer has millisecond resolution), saturating at
/// about 49 days.
fn millis_ceil(duration: Duration) -> u32 {
    let millis = duration
        .as_secs()
        .saturating_mul(1000)
        .saturating_add(u64::from(duration.subsec_nanos().div_ceil(1_000_000)));
    u32::try_from(millis).unwrap_or(NO_CAP - 1).min(NO_CAP - 1)
}

/// A [`Timing`] as a burst stores it.
#[derive(Debug, Clone, Copy)]
struct MillisTiming {
    window_ms: u32,
    max_wait_ms: u32,
    mode: DebounceMode,
}

impl From<Timing> for MillisTiming {
    fn from(timing: Timing) -> Self {
        Self {
            window_ms: millis_ceil(timing.window),
            max_wait_ms: timing.max_wait.map_or(NO_CAP, millis_ceil),
            mode: timing.mode,
        }
    }
}

/// An open burst of one key. Instants are nanoseconds since the combinator's `base` instant
/// and durations whole milliseconds, to keep the entry small.
struct Burst<K, A> {
    key: K,
    /// `None` only in a leading+trailing burst that has absorbed nothing since its leading
    /// emission.
    value: Option<A>,
    /// When the burst's first item arrived (in leading+trailing mode, the leading one).
    first_seen: u64,
    /// Items in `value`.
    absorbed: u64,
    /// True deadline; the heap entry may be earlier.
    deadline: u64,
    /// Window + jitter.
    quiet_ms: u32,
    /// [`NO_CAP`] for none.
    max_wait_ms: u32,
}

impl<K, A> Burst<K, A> {
    /// The deadline when the latest item arrived at `now`.
    fn deadline_after(&self, now: u64) -> u64 {
        let quiet = now.saturating_add(u64::from(self.quiet_ms) * NANOS_PER_MILLI);
        if self.max_wait_ms == NO_CAP {
            return quiet;
        }
        quiet.min(
            self.first_seen
                .saturating_add(u64::from(self.max_wait_ms) * NANOS_PER_MILLI),
        )
    }
}

/// A burst's heap entry: its slot (as the sequence: unique among open bursts, it orders
/// equal deadlines) and a deadline no later than its true one.
type BurstDue = Due<(), SplitNanos, u32>;

// A heap entry per open burst: BENCHMARKS.md counts 12 bytes.
const _: () = assert!(std::mem::size_of::<BurstDue>() == 12);

/// A deadline in nanoseconds split in halves, so that a heap entry takes 12 bytes, not 16;
/// the derived order is the order of the deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct SplitNanos {
    high: u32,
    low: u32,
}

impl SplitNanos {
    fn new(nanos: u64) -> Self {
        Self {
            high: (nanos >> 32) as u32,
            low: nanos as u32,
        }
    }

    fn get(self) -> u64 {
        (u64::from(self.high) << 32) | u64::from(self.low)
    }
}

/// The open bursts and their deadlines.
struct Bursts<K, A> {
    hash_builder: DefaultHashBuilder,
    /// Slab indices of `slots`, looked up by the hash of the slot's key.
    index: HashTable<u32>,
    slots: Slab<Burst<K, A>>,
    /// Exactly one entry per open burst, and the combinator's one timer.
    deadlines: TimerHeap<(), SplitNanos, u32>,
}

/// A burst [`Bursts::pop_due`] closed, with its value.
struct ClosedBurst<K, A> {
    key: K,
    value: A,
    first_seen: u64,
    absorbed: u64,
}

/// What [`Bursts::absorb`] emits at once: key, value, and whether it is a leading emission.
type Immediate<K, A> = (K, A, bool);

impl<K: Hash + Eq, A> Bursts<K, A> {
    fn new() -> Self {
        Self {
            hash_builder: DefaultHashBuilder::default(),
            index: HashTable::new(),
            slots: Slab::new(),
            deadlines: TimerHeap::new(),
        }
    }

    fn len(&self) -> usize {
        self.slots.len()
    }

    /// Folds `item` into the burst of `key`, opening one if there is none. Returns the leading
    /// emission when the item opens a leading+trailing burst.
    fn absorb<I>(
        &mut self,
        key: K,
        item: I,
        now: u64,
        timing_of: impl FnOnce(&I) -> MillisTiming,
        max_jitter: Duration,
        fold: impl FnOnce(Option<A>, I) -> A,
    ) -> Option<Immediate<K, A>>
    where
        K: Clone,
    {
        let hash = self.hash_builder.hash_one(&key);
        let slots = &self.slots;
        let hash_builder = &self.hash_builder;
        match self.index.entry(
            hash,
            |&slot| slots[slot as usize].key == key,
            |&slot| hash_builder.hash_one(&slots[slot as usize].key),
        ) {
            Entry::Occupied(occupied) => {
                let burst = &mut self.slots[*occupied.get() as usize];
                burst.value = Some(fold(burst.value.take(), item));
                burst.absorbed += 1;
                burst.deadline = burst.deadline_after(now);
                None
            }
            Entry::Vacant(vacant) => {
                let timing = timing_of(&item);
                let value = fold(None, item);
                let Ok(slot) = u32::try_from(self.slots.vacant_key()) else {
                    // Four billion open bursts: no room for another; emit it now rather than
                    // lose it.
                    return Some((key, value, false));
                };
                let jitter_ms = if max_jitter.is_zero() {
                    0
                } else {
                    millis_ceil(jitter_of(&key, max_jitter))
                };
                let (value, leading) = match timing.mode {
                    DebounceMode::Trailing => (Some(value), None),
                    DebounceMode::LeadingTrailing => (None, Some((key.clone(), value, true))),
                };
                let mut burst = Burst {
                    key,
                    value,
                    first_seen: now,
                    absorbed: u64::from(leading.is_none()),
                    deadline: now,
                    quiet_ms: timing.window_ms.saturating_add(jitter_ms).min(NO_CAP - 1),
                    max_wait_ms: timing.max_wait_ms,
                };
                burst.deadline = burst.deadline_after(now);
                self.deadlines
                    .push(SplitNanos::new(burst.deadline), slot, ());
                self.slots.insert(burst);
                vacant.insert(slot);
                leading
            }
        }
    }

    /// The earliest heap entry (possibly earlier than that burst's true deadline).
    fn next_deadline(&self) -> Option<u64> {
        self.deadlines.peek().map(|due| due.at.get())
    }

    /// Closes the bursts whose deadline is at or before `now` until one has something to emit.
    fn pop_due(&mut self, now: u64) -> Option<ClosedBurst<K, A>> {
        loop {
            let mut top = self.deadlines.peek_mut()?;
            let due: BurstDue = top.0;
            if due.at.get() > now {
                return None;
            }
            let slot = due.seq as usize;
            let burst = self
                .slots
                .get(slot)
                .expect("a heap entry's burst is open: one entry per open burst");
            if burst.deadline > now {
                // The burst was extended after this entry was pushed: move the entry to the
                // true deadline in place.
                top.0.at = SplitNanos::new(burst.deadline);
                continue;
            }
            PeekMut::pop(top);
            let burst = self.slots.remove(slot);
            let hash = self.hash_builder.hash_one(&burst.key);
            self.index
                .find_entry(hash, |&s| s == due.seq)
                .expect("an open burst is in the index")
                .remove();
            self.compact_if_sparse();
            // An empty leading+trailing burst closes silently.
            if let Some(value) = burst.value {
                return Some(ClosedBurst {
                    key: burst.key,
                    value,
                    first_seen: burst.first_seen,
                    absorbed: burst.absorbed,
                });
            }
        }
    }

    /// Gives memory back once most slots are free: slab compaction moves bursts to low
    /// indices, so the index and the heap are rebuilt (amortised O(1) per burst).
    fn compact_if_sparse(&mut self) {
        let capacity = self.slots.capacity();
        if capacity < COMPACT_MIN_CAPACITY || self.slots.len() * COMPACT_RATIO >= capacity {
            return;
        }
        self.slots.compact(|_, _, _| true);
        let hash_builder = &self.hash_builder;
        self.index = HashTable::with_capacity(self.slots.len());
        self.deadlines.clear_to_capacity(self.slots.len());
        for (slot, burst) in &self.slots {
            let slot = u32::try_from(slot).expect("compaction only lowers slots, which fitted");
            let slots = &self.slots;
            self.index
                .insert_unique(hash_builder.hash_one(&burst.key), slot, |&s| {
                    hash_builder.hash_one(&slots[s as usize].key)
                });
            self.deadlines
                .push(SplitNanos::new(burst.deadline), slot, ());
        }
    }
}

/// The timing function of
/// [`ControllerStreamExt::debounce_keyed`](crate::stream::ControllerStreamExt::debounce_keyed):
/// every burst takes `config.timing`.
pub type ConfigTiming<I> = fn(&I) -> Option<Timing>;

/// Stream returned by
/// [`ControllerStreamExt::debounce_keyed`](crate::stream::ControllerStreamExt::debounce_keyed)
/// and [`debounce_keyed_with`](crate::stream::ControllerStreamExt::debounce_keyed_with).
#[pin_project]
#[must_use = "streams do nothing unless polled"]
pub struct DebounceKeyed<S, K, A, KF, TF, F> {
    #[pin]
    input: S,
    input_done: bool,
    key_of: KF,
    timing_of: TF,
    fold: F,
    config: DebounceConfig,
    /// `config.timing`, converted once.
    default_timing: MillisTiming,
    bursts: Bursts<K, A>,
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

    /// How many keys have a burst open (waiting for a trailing emission or, in leading+trailing
    /// mode, for their window to close).
    pub fn pending_keys(&self) -> usize {
        self.bursts.len()
    }
}

impl<S, K, A, KF, TF, F> fmt::Debug for DebounceKeyed<S, K, A, KF, TF, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DebounceKeyed")
            .field("config", &self.config)
            .field("pending_keys", &self.bursts.slots.len())
            .field("input_done", &self.input_done)
            .finish_non_exhaustive()
    }
}

impl<S, K, A, KF, TF, F> Stream for DebounceKeyed<S, K, A, KF, TF, F>
where
    S: Stream,
    K: Hash + Eq + Clone,
    KF: FnMut(&S::Item) -> K,
    TF: FnMut(&S::Item) -> Option<Timing>,
    F: FnMut(Option<A>, S::Item) -> A,
{
    type Item = Debounced<K, A>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut this = self.project();
        let base = *this.base.get_or_insert_with(Instant::now);
        let at = |offset: u64| {
            base.checked_add(Duration::from_nanos(offset))
                .unwrap_or(base)
        };
        let mut clock = Clock { base, read: None };

        let mut budget_spent = false;
        if !*this.input_done {
            let mut budget = DRAIN_BUDGET;
            loop {
                if budget == 0 {
                    budget_spent = true;
                    break;
                }
                match this.input.as_mut().poll_next(cx) {
                    Poll::Ready(Some(item)) => {
                        budget -= 1;
                        let (now_instant, now) = clock.now();
                        *this.seen_now = (*this.seen_now).max(now);
                        let key = (this.key_of)(&item);
                        let default_timing = *this.default_timing;
                        let timing_of = &mut *this.timing_of;
                        if let Some((key, value, leading)) = this.bursts.absorb(
                            key,
                            item,
                            now,
                            |item| timing_of(item).map_or(default_timing, MillisTiming::from),
                            this.config.max_jitter,
                            &mut *this.fold,
                        ) {
                            return Poll::Ready(Some(Debounced {
                                key,
                                value,
                                first_seen: now_instant,
                                absorbed: 1,
                                leading,
                            }));
                        }
                    }
                    Poll::Ready(None) => {
                        tracing::debug!(pending = this.bursts.len(), "debounce: input ended");
                        *this.input_done = true;
                        break;
                    }
                    Poll::Pending => break,
                }
            }
        }
        let flush = *this.input_done && this.config.on_input_end == OnInputEnd::Immediately;

        loop {
            // A clock reading from an earlier poll is a safe "now": it can only make a
            // deadline look later, never earlier.
            let now = if flush { u64::MAX } else { *this.seen_now };
            if let Some(burst) = this.bursts.pop_due(now) {
                return Poll::Ready(Some(Debounced {
                    key: burst.key,
                    value: burst.value,
                    first_seen: at(burst.first_seen),
                    absorbed: burst.absorbed,
                    leading: false,
                }));
            }
            let Some(deadline) = this.bursts.next_deadline() else {
                if *this.input_done {
                    return Poll::Ready(None);
                }
                break;
            };
            if clock.read.is_none() {
                *this.seen_now = (*this.seen_now).max(clock.now().1);
                continue;
            }
            if this
                .bursts
                .deadlines
                .poll_timer(at(deadline), cx)
                .is_pending()
            {
                break;
            }
            // The timer has fired: trust it even if the clock reads a hair earlier.
            *this.seen_now = (*this.seen_now).max(deadline);
        }
        if budget_spent {
            cx.waker().wake_by_ref();
        }
        Poll::Pending
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::ControllerStreamExt;
    use futures::{
        StreamExt,
        channel::mpsc,
        poll,
        stream::{self, BoxStream},
        task::{ArcWake, waker},
    };
    use proptest::prelude::*;
    use std::{
        collections::{HashMap, HashSet},
        sync::{
            Arc,
            atomic::{AtomicUsize, Ordering},
        },
    };
    use tokio::time::{advance, sleep_until};

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Whole milliseconds since `start`.
    fn ms_since(start: Instant, at: Instant) -> u64 {
        u64::try_from((at - start).as_millis()).expect("test durations fit")
    }

    /// `(at_ms, key, value)` events, each yielded at `start + at_ms`.
    fn scheduled<K: Send + 'static, V: Send + 'static>(
        start: Instant,
        events: Vec<(u64, K, V)>,
    ) -> BoxStream<'static, (K, V)> {
        stream::iter(events)
            .then(move |(at, key, value)| async move {
                sleep_until(start + ms(at)).await;
                (key, value)
            })
            .boxed()
    }

    /// What a test sees of one emission, instants in ms since the start.
    #[derive(Debug, Clone, PartialEq, Eq)]
    struct Seen<K, A> {
        key: K,
        value: A,
        absorbed: u64,
        first_ms: u64,
        at_ms: u64,
        leading: bool,
    }

    async fn record<K, A>(
        start: Instant,
        debounced: impl Stream<Item = Debounced<K, A>>,
    ) -> Vec<Seen<K, A>> {
        debounced
            .map(|d| Seen {
                at_ms: ms_since(start, Instant::now()),
                first_ms: ms_since(start, d.first_seen),
                key: d.key,
                value: d.value,
                absorbed: d.absorbed,
                leading: d.leading,
            })
            .collect()
            .await
    }

    fn seen<K, A>(
        key: K,
        value: A,
        absorbed: u64,
        first_ms: u64,
        at_ms: u64,
        leading: bool,
    ) -> Seen<K, A> {
        Seen {
            key,
            value,
            absorbed,
            first_ms,
            at_ms,
            leading,
        }
    }

    fn keep_latest<K, V>(_: Option<V>, (_, value): (K, V)) -> V {
        value
    }

    #[tokio::test(start_paused = true)]
    async fn trailing_emits_after_a_quiet_window_with_the_latest_value() {
        let start = Instant::now();
        let events = vec![(0, "a", 1), (300, "a", 2), (500, "b", 10), (900, "a", 3)];
        let out = record(
            start,
            scheduled(start, events).debounce_keyed(
                DebounceConfig::trailing(ms(1000)),
                |(key, _)| *key,
                keep_latest,
            ),
        )
        .await;
        assert_eq!(
            out,
            [
                seen("b", 10, 1, 500, 1500, false),
                seen("a", 3, 3, 0, 1900, false),
            ]
        );
        // The stream ended when the last burst was emitted, not later.
        assert_eq!(ms_since(start, Instant::now()), 1900);
    }

    #[tokio::test(start_paused = true)]
    async fn max_wait_caps_a_continuous_burst() {
        let start = Instant::now();
        // An event every 200 ms from 0 to 3000 ms: never quiet for the 500 ms window.
        let events = (0..=15).map(|i| (i * 200, "a", i)).collect();
        let config = DebounceConfig::trailing(ms(500)).max_wait(ms(1000));
        let out = record(
            start,
            scheduled(start, events).debounce_keyed(config, |(key, _)| *key, keep_latest),
        )
        .await;
        assert_eq!(
            out,
            [
                // The event that arrives exactly at the deadline (1000 ms) is still absorbed.
                seen("a", 5, 6, 0, 1000, false),
                seen("a", 11, 6, 1200, 2200, false),
                // Last event at 3000 ms: quiet deadline 3500 ms, but the cap is 2400 + 1000.
                seen("a", 15, 4, 2400, 3400, false),
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn leading_trailing_emits_at_once_then_once_more_if_items_followed() {
        let start = Instant::now();
        let events = vec![
            (0, "a", 1),
            (300, "a", 2),
            (600, "a", 3),
            // Quiet since 600 + 1000: a new burst, with nothing after its leading item.
            (2000, "a", 4),
            (3500, "b", 5),
        ];
        let out = record(
            start,
            scheduled(start, events).debounce_keyed(
                DebounceConfig::leading_trailing(ms(1000)),
                |(key, _)| *key,
                |acc: Option<Vec<i32>>, (_, value)| {
                    let mut acc = acc.unwrap_or_default();
                    acc.push(value);
                    acc
                },
            ),
        )
        .await;
        assert_eq!(
            out,
            [
                seen("a", vec![1], 1, 0, 0, true),
                // The trailing emission carries only what came after the leading one.
                seen("a", vec![2, 3], 2, 0, 1600, false),
                seen("a", vec![4], 1, 2000, 2000, true),
                seen("b", vec![5], 1, 3500, 3500, true),
            ]
        );
        // b's window (closing silently at 4500 ms) was still waited for.
        assert_eq!(ms_since(start, Instant::now()), 4500);
    }

    #[tokio::test(start_paused = true)]
    async fn leading_trailing_respects_max_wait() {
        let start = Instant::now();
        let events = (0..=10).map(|i| (i * 100, "a", i)).collect();
        let config = DebounceConfig::leading_trailing(ms(300)).max_wait(ms(450));
        let out = record(
            start,
            scheduled(start, events).debounce_keyed(config, |(key, _)| *key, keep_latest),
        )
        .await;
        assert_eq!(
            out,
            [
                seen("a", 0, 1, 0, 0, true),
                seen("a", 4, 4, 0, 450, false),
                seen("a", 5, 1, 500, 500, true),
                seen("a", 9, 4, 500, 950, false),
                seen("a", 10, 1, 1000, 1000, true),
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn jitter_is_deterministic_per_key_and_below_the_max() {
        async fn run(max_jitter: Duration, max_wait: Option<Duration>) -> HashMap<u32, u64> {
            let start = Instant::now();
            let mut config = DebounceConfig::trailing(ms(1000)).jitter(max_jitter);
            config.timing.max_wait = max_wait;
            record(
                start,
                stream::iter(0..200u32).debounce_keyed(config, |key| *key, |_, key| key),
            )
            .await
            .into_iter()
            .map(|seen| (seen.key, seen.at_ms))
            .collect()
        }
        let first = run(ms(300), None).await;
        assert_eq!(first.len(), 200);
        for (key, at) in &first {
            let jitter = u64::try_from(jitter_of(key, ms(300)).as_millis()).expect("small");
            assert_eq!(*at, 1000 + jitter, "key {key}");
            assert!(jitter < 300);
        }
        // Spread: 200 keys over 300 possible milliseconds land on many distinct instants.
        let distinct: HashSet<_> = first.values().collect();
        assert!(
            distinct.len() > 100,
            "only {} distinct instants",
            distinct.len()
        );
        assert_eq!(run(ms(300), None).await, first);
        // The cap wins over the jitter.
        assert!(
            run(ms(300), Some(ms(1100)))
                .await
                .values()
                .all(|at| (1000..=1100).contains(at))
        );
        // A max jitter of 1 s or more is clamped below 1 s.
        let clamped = run(Duration::from_secs(30), None).await;
        assert!(clamped.values().all(|at| (1000..2000).contains(at)));
        assert!(clamped.values().any(|at| *at >= 1300));
        // No jitter without a max.
        assert!(
            run(Duration::ZERO, None)
                .await
                .values()
                .all(|at| *at == 1000)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn per_key_timing_is_read_from_the_item_that_opens_a_burst() {
        let start = Instant::now();
        // (key, override window in ms, value); 0 = use the config.
        let events = vec![
            (0, "fast", (100, 1)),
            (0, "slow", (0, 3)),
            // Within fast's burst: its override is ignored (the burst keeps 100 ms).
            (50, "fast", (5000, 2)),
            (400, "fast", (0, 4)),
        ];
        let out = record(
            start,
            scheduled(start, events).debounce_keyed_with(
                DebounceConfig::trailing(ms(1000)),
                |(key, _)| *key,
                |(_, (window, _))| (*window > 0).then(|| Timing::trailing(ms(*window))),
                |_, (_, (_, value))| value,
            ),
        )
        .await;
        assert_eq!(
            out,
            [
                seen("fast", 2, 2, 0, 150, false),
                // A new burst of "fast" opened by an item without override: the config's 1000 ms.
                seen("slow", 3, 1, 0, 1000, false),
                seen("fast", 4, 1, 400, 1400, false),
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn input_end_emits_pending_keys_at_their_deadlines() {
        let start = Instant::now();
        let items = stream::iter([("a", 1), ("b", 2), ("a", 3)]);
        let config = DebounceConfig::trailing(ms(1000)).jitter(ms(500));
        let out = record(
            start,
            items.debounce_keyed(config, |(key, _)| *key, keep_latest),
        )
        .await;
        let jitter =
            |key: &str| u64::try_from(jitter_of(&key, ms(500)).as_millis()).expect("small");
        let mut expected = vec![
            seen("a", 3, 2, 0, 1000 + jitter("a"), false),
            seen("b", 2, 1, 0, 1000 + jitter("b"), false),
        ];
        expected.sort_by_key(|seen| seen.at_ms);
        assert_eq!(out, expected);
    }

    #[tokio::test(start_paused = true)]
    async fn input_end_can_emit_pending_keys_at_once() {
        let start = Instant::now();
        let items = stream::iter([("a", 1), ("b", 2), ("a", 3), ("c", 4)]);
        let config = DebounceConfig::trailing(Duration::from_secs(3600))
            .jitter(ms(999))
            .on_input_end(OnInputEnd::Immediately);
        let out = record(
            start,
            items.debounce_keyed(config, |(key, _)| *key, keep_latest),
        )
        .await;
        let mut keys: Vec<_> = out
            .iter()
            .map(|seen| (seen.key, seen.value, seen.absorbed))
            .collect();
        keys.sort_unstable();
        assert_eq!(keys, [("a", 3, 2), ("b", 2, 1), ("c", 4, 1)]);
        assert!(out.iter().all(|seen| seen.at_ms == 0));
        // Earliest deadline first.
        let jitters: Vec<_> = out
            .iter()
            .map(|seen| jitter_of(&seen.key, ms(999)))
            .collect();
        assert!(jitters.is_sorted(), "{jitters:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn input_end_immediately_drops_only_empty_leading_windows() {
        let start = Instant::now();
        let items = stream::iter([("a", 1), ("b", 2), ("a", 3)]);
        let config =
            DebounceConfig::leading_trailing(ms(1000)).on_input_end(OnInputEnd::Immediately);
        let out = record(
            start,
            items.debounce_keyed(config, |(key, _)| *key, keep_latest),
        )
        .await;
        assert_eq!(
            out,
            [
                seen("a", 1, 1, 0, 0, true),
                seen("b", 2, 1, 0, 0, true),
                seen("a", 3, 1, 0, 0, false),
            ]
        );
    }

    /// Counts wake-ups, to show there is no busy polling.
    struct WakeCounter(AtomicUsize);

    impl ArcWake for WakeCounter {
        fn wake_by_ref(arc_self: &Arc<Self>) {
            arc_self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn pending_just_before_the_deadline_and_ready_at_it_without_spurious_wakeups() {
        let (tx, rx) = mpsc::unbounded();
        let mut debounced = rx.debounce_keyed(
            DebounceConfig::trailing(ms(1000)),
            |key: &u32| *key,
            |_, key| key,
        );
        let counter = Arc::new(WakeCounter(AtomicUsize::new(0)));
        let waker = waker(counter.clone());
        let mut cx = Context::from_waker(&waker);
        let wakes = || counter.0.load(Ordering::SeqCst);

        tx.unbounded_send(7).expect("receiver alive");
        assert!(debounced.poll_next_unpin(&mut cx).is_pending());
        assert_eq!(debounced.pending_keys(), 1);
        advance(ms(999)).await;
        assert_eq!(wakes(), 0, "woken before the deadline");
        assert!(debounced.poll_next_unpin(&mut cx).is_pending());
        advance(ms(1)).await;
        assert_eq!(wakes(), 1, "not woken at the deadline");
        let Poll::Ready(Some(emitted)) = debounced.poll_next_unpin(&mut cx) else {
            panic!("not ready at the deadline");
        };
        assert_eq!((emitted.key, emitted.absorbed), (7, 1));
        assert_eq!(debounced.pending_keys(), 0);
        assert!(debounced.poll_next_unpin(&mut cx).is_pending());
        advance(Duration::from_secs(60)).await;
        assert_eq!(wakes(), 1, "woken with nothing pending");
        drop(tx);
        assert_eq!(poll!(debounced.next()), Poll::Ready(None));
    }

    #[tokio::test(start_paused = true)]
    async fn a_flood_of_ready_items_is_drained_in_bounded_slices() {
        let mut debounced = stream::iter(0..(3 * DRAIN_BUDGET as u64))
            .chain(stream::pending())
            .debounce_keyed(
                DebounceConfig::trailing(ms(10)),
                |n| *n % 3,
                |count, _| count.unwrap_or(0) + 1,
            );
        let counter = Arc::new(WakeCounter(AtomicUsize::new(0)));
        let waker = waker(counter.clone());
        let mut cx = Context::from_waker(&waker);
        for slice in 1..=3 {
            assert!(debounced.poll_next_unpin(&mut cx).is_pending());
            assert_eq!(
                counter.0.load(Ordering::SeqCst),
                slice,
                "yielded and woke itself"
            );
        }
        assert!(debounced.poll_next_unpin(&mut cx).is_pending());
        assert_eq!(
            counter.0.load(Ordering::SeqCst),
            3,
            "no self-wake once drained"
        );
        advance(ms(10)).await;
        let mut counts = Vec::new();
        while let Poll::Ready(Some(emitted)) = debounced.poll_next_unpin(&mut cx) {
            counts.push(emitted.value);
        }
        assert_eq!(counts, [DRAIN_BUDGET as u64; 3]);
    }

    #[tokio::test(start_paused = true)]
    async fn memory_is_given_back_after_a_mass_emission() {
        let start = Instant::now();
        let keys = 20_000u32;
        let mut debounced = stream::iter(0..keys)
            .chain(stream::pending())
            .debounce_keyed(DebounceConfig::trailing(ms(10)), |key| *key, |_, key| key);
        let mut emitted = 0;
        while emitted < keys {
            if debounced.next().await.is_some() {
                emitted += 1;
            }
        }
        assert_eq!(ms_since(start, Instant::now()), 10);
        assert_eq!(debounced.pending_keys(), 0);
        let bursts = &debounced.bursts;
        assert!(
            bursts.slots.capacity() < COMPACT_MIN_CAPACITY,
            "{}",
            bursts.slots.capacity()
        );
        assert!(bursts.index.capacity() < 2 * COMPACT_MIN_CAPACITY);
        assert!(bursts.deadlines.capacity() < 2 * COMPACT_MIN_CAPACITY);
    }

    #[test]
    fn debounce_keyed_is_send_when_its_parts_are() {
        fn assert_send<T: Send>(_: &T) {}
        let debounced = stream::iter(vec![(String::from("a"), 1u64)]).debounce_keyed_with(
            DebounceConfig::trailing(ms(1)),
            |(key, _)| key.clone(),
            |_| None,
            |acc: Option<Vec<u64>>, (_, value)| {
                let mut acc = acc.unwrap_or_default();
                acc.push(value);
                acc
            },
        );
        assert_send(&debounced);
    }

    /// One input item of the property test: key, sequence number, arrival (ms).
    type Event = (u8, usize, u64);

    /// Inputs, emissions, and when the input ended (ms).
    type ScheduleRun = (Vec<Event>, Vec<Seen<u8, Vec<Event>>>, u64);

    fn run_schedule(delays: &[(u8, u64)], config: DebounceConfig) -> ScheduleRun {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let start = Instant::now();
            let mut at = 0;
            let mut schedule = Vec::new();
            for (seq, (key, delay)) in delays.iter().enumerate() {
                at += delay;
                schedule.push((at, *key, (*key, seq, at)));
            }
            let inputs = schedule.iter().map(|(_, _, event)| *event).collect();
            let out = record(
                start,
                scheduled(start, schedule).debounce_keyed(
                    config,
                    |(key, _)| *key,
                    |acc, (_, event)| {
                        let mut acc: Vec<Event> = acc.unwrap_or_default();
                        acc.push(event);
                        acc
                    },
                ),
            )
            .await;
            (inputs, out, at)
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]

        /// Over random schedules: no item lost or duplicated, every key emitted, every
        /// emission exactly when its rule says, and a bounded number of emissions per burst.
        #[test]
        fn random_schedules_obey_the_rules(
            delays in prop::collection::vec((0u8..5, prop_oneof![0u64..50, 0u64..1500]), 1..60),
            window in 1u64..800,
            max_wait in prop::option::of(1u64..2000),
            leading in any::<bool>(),
            max_jitter in prop_oneof![Just(0u64), 1u64..400],
            immediately in any::<bool>(),
        ) {
            let mut config = if leading {
                DebounceConfig::leading_trailing(ms(window))
            } else {
                DebounceConfig::trailing(ms(window))
            }
            .jitter(ms(max_jitter));
            config.timing.max_wait = max_wait.map(ms);
            if immediately {
                config = config.on_input_end(OnInputEnd::Immediately);
            }
            let (inputs, out, input_end) = run_schedule(&delays, config);

            // No loss, no duplicate: every item in exactly one emission, in arrival order.
            let absorbed: u64 = out.iter().map(|seen| seen.absorbed).sum();
            prop_assert_eq!(absorbed, inputs.len() as u64);
            let mut folded: Vec<Event> = out.iter().flat_map(|seen| seen.value.clone()).collect();
            folded.sort_unstable_by_key(|event| event.1);
            prop_assert_eq!(&folded, &inputs);
            let keys_in: HashSet<u8> = inputs.iter().map(|event| event.0).collect();
            let keys_out: HashSet<u8> = out.iter().map(|seen| seen.key).collect();
            prop_assert_eq!(keys_in, keys_out);

            let jitter_max = max_jitter.saturating_sub(1);
            let cap = max_wait.unwrap_or(u64::MAX);
            // Per key: start of the open burst (leading+trailing), close of the last emission.
            let mut burst_start: HashMap<u8, u64> = HashMap::new();
            let mut last_emission: HashMap<u8, u64> = HashMap::new();
            for seen in &out {
                let items = &seen.value;
                prop_assert_eq!(seen.absorbed, items.len() as u64);
                prop_assert!(items.iter().all(|event| event.0 == seen.key));
                prop_assert!(items.windows(2).all(|pair| pair[0].1 < pair[1].1));
                let first = items[0].2;
                let last = items[items.len() - 1].2;
                let first_seen_rule = if leading && !seen.leading {
                    burst_start.get(&seen.key).copied()
                } else {
                    Some(first)
                };
                prop_assert_eq!(Some(seen.first_ms), first_seen_rule);
                // Items of an emission came after the previous emission of the key.
                if let Some(previous) = last_emission.get(&seen.key) {
                    prop_assert!(first >= *previous);
                }
                // Consecutive items of a burst are never farther apart than its quiet time.
                prop_assert!(items.windows(2).all(|pair| pair[1].2 - pair[0].2 <= window + jitter_max));
                if seen.leading {
                    prop_assert_eq!(seen.absorbed, 1);
                    prop_assert_eq!(seen.at_ms, first);
                    burst_start.insert(seen.key, first);
                } else {
                    let start = if leading {
                        burst_start.remove(&seen.key).expect("a trailing emission follows a leading one")
                    } else {
                        first
                    };
                    prop_assert!(last - start <= cap);
                    let earliest = (last + window).min(start.saturating_add(cap));
                    let latest = (last + window + jitter_max).min(start.saturating_add(cap));
                    let (earliest, latest) = if immediately {
                        (earliest.min(input_end), latest.min(input_end))
                    } else {
                        (earliest, latest)
                    };
                    prop_assert!(
                        (earliest..=latest).contains(&seen.at_ms),
                        "emitted at {} outside [{}, {}]", seen.at_ms, earliest, latest
                    );
                }
                last_emission.insert(seen.key, seen.at_ms);
            }

            // Bound: split each key's arrivals into runs at gaps >= window; a run spanning
            // `span` ms yields at most floor(span / max_wait) + 1 bursts, and a burst at most
            // one emission (trailing) or two (leading+trailing).
            let per_burst = if leading { 2 } else { 1 };
            for key in out.iter().map(|seen| seen.key).collect::<HashSet<_>>() {
                let arrivals: Vec<u64> =
                    inputs.iter().filter(|event| event.0 == key).map(|event| event.2).collect();
                let mut bound = 0;
                let mut run_start = arrivals[0];
                for (i, at) in arrivals.iter().enumerate() {
                    let run_ends = arrivals.get(i + 1).is_none_or(|next| next - at >= window);
                    if run_ends {
                        bound += per_burst * ((at - run_start) / cap.max(1) + 1);
                        if let Some(next) = arrivals.get(i + 1) {
                            run_start = *next;
                        }
                    }
                }
                let emissions = out.iter().filter(|seen| seen.key == key).count() as u64;
                prop_assert!(emissions <= bound, "key {}: {} emissions > bound {}", key, emissions, bound);
            }
        }
    }
}
