//! The control plane's data directory: etcd's data, the PKI files and the logs, in memory when
//! `/dev/shm` exists, marked with its owner's pid so that a later start sweeps it if the owner
//! was killed.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::Pki;

const DATA_DIR_PREFIX: &str = "kube-sentinel-testenv-";
const OWNER_PID_FILE: &str = "owner.pid";

/// Creates a fresh data directory in `parent` (default: `/dev/shm` when present, so etcd writes
/// to memory), after removing those of launchers that were killed.
pub(super) fn create(parent: Option<PathBuf>) -> Result<tempfile::TempDir> {
    let parent = parent.unwrap_or_else(default_parent);
    remove_stale(&parent);
    let dir = tempfile::Builder::new()
        .prefix(DATA_DIR_PREFIX)
        .tempdir_in(&parent)
        .with_context(|| format!("creating a data directory in {}", parent.display()))?;
    std::fs::write(
        dir.path().join(OWNER_PID_FILE),
        std::process::id().to_string(),
    )
    .context("writing the data directory's owner pid")?;
    Ok(dir)
}

/// The PKI as files the control-plane programs read.
pub(super) struct PkiFiles {
    /// The CA certificate.
    pub ca: PathBuf,
    /// kube-apiserver's serving certificate.
    pub tls_crt: PathBuf,
    /// kube-apiserver's serving key.
    pub tls_key: PathBuf,
    /// The ServiceAccount token signing key.
    pub sa_key: PathBuf,
    /// The ServiceAccount token verification key.
    pub sa_pub: PathBuf,
}

impl PkiFiles {
    /// Writes the files of `pki` into `dir`.
    pub(super) fn write(dir: &Path, pki: &Pki) -> Result<Self> {
        let write = |name: &str, text: &str| -> Result<PathBuf> {
            let p = dir.join(name);
            std::fs::write(&p, text).with_context(|| format!("writing {}", p.display()))?;
            Ok(p)
        };
        Ok(Self {
            ca: write("ca.crt", &pki.ca.cert_pem)?,
            tls_crt: write("apiserver.crt", &pki.apiserver.cert_pem)?,
            tls_key: write("apiserver.key", &pki.apiserver.key_pem)?,
            sa_key: write("sa.key", &pki.sa_signing_key_pem)?,
            sa_pub: write("sa.pub", &pki.sa_public_key_pem)?,
        })
    }
}

/// Removes data directories left by launchers that were killed (SIGKILL leaves no chance to
/// clean up; on tmpfs they would hold memory until reboot).
fn remove_stale(parent: &Path) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let ours = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with(DATA_DIR_PREFIX));
        if !ours {
            continue;
        }
        let owner = std::fs::read_to_string(path.join(OWNER_PID_FILE))
            .ok()
            .and_then(|p| p.trim().parse::<u32>().ok());
        let owner_alive = owner.is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists());
        if owner.is_some() && !owner_alive {
            tracing::info!(dir = %path.display(), "removing a stale control-plane data directory");
            let _ = std::fs::remove_dir_all(&path);
        }
    }
}

fn default_parent() -> PathBuf {
    let shm = PathBuf::from("/dev/shm");
    if shm.is_dir() {
        shm
    } else {
        std::env::temp_dir()
    }
}
