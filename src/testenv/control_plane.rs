//! The running control plane: etcd, kube-apiserver and kube-controller-manager started in that
//! order as child processes, each waited for, and stopped in reverse.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::{Api, Client, config::Kubeconfig};
use tokio::time::Instant;

use super::{
    ChildProcess, ControlPlaneConfig, Credentials, Pki, Tie,
    accounts::{client_from_kubeconfig, quiet_client_from_kubeconfig, service_account_kubeconfig},
    data_dir::{self, PkiFiles},
    kubeconfig::{self, kubeconfig_for},
    loopback::{free_ports, http_post},
};

/// The programs of a control plane, as named in its bin directory.
const BINARIES: [&str; 3] = ["etcd", "kube-apiserver", "kube-controller-manager"];
/// How long a stopping component has between SIGTERM and SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// The loopback ports of one control plane.
struct Ports {
    etcd: u16,
    etcd_peer: u16,
    apiserver: u16,
    controller_manager: u16,
}

impl Ports {
    fn pick() -> Result<Self> {
        let [etcd, etcd_peer, apiserver, controller_manager] = free_ports()?;
        Ok(Self {
            etcd,
            etcd_peer,
            apiserver,
            controller_manager,
        })
    }

    fn etcd_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.etcd)
    }
}

/// A running control plane. Dropping it kills the processes; [`ControlPlane::stop`] stops them
/// gracefully and removes the data directory.
pub struct ControlPlane {
    components: Vec<Component>,
    data_dir: Option<tempfile::TempDir>,
    server: String,
    pki: Pki,
    admin_kubeconfig: Kubeconfig,
    etcd_port: u16,
    bin_dir: PathBuf,
    ready_timeout: Duration,
}

/// A component's process and what started it, to start it again after a fault.
struct Component {
    process: ChildProcess,
    args: Vec<String>,
    /// How many times it was started (its log is `<name>.log`, then `<name>.<starts>.log`).
    starts: u32,
}

impl ControlPlane {
    /// Starts etcd, kube-apiserver and (if configured) kube-controller-manager and waits until
    /// the API server's `/readyz` answers `ok` (and, with the controller manager, until it has
    /// created the `default` ServiceAccount).
    pub async fn start(config: ControlPlaneConfig) -> Result<Self> {
        check_binaries(&config.bin_dir)?;
        let data_dir = data_dir::create(config.data_parent.clone())?;
        let pki = Pki::generate()?;
        let files = PkiFiles::write(data_dir.path(), &pki)?;
        let ports = Ports::pick()?;
        let server = format!("https://127.0.0.1:{}", ports.apiserver);
        let mut plane = Self {
            components: Vec::new(),
            data_dir: Some(data_dir),
            admin_kubeconfig: kubeconfig_for(
                &server,
                &pki.ca.cert_pem,
                "admin",
                Credentials::Certificate(pki.admin.clone()),
                None,
            ),
            server,
            pki,
            etcd_port: ports.etcd,
            bin_dir: config.bin_dir.clone(),
            ready_timeout: config.ready_timeout,
        };
        let started = Instant::now();
        plane.start_etcd(&config, &ports).await?;
        let admin = plane.start_apiserver(&config, &ports, &files).await?;
        if config.controller_manager {
            plane
                .start_controller_manager(&config, &ports, &files, &admin)
                .await?;
        }
        tracing::info!(server = %plane.server, elapsed_ms = started.elapsed().as_millis() as u64, "control plane ready");
        Ok(plane)
    }

    async fn start_etcd(&mut self, config: &ControlPlaneConfig, ports: &Ports) -> Result<()> {
        let args = etcd_args(self.dir(), ports);
        self.spawn("etcd", args)?;
        self.wait_for_port(ports.etcd, config.ready_timeout)
            .await
            .context("waiting for etcd")
    }

    /// Starts the API server and returns an admin client once it is ready.
    async fn start_apiserver(
        &mut self,
        config: &ControlPlaneConfig,
        ports: &Ports,
        files: &PkiFiles,
    ) -> Result<Client> {
        let mut args = apiserver_args(self.dir(), &self.server, ports, files);
        if !config.controller_manager {
            // Without the controller manager nobody creates `default` ServiceAccounts, and
            // the ServiceAccount admission plugin would then refuse every Pod.
            args.push("--disable-admission-plugins=ServiceAccount".into());
        }
        if !config.admission_plugins.is_empty() {
            args.push(format!(
                "--enable-admission-plugins={}",
                config.admission_plugins.join(",")
            ));
        }
        args.extend(config.apiserver_flags.iter().cloned());
        self.spawn("kube-apiserver", args)?;
        let probe = quiet_client_from_kubeconfig(self.admin_kubeconfig.clone()).await?;
        self.wait_for_readyz(&probe, config.ready_timeout)
            .await
            .context("waiting for kube-apiserver /readyz")?;
        self.admin_client().await
    }

    async fn start_controller_manager(
        &mut self,
        config: &ControlPlaneConfig,
        ports: &Ports,
        files: &PkiFiles,
        admin: &Client,
    ) -> Result<()> {
        let kubeconfig_path = self.dir().join("controller-manager.kubeconfig");
        let identity = kubeconfig_for(
            &self.server,
            &self.pki.ca.cert_pem,
            "kube-controller-manager",
            Credentials::Certificate(self.pki.controller_manager.clone()),
            None,
        );
        kubeconfig::write(&identity, &kubeconfig_path)?;
        let args = controller_manager_args(&kubeconfig_path, ports, files);
        self.spawn("kube-controller-manager", args)?;
        self.wait_for_default_service_account(admin, config.ready_timeout)
            .await
            .context("waiting for kube-controller-manager")
    }

    /// Spawns the binary `name` of the bin directory, logging to `<data dir>/<name>.log`.
    fn spawn(&mut self, name: &str, args: Vec<String>) -> Result<()> {
        let process = self.launch(name, &args, 1)?;
        self.components.push(Component {
            process,
            args,
            starts: 1,
        });
        Ok(())
    }

    fn launch(&self, name: &str, args: &[String], starts: u32) -> Result<ChildProcess> {
        let mut command = Command::new(self.bin_dir.join(name));
        command.args(args);
        let log = match starts {
            1 => self.dir().join(format!("{name}.log")),
            n => self.dir().join(format!("{name}.{n}.log")),
        };
        ChildProcess::spawn(name, command, Tie::ParentDeathSignal, log)
    }

    /// Kills component `name` (`etcd`, `kube-apiserver` or `kube-controller-manager`) with
    /// SIGKILL, as a crash would, starts it again with the same flags and ports, and waits
    /// until it serves again. The fault-injection suite's restarts.
    pub async fn kill_and_restart(&mut self, name: &str) -> Result<()> {
        let index = self
            .components
            .iter()
            .position(|c| c.process.name() == name)
            .with_context(|| format!("no component {name} in this control plane"))?;
        self.components[index].process.kill();
        let starts = self.components[index].starts + 1;
        let process = self.launch(name, &self.components[index].args, starts)?;
        let component = &mut self.components[index];
        component.process = process;
        component.starts = starts;
        tracing::info!(
            component = name,
            starts,
            "control-plane component restarted"
        );
        match name {
            "etcd" => self.wait_for_port(self.etcd_port, self.ready_timeout).await,
            "kube-apiserver" => {
                let probe = quiet_client_from_kubeconfig(self.admin_kubeconfig.clone()).await?;
                self.wait_for_readyz(&probe, self.ready_timeout).await
            }
            _ => Ok(()),
        }
        .with_context(|| format!("waiting for the restarted {name}"))
    }

    fn dir(&self) -> PathBuf {
        self.data_dir
            .as_ref()
            .expect("the data directory lives until stop() consumes the plane")
            .path()
            .to_path_buf()
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
    pub fn pids(&self) -> Vec<(&str, u32)> {
        self.components
            .iter()
            .filter_map(|c| c.process.pid().map(|p| (c.process.name(), p)))
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

    /// Compacts etcd's history up to `revision` (a resource version): a watch that resumes
    /// from an older one gets 410 Gone and must list again. The API server's watch cache
    /// serves watches on its own unless started with `--watch-cache=false`.
    pub async fn compact_etcd(&self, revision: u64) -> Result<()> {
        let body = format!(r#"{{"revision":"{revision}","physical":true}}"#);
        http_post(self.etcd_port, "/v3/kv/compaction", &body)
            .await?
            .ok_body()
            .map(drop)
            .with_context(|| format!("compacting etcd to revision {revision}"))
    }

    /// Stops every process (controller manager, API server, then etcd) and removes the data
    /// directory.
    pub async fn stop(mut self) {
        while let Some(component) = self.components.pop() {
            component.process.stop(STOP_GRACE).await;
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
            .try_for_each(|c| c.process.check_running())
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

/// Fails unless every control-plane binary is in `bin_dir`.
fn check_binaries(bin_dir: &Path) -> Result<()> {
    for bin in BINARIES {
        let path = bin_dir.join(bin);
        if !path.is_file() {
            bail!(
                "{} not found: build the control plane with tests/controlplane/build.sh",
                path.display()
            );
        }
    }
    Ok(())
}

fn etcd_args(dir: PathBuf, ports: &Ports) -> Vec<String> {
    let etcd_url = ports.etcd_url();
    let peer_url = format!("http://127.0.0.1:{}", ports.etcd_peer);
    vec![
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
    ]
}

fn apiserver_args(dir: PathBuf, server: &str, ports: &Ports, files: &PkiFiles) -> Vec<String> {
    vec![
        format!("--etcd-servers={}", ports.etcd_url()),
        "--bind-address=127.0.0.1".into(),
        format!("--secure-port={}", ports.apiserver),
        "--advertise-address=127.0.0.1".into(),
        // The loopback advertise address makes the `kubernetes` Endpoints invalid; nothing
        // here needs them.
        "--endpoint-reconciler-type=none".into(),
        format!("--cert-dir={}", dir.display()),
        format!("--tls-cert-file={}", files.tls_crt.display()),
        format!("--tls-private-key-file={}", files.tls_key.display()),
        format!("--client-ca-file={}", files.ca.display()),
        "--authorization-mode=RBAC".into(),
        format!("--service-account-issuer={server}"),
        format!("--service-account-key-file={}", files.sa_pub.display()),
        format!(
            "--service-account-signing-key-file={}",
            files.sa_key.display()
        ),
        // Room for thousands of Services (the bench's churn creates 2,000 at a time; a /24
        // runs out at 253).
        "--service-cluster-ip-range=10.0.0.0/16".into(),
        "--allow-privileged=true".into(),
        "--profiling=false".into(),
    ]
}

fn controller_manager_args(kubeconfig: &Path, ports: &Ports, files: &PkiFiles) -> Vec<String> {
    vec![
        format!("--kubeconfig={}", kubeconfig.display()),
        "--bind-address=127.0.0.1".into(),
        format!("--secure-port={}", ports.controller_manager),
        "--leader-elect=false".into(),
        format!("--root-ca-file={}", files.ca.display()),
        format!(
            "--service-account-private-key-file={}",
            files.sa_key.display()
        ),
        "--use-service-account-credentials=false".into(),
        "--profiling=false".into(),
        // The defaults (20 requests a second, 5 StatefulSets at a time) are sized for a
        // shared production API server; the bench's fleet of 1,000 StatefulSets (3,000 pods)
        // took longer than its 3 minutes to settle behind them.
        "--kube-api-qps=200".into(),
        "--kube-api-burst=400".into(),
        "--concurrent-statefulset-syncs=20".into(),
    ]
}
