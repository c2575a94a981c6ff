//! The flags of `kube-sentinel sentinel`, and their validation into owner kind and timing.

use std::{net::SocketAddr, time::Duration};

use anyhow::{Context, Result};

use super::detect::TimingDefaults;
use crate::{
    cli::{CommonArgs, LONGEST, Program, check_duration, parse_duration},
    contract::{MANAGED_BY_LABEL, MANAGED_BY_VALUE},
    stream::DebounceMode,
    watch::{OwnerKind, selector::check_label_selector},
};

/// The sentinel, as a [`Program`]: its Lease is `kube-sentinel-sentinel` by default.
#[derive(Clone, Copy, Debug)]
pub struct SentinelProgram;

impl Program for SentinelProgram {
    const LEASE_NAME: &'static str = "kube-sentinel-sentinel";
}

/// Debounce mode flag.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ModeArg {
    /// Trigger once the window has been quiet (at most max-wait after the first drift).
    Trailing,
    /// Trigger at once on the first drift, then at most once more per window.
    Leading,
}

/// Flags of `kube-sentinel sentinel`; each has an environment variable fallback.
#[derive(Clone, Debug, clap::Args)]
pub struct SentinelArgs {
    /// Cluster, leader election and identity, as for the operator.
    #[command(flatten)]
    pub common: CommonArgs<SentinelProgram>,
    /// Watch one namespace only (default: all namespaces).
    #[arg(long, env = "KUBE_SENTINEL_NAMESPACE")]
    pub namespace: Option<String>,
    /// Label selector of the watched StatefulSets, Services and ConfigMaps.
    #[arg(long, env = "KUBE_SENTINEL_SELECTOR", default_value_t = format!("{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}"))]
    pub selector: String,
    /// The custom resource to trigger, as `plural.group/version`.
    #[arg(
        long,
        env = "KUBE_SENTINEL_OWNER_RESOURCE",
        default_value = "statefulclusters.kube-sentinel.dev/v1alpha1"
    )]
    pub owner_resource: String,
    /// Kind of the custom resource to trigger.
    #[arg(
        long,
        env = "KUBE_SENTINEL_OWNER_KIND",
        default_value = "StatefulCluster"
    )]
    pub owner_kind: String,
    /// Field managers whose changes are not drift (repeatable). The operator's and the
    /// sentinel's own are always ignored.
    #[arg(
        long = "ignore-manager",
        env = "KUBE_SENTINEL_IGNORE_MANAGERS",
        value_delimiter = ',',
        default_value = "kube-controller-manager"
    )]
    pub ignore_managers: Vec<String>,
    /// Debounce window: quiet time after the last drift before the trigger (1s..60s).
    #[arg(long, env = "KUBE_SENTINEL_DEBOUNCE", default_value = "2s", value_parser = parse_duration)]
    pub debounce: Duration,
    /// Longest a burst of drift may delay its trigger.
    #[arg(long, env = "KUBE_SENTINEL_MAX_WAIT", default_value = "10s", value_parser = parse_duration)]
    pub max_wait: Duration,
    /// Default debounce mode (a resource's spec.sentinel.mode overrides it).
    #[arg(long, env = "KUBE_SENTINEL_MODE", value_enum, default_value_t = ModeArg::Trailing)]
    pub mode: ModeArg,
    /// Largest per-resource jitter added to the window (below 1 s), so that resources that
    /// drift together do not all trigger in the same instant.
    #[arg(long, env = "KUBE_SENTINEL_JITTER", default_value = "250ms", value_parser = parse_duration)]
    pub jitter: Duration,
    /// Trigger writes in flight at most.
    #[arg(long, env = "KUBE_SENTINEL_MAX_CONCURRENT_WRITES", default_value_t = 8)]
    pub max_concurrent_writes: usize,
    /// Address of /healthz, /readyz and /metrics.
    #[arg(
        long,
        env = "KUBE_SENTINEL_METRICS_ADDR",
        default_value = "0.0.0.0:8080"
    )]
    pub metrics_addr: SocketAddr,
    /// Not ready after the API server has been unreachable for this long.
    #[arg(long, env = "KUBE_SENTINEL_UNREACHABLE_AFTER", default_value = "30s", value_parser = parse_duration)]
    pub unreachable_after: Duration,
}

impl SentinelArgs {
    /// The owner kind and the default timing these flags ask for, or what is wrong with them.
    pub fn validate(&self) -> Result<(OwnerKind, TimingDefaults)> {
        self.common.validate()?;
        check_label_selector(&self.selector)
            .map_err(|why| anyhow::anyhow!("--selector is not a label selector: {why}"))?;
        let owner =
            OwnerKind::parse(&self.owner_resource, &self.owner_kind).with_context(|| {
                format!(
                    "--owner-resource {:?} must look like plural.group/version",
                    self.owner_resource
                )
            })?;
        anyhow::ensure!(
            (Duration::from_secs(1)..=Duration::from_secs(60)).contains(&self.debounce),
            "--debounce must be between 1s and 60s, not {:?}",
            self.debounce
        );
        anyhow::ensure!(
            self.max_wait >= self.debounce,
            "--max-wait ({:?}) must be at least --debounce ({:?})",
            self.max_wait,
            self.debounce
        );
        check_duration(
            "--max-wait",
            self.max_wait,
            Duration::ZERO..=Duration::from_secs(3600),
        )?;
        check_duration(
            "--jitter",
            self.jitter,
            Duration::ZERO..=Duration::from_millis(999),
        )?;
        check_duration(
            "--unreachable-after",
            self.unreachable_after,
            Duration::from_secs(1)..=LONGEST,
        )?;
        anyhow::ensure!(
            self.max_concurrent_writes > 0,
            "--max-concurrent-writes must be positive"
        );
        let mode = match self.mode {
            ModeArg::Trailing => DebounceMode::Trailing,
            ModeArg::Leading => DebounceMode::LeadingTrailing,
        };
        Ok((
            owner,
            TimingDefaults {
                window: self.debounce,
                max_wait: self.max_wait,
                mode,
            },
        ))
    }

    /// The field managers whose writes are not drift: the flag's, the operator's and the
    /// sentinel's own.
    pub fn ignored_managers(&self) -> Vec<String> {
        let mut ignored = self.ignore_managers.clone();
        ignored.extend([
            crate::contract::OPERATOR_FIELD_MANAGER.to_owned(),
            crate::contract::SENTINEL_FIELD_MANAGER.to_owned(),
        ]);
        ignored
    }
}
