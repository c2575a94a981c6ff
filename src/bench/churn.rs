//! The churn scenario: many resources created, drifted and deleted, twice; the operator's
//! memory after each round.
//!
//! Each revert gives its resource two latency recorders (about 37 KB each). They must go with
//! the resource: if they did not, the second round would add as much memory as the first.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use futures::{StreamExt, TryStreamExt, stream};
use kube::{
    Api, Client,
    api::{DeleteParams, ListParams},
};
use serde_json::json;
use tokio::time::Instant;

use super::report::{ProcessStats, process_stats};
use crate::{
    demo::{
        DriftKind,
        drift::Cluster,
        install,
        programs::{ProgramKind, Programs},
        report::counter,
    },
    manifests,
    operator::crd::StatefulCluster,
};

/// Namespace of the churned resources, apart from the fleet.
pub const CHURN_NAMESPACE: &str = "bench-churn";
/// Field manager of the churned resources' creation.
const CREATOR: &str = "kube-sentinel-bench-churn";
/// Writes in flight at once.
const CONCURRENCY: usize = 16;
/// Rounds of create, drift, delete.
const ROUNDS: usize = 2;

/// The operator's memory after each round.
#[derive(Debug, serde::Serialize)]
pub(crate) struct ChurnResult {
    /// Resources created, drifted and deleted per round.
    pub resources: usize,
    /// The operator before the first round.
    pub before: ProcessStats,
    /// Latency recorders the operator held before the first round (the fleet's).
    pub recorders_before: f64,
    /// One entry per round.
    pub rounds: Vec<ChurnRound>,
}

/// One round of the churn scenario.
#[derive(Debug, serde::Serialize)]
pub(crate) struct ChurnRound {
    /// Seconds until every resource was reconciled once.
    pub created_s: f64,
    /// Seconds until every drift was acknowledged.
    pub drifted_s: f64,
    /// Seconds until every resource was gone.
    pub deleted_s: f64,
    /// Latency recorders the operator held once every resource had reverted.
    pub recorders_drifted: f64,
    /// Latency recorders the operator held after the deletions.
    pub recorders_deleted: f64,
    /// The operator after the round.
    pub operator: ProcessStats,
}

/// [`ROUNDS`] rounds: `count` StatefulClusters (one member each) created, each drifted once
/// (a label on its Service) and reverted, all deleted; the operator's memory after each.
pub(crate) async fn churn(
    admin: &Client,
    count: usize,
    programs: &mut Programs,
) -> Result<ChurnResult> {
    let operator = programs
        .iter()
        .find(|p| p.kind() == ProgramKind::Operator)
        .context("the operator is not running")?;
    let (pid, port) = (
        operator.pid().context("the operator has no pid")?,
        operator.port(),
    );
    let stats = || process_stats(pid).context("reading the operator's /proc");
    let namespace =
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": CHURN_NAMESPACE}});
    manifests::apply(admin, &namespace.to_string(), CREATOR, CHURN_NAMESPACE)
        .await
        .context("creating the churn namespace")?;
    let crs: Api<StatefulCluster> = Api::namespaced(admin.clone(), CHURN_NAMESPACE);
    let before = stats()?;
    let recorders_before = recorders(port).await;
    let mut rounds = Vec::with_capacity(ROUNDS);
    for round in 0..ROUNDS {
        let started = Instant::now();
        let names: Vec<String> = (0..count)
            .map(|i| format!("churn-{round}-{i:04}"))
            .collect();
        create(admin, &names).await?;
        let timeout = Duration::from_secs(120) + Duration::from_millis(200) * count as u32;
        wait_count(&crs, reconciled, count, timeout, "reconciled").await?;
        let created_s = started.elapsed().as_secs_f64();
        drift(admin, &names).await?;
        wait_count(&crs, acknowledged, count, timeout, "drift acknowledged").await?;
        let drifted_s = started.elapsed().as_secs_f64();
        let recorders_drifted = recorders(port).await;
        crs.delete_collection(&DeleteParams::default(), &ListParams::default())
            .await
            .context("deleting the churned resources")?;
        wait_count(&crs, |_| true, 0, timeout, "deleted").await?;
        let deleted_s = started.elapsed().as_secs_f64();
        // The operator sees the deletions through its watch, a moment after the API server.
        tokio::time::sleep(Duration::from_secs(5)).await;
        rounds.push(ChurnRound {
            created_s,
            drifted_s,
            deleted_s,
            recorders_drifted,
            recorders_deleted: recorders(port).await,
            operator: stats()?,
        });
        programs.check_running()?;
    }
    Ok(ChurnResult {
        resources: count,
        before,
        recorders_before,
        rounds,
    })
}

async fn recorders(port: u16) -> f64 {
    counter(port, "kube_sentinel_operator_latency_recorders", "")
        .await
        .unwrap_or(f64::NAN)
}

/// Creates one-member StatefulClusters named `names` from the sample.
async fn create(admin: &Client, names: &[String]) -> Result<()> {
    let sample = manifests::parse(install::SAMPLE)?
        .into_iter()
        .next()
        .context("the sample has a document")?;
    stream::iter(names)
        .map(|name| {
            let mut cr = sample.clone();
            cr["metadata"]["name"] = name.clone().into();
            cr["spec"]["replicas"] = 1.into();
            async move {
                manifests::apply(admin, &cr.to_string(), CREATOR, CHURN_NAMESPACE)
                    .await
                    .with_context(|| format!("creating StatefulCluster {name}"))
            }
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect::<Vec<_>>()
        .await?;
    Ok(())
}

/// Drifts every resource once: a label on its Service, as `kubectl label` would. A Service
/// not there yet (its resource reconciled with an error, retried) is waited for.
async fn drift(admin: &Client, names: &[String]) -> Result<()> {
    stream::iter(names)
        .map(|name| async move {
            let cluster = Cluster::new(admin, CHURN_NAMESPACE, name);
            let deadline = Instant::now() + Duration::from_secs(120);
            loop {
                match cluster.drift(DriftKind::Label).await {
                    Ok(()) => return Ok(()),
                    Err(e) if is_not_found(&e) && Instant::now() < deadline => {
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                    Err(e) => return Err(e.context(format!("drifting StatefulCluster {name}"))),
                }
            }
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect::<Vec<_>>()
        .await?;
    Ok(())
}

fn is_not_found(error: &anyhow::Error) -> bool {
    matches!(
        error.downcast_ref::<kube::Error>(),
        Some(kube::Error::Api(status)) if status.code == 404
    )
}

/// The operator's full reconcile has seen this generation.
fn reconciled(cr: &StatefulCluster) -> bool {
    cr.status.as_ref().is_some_and(|s| {
        s.observed_generation.is_some() && s.observed_generation == cr.metadata.generation
    })
}

/// The resource's trigger has been acknowledged.
fn acknowledged(cr: &StatefulCluster) -> bool {
    let sentinel = cr.status.as_ref().and_then(|s| s.sentinel.as_ref());
    sentinel.is_some_and(|s| {
        s.trigger.trigger_id.is_some() && s.trigger.trigger_id == s.last_handled_trigger_id
    })
}

/// Waits until exactly `want` resources pass `test` and no others exist.
async fn wait_count(
    crs: &Api<StatefulCluster>,
    test: fn(&StatefulCluster) -> bool,
    want: usize,
    timeout: Duration,
    what: &str,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let items = crs.list(&ListParams::default()).await?.items;
        let passing = items.iter().filter(|cr| test(cr)).count();
        if passing == want && items.len() == want {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "{passing} of {} churned resources {what} within {timeout:?} ({want} wanted)",
                items.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
