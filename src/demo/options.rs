//! What the demo is asked to do, and the one check on it: never clobber someone's kubeconfig.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};

/// What the demo does besides starting the system.
#[derive(Clone, Debug)]
pub struct DemoOptions {
    /// Where to write the admin kubeconfig (removed when the demo stops).
    pub kubeconfig: PathBuf,
    /// Cycles of drift: each cycle drifts every [`super::DriftKind`] once.
    pub rounds: u32,
    /// Stop after the figures instead of running until Ctrl-C.
    pub exit_when_done: bool,
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
}
