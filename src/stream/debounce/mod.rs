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

mod config;
mod store;
mod stream;
#[cfg(test)]
mod tests;

pub use config::{ConfigTiming, DebounceConfig, DebounceMode, Debounced, OnInputEnd, Timing};
pub use stream::DebounceKeyed;
