//! The queue's vocabulary: lanes, what a worker asks for next, settings, claims and counts.

use std::fmt;
use std::time::Duration;

use tokio::time::Instant;

#[cfg(doc)]
use super::TwoLaneQueue;

/// The lane a key is queued on. `Fast` orders after `Normal`, so `max` is the higher priority.
///
/// ```
/// use kube_sentinel::stream::Lane;
/// assert_eq!(Lane::Normal.max(Lane::Fast), Lane::Fast);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Lane {
    /// Ordinary work: full reconciles, items from an initial list.
    Normal,
    /// Urgent work, handed out before any normal key (within the fairness bound).
    Fast,
}

impl Lane {
    /// The lane's name as used in metric labels: `"fast"` or `"normal"`.
    ///
    /// ```
    /// use kube_sentinel::stream::Lane;
    /// assert_eq!(Lane::Fast.as_str(), "fast");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            Lane::Normal => "normal",
            Lane::Fast => "fast",
        }
    }

    pub(super) fn index(self) -> usize {
        match self {
            Lane::Normal => 0,
            Lane::Fast => 1,
        }
    }
}

impl fmt::Display for Lane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// What a worker wants done with its key after a successful run.
///
/// ```
/// use kube_sentinel::stream::{Lane, Next};
/// use std::time::Duration;
/// // After a fast-lane revert, a full reconcile on the normal lane; resync every 5 minutes.
/// let after_revert = Next::Requeue(Lane::Normal);
/// let after_full = Next::RequeueAfter(Lane::Normal, Duration::from_secs(300));
/// assert_ne!(after_revert, after_full);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Nothing more.
    Done,
    /// Queue the key again at once on this lane.
    Requeue(Lane),
    /// Queue the key again on this lane after this delay.
    RequeueAfter(Lane, Duration),
}

/// Settings of a [`TwoLaneQueue`].
///
/// ```
/// use kube_sentinel::stream::LanesConfig;
/// use std::time::Duration;
/// let config = LanesConfig { fast_burst_before_normal: 4, ..LanesConfig::default() };
/// assert_eq!(config.retry_backoff_base, Duration::from_millis(5));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LanesConfig {
    /// After this many consecutive fast claims made while normal work waits, one normal key is
    /// handed out. `0` is taken as `1` (strict alternation under load). Default 8.
    pub fast_burst_before_normal: usize,
    /// Backoff after the first failure of a key. Default 5 ms (as controller-runtime).
    pub retry_backoff_base: Duration,
    /// Cap of the per-key backoff. Default 1000 s (as controller-runtime).
    pub retry_backoff_max: Duration,
}

impl Default for LanesConfig {
    fn default() -> Self {
        LanesConfig {
            fast_burst_before_normal: 8,
            retry_backoff_base: Duration::from_millis(5),
            retry_backoff_max: Duration::from_secs(1000),
        }
    }
}

/// A key handed out to a worker. Give it back with [`TwoLaneQueue::complete`] or
/// [`TwoLaneQueue::fail`].
///
/// ```
/// use kube_sentinel::stream::{Lane, LanesConfig, TwoLaneQueue};
/// let mut queue = TwoLaneQueue::new(LanesConfig::default());
/// queue.push("web", Lane::Fast);
/// let claim = queue.try_claim().expect("pending");
/// assert_eq!((claim.key, claim.lane, claim.attempt), ("web", Lane::Fast, 1));
/// queue.complete(&claim.key);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claim<K> {
    /// The key to work on.
    pub key: K,
    /// The lane it was taken from.
    pub lane: Lane,
    /// When it first became pending (for a delayed key: its due instant).
    pub enqueued_at: Instant,
    /// 1 for a first try, `n + 1` after `n` consecutive failures.
    pub attempt: u32,
}

/// Counts of a [`TwoLaneQueue`], from [`TwoLaneQueue::stats`] (example there).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Keys pending on the fast lane.
    pub fast: usize,
    /// Keys pending on the normal lane.
    pub normal: usize,
    /// Keys claimed and not yet given back.
    pub in_flight: usize,
    /// Keys waiting for an instant (schedules and retry backoffs).
    pub delayed: usize,
}
