//! `kube-sentinel demo`: the whole system on a local control plane, in one command.
//!
//! 1. Starts the local control plane ([`crate::testenv`]) and writes its admin kubeconfig.
//! 2. Installs the StatefulCluster CRD and the manifests of `deploy/operator` and
//!    `deploy/sentinel` as they are (namespace `kube-sentinel`, ServiceAccounts, RBAC, the
//!    sentinel's ValidatingAdmissionPolicy), embedded in the binary. Their Deployments are
//!    left out: the programs run as local processes.
//! 3. Runs the operator and the sentinel as separate processes of this binary, each as its own
//!    ServiceAccount (a TokenRequest token), tied to the demo through their standard input.
//! 4. Stands in for the kubelet in namespace `demo` ([`PodReadiness`]): the control plane has
//!    no kubelet, so pods are marked Ready as a kubelet would.
//! 5. Creates `deploy/samples/minimal.yaml` in namespace `demo` and waits until it is Ready.
//! 6. Drifts it as an outside actor would (`kubectl edit`, `scale`, `label`, `delete`), one kind
//!    of drift per round, and measures each drift-to-revert: from just before the change to the
//!    read-back showing the object restored, with the trigger acknowledged.
//! 7. Prints the figures and the programs' own metrics, then keeps everything running for
//!    `kubectl` until Ctrl-C or SIGTERM (or exits, with [`DemoOptions::exit_when_done`]).
//!
//! The harness is open to a sibling tool within the crate (a drift-load benchmark installs,
//! runs and drifts the same way): `install` (CRD, `deploy/` manifests, ServiceAccount
//! kubeconfigs, the sample), `programs` (operator and sentinel as child processes), `drift`
//! (the outside actor and its restore checks), `rounds` (one timed drift-to-revert, settling)
//! and `report` (percentiles, scraping the programs' `/metrics`).

pub(crate) mod drift;
pub(crate) mod install;
mod options;
pub(crate) mod programs;
pub(crate) mod report;
pub(crate) mod rounds;
mod stage_line;

use std::{path::Path, time::Duration};

use anyhow::{Context, Result};
use kube::Client;
use tokio::time::Instant;

pub use drift::DriftKind;
pub use options::DemoOptions;
use programs::Programs;

use crate::testenv::{ControlPlane, ControlPlaneConfig, PodReadiness};

/// Namespace of the operator and the sentinel (as in `deploy/`).
pub const SYSTEM_NAMESPACE: &str = "kube-sentinel";
/// Namespace of the demo's StatefulCluster.
pub const DEMO_NAMESPACE: &str = "demo";
/// Name of the demo's StatefulCluster (`deploy/samples/minimal.yaml`).
pub const CLUSTER_NAME: &str = "minimal";

/// Longest wait for a program's `/readyz`, the StatefulCluster's readiness, or one revert.
const WAIT: Duration = Duration::from_secs(60);
/// How often a round reads the drifted object and the custom resource back.
const POLL: Duration = Duration::from_millis(25);

/// How the demo ended, when nothing failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ended {
    /// It did everything it was asked.
    Done,
    /// Ctrl-C, SIGTERM or the end of standard input came first.
    Interrupted,
}

/// Runs the demo until it is done (with `exit_when_done`) or `shutdown` resolves, then stops
/// the programs and the control plane. `shutdown` also interrupts the set-up and the rounds.
pub async fn run(
    config: ControlPlaneConfig,
    options: DemoOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    tokio::pin!(shutdown);
    options.validate()?;
    options::refuse_to_clobber(&options.kubeconfig)?;
    println!("starting the local control plane (etcd, kube-apiserver, kube-controller-manager)");
    let plane = tokio::select! {
        plane = ControlPlane::start(config) => plane?,
        () = &mut shutdown => {
            println!("interrupted");
            return Ok(());
        }
    };
    let (logs, kubelet) = match prepare(&plane).await {
        Ok(prepared) => prepared,
        Err(e) => {
            plane.stop().await;
            return Err(e);
        }
    };
    let mut programs = Programs::default();
    let ended = tokio::select! {
        result = demonstrate(&plane, &options, logs.path(), &mut programs) => result.map(|()| Ended::Done),
        () = &mut shutdown => Ok(Ended::Interrupted),
    };
    let ended = match ended {
        Ok(Ended::Done) if !options.exit_when_done => {
            keep_running(&options, &mut programs, shutdown.as_mut()).await
        }
        other => other,
    };
    if matches!(ended, Ok(Ended::Interrupted)) {
        println!("interrupted");
    }
    println!("stopping the operator, the sentinel and the control plane");
    programs.stop().await;
    drop(kubelet);
    plane.stop().await;
    let _ = std::fs::remove_file(&options.kubeconfig);
    keep_logs_if_failed(ended, logs)
}

/// What the demo holds besides the control plane: a directory for the programs' logs, and the
/// kubelet stand-in, held for the whole demo so that pods created with kubectl later also
/// become Ready.
async fn prepare(plane: &ControlPlane) -> Result<(tempfile::TempDir, PodReadiness)> {
    let logs = tempfile::Builder::new()
        .prefix("kube-sentinel-demo-")
        .tempdir()
        .context("creating a directory for the programs' logs")?;
    let admin = plane.admin_client().await?;
    Ok((logs, PodReadiness::start(admin, DEMO_NAMESPACE)))
}

/// After the figures: everything keeps running for `kubectl` until `shutdown`; fails if a
/// program exits meanwhile.
async fn keep_running(
    options: &DemoOptions,
    programs: &mut Programs,
    shutdown: impl Future<Output = ()>,
) -> Result<Ended> {
    println!(
        "\neverything keeps running: try `kubectl --kubeconfig {} get statefulclusters,statefulsets,services,configmaps -n {DEMO_NAMESPACE}`, \
         edit or delete one of them and watch it come back. Ctrl-C stops the demo.",
        options.kubeconfig.display()
    );
    tokio::select! {
        () = shutdown => Ok(Ended::Interrupted),
        exited = programs.watch() => Err(exited),
    }
}

/// Removes the programs' logs if nothing failed; else keeps them and says where.
fn keep_logs_if_failed(ended: Result<Ended>, logs: tempfile::TempDir) -> Result<()> {
    match ended {
        Ok(_) => {
            // Nothing failed: the logs have served their purpose.
            let _ = logs.close();
            Ok(())
        }
        Err(e) => {
            let kept = logs.keep();
            Err(e.context(format!("the programs' logs are kept in {}", kept.display())))
        }
    }
}

/// Steps 1 to 7 on a started control plane, up to the figures: install, start the programs,
/// create the sample, drift it round after round, and print what was measured.
async fn demonstrate(
    plane: &ControlPlane,
    options: &DemoOptions,
    logs: &Path,
    programs: &mut Programs,
) -> Result<()> {
    let admin = announce_control_plane(plane, options).await?;
    install::install_system(&admin).await?;
    println!(
        "installed the CRD, deploy/operator and deploy/sentinel (namespace {SYSTEM_NAMESPACE}; \
         the Deployments are replaced by local processes)"
    );
    start_programs(plane, logs, &options.sentinel_flags(), programs).await?;
    let cluster = create_sample(&admin, programs).await?;
    let rounds = rounds::drift_rounds(&cluster, options.rounds, programs).await?;
    report::print_summary(&rounds, options);
    if let Some(path) = &options.summary_json {
        report::write_summary_json(path, &rounds, options)?;
        println!("summary written to {}", path.display());
    }
    report::print_program_figures(programs).await;
    Ok(())
}

/// Writes the admin kubeconfig, says where the control plane is, and returns an admin client.
async fn announce_control_plane(plane: &ControlPlane, options: &DemoOptions) -> Result<Client> {
    plane
        .write_admin_kubeconfig(&options.kubeconfig)
        .with_context(|| format!("writing {}", options.kubeconfig.display()))?;
    println!("control plane ready at {}", plane.server());
    println!(
        "  admin kubeconfig: {0}\n  try: kubectl --kubeconfig {0} get statefulclusters -A",
        options.kubeconfig.display()
    );
    plane.admin_client().await
}

/// Starts the operator and the sentinel under their ServiceAccounts and waits until both are
/// ready, saying where their logs and metrics are.
async fn start_programs(
    plane: &ControlPlane,
    logs: &Path,
    sentinel_flags: &[String],
    programs: &mut Programs,
) -> Result<()> {
    programs
        .spawn_all(plane.admin_kubeconfig(), logs, sentinel_flags)
        .await?;
    for program in programs.iter_mut() {
        program.wait_ready().await?;
        println!(
            "{:<8} running as ServiceAccount {SYSTEM_NAMESPACE}/{}\n  log:     {}\n  metrics: http://127.0.0.1:{}/metrics",
            program.kind(),
            program.kind().service_account(),
            program.log_path().display(),
            program.port()
        );
    }
    Ok(())
}

/// Creates the sample StatefulCluster in [`DEMO_NAMESPACE`] and waits until it is Ready.
async fn create_sample(admin: &Client, programs: &mut Programs) -> Result<drift::Cluster> {
    install::install_sample(admin, DEMO_NAMESPACE).await?;
    let started = Instant::now();
    let cluster = drift::Cluster::new(admin, DEMO_NAMESPACE, CLUSTER_NAME);
    cluster.wait_ready(programs).await?;
    println!(
        "StatefulCluster {DEMO_NAMESPACE}/{CLUSTER_NAME} Ready in {} ms (pods marked Ready by \
         the demo's kubelet stand-in)\n",
        started.elapsed().as_millis()
    );
    Ok(cluster)
}
