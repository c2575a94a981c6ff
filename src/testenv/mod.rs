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
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use kube_sentinel::testenv::{ControlPlane, ControlPlaneConfig};
//! let plane = ControlPlane::start(ControlPlaneConfig::from_build_script()?).await?;
//! let client = plane.admin_client().await?;
//! let sa_client = plane.service_account_client("default", "default").await?;
//! plane.stop().await;
//! # Ok(()) }
//! ```

mod certs;
mod kubeconfig;
mod process;
mod readiness;

use std::{
    net::{SocketAddr, TcpListener},
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::{
    authentication::v1::{TokenRequest, TokenRequestSpec},
    core::v1::ServiceAccount,
};
use kube::{
    Api, Client, Config,
    api::PostParams,
    config::{KubeConfigOptions, Kubeconfig},
};
use tokio::time::Instant;

pub use certs::{CertPair, Pki};
pub use kubeconfig::{
    Credentials, kubeconfig_for, to_yaml as kubeconfig_yaml, with_token, write as write_kubeconfig,
};
use process::Component;
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
}

impl ControlPlaneConfig {
    /// A config for binaries in `bin_dir`, with the controller manager.
    pub fn new(bin_dir: impl Into<PathBuf>) -> Self {
        Self {
            bin_dir: bin_dir.into(),
            controller_manager: true,
            data_parent: None,
            ready_timeout: Duration::from_secs(120),
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
    let out = std::process::Command::new("bash")
        .arg(&script)
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    if !out.status.success() {
        bail!("{} failed with {}", script.display(), out.status);
    }
    let dir = String::from_utf8(out.stdout).context("build.sh printed a non-UTF-8 path")?;
    Ok(PathBuf::from(dir.trim()))
}

/// A running control plane. Dropping it kills the processes; [`ControlPlane::stop`] stops them
/// gracefully and removes the data directory.
pub struct ControlPlane {
    components: Vec<Component>,
    data_dir: Option<tempfile::TempDir>,
    server: String,
    pki: Pki,
    admin_kubeconfig: Kubeconfig,
}

impl ControlPlane {
    /// Starts etcd, kube-apiserver and (if configured) kube-controller-manager and waits until
    /// the API server's `/readyz` answers `ok` (and, with the controller manager, until it has
    /// created the `default` ServiceAccount).
    pub async fn start(config: ControlPlaneConfig) -> Result<Self> {
        for bin in ["etcd", "kube-apiserver", "kube-controller-manager"] {
            let path = config.bin_dir.join(bin);
            if !path.is_file() {
                bail!(
                    "{} not found: build the control plane with tests/controlplane/build.sh",
                    path.display()
                );
            }
        }
        let parent = config
            .data_parent
            .clone()
            .unwrap_or_else(default_data_parent);
        remove_stale_data_dirs(&parent);
        let data_dir = tempfile::Builder::new()
            .prefix(DATA_DIR_PREFIX)
            .tempdir_in(&parent)
            .with_context(|| format!("creating a data directory in {}", parent.display()))?;
        let dir = data_dir.path().to_path_buf();
        std::fs::write(dir.join(OWNER_PID_FILE), std::process::id().to_string())
            .context("writing the data directory's owner pid")?;
        let pki = Pki::generate()?;
        let write = |name: &str, text: &str| -> Result<PathBuf> {
            let p = dir.join(name);
            std::fs::write(&p, text).with_context(|| format!("writing {}", p.display()))?;
            Ok(p)
        };
        let ca = write("ca.crt", &pki.ca.cert_pem)?;
        let tls_crt = write("apiserver.crt", &pki.apiserver.cert_pem)?;
        let tls_key = write("apiserver.key", &pki.apiserver.key_pem)?;
        let sa_key = write("sa.key", &pki.sa_signing_key_pem)?;
        let sa_pub = write("sa.pub", &pki.sa_public_key_pem)?;

        let [etcd_port, peer_port, api_port, kcm_port] = free_ports()?;
        let server = format!("https://127.0.0.1:{api_port}");
        let mut plane = Self {
            components: Vec::new(),
            data_dir: Some(data_dir),
            server: server.clone(),
            admin_kubeconfig: kubeconfig_for(
                &server,
                &pki.ca.cert_pem,
                "admin",
                Credentials::Certificate(pki.admin.clone()),
                None,
            ),
            pki,
        };
        let started = Instant::now();

        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let etcd_args = vec![
            "--name=s0".to_string(),
            format!("--data-dir={}", dir.join("etcd").display()),
            format!("--listen-client-urls={etcd_url}"),
            format!("--advertise-client-urls={etcd_url}"),
            format!("--listen-peer-urls={peer_url}"),
            format!("--initial-advertise-peer-urls={peer_url}"),
            format!("--initial-cluster=s0={peer_url}"),
            "--unsafe-no-fsync=true".into(),
            "--auto-compaction-retention=1".into(),
            "--quota-backend-bytes=2147483648".into(),
            "--log-level=warn".into(),
        ];
        plane.components.push(Component::spawn(
            "etcd",
            &config.bin_dir.join("etcd"),
            &etcd_args,
            dir.join("etcd.log"),
        )?);
        plane
            .wait_for_port(etcd_port, config.ready_timeout)
            .await
            .context("waiting for etcd")?;

        let mut api_args = vec![
            format!("--etcd-servers={etcd_url}"),
            "--bind-address=127.0.0.1".into(),
            format!("--secure-port={api_port}"),
            "--advertise-address=127.0.0.1".into(),
            // The loopback advertise address makes the `kubernetes` Endpoints invalid; nothing
            // here needs them.
            "--endpoint-reconciler-type=none".into(),
            format!("--cert-dir={}", dir.display()),
            format!("--tls-cert-file={}", tls_crt.display()),
            format!("--tls-private-key-file={}", tls_key.display()),
            format!("--client-ca-file={}", ca.display()),
            "--authorization-mode=RBAC".into(),
            format!("--service-account-issuer={server}"),
            format!("--service-account-key-file={}", sa_pub.display()),
            format!("--service-account-signing-key-file={}", sa_key.display()),
            "--service-cluster-ip-range=10.0.0.0/24".into(),
            "--allow-privileged=true".into(),
            "--profiling=false".into(),
        ];
        if !config.controller_manager {
            // Without the controller manager nobody creates `default` ServiceAccounts, and
            // the ServiceAccount admission plugin would then refuse every Pod.
            api_args.push("--disable-admission-plugins=ServiceAccount".into());
        }
        plane.components.push(Component::spawn(
            "kube-apiserver",
            &config.bin_dir.join("kube-apiserver"),
            &api_args,
            dir.join("kube-apiserver.log"),
        )?);
        let admin = plane.admin_client().await?;
        plane
            .wait_for_readyz(&admin, config.ready_timeout)
            .await
            .context("waiting for kube-apiserver /readyz")?;

        if config.controller_manager {
            let kcm_kubeconfig = dir.join("controller-manager.kubeconfig");
            let kc = kubeconfig_for(
                &server,
                &plane.pki.ca.cert_pem,
                "kube-controller-manager",
                Credentials::Certificate(plane.pki.controller_manager.clone()),
                None,
            );
            kubeconfig::write(&kc, &kcm_kubeconfig)?;
            let kcm_args = vec![
                format!("--kubeconfig={}", kcm_kubeconfig.display()),
                "--bind-address=127.0.0.1".into(),
                format!("--secure-port={kcm_port}"),
                "--leader-elect=false".into(),
                format!("--root-ca-file={}", ca.display()),
                format!("--service-account-private-key-file={}", sa_key.display()),
                "--use-service-account-credentials=false".into(),
                "--profiling=false".into(),
            ];
            plane.components.push(Component::spawn(
                "kube-controller-manager",
                &config.bin_dir.join("kube-controller-manager"),
                &kcm_args,
                dir.join("kube-controller-manager.log"),
            )?);
            plane
                .wait_for_default_service_account(&admin, config.ready_timeout)
                .await
                .context("waiting for kube-controller-manager")?;
        }
        tracing::info!(server = %plane.server, elapsed_ms = started.elapsed().as_millis() as u64, "control plane ready");
        Ok(plane)
    }

    /// The API server's URL (`https://127.0.0.1:PORT`).
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The PKI (CA, client certificates, ServiceAccount signing key).
    pub fn pki(&self) -> &Pki {
        &self.pki
    }

    /// The data directory (certificates, logs, etcd data).
    pub fn data_dir(&self) -> Option<&Path> {
        self.data_dir.as_ref().map(|d| d.path())
    }

    /// Process ids of the running components, by name.
    pub fn pids(&self) -> Vec<(&'static str, u32)> {
        self.components
            .iter()
            .filter_map(|c| c.pid().map(|p| (c.name(), p)))
            .collect()
    }

    /// The admin kubeconfig (client certificate in `system:masters`).
    pub fn admin_kubeconfig(&self) -> &Kubeconfig {
        &self.admin_kubeconfig
    }

    /// Writes the admin kubeconfig to `path`.
    pub fn write_admin_kubeconfig(&self, path: &Path) -> Result<()> {
        kubeconfig::write(&self.admin_kubeconfig, path)
    }

    /// An admin client.
    pub async fn admin_client(&self) -> Result<Client> {
        client_from_kubeconfig(self.admin_kubeconfig.clone()).await
    }

    /// A client acting as ServiceAccount `namespace/name`, authenticated with a token from
    /// the TokenRequest API (the ServiceAccount must exist).
    pub async fn service_account_client(&self, namespace: &str, name: &str) -> Result<Client> {
        let kubeconfig = self
            .service_account_kubeconfig(namespace, name, Duration::from_secs(3600))
            .await?;
        client_from_kubeconfig(kubeconfig).await
    }

    /// A kubeconfig that authenticates as ServiceAccount `namespace/name` with a fresh token
    /// (valid `ttl`), for running a program under that identity.
    pub async fn service_account_kubeconfig(
        &self,
        namespace: &str,
        name: &str,
        ttl: Duration,
    ) -> Result<Kubeconfig> {
        service_account_kubeconfig(&self.admin_kubeconfig, namespace, name, ttl).await
    }

    /// Stops every process (controller manager, API server, then etcd) and removes the data
    /// directory.
    pub async fn stop(mut self) {
        while let Some(component) = self.components.pop() {
            component.stop(Duration::from_secs(10)).await;
        }
        if let Some(dir) = self.data_dir.take() {
            let path = dir.path().to_path_buf();
            if let Err(e) = dir.close() {
                tracing::warn!(dir = %path.display(), error = %e, "could not remove the data directory");
            }
        }
    }

    /// Fails with the log tail of any component that has exited.
    pub fn check_running(&mut self) -> Result<()> {
        self.components
            .iter_mut()
            .try_for_each(Component::check_running)
    }

    async fn wait_for_port(&mut self, port: u16, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            self.check_running()?;
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("port {port} did not open within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn wait_for_readyz(&mut self, client: &Client, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            self.check_running()?;
            let req = http::Request::get("/readyz").body(Vec::new())?;
            let last = match client.request_text(req).await {
                Ok(body) if body.trim() == "ok" => return Ok(()),
                Ok(body) => body,
                Err(e) => e.to_string(),
            };
            if Instant::now() > deadline {
                bail!("/readyz not ok within {timeout:?}: {last}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn wait_for_default_service_account(
        &mut self,
        client: &Client,
        timeout: Duration,
    ) -> Result<()> {
        let api: Api<ServiceAccount> = Api::namespaced(client.clone(), "default");
        let deadline = Instant::now() + timeout;
        loop {
            self.check_running()?;
            if api.get_opt("default").await.ok().flatten().is_some() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("no `default` ServiceAccount within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// A client for a kubeconfig held in memory (its current context).
pub async fn client_from_kubeconfig(kubeconfig: Kubeconfig) -> Result<Client> {
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .context("reading the kubeconfig")?;
    Client::try_from(config).context("building a client")
}

/// Requests a token for ServiceAccount `namespace/name`, valid for `ttl`.
pub async fn request_token(
    admin: &Client,
    namespace: &str,
    name: &str,
    ttl: Duration,
) -> Result<String> {
    let api: Api<ServiceAccount> = Api::namespaced(admin.clone(), namespace);
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            expiration_seconds: Some(i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX)),
            ..Default::default()
        }),
        ..Default::default()
    };
    let response = api
        .create_token_request(name, &PostParams::default(), &request)
        .await
        .with_context(|| format!("requesting a token for ServiceAccount {namespace}/{name}"))?;
    response
        .status
        .and_then(|s| s.token)
        .filter(|t| !t.is_empty())
        .with_context(|| format!("the TokenRequest for {namespace}/{name} returned no token"))
}

/// A kubeconfig acting as ServiceAccount `namespace/name` on the cluster of
/// `admin_kubeconfig`, with a fresh TokenRequest token valid for `ttl`.
pub async fn service_account_kubeconfig(
    admin_kubeconfig: &Kubeconfig,
    namespace: &str,
    name: &str,
    ttl: Duration,
) -> Result<Kubeconfig> {
    let admin = client_from_kubeconfig(admin_kubeconfig.clone()).await?;
    let token = request_token(&admin, namespace, name, ttl).await?;
    kubeconfig::with_token(
        admin_kubeconfig,
        &format!("{namespace}-{name}"),
        token,
        namespace,
    )
}

const DATA_DIR_PREFIX: &str = "kube-sentinel-testenv-";
const OWNER_PID_FILE: &str = "owner.pid";

/// Removes data directories left by launchers that were killed (SIGKILL leaves no chance to
/// clean up; on tmpfs they would hold memory until reboot).
fn remove_stale_data_dirs(parent: &Path) {
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

fn default_data_parent() -> PathBuf {
    let shm = PathBuf::from("/dev/shm");
    if shm.is_dir() {
        shm
    } else {
        std::env::temp_dir()
    }
}

/// Picks `N` distinct free loopback ports by binding port 0 and releasing them together.
fn free_ports<const N: usize>() -> Result<[u16; N]> {
    let listeners = (0..N)
        .map(|_| TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))))
        .collect::<std::io::Result<Vec<_>>>()
        .context("finding free loopback ports")?;
    let mut ports = [0u16; N];
    for (port, listener) in ports.iter_mut().zip(&listeners) {
        *port = listener.local_addr()?.port();
    }
    Ok(ports)
}
