//! What a benchmark run is asked to do: the load, the scenarios and the baselines.

use std::{fmt, path::PathBuf, time::Duration};

use anyhow::{Result, ensure};

use crate::{demo::DriftKind, sentinel::ModeArg};

/// A load scenario, reported on its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// N resources drifted at R drifts per second, each drift timed to its revert.
    Steady,
    /// One StatefulSet drifted ten times, each after the previous revert.
    Repeated,
    /// Patches to one resource as fast as they go, inside one window.
    Storm,
    /// Spec changes (full reconciles with real API work) to half the fleet, drift on the other
    /// half at the same time.
    Backlog,
    /// Many resources created, drifted once and deleted, twice: the operator's memory after
    /// each round.
    Churn,
    /// The sentinel watching more and more labelled objects: memory, CPU per event, time to
    /// sync.
    Scale,
    /// The steady drift for `--duration` while resources are created, drifted and deleted
    /// throughout; the programs' memory, tasks and per-resource state sampled: they must stay
    /// flat.
    Soak,
}

/// How the system under test runs: ours in one mode, or a baseline without what we add.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Variant {
    /// Sentinel and operator, the sentinel in trailing mode.
    Trailing,
    /// Sentinel and operator, the sentinel in leading mode.
    Leading,
    /// Baseline (a): sentinel and operator, but the operator's fast lane switched off.
    SingleLane,
    /// Baseline (b): no sentinel; the operator watches what it owns and reconciles the owner.
    WatchOwned,
    /// Baseline (c): no sentinel and no owned watches; only the operator's periodic resync.
    Resync,
}

impl Variant {
    /// Whether the sentinel runs in this variant.
    pub fn has_sentinel(self) -> bool {
        matches!(
            self,
            Variant::Trailing | Variant::Leading | Variant::SingleLane
        )
    }
}

impl fmt::Display for Variant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Variant::Trailing => "trailing",
            Variant::Leading => "leading",
            Variant::SingleLane => "single-lane",
            Variant::WatchOwned => "watch-owned",
            Variant::Resync => "resync",
        })
    }
}

/// A baseline to run beside ours, with the same load.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Baseline {
    /// (a) the fast lane switched off.
    SingleLane,
    /// (b) no sentinel, the operator's owned watches.
    WatchOwned,
    /// (c) no sentinel, no owned watches, a short resync.
    Resync,
}

/// What `kube-sentinel bench` does.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// StatefulClusters under load.
    pub resources: usize,
    /// Drifts per second in the steady scenario, over all resources.
    pub rate: f64,
    /// How long the steady scenario drifts.
    pub duration: Duration,
    /// The kinds of drift, drawn at random.
    pub kinds: Vec<DriftKind>,
    /// Our modes to run.
    pub modes: Vec<ModeArg>,
    /// The sentinel's window.
    pub debounce: Duration,
    /// The scenarios to run with each of our modes (baselines run the steady one).
    pub scenarios: Vec<Scenario>,
    /// The baselines to run beside ours.
    pub baselines: Vec<Baseline>,
    /// The operator's resync period in baseline (c).
    pub resync: Duration,
    /// Seed of the load's random choices.
    pub seed: u64,
    /// Patches in the storm scenario.
    pub storm_patches: usize,
    /// Drifts in the repeated scenario.
    pub repeats: usize,
    /// Spec changes per second in the backlog scenario.
    pub backlog_rate: f64,
    /// Resources per round of the churn scenario.
    pub churn_resources: usize,
    /// The scale scenario's levels: labelled objects watched, ascending.
    pub scale_objects: Vec<usize>,
    /// Resources created (and as many deleted) per second in the soak scenario.
    pub soak_churn_rate: f64,
    /// How often the soak scenario samples the programs.
    pub soak_sample: Duration,
    /// Where the `.hgrm` files and `summary.json` go.
    pub out_dir: PathBuf,
    /// Where to write the summary too, if anywhere else.
    pub summary_json: Option<PathBuf>,
}

impl BenchOptions {
    /// Fails on what cannot be run, before anything starts.
    pub fn validate(&self) -> Result<()> {
        ensure!(
            (1..=5000).contains(&self.resources),
            "--resources must be 1..=5000"
        );
        ensure!(
            self.rate > 0.0 && self.rate <= 1000.0,
            "--rate must be above 0 and at most 1000 drifts per second"
        );
        ensure!(
            (Duration::from_secs(1)..=Duration::from_secs(3600)).contains(&self.duration),
            "--duration must be between 1s and 1h"
        );
        ensure!(
            !self.kinds.is_empty(),
            "--kinds must name at least one kind"
        );
        ensure!(
            !self.modes.is_empty() || !self.baselines.is_empty(),
            "nothing to run: no --modes and no --baselines"
        );
        ensure!(
            (Duration::from_secs(1)..=Duration::from_secs(60)).contains(&self.debounce),
            "--debounce must be between 1s and 60s, not {:?}",
            self.debounce
        );
        ensure!(
            self.backlog_rate > 0.0 && self.backlog_rate <= 1000.0,
            "--backlog-rate must be above 0 and at most 1000 spec changes per second"
        );
        ensure!(
            !self.scenarios.contains(&Scenario::Backlog) || self.resources >= 2,
            "the backlog scenario needs --resources 2 or more (half changed, half drifted)"
        );
        ensure!(
            (1..=10_000).contains(&self.churn_resources),
            "--churn-resources must be 1..=10000"
        );
        ensure!(
            !self.scale_objects.is_empty()
                && self.scale_objects.windows(2).all(|w| w[0] < w[1])
                && self.scale_objects.iter().all(|n| (1..=200_000).contains(n)),
            "--scale-objects must be ascending counts in 1..=200000"
        );
        ensure!(
            self.soak_churn_rate > 0.0 && self.soak_churn_rate <= 50.0,
            "--soak-churn-rate must be above 0 and at most 50 resources per second"
        );
        ensure!(
            (Duration::from_secs(1)..=Duration::from_secs(300)).contains(&self.soak_sample),
            "--soak-sample must be between 1s and 300s"
        );
        ensure!(
            self.resync >= Duration::from_secs(1),
            "--resync must be at least 1s"
        );
        Ok(())
    }

    /// Every variant to run, ours first.
    pub fn variants(&self) -> Vec<Variant> {
        let ours = self.modes.iter().map(|mode| match mode {
            ModeArg::Trailing => Variant::Trailing,
            ModeArg::Leading => Variant::Leading,
        });
        let baselines = self.baselines.iter().map(|b| match b {
            Baseline::SingleLane => Variant::SingleLane,
            Baseline::WatchOwned => Variant::WatchOwned,
            Baseline::Resync => Variant::Resync,
        });
        ours.chain(baselines).collect()
    }

    /// The scenarios `variant` runs: ours run every scenario asked for, a baseline those it is
    /// compared on (the steady one; the backlog too for the single lane).
    pub fn scenarios_of(&self, variant: Variant) -> Vec<Scenario> {
        let compared: &[Scenario] = match variant {
            Variant::Trailing | Variant::Leading => return self.scenarios.clone(),
            Variant::SingleLane => &[Scenario::Steady, Scenario::Backlog],
            Variant::WatchOwned | Variant::Resync => &[Scenario::Steady],
        };
        self.scenarios
            .iter()
            .copied()
            .filter(|s| compared.contains(s))
            .collect()
    }

    /// The flags of the sentinel in `variant`.
    pub(crate) fn sentinel_flags(&self, variant: Variant) -> Vec<String> {
        let mode = match variant {
            Variant::Leading => "leading",
            _ => "trailing",
        };
        let max_wait = self.debounce.max(Duration::from_secs(10));
        vec![
            format!("--mode={mode}"),
            format!("--debounce={}", self.debounce.as_secs_f64()),
            format!("--max-wait={}", max_wait.as_secs_f64()),
        ]
    }

    /// The flags of the operator in `variant`.
    pub(crate) fn operator_flags(&self, variant: Variant) -> Vec<String> {
        match variant {
            Variant::SingleLane => vec!["--single-lane".into()],
            Variant::WatchOwned => vec!["--watch-owned".into()],
            Variant::Resync => vec![format!("--resync={}", self.resync.as_secs_f64())],
            Variant::Trailing | Variant::Leading => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn options() -> BenchOptions {
        BenchOptions {
            resources: 10,
            rate: 1.0,
            duration: Duration::from_secs(20),
            kinds: DriftKind::ALL.to_vec(),
            modes: vec![ModeArg::Trailing, ModeArg::Leading],
            debounce: Duration::from_secs(2),
            scenarios: vec![Scenario::Steady, Scenario::Repeated, Scenario::Storm],
            baselines: vec![Baseline::SingleLane, Baseline::WatchOwned, Baseline::Resync],
            resync: Duration::from_secs(10),
            seed: 1,
            storm_patches: 1000,
            repeats: 10,
            backlog_rate: 20.0,
            churn_resources: 20,
            scale_objects: vec![100, 1000],
            soak_churn_rate: 0.5,
            soak_sample: Duration::from_secs(10),
            out_dir: PathBuf::from("target/bench"),
            summary_json: None,
        }
    }

    #[test]
    fn ours_run_every_scenario_and_baselines_the_steady_one() {
        let options = options();
        assert_eq!(
            options.variants(),
            [
                Variant::Trailing,
                Variant::Leading,
                Variant::SingleLane,
                Variant::WatchOwned,
                Variant::Resync
            ]
        );
        assert_eq!(options.scenarios_of(Variant::Leading).len(), 3);
        assert_eq!(options.scenarios_of(Variant::Resync), [Scenario::Steady]);
        assert!(!Variant::WatchOwned.has_sentinel() && Variant::SingleLane.has_sentinel());
        assert_eq!(
            options.operator_flags(Variant::Resync),
            ["--resync=10"],
            "the resync baseline's period"
        );
        assert_eq!(
            options.sentinel_flags(Variant::Leading)[0],
            "--mode=leading"
        );
    }

    #[test]
    fn impossible_loads_are_refused_before_anything_starts() {
        let mut zero_rate = options();
        zero_rate.rate = 0.0;
        let mut no_kinds = options();
        no_kinds.kinds.clear();
        let mut nothing = options();
        nothing.modes.clear();
        nothing.baselines.clear();
        for (bad, says) in [
            (zero_rate, "--rate"),
            (no_kinds, "--kinds"),
            (nothing, "nothing to run"),
        ] {
            let err = bad.validate().expect_err(says);
            assert!(err.to_string().contains(says), "{err}");
        }
        assert!(options().validate().is_ok());
    }
}
