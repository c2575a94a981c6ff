//! [`PrometheusQueueMetrics`]: the two-lane work queue's telemetry as controller-runtime's
//! `workqueue_*` metrics, so that stock dashboards read it.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{
        MetricType,
        counter::Counter,
        family::Family,
        gauge::{ConstGauge, Gauge},
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};
use tokio::time::Instant;

use crate::stream::{Lane, QueueMetrics};

/// `controller` and `name` (`<controller>-fast`, `<controller>-normal`): controller-runtime's
/// labels, one queue name per lane.
type QueueLabels = [(&'static str, String); 2];
type HistogramFamily = Family<QueueLabels, Histogram, fn() -> Histogram>;

fn seconds_histogram() -> Histogram {
    // 1 µs .. ~1000 s, as controller-runtime's workqueue histograms span.
    Histogram::new(exponential_buckets(1e-6, 4.0, 16))
}

fn lane_index(lane: Lane) -> usize {
    match lane {
        Lane::Fast => 0,
        Lane::Normal => 1,
    }
}

/// [`QueueMetrics`] as controller-runtime's workqueue metrics, labelled `controller` and
/// `name` (one name per lane, `<controller>-fast` and `<controller>-normal`):
/// `workqueue_depth`, `workqueue_adds_total`, `workqueue_retries_total`,
/// `workqueue_queue_duration_seconds`, `workqueue_work_duration_seconds`, and, computed at
/// each scrape from the work in flight, `workqueue_unfinished_work_seconds` and
/// `workqueue_longest_running_processor_seconds` (a stuck worker shows as a value that keeps
/// growing) and `controller_runtime_active_workers`.
///
/// Clone it to keep a handle while the queue owns a boxed copy.
///
/// ```
/// use kube_sentinel::stream::{Lane, LanesConfig, TwoLaneQueue};
/// use kube_sentinel::telemetry::PrometheusQueueMetrics;
/// use prometheus_client::registry::Registry;
///
/// let mut registry = Registry::default();
/// let metrics = PrometheusQueueMetrics::register(&mut registry, "statefulcluster");
/// let mut queue = TwoLaneQueue::new(LanesConfig::default()).with_metrics(Box::new(metrics));
/// queue.push("a", Lane::Fast);
/// let mut text = String::new();
/// prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
/// assert!(text.contains(
///     r#"workqueue_depth{controller="statefulcluster",name="statefulcluster-fast"} 1"#
/// ));
/// ```
#[derive(Clone, Debug)]
pub struct PrometheusQueueMetrics {
    labels: Arc<[QueueLabels; 2]>,
    depth: Family<QueueLabels, Gauge>,
    adds: Family<QueueLabels, Counter>,
    retries: Family<QueueLabels, Counter>,
    queue_wait: HistogramFamily,
    work_duration: HistogramFamily,
    in_flight: Arc<InFlight>,
}

impl PrometheusQueueMetrics {
    /// Creates the metrics of the queue of `controller` and registers them in `registry`
    /// (unprefixed, as controller-runtime names them).
    pub fn register(registry: &mut Registry, controller: &'static str) -> Self {
        let labels_of = |lane: Lane| {
            [
                ("controller", controller.to_string()),
                ("name", format!("{controller}-{}", lane.as_str())),
            ]
        };
        let labels = Arc::new([labels_of(Lane::Fast), labels_of(Lane::Normal)]);
        let metrics = PrometheusQueueMetrics {
            depth: Family::default(),
            adds: Family::default(),
            retries: Family::default(),
            queue_wait: Family::new_with_constructor(seconds_histogram),
            work_duration: Family::new_with_constructor(seconds_histogram),
            in_flight: Arc::new(InFlight::new(controller, labels.clone())),
            labels,
        };
        registry.register(
            "workqueue_depth",
            "Keys pending in the work queue",
            metrics.depth.clone(),
        );
        registry.register(
            "workqueue_adds",
            "Keys pushed or scheduled",
            metrics.adds.clone(),
        );
        registry.register(
            "workqueue_retries",
            "Failed claims delayed for a retry",
            metrics.retries.clone(),
        );
        registry.register(
            "workqueue_queue_duration_seconds",
            "Time a key waited pending before it was claimed",
            metrics.queue_wait.clone(),
        );
        registry.register(
            "workqueue_work_duration_seconds",
            "Time from claim to completion or failure",
            metrics.work_duration.clone(),
        );
        registry.register_collector(Box::new(metrics.in_flight.clone()));
        metrics
    }

    fn labels(&self, lane: Lane) -> &QueueLabels {
        &self.labels[lane_index(lane)]
    }
}

impl QueueMetrics for PrometheusQueueMetrics {
    fn add(&self, lane: Lane) {
        self.adds.get_or_create(self.labels(lane)).inc();
    }
    fn depth(&self, lane: Lane, depth: usize) {
        let depth = i64::try_from(depth).unwrap_or(i64::MAX);
        self.depth.get_or_create(self.labels(lane)).set(depth);
    }
    fn queue_wait(&self, lane: Lane, wait: Duration) {
        // A claim: its work starts now.
        self.in_flight.started(lane);
        self.queue_wait
            .get_or_create(self.labels(lane))
            .observe(wait.as_secs_f64());
    }
    fn work_duration(&self, lane: Lane, duration: Duration) {
        self.in_flight.finished(lane, duration);
        self.work_duration
            .get_or_create(self.labels(lane))
            .observe(duration.as_secs_f64());
    }
    fn retry(&self, lane: Lane) {
        self.retries.get_or_create(self.labels(lane)).inc();
    }
}

/// The work in flight per lane, read at each scrape: what the stuck-worker gauges need, since
/// a stuck worker reports nothing by itself.
#[derive(Debug)]
struct InFlight {
    controller: &'static str,
    labels: Arc<[QueueLabels; 2]>,
    origin: Instant,
    /// Per lane, when each claim in flight started (nanoseconds from `origin`) and how many
    /// started then.
    starts: [Mutex<BTreeMap<u64, u32>>; 2],
}

impl InFlight {
    fn new(controller: &'static str, labels: Arc<[QueueLabels; 2]>) -> Self {
        Self {
            controller,
            labels,
            origin: Instant::now(),
            starts: Default::default(),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn lane(&self, lane: Lane) -> std::sync::MutexGuard<'_, BTreeMap<u64, u32>> {
        // A poisoned map of instants is still a valid map of instants.
        self.starts[lane_index(lane)]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    fn started(&self, lane: Lane) {
        let now = self.now();
        *self.lane(lane).entry(now).or_default() += 1;
    }

    /// A claim of `lane` that ran `duration` finished: forgets the start nearest to
    /// `now - duration` (the queue measured it from its own instant of the claim).
    fn finished(&self, lane: Lane, duration: Duration) {
        let ran = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
        let started = self.now().saturating_sub(ran);
        let mut starts = self.lane(lane);
        let before = starts.range(..=started).next_back().map(|(k, _)| *k);
        let after = starts.range(started..).next().map(|(k, _)| *k);
        let nearest = match (before, after) {
            (Some(b), Some(a)) => Some(if started - b <= a - started { b } else { a }),
            (b, a) => b.or(a),
        };
        if let Some(key) = nearest
            && let Some(count) = starts.get_mut(&key)
        {
            *count -= 1;
            if *count == 0 {
                starts.remove(&key);
            }
        }
    }

    /// Per lane: the claims in flight and their ages.
    fn ages(&self) -> [LaneAges; 2] {
        let now = self.now();
        [Lane::Fast, Lane::Normal].map(|lane| {
            let starts = self.lane(lane);
            let count: u64 = starts.values().map(|c| u64::from(*c)).sum();
            // A fold from +0.0: `sum` of no floats is -0.0, which a scrape would show.
            let sum = starts.iter().fold(0.0, |sum, (at, c)| {
                sum + f64::from(*c) * now.saturating_sub(*at) as f64 / 1e9
            });
            let oldest = starts
                .keys()
                .next()
                .map_or(0.0, |at| now.saturating_sub(*at) as f64 / 1e9);
            LaneAges { count, sum, oldest }
        })
    }
}

/// One lane's claims in flight: how many, the sum of their ages and the oldest's, in seconds.
struct LaneAges {
    count: u64,
    sum: f64,
    oldest: f64,
}

impl Collector for InFlight {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let ages = self.ages();
        for (name, help, values) in [
            (
                "workqueue_unfinished_work_seconds",
                "Seconds of work in flight not yet finished (the sum of the claims' ages)",
                ages.each_ref().map(|a| a.sum),
            ),
            (
                "workqueue_longest_running_processor_seconds",
                "Age of the oldest claim in flight",
                ages.each_ref().map(|a| a.oldest),
            ),
        ] {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for (labels, value) in self.labels.iter().zip(values) {
                ConstGauge::new(value).encode(family.encode_family(labels)?)?;
            }
        }
        let workers = ages.iter().map(|a| a.count).sum::<u64>();
        let workers = i64::try_from(workers).unwrap_or(i64::MAX);
        let mut family = encoder.encode_descriptor(
            "controller_runtime_active_workers",
            "Reconciles in flight",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(workers).encode(family.encode_family(&[("controller", self.controller)])?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::{LanesConfig, TwoLaneQueue};

    fn scrape(registry: &Registry) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, registry).expect("encode");
        text
    }

    #[tokio::test(start_paused = true)]
    async fn prometheus_metrics_follow_the_queue_with_controller_runtime_names() {
        let mut registry = Registry::default();
        let metrics = PrometheusQueueMetrics::register(&mut registry, "db");
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
        let text = scrape(&registry);
        let fast = r#"{controller="db",name="db-fast"}"#;
        let normal = r#"{controller="db",name="db-normal"}"#;
        for line in [
            format!("workqueue_depth{fast} 0"),
            format!("workqueue_depth{normal} 2"),
            format!("workqueue_adds_total{normal} 2"),
            format!("workqueue_adds_total{fast} 2"), // the push and the retry's schedule
            format!("workqueue_retries_total{fast} 1"),
            format!("workqueue_queue_duration_seconds_count{fast} 1"),
            format!("workqueue_work_duration_seconds_count{fast} 1"),
            format!("workqueue_unfinished_work_seconds{fast} 0.0"),
            r#"controller_runtime_active_workers{controller="db"} 0"#.to_string(),
        ] {
            assert!(text.contains(&line), "{line} missing in\n{text}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_stuck_claim_shows_as_growing_unfinished_work_until_it_finishes() {
        let mut registry = Registry::default();
        let metrics = PrometheusQueueMetrics::register(&mut registry, "db");
        let mut q =
            TwoLaneQueue::new(LanesConfig::default()).with_metrics(Box::new(metrics.clone()));
        q.push(1, Lane::Normal);
        q.push(2, Lane::Normal);
        let stuck = q.try_claim().expect("pending");
        tokio::time::advance(Duration::from_secs(30)).await;
        let quick = q.try_claim().expect("pending");
        tokio::time::advance(Duration::from_secs(10)).await;
        let normal = r#"{controller="db",name="db-normal"}"#;
        let text = scrape(&registry);
        for line in [
            format!("workqueue_longest_running_processor_seconds{normal} 40.0"),
            format!("workqueue_unfinished_work_seconds{normal} 50.0"),
            r#"controller_runtime_active_workers{controller="db"} 2"#.to_string(),
        ] {
            assert!(text.contains(&line), "{line} missing in\n{text}");
        }
        q.complete(&quick.key);
        tokio::time::advance(Duration::from_secs(5)).await;
        let text = scrape(&registry);
        assert!(
            text.contains(&format!(
                "workqueue_longest_running_processor_seconds{normal} 45.0"
            )),
            "{text}"
        );
        q.complete(&stuck.key);
        let text = scrape(&registry);
        assert!(
            text.contains(&format!("workqueue_unfinished_work_seconds{normal} 0.0")),
            "{text}"
        );
    }
}
