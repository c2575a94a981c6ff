//! Two-lane priority work queue.
//!
//! [`TwoLaneQueue`] hands out keys (object references, in a controller) to workers. It is
//! controller-runtime's workqueue with two priorities, and this page is its design note.
//!
//! # What is ordered by what
//!
//! Every key the queue knows is in at most one of these places:
//!
//! * **pending** in a lane, [`Lane::Fast`] or [`Lane::Normal`]: ready to be handed out. Within a
//!   lane keys leave in arrival order (FIFO, by an insertion sequence number).
//! * **delayed**: waiting for an instant given to [`TwoLaneQueue::schedule`] or for a retry
//!   backoff after [`TwoLaneQueue::fail`]. At its instant it becomes pending in its lane. All
//!   delayed keys share one binary heap ordered by instant and one `tokio::time::Sleep` armed
//!   for the earliest, so a million delayed keys cost one timer.
//! * **claimed**: handed out to a worker (a [`Claim`]) and not yet given back with
//!   [`TwoLaneQueue::complete`] or [`TwoLaneQueue::fail`].
//!
//! A claim takes the oldest pending fast key if there is one, else the oldest pending normal
//! key. The one exception is the fairness bound: after
//! [`LanesConfig::fast_burst_before_normal`] consecutive fast claims made while normal work was
//! waiting, the next claim takes a normal key, so a flood on the fast lane delays the normal
//! lane but cannot starve it.
//!
//! # Deduplication and promotion
//!
//! A key is pending at most once. Pushing a key that is already pending in the same or a lower
//! lane changes nothing (it keeps its place); pushing a key pending on the normal lane onto the
//! fast lane *promotes* it: it leaves the normal lane and joins the back of the fast lane. It
//! keeps the instant it was first enqueued, so the queue-wait metric counts from the first add.
//! A push for a delayed key makes it pending now (in the higher of the two lanes); a schedule for
//! a pending key is absorbed (the key runs sooner than asked); two schedules keep the earlier
//! instant and the higher lane.
//!
//! # Why a key is locked while handed out
//!
//! A reconcile reads the world and writes it; two reconciles of one object at once race each
//! other. So a claimed key is never handed out again until it is given back. A push or a due
//! schedule for a claimed key is remembered on the claim, with the highest lane seen, and the key
//! becomes pending in that lane when the claim is completed. That is how the operator's "revert
//! (fast) then full reconcile (normal)" runs in that order, one after the other, never
//! concurrently.
//!
//! # Failures
//!
//! [`TwoLaneQueue::fail`] gives a claim back and delays the key by a per-key exponential backoff
//! (`retry_backoff_base * 2^(failures-1)`, capped at `retry_backoff_max`) on the lane it was
//! claimed from. A successful [`TwoLaneQueue::complete`] resets the count. If the key was pushed
//! again while its failing claim ran, it becomes pending at once instead: there is new work.
//!
//! # Telemetry
//!
//! A [`QueueMetrics`] implementation (see [`PrometheusQueueMetrics`](crate::telemetry::PrometheusQueueMetrics)) receives adds and depth
//! per lane, the time each key waited in the queue, the work duration and retries, in the manner
//! of controller-runtime's `workqueue_*` metrics.
//!
//! # Polling
//!
//! The queue is a plain data structure owned by one task: [`TwoLaneQueue::poll_claim`] (or the
//! [`Stream`] impl, which never ends) returns `Pending` when nothing is ready, registering the
//! waker only with the timer of the earliest delayed key. Mutations (`push`, `complete`, ...)
//! need `&mut self` and so happen in the owning task, which polls again afterwards; they do not
//! wake it. [`run_two_lanes`](super::run_two_lanes) is the usual owner.

use super::backoff::ExponentialBackoff;
use super::timer_heap::TimerHeap;
use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::hash::Hash;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use tokio::time::Instant;

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

    fn index(self) -> usize {
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

/// Receives the queue's telemetry, in the manner of controller-runtime's workqueue metrics.
///
/// Every method has an empty default, so an implementation picks what it needs.
///
/// ```
/// use kube_sentinel::stream::{Lane, LanesConfig, QueueMetrics, TwoLaneQueue};
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use std::sync::Arc;
///
/// struct CountAdds(Arc<AtomicU64>);
/// impl QueueMetrics for CountAdds {
///     fn add(&self, _lane: Lane) {
///         self.0.fetch_add(1, Ordering::Relaxed);
///     }
/// }
///
/// let adds = Arc::new(AtomicU64::new(0));
/// let mut queue = TwoLaneQueue::new(LanesConfig::default())
///     .with_metrics(Box::new(CountAdds(adds.clone())));
/// queue.push("a", Lane::Fast);
/// queue.push("a", Lane::Fast);
/// assert_eq!(adds.load(Ordering::Relaxed), 2);
/// ```
pub trait QueueMetrics: Send + Sync {
    /// A key was pushed or scheduled on `lane` (counted even when it coalesces).
    fn add(&self, lane: Lane) {
        let _ = lane;
    }
    /// The number of keys pending on `lane` changed to `depth`.
    fn depth(&self, lane: Lane, depth: usize) {
        let _ = (lane, depth);
    }
    /// A key claimed from `lane` had been pending for `wait`.
    fn queue_wait(&self, lane: Lane, wait: Duration) {
        let _ = (lane, wait);
    }
    /// A claim from `lane` was given back after `duration`.
    fn work_duration(&self, lane: Lane, duration: Duration) {
        let _ = (lane, duration);
    }
    /// A claim from `lane` failed and its key was delayed for a retry.
    fn retry(&self, lane: Lane) {
        let _ = lane;
    }
}

#[derive(Debug)]
struct Pending {
    lane: Lane,
    seq: u64,
    enqueued_at: Instant,
}

#[derive(Debug)]
struct Delayed {
    at: Instant,
    lane: Lane,
    seq: u64,
}

#[derive(Debug)]
struct Claimed {
    lane: Lane,
    /// Read only when metrics are on.
    claimed_at: Option<Instant>,
    /// Highest lane the key was pushed on while claimed.
    arrived: Option<Lane>,
}

/// Where one key is. `pending` and `claimed` exclude each other; `delayed` excludes `pending`
/// but may coexist with `claimed` (it becomes an arrival when due).
#[derive(Debug, Default)]
struct KeyState {
    pending: Option<Pending>,
    delayed: Option<Delayed>,
    claimed: Option<Claimed>,
    failures: u32,
}

impl KeyState {
    fn is_idle(&self) -> bool {
        self.pending.is_none()
            && self.delayed.is_none()
            && self.claimed.is_none()
            && self.failures == 0
    }
}

/// A two-lane priority work queue with per-key deduplication, a lock per claimed key, delayed
/// scheduling and per-key retry backoff. See the [module documentation](self) for the rules.
///
/// ```
/// use kube_sentinel::stream::{Lane, LanesConfig, TwoLaneQueue};
///
/// let mut queue = TwoLaneQueue::new(LanesConfig::default());
/// queue.push("full-reconcile", Lane::Normal);
/// queue.push("revert", Lane::Fast);
/// queue.push("revert", Lane::Fast); // coalesced
/// let first = queue.try_claim().expect("a key is pending");
/// assert_eq!((first.key, first.lane), ("revert", Lane::Fast));
/// queue.push("revert", Lane::Normal); // claimed: remembered, not handed out twice
/// let second = queue.try_claim().expect("a key is pending");
/// assert_eq!(second.key, "full-reconcile");
/// assert!(queue.try_claim().is_none());
/// queue.complete(&"revert"); // now "revert" is pending again on the normal lane
/// assert_eq!(queue.try_claim().map(|c| c.key), Some("revert"));
/// ```
pub struct TwoLaneQueue<K> {
    config: LanesConfig,
    /// foldhash: seeded per process (some resistance to crafted keys) and several times faster
    /// than SipHash on short keys; the same choice as kube-runtime's scheduler (hashbrown).
    keys: HashMap<K, KeyState, foldhash::fast::RandomState>,
    /// Pending keys per lane (indexed by `Lane::index`), with the sequence number they were
    /// queued under; an entry whose number no longer matches its key's state is stale (the key
    /// was promoted) and skipped.
    lanes: [VecDeque<(u64, K)>; 2],
    depth: [usize; 2],
    /// Delayed keys by instant; an entry whose sequence no longer matches its key's
    /// `Delayed` is stale and dropped when popped.
    delayed: TimerHeap<K>,
    delayed_count: usize,
    in_flight: usize,
    next_seq: u64,
    fast_streak: usize,
    metrics: Option<Box<dyn QueueMetrics>>,
}

impl<K> fmt::Debug for TwoLaneQueue<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TwoLaneQueue")
            .field("config", &self.config)
            .field("fast", &self.depth[1])
            .field("normal", &self.depth[0])
            .field("in_flight", &self.in_flight)
            .field("delayed", &self.delayed_count)
            .finish_non_exhaustive()
    }
}

impl<K: Clone + Hash + Eq> TwoLaneQueue<K> {
    /// An empty queue.
    ///
    /// ```
    /// use kube_sentinel::stream::{LanesConfig, TwoLaneQueue};
    /// let queue: TwoLaneQueue<String> = TwoLaneQueue::new(LanesConfig::default());
    /// assert!(queue.is_empty());
    /// ```
    pub fn new(config: LanesConfig) -> Self {
        TwoLaneQueue {
            config,
            keys: HashMap::default(),
            lanes: [VecDeque::new(), VecDeque::new()],
            depth: [0, 0],
            delayed: TimerHeap::new(),
            delayed_count: 0,
            in_flight: 0,
            next_seq: 0,
            fast_streak: 0,
            metrics: None,
        }
    }

    /// Sends the queue's telemetry to `metrics` (see [`PrometheusQueueMetrics`](crate::telemetry::PrometheusQueueMetrics)).
    pub fn with_metrics(mut self, metrics: Box<dyn QueueMetrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// The queue's settings.
    pub fn config(&self) -> &LanesConfig {
        &self.config
    }

    /// Counts per state.
    ///
    /// ```
    /// use kube_sentinel::stream::{Lane, LanesConfig, QueueStats, TwoLaneQueue};
    /// let mut queue = TwoLaneQueue::new(LanesConfig::default());
    /// queue.push(1, Lane::Fast);
    /// queue.push(2, Lane::Normal);
    /// let _claim = queue.try_claim();
    /// assert_eq!(queue.stats(), QueueStats { fast: 0, normal: 1, in_flight: 1, delayed: 0 });
    /// ```
    pub fn stats(&self) -> QueueStats {
        QueueStats {
            fast: self.depth[Lane::Fast.index()],
            normal: self.depth[Lane::Normal.index()],
            in_flight: self.in_flight,
            delayed: self.delayed_count,
        }
    }

    /// True when no key is pending, delayed or claimed.
    pub fn is_empty(&self) -> bool {
        self.depth == [0, 0] && self.delayed_count == 0 && self.in_flight == 0
    }

    /// Makes `key` pending on `lane` now (or remembers it, if claimed). See the module
    /// documentation for coalescing and promotion.
    pub fn push(&mut self, key: K, lane: Lane) {
        let now = Instant::now();
        if let Some(metrics) = &self.metrics {
            metrics.add(lane);
        }
        self.arrive(key, lane, now, true);
    }

    /// Makes `key` pending on `lane` at `at` (at once if `at` has passed). The earlier of two
    /// schedules and the higher lane win; a schedule for a pending key is absorbed.
    ///
    /// ```
    /// use kube_sentinel::stream::{Lane, LanesConfig, TwoLaneQueue};
    /// use std::time::Duration;
    /// use tokio::time::Instant;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let mut queue = TwoLaneQueue::new(LanesConfig::default());
    /// queue.schedule("resync", Lane::Normal, Instant::now() + Duration::from_secs(30));
    /// assert!(queue.try_claim().is_none());
    /// tokio::time::advance(Duration::from_secs(30)).await;
    /// assert_eq!(queue.try_claim().map(|c| c.key), Some("resync"));
    /// # }
    /// ```
    pub fn schedule(&mut self, key: K, lane: Lane, at: Instant) {
        let now = Instant::now();
        if at <= now {
            return self.push(key, lane);
        }
        if let Some(metrics) = &self.metrics {
            metrics.add(lane);
        }
        let seq = self.next_seq;
        match self.keys.get_mut(&key) {
            Some(state) if state.pending.is_some() => return,
            Some(state) => match &mut state.delayed {
                Some(delayed) => {
                    delayed.lane = delayed.lane.max(lane);
                    if at >= delayed.at {
                        return;
                    }
                    delayed.at = at;
                    delayed.seq = seq;
                }
                None => {
                    state.delayed = Some(Delayed { at, lane, seq });
                    self.delayed_count += 1;
                }
            },
            None => {
                let state = KeyState {
                    delayed: Some(Delayed { at, lane, seq }),
                    ..KeyState::default()
                };
                self.keys.insert(key.clone(), state);
                self.delayed_count += 1;
            }
        }
        self.next_seq += 1;
        self.delayed.push(at, seq, key);
    }

    /// Gives back a claim that succeeded: the key's backoff is reset, and if it was pushed while
    /// claimed it becomes pending on the highest lane it was pushed on. Unknown or unclaimed keys
    /// are ignored.
    pub fn complete(&mut self, key: &K) {
        let Some(state) = self.keys.get_mut(key) else {
            return;
        };
        let Some(claimed) = state.claimed.take() else {
            return;
        };
        state.failures = 0;
        self.in_flight -= 1;
        if let (Some(metrics), Some(claimed_at)) = (&self.metrics, claimed.claimed_at) {
            metrics.work_duration(claimed.lane, claimed_at.elapsed());
        }
        match claimed.arrived {
            Some(lane) => self.arrive(key.clone(), lane, Instant::now(), false),
            None if state.is_idle() => {
                self.keys.remove(key);
            }
            None => {}
        }
    }

    /// Gives back a claim that failed: the key is delayed by its exponential backoff on the lane
    /// it was claimed from, or made pending at once if it was pushed while claimed. Unknown or
    /// unclaimed keys are ignored.
    ///
    /// ```
    /// use kube_sentinel::stream::{Lane, LanesConfig, TwoLaneQueue};
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let config = LanesConfig { retry_backoff_base: Duration::from_secs(1), ..LanesConfig::default() };
    /// let mut queue = TwoLaneQueue::new(config);
    /// queue.push("a", Lane::Fast);
    /// let claim = queue.try_claim().expect("pending");
    /// queue.fail(&claim.key);
    /// assert!(queue.try_claim().is_none()); // backing off for 1 s
    /// tokio::time::advance(Duration::from_secs(1)).await;
    /// let retry = queue.try_claim().expect("due");
    /// assert_eq!((retry.lane, retry.attempt), (Lane::Fast, 2));
    /// # }
    /// ```
    pub fn fail(&mut self, key: &K) {
        let now = Instant::now();
        let Some(state) = self.keys.get_mut(key) else {
            return;
        };
        let Some(claimed) = state.claimed.take() else {
            return;
        };
        state.failures = state.failures.saturating_add(1);
        self.in_flight -= 1;
        if let Some(metrics) = &self.metrics {
            if let Some(claimed_at) = claimed.claimed_at {
                metrics.work_duration(claimed.lane, now - claimed_at);
            }
            metrics.retry(claimed.lane);
        }
        match claimed.arrived {
            Some(lane) => self.arrive(key.clone(), lane.max(claimed.lane), now, false),
            None => {
                let backoff = ExponentialBackoff {
                    base: self.config.retry_backoff_base,
                    max: self.config.retry_backoff_max,
                };
                let at = now + backoff.delay(state.failures);
                self.schedule(key.clone(), claimed.lane, at);
            }
        }
    }

    /// Hands out the next key if one is pending now (due delayed keys included), without
    /// registering for a wake-up.
    pub fn try_claim(&mut self) -> Option<Claim<K>> {
        if !self.delayed.is_empty() {
            self.release_due(Instant::now());
        }
        self.claim_pending()
    }

    /// Hands out the next key, or registers `cx` to be woken when the earliest delayed key is
    /// due. Never ends: when nothing is pending or delayed it returns `Pending` without a
    /// wake-up (a push comes from the owner of the queue, who polls again).
    pub fn poll_claim(&mut self, cx: &mut Context<'_>) -> Poll<Claim<K>> {
        loop {
            if !self.delayed.is_empty() {
                self.release_due(Instant::now());
            }
            if let Some(claim) = self.claim_pending() {
                return Poll::Ready(claim);
            }
            if self.delayed.poll_earliest(cx).is_pending() {
                return Poll::Pending;
            }
        }
    }

    /// Moves delayed keys that are due into their lanes, and drops stale heap entries from the
    /// top so the timer is armed for a live deadline.
    fn release_due(&mut self, now: Instant) {
        while let Some(due) = self.delayed.pop() {
            let live = |state: &&mut KeyState| {
                let delayed = state.delayed.as_ref();
                delayed.is_some_and(|delayed| delayed.seq == due.seq)
            };
            let Some(state) = self.keys.get_mut(&due.key).filter(live) else {
                // Stale: the key was pushed, scheduled again or freed since.
                continue;
            };
            if due.at > now {
                self.delayed.push(due.at, due.seq, due.key);
                break;
            }
            let delayed = state.delayed.take().expect("a live entry's key is delayed");
            self.delayed_count -= 1;
            self.arrive(due.key, delayed.lane, delayed.at, false);
        }
    }

    /// A key becomes due on `lane`: pending, promoted, or remembered on its claim.
    /// `cancel_delay`: a push makes a delayed key pending now, in the higher of the two lanes.
    /// One hash lookup: this is the hot path of every push.
    fn arrive(&mut self, key: K, mut lane: Lane, enqueued_at: Instant, cancel_delay: bool) {
        let seq = self.next_seq;
        let key = match self.keys.entry(key) {
            Entry::Occupied(mut occupied) => {
                let state = occupied.get_mut();
                if cancel_delay && let Some(delayed) = state.delayed.take() {
                    self.delayed_count -= 1;
                    lane = lane.max(delayed.lane);
                }
                if let Some(claimed) = &mut state.claimed {
                    claimed.arrived = claimed.arrived.max(Some(lane));
                    return;
                }
                match &mut state.pending {
                    Some(pending) if lane <= pending.lane => return,
                    Some(pending) => {
                        let from = pending.lane;
                        pending.lane = lane;
                        pending.seq = seq;
                        self.depth[from.index()] -= 1;
                        if let Some(metrics) = &self.metrics {
                            metrics.depth(from, self.depth[from.index()]);
                        }
                    }
                    None => {
                        state.pending = Some(Pending {
                            lane,
                            seq,
                            enqueued_at,
                        });
                    }
                }
                occupied.key().clone()
            }
            Entry::Vacant(vacant) => {
                let key = vacant.key().clone();
                vacant.insert(KeyState {
                    pending: Some(Pending {
                        lane,
                        seq,
                        enqueued_at,
                    }),
                    ..KeyState::default()
                });
                key
            }
        };
        self.next_seq += 1;
        self.lanes[lane.index()].push_back((seq, key));
        self.depth[lane.index()] += 1;
        self.report_depth(lane);
    }

    fn claim_pending(&mut self) -> Option<Claim<K>> {
        let fast_waiting = self.depth[Lane::Fast.index()] > 0;
        let normal_waiting = self.depth[Lane::Normal.index()] > 0;
        let lane = match (fast_waiting, normal_waiting) {
            (false, false) => return None,
            (true, false) => {
                self.fast_streak = 0;
                Lane::Fast
            }
            (false, true) => {
                self.fast_streak = 0;
                Lane::Normal
            }
            (true, true) if self.fast_streak >= self.config.fast_burst_before_normal.max(1) => {
                self.fast_streak = 0;
                Lane::Normal
            }
            (true, true) => {
                self.fast_streak += 1;
                Lane::Fast
            }
        };
        while let Some((seq, key)) = self.lanes[lane.index()].pop_front() {
            // An entry is stale when its key was promoted (or freed) since it was queued.
            let Some(state) = self.keys.get_mut(&key) else {
                continue;
            };
            let Some(pending) = state.pending.take_if(|pending| pending.seq == seq) else {
                continue;
            };
            // The clock is read only for telemetry: it is a good part of a claim's cost.
            let claimed_at = self.metrics.as_ref().map(|_| Instant::now());
            state.claimed = Some(Claimed {
                lane,
                claimed_at,
                arrived: None,
            });
            let attempt = state.failures.saturating_add(1);
            self.depth[lane.index()] -= 1;
            self.in_flight += 1;
            self.report_depth(lane);
            if let (Some(metrics), Some(now)) = (&self.metrics, claimed_at) {
                metrics.queue_wait(lane, now.saturating_duration_since(pending.enqueued_at));
            }
            return Some(Claim {
                key,
                lane,
                enqueued_at: pending.enqueued_at,
                attempt,
            });
        }
        // Unreachable while `depth` counts live entries; keep the queue usable regardless.
        self.depth[lane.index()] = 0;
        None
    }

    fn report_depth(&self, lane: Lane) {
        if let Some(metrics) = &self.metrics {
            metrics.depth(lane, self.depth[lane.index()]);
        }
    }
}

// Keys are never pinned: the queue moves them freely.
impl<K> Unpin for TwoLaneQueue<K> {}

impl<K: Clone + Hash + Eq> Stream for TwoLaneQueue<K> {
    type Item = Claim<K>;

    /// Claims as a stream that never ends; see [`TwoLaneQueue::poll_claim`].
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Claim<K>>> {
        self.get_mut().poll_claim(cx).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::{StreamExt, poll};
    use proptest::prelude::*;
    use std::collections::HashSet;

    fn queue(burst: usize) -> TwoLaneQueue<u32> {
        TwoLaneQueue::new(LanesConfig {
            fast_burst_before_normal: burst,
            retry_backoff_base: Duration::from_secs(1),
            retry_backoff_max: Duration::from_secs(10),
        })
    }

    fn claim(q: &mut TwoLaneQueue<u32>) -> Option<(u32, Lane)> {
        q.try_claim().map(|c| (c.key, c.lane))
    }

    #[test]
    fn fast_before_normal_fifo_within_lane() {
        let mut q = queue(100);
        q.push(1, Lane::Normal);
        q.push(2, Lane::Normal);
        q.push(3, Lane::Fast);
        q.push(4, Lane::Fast);
        assert_eq!(claim(&mut q), Some((3, Lane::Fast)));
        assert_eq!(claim(&mut q), Some((4, Lane::Fast)));
        assert_eq!(claim(&mut q), Some((1, Lane::Normal)));
        assert_eq!(claim(&mut q), Some((2, Lane::Normal)));
        assert_eq!(claim(&mut q), None);
    }

    #[test]
    fn duplicates_coalesce_and_normal_key_is_promoted() {
        let mut q = queue(100);
        q.push(1, Lane::Normal);
        q.push(2, Lane::Normal);
        q.push(1, Lane::Normal);
        assert_eq!(q.stats().normal, 2);
        q.push(1, Lane::Fast);
        assert_eq!((q.stats().fast, q.stats().normal), (1, 1));
        q.push(1, Lane::Normal); // no demotion
        assert_eq!(claim(&mut q), Some((1, Lane::Fast)));
        assert_eq!(claim(&mut q), Some((2, Lane::Normal)));
        assert_eq!(claim(&mut q), None);
    }

    #[test]
    fn claimed_key_is_requeued_on_complete_with_highest_lane() {
        let mut q = queue(100);
        q.push(1, Lane::Fast);
        assert_eq!(claim(&mut q), Some((1, Lane::Fast)));
        q.push(1, Lane::Normal);
        q.push(1, Lane::Fast);
        q.push(1, Lane::Normal);
        assert_eq!(claim(&mut q), None, "never handed out twice at once");
        q.complete(&1);
        assert_eq!(claim(&mut q), Some((1, Lane::Fast)));
        q.complete(&1);
        assert_eq!(claim(&mut q), None);
        assert!(q.is_empty());
        assert!(q.keys.is_empty(), "state freed once idle");
    }

    #[test]
    fn fairness_bound_lets_one_normal_key_through() {
        let mut q = queue(2);
        q.push(100, Lane::Normal);
        q.push(101, Lane::Normal);
        for k in 0..5 {
            q.push(k, Lane::Fast);
        }
        let order: Vec<_> = std::iter::from_fn(|| claim(&mut q)).collect();
        assert_eq!(
            order,
            vec![
                (0, Lane::Fast),
                (1, Lane::Fast),
                (100, Lane::Normal),
                (2, Lane::Fast),
                (3, Lane::Fast),
                (101, Lane::Normal),
                (4, Lane::Fast),
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn schedule_fires_at_its_instant_with_one_timer() {
        let mut q = queue(8);
        let t0 = Instant::now();
        q.schedule(1, Lane::Normal, t0 + Duration::from_secs(5));
        q.schedule(2, Lane::Fast, t0 + Duration::from_secs(3));
        q.schedule(1, Lane::Normal, t0 + Duration::from_secs(4)); // earlier wins
        q.schedule(2, Lane::Normal, t0 + Duration::from_secs(9)); // later: lane kept, instant kept
        assert_eq!(q.stats().delayed, 2);
        assert!(poll!(q.next()).is_pending());
        tokio::time::advance(Duration::from_millis(2999)).await;
        assert!(poll!(q.next()).is_pending());
        tokio::time::advance(Duration::from_millis(1)).await;
        let c = q.next().await.expect("never ends");
        assert_eq!(
            (c.key, c.lane, c.enqueued_at),
            (2, Lane::Fast, t0 + Duration::from_secs(3))
        );
        assert!(poll!(q.next()).is_pending());
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(q.next().await.map(|c| c.key), Some(1));
        assert_eq!(Instant::now(), t0 + Duration::from_secs(4));
        assert_eq!(q.stats().delayed, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn push_cancels_a_delay_and_schedule_is_absorbed_by_pending() {
        let mut q = queue(8);
        let t0 = Instant::now();
        q.schedule(1, Lane::Fast, t0 + Duration::from_secs(5));
        q.push(1, Lane::Normal);
        assert_eq!(
            q.stats(),
            QueueStats {
                fast: 1,
                normal: 0,
                in_flight: 0,
                delayed: 0
            }
        );
        q.schedule(2, Lane::Normal, t0); // due now: a push
        q.schedule(2, Lane::Fast, t0 + Duration::from_secs(1)); // absorbed by pending
        assert_eq!(claim(&mut q), Some((1, Lane::Fast)));
        assert_eq!(claim(&mut q), Some((2, Lane::Normal)));
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(claim(&mut q), None, "the cancelled schedule does not fire");
    }

    #[tokio::test(start_paused = true)]
    async fn schedule_due_while_claimed_requeues_on_complete() {
        let mut q = queue(8);
        let t0 = Instant::now();
        q.push(1, Lane::Normal);
        assert_eq!(claim(&mut q), Some((1, Lane::Normal)));
        q.schedule(1, Lane::Fast, t0 + Duration::from_secs(1));
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(claim(&mut q), None);
        q.complete(&1);
        assert_eq!(claim(&mut q), Some((1, Lane::Fast)));
    }

    #[tokio::test(start_paused = true)]
    async fn fail_backs_off_exponentially_and_complete_resets() {
        let mut q = queue(8);
        let t0 = Instant::now();
        q.push(7, Lane::Fast);
        let mut due = Vec::new();
        for _ in 0..6 {
            let c = q.next().await.expect("never ends");
            due.push(((Instant::now() - t0).as_secs(), c.attempt, c.lane));
            q.fail(&c.key);
        }
        // 1, 2, 4, 8, then capped at 10 s.
        assert_eq!(
            due,
            vec![
                (0, 1, Lane::Fast),
                (1, 2, Lane::Fast),
                (3, 3, Lane::Fast),
                (7, 4, Lane::Fast),
                (15, 5, Lane::Fast),
                (25, 6, Lane::Fast),
            ]
        );
        let c = q.next().await.expect("never ends");
        assert_eq!(c.attempt, 7);
        q.complete(&c.key);
        q.push(7, Lane::Normal);
        let c = q.next().await.expect("never ends");
        assert_eq!(c.attempt, 1);
        q.fail(&c.key);
        let before = Instant::now();
        let c = q.next().await.expect("never ends");
        assert_eq!(
            (Instant::now() - before, c.lane),
            (Duration::from_secs(1), Lane::Normal)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn fail_with_a_new_push_requeues_at_once() {
        let mut q = queue(8);
        q.push(1, Lane::Normal);
        let c = q.try_claim().expect("pending");
        q.push(1, Lane::Fast);
        q.fail(&c.key);
        assert_eq!(claim(&mut q), Some((1, Lane::Fast)));
    }

    #[test]
    fn per_key_state_stays_small() {
        // A bound, so a change that bloats the per-key state is noticed (BENCHMARKS.md quotes it).
        let size = std::mem::size_of::<KeyState>();
        eprintln!("KeyState: {size} bytes");
        assert!(size <= 96, "KeyState grew to {size} bytes");
    }

    #[test]
    fn queue_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>(_: &T) {}
        assert_send_sync(&queue(1));
    }

    #[derive(Clone, Debug)]
    enum Op {
        Push(u32, bool),
        Claim,
        Complete(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (0u32..12, any::<bool>()).prop_map(|(k, fast)| Op::Push(k, fast)),
            3 => Just(Op::Claim),
            2 => (0usize..8).prop_map(Op::Complete),
        ]
    }

    /// A reference model: pending keys with lane and sequence; the queue must match it claim
    /// for claim, and the invariants are asserted on the model's view.
    #[derive(Default)]
    struct Model {
        pending: Vec<(u32, Lane, u64)>,
        in_flight: Vec<(u32, Option<Lane>)>,
        seq: u64,
        streak: usize,
    }

    impl Model {
        fn arrive(&mut self, k: u32, lane: Lane) {
            if let Some((_, arrived)) = self.in_flight.iter_mut().find(|(key, _)| *key == k) {
                *arrived = (*arrived).max(Some(lane));
                return;
            }
            self.seq += 1;
            match self.pending.iter_mut().find(|(key, _, _)| *key == k) {
                Some(p) if lane > p.1 => {
                    p.1 = lane;
                    p.2 = self.seq;
                }
                Some(_) => {}
                None => self.pending.push((k, lane, self.seq)),
            }
        }
        fn claim(&mut self, burst: usize) -> Option<(u32, Lane)> {
            let oldest = |lane: Lane, pending: &[(u32, Lane, u64)]| {
                pending
                    .iter()
                    .enumerate()
                    .filter(|(_, p)| p.1 == lane)
                    .min_by_key(|(_, p)| p.2)
                    .map(|(i, _)| i)
            };
            let fast = oldest(Lane::Fast, &self.pending);
            let normal = oldest(Lane::Normal, &self.pending);
            let index = match (fast, normal) {
                (None, None) => return None,
                (Some(f), None) => {
                    self.streak = 0;
                    f
                }
                (None, Some(n)) => {
                    self.streak = 0;
                    n
                }
                (Some(_), Some(n)) if self.streak >= burst => {
                    self.streak = 0;
                    n
                }
                (Some(f), Some(_)) => {
                    self.streak += 1;
                    f
                }
            };
            let (k, lane, _) = self.pending.remove(index);
            self.in_flight.push((k, None));
            Some((k, lane))
        }
    }

    #[derive(Clone, Debug)]
    enum TimedOp {
        Push(u32, bool),
        Schedule(u32, bool, u64),
        Claim,
        Complete(usize),
        Fail(usize),
        Advance(u64),
    }

    fn timed_op() -> impl Strategy<Value = TimedOp> {
        prop_oneof![
            3 => (0u32..8, any::<bool>()).prop_map(|(k, fast)| TimedOp::Push(k, fast)),
            1 => (0u32..8, any::<bool>(), 0u64..5_000).prop_map(|(k, fast, ms)| TimedOp::Schedule(k, fast, ms)),
            3 => Just(TimedOp::Claim),
            2 => (0usize..8).prop_map(TimedOp::Complete),
            1 => (0usize..8).prop_map(TimedOp::Fail),
            1 => (0u64..3_000).prop_map(TimedOp::Advance),
        ]
    }

    proptest! {
        /// With failures, schedules and time: never a key claimed twice at once, a fast key
        /// waiting means a normal claim happened only at the fairness bound, the counts match
        /// the claims, and every key pushed, scheduled or failed is claimed again later:
        /// nothing is lost, and all state is freed at the end.
        #[test]
        fn with_failures_and_time_nothing_is_lost(
            burst in 1usize..4,
            ops in proptest::collection::vec(timed_op(), 0..150),
        ) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .start_paused(true)
                .build()
                .expect("runtime");
            runtime.block_on(async {
                let mut q = queue(burst);
                let mut claimed: Vec<u32> = Vec::new();
                // Keys owed a claim: pushed, scheduled or failed since their last claim began.
                let mut owed: HashSet<u32> = HashSet::new();
                let mut streak = 0usize;
                let mut claim_one = |q: &mut TwoLaneQueue<u32>, claimed: &mut Vec<u32>, owed: &mut HashSet<u32>| -> Result<bool, TestCaseError> {
                    let before = q.stats();
                    let Some(c) = q.try_claim() else { return Ok(false) };
                    let stats = q.stats();
                    // Keys released by the clock in this call count as waiting before it.
                    let fast_waiting = stats.fast + usize::from(c.lane == Lane::Fast) > 0;
                    let normal_waiting = stats.normal + usize::from(c.lane == Lane::Normal) > 0;
                    prop_assert!(!claimed.contains(&c.key), "key {} claimed twice at once", c.key);
                    prop_assert_eq!(stats.in_flight, before.in_flight + 1);
                    match c.lane {
                        Lane::Fast if normal_waiting => {
                            streak += 1;
                            prop_assert!(streak <= burst, "fairness bound exceeded");
                        }
                        Lane::Fast => streak = 0,
                        Lane::Normal => {
                            prop_assert!(!fast_waiting || streak == burst, "normal before fast");
                            streak = 0;
                        }
                    }
                    claimed.push(c.key);
                    owed.remove(&c.key);
                    Ok(true)
                };
                for op in ops {
                    match op {
                        TimedOp::Push(k, fast) => {
                            q.push(k, if fast { Lane::Fast } else { Lane::Normal });
                            owed.insert(k);
                        }
                        TimedOp::Schedule(k, fast, ms) => {
                            let lane = if fast { Lane::Fast } else { Lane::Normal };
                            q.schedule(k, lane, Instant::now() + Duration::from_millis(ms));
                            owed.insert(k);
                        }
                        TimedOp::Claim => {
                            claim_one(&mut q, &mut claimed, &mut owed)?;
                        }
                        TimedOp::Complete(i) if !claimed.is_empty() => {
                            let k = claimed.remove(i % claimed.len());
                            q.complete(&k);
                        }
                        TimedOp::Fail(i) if !claimed.is_empty() => {
                            let k = claimed.remove(i % claimed.len());
                            q.fail(&k);
                            owed.insert(k);
                        }
                        TimedOp::Advance(ms) => tokio::time::advance(Duration::from_millis(ms)).await,
                        TimedOp::Complete(_) | TimedOp::Fail(_) => {}
                    }
                    prop_assert_eq!(q.stats().in_flight, claimed.len());
                }
                // Drain: complete everything, then wait out every delay and backoff (capped at 10 s).
                for _ in 0..10_000 {
                    for k in claimed.drain(..) {
                        q.complete(&k);
                    }
                    if !claim_one(&mut q, &mut claimed, &mut owed)? {
                        if q.is_empty() {
                            break;
                        }
                        tokio::time::advance(Duration::from_millis(500)).await;
                    }
                }
                prop_assert!(q.is_empty(), "left: {:?}", q.stats());
                prop_assert!(owed.is_empty(), "lost keys: {:?}", owed);
                prop_assert!(q.keys.is_empty(), "state freed");
                Ok(())
            })?;
        }
    }

    proptest! {
        #[test]
        fn queue_matches_model_and_keeps_invariants(
            burst in 1usize..4,
            ops in proptest::collection::vec(op(), 0..200),
        ) {
            let mut q = queue(burst);
            let mut model = Model::default();
            let mut claimed: Vec<u32> = Vec::new();
            let mut consecutive_fast_while_normal_waits = 0usize;
            let run = |op: Op, q: &mut TwoLaneQueue<u32>, model: &mut Model, claimed: &mut Vec<u32>, consecutive: &mut usize| -> Result<(), TestCaseError> {
                match op {
                    Op::Push(k, fast) => {
                        let lane = if fast { Lane::Fast } else { Lane::Normal };
                        q.push(k, lane);
                        model.arrive(k, lane);
                    }
                    Op::Claim => {
                        let stats = q.stats();
                        let got = claim(q);
                        prop_assert_eq!(got, model.claim(burst));
                        if let Some((k, lane)) = got {
                            prop_assert!(!claimed.contains(&k), "key {} claimed twice at once", k);
                            claimed.push(k);
                            match lane {
                                Lane::Fast if stats.normal > 0 => {
                                    *consecutive += 1;
                                    prop_assert!(*consecutive <= burst, "fairness bound exceeded");
                                }
                                Lane::Fast => *consecutive = 0,
                                Lane::Normal => {
                                    prop_assert!(stats.fast == 0 || *consecutive == burst,
                                        "normal key handed out while fast work waited");
                                    *consecutive = 0;
                                }
                            }
                        }
                    }
                    Op::Complete(i) => {
                        if !claimed.is_empty() {
                            let k = claimed.remove(i % claimed.len());
                            q.complete(&k);
                            let at = model.in_flight.iter().position(|(key, _)| *key == k).expect("model in flight");
                            let (_, arrived) = model.in_flight.remove(at);
                            if let Some(lane) = arrived {
                                model.arrive(k, lane);
                            }
                        }
                    }
                }
                let stats = q.stats();
                let mut keys = HashSet::new();
                for (k, _, _) in &model.pending {
                    prop_assert!(keys.insert(*k), "key {} pending twice", k);
                }
                prop_assert_eq!(stats.fast + stats.normal, model.pending.len());
                prop_assert_eq!(stats.in_flight, claimed.len());
                Ok(())
            };
            for op in ops {
                run(op, &mut q, &mut model, &mut claimed, &mut consecutive_fast_while_normal_waits)?;
            }
            // Drain: every key that is pending or owed after its claim comes out; nothing lost.
            let owed: HashSet<u32> = model.pending.iter().map(|p| p.0)
                .chain(model.in_flight.iter().filter(|(_, a)| a.is_some()).map(|(k, _)| *k))
                .collect();
            let mut served = HashSet::new();
            for _ in 0..1000 {
                if claimed.is_empty() && q.stats().fast + q.stats().normal == 0 {
                    break;
                }
                let op = if claimed.is_empty() { Op::Claim } else { Op::Complete(0) };
                let before = claimed.clone();
                run(op, &mut q, &mut model, &mut claimed, &mut consecutive_fast_while_normal_waits)?;
                if claimed.len() > before.len() {
                    served.insert(*claimed.last().expect("just claimed"));
                }
            }
            prop_assert!(q.is_empty());
            prop_assert!(q.keys.is_empty(), "state freed");
            prop_assert!(owed.is_subset(&served), "lost keys: {:?}", owed.difference(&served).collect::<Vec<_>>());
        }
    }
}
