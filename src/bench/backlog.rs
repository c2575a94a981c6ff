//! The normal-lane backlog scenario: a steady stream of spec changes to one half of the fleet,
//! each a full reconcile with real API work (a ConfigMap rewritten, a rolling restart), while
//! the other half is drifted as in the steady scenario.
//!
//! With two lanes a trigger waits for one free worker; with one lane (baseline (a)) it waits
//! behind every full reconcile queued before it.

use std::time::Duration;

use futures::{StreamExt, stream::FuturesUnordered};
use kube::{
    Api, Client,
    api::{Patch, PatchParams},
};
use serde_json::json;
use tokio::time::{Instant, MissedTickBehavior};

use super::{
    fleet::{BENCH_NAMESPACE, Fleet},
    steady::{self, Load, SteadyResult},
};
use crate::{demo::report::full_reconciles, operator::crd::StatefulCluster};

/// Field manager of the spec changes (the fleet's creator: a user editing its resources).
const EDITOR: &str = "kube-sentinel-bench";
/// Spec changes in flight at once; a tick finding them all busy is skipped and counted.
const IN_FLIGHT: usize = 32;

/// What the backlog scenario measured.
pub(crate) struct BacklogResult {
    /// Drift→revert on the drifted half, with the steady scenario's counts.
    pub drift: SteadyResult,
    /// Spec changes written to the other half.
    pub spec_changes: u64,
    /// Spec change ticks skipped because [`IN_FLIGHT`] were still unanswered.
    pub spec_changes_skipped: u64,
    /// Spec changes the API server refused.
    pub spec_change_errors: u64,
    /// Full reconciles the operator completed meanwhile, if its metrics could be read.
    pub full_reconciles: Option<u64>,
}

/// `spec_rate` spec changes per second to the first half of the fleet for `load.duration`,
/// while `load` drifts the second half.
pub(crate) async fn run(
    admin: &Client,
    fleet: &Fleet,
    load: Load<'_>,
    spec_rate: f64,
    operator_port: Option<u16>,
) -> BacklogResult {
    let half = fleet.clusters().len() / 2;
    let load = Load {
        targets: half..fleet.clusters().len(),
        label: load.label.replace("steady", "backlog"),
        ..load
    };
    let full_before = match operator_port {
        Some(port) => full_reconciles(port).await,
        None => None,
    };
    let changes = spec_changes(admin, fleet, half, spec_rate, load.duration);
    let (drift, (spec_changes, spec_changes_skipped, spec_change_errors)) =
        tokio::join!(steady::run(admin, fleet, load), changes);
    let full_after = match operator_port {
        Some(port) => full_reconciles(port).await,
        None => None,
    };
    BacklogResult {
        drift,
        spec_changes,
        spec_changes_skipped,
        spec_change_errors,
        full_reconciles: full_after
            .zip(full_before)
            .map(|(a, b)| a.saturating_sub(b)),
    }
}

/// Writes `rate` spec changes per second, round robin over resources `0..count`, for
/// `duration`: a new `spec.config.backlog` value each. Returns (written, skipped, refused).
async fn spec_changes(
    admin: &Client,
    fleet: &Fleet,
    count: usize,
    rate: f64,
    duration: Duration,
) -> (u64, u64, u64) {
    let crs: Api<StatefulCluster> = Api::namespaced(admin.clone(), BENCH_NAMESPACE);
    let params = PatchParams {
        field_manager: Some(EDITOR.into()),
        ..Default::default()
    };
    let (mut written, mut skipped, mut refused) = (0u64, 0u64, 0u64);
    if count == 0 {
        return (written, skipped, refused);
    }
    let mut in_flight = FuturesUnordered::new();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let end = Instant::now() + duration;
    let mut next = 0u64;
    while Instant::now() < end || !in_flight.is_empty() {
        tokio::select! {
            _ = tick.tick(), if Instant::now() < end => {
                if in_flight.len() >= IN_FLIGHT {
                    skipped += 1;
                    continue;
                }
                let index = usize::try_from(next).unwrap_or(0) % count;
                let name = fleet.clusters()[index].name().to_string();
                let patch = Patch::Merge(json!({"spec": {"config": {"backlog": next.to_string()}}}));
                next += 1;
                let (crs, params) = (crs.clone(), params.clone());
                in_flight.push(async move { crs.patch(&name, &params, &patch).await });
            }
            Some(answer) = in_flight.next() => match answer {
                Ok(_) => written += 1,
                Err(e) => {
                    refused += 1;
                    tracing::warn!(error = %e, "bench: a spec change failed");
                }
            },
            () = tokio::time::sleep_until(end), if Instant::now() < end && in_flight.is_empty() => {}
        }
    }
    (written, skipped, refused)
}
