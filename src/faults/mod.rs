//! `kube-sentinel faults`: faults injected on a real control plane under steady drift, and the
//! invariants checked after each by reading the objects back.
//!
//! 1. Starts a local control plane, toxiproxy between each program and the API server
//!    ([`toxiproxy`]), and two replicas of the operator and of the sentinel with leader
//!    election, under their ServiceAccounts ([`rig`]).
//! 2. Creates `--resources` StatefulClusters and waits until they are settled.
//! 3. For each fault ([`fault`]): steady drift at `--rate` (the bench's load generator), the
//!    fault injected in the middle and undone, then the invariants ([`measure`]): every drift
//!    reverted, every trigger acknowledged, no resource left half-upgraded, API writes per
//!    drift within a bound, no replica exited on its own, and evidence that the fault happened.
//! 4. Prints the table ([`report`]), writes `faults.md` and `faults.json`, and ends with the
//!    line `N passed, N failed`.

mod fault;
mod measure;
mod options;
mod report;
mod rig;
mod toxiproxy;

use std::time::Duration;

use anyhow::{Context, Result};

pub use fault::Fault;
pub use options::{FaultOptions, Profile};

use crate::{
    bench::{BENCH_NAMESPACE, fleet::Fleet},
    testenv::{ControlPlaneConfig, PodReadiness},
};

/// Longest wait for the fleet to settle after the programs start.
const SETTLE: Duration = Duration::from_secs(180);

/// Runs the suite; whether every scenario passed.
pub async fn run(config: ControlPlaneConfig, options: FaultOptions) -> Result<bool> {
    options.validate()?;
    let toxiproxy = match &options.toxiproxy {
        Some(path) => path.clone(),
        None => toxiproxy::build()?,
    };
    let logs = tempfile::Builder::new()
        .prefix("kube-sentinel-faults-")
        .tempdir()
        .context("creating a directory for the logs")?;
    println!("starting the control plane, toxiproxy and two replicas of each program");
    let mut rig = rig::Rig::start(config, &toxiproxy, logs.path()).await?;
    let result = suite(&mut rig, &options).await;
    rig.stop().await;
    match result {
        Ok(true) => Ok(true),
        Ok(false) => {
            eprintln!("the programs' logs are kept in {}", logs.keep().display());
            Ok(false)
        }
        Err(e) => {
            let kept = logs.keep();
            Err(e.context(format!("the logs are kept in {}", kept.display())))
        }
    }
}

async fn suite(rig: &mut rig::Rig, options: &FaultOptions) -> Result<bool> {
    let admin = rig.admin_client().await?;
    let _kubelet = PodReadiness::start(admin.clone(), BENCH_NAMESPACE);
    let fleet = Fleet::create(&admin, options.resources).await?;
    fleet.without_fight_backoff().await?;
    fleet.wait_settled(rig.programs(), SETTLE).await?;
    println!(
        "{} StatefulClusters settled; {} drifts a second from now on",
        options.resources, options.rate
    );
    let mut rows = Vec::new();
    for fault in options.faults() {
        println!("{}: {} s …", fault.name(), options.hold(fault).as_secs());
        let row = measure::scenario(rig, &fleet, &admin, options, fault).await?;
        println!(
            "{}: {}",
            fault.name(),
            if row.passed() {
                "pass".to_string()
            } else {
                row.failures.join("; ")
            }
        );
        rows.push(row);
    }
    let heading = format!(
        "Faults, profile {:?}: {} resources, {} drifts/s, `kube-sentinel faults{}`",
        options.profile,
        options.resources,
        options.rate,
        if options.profile == Profile::Short {
            " --profile short"
        } else {
            ""
        }
    );
    println!("\n{}\n{}", report::table(&rows), report::notes(&rows));
    report::write(&options.out_dir, &heading, &rows)?;
    println!("written to {}", options.out_dir.join("faults.md").display());
    let passed = rows.iter().filter(|r| r.passed()).count();
    println!("{passed} passed, {} failed", rows.len() - passed);
    Ok(passed == rows.len())
}
