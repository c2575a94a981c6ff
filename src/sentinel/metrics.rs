//! The sentinel's Prometheus metrics.

use prometheus_client::{
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

use super::refusal::Refusal;
use crate::watch::errors::WatchErrors;

/// A label set with one label.
pub type Label = [(&'static str, &'static str); 1];

/// The `reason` of a burst dropped because this instance does not lead.
pub const STANDBY: &str = "standby";

/// Counters and gauges of the sentinel, registered under the `kube_sentinel_sentinel` prefix.
#[derive(Clone, Debug)]
pub struct SentinelMetrics {
    /// Watch events seen, by kind.
    pub events_seen: Family<Label, Counter>,
    /// Events that were not drift, by reason.
    pub events_ignored: Family<Label, Counter>,
    /// Drifts detected, by kind.
    pub drifts_detected: Family<Label, Counter>,
    /// Triggers written.
    pub triggers_written: Counter,
    /// Drift events folded into a trigger beyond its first.
    pub triggers_coalesced: Counter,
    /// Trigger writes retried.
    pub triggers_retried: Counter,
    /// Triggers that could not be written.
    pub triggers_failed: Counter,
    /// Debounced bursts not written, by reason (paused, disabled, standby, owner gone).
    pub triggers_dropped: Family<Label, Counter>,
    /// Bursts open in the debounce window.
    pub pending_keys: Gauge,
    /// Seconds from the first drift event of a burst to its trigger written.
    pub drift_to_trigger_seconds: Histogram,
    /// Watch errors by reason (each followed by a retry with backoff).
    pub watch_errors: WatchErrors,
}

impl SentinelMetrics {
    /// Creates the metrics and registers them.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self {
            events_seen: Family::default(),
            events_ignored: Family::default(),
            drifts_detected: Family::default(),
            triggers_written: Counter::default(),
            triggers_coalesced: Counter::default(),
            triggers_retried: Counter::default(),
            triggers_failed: Counter::default(),
            triggers_dropped: Family::default(),
            pending_keys: Gauge::default(),
            drift_to_trigger_seconds: Histogram::new([
                0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 2.5, 3.0, 5.0, 10.0, 15.0, 30.0, 60.0,
            ]),
            watch_errors: WatchErrors::default(),
        };
        // Every reason a burst can be dropped for, at zero: a dashboard's query of a counter
        // that nothing has touched yet finds it (an empty family is not exported).
        let reasons = Refusal::ALL.map(Refusal::as_str);
        for reason in reasons.into_iter().chain([STANDBY]) {
            let _ = m.triggers_dropped.get_or_create(&[("reason", reason)]);
        }
        let r = registry.sub_registry_with_prefix("kube_sentinel_sentinel");
        r.register("events_seen", "Watch events seen", m.events_seen.clone());
        r.register(
            "events_ignored",
            "Watch events that were not drift",
            m.events_ignored.clone(),
        );
        r.register(
            "drifts_detected",
            "Drifts detected",
            m.drifts_detected.clone(),
        );
        r.register(
            "triggers_written",
            "Triggers written",
            m.triggers_written.clone(),
        );
        r.register(
            "triggers_coalesced",
            "Drift events folded into a trigger beyond its first",
            m.triggers_coalesced.clone(),
        );
        r.register(
            "triggers_retried",
            "Trigger writes retried",
            m.triggers_retried.clone(),
        );
        r.register(
            "triggers_failed",
            "Triggers that could not be written",
            m.triggers_failed.clone(),
        );
        r.register(
            "triggers_dropped",
            "Debounced bursts not written",
            m.triggers_dropped.clone(),
        );
        r.register(
            "pending_keys",
            "Bursts open in the debounce window",
            m.pending_keys.clone(),
        );
        r.register(
            "drift_to_trigger_seconds",
            "Seconds from the first drift event of a burst to its trigger written",
            m.drift_to_trigger_seconds.clone(),
        );
        let watch_errors = WatchErrors::register(r, "watch_errors");
        Self { watch_errors, ..m }
    }
}
