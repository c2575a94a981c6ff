//! The soak scenario: the steady drift load over the fleet for `--duration` while
//! StatefulClusters are created, drifted once and deleted throughout, the programs sampled
//! periodically. Each per-resource state (the sentinel's open bursts, the operator's latency
//! recorders and queue entries) must go with its resource, and so must the tasks and memory
//! it used: the curves stay flat, whatever the number of resources deleted.

use std::{collections::VecDeque, convert::Infallible, time::Duration};

use anyhow::{Context, Result, bail};
use kube::{
    Api, Client,
    api::{DeleteParams, ListParams},
};
use serde::Serialize;
use serde_json::json;
use tokio::time::{Instant, MissedTickBehavior};

use super::{
    fleet::Fleet,
    report::process_stats,
    steady::{self, SteadyResult},
};
use crate::{
    demo::{
        DriftKind,
        drift::Cluster,
        install,
        programs::{ProgramKind, Programs},
    },
    manifests,
    operator::crd::StatefulCluster,
    testenv::http_get,
};

/// Namespace of the churned resources, apart from the fleet.
pub const SOAK_NAMESPACE: &str = "bench-soak";
/// Field manager of the churned resources' creation.
const CREATOR: &str = "kube-sentinel-bench-soak";
/// Churned resources alive at once: each lives this many churn ticks, drifted half-way.
const LIVE: usize = 10;
/// Longest wait for the programs to drain (no open burst, empty queue) after the load.
const DRAIN: Duration = Duration::from_secs(120);

/// Where a series is read.
#[derive(Clone, Copy)]
enum Source {
    /// VmRSS from `/proc`, MiB.
    Rss,
    /// The sum of a metric's samples on the program's `/metrics`.
    Metric(&'static str),
}

/// One sampled series: its name, the program it is read from, where.
struct Series {
    name: &'static str,
    program: ProgramKind,
    source: Source,
}

/// Every series, in the order of [`Sample::values`].
const SERIES: [Series; 7] = [
    series("sentinel_rss_mib", ProgramKind::Sentinel, Source::Rss),
    series("operator_rss_mib", ProgramKind::Operator, Source::Rss),
    series(
        "sentinel_alive_tasks",
        ProgramKind::Sentinel,
        Source::Metric("tokio_alive_tasks"),
    ),
    series(
        "operator_alive_tasks",
        ProgramKind::Operator,
        Source::Metric("tokio_alive_tasks"),
    ),
    series(
        "sentinel_pending_keys",
        ProgramKind::Sentinel,
        Source::Metric("kube_sentinel_sentinel_pending_keys"),
    ),
    series(
        "operator_latency_recorders",
        ProgramKind::Operator,
        Source::Metric("kube_sentinel_operator_latency_recorders"),
    ),
    series(
        "operator_queue_depth",
        ProgramKind::Operator,
        Source::Metric("workqueue_depth"),
    ),
];

const fn series(name: &'static str, program: ProgramKind, source: Source) -> Series {
    Series {
        name,
        program,
        source,
    }
}

/// The soak's load: the steady drift and the churn beside it.
pub(crate) struct SoakLoad<'a> {
    /// The steady drift over the fleet; its duration is the soak's.
    pub steady: steady::Load<'a>,
    /// StatefulClusters created (and, once [`LIVE`] are alive, deleted) per second.
    pub churn_rate: f64,
    /// How often the programs are sampled.
    pub sample_every: Duration,
}

/// What the soak measured.
#[derive(Serialize)]
pub(crate) struct SoakResult {
    /// The steady drift over the fleet meanwhile.
    #[serde(skip)]
    pub drift: SteadyResult,
    /// The churn's counts.
    pub churn: ChurnCounts,
    /// Samples before this are warm-up, left out of the slopes.
    pub warmup_s: f64,
    /// When the load ended (samples after it are the drain), seconds from the start.
    pub load_s: f64,
    /// Every series' figures, in [`SERIES`] order.
    pub series: Vec<SeriesSummary>,
    /// Every sample, in time order.
    pub samples: Vec<Sample>,
}

/// The churn beside the drift.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub(crate) struct ChurnCounts {
    /// StatefulClusters created.
    pub created: u64,
    /// Of them, deleted (all, once the soak ended).
    pub deleted: u64,
    /// Drifts of churned resources (a label on their Service).
    pub drifted: u64,
    /// Creations, drifts and deletions the API server refused (a drift may find its Service
    /// not created yet); each is skipped, not retried.
    pub errors: u64,
}

/// The programs at one moment: one value per series, `None` if unreadable.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Sample {
    /// Seconds since the soak started.
    pub at_s: f64,
    /// In [`SERIES`] order.
    pub values: Vec<Option<f64>>,
}

/// One series' figures.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct SeriesSummary {
    pub name: &'static str,
    /// The first sample.
    pub start: Option<f64>,
    /// The first sample after warm-up.
    pub warm: Option<f64>,
    /// The last sample, after the drain.
    pub end: Option<f64>,
    /// The highest sample.
    pub peak: Option<f64>,
    /// Least-squares growth per hour over the samples between warm-up and the load's end.
    pub slope_per_hour: Option<f64>,
    /// (end − warm) per churned resource deleted.
    pub per_deleted: Option<f64>,
}

impl SoakResult {
    /// Series names with each sample's values, for the plot.
    pub(crate) fn curves(&self) -> Vec<(&'static str, Vec<(f64, f64)>)> {
        SERIES
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let points = self.samples.iter().filter_map(|p| {
                    let value = p.values.get(i).copied().flatten()?;
                    Some((p.at_s, value))
                });
                (s.name, points.collect())
            })
            .collect()
    }
}

/// Runs the soak on `fleet` with `load`, the programs of `programs` sampled.
pub(crate) async fn run(
    admin: &Client,
    fleet: &Fleet,
    load: SoakLoad<'_>,
    programs: &mut Programs,
) -> Result<SoakResult> {
    let probes = Probes::of(programs)?;
    fleet.without_fight_backoff().await?;
    let namespace =
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": SOAK_NAMESPACE}});
    manifests::apply(admin, &namespace.to_string(), CREATOR, SOAK_NAMESPACE)
        .await
        .context("creating the soak namespace")?;
    let duration = load.steady.duration;
    let warmup = (duration / 10).clamp(Duration::from_secs(30), Duration::from_secs(300));
    let started = Instant::now();
    let mut samples = Vec::new();
    let churning = churn(admin, started + duration, load.churn_rate);
    let drifting = steady::run(admin, fleet, load.steady);
    let sampling = sample_forever(&probes, started, load.sample_every, &mut samples);
    // The sampler runs beside the load in this task, so its reads never hold the load up
    // for longer than one HTTP round trip.
    let (drift, churned) = tokio::select! {
        both = futures::future::join(drifting, churning) => both,
        never = sampling => match never {},
    };
    let load_s = started.elapsed().as_secs_f64();
    let churn = churned?;
    drain(&probes).await;
    samples.push(probes.sample(started).await);
    programs.check_running()?;
    let series = summarize(&samples, warmup.as_secs_f64(), load_s, churn.deleted);
    Ok(SoakResult {
        drift,
        churn,
        warmup_s: warmup.as_secs_f64(),
        load_s,
        series,
        samples,
    })
}

/// The programs' pids and metrics ports.
struct Probes(Vec<(ProgramKind, Option<u32>, u16)>);

impl Probes {
    fn of(programs: &Programs) -> Result<Self> {
        let probes: Vec<_> = programs
            .iter()
            .map(|p| (p.kind(), p.pid(), p.port()))
            .collect();
        for kind in [ProgramKind::Sentinel, ProgramKind::Operator] {
            if !probes.iter().any(|(k, ..)| *k == kind) {
                bail!("the soak samples both programs, and the {kind} is not running");
            }
        }
        Ok(Self(probes))
    }

    /// Every series now; `/metrics` is read once per program.
    async fn sample(&self, started: Instant) -> Sample {
        let at_s = started.elapsed().as_secs_f64();
        let mut bodies = Vec::with_capacity(self.0.len());
        for &(kind, _, port) in &self.0 {
            let body = http_get(port, "/metrics").await.and_then(|r| r.ok_body());
            bodies.push((kind, body.ok()));
        }
        let values = SERIES
            .iter()
            .map(|s| match s.source {
                Source::Rss => {
                    let pid = self.0.iter().find(|(k, ..)| *k == s.program)?.1?;
                    Some(process_stats(pid)?.rss_mib)
                }
                Source::Metric(name) => {
                    let body = bodies.iter().find(|(k, _)| *k == s.program)?.1.as_ref()?;
                    metric_sum(body, name)
                }
            })
            .collect();
        Sample { at_s, values }
    }
}

/// Samples every `every` into `samples` until dropped.
async fn sample_forever(
    probes: &Probes,
    started: Instant,
    every: Duration,
    samples: &mut Vec<Sample>,
) -> Infallible {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        samples.push(probes.sample(started).await);
    }
}

/// Waits (up to [`DRAIN`]) until the sentinel has no open burst and the operator's queue is
/// empty: the state at the end is the state after the load, not inside its last window.
async fn drain(probes: &Probes) {
    let deadline = Instant::now() + DRAIN;
    let idle = |name| SERIES.iter().position(|s| s.name == name);
    let (pending, depth) = (idle("sentinel_pending_keys"), idle("operator_queue_depth"));
    while Instant::now() < deadline {
        let now = probes.sample(Instant::now()).await;
        let zero = |i: Option<usize>| i.and_then(|i| now.values[i]) == Some(0.0);
        if zero(pending) && zero(depth) {
            return;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// The sum of metric `name`'s samples (every label set) in a text exposition.
fn metric_sum(body: &str, name: &str) -> Option<f64> {
    let mut found = None;
    for line in body.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        if !(rest.starts_with(' ') || rest.starts_with('{')) {
            continue;
        }
        if let Some(value) = rest.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) {
            found = Some(found.unwrap_or(0.0) + value);
        }
    }
    found
}

/// Creates a StatefulCluster every `1/rate` seconds until `end`, drifts each once half-way
/// through its life, deletes the oldest once [`LIVE`] are alive; then deletes the rest and
/// waits until they are gone.
async fn churn(admin: &Client, end: Instant, rate: f64) -> Result<ChurnCounts> {
    let crs: Api<StatefulCluster> = Api::namespaced(admin.clone(), SOAK_NAMESPACE);
    let sample = manifests::parse(install::SAMPLE)?
        .into_iter()
        .next()
        .context("the sample has a document")?;
    let mut counts = ChurnCounts::default();
    let mut live: VecDeque<String> = VecDeque::with_capacity(LIVE + 1);
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    while tick.tick().await < end {
        let name = format!("soak-{:06}", counts.created);
        let mut cr = sample.clone();
        cr["metadata"]["name"] = name.clone().into();
        cr["spec"]["replicas"] = 1.into();
        match manifests::apply(admin, &cr.to_string(), CREATOR, SOAK_NAMESPACE).await {
            Ok(_) => {
                counts.created += 1;
                live.push_back(name);
            }
            Err(e) => note(&mut counts, "create", &e),
        }
        if let Some(half_way) = live.len().checked_sub(LIVE / 2 + 1).map(|i| &live[i]) {
            match Cluster::new(admin, SOAK_NAMESPACE, half_way)
                .drift(DriftKind::Label)
                .await
            {
                Ok(()) => counts.drifted += 1,
                Err(e) => note(&mut counts, "drift", &e),
            }
        }
        if live.len() > LIVE
            && let Some(oldest) = live.pop_front()
        {
            match crs.delete(&oldest, &DeleteParams::default()).await {
                Ok(_) => counts.deleted += 1,
                Err(e) => note(&mut counts, "delete", &e.into()),
            }
        }
    }
    crs.delete_collection(&DeleteParams::default(), &ListParams::default())
        .await
        .context("deleting the churned resources")?;
    counts.deleted += live.len() as u64;
    wait_gone(&crs).await?;
    Ok(counts)
}

fn note(counts: &mut ChurnCounts, what: &str, error: &anyhow::Error) {
    tracing::warn!(error = %format!("{error:#}"), "bench soak: a churn {what} failed");
    counts.errors += 1;
}

/// Waits until no churned resource is left (their finalizers run first).
async fn wait_gone(crs: &Api<StatefulCluster>) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let left = crs.list(&ListParams::default()).await?.items.len();
        if left == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{left} churned StatefulClusters not gone within 180s");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Every series' figures: the slope over the samples in `[warmup_s, load_s]`.
fn summarize(samples: &[Sample], warmup_s: f64, load_s: f64, deleted: u64) -> Vec<SeriesSummary> {
    SERIES
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let points: Vec<(f64, f64)> = samples
                .iter()
                .filter_map(|p| Some((p.at_s, p.values.get(i).copied().flatten()?)))
                .collect();
            let warm = points.iter().find(|(t, _)| *t >= warmup_s).map(|p| p.1);
            let end = points.last().map(|p| p.1);
            let steady: Vec<(f64, f64)> = points
                .iter()
                .copied()
                .filter(|(t, _)| (warmup_s..=load_s).contains(t))
                .collect();
            SeriesSummary {
                name: s.name,
                start: points.first().map(|p| p.1),
                warm,
                end,
                peak: points.iter().map(|p| p.1).reduce(f64::max),
                slope_per_hour: least_squares_slope(&steady).map(|per_s| per_s * 3600.0),
                per_deleted: match (warm, end) {
                    (Some(warm), Some(end)) if deleted > 0 => Some((end - warm) / deleted as f64),
                    _ => None,
                },
            }
        })
        .collect()
}

/// The slope of the least-squares line through `points`, if they span any time.
fn least_squares_slope(points: &[(f64, f64)]) -> Option<f64> {
    let n = points.len() as f64;
    if points.len() < 2 {
        return None;
    }
    let mean_t = points.iter().map(|p| p.0).sum::<f64>() / n;
    let mean_v = points.iter().map(|p| p.1).sum::<f64>() / n;
    let (mut covariance, mut variance) = (0.0, 0.0);
    for (t, v) in points {
        covariance += (t - mean_t) * (v - mean_v);
        variance += (t - mean_t) * (t - mean_t);
    }
    (variance > 0.0).then(|| covariance / variance)
}

/// The soak's lines of the table: each series' figures.
pub(crate) fn print(variant: &str, soak: &SoakResult) {
    let c = &soak.churn;
    println!(
        "{variant:<12} {:<9} churn: {} created, {} deleted, {} drifted, {} refused; warm-up {:.0} s, load {:.0} s",
        "soak", c.created, c.deleted, c.drifted, c.errors, soak.warmup_s, soak.load_s
    );
    let fmt = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.1}"));
    for s in &soak.series {
        println!(
            "{variant:<12} {:<9} {:<27} start {:>7} warm {:>7} end {:>7} peak {:>7} slope/h {:>8} per deleted {}",
            "soak",
            s.name,
            fmt(s.start),
            fmt(s.warm),
            fmt(s.end),
            fmt(s.peak),
            fmt(s.slope_per_hour),
            s.per_deleted.map_or("-".into(), |v| format!("{v:.4}")),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_s_slope_is_found_and_a_flat_one_is_zero() {
        let rising: Vec<(f64, f64)> = (0..10).map(|t| (t as f64, 2.0 * t as f64 + 5.0)).collect();
        let slope = least_squares_slope(&rising).expect("a slope");
        assert!((slope - 2.0).abs() < 1e-9, "{slope}");
        assert_eq!(least_squares_slope(&[(0.0, 3.0), (10.0, 3.0)]), Some(0.0));
        assert_eq!(least_squares_slope(&[(1.0, 3.0)]), None);
        assert_eq!(least_squares_slope(&[(1.0, 3.0), (1.0, 4.0)]), None);
    }

    #[test]
    fn a_metric_is_summed_over_its_label_sets_and_not_confused_with_a_longer_name() {
        let body = "# HELP workqueue_depth d\nworkqueue_depth{name=\"a\"} 2\n\
                    workqueue_depth{name=\"b\"} 3\nworkqueue_depth_total 9\ntokio_alive_tasks 41\n";
        assert_eq!(metric_sum(body, "workqueue_depth"), Some(5.0));
        assert_eq!(metric_sum(body, "tokio_alive_tasks"), Some(41.0));
        assert_eq!(metric_sum(body, "absent"), None);
    }

    #[test]
    fn the_slope_leaves_out_warm_up_and_drain() {
        // Growth in warm-up and a drop in the drain; flat in between.
        let samples: Vec<Sample> = [
            (0.0, 1.0),
            (10.0, 8.0),
            (20.0, 8.0),
            (30.0, 8.0),
            (40.0, 0.0),
        ]
        .into_iter()
        .map(|(at_s, v)| Sample {
            at_s,
            values: vec![Some(v); SERIES.len()],
        })
        .collect();
        let series = summarize(&samples, 10.0, 30.0, 4);
        let first = &series[0];
        assert_eq!(first.slope_per_hour, Some(0.0));
        assert_eq!(
            (first.start, first.warm, first.end),
            (Some(1.0), Some(8.0), Some(0.0))
        );
        assert_eq!(first.peak, Some(8.0));
        assert_eq!(first.per_deleted, Some(-2.0));
    }
}
