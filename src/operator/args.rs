//! The flags of `kube-sentinel operator`.

use std::{net::SocketAddr, time::Duration};

use anyhow::{Result, ensure};

use crate::{
    cli::{CommonArgs, LONGEST, Program, check_duration, parse_duration},
    contract::DriftAction,
};

/// The operator, as a [`Program`]: its Lease is `kube-sentinel-operator` by default.
#[derive(Clone, Copy, Debug)]
pub struct OperatorProgram;

impl Program for OperatorProgram {
    const LEASE_NAME: &'static str = "kube-sentinel-operator";
}

/// Flags of `kube-sentinel operator`; each has an environment fallback.
#[derive(Clone, Debug, clap::Args)]
pub struct OperatorArgs {
    /// Cluster, leader election and identity, as for the sentinel.
    #[command(flatten)]
    pub common: CommonArgs<OperatorProgram>,
    /// Watch StatefulClusters in this namespace only (default: all namespaces).
    #[arg(long, env = "KUBE_SENTINEL_NAMESPACE")]
    pub namespace: Option<String>,
    /// Address of /healthz, /readyz, /metrics and /debug/latency.
    #[arg(
        long,
        env = "KUBE_SENTINEL_METRICS_ADDR",
        default_value = "0.0.0.0:8080"
    )]
    pub metrics_addr: SocketAddr,
    /// Reconciles run at once (never two on one resource).
    #[arg(long, env = "KUBE_SENTINEL_WORKERS", default_value_t = 8)]
    pub workers: usize,
    /// Of `--workers`, how many full reconciles may never take: a trigger's revert starts at
    /// once however long the full reconciles in flight take. Less than `--workers`.
    #[arg(long, env = "KUBE_SENTINEL_FAST_WORKERS", default_value_t = 2)]
    pub fast_workers: usize,
    /// Full reconcile of every resource this often, whatever happened.
    #[arg(long, env = "KUBE_SENTINEL_RESYNC", default_value = "10h", value_parser = parse_duration)]
    pub resync: Duration,
    /// Consecutive fast-lane claims before one waiting normal key is served.
    #[arg(long, env = "KUBE_SENTINEL_FAST_BURST", default_value_t = 8)]
    pub fast_burst: usize,
    /// Switch the fast lane off: triggers wait in arrival order behind full reconciles. Only
    /// for measuring what the fast lane buys (`kube-sentinel bench`'s baseline).
    #[arg(long, env = "KUBE_SENTINEL_SINGLE_LANE")]
    pub single_lane: bool,
    /// What drift leads to on resources whose `spec.sentinel.action` is unset: `revert`, or
    /// `warn` (reported with a Warning Event, acknowledged `detected`, left in place).
    #[arg(long, env = "KUBE_SENTINEL_DRIFT_ACTION", value_enum, default_value_t = DriftAction::Revert)]
    pub drift_action: DriftAction,
    /// How often the latency summary is logged.
    #[arg(long, env = "KUBE_SENTINEL_LATENCY_LOG_INTERVAL", default_value = "60s", value_parser = parse_duration)]
    pub latency_log_interval: Duration,
    /// Also watch the managed StatefulSets, Services and ConfigMaps (metadata only) and
    /// reconcile their owner on the normal lane when one changes; for running without the
    /// sentinel (needs deploy/operator/rbac-watch-owned.yaml).
    #[arg(long, env = "KUBE_SENTINEL_WATCH_OWNED")]
    pub watch_owned: bool,
    /// Quiet period of the operator's own Secret watch before a foreign change to a Secret goes
    /// on the fast lane (at most four times this from the first change).
    #[arg(long, env = "KUBE_SENTINEL_SECRET_DEBOUNCE", default_value = "200ms", value_parser = parse_duration)]
    pub secret_debounce: Duration,
    /// Not ready (`/readyz`) after the StatefulCluster watch has failed for this long.
    #[arg(long, env = "KUBE_SENTINEL_UNREACHABLE_AFTER", default_value = "30s", value_parser = parse_duration)]
    pub unreachable_after: Duration,
    /// Longest wait for work in flight at shutdown.
    #[arg(long, env = "KUBE_SENTINEL_SHUTDOWN_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub shutdown_timeout: Duration,
}

impl OperatorArgs {
    /// Refuses flags that would panic, spin or stall the operator, with one line naming the
    /// flag; checked before any API call.
    pub fn validate(&self) -> Result<()> {
        self.common.validate()?;
        ensure!(self.workers > 0, "--workers must be at least 1");
        ensure!(
            self.fast_workers < self.workers,
            "--fast-workers must be less than --workers ({}), so that full reconciles still run",
            self.workers
        );
        ensure!(self.fast_burst > 0, "--fast-burst must be at least 1");
        let second = Duration::from_secs(1);
        check_duration("--resync", self.resync, second..=LONGEST)?;
        check_duration(
            "--latency-log-interval",
            self.latency_log_interval,
            second..=LONGEST,
        )?;
        check_duration(
            "--unreachable-after",
            self.unreachable_after,
            second..=LONGEST,
        )?;
        check_duration(
            "--secret-debounce",
            self.secret_debounce,
            Duration::ZERO..=Duration::from_secs(60),
        )?;
        check_duration(
            "--shutdown-timeout",
            self.shutdown_timeout,
            Duration::ZERO..=Duration::from_secs(3600),
        )
    }
}
