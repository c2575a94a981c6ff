//! [`PrometheusQueueMetrics`]: the two-lane work queue's telemetry as Prometheus metrics.

use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::stream::{Lane, QueueMetrics};

type LaneLabel = [(&'static str, &'static str); 1];
type HistogramFamily = Family<LaneLabel, Histogram, fn() -> Histogram>;

fn lane_label(lane: Lane) -> LaneLabel {
    [("lane", lane.as_str())]
}

fn seconds_histogram() -> Histogram {
    // 1 µs .. ~1000 s, as controller-runtime's workqueue histograms span.
    Histogram::new(exponential_buckets(1e-6, 4.0, 16))
}

/// [`QueueMetrics`] as Prometheus metrics, labelled `lane="fast"|"normal"`:
/// `workqueue_depth` (gauge), `workqueue_adds_total`, `workqueue_retries_total`,
/// `workqueue_queue_duration_seconds` and `workqueue_work_duration_seconds` (histograms).
///
/// Clone it to keep a handle while the queue owns a boxed copy.
///
/// ```
/// use kube_sentinel::stream::{Lane, LanesConfig, TwoLaneQueue};
/// use kube_sentinel::telemetry::PrometheusQueueMetrics;
/// use prometheus_client::registry::Registry;
///
/// let mut registry = Registry::default();
/// let metrics = PrometheusQueueMetrics::register(&mut registry);
/// let mut queue = TwoLaneQueue::new(LanesConfig::default()).with_metrics(Box::new(metrics));
/// queue.push("a", Lane::Fast);
/// let mut text = String::new();
/// prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
/// assert!(text.contains(r#"workqueue_depth{lane="fast"} 1"#));
/// ```
#[derive(Clone, Debug)]
pub struct PrometheusQueueMetrics {
    depth: Family<LaneLabel, Gauge>,
    adds: Family<LaneLabel, Counter>,
    retries: Family<LaneLabel, Counter>,
    queue_wait: HistogramFamily,
    work_duration: HistogramFamily,
}

impl PrometheusQueueMetrics {
    /// Creates the metrics and registers them in `registry` (use a sub-registry to prefix them).
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = PrometheusQueueMetrics {
            depth: Family::default(),
            adds: Family::default(),
            retries: Family::default(),
            queue_wait: Family::new_with_constructor(seconds_histogram),
            work_duration: Family::new_with_constructor(seconds_histogram),
        };
        registry.register(
            "workqueue_depth",
            "Keys pending in the work queue, per lane",
            metrics.depth.clone(),
        );
        registry.register(
            "workqueue_adds",
            "Keys pushed or scheduled, per lane",
            metrics.adds.clone(),
        );
        registry.register(
            "workqueue_retries",
            "Failed claims delayed for a retry, per lane",
            metrics.retries.clone(),
        );
        registry.register(
            "workqueue_queue_duration_seconds",
            "Time a key waited pending before it was claimed, per lane",
            metrics.queue_wait.clone(),
        );
        registry.register(
            "workqueue_work_duration_seconds",
            "Time from claim to completion or failure, per lane",
            metrics.work_duration.clone(),
        );
        metrics
    }
}

impl QueueMetrics for PrometheusQueueMetrics {
    fn add(&self, lane: Lane) {
        self.adds.get_or_create(&lane_label(lane)).inc();
    }
    fn depth(&self, lane: Lane, depth: usize) {
        let depth = i64::try_from(depth).unwrap_or(i64::MAX);
        self.depth.get_or_create(&lane_label(lane)).set(depth);
    }
    fn queue_wait(&self, lane: Lane, wait: Duration) {
        self.queue_wait
            .get_or_create(&lane_label(lane))
            .observe(wait.as_secs_f64());
    }
    fn work_duration(&self, lane: Lane, duration: Duration) {
        self.work_duration
            .get_or_create(&lane_label(lane))
            .observe(duration.as_secs_f64());
    }
    fn retry(&self, lane: Lane) {
        self.retries.get_or_create(&lane_label(lane)).inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::{LanesConfig, TwoLaneQueue};

    #[test]
    fn prometheus_metrics_follow_the_queue() {
        let mut registry = Registry::default();
        let metrics = PrometheusQueueMetrics::register(&mut registry);
        let config = LanesConfig {
            fast_burst_before_normal: 8,
            retry_backoff_base: Duration::from_secs(1),
            retry_backoff_max: Duration::from_secs(10),
        };
        let mut q = TwoLaneQueue::new(config).with_metrics(Box::new(metrics));
        q.push(1, Lane::Fast);
        q.push(2, Lane::Normal);
        q.push(3, Lane::Normal);
        let c = q.try_claim().expect("pending");
        q.fail(&c.key);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
        for line in [
            r#"workqueue_depth{lane="fast"} 0"#,
            r#"workqueue_depth{lane="normal"} 2"#,
            r#"workqueue_adds_total{lane="normal"} 2"#,
            r#"workqueue_adds_total{lane="fast"} 2"#, // the push and the retry's schedule
            r#"workqueue_retries_total{lane="fast"} 1"#,
            r#"workqueue_queue_duration_seconds_count{lane="fast"} 1"#,
            r#"workqueue_work_duration_seconds_count{lane="fast"} 1"#,
        ] {
            assert!(text.contains(line), "{line} missing in\n{text}");
        }
    }
}
