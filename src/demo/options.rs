//! What the demo is asked to do, and the one check on it: never clobber someone's kubeconfig.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Result, bail, ensure};

use crate::sentinel::ModeArg;

/// The sentinel's own default for how long a burst may delay its trigger.
const SENTINEL_MAX_WAIT: Duration = Duration::from_secs(10);

/// What the demo does besides starting the system.
#[derive(Clone, Debug)]
pub struct DemoOptions {
    /// Where to write the admin kubeconfig (removed when the demo stops).
    pub kubeconfig: PathBuf,
    /// Cycles of drift: each cycle drifts every [`super::DriftKind`] once.
    pub rounds: u32,
    /// Stop after the figures instead of running until Ctrl-C.
    pub exit_when_done: bool,
    /// The sentinel's debounce mode.
    pub mode: ModeArg,
    /// The sentinel's debounce window (1 s to 60 s, as the sentinel accepts).
    pub debounce: Duration,
    /// Where to write the figures as JSON, if anywhere.
    pub summary_json: Option<PathBuf>,
}

impl DemoOptions {
    /// Fails on what the sentinel would refuse, before anything starts.
    pub fn validate(&self) -> Result<()> {
        ensure!(
            (Duration::from_secs(1)..=Duration::from_secs(60)).contains(&self.debounce),
            "--debounce must be between 1s and 60s, not {:?}",
            self.debounce
        );
        Ok(())
    }

    /// The sentinel's flags for the mode and window asked for; its max-wait stays at its
    /// default unless the window is longer.
    pub(crate) fn sentinel_flags(&self) -> Vec<String> {
        let mode = self.mode_name();
        let max_wait = self.debounce.max(SENTINEL_MAX_WAIT);
        vec![
            format!("--mode={mode}"),
            format!("--debounce={}", self.debounce.as_secs_f64()),
            format!("--max-wait={}", max_wait.as_secs_f64()),
        ]
    }

    /// The mode as the summary names it.
    pub(crate) fn mode_name(&self) -> &'static str {
        match self.mode {
            ModeArg::Trailing => "trailing",
            ModeArg::Leading => "leading",
        }
    }
}

/// Fails if `path` holds a kubeconfig that is not a local control plane's (one left by an
/// earlier demo or `testenv` is fine): the demo overwrites the file and removes it at the end.
pub(crate) fn refuse_to_clobber(path: &Path) -> Result<()> {
    match std::fs::read_to_string(path) {
        Ok(text) if !text.contains("https://127.0.0.1:") => bail!(
            "{} exists and is not a local control plane's kubeconfig; the demo would overwrite \
             and then remove it: pass another --kubeconfig",
            path.display()
        ),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_overwrites_a_kubeconfig_of_another_cluster() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config");
        assert!(refuse_to_clobber(&path).is_ok(), "a new file");
        std::fs::write(
            &path,
            "clusters:\n- cluster:\n    server: https://127.0.0.1:6443\n",
        )
        .expect("write");
        assert!(refuse_to_clobber(&path).is_ok(), "a local control plane's");
        std::fs::write(
            &path,
            "clusters:\n- cluster:\n    server: https://prod.example:443\n",
        )
        .expect("write");
        let err = refuse_to_clobber(&path).expect_err("another cluster's");
        assert!(
            err.to_string().contains("pass another --kubeconfig"),
            "{err}"
        );
    }

    fn options(mode: ModeArg, debounce: Duration) -> DemoOptions {
        DemoOptions {
            kubeconfig: PathBuf::from("demo.kubeconfig"),
            rounds: 1,
            exit_when_done: true,
            mode,
            debounce,
            summary_json: None,
        }
    }

    #[test]
    fn the_sentinel_gets_the_mode_and_window_and_a_max_wait_it_accepts() {
        let short = options(ModeArg::Leading, Duration::from_millis(1500));
        assert_eq!(
            short.sentinel_flags(),
            ["--mode=leading", "--debounce=1.5", "--max-wait=10"]
        );
        let long = options(ModeArg::Trailing, Duration::from_secs(30));
        assert_eq!(
            long.sentinel_flags(),
            ["--mode=trailing", "--debounce=30", "--max-wait=30"]
        );
        let flags = long.sentinel_flags();
        let parsed = <crate::sentinel::SentinelArgs as clap::FromArgMatches>::from_arg_matches(
            &<crate::sentinel::SentinelArgs as clap::Args>::augment_args(clap::Command::new("s"))
                .try_get_matches_from(std::iter::once("s".to_string()).chain(flags))
                .expect("the sentinel parses the demo's flags"),
        )
        .expect("sentinel args");
        assert!(parsed.validate().is_ok(), "the sentinel accepts them");
    }

    #[test]
    fn a_window_the_sentinel_would_refuse_is_refused_before_anything_starts() {
        for debounce in [Duration::from_millis(500), Duration::from_secs(61)] {
            let err = options(ModeArg::Trailing, debounce)
                .validate()
                .expect_err("out of range");
            assert!(
                err.to_string()
                    .contains("--debounce must be between 1s and 60s"),
                "{err}"
            );
        }
        assert!(
            options(ModeArg::Trailing, Duration::from_secs(2))
                .validate()
                .is_ok()
        );
    }
}
