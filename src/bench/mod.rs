//! `kube-sentinel bench`: drift→revert under synthetic drift load, ours beside baselines, on a
//! local control plane.
//!
//! 1. Starts the local control plane (or uses the cluster of `--kubeconfig`, see [`Target`])
//!    and installs the system as the demo does (the CRD,
//!    `deploy/operator` and `deploy/sentinel` without Deployments, and the operator's optional
//!    owned-watch RBAC for baseline (b)).
//! 2. Creates `--resources` StatefulClusters in namespace `bench`.
//! 3. For each variant (ours in each `--modes`, then each `--baselines`), starts fresh
//!    programs under their ServiceAccounts with the variant's flags, waits until the fleet is
//!    settled, runs the variant's scenarios, reads the programs' CPU time and peak RSS and the
//!    operator's own histogram, and stops them.
//! 4. Prints a table and writes `summary.json`, `.hgrm` files and SVG plots (`latency.svg`,
//!    `repeated.svg`) to `--out-dir`.
//!
//! Drift→revert is timed from outside: from the moment the load generator's write returned
//! until its own watch shows the object back as it was (steady), or its read-back does
//! (repeated, storm).

mod backlog;
mod breakdown;
mod churn;
pub(crate) mod fleet;
mod observe;
mod options;
mod plots;
mod progress;
mod report;
mod scale;
mod scenarios;
mod soak;
pub(crate) mod steady;
mod target;
mod writes;

use std::{path::Path, time::Duration};

use anyhow::{Context, Result, anyhow};
use kube::{Client, config::Kubeconfig};

pub use fleet::BENCH_NAMESPACE;
pub use options::{Baseline, BenchOptions, Scenario, Variant};
use report::VariantReport;
pub use target::Target;
use writes::ApiWrites;

use crate::{
    demo::{
        install,
        programs::{ProgramKind, Programs},
    },
    manifests,
    testenv::{PodReadiness, client_from_kubeconfig},
};

/// The operator's optional RBAC for `--watch-owned` (baseline (b)).
const WATCH_OWNED_RBAC: &str = include_str!("../../deploy/operator/rbac-watch-owned.yaml");
/// Longest wait for the fleet to settle after programs start.
const SETTLE: Duration = Duration::from_secs(180);

/// Runs the benchmark on `target` until done or until `shutdown` resolves, then stops
/// everything.
pub async fn run(
    target: Target,
    options: BenchOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    options.validate()?;
    let running = target.start().await?;
    let logs = tempfile::Builder::new()
        .prefix("kube-sentinel-bench-")
        .tempdir()
        .context("creating a directory for the programs' logs")?;
    let result = tokio::select! {
        result = bench(&running, &options, logs.path()) => result,
        () = shutdown => Err(anyhow!("interrupted")),
    };
    running.stop().await;
    match result {
        Ok(()) => Ok(()),
        Err(e) => {
            let kept = logs.keep();
            Err(e.context(format!("the programs' logs are kept in {}", kept.display())))
        }
    }
}

/// Install, fleet, every variant, the figures.
async fn bench(target: &target::Running, options: &BenchOptions, logs: &Path) -> Result<()> {
    let admin = client_from_kubeconfig(target.admin.clone()).await?;
    install::install_system(&admin).await?;
    manifests::apply(&admin, WATCH_OWNED_RBAC, "kube-sentinel-bench", "default")
        .await
        .context("applying deploy/operator/rbac-watch-owned.yaml")?;
    // A cluster without nodes (the local control plane) runs no pod: they are marked ready
    // by hand.
    let _kubelet = target::has_no_nodes(&admin)
        .await?
        .then(|| PodReadiness::start(admin.clone(), BENCH_NAMESPACE));
    let fleet = fleet::Fleet::create(&admin, options.resources).await?;
    println!(
        "created {} StatefulClusters in namespace {BENCH_NAMESPACE}",
        options.resources
    );
    let mut reports = Vec::new();
    for variant in options.variants() {
        let mut programs = Programs::default();
        let at = Where {
            admin: &admin,
            admin_kubeconfig: &target.admin,
            fleet: &fleet,
        };
        let measured = measure(at, options, variant, logs, &mut programs).await;
        programs.stop().await;
        reports.push(measured.with_context(|| format!("variant {variant}"))?);
    }
    report::print_table(&reports);
    let summary = report::summary(options, &reports);
    report::write(
        &options.out_dir,
        options.summary_json.as_deref(),
        &summary,
        &reports,
    )?;
    plots::write(&options.out_dir, &reports)?;
    println!("figures and plots written to {}", options.out_dir.display());
    Ok(())
}

/// One variant: its programs, its scenarios, its programs' costs.
async fn measure(
    at: Where<'_>,
    options: &BenchOptions,
    variant: Variant,
    logs: &Path,
    programs: &mut Programs,
) -> Result<VariantReport> {
    let variant_logs = logs.join(variant.to_string());
    std::fs::create_dir_all(&variant_logs).context("creating the variant's log directory")?;
    start_programs(
        at.admin_kubeconfig,
        options,
        variant,
        &variant_logs,
        programs,
    )
    .await?;
    at.fleet.wait_settled(programs, SETTLE).await?;
    println!("{variant}: programs ready, fleet settled");
    let mut report = VariantReport::new(variant);
    for scenario in options.scenarios_of(variant) {
        run_scenario(&at, options, scenario, &variant_logs, programs, &mut report).await?;
        at.fleet.wait_settled(programs, SETTLE).await?;
    }
    report.programs = programs
        .iter()
        .filter_map(|p| Some((p.kind().to_string(), report::process_stats(p.pid()?)?)))
        .collect();
    if let Some(port) = programs.port(ProgramKind::Operator) {
        report.operator_latency = crate::testenv::http_get(port, "/debug/latency")
            .await
            .ok()
            .and_then(|r| r.ok_body().ok());
    }
    Ok(report)
}

/// The operator, and the sentinel where the variant has one, with the variant's flags.
async fn start_programs(
    admin: &Kubeconfig,
    options: &BenchOptions,
    variant: Variant,
    logs: &Path,
    programs: &mut Programs,
) -> Result<()> {
    let operator = options.operator_flags(variant);
    programs
        .spawn(admin, logs, ProgramKind::Operator, &operator)
        .await?;
    if variant.has_sentinel() {
        let sentinel = options.sentinel_flags(variant);
        programs
            .spawn(admin, logs, ProgramKind::Sentinel, &sentinel)
            .await?;
    }
    for program in programs.iter_mut() {
        program.wait_ready().await?;
    }
    Ok(())
}

/// What a variant runs against.
struct Where<'a> {
    admin: &'a Client,
    /// The same credentials as a kubeconfig, to ask for the programs' tokens.
    admin_kubeconfig: &'a Kubeconfig,
    fleet: &'a fleet::Fleet,
}

async fn run_scenario(
    at: &Where<'_>,
    options: &BenchOptions,
    scenario: Scenario,
    logs: &Path,
    programs: &mut Programs,
    report: &mut VariantReport,
) -> Result<()> {
    let Where { admin, fleet, .. } = *at;
    let variant = report.variant;
    println!("{variant}: {scenario:?} …");
    let first = fleet.clusters().first().context("the fleet is empty")?;
    match scenario {
        Scenario::Steady => {
            let load = steady_load(options, variant, fleet);
            let before = ApiWrites::read(programs).await;
            let mut steady = steady::run(admin, fleet, load).await;
            steady.api_writes = ApiWrites::read(programs).await.since(before);
            report.steady = Some(steady);
        }
        Scenario::Backlog => {
            let load = steady_load(options, variant, fleet);
            let operator = programs.port(ProgramKind::Operator);
            let before = ApiWrites::read(programs).await;
            let mut backlog =
                backlog::run(admin, fleet, load, options.backlog_rate, operator).await;
            backlog.drift.api_writes = ApiWrites::read(programs).await.since(before);
            report.backlog = Some(backlog);
        }
        Scenario::Repeated => {
            report.repeated = Some(scenarios::repeated(first, options.repeats, programs).await?);
        }
        Scenario::Storm => {
            let storm = scenarios::storm(
                first,
                admin,
                options.storm_patches,
                options.debounce,
                programs,
            );
            report.storm = Some(storm.await?);
        }
        Scenario::Churn => {
            let churned = churn::churn(admin, options.churn_resources, programs);
            report.churn = Some(churned.await?);
        }
        Scenario::Scale => {
            let sentinel_flags = options.sentinel_flags(variant);
            let launch = scale::SentinelLaunch {
                admin: at.admin_kubeconfig,
                logs,
                flags: &sentinel_flags,
            };
            let run = report.variant.to_string();
            let scaled = scale::scale(admin, &options.scale_objects, &run, launch, programs);
            report.scale = Some(scaled.await?);
        }
        Scenario::Soak => {
            let mut steady = steady_load(options, variant, fleet);
            steady.label = format!("{variant} soak");
            let load = soak::SoakLoad {
                steady,
                churn_rate: options.soak_churn_rate,
                sample_every: options.soak_sample,
            };
            let before = ApiWrites::read(programs).await;
            let mut soaked = soak::run(admin, fleet, load, programs).await?;
            soaked.drift.api_writes = ApiWrites::read(programs).await.since(before);
            report.soak = Some(soaked);
        }
    }
    Ok(())
}

/// The steady load `options` asks for, over the whole fleet.
fn steady_load<'a>(
    options: &'a BenchOptions,
    variant: Variant,
    fleet: &fleet::Fleet,
) -> steady::Load<'a> {
    steady::Load {
        rate: options.rate,
        duration: options.duration,
        kinds: &options.kinds,
        seed: options.seed,
        grace: grace(options, variant),
        breakdown: variant.has_sentinel(),
        targets: 0..fleet.clusters().len(),
        label: format!("{variant} steady"),
    }
}

/// How long a drift may wait for its revert after the load ends: a resync baseline waits for
/// its period, the others for a window and a minute.
fn grace(options: &BenchOptions, variant: Variant) -> Duration {
    let usual = options.debounce + Duration::from_secs(60);
    match variant {
        Variant::Resync => usual.max(options.resync * 2),
        _ => usual,
    }
}
