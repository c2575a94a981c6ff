//! One scenario: steady drift, the fault in the middle of it, then the invariants checked by
//! reading the objects back.

use std::time::Duration;

use anyhow::Result;
use kube::{Api, Client};
use tokio::time::Instant;

use super::{
    fault::Fault,
    options::FaultOptions,
    report::Row,
    rig::{Counters, Rig},
};
use crate::{
    bench::{
        fleet::Fleet,
        steady::{self, Revert, SteadyResult},
    },
    demo::DriftKind,
    operator::crd::{StatefulCluster, UpgradePhase},
};

/// Drift→revert above this is not the steady state: the 2 s window, its jitter and a second.
const NORMAL: Duration = Duration::from_secs(3);
/// How long drifts still pending after the load may take to be reverted, and triggers to be
/// acknowledged, before they count as lost.
const GRACE: Duration = Duration::from_secs(60);
/// API writes per drift allowed: three times the steady figures (BENCHMARKS.md: sentinel 1.67,
/// operator 9.9). More means retries multiplying writes, or a trigger storm.
const SENTINEL_WRITES_PER_DRIFT: f64 = 5.0;
const OPERATOR_WRITES_PER_DRIFT: f64 = 30.0;

/// Runs `fault` under steady drift on `fleet`; its row of the report.
pub(crate) async fn scenario(
    rig: &mut Rig,
    fleet: &Fleet,
    load_client: &Client,
    options: &FaultOptions,
    fault: Fault,
) -> Result<Row> {
    let hold = options.hold(fault);
    let (lead, tail) = options.calm();
    let before = rig.counters().await;
    let load = steady::Load {
        rate: options.rate,
        duration: lead + hold + tail,
        kinds: &DriftKind::ALL,
        seed: options.seed,
        grace: GRACE,
        breakdown: false,
        targets: 0..fleet.clusters().len(),
        label: fault.name(),
    };
    let done = tokio::sync::Notify::new();
    let generator = async {
        let drift = steady::run(load_client, fleet, load).await;
        done.notify_one();
        drift
    };
    let driver = async {
        tokio::time::sleep(lead).await;
        let start = Instant::now();
        let notes = fault.run(rig, hold).await;
        let end = Instant::now();
        let supervised = supervise(rig, &done).await;
        (start, end, notes.and_then(|n| supervised.map(|()| n)))
    };
    let (drift, (start, end, notes)) = tokio::join!(generator, driver);
    let mut row = Row::new(fault, hold);
    row.notes = match notes {
        Ok(notes) => notes,
        Err(e) => {
            row.fail(format!("the fault could not be injected or undone: {e:#}"));
            String::new()
        }
    };
    timeline(&mut row, &drift.reverts, start, end);
    confirm(&mut row, fleet, &drift).await;
    row.unacknowledged = unacknowledged(fleet).await;
    if let Err(e) = fleet.wait_settled(rig.programs(), GRACE * 2).await {
        row.fail(format!("not settled: {e:#}"));
    }
    row.half_upgraded = half_upgraded(&rig.admin).await?;
    let counted = rig.counters().await - before;
    judge(&mut row, fault, counted, rig).await;
    Ok(row)
}

/// Replaces exited replicas every second until `done`, as a Deployment would.
async fn supervise(rig: &mut Rig, done: &tokio::sync::Notify) -> Result<()> {
    loop {
        rig.counters().await;
        rig.replace_exited()?;
        tokio::select! {
            () = done.notified() => return rig.replace_exited(),
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// The worst drift→revert of drifts written during the fault, and how long after it ended
/// reverts were slower than [`NORMAL`].
fn timeline(row: &mut Row, reverts: &[Revert], start: Instant, end: Instant) {
    let during = start.checked_sub(NORMAL).unwrap_or(start)..=end;
    row.worst_during = reverts
        .iter()
        .filter(|r| during.contains(&r.written))
        .map(|r| r.latency)
        .max();
    row.recovered_after = reverts
        .iter()
        .filter(|r| r.latency > NORMAL)
        .map(|r| (r.written + r.latency).saturating_duration_since(end))
        .max()
        .unwrap_or_default();
    row.fault_lasted = end - start;
}

/// Drifts the load generator did not see reverted (its own watch may have been down): read
/// back until reverted or [`GRACE`] is over.
async fn confirm(row: &mut Row, fleet: &Fleet, drift: &SteadyResult) {
    row.injected = drift.injected;
    row.write_errors = drift.write_errors;
    row.reverted = drift.reverted;
    let deadline = Instant::now() + GRACE;
    for (i, kind, baseline) in &drift.unconfirmed {
        let cluster = &fleet.clusters()[*i];
        loop {
            if cluster.restored(*kind, baseline).await.unwrap_or(false) {
                row.reverted += 1;
                row.reverted_unseen += 1;
                break;
            }
            if Instant::now() > deadline {
                row.lost += 1;
                row.lost_drifts.push(format!("{} {kind:?}", cluster.name()));
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// Resources whose trigger is still unacknowledged after [`GRACE`].
async fn unacknowledged(fleet: &Fleet) -> u64 {
    let deadline = Instant::now() + GRACE;
    loop {
        let mut waiting = 0;
        for cluster in fleet.clusters() {
            match cluster.trigger().await {
                Ok((Some(_), None)) | Err(_) => waiting += 1,
                Ok(_) => {}
            }
        }
        if waiting == 0 || Instant::now() > deadline {
            return waiting;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Resources left in an upgrade phase or with a candidate StatefulSet (the load changes no
/// version, so any is a fast path's doing).
async fn half_upgraded(admin: &Client) -> Result<u64> {
    let crs: Api<StatefulCluster> = Api::all(admin.clone());
    let list = crs.list(&Default::default()).await?;
    Ok(list
        .items
        .iter()
        .filter_map(|cr| cr.status.as_ref()?.upgrade.as_ref())
        .filter(|u| u.phase != UpgradePhase::Idle || u.candidate_set.is_some())
        .count() as u64)
}

/// The invariants, and evidence that the fault really happened.
async fn judge(row: &mut Row, fault: Fault, counted: Counters, rig: &mut Rig) {
    let drifts = row.injected.max(1) as f64;
    row.sentinel_writes_per_drift = counted.sentinel_writes / drifts;
    row.operator_writes_per_drift = counted.operator_writes / drifts;
    row.counted = counted;
    if row.lost > 0 {
        row.fail(format!(
            "{} drifts never reverted ({})",
            row.lost,
            row.lost_drifts.join(", ")
        ));
    }
    if row.unacknowledged > 0 {
        row.fail(format!(
            "{} triggers never acknowledged",
            row.unacknowledged
        ));
    }
    if row.half_upgraded > 0 {
        row.fail(format!(
            "{} resources left half-upgraded",
            row.half_upgraded
        ));
    }
    if row.sentinel_writes_per_drift > SENTINEL_WRITES_PER_DRIFT {
        row.fail(format!(
            "sentinel writes per drift {:.2} > {SENTINEL_WRITES_PER_DRIFT}",
            row.sentinel_writes_per_drift
        ));
    }
    if row.operator_writes_per_drift > OPERATOR_WRITES_PER_DRIFT {
        row.fail(format!(
            "operator writes per drift {:.2} > {OPERATOR_WRITES_PER_DRIFT}",
            row.operator_writes_per_drift
        ));
    }
    if row.injected == 0 {
        row.fail("no drift was injected".into());
    }
    if let Err(e) = rig.replace_exited() {
        row.fail(format!("a replica could not be replaced: {e:#}"));
    }
    let (lease_exits, crashes) = rig.take_exits();
    row.lease_exits = lease_exits;
    for crash in crashes {
        row.fail(format!("a replica crashed: {crash}"));
    }
    let evidence = match fault {
        Fault::Throttled => (counted.throttled > 0.0)
            .then_some(())
            .ok_or("no 429 answered"),
        Fault::ServerErrors => (counted.server_errors > 0.0)
            .then_some(())
            .ok_or("no 5xx answered"),
        Fault::WatchExpired => (counted.watches_expired > 0.0)
            .then_some(())
            .ok_or("no watch expired (410 Gone)"),
        _ => Ok(()),
    };
    if let Err(missing) = evidence {
        row.fail(format!("the fault was not observed: {missing}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn revert(start: Instant, written_s: f64, latency_s: f64) -> Revert {
        Revert {
            written: start + Duration::from_secs_f64(written_s),
            latency: Duration::from_secs_f64(latency_s),
        }
    }

    #[test]
    fn the_worst_revert_is_of_drifts_written_during_the_fault_and_recovery_ends_with_the_last_slow_one()
     {
        let t0 = Instant::now();
        let (start, end) = (t0 + Duration::from_secs(10), t0 + Duration::from_secs(20));
        let reverts = [
            revert(t0, 1.0, 20.0), // before the fault and its window: not "during"; done at 21 s
            revert(t0, 8.0, 14.0), // in the window before it: during, done at 22 s
            revert(t0, 15.0, 9.0), // during, done at 24 s
            revert(t0, 21.0, 5.5), // after, still slow: done at 26.5 s
            revert(t0, 25.0, 2.2), // after, normal again
        ];
        let mut row = Row::new(Fault::Outage, Duration::from_secs(10));
        timeline(&mut row, &reverts, start, end);
        assert_eq!(row.worst_during, Some(Duration::from_secs(14)));
        assert_eq!(row.recovered_after, Duration::from_millis(6500));
        assert_eq!(row.fault_lasted, Duration::from_secs(10));
    }

    #[test]
    fn with_every_revert_normal_there_is_nothing_to_recover_from() {
        let t0 = Instant::now();
        let reverts = [revert(t0, 1.0, 2.1), revert(t0, 12.0, 2.3)];
        let mut row = Row::new(Fault::Latency, Duration::from_secs(10));
        timeline(
            &mut row,
            &reverts,
            t0 + Duration::from_secs(10),
            t0 + Duration::from_secs(20),
        );
        assert_eq!(row.worst_during, Some(Duration::from_millis(2300)));
        assert_eq!(row.recovered_after, Duration::ZERO);
    }
}
