//! [`RetryStats`]: the sink's counts, lock-free, readable from anywhere.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

#[cfg(doc)]
use super::RetrySink;
use super::types::Delivery;

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

/// The counters behind a [`RetryStats`] handle.
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

    /// An item was given to the sink.
    pub(super) fn accepted(&self) {
        Self::bump(&self.0.accepted);
    }

    /// A retry was scheduled.
    pub(super) fn retried(&self) {
        Self::bump(&self.0.retried);
    }

    /// An item became final.
    pub(super) fn delivered<O, E>(&self, delivery: &Delivery<O, E>) {
        Self::bump(match delivery {
            Delivery::Sent(_) => &self.0.sent,
            Delivery::Failed(_) => &self.0.failed,
            Delivery::Superseded => &self.0.superseded,
        });
    }

    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}
