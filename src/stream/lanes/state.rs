//! Where each key of the queue is: pending, delayed, claimed, and its failure count.

use tokio::time::Instant;

use super::types::Lane;

/// A key waiting in a lane, under the sequence number of its lane entry.
#[derive(Debug)]
pub(super) struct Pending {
    pub(super) lane: Lane,
    pub(super) seq: u64,
    pub(super) enqueued_at: Instant,
}

/// A key waiting for an instant, under the sequence number of its heap entry.
#[derive(Debug)]
pub(super) struct Delayed {
    pub(super) at: Instant,
    pub(super) lane: Lane,
    pub(super) seq: u64,
}

/// A key handed out to a worker.
#[derive(Debug)]
pub(super) struct Claimed {
    pub(super) lane: Lane,
    /// Read only when metrics are on.
    pub(super) claimed_at: Option<Instant>,
    /// Highest lane the key was pushed on while claimed.
    pub(super) arrived: Option<Lane>,
}

/// Where one key is. `pending` and `claimed` exclude each other; `delayed` excludes `pending`
/// but may coexist with `claimed` (it becomes an arrival when due).
#[derive(Debug, Default)]
pub(super) struct KeyState {
    pub(super) pending: Option<Pending>,
    pub(super) delayed: Option<Delayed>,
    pub(super) claimed: Option<Claimed>,
    pub(super) failures: u32,
}

impl KeyState {
    pub(super) fn is_idle(&self) -> bool {
        self.pending.is_none()
            && self.delayed.is_none()
            && self.claimed.is_none()
            && self.failures == 0
    }
}
