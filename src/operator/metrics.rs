//! The operator's metrics.
//!
//! The operator's metrics: reconciles and manager runs by path, reverted objects, and the
//! detection-to-revert and trigger-to-revert latencies (Prometheus histograms on `/metrics`,
//! HdrHistogram percentiles per resource and overall on `/debug/latency`, a periodic log line).

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, histogram::Histogram as PromHistogram},
    registry::Registry,
};

use crate::telemetry::LatencyRecorder;

/// `path` label: which reconcile path ran.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PathLabels {
    /// `fast` or `full`.
    pub path: &'static str,
    /// `ok` or `error` (reconciles), or the manager name (manager runs).
    pub result: &'static str,
}

/// `manager` and `path` labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ManagerLabels {
    /// `infra`, `cert`, `upgrade` or `backup`.
    pub manager: &'static str,
    /// `fast` or `full`.
    pub path: &'static str,
}

/// `since` label of the latency histograms.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SinceLabels {
    /// `detected` (the sentinel saw the first drift event) or `triggered` (it wrote the trigger).
    pub since: &'static str,
}

/// Which latency.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Since {
    /// From `status.sentinel.detectedAt`.
    Detected,
    /// From `status.sentinel.triggeredAt`.
    Triggered,
}

impl Since {
    fn label(self) -> &'static str {
        match self {
            Since::Detected => "detected",
            Since::Triggered => "triggered",
        }
    }
}

/// Buckets of the Prometheus latency histograms, in seconds (5 ms … 60 s).
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// HdrHistogram-backed recorders: wait-free on record; the per-resource map is locked only to
/// find or add a resource's recorder.
#[derive(Default)]
struct Hdr {
    detected: LatencyRecorder,
    triggered: LatencyRecorder,
    per_resource: Mutex<BTreeMap<(String, &'static str), LatencyRecorder>>,
}

/// Every operator metric; cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    /// Reconciles by path and result.
    pub reconciles: Family<PathLabels, Counter>,
    /// Manager runs by manager and path.
    pub manager_runs: Family<ManagerLabels, Counter>,
    /// Objects reverted by the fast path.
    pub reverted: Counter,
    /// Watch errors (each followed by a retry with backoff), every watch of the operator.
    pub watch_errors: Counter,
    latency: Family<SinceLabels, PromHistogram>,
    hdr: Arc<Hdr>,
}

impl Metrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            reconciles: Family::default(),
            manager_runs: Family::default(),
            reverted: Counter::default(),
            watch_errors: Counter::default(),
            latency: Family::new_with_constructor(|| PromHistogram::new(LATENCY_BUCKETS)),
            hdr: Arc::default(),
        };
        registry.register(
            "kube_sentinel_operator_reconciles",
            "Reconciles by path and result",
            metrics.reconciles.clone(),
        );
        registry.register(
            "kube_sentinel_operator_manager_runs",
            "Manager runs by manager and reconcile path",
            metrics.manager_runs.clone(),
        );
        registry.register(
            "kube_sentinel_operator_reverted_objects",
            "Objects reverted by the fast path",
            metrics.reverted.clone(),
        );
        registry.register(
            "kube_sentinel_operator_watch_errors",
            "Watch errors, each retried with backoff",
            metrics.watch_errors.clone(),
        );
        registry.register(
            "kube_sentinel_operator_revert_latency_seconds",
            "Time from the sentinel's detection (since=detected) or trigger (since=triggered) to the revert verified",
            metrics.latency.clone(),
        );
        metrics
    }

    /// Counts a manager run.
    pub fn manager_ran(&self, manager: &'static str, path: &'static str) {
        self.manager_runs
            .get_or_create(&ManagerLabels { manager, path })
            .inc();
    }

    /// Records one latency for `resource` (`namespace/name`).
    pub fn record_latency(&self, resource: &str, since: Since, latency: Duration) {
        self.latency
            .get_or_create(&SinceLabels {
                since: since.label(),
            })
            .observe(latency.as_secs_f64());
        let overall = match since {
            Since::Detected => &self.hdr.detected,
            Since::Triggered => &self.hdr.triggered,
        };
        overall.record(latency);
        let recorder = {
            // A poisoned map of recorders is still a valid map.
            let mut map = self
                .hdr
                .per_resource
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            map.entry((resource.to_string(), since.label()))
                .or_default()
                .clone()
        };
        recorder.record(latency);
    }

    /// One line per latency recorded so far: count and percentiles.
    pub fn summary(&self) -> Vec<String> {
        [
            (Since::Detected, &self.hdr.detected),
            (Since::Triggered, &self.hdr.triggered),
        ]
        .into_iter()
        .map(|(since, r)| (since, r.snapshot().summary()))
        .filter(|(_, s)| s.count > 0)
        .map(|(since, s)| format!("since={} {s}", since.label()))
        .collect()
    }

    /// The HdrHistogram percentile distributions, overall and per resource, as text.
    pub fn percentile_text(&self) -> String {
        let mut sections = vec![
            ("overall".to_string(), "detected", self.hdr.detected.clone()),
            (
                "overall".to_string(),
                "triggered",
                self.hdr.triggered.clone(),
            ),
        ];
        {
            let map = self
                .hdr
                .per_resource
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            sections.extend(
                map.iter()
                    .map(|((resource, since), r)| (resource.clone(), *since, r.clone())),
            );
        }
        let mut out = String::new();
        for (resource, since, recorder) in sections {
            let snapshot = recorder.snapshot();
            let summary = snapshot.summary();
            if summary.count == 0 {
                continue;
            }
            out.push_str(&format!("# {resource} since={since}: {summary}\n"));
            out.push_str(&snapshot.percentile_distribution());
            out.push('\n');
        }
        if out.is_empty() {
            out.push_str("# no reverts recorded yet\n");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latencies_reach_prometheus_and_the_percentile_text() {
        let mut registry = Registry::default();
        let metrics = Metrics::register(&mut registry);
        for ms in [10, 20, 30, 400] {
            metrics.record_latency("ns/db", Since::Triggered, Duration::from_millis(ms));
        }
        metrics.record_latency("ns/db", Since::Detected, Duration::from_millis(2100));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
        assert!(
            text.contains(
                "kube_sentinel_operator_revert_latency_seconds_count{since=\"triggered\"} 4"
            ),
            "{text}"
        );
        assert!(text.contains("kube_sentinel_operator_revert_latency_seconds_bucket{le=\"0.025\",since=\"triggered\"} 2"), "{text}");
        let summary = metrics.summary();
        assert_eq!(summary.len(), 2);
        assert!(summary[0].starts_with("since=detected n=1 "), "{summary:?}");
        assert!(
            summary[1].starts_with("since=triggered n=4 "),
            "{summary:?}"
        );
        let table = metrics.percentile_text();
        assert!(table.contains("# ns/db since=detected: n=1 "), "{table}");
        assert!(table.contains("Percentile"));
    }
}
