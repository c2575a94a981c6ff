//! [`TwoLaneQueue`]: the lanes, the delayed keys and the per-key state, owned by one task.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::hash::Hash;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::Stream;
use tokio::time::Instant;

use super::metrics::QueueMetrics;
use super::state::{Claimed, Delayed, KeyState, Pending};
use super::types::{Claim, Lane, LanesConfig, QueueStats};
use crate::stream::backoff::ExponentialBackoff;
use crate::stream::timer_heap::TimerHeap;

/// A two-lane priority work queue with per-key deduplication, a lock per claimed key, delayed
/// scheduling and per-key retry backoff. See the [module documentation](crate::stream::lanes) for the rules.
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
    pub(super) keys: HashMap<K, KeyState, foldhash::fast::RandomState>,
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
        self.try_claim_at_least(Lane::Normal)
    }

    /// [`try_claim`](Self::try_claim) from `lowest` or a higher lane only: with
    /// `Lane::Fast`, normal keys stay pending (for a worker kept for the fast lane).
    ///
    /// ```
    /// use kube_sentinel::stream::{Lane, LanesConfig, TwoLaneQueue};
    /// let mut queue = TwoLaneQueue::new(LanesConfig::default());
    /// queue.push("full-reconcile", Lane::Normal);
    /// assert!(queue.try_claim_at_least(Lane::Fast).is_none());
    /// queue.push("revert", Lane::Fast);
    /// assert_eq!(queue.try_claim_at_least(Lane::Fast).map(|c| c.key), Some("revert"));
    /// ```
    pub fn try_claim_at_least(&mut self, lowest: Lane) -> Option<Claim<K>> {
        if !self.delayed.is_empty() {
            self.release_due(Instant::now());
        }
        self.claim_pending(lowest)
    }

    /// Hands out the next key, or registers `cx` to be woken when the earliest delayed key is
    /// due. Never ends: when nothing is pending or delayed it returns `Pending` without a
    /// wake-up (a push comes from the owner of the queue, who polls again).
    pub fn poll_claim(&mut self, cx: &mut Context<'_>) -> Poll<Claim<K>> {
        self.poll_claim_at_least(cx, Lane::Normal)
    }

    /// [`poll_claim`](Self::poll_claim) from `lowest` or a higher lane only (see
    /// [`try_claim_at_least`](Self::try_claim_at_least)).
    pub fn poll_claim_at_least(&mut self, cx: &mut Context<'_>, lowest: Lane) -> Poll<Claim<K>> {
        loop {
            if !self.delayed.is_empty() {
                self.release_due(Instant::now());
            }
            if let Some(claim) = self.claim_pending(lowest) {
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

    /// The next pending key of `lowest` or a higher lane. Fast claims made while normal keys
    /// may not be served leave the fairness streak alone: those keys are not passed over.
    fn claim_pending(&mut self, lowest: Lane) -> Option<Claim<K>> {
        let fast_waiting = self.depth[Lane::Fast.index()] > 0;
        let normal_waiting = lowest == Lane::Normal && self.depth[Lane::Normal.index()] > 0;
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
