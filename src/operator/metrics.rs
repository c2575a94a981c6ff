//! The operator's metrics.
//!
//! The operator's metrics: reconciles and manager runs by path, reverted objects, and the
//! detection-to-revert and trigger-to-revert latencies (Prometheus histograms on `/metrics`,
//! HdrHistogram percentiles per resource and overall on `/debug/latency`, a periodic log line).

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use kube::{ResourceExt, runtime::watcher};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, exemplar::HistogramWithExemplars, family::Family, gauge::Gauge},
    registry::Registry,
};

use super::controller_runtime::ReconcileMetrics;
use crate::{
    telemetry::LatencyRecorder,
    watch::{NamespacedName, errors::WatchErrors, relist::Relist},
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

/// The exemplar of a revert latency: the trigger it reverted.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TriggerExemplar {
    /// `status.sentinel.triggerID`.
    pub trigger_id: String,
}

type LatencyHistogram = HistogramWithExemplars<TriggerExemplar>;

fn latency_histogram() -> LatencyHistogram {
    HistogramWithExemplars::new(LATENCY_BUCKETS.into_iter())
}

/// HdrHistogram-backed recorders: wait-free on record; the per-resource map is locked only to
/// find or add a resource's recorder.
#[derive(Default)]
struct Hdr {
    detected: LatencyRecorder,
    triggered: LatencyRecorder,
    per_resource: Mutex<BTreeMap<(String, &'static str), LatencyRecorder>>,
    /// The resources listed so far while the custom-resource watch relists.
    relist: Mutex<Relist<String>>,
    /// How many per-resource recorders are held: what memory they take is in sight.
    recorders: Gauge,
}

impl Hdr {
    fn per_resource(&self) -> MutexGuard<'_, BTreeMap<(String, &'static str), LatencyRecorder>> {
        // A poisoned map of recorders is still a valid map.
        self.per_resource.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The resources with recorders.
    fn resources(&self) -> BTreeSet<String> {
        self.per_resource().keys().map(|(r, _)| r.clone()).collect()
    }

    /// Frees the recorders of every resource `keep` refuses.
    fn retain(&self, keep: impl Fn(&String) -> bool) {
        let mut recorders = self.per_resource();
        recorders.retain(|(resource, _), _| keep(resource));
        self.recorders.set(gauge_value(recorders.len()));
    }
}

fn gauge_value(count: usize) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
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
    pub watch_errors: WatchErrors,
    /// StatefulClusters that could not be decoded, once per resourceVersion.
    pub undecodable: Counter,
    /// Triggers refused because their ID is not a UUID (written by someone other than the
    /// sentinel).
    pub invalid_triggers: Counter,
    /// Fights recognised: a foreign manager undid reverts of one object in a row.
    pub drift_fights: Counter,
    /// Reverts held back by a fight's backoff.
    pub reverts_held: Counter,
    /// Objects whose revert is held back now.
    pub objects_held: Gauge,
    /// Every reconcile again, in controller-runtime's vocabulary.
    pub controller_runtime: ReconcileMetrics,
    latency: Family<SinceLabels, HistogramWithExemplars<TriggerExemplar>, fn() -> LatencyHistogram>,
    hdr: Arc<Hdr>,
}

impl Metrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            reconciles: Family::default(),
            manager_runs: Family::default(),
            reverted: Counter::default(),
            watch_errors: WatchErrors::register(registry, "kube_sentinel_operator_watch_errors"),
            undecodable: Counter::default(),
            invalid_triggers: Counter::default(),
            drift_fights: Counter::default(),
            reverts_held: Counter::default(),
            objects_held: Gauge::default(),
            controller_runtime: ReconcileMetrics::register(registry),
            latency: Family::new_with_constructor(latency_histogram),
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
            "kube_sentinel_operator_undecodable_resources",
            "StatefulClusters skipped because they could not be decoded, once per resourceVersion",
            metrics.undecodable.clone(),
        );
        registry.register(
            "kube_sentinel_operator_invalid_triggers",
            "Triggers refused, acknowledged failed and not acted on, because their ID is not a lowercase hyphenated UUID",
            metrics.invalid_triggers.clone(),
        );
        registry.register(
            "kube_sentinel_operator_drift_fights",
            "Fights recognised: one foreign manager re-drifted an object after each of several reverts in a row",
            metrics.drift_fights.clone(),
        );
        registry.register(
            "kube_sentinel_operator_reverts_held",
            "Reverts held back by a fight's backoff (counted each time a drifted object is left until its hold ends)",
            metrics.reverts_held.clone(),
        );
        registry.register(
            "kube_sentinel_operator_objects_held",
            "Objects whose revert a fight's backoff holds back now",
            metrics.objects_held.clone(),
        );
        registry.register(
            "kube_sentinel_operator_revert_latency_seconds",
            "Time from the sentinel's detection (since=detected) or trigger (since=triggered) to the revert verified",
            metrics.latency.clone(),
        );
        registry.register(
            "kube_sentinel_operator_latency_recorders",
            "Per-resource latency recorders held (two per resource that reverted, freed with it)",
            metrics.hdr.recorders.clone(),
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
        self.record(resource, since, latency, None);
    }

    /// Records one latency of the revert of trigger `trigger_id` for `resource`; the trigger
    /// is the histogram bucket's exemplar (OpenMetrics), so a slow bucket leads to its trigger.
    pub fn record_trigger_latency(
        &self,
        resource: &str,
        since: Since,
        latency: Duration,
        trigger_id: &str,
    ) {
        let exemplar = TriggerExemplar {
            trigger_id: trigger_id.to_string(),
        };
        self.record(resource, since, latency, Some(exemplar));
    }

    fn record(
        &self,
        resource: &str,
        since: Since,
        latency: Duration,
        exemplar: Option<TriggerExemplar>,
    ) {
        self.latency
            .get_or_create(&SinceLabels {
                since: since.label(),
            })
            .observe(latency.as_secs_f64(), exemplar, None);
        let overall = match since {
            Since::Detected => &self.hdr.detected,
            Since::Triggered => &self.hdr.triggered,
        };
        overall.record(latency);
        let recorder = {
            let mut recorders = self.hdr.per_resource();
            let recorder = recorders
                .entry((resource.to_string(), since.label()))
                .or_default()
                .clone();
            self.hdr.recorders.set(gauge_value(recorders.len()));
            recorder
        };
        recorder.record(latency);
    }

    /// Resources that have per-resource recorders.
    pub fn tracked_resources(&self) -> usize {
        self.hdr.resources().len()
    }

    /// Keeps the per-resource recorders to the resources the custom-resource watch `event`
    /// says exist: a deleted resource's recorders are freed, and after a relist (which reports
    /// no deletion made while the watch was down) so are those of every resource not listed.
    pub fn track<K: ResourceExt>(&self, event: &watcher::Event<K>) {
        let key = |r: &K| NamespacedName::of(r).map(|n| n.to_string());
        let mut relist = self.hdr.relist.lock().unwrap_or_else(|e| e.into_inner());
        match event {
            watcher::Event::Delete(r) => {
                if let Some(resource) = key(r) {
                    self.hdr.retain(|name| *name != resource);
                }
            }
            watcher::Event::Init => relist.start(),
            watcher::Event::InitApply(r) => {
                if let Some(resource) = key(r) {
                    relist.saw(resource);
                }
            }
            watcher::Event::InitDone => {
                if let Some(listed) = relist.done() {
                    self.hdr.retain(|name| listed.contains(name));
                }
            }
            watcher::Event::Apply(_) => {}
        }
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
        sections.extend(
            self.hdr
                .per_resource()
                .iter()
                .map(|((resource, since), r)| (resource.clone(), *since, r.clone())),
        );
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
    use crate::operator::crd::StatefulCluster;

    fn cr(name: &str) -> StatefulCluster {
        let spec = serde_json::from_value(serde_json::json!({
            "replicas": 1, "image": "db", "version": "1", "ports": [{"name": "c", "port": 1}]
        }))
        .expect("spec");
        let mut cr = StatefulCluster::new(name, spec);
        cr.metadata.namespace = Some("ns".into());
        cr
    }

    #[test]
    fn a_deleted_resource_frees_its_recorders_and_a_relist_frees_the_missed() {
        let metrics = Metrics::register(&mut Registry::default());
        for name in ["a", "b", "c"] {
            let resource = format!("ns/{name}");
            metrics.record_latency(&resource, Since::Detected, Duration::from_millis(5));
            metrics.record_latency(&resource, Since::Triggered, Duration::from_millis(3));
        }
        assert_eq!(metrics.tracked_resources(), 3);
        assert_eq!(metrics.hdr.recorders.get(), 6, "the gauge counts recorders");
        metrics.track(&watcher::Event::Delete(cr("a")));
        assert_eq!(metrics.hdr.recorders.get(), 4);
        assert_eq!(metrics.tracked_resources(), 2, "a's two recorders freed");
        assert!(!metrics.percentile_text().contains("# ns/a "));
        // b is deleted while the watch is down: the relist lists c only, and no Delete comes.
        metrics.track(&watcher::Event::<StatefulCluster>::Init);
        metrics.track(&watcher::Event::InitApply(cr("c")));
        assert_eq!(metrics.tracked_resources(), 2, "nothing freed mid-relist");
        metrics.track(&watcher::Event::<StatefulCluster>::InitDone);
        assert_eq!(metrics.tracked_resources(), 1);
        let text = metrics.percentile_text();
        assert!(text.contains("# ns/c since=detected"), "{text}");
        assert!(!text.contains("# ns/b "), "{text}");
        // The overall recorders keep every revert.
        assert!(text.contains("# overall since=detected: n=3 "), "{text}");
    }

    #[test]
    fn a_reverts_latency_carries_its_trigger_as_the_exemplar() {
        let mut registry = Registry::default();
        let metrics = Metrics::register(&mut registry);
        metrics.record_trigger_latency(
            "ns/db",
            Since::Detected,
            Duration::from_millis(2200),
            "t-1",
        );
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
        let bucket = text
            .lines()
            .find(|l| {
                l.starts_with("kube_sentinel_operator_revert_latency_seconds_bucket{le=\"2.5\"")
            })
            .expect("the 2.5 s bucket");
        assert!(bucket.contains(r#"# {trigger_id="t-1"} 2.2"#), "{bucket}");
    }

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
