//! The steady scenario: drifts at a fixed rate over the fleet, each timed from the moment its
//! write returned until the generator's own watch shows the object back as it was.

use std::{
    collections::HashMap,
    pin::pin,
    time::{Duration, SystemTime},
};

use futures::{FutureExt, StreamExt, future::BoxFuture, stream::FuturesUnordered};
use kube::Client;
use rand::{Rng, SeedableRng, rngs::StdRng};
use tokio::time::{Instant, MissedTickBehavior};

use super::{
    breakdown::{self, Breakdown, Observed},
    fleet::{BENCH_NAMESPACE, Fleet},
    observe::{Objects, watch_fleet},
    progress::Progress,
    writes::ApiWrites,
};
use crate::{
    demo::{DriftKind, drift::Baseline},
    telemetry::LatencyRecorder,
};

/// The load of one steady run.
pub(crate) struct Load<'a> {
    /// Drifts per second over all resources.
    pub rate: f64,
    /// How long drifts are made.
    pub duration: Duration,
    /// Drawn at random for each drift.
    pub kinds: &'a [DriftKind],
    /// Seed of the draws.
    pub seed: u64,
    /// How long a drift may take to be reverted after the load ends before it counts as lost.
    pub grace: Duration,
    /// Whether to read the programs' timestamps after each revert (a sentinel runs).
    pub breakdown: bool,
    /// The resources drifted, by index into the fleet.
    pub targets: std::ops::Range<usize>,
    /// What the progress shows it as (`trailing steady`, ...).
    pub label: String,
}

/// What one steady run measured.
pub(crate) struct SteadyResult {
    /// Drift→revert, from the drift's write returning to the watch showing it undone.
    pub latency: LatencyRecorder,
    /// Drift→revert per kind of drift.
    pub by_kind: Vec<(DriftKind, LatencyRecorder)>,
    /// Drifts written.
    pub injected: u64,
    /// Drifts seen reverted.
    pub reverted: u64,
    /// Drifts not reverted within the grace after the load ended.
    pub lost: u64,
    /// Drift writes the API server refused.
    pub write_errors: u64,
    /// Ticks that found every resource still waiting for a revert.
    pub skipped: u64,
    /// Errors of the generator's own watches (each retried).
    pub watch_errors: u64,
    /// Where the time went, from the programs' timestamps (with a sentinel only).
    pub breakdown: Breakdown,
    /// What the programs wrote to the API server meanwhile.
    pub api_writes: ApiWrites,
    /// Every revert seen: when its drift was written and how long it took.
    pub reverts: Vec<Revert>,
    /// The drifts still pending when the run ended (not seen reverted): the resource's index,
    /// the kind, its object's state before the drift. A later read may find them reverted
    /// (a revert made while the generator's own watch was down is never seen by it).
    pub unconfirmed: Vec<(usize, DriftKind, Baseline)>,
}

/// One drift seen reverted.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Revert {
    /// When the drift's write returned.
    pub written: Instant,
    /// Drift→revert.
    pub latency: Duration,
}

impl SteadyResult {
    /// A result with these latencies and nothing else counted.
    pub(crate) fn with_latency(latency: LatencyRecorder) -> Self {
        Self {
            latency,
            injected: 0,
            reverted: 0,
            lost: 0,
            write_errors: 0,
            skipped: 0,
            watch_errors: 0,
            breakdown: Breakdown::new(),
            api_writes: ApiWrites::default(),
            by_kind: Vec::new(),
            reverts: Vec::new(),
            unconfirmed: Vec::new(),
        }
    }

    fn record_kind(&mut self, kind: DriftKind, latency: Duration) {
        match self.by_kind.iter().find(|(k, _)| *k == kind) {
            Some((_, recorder)) => recorder.record(latency),
            None => {
                let recorder = LatencyRecorder::new();
                recorder.record(latency);
                self.by_kind.push((kind, recorder));
            }
        }
    }
}

/// A drift not yet reverted.
struct Pending {
    kind: DriftKind,
    baseline: Baseline,
    /// When the drift's write returned, on both clocks.
    written: Option<(Instant, SystemTime)>,
    /// Whether the watch has shown the drifted state (an older event must not count as the
    /// revert).
    seen_drifted: bool,
}

type Write = BoxFuture<'static, (usize, anyhow::Result<(Instant, SystemTime)>)>;
type Lookup = BoxFuture<'static, Option<(serde_json::Value, Observed)>>;

/// Runs the steady scenario on `fleet` with `load`; `admin` watches.
pub(crate) async fn run(admin: &Client, fleet: &Fleet, load: Load<'_>) -> SteadyResult {
    let mut result = SteadyResult::with_latency(LatencyRecorder::new());
    let mut objects = Objects::default();
    let mut pending: HashMap<usize, Pending> = HashMap::new();
    let mut writes: FuturesUnordered<Write> = FuturesUnordered::new();
    let mut lookups: FuturesUnordered<Lookup> = FuturesUnordered::new();
    let statuses = breakdown::status_api(admin, BENCH_NAMESPACE);
    let mut rng = StdRng::seed_from_u64(load.seed);
    let mut watch = pin!(watch_fleet(admin, BENCH_NAMESPACE));
    let index: HashMap<&str, usize> = fleet
        .clusters()
        .iter()
        .enumerate()
        .map(|(i, c)| (c.name(), i))
        .collect();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / load.rate));
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let started = Instant::now();
    let end = started + load.duration;
    let give_up = end + load.grace;
    let mut progress = Progress::start(load.label.clone(), load.duration);
    loop {
        progress.update(result.injected, result.reverted, pending.len());
        let generating = Instant::now() < end;
        if !generating && pending.is_empty() && writes.is_empty() && lookups.is_empty() {
            break;
        }
        tokio::select! {
            Some(seen) = watch.next() => {
                let Some(object) = objects.update(seen) else {
                    result.watch_errors += 1;
                    continue;
                };
                if let Some(&i) = index.get(Objects::cluster_of(&object))
                    && let Some(kind) = pending.get(&i).map(|p| p.kind)
                    && let Some(observed) = check_revert(&objects, fleet, i, &mut pending, &mut result)
                    && load.breakdown
                    && kind.seen_by_sentinel()
                {
                    let name = fleet.clusters()[i].name().to_string();
                    let status = breakdown::handled_status(statuses.clone(), name);
                    lookups.push(status.map(move |s| Some((s?, observed))).boxed());
                }
            }
            _ = tick.tick(), if generating => {
                match draw(fleet, &objects, &pending, &mut rng, &load) {
                    Some((i, kind, baseline)) => {
                        pending.insert(i, Pending { kind, baseline, written: None, seen_drifted: false });
                        writes.push(write(fleet, i, kind));
                        result.injected += 1;
                    }
                    None => result.skipped += 1,
                }
            }
            Some((i, written)) = writes.next() => match written {
                Ok(at) => {
                    if let Some(p) = pending.get_mut(&i) {
                        p.written = Some(at);
                    }
                    // The revert may have been seen before the write's answer came.
                    let _ = check_revert(&objects, fleet, i, &mut pending, &mut result);
                }
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "bench: a drift write failed");
                    pending.remove(&i);
                    result.injected -= 1;
                    result.write_errors += 1;
                }
            },
            Some(looked_up) = lookups.next() => match looked_up {
                Some((status, observed)) => result.breakdown.record(&status, observed),
                None => result.breakdown.unmatched += 1,
            },
            () = tokio::time::sleep_until(give_up), if !generating => break,
        }
    }
    progress.finish();
    result.lost = pending.len() as u64;
    result.unconfirmed = pending
        .into_iter()
        .map(|(i, p)| (i, p.kind, p.baseline))
        .collect();
    result
}

/// A resource with no drift pending, a kind, and its object's state before the drift.
fn draw(
    fleet: &Fleet,
    objects: &Objects,
    pending: &HashMap<usize, Pending>,
    rng: &mut StdRng,
    load: &Load<'_>,
) -> Option<(usize, DriftKind, Baseline)> {
    let targets = load.targets.start..load.targets.end.min(fleet.clusters().len());
    if targets.is_empty() {
        return None;
    }
    // A few tries: with most resources busy, a tick is skipped rather than searched for long.
    (0..8).find_map(|_| {
        let i = rng.random_range(targets.clone());
        let kind = load.kinds[rng.random_range(0..load.kinds.len())];
        if pending.contains_key(&i) {
            return None;
        }
        let baseline = objects.state(fleet.clusters()[i].name(), kind)?;
        Some((i, kind, baseline))
    })
}

/// Drift `kind` on resource `i`; resolves with when the write returned.
fn write(fleet: &Fleet, i: usize, kind: DriftKind) -> Write {
    let cluster = fleet.clusters()[i].clone();
    async move {
        let written = cluster.drift(kind).await;
        (i, written.map(|()| (Instant::now(), SystemTime::now())))
    }
    .boxed()
}

/// Records the revert of resource `i`'s pending drift if its object is back; returns when
/// it was written and seen reverted.
fn check_revert(
    objects: &Objects,
    fleet: &Fleet,
    i: usize,
    pending: &mut HashMap<usize, Pending>,
    result: &mut SteadyResult,
) -> Option<Observed> {
    let p = pending.get_mut(&i)?;
    let now = objects.state(fleet.clusters()[i].name(), p.kind)?;
    if now != p.baseline {
        p.seen_drifted = true;
    }
    let undone = p.seen_drifted || matches!(p.baseline, Baseline::Uid(_));
    let (written, written_wall) = p.written?;
    if !(undone && p.baseline.restored_by(&now)) {
        return None;
    }
    let elapsed = written.elapsed();
    result.reverts.push(Revert {
        written,
        latency: elapsed,
    });
    result.latency.record(elapsed);
    result.record_kind(p.kind, elapsed);
    result.reverted += 1;
    pending.remove(&i);
    Some(Observed {
        written: written_wall,
        seen: SystemTime::now(),
    })
}
