//! `kube-sentinel`: the sentinel, the operator and their tools in one binary.

use std::{path::PathBuf, time::Duration};

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use kube_sentinel::{
    bench::{Baseline, BenchOptions, Scenario, Target},
    cli::parse_duration,
    demo::DriftKind,
    sentinel::ModeArg,
    telemetry,
    testenv::{ControlPlane, ControlPlaneConfig},
};

/// Detects and reverts drift in Kubernetes infrastructure within seconds.
#[derive(Parser)]
#[command(name = "kube-sentinel", version, about)]
struct Cli {
    /// Log as JSON lines instead of text.
    #[arg(long, global = true, env = "KUBE_SENTINEL_LOG_JSON")]
    log_json: bool,
    /// Exit when standard input closes: lets a parent process (a test harness) tie this
    /// program's life to its own, even if the parent is killed.
    #[arg(long, global = true, hide = true)]
    exit_on_stdin_eof: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a local control plane (etcd, kube-apiserver, kube-controller-manager) until Ctrl-C.
    Testenv(TestenvArgs),
    /// Run the whole system on a local control plane: the main job of this repository.
    Demo(DemoArgs),
    /// Measure drift→revert under synthetic drift load on a local control plane, ours beside
    /// baselines (no fast lane, no sentinel), and write the figures.
    Bench(BenchArgs),
    /// Inject faults (crashes, hangs, a slow or broken network, 429s, 500s, expired watches)
    /// under steady drift on a local control plane and check that nothing is lost.
    Faults(FaultsArgs),
    /// Run the operator: reconcile StatefulClusters, triggers from the sentinel first.
    Operator(kube_sentinel::operator::OperatorArgs),
    /// Print the StatefulCluster CustomResourceDefinition as YAML (`kubectl apply -f -`).
    Crd,
    /// Watch managed infrastructure and trigger the owning custom resource on drift.
    Sentinel(kube_sentinel::sentinel::SentinelArgs),
}

#[derive(Args)]
struct FaultsArgs {
    #[command(flatten)]
    options: kube_sentinel::faults::FaultOptions,
    /// Directory with etcd, kube-apiserver and kube-controller-manager (default: build them
    /// with tests/controlplane/build.sh).
    #[arg(long, env = "KUBE_SENTINEL_BIN_DIR")]
    bin_dir: Option<PathBuf>,
}

#[derive(Args)]
struct TestenvArgs {
    /// Where to write the admin kubeconfig.
    #[arg(
        long,
        env = "KUBE_SENTINEL_TESTENV_KUBECONFIG",
        default_value = "testenv.kubeconfig"
    )]
    kubeconfig: PathBuf,
    /// Directory with etcd, kube-apiserver and kube-controller-manager (default: build them
    /// with tests/controlplane/build.sh).
    #[arg(long, env = "KUBE_SENTINEL_BIN_DIR")]
    bin_dir: Option<PathBuf>,
    /// Do not start kube-controller-manager (no StatefulSet status, no garbage collection).
    #[arg(long)]
    no_controller_manager: bool,
    /// Do not print the kubeconfig on standard output.
    #[arg(long)]
    quiet: bool,
}

#[derive(Args)]
struct DemoArgs {
    /// Where to write the admin kubeconfig of the demo's control plane.
    #[arg(long, default_value = "demo.kubeconfig")]
    kubeconfig: PathBuf,
    /// Directory with the control-plane binaries (default: build them).
    #[arg(long, env = "KUBE_SENTINEL_BIN_DIR")]
    bin_dir: Option<PathBuf>,
    /// Cycles of drift; each cycle drifts five ways (replicas, image, label, config key,
    /// deleted Service).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1000))]
    rounds: u32,
    /// Stop after printing the figures instead of running until Ctrl-C.
    #[arg(long)]
    exit_when_done: bool,
    /// The sentinel's debounce mode.
    #[arg(long, value_enum, default_value_t = ModeArg::Trailing)]
    mode: ModeArg,
    /// The sentinel's debounce window (1s to 60s).
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    debounce: Duration,
    /// Also write the figures as JSON to this file (injected, reverted, latency_ms, rounds).
    #[arg(long)]
    summary_json: Option<PathBuf>,
}

#[derive(Args)]
struct BenchArgs {
    /// Directory with the control-plane binaries (default: build them).
    #[arg(long, env = "KUBE_SENTINEL_BIN_DIR")]
    bin_dir: Option<PathBuf>,
    /// Run on the cluster of this kubeconfig (its current context, with rights to install
    /// the CRD and RBAC) instead of a local control plane. It must run no kube-sentinel and
    /// hold no StatefulCluster of its own: the bench's programs watch every namespace.
    #[arg(long, conflicts_with = "bin_dir")]
    kubeconfig: Option<PathBuf>,
    /// StatefulClusters under load.
    #[arg(long, default_value_t = 10)]
    resources: usize,
    /// Drifts per second over all resources (steady scenario).
    #[arg(long, default_value_t = 1.0)]
    rate: f64,
    /// How long the steady scenario drifts.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    duration: Duration,
    /// Kinds of drift, drawn at random.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = DriftKind::ALL)]
    kinds: Vec<DriftKind>,
    /// Our sentinel modes to run.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [ModeArg::Trailing, ModeArg::Leading])]
    modes: Vec<ModeArg>,
    /// The sentinel's window (1s to 60s).
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    debounce: Duration,
    /// Scenarios run with our modes (baselines run the steady one).
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Scenario::Steady, Scenario::Repeated, Scenario::Storm])]
    scenarios: Vec<Scenario>,
    /// Baselines run beside ours, with the same load (`--baselines` alone for none).
    #[arg(long, value_enum, value_delimiter = ',', num_args = 0.., default_values_t = [Baseline::SingleLane, Baseline::WatchOwned, Baseline::Resync])]
    baselines: Vec<Baseline>,
    /// The operator's resync period in the resync baseline (the default is 10 h: the bound
    /// there is that period).
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    resync: Duration,
    /// Seed of the load's random choices.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Patches in the storm scenario.
    #[arg(long, default_value_t = 1000)]
    storm_patches: usize,
    /// Drifts in the repeated scenario.
    #[arg(long, default_value_t = 10)]
    repeats: usize,
    /// Spec changes per second in the backlog scenario (to half the resources).
    #[arg(long, default_value_t = 20.0)]
    backlog_rate: f64,
    /// Resources created, drifted and deleted in each of the churn scenario's two rounds.
    #[arg(long, default_value_t = 2000)]
    churn_resources: usize,
    /// Labelled objects the sentinel watches at each level of the scale scenario.
    #[arg(long, value_delimiter = ',', default_values_t = [1000, 10_000, 50_000])]
    scale_objects: Vec<usize>,
    /// StatefulClusters created (and as many deleted) per second in the soak scenario.
    #[arg(long, default_value_t = 0.5)]
    soak_churn_rate: f64,
    /// How often the soak scenario samples the programs' memory, tasks and state.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    soak_sample: Duration,
    /// Where summary.json and the .hgrm files go.
    #[arg(long, default_value = "target/bench")]
    out_dir: PathBuf,
    /// Also write the JSON summary here.
    #[arg(long)]
    summary_json: Option<PathBuf>,
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    telemetry::init_tracing(cli.log_json);
    let result = match cli.command {
        Command::Testenv(args) => testenv(args, cli.exit_on_stdin_eof).await,
        Command::Demo(args) => demo(args, cli.exit_on_stdin_eof).await,
        Command::Bench(args) => bench(args, cli.exit_on_stdin_eof).await,
        Command::Faults(args) => faults(args, cli.exit_on_stdin_eof).await,
        Command::Sentinel(args) => {
            kube_sentinel::sentinel::run(args, wait_for_shutdown(cli.exit_on_stdin_eof)).await
        }
        Command::Operator(args) => {
            kube_sentinel::operator::run(args, wait_for_shutdown(cli.exit_on_stdin_eof)).await
        }
        Command::Crd => {
            print!("{}", kube_sentinel::operator::crd::crd_yaml());
            Ok(())
        }
    };
    if let Err(e) = result {
        eprintln!("kube-sentinel: {}", kube_sentinel::cli::error_line(&e));
        std::process::exit(1);
    }
}

fn control_plane_config(
    bin_dir: Option<PathBuf>,
    controller_manager: bool,
) -> Result<ControlPlaneConfig> {
    let mut config = match bin_dir {
        Some(dir) => ControlPlaneConfig::new(dir),
        None => ControlPlaneConfig::from_build_script()?,
    };
    config.controller_manager = controller_manager;
    Ok(config)
}

async fn testenv(args: TestenvArgs, exit_on_stdin_eof: bool) -> Result<()> {
    let config = control_plane_config(args.bin_dir, !args.no_controller_manager)?;
    let plane = ControlPlane::start(config).await?;
    let written = plane
        .write_admin_kubeconfig(&args.kubeconfig)
        .with_context(|| format!("writing {}", args.kubeconfig.display()));
    if let Err(e) = written {
        plane.stop().await;
        return Err(e);
    }
    if !args.quiet {
        println!(
            "{}",
            kube_sentinel::testenv::kubeconfig_yaml(plane.admin_kubeconfig())?
        );
    }
    eprintln!(
        "control plane ready at {}; kubectl --kubeconfig {} get --raw /readyz",
        plane.server(),
        args.kubeconfig.display()
    );
    wait_for_shutdown(exit_on_stdin_eof).await;
    eprintln!("stopping the control plane");
    plane.stop().await;
    let _ = std::fs::remove_file(&args.kubeconfig);
    Ok(())
}

async fn demo(args: DemoArgs, exit_on_stdin_eof: bool) -> Result<()> {
    let config = control_plane_config(args.bin_dir, true)?;
    let options = kube_sentinel::demo::DemoOptions {
        kubeconfig: args.kubeconfig,
        rounds: args.rounds,
        exit_when_done: args.exit_when_done,
        mode: args.mode,
        debounce: args.debounce,
        summary_json: args.summary_json,
    };
    kube_sentinel::demo::run(config, options, wait_for_shutdown(exit_on_stdin_eof)).await
}

async fn bench(args: BenchArgs, exit_on_stdin_eof: bool) -> Result<()> {
    let target = match args.kubeconfig {
        Some(path) => Target::Cluster(path),
        None => Target::Local(control_plane_config(args.bin_dir, true)?),
    };
    let options = BenchOptions {
        resources: args.resources,
        rate: args.rate,
        duration: args.duration,
        kinds: args.kinds,
        modes: args.modes,
        debounce: args.debounce,
        scenarios: args.scenarios,
        baselines: args.baselines,
        resync: args.resync,
        seed: args.seed,
        storm_patches: args.storm_patches,
        repeats: args.repeats,
        backlog_rate: args.backlog_rate,
        churn_resources: args.churn_resources,
        scale_objects: args.scale_objects,
        soak_churn_rate: args.soak_churn_rate,
        soak_sample: args.soak_sample,
        out_dir: args.out_dir,
        summary_json: args.summary_json,
    };
    kube_sentinel::bench::run(target, options, wait_for_shutdown(exit_on_stdin_eof)).await
}

async fn faults(args: FaultsArgs, exit_on_stdin_eof: bool) -> Result<()> {
    let config = control_plane_config(args.bin_dir, true)?;
    let passed = tokio::select! {
        passed = kube_sentinel::faults::run(config, args.options) => passed?,
        () = wait_for_shutdown(exit_on_stdin_eof) => anyhow::bail!("interrupted"),
    };
    anyhow::ensure!(
        passed,
        "a fault broke an invariant (the table above says which)"
    );
    Ok(())
}

/// Resolves on Ctrl-C, SIGTERM, or (if asked) end of standard input.
async fn wait_for_shutdown(on_stdin_eof: bool) {
    let stdin_eof = async {
        if on_stdin_eof {
            // A plain thread, not tokio's stdin: a read blocked in tokio's blocking pool would
            // keep the runtime from shutting down after a signal while the parent holds the pipe.
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            let spawned = std::thread::Builder::new()
                .name("stdin-eof".into())
                .spawn(move || {
                    use std::io::Read;
                    let mut buf = [0u8; 64];
                    // Any read error also means the parent is gone.
                    while let Ok(n) = std::io::stdin().read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                    }
                    let _ = tx.send(());
                });
            match spawned {
                Ok(_) => {
                    let _ = rx.await;
                }
                Err(e) => {
                    eprintln!("kube-sentinel: cannot watch standard input: {e}");
                    std::future::pending::<()>().await;
                }
            }
        } else {
            std::future::pending::<()>().await;
        }
    };
    let sigterm = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = sigterm => {}
        _ = stdin_eof => {}
    }
}
