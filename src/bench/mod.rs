//! `kube-sentinel bench`: drift→revert under synthetic drift load, ours beside baselines, on a
//! local control plane.
//!
//! 1. Starts the local control plane and installs the system as the demo does (the CRD,
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
mod fleet;
mod observe;
mod options;
mod plots;
mod progress;
mod report;
mod scale;
mod scenarios;
mod steady;

use std::{path::Path, time::Duration};

use anyhow::{Context, Result, anyhow};
use kube::Client;

pub use fleet::BENCH_NAMESPACE;
pub use options::{Baseline, BenchOptions, Scenario, Variant};
use report::VariantReport;

use crate::{
    demo::{
        install,
        programs::{ProgramKind, Programs},
    },
    manifests,
    testenv::{ControlPlane, ControlPlaneConfig, PodReadiness},
};

/// The operator's optional RBAC for `--watch-owned` (baseline (b)).
const WATCH_OWNED_RBAC: &str = include_str!("../../deploy/operator/rbac-watch-owned.yaml");
/// Longest wait for the fleet to settle after programs start.
const SETTLE: Duration = Duration::from_secs(180);

/// Runs the benchmark until done or until `shutdown` resolves, then stops everything.
pub async fn run(
    config: ControlPlaneConfig,
    options: BenchOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    options.validate()?;
    println!("starting the local control plane");
    let plane = ControlPlane::start(config).await?;
    let logs = tempfile::Builder::new()
        .prefix("kube-sentinel-bench-")
        .tempdir()
        .context("creating a directory for the programs' logs")?;
    let result = tokio::select! {
        result = bench(&plane, &options, logs.path()) => result,
        () = shutdown => Err(anyhow!("interrupted")),
    };
    plane.stop().await;
    match result {
        Ok(()) => Ok(()),
        Err(e) => {
            let kept = logs.keep();
            Err(e.context(format!("the programs' logs are kept in {}", kept.display())))
        }
    }
}

/// Install, fleet, every variant, the figures.
async fn bench(plane: &ControlPlane, options: &BenchOptions, logs: &Path) -> Result<()> {
    let admin = plane.admin_client().await?;
    install::install_system(&admin).await?;
    manifests::apply(&admin, WATCH_OWNED_RBAC, "kube-sentinel-bench", "default")
        .await
        .context("applying deploy/operator/rbac-watch-owned.yaml")?;
    let _kubelet = PodReadiness::start(admin.clone(), BENCH_NAMESPACE);
    let fleet = fleet::Fleet::create(&admin, options.resources).await?;
    println!(
        "created {} StatefulClusters in namespace {BENCH_NAMESPACE}",
        options.resources
    );
    let mut reports = Vec::new();
    for variant in options.variants() {
        let mut programs = Programs::default();
        let measured = measure(plane, &admin, &fleet, options, variant, logs, &mut programs).await;
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
    plane: &ControlPlane,
    admin: &Client,
    fleet: &fleet::Fleet,
    options: &BenchOptions,
    variant: Variant,
    logs: &Path,
    programs: &mut Programs,
) -> Result<VariantReport> {
    let variant_logs = logs.join(variant.to_string());
    std::fs::create_dir_all(&variant_logs).context("creating the variant's log directory")?;
    start_programs(plane, options, variant, &variant_logs, programs).await?;
    fleet.wait_settled(programs, SETTLE).await?;
    println!("{variant}: programs ready, fleet settled");
    let mut report = VariantReport::new(variant);
    let sentinel_flags = options.sentinel_flags(variant);
    let launch = scale::SentinelLaunch {
        plane,
        logs: &variant_logs,
        flags: &sentinel_flags,
    };
    for scenario in options.scenarios_of(variant) {
        let at = Where {
            admin,
            fleet,
            launch: &launch,
        };
        run_scenario(at, options, scenario, programs, &mut report).await?;
        fleet.wait_settled(programs, SETTLE).await?;
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
    plane: &ControlPlane,
    options: &BenchOptions,
    variant: Variant,
    logs: &Path,
    programs: &mut Programs,
) -> Result<()> {
    let operator = options.operator_flags(variant);
    programs
        .spawn(plane, logs, ProgramKind::Operator, &operator)
        .await?;
    if variant.has_sentinel() {
        let sentinel = options.sentinel_flags(variant);
        programs
            .spawn(plane, logs, ProgramKind::Sentinel, &sentinel)
            .await?;
    }
    for program in programs.iter_mut() {
        program.wait_ready().await?;
    }
    Ok(())
}

/// What a scenario runs against.
struct Where<'a> {
    admin: &'a Client,
    fleet: &'a fleet::Fleet,
    launch: &'a scale::SentinelLaunch<'a>,
}

async fn run_scenario(
    Where {
        admin,
        fleet,
        launch,
    }: Where<'_>,
    options: &BenchOptions,
    scenario: Scenario,
    programs: &mut Programs,
    report: &mut VariantReport,
) -> Result<()> {
    let variant = report.variant;
    println!("{variant}: {scenario:?} …");
    let first = fleet.clusters().first().context("the fleet is empty")?;
    match scenario {
        Scenario::Steady => {
            let load = steady_load(options, variant, fleet);
            report.steady = Some(steady::run(admin, fleet, load).await);
        }
        Scenario::Backlog => {
            let load = steady_load(options, variant, fleet);
            let operator = programs.port(ProgramKind::Operator);
            let backlog = backlog::run(admin, fleet, load, options.backlog_rate, operator);
            report.backlog = Some(backlog.await);
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
            let launch = scale::SentinelLaunch { ..*launch };
            let run = report.variant.to_string();
            let scaled = scale::scale(admin, &options.scale_objects, &run, launch, programs);
            report.scale = Some(scaled.await?);
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
