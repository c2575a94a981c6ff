//! [`QueueMetrics`], the queue's telemetry hook (the Prometheus adapter is in `telemetry`).

use std::time::Duration;

use super::types::Lane;

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
