//! The scale scenario: the sentinel watching more and more labelled objects; its memory, CPU
//! per event and time to sync at each level.
//!
//! The objects are ConfigMaps written under the operator's field-manager name, so they are
//! what the sentinel records for every object the operator manages, and none is drift. At each
//! level the sentinel is also restarted, to time its first list and read its memory after one:
//! the figure a pod of that size must fit.

use std::{path::Path, time::Duration};

use anyhow::{Context, Result, bail};
use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::{
    Api, Client,
    api::{DeleteParams, PostParams},
    config::Kubeconfig,
};
use serde_json::json;
use tokio::time::Instant;

use super::report::{ProcessStats, process_stats};
use crate::{
    contract::{INSTANCE_LABEL, MANAGED_BY_LABEL, MANAGED_BY_VALUE, OPERATOR_FIELD_MANAGER},
    demo::{
        programs::{ProgramKind, Programs},
        report::counter,
    },
    manifests,
};

/// Namespace of the scale scenario's objects (one per run, with the variant's name after it:
/// the namespace is deleted at the end, which the API server finishes in the background).
pub const SCALE_NAMESPACE: &str = "bench-scale";
/// Creations in flight at once.
const CONCURRENCY: usize = 32;
/// Objects projected to, from the measured bytes per object.
const PROJECTED_OBJECTS: f64 = 1_000_000.0;
const MIB: f64 = 1024.0 * 1024.0;

/// The sentinel's costs at each level.
#[derive(Debug, serde::Serialize)]
pub(crate) struct ScaleResult {
    /// The sentinel after its first list with none of the objects.
    pub idle: ProcessStats,
    /// One entry per level.
    pub levels: Vec<ScaleLevel>,
    /// Idle plus the largest level's bytes per object times a million, MiB.
    pub projected_1m_mib: Option<f64>,
}

/// The sentinel watching `objects` labelled objects.
#[derive(Debug, serde::Serialize)]
pub(crate) struct ScaleLevel {
    /// Labelled objects the sentinel watches.
    pub objects: usize,
    /// CPU seconds per 1,000 watch events while the objects were created.
    pub cpu_s_per_1k_events: f64,
    /// The running sentinel once it has seen them all.
    pub live: ProcessStats,
    /// Seconds from a fresh sentinel's start to ready (its first lists done).
    pub sync_s: f64,
    /// The fresh sentinel after its first list.
    pub synced: ProcessStats,
    /// (synced RSS - idle RSS) / objects.
    pub bytes_per_object: f64,
}

/// Where the sentinel runs from, to restart it.
pub(crate) struct SentinelLaunch<'a> {
    /// The admin kubeconfig, to ask for the sentinel's token.
    pub admin: &'a Kubeconfig,
    /// Its logs' directory.
    pub logs: &'a Path,
    /// Its flags.
    pub flags: &'a [String],
}

/// Grows the labelled objects to each of `levels` (ascending), measuring the sentinel at
/// each; deletes them at the end. `run` names the run's namespace.
pub(crate) async fn scale(
    admin: &Client,
    levels: &[usize],
    run: &str,
    launch: SentinelLaunch<'_>,
    programs: &mut Programs,
) -> Result<ScaleResult> {
    let name = format!("{SCALE_NAMESPACE}-{run}");
    let namespace = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
    manifests::apply(admin, &namespace.to_string(), OPERATOR_FIELD_MANAGER, &name)
        .await
        .context("creating the scale namespace")?;
    let config_maps: Api<ConfigMap> = Api::namespaced(admin.clone(), &name);
    let (idle, _) = restart_sentinel(&launch, programs).await?;
    let mut measured = Vec::with_capacity(levels.len());
    let mut created = 0;
    for &objects in levels {
        let port = sentinel(programs)?.1;
        let (cpu_before, events_before) = (sentinel_stats(programs)?, events_seen(port).await);
        create(&config_maps, created..objects).await?;
        let new = objects - created;
        created = objects;
        let events = wait_events(port, events_before, new).await?;
        let live = sentinel_stats(programs)?;
        let per_1k = (live.cpu_seconds - cpu_before.cpu_seconds) / (events / 1000.0);
        let (synced, sync) = restart_sentinel(&launch, programs).await?;
        measured.push(ScaleLevel {
            objects,
            cpu_s_per_1k_events: per_1k,
            live,
            sync_s: sync.as_secs_f64(),
            synced,
            bytes_per_object: (synced.rss_mib - idle.rss_mib) * MIB / objects as f64,
        });
        println!(
            "scale: {objects} objects: sentinel RSS {:.1} MiB (anon {:.1}, file {:.1}) after a fresh sync in {:.1} s ({:.1} MiB idle, anon {:.1}), {per_1k:.3} CPU s per 1k events",
            synced.rss_mib,
            synced.rss_anon_mib,
            synced.rss_file_mib,
            sync.as_secs_f64(),
            idle.rss_mib,
            idle.rss_anon_mib
        );
    }
    // One call that returns at once; a collection delete of 50,000 objects outlasts a request
    // timeout.
    Api::<Namespace>::all(admin.clone())
        .delete(&name, &DeleteParams::default())
        .await
        .context("deleting the scale scenario's namespace")?;
    let projected_1m_mib = measured
        .last()
        .map(|l| idle.rss_mib + l.bytes_per_object * PROJECTED_OBJECTS / MIB);
    Ok(ScaleResult {
        idle,
        levels: measured,
        projected_1m_mib,
    })
}

/// Restarts the sentinel; its stats once ready (and settled a moment) and its time to ready.
async fn restart_sentinel(
    launch: &SentinelLaunch<'_>,
    programs: &mut Programs,
) -> Result<(ProcessStats, Duration)> {
    let started = Instant::now();
    programs
        .restart(
            launch.admin,
            launch.logs,
            ProgramKind::Sentinel,
            launch.flags,
        )
        .await?;
    let sync = started.elapsed();
    // What the first list allocated and dropped settles back into the allocator first.
    tokio::time::sleep(Duration::from_secs(2)).await;
    Ok((sentinel_stats(programs)?, sync))
}

fn sentinel(programs: &Programs) -> Result<(u32, u16)> {
    let program = programs
        .iter()
        .find(|p| p.kind() == ProgramKind::Sentinel)
        .context("the sentinel is not running")?;
    Ok((
        program.pid().context("the sentinel has no pid")?,
        program.port(),
    ))
}

fn sentinel_stats(programs: &Programs) -> Result<ProcessStats> {
    process_stats(sentinel(programs)?.0).context("reading the sentinel's /proc")
}

async fn events_seen(port: u16) -> f64 {
    counter(
        port,
        "kube_sentinel_sentinel_events_seen_total",
        "kind=\"ConfigMap\"",
    )
    .await
    .unwrap_or(0.0)
}

/// Waits until the sentinel has seen `new` ConfigMap events more than `before`; how many it
/// has seen since.
async fn wait_events(port: u16, before: f64, new: usize) -> Result<f64> {
    let target = before + new as f64;
    let deadline =
        Instant::now() + Duration::from_secs(60) + Duration::from_millis(10) * new as u32;
    loop {
        let seen = events_seen(port).await;
        if seen >= target {
            return Ok(seen - before);
        }
        if Instant::now() > deadline {
            bail!("the sentinel saw {seen} ConfigMap events, not {target}, in time");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Creates ConfigMaps `scale-<index>` for `indices`, as the operator would label them.
async fn create(config_maps: &Api<ConfigMap>, indices: std::ops::Range<usize>) -> Result<()> {
    let params = PostParams {
        field_manager: Some(OPERATOR_FIELD_MANAGER.into()),
        ..Default::default()
    };
    stream::iter(indices)
        .map(|index| {
            let object = json!({
                "metadata": {
                    "name": format!("scale-{index:06}"),
                    "labels": {
                        MANAGED_BY_LABEL: MANAGED_BY_VALUE,
                        INSTANCE_LABEL: "scale-owner",
                    },
                },
                "data": {"mode": "steady"},
            });
            let params = &params;
            async move {
                let config_map: ConfigMap =
                    serde_json::from_value(object).context("a ConfigMap")?;
                config_maps
                    .create(params, &config_map)
                    .await
                    .with_context(|| format!("creating ConfigMap scale-{index:06}"))
            }
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect::<Vec<_>>()
        .await?;
    Ok(())
}
