//! A local Kubernetes control plane for tests, the demo and benchmarks: etcd, kube-apiserver and
//! kube-controller-manager built from their upstream Go modules (`tests/controlplane/build.sh`),
//! started on free loopback ports with a generated PKI.
//!
//! The API server runs with `--authorization-mode=RBAC`, ServiceAccount token issuing (so
//! TokenRequest works) and the ValidatingAdmissionPolicy API. The controller manager (optional)
//! computes StatefulSet status, creates default ServiceAccounts and garbage-collects owned
//! objects, as in a real cluster. There is no kubelet: pods never run ([`PodReadiness`] marks
//! them Ready as a kubelet would).
//!
//! The pieces that run it serve every local tool: [`ChildProcess`] is the one runner of child
//! processes (the control plane's, the demo's programs, the e2e tests' programs) and
//! [`http_get`] the one probe of their HTTP endpoints.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use kube_sentinel::testenv::{ControlPlane, ControlPlaneConfig};
//! let plane = ControlPlane::start(ControlPlaneConfig::from_build_script()?).await?;
//! let client = plane.admin_client().await?;
//! let sa_client = plane.service_account_client("default", "default").await?;
//! plane.stop().await;
//! # Ok(()) }
//! ```

mod accounts;
mod certs;
mod control_plane;
mod data_dir;
mod kubeconfig;
mod loopback;
mod process;
mod readiness;

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context, Result, bail};

pub use accounts::{client_from_kubeconfig, request_token, service_account_kubeconfig};
pub use certs::{CertPair, Pki};
pub use control_plane::ControlPlane;
pub use kubeconfig::{
    Credentials, kubeconfig_for, to_yaml as kubeconfig_yaml, with_token, write as write_kubeconfig,
};
pub use loopback::{HttpResponse, free_port, free_ports, http_get};
pub(crate) use loopback::{http_delete, http_post};
pub use process::{ChildProcess, Tie};
pub use readiness::PodReadiness;

/// Where the launcher finds its binaries and how it runs them.
#[derive(Clone, Debug)]
pub struct ControlPlaneConfig {
    /// Directory holding `etcd`, `kube-apiserver` and `kube-controller-manager`.
    pub bin_dir: PathBuf,
    /// Start kube-controller-manager (StatefulSet status, default ServiceAccounts, garbage
    /// collection).
    pub controller_manager: bool,
    /// Parent directory for the data directory (default: `/dev/shm` when present, so etcd
    /// writes to memory).
    pub data_parent: Option<PathBuf>,
    /// How long to wait for `/readyz`.
    pub ready_timeout: Duration,
    /// Admission plugins enabled beyond the API server's defaults (e.g.
    /// `OwnerReferencesPermissionEnforcement`).
    pub admission_plugins: Vec<String>,
    /// Further kube-apiserver flags (e.g. `--watch-cache=false`, so that watches are served
    /// from etcd and resume until etcd compacts their revision).
    pub apiserver_flags: Vec<String>,
}

impl ControlPlaneConfig {
    /// A config for binaries in `bin_dir`, with the controller manager.
    pub fn new(bin_dir: impl Into<PathBuf>) -> Self {
        Self {
            bin_dir: bin_dir.into(),
            controller_manager: true,
            data_parent: None,
            ready_timeout: Duration::from_secs(120),
            admission_plugins: Vec::new(),
            apiserver_flags: Vec::new(),
        }
    }

    /// Resolves the binaries: `$KUBE_SENTINEL_BIN_DIR` when set, else the output of this
    /// checkout's `tests/controlplane/build.sh` (which builds them on first use).
    pub fn from_build_script() -> Result<Self> {
        if let Some(dir) = std::env::var_os("KUBE_SENTINEL_BIN_DIR") {
            return Ok(Self::new(PathBuf::from(dir)));
        }
        Ok(Self::new(build_control_plane()?))
    }
}

/// Runs `tests/controlplane/build.sh` from this crate's checkout and returns the bin directory.
pub fn build_control_plane() -> Result<PathBuf> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/controlplane/build.sh");
    if !script.exists() {
        bail!(
            "no control-plane binaries: set KUBE_SENTINEL_BIN_DIR or --bin-dir to a directory \
             with etcd, kube-apiserver and kube-controller-manager ({} is missing)",
            script.display()
        );
    }
    run_build_script(&script)
}

/// Runs build script `script` (which builds or finds something cached and prints its path)
/// with its progress on our standard error; the path it printed.
pub(crate) fn run_build_script(script: &Path) -> Result<PathBuf> {
    let out = std::process::Command::new("bash")
        .arg(script)
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    if !out.status.success() {
        bail!("{} failed with {}", script.display(), out.status);
    }
    let path = String::from_utf8(out.stdout)
        .with_context(|| format!("{} printed a non-UTF-8 path", script.display()))?;
    Ok(PathBuf::from(path.trim()))
}
