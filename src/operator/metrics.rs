//! The operator's metrics: reconciles and manager runs by path, reverted objects, and the
//! detection-to-revert and trigger-to-revert latencies (Prometheus histograms on `/metrics`,
//! HdrHistogram percentiles per resource and overall on `/debug/latency`, a periodic log line).

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use hdrhistogram::Histogram;
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, histogram::Histogram as PromHistogram},
    registry::Registry,
};

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

#[derive(Default)]
struct Hdr {
    overall: BTreeMap<&'static str, Histogram<u64>>,
    per_resource: BTreeMap<(String, &'static str), Histogram<u64>>,
}

fn histogram() -> Histogram<u64> {
    // Microseconds up to one hour, 3 significant digits.
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("constant histogram bounds are valid")
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
    latency: Family<SinceLabels, PromHistogram>,
    hdr: Arc<Mutex<Hdr>>,
}

impl Metrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            reconciles: Family::default(),
            manager_runs: Family::default(),
            reverted: Counter::default(),
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
        let micros = u64::try_from(latency.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        let mut hdr = self.lock();
        let _ = hdr
            .overall
            .entry(since.label())
            .or_insert_with(histogram)
            .record(micros);
        let _ = hdr
            .per_resource
            .entry((resource.to_string(), since.label()))
            .or_insert_with(histogram)
            .record(micros);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Hdr> {
        // Histograms stay valid even if a recorder panicked mid-update.
        self.hdr.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One line per latency: count, p50, p90, p99, max (milliseconds).
    pub fn summary(&self) -> Vec<String> {
        self.lock()
            .overall
            .iter()
            .map(|(since, h)| format!("since={since} {}", line(h)))
            .collect()
    }

    /// The HdrHistogram percentile distributions, overall and per resource, as text.
    pub fn percentile_text(&self) -> String {
        let hdr = self.lock();
        let mut out = String::new();
        for (since, h) in &hdr.overall {
            out.push_str(&format!("# overall since={since}: {}\n", line(h)));
            out.push_str(&distribution(h));
        }
        for ((resource, since), h) in &hdr.per_resource {
            out.push_str(&format!("# {resource} since={since}: {}\n", line(h)));
            out.push_str(&distribution(h));
        }
        if out.is_empty() {
            out.push_str("# no reverts recorded yet\n");
        }
        out
    }
}

fn ms(micros: u64) -> f64 {
    micros as f64 / 1000.0
}

fn line(h: &Histogram<u64>) -> String {
    format!(
        "count={} p50={:.1}ms p90={:.1}ms p99={:.1}ms max={:.1}ms",
        h.len(),
        ms(h.value_at_quantile(0.5)),
        ms(h.value_at_quantile(0.9)),
        ms(h.value_at_quantile(0.99)),
        ms(h.max())
    )
}

/// HdrHistogram's classic percentile table (value in ms, percentile, count, 1/(1-percentile)).
fn distribution(h: &Histogram<u64>) -> String {
    let mut out = String::from("       Value(ms)   Percentile   TotalCount 1/(1-Percentile)\n");
    for v in h.iter_quantiles(1) {
        let q = v.quantile_iterated_to();
        let inverse = if q < 1.0 {
            format!("{:.2}", 1.0 / (1.0 - q))
        } else {
            "inf".into()
        };
        out.push_str(&format!(
            "{:>16.3} {:>12.6} {:>12} {:>16}\n",
            ms(v.value_iterated_to()),
            q,
            v.count_since_last_iteration(),
            inverse
        ));
    }
    out
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
        assert!(
            summary[1].starts_with("since=triggered count=4 p50=20.0ms"),
            "{summary:?}"
        );
        let table = metrics.percentile_text();
        assert!(table.contains("# ns/db since=detected: count=1"), "{table}");
        assert!(table.contains("Percentile"));
    }
}
