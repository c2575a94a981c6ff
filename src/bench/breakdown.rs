//! Where a drift→revert's time goes, from the timestamps the programs write on the custom
//! resource (the sentinel's `detectedAt` and `triggeredAt`; the operator's `lastQueuedAt`,
//! `lastStartedAt` and `lastRevertedAt`) and the load generator's own two (its write returned,
//! its watch saw the revert): every millisecond of a revert falls in one stage.
//!
//! The status is read as JSON, so that whole-second and fractional timestamps both parse.

use std::time::{Duration, SystemTime};

use jiff::Timestamp;
use kube::{Api, Client, api::DynamicObject, core::ApiResource};
use serde::Serialize;
use serde_json::Value;

use crate::telemetry::LatencyRecorder;

/// The stages of one revert, in order: the sentinel's watch, its window (with jitter), the
/// trigger's write and delivery to the operator, the operator's queue, its revert (written and
/// read back), the generator's watch.
pub(crate) const STAGES: [&str; 6] = [
    "write_to_detected",
    "detected_to_triggered",
    "triggered_to_queued",
    "queued_to_started",
    "started_to_reverted",
    "reverted_to_seen",
];

/// Per-stage histograms over many reverts; a stage that came out negative (clocks read
/// around one instant in different processes) counts as zero and is counted.
pub(crate) struct Breakdown {
    stages: [LatencyRecorder; STAGES.len()],
    /// Reverts whose timestamps could be read.
    pub measured: u64,
    /// Reverts without a handled trigger newer than their drift.
    pub unmatched: u64,
    /// Stage values below zero, clamped.
    pub negative: u64,
}

/// The wall-clock instants of one revert that the load generator knows.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Observed {
    /// When the drift's write returned.
    pub written: SystemTime,
    /// When the watch showed the object back.
    pub seen: SystemTime,
}

impl Breakdown {
    /// Nothing measured yet.
    pub(crate) fn new() -> Self {
        Self {
            stages: std::array::from_fn(|_| LatencyRecorder::new()),
            measured: 0,
            unmatched: 0,
            negative: 0,
        }
    }

    /// Takes in the status of the custom resource read after a revert.
    pub(crate) fn record(&mut self, status: &Value, observed: Observed) {
        let Some(instants) = instants(status, observed) else {
            self.unmatched += 1;
            return;
        };
        for (stage, pair) in self.stages.iter().zip(instants.windows(2)) {
            match pair[1].duration_since(pair[0]) {
                Ok(d) => stage.record(d),
                Err(_) => {
                    self.negative += 1;
                    stage.record(Duration::ZERO);
                }
            }
        }
        self.measured += 1;
    }

    /// p50 and p99 of each stage, in milliseconds.
    pub(crate) fn summary(&self) -> Vec<StageSummary> {
        STAGES
            .iter()
            .zip(&self.stages)
            .map(|(name, stage)| {
                let s = stage.snapshot().summary();
                StageSummary {
                    stage: name,
                    p50_ms: s.p50.as_secs_f64() * 1e3,
                    p99_ms: s.p99.as_secs_f64() * 1e3,
                }
            })
            .collect()
    }
}

/// One stage's figures.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct StageSummary {
    /// Which stage.
    pub stage: &'static str,
    /// Median, ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
}

/// written, detectedAt, triggeredAt, lastQueuedAt, lastStartedAt, lastRevertedAt, seen — if
/// the status has a reverted trigger detected no earlier than a second before the write (so it
/// is this drift's).
fn instants(status: &Value, observed: Observed) -> Option<[SystemTime; STAGES.len() + 1]> {
    let sentinel = &status["sentinel"];
    let trigger = sentinel["triggerID"].as_str()?;
    (sentinel["lastHandledTriggerID"].as_str()? == trigger).then_some(())?;
    let at = |field: &str| -> Option<SystemTime> {
        let t: Timestamp = sentinel[field].as_str()?.parse().ok()?;
        Some(SystemTime::from(t))
    };
    let detected = at("detectedAt")?;
    // A whole-second timestamp may read up to a second before the event.
    if detected + Duration::from_secs(1) < observed.written {
        return None;
    }
    Some([
        observed.written,
        detected,
        at("triggeredAt")?,
        at("lastQueuedAt")?,
        at("lastStartedAt")?,
        at("lastRevertedAt")?,
        observed.seen,
    ])
}

/// The StatefulClusters of `namespace`, read as JSON.
pub(crate) fn status_api(client: &Client, namespace: &str) -> Api<DynamicObject> {
    let resource = ApiResource::erase::<crate::operator::crd::StatefulCluster>(&());
    Api::namespaced_with(client.clone(), namespace, &resource)
}

/// Reads StatefulCluster `name`'s status until its trigger is handled (the acknowledgement
/// may follow the revert by a verification), for at most two seconds.
pub(crate) async fn handled_status(api: Api<DynamicObject>, name: String) -> Option<Value> {
    for _ in 0..40 {
        let status = api
            .get_status(&name)
            .await
            .ok()?
            .data
            .get("status")
            .cloned();
        if let Some(status) = status {
            let s = &status["sentinel"];
            if s["triggerID"].is_string() && s["triggerID"] == s["lastHandledTriggerID"] {
                return Some(status);
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn at(s: &str) -> SystemTime {
        SystemTime::from(s.parse::<Timestamp>().expect("timestamp"))
    }

    #[test]
    fn a_handled_trigger_splits_the_revert_into_its_stages() {
        let status = json!({"sentinel": {
            "triggerID": "t1", "lastHandledTriggerID": "t1",
            "detectedAt": "2026-12-02T10:00:00.050000Z",
            "triggeredAt": "2026-12-02T10:00:02.300000Z",
            "lastQueuedAt": "2026-12-02T10:00:02.310000Z",
            "lastStartedAt": "2026-12-02T10:00:02.330000Z",
            "lastRevertedAt": "2026-12-02T10:00:02.400000Z",
            "lastHandledAt": "2026-12-02T10:00:02.410000Z",
        }});
        let mut breakdown = Breakdown::new();
        breakdown.record(
            &status,
            Observed {
                written: at("2026-12-02T10:00:00.040Z"),
                seen: at("2026-12-02T10:00:02.380Z"),
            },
        );
        assert_eq!(
            (breakdown.measured, breakdown.negative),
            (1, 1),
            "seen before handled"
        );
        let ms: Vec<f64> = breakdown.summary().iter().map(|s| s.p50_ms).collect();
        assert!((ms[0] - 10.0).abs() < 0.5, "{ms:?}");
        assert!((ms[1] - 2250.0).abs() < 5.0, "{ms:?}");
        assert!((ms[2] - 10.0).abs() < 0.5, "{ms:?}");
        assert!((ms[3] - 20.0).abs() < 0.5, "{ms:?}");
        assert!((ms[4] - 70.0).abs() < 0.5, "{ms:?}");
        assert_eq!(ms[5], 0.0, "{ms:?}");
    }

    #[test]
    fn a_trigger_not_yet_handled_or_older_than_the_drift_is_not_this_drifts() {
        let mut breakdown = Breakdown::new();
        let observed = Observed {
            written: at("2026-12-02T10:00:10Z"),
            seen: at("2026-12-02T10:00:12Z"),
        };
        let pending = json!({"sentinel": {"triggerID": "t2", "lastHandledTriggerID": "t1"}});
        let old = json!({"sentinel": {
            "triggerID": "t1", "lastHandledTriggerID": "t1",
            "detectedAt": "2026-12-02T10:00:00Z", "triggeredAt": "2026-12-02T10:00:02Z",
            "lastHandledAt": "2026-12-02T10:00:02Z",
        }});
        breakdown.record(&pending, observed);
        breakdown.record(&old, observed);
        assert_eq!((breakdown.measured, breakdown.unmatched), (0, 2));
    }
}
