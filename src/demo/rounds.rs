//! Measured rounds of drift: one drift, timed until the object reads back restored with its
//! trigger acknowledged, then a wait until the operator has settled before the next.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::time::Instant;

use super::{
    POLL, WAIT,
    drift::{Cluster, DriftKind},
    programs::{ProgramKind, Programs},
    report::full_reconciles,
    stage_line::{Stage, StageLine},
};
use crate::telemetry::LatencyRecorder;

/// One verified revert.
pub(crate) struct Reverted {
    /// From just before the drift to the read-back of the restored object.
    pub elapsed: Duration,
    /// The trigger the sentinel wrote for the drift.
    pub trigger_id: String,
    /// The operator's `lastOutcome`: `corrected` when its fast path made the revert.
    pub outcome: String,
}

/// One measured round, as the summary reports it.
#[derive(Clone, Debug, serde::Serialize)]
pub(crate) struct RoundRecord {
    /// 1 for the first round.
    pub round: u32,
    /// The drifted object, as `Kind/name`.
    pub object: String,
    /// The kind of drift.
    pub drift: String,
    /// Drift-to-revert in milliseconds (microsecond resolution).
    pub latency_ms: f64,
    /// The operator's `lastOutcome`.
    pub outcome: String,
    /// The trigger that led to the revert.
    pub trigger_id: String,
}

/// Every round, and their drift-to-revert times as a histogram.
pub(crate) struct Rounds {
    /// The drift-to-revert times.
    pub latency: LatencyRecorder,
    /// Each round, in order.
    pub records: Vec<RoundRecord>,
}

/// `rounds` cycles of every [`DriftKind`], each printed as it is reverted; the drift-to-revert
/// times. Fails if a round is not reverted in time or a program exits.
pub(crate) async fn drift_rounds(
    cluster: &Cluster,
    rounds: u32,
    programs: &mut Programs,
) -> Result<Rounds> {
    let latency = LatencyRecorder::new();
    let mut records = Vec::new();
    let total = rounds.saturating_mul(DriftKind::DEMO.len() as u32);
    let operator_port = programs
        .port(ProgramKind::Operator)
        .context("the operator is not running")?;
    settle(cluster, operator_port, None).await;
    for round in 0..total {
        let kind = DriftKind::DEMO[round as usize % DriftKind::DEMO.len()];
        let object = kind.object_of(cluster.name());
        let full_before = full_reconciles(operator_port).await;
        let mut line = StageLine::start(format!("round {}/{total}  {object}  {kind}", round + 1));
        let reverted = tokio::select! {
            result = drift_and_wait(cluster, kind, Some(&mut line)) => result
                .with_context(|| format!("round {} ({kind} on {object})", round + 1))?,
            exited = programs.watch() => return Err(exited),
        };
        drop(line);
        latency.record(reverted.elapsed);
        println!(
            "round {:>3}/{total}  {:<24} {:<20} reverted in {:>5} ms  ({}, trigger {})",
            round + 1,
            object,
            kind.to_string(),
            reverted.elapsed.as_millis(),
            reverted.outcome,
            reverted.trigger_id
        );
        records.push(RoundRecord {
            round: round + 1,
            object: object.to_string(),
            drift: kind.to_string(),
            latency_ms: reverted.elapsed.as_secs_f64() * 1e3,
            outcome: reverted.outcome,
            trigger_id: reverted.trigger_id,
        });
        // The fast path queues a full reconcile after each revert. Let it finish, so that the
        // next round's drift is reverted by the fast path, not by that reconcile in passing.
        settle(cluster, operator_port, full_before).await;
    }
    Ok(Rounds { latency, records })
}

/// One round: drift `kind`, then poll until the object reads back restored and a new trigger
/// is acknowledged. The clock runs from just before the change to that read-back. Each stage
/// reached shows on `line`, if given.
pub(crate) async fn drift_and_wait(
    cluster: &Cluster,
    kind: DriftKind,
    mut line: Option<&mut StageLine>,
) -> Result<Reverted> {
    let baseline = cluster.read(kind).await?;
    let (previous, _) = cluster.trigger().await?;
    let started = Instant::now();
    cluster.drift(kind).await.context("drifting")?;
    let mut reached = |stage: Stage| {
        if let Some(line) = line.as_deref_mut() {
            line.reached(stage, started.elapsed());
        }
    };
    reached(Stage::Drifted);
    let deadline = started + WAIT;
    loop {
        let (id, outcome) = cluster.trigger().await?;
        let id = id.filter(|id| Some(id) != previous.as_ref());
        if id.is_some() {
            reached(Stage::Triggered);
        }
        if id.is_some() && outcome.is_some() {
            reached(Stage::Acknowledged);
        }
        if let (Some(id), Some(outcome)) = (id, outcome)
            && cluster.restored(kind, &baseline).await?
        {
            return Ok(Reverted {
                elapsed: started.elapsed(),
                trigger_id: id,
                outcome,
            });
        }
        if Instant::now() > deadline {
            let now = cluster.read(kind).await.ok();
            bail!(
                "not reverted and acknowledged within {WAIT:?}: expected {baseline:?}, found \
                 {now:?}; last trigger {:?}",
                cluster.trigger().await.ok()
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Waits until the operator (metrics on `operator_port`) has completed a full reconcile since
/// `after` (a count from [`full_reconciles`]), the cluster reads Ready and not Progressing (an
/// image revert rolls the pods; the operator rechecks a progressing cluster every 2 s), and no
/// full reconcile has completed for a second: nothing of it is still in flight. Gives up
/// quietly after 60 s; the rounds measure correctly either way.
pub(crate) async fn settle(cluster: &Cluster, operator_port: u16, after: Option<u64>) {
    let deadline = Instant::now() + WAIT;
    let mut last = full_reconciles(operator_port).await;
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = full_reconciles(operator_port).await;
        let followed_up = match (after, now) {
            (Some(before), Some(now)) => now > before,
            _ => true,
        };
        if followed_up && now == last && cluster.settled().await {
            return;
        }
        last = now;
    }
}
