//! Generic stream combinators for controllers.
//!
//! Nothing in this module knows about Kubernetes: each combinator is a small poll-driven
//! state machine (one `#[pin_project]` struct per file), reached through a method on
//! [`ControllerStreamExt`], in the manner of kube-runtime's `WatchStreamExt`.

use std::future::Future;
use std::hash::Hash;

use futures::Stream;

pub mod lanes;
pub mod latency;
pub mod retry_sink;
pub mod runner;

pub use lanes::{
    Claim, Lane, LanesConfig, Next, PrometheusQueueMetrics, QueueMetrics, QueueStats, TwoLaneQueue,
};
pub use latency::{LatencyRecorder, LatencySnapshot, LatencySummary};
pub use retry_sink::{Outcome, Retry, RetryConfig, RetryCounts, RetrySink, RetryStats, Status};
pub use runner::{TwoLaneRunner, run_two_lanes};

/// Fluent entry points for the combinators in this module.
pub trait ControllerStreamExt: Stream {
    /// Works on the keys of this stream (the fast lane) and of `normal` (the normal lane)
    /// through `queue`, with at most `max_concurrent` `work` futures at once, and yields
    /// `(key, lane, result)` per finished work. The same as the free function
    /// [`run_two_lanes`]`(self, normal, queue, max_concurrent, work)`; see [`runner`] for the
    /// rules and [`lanes`] for the queue's.
    ///
    /// ```
    /// use futures::{StreamExt, stream};
    /// use kube_sentinel::stream::{ControllerStreamExt, Lane, LanesConfig, Next, TwoLaneQueue};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let triggers = stream::iter(["web"]);
    /// let resyncs = stream::iter(["db", "cache"]);
    /// let results: Vec<_> = triggers
    ///     .two_lane_queue(resyncs, TwoLaneQueue::new(LanesConfig::default()), 2, |claim| async move {
    ///         Ok::<_, String>(if claim.lane == Lane::Fast { Next::Requeue(Lane::Normal) } else { Next::Done })
    ///     })
    ///     .map(|(key, lane, _)| (key, lane))
    ///     .collect()
    ///     .await;
    /// assert_eq!(results[0], ("web", Lane::Fast));
    /// assert_eq!(results.len(), 4); // web (fast), db, cache, web (normal)
    /// # }
    /// ```
    fn two_lane_queue<K, No, W, Fut, E>(
        self,
        normal: No,
        queue: TwoLaneQueue<K>,
        max_concurrent: usize,
        work: W,
    ) -> TwoLaneRunner<K, Self, No, W, Fut>
    where
        Self: Stream<Item = K> + Sized,
        K: Clone + Hash + Eq,
        No: Stream<Item = K>,
        W: FnMut(Claim<K>) -> Fut,
        Fut: Future<Output = Result<Next, E>>,
    {
        run_two_lanes(self, normal, queue, max_concurrent, work)
    }
}

impl<S: Stream + ?Sized> ControllerStreamExt for S {}
