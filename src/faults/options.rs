//! What a fault-suite run is asked to do.

use std::{path::PathBuf, time::Duration};

use anyhow::{Result, ensure};

use super::fault::Fault;
use crate::cli::parse_duration;

/// The two profiles: CI runs the short one, the full one is a documented command.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Profile {
    /// Four faults (an API-server crash, a sentinel leader kill, an outage, 429s), 8 s each.
    Short,
    /// Every fault, 20 s each (the outage 15 s).
    Full,
}

/// `kube-sentinel faults`: faults injected under steady drift on a local control plane.
#[derive(Clone, Debug, clap::Args)]
pub struct FaultOptions {
    /// Which faults and for how long.
    #[arg(long, value_enum, default_value = "full")]
    pub profile: Profile,
    /// Only these faults (default: the profile's).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub faults: Vec<Fault>,
    /// How long each fault lasts (default: the profile's).
    #[arg(long, value_parser = parse_duration)]
    pub hold: Option<Duration>,
    /// StatefulClusters under load.
    #[arg(long, default_value_t = 20)]
    pub resources: usize,
    /// Drifts per second over all resources, before, during and after each fault.
    #[arg(long, default_value_t = 4.0)]
    pub rate: f64,
    /// Seed of the drift draws.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// toxiproxy's server (default: built by tests/controlplane/build-toxiproxy.sh).
    #[arg(long, env = "KUBE_SENTINEL_TOXIPROXY")]
    pub toxiproxy: Option<PathBuf>,
    /// Where `faults.md` and `faults.json` go.
    #[arg(long, default_value = "target/faults")]
    pub out_dir: PathBuf,
}

impl FaultOptions {
    /// Refuses what cannot run.
    pub fn validate(&self) -> Result<()> {
        ensure!(self.resources > 0, "--resources must be at least 1");
        ensure!(
            self.rate.is_finite() && self.rate > 0.0 && self.rate <= 1000.0,
            "--rate must be above 0 and at most 1000 drifts a second"
        );
        ensure!(
            self.hold
                .is_none_or(|h| h >= Duration::from_secs(1) && h <= Duration::from_secs(600)),
            "--hold must be between 1 s and 10 min"
        );
        Ok(())
    }

    /// The faults this run injects, in order.
    pub fn faults(&self) -> Vec<Fault> {
        if !self.faults.is_empty() {
            return self.faults.clone();
        }
        match self.profile {
            Profile::Short => vec![
                Fault::ApiserverKill,
                Fault::SentinelLeaderKill,
                Fault::Outage,
                Fault::Throttled,
            ],
            Profile::Full => Fault::ALL.to_vec(),
        }
    }

    /// How long `fault` lasts.
    pub fn hold(&self, fault: Fault) -> Duration {
        if let Some(hold) = self.hold {
            return hold;
        }
        match (self.profile, fault) {
            (Profile::Short, _) => Duration::from_secs(8),
            (Profile::Full, Fault::Outage) => Duration::from_secs(15),
            (Profile::Full, _) => Duration::from_secs(20),
        }
    }

    /// Steady drift before each fault and after it.
    pub fn calm(&self) -> (Duration, Duration) {
        match self.profile {
            Profile::Short => (Duration::from_secs(4), Duration::from_secs(10)),
            Profile::Full => (Duration::from_secs(5), Duration::from_secs(20)),
        }
    }
}
