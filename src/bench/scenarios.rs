//! The repeated-drift and storm scenarios: one object, many drifts.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use futures::{StreamExt, stream};
use kube::api::{Patch, PatchParams};
use serde_json::json;
use tokio::time::Instant;

use crate::demo::{
    DriftKind,
    drift::Cluster,
    programs::{ProgramKind, Programs},
    report::counter,
    rounds::{drift_and_wait, settle},
};

/// Argo CD's documented self-heal backoff for an object drifted again and again (seconds
/// before each retry: 0, 2, 6, 18, 54, 162, capped at 300), shown beside ours as a reference,
/// not measured.
pub const ARGO_CD_SELF_HEAL_BACKOFF_S: [u64; 7] = [0, 2, 6, 18, 54, 162, 300];

/// Field manager of the storm's patches.
const STORM_MANAGER: &str = "kube-sentinel-bench-storm";
/// Storm patches in flight at once.
const STORM_CONCURRENCY: usize = 16;

/// Drift→revert of each of `repeats` replicas drifts of one StatefulSet, each made after the
/// previous revert (and the follow-up reconcile) finished.
pub(crate) async fn repeated(
    cluster: &Cluster,
    repeats: usize,
    programs: &mut Programs,
) -> Result<Vec<Duration>> {
    let operator = programs
        .port(ProgramKind::Operator)
        .context("the operator is not running")?;
    let mut latencies = Vec::with_capacity(repeats);
    settle(cluster, operator, None).await;
    for round in 0..repeats {
        let full_before = crate::demo::report::full_reconciles(operator).await;
        let reverted = drift_and_wait(cluster, DriftKind::Replicas, None)
            .await
            .with_context(|| format!("repeated drift {}", round + 1))?;
        latencies.push(reverted.elapsed);
        settle(cluster, operator, full_before).await;
    }
    Ok(latencies)
}

/// What a storm cost.
#[derive(Debug, serde::Serialize)]
pub(crate) struct StormResult {
    /// Patches written.
    pub patches: usize,
    /// From the first patch to the last patch's answer.
    pub patching_ms: f64,
    /// From the last patch's answer to the object read back restored.
    pub revert_after_last_patch_ms: f64,
    /// Triggers the sentinel wrote meanwhile (its API writes).
    pub triggers: f64,
    /// Fast-path reconciles the operator ran meanwhile.
    pub fast_reconciles: f64,
    /// Objects the operator reverted meanwhile (its revert writes).
    pub reverted_objects: f64,
}

/// `patches` label patches to one Service as fast as they go, then the wait for its revert and
/// for the system to go quiet; the counts from both programs' metrics.
pub(crate) async fn storm(
    cluster: &Cluster,
    admin: &kube::Client,
    patches: usize,
    window: Duration,
    programs: &Programs,
) -> Result<StormResult> {
    let sentinel = programs
        .port(ProgramKind::Sentinel)
        .context("the sentinel is not running")?;
    let operator = programs
        .port(ProgramKind::Operator)
        .context("the operator is not running")?;
    let baseline = cluster.read(DriftKind::Label).await?;
    let before = counts(sentinel, operator).await;
    let services: kube::Api<k8s_openapi::api::core::v1::Service> =
        kube::Api::namespaced(admin.clone(), cluster.namespace());
    let started = Instant::now();
    let by = PatchParams::apply(STORM_MANAGER);
    let failed = stream::iter(0..patches)
        .map(|i| {
            let services = services.clone();
            let by = by.clone();
            let patch = json!({"metadata": {"labels": {"storm": format!("s{i}")}}});
            async move {
                services
                    .patch(cluster.name(), &by, &Patch::Merge(patch))
                    .await
                    .is_err()
            }
        })
        .buffer_unordered(STORM_CONCURRENCY)
        .filter(|failed| std::future::ready(*failed))
        .count()
        .await;
    if failed > 0 {
        bail!("{failed} of {patches} storm patches failed");
    }
    let patched = Instant::now();
    let deadline = patched + window + Duration::from_secs(60);
    while !cluster.restored(DriftKind::Label, &baseline).await? {
        if Instant::now() > deadline {
            bail!("the storm's label was not reverted within 60 s after the window");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let reverted = patched.elapsed();
    // Anything else the storm still causes happens within a window and a revert.
    tokio::time::sleep(window + Duration::from_secs(2)).await;
    let after = counts(sentinel, operator).await;
    Ok(StormResult {
        patches,
        patching_ms: ms(patched - started),
        revert_after_last_patch_ms: ms(reverted),
        triggers: after[0] - before[0],
        fast_reconciles: after[1] - before[1],
        reverted_objects: after[2] - before[2],
    })
}

/// Triggers written, fast reconciles and reverted objects, from both programs' metrics.
async fn counts(sentinel: u16, operator: u16) -> [f64; 3] {
    [
        counter(
            sentinel,
            "kube_sentinel_sentinel_triggers_written_total",
            "",
        )
        .await,
        counter(
            operator,
            "kube_sentinel_operator_reconciles_total",
            "path=\"fast\"",
        )
        .await,
        counter(
            operator,
            "kube_sentinel_operator_reverted_objects_total",
            "",
        )
        .await,
    ]
    .map(|c| c.unwrap_or(f64::NAN))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
