//! A timer-heap entry shared by the queue and the sink: a key due at an instant.

use tokio::time::Instant;

/// A key due at `at`, ordered by instant then by a unique sequence number (first in, first
/// out among equal instants), never by key; wrap it in `Reverse` for a min-heap.
#[derive(Debug)]
pub(crate) struct Due<K> {
    pub(crate) at: Instant,
    pub(crate) seq: u64,
    pub(crate) key: K,
}

impl<K> PartialEq for Due<K> {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl<K> Eq for Due<K> {}

impl<K> PartialOrd for Due<K> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl<K> Ord for Due<K> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}
