//! The open bursts: a slab of bursts, an index by key and a timer heap of their deadlines.

use std::{
    collections::binary_heap::PeekMut,
    hash::{BuildHasher, DefaultHasher, Hash, Hasher},
    time::Duration,
};

use hashbrown::{DefaultHashBuilder, HashTable, hash_table::Entry};
use slab::Slab;

use super::config::{DebounceMode, Timing};
use crate::stream::timer_heap::{Due, TimerHeap};

/// Storage is compacted when fewer than `1 / COMPACT_RATIO` of its slots are in use...
const COMPACT_RATIO: usize = 4;
/// ...and it holds at least this many slots (small tables are not worth the work).
pub(super) const COMPACT_MIN_CAPACITY: usize = 1024;

/// Jitter is sub-second: a larger `max_jitter` is clamped to this.
const MAX_JITTER: Duration = Duration::from_millis(999);

/// The jitter of `key`: a whole number of milliseconds in `[0, max)`, from a fixed-key hash
/// (std's SipHash-1-3 with zero keys), so the same key gets the same jitter in every run of a
/// build.
pub(super) fn jitter_of<K: Hash>(key: &K, max: Duration) -> Duration {
    let max_ms = u64::try_from(max.min(MAX_JITTER).as_millis()).unwrap_or(0);
    if max_ms == 0 {
        return Duration::ZERO;
    }
    let mut hasher = DefaultHasher::new();
    key.hash(&mut hasher);
    Duration::from_millis(hasher.finish() % max_ms)
}

/// Nanoseconds, saturating (584 years is as good as forever here).
pub(super) fn nanos(duration: Duration) -> u64 {
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
pub(super) struct MillisTiming {
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

/// What an open burst holds for its trailing emission.
enum Held<A> {
    /// The fold of the items since the burst opened (or since its leading emission).
    Items(A),
    /// Nothing yet: a leading+trailing burst whose leading item was emitted.
    Nothing,
    /// Nothing, and settled (see `settle_on`): the next item opens a new burst at once.
    Settled,
}

/// An open burst of one key. Instants are nanoseconds since the combinator's `base` instant
/// and durations whole milliseconds, to keep the entry small.
pub(super) struct Burst<K, A> {
    key: K,
    held: Held<A>,
    /// When the burst's first item arrived (in leading+trailing mode, the leading one).
    first_seen: u64,
    /// Items in `held`.
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
pub(super) struct SplitNanos {
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
pub(super) struct Bursts<K, A> {
    hash_builder: DefaultHashBuilder,
    /// Slab indices of `slots`, looked up by the hash of the slot's key.
    pub(super) index: HashTable<u32>,
    pub(super) slots: Slab<Burst<K, A>>,
    /// Exactly one entry per open burst, and the combinator's one timer.
    pub(super) deadlines: TimerHeap<(), SplitNanos, u32>,
}

/// A burst [`Bursts::pop_due`] closed, with its value.
pub(super) struct ClosedBurst<K, A> {
    pub(super) key: K,
    pub(super) value: A,
    /// Nanoseconds since the combinator's `base` instant.
    pub(super) first_seen: u64,
    pub(super) absorbed: u64,
}

/// What [`Bursts::absorb`] emits at once: key, value, and whether it is a leading emission.
pub(super) type Immediate<K, A> = (K, A, bool);

impl<K, A> Bursts<K, A> {
    /// Open bursts.
    pub(super) fn len(&self) -> usize {
        self.slots.len()
    }
}

impl<K: Hash + Eq, A> Bursts<K, A> {
    pub(super) fn new() -> Self {
        Self {
            hash_builder: DefaultHashBuilder::default(),
            index: HashTable::new(),
            slots: Slab::new(),
            deadlines: TimerHeap::new(),
        }
    }

    /// Folds `item` into the burst of `key`, opening one if there is none. Returns the leading
    /// emission when the item opens a leading+trailing burst.
    pub(super) fn absorb<I>(
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
                let previous = match std::mem::replace(&mut burst.held, Held::Nothing) {
                    Held::Items(value) => Some(value),
                    Held::Nothing => None,
                    Held::Settled => {
                        // A new burst in the same slot: its heap entry is earlier than the
                        // new deadline, and moves there when it comes up.
                        burst.first_seen = now;
                        burst.absorbed = 0;
                        burst.deadline = burst.deadline_after(now);
                        return Some((key, fold(None, item), true));
                    }
                };
                burst.held = Held::Items(fold(previous, item));
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
                let (held, leading) = match timing.mode {
                    DebounceMode::Trailing => (Held::Items(value), None),
                    DebounceMode::LeadingTrailing => {
                        (Held::Nothing, Some((key.clone(), value, true)))
                    }
                };
                let mut burst = Burst {
                    key,
                    held,
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

    /// Settles `key`'s burst if it holds nothing since its leading emission: the next item of
    /// `key` is then emitted at once. Returns whether it did.
    pub(super) fn settle(&mut self, key: &K) -> bool {
        let hash = self.hash_builder.hash_one(key);
        let slots = &self.slots;
        let Some(&slot) = self
            .index
            .find(hash, |&slot| slots[slot as usize].key == *key)
        else {
            return false;
        };
        let burst = &mut self.slots[slot as usize];
        let idle = matches!(burst.held, Held::Nothing);
        if idle {
            burst.held = Held::Settled;
        }
        idle
    }

    /// The earliest heap entry (possibly earlier than that burst's true deadline).
    pub(super) fn next_deadline(&self) -> Option<u64> {
        self.deadlines.peek().map(|due| due.at.get())
    }

    /// Closes the bursts whose deadline is at or before `now` until one has something to emit.
    pub(super) fn pop_due(&mut self, now: u64) -> Option<ClosedBurst<K, A>> {
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
            if let Held::Items(value) = burst.held {
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
