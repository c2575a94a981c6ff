//! Test harness: one real control plane per test run, shared by every test in this binary.
//!
//! The control plane runs in a child process (`kube-sentinel testenv --exit-on-stdin-eof`)
//! whose standard input is a pipe held by this process: however this process ends (success,
//! panic, abort, SIGKILL) the pipe closes and the control plane stops and removes its data.
//! Set `KUBE_SENTINEL_KUBECONFIG` to use a control plane that is already running instead.
//!
//! Tests share the API server, so each works in its own namespace ([`ControlPlane::namespace`])
//! and names cluster-scoped objects after it.

#![allow(dead_code)] // Each test module uses a different part of the harness.

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::{Mutex, OnceLock},
    time::{Duration, Instant},
};

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::{
    Api, Client,
    api::{ObjectMeta, PostParams},
    config::Kubeconfig,
};
use kube_sentinel::testenv::{self, ChildProcess, Tie};

mod subcommand;
pub use subcommand::SubcommandRun;

/// The shared control plane, as seen by tests.
pub struct ControlPlane {
    kubeconfig: Kubeconfig,
    kubeconfig_path: PathBuf,
    workdir: PathBuf,
    _process: Option<Mutex<ChildProcess>>,
}

static PLANE: OnceLock<Result<ControlPlane, String>> = OnceLock::new();

/// The control plane for this test run, started on first use.
pub fn control_plane() -> &'static ControlPlane {
    match PLANE.get_or_init(start) {
        Ok(plane) => plane,
        Err(e) => panic!("no control plane: {e}"),
    }
}

fn start() -> Result<ControlPlane, String> {
    let workdir = std::env::temp_dir().join(format!("kube-sentinel-e2e-{}", std::process::id()));
    std::fs::create_dir_all(&workdir)
        .map_err(|e| format!("creating {}: {e}", workdir.display()))?;
    if let Some(path) = std::env::var_os("KUBE_SENTINEL_KUBECONFIG") {
        let path = PathBuf::from(path);
        let kubeconfig =
            Kubeconfig::read_from(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        return Ok(ControlPlane {
            kubeconfig,
            kubeconfig_path: path,
            workdir,
            _process: None,
        });
    }
    let kubeconfig_path = workdir.join("admin.kubeconfig");
    let mut command = Command::new(env!("CARGO_BIN_EXE_kube-sentinel"));
    command
        .args(["testenv", "--exit-on-stdin-eof", "--quiet", "--kubeconfig"])
        .arg(&kubeconfig_path);
    let mut process = ChildProcess::spawn(
        "testenv",
        command,
        Tie::StdinPipe,
        workdir.join("testenv.log"),
    )
    .map_err(|e| format!("starting kube-sentinel testenv: {e:#}"))?;
    // A cold control-plane build happens in build.sh before this; allow for it.
    let deadline = Instant::now() + Duration::from_secs(40 * 60);
    while !kubeconfig_path.exists() {
        process.check_running().map_err(|e| format!("{e:#}"))?;
        if Instant::now() > deadline {
            process.kill();
            return Err("testenv did not become ready".into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let kubeconfig = Kubeconfig::read_from(&kubeconfig_path)
        .map_err(|e| format!("{}: {e}", kubeconfig_path.display()))?;
    Ok(ControlPlane {
        kubeconfig,
        kubeconfig_path,
        workdir,
        _process: Some(Mutex::new(process)),
    })
}

impl ControlPlane {
    /// A fresh admin client (clients are bound to the test's runtime, so never shared).
    pub async fn admin(&self) -> Client {
        testenv::client_from_kubeconfig(self.kubeconfig.clone())
            .await
            .expect("admin client")
    }

    /// Path of the admin kubeconfig.
    pub fn admin_kubeconfig_path(&self) -> &Path {
        &self.kubeconfig_path
    }

    /// A directory for this run's files.
    pub fn workdir(&self) -> &Path {
        &self.workdir
    }

    /// Creates a namespace `prefix-<random>` for one test and returns its name.
    pub async fn namespace(&self, prefix: &str) -> String {
        let name = format!(
            "{prefix}-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                ..Default::default()
            },
            ..Default::default()
        };
        Api::<Namespace>::all(self.admin().await)
            .create(&PostParams::default(), &ns)
            .await
            .expect("create namespace");
        name
    }

    /// Creates ServiceAccount `namespace/name` if it does not exist.
    pub async fn ensure_service_account(&self, namespace: &str, name: &str) {
        let api: Api<ServiceAccount> = Api::namespaced(self.admin().await, namespace);
        if api
            .get_opt(name)
            .await
            .expect("get serviceaccount")
            .is_none()
        {
            let sa = ServiceAccount {
                metadata: ObjectMeta {
                    name: Some(name.into()),
                    ..Default::default()
                },
                ..Default::default()
            };
            api.create(&PostParams::default(), &sa)
                .await
                .expect("create serviceaccount");
        }
    }

    /// A client acting as ServiceAccount `namespace/name` (created if missing), authenticated
    /// with a TokenRequest token.
    pub async fn service_account_client(&self, namespace: &str, name: &str) -> Client {
        let kc = self.service_account_kubeconfig(namespace, name).await;
        testenv::client_from_kubeconfig(kc)
            .await
            .expect("service account client")
    }

    /// A kubeconfig acting as ServiceAccount `namespace/name` (created if missing).
    pub async fn service_account_kubeconfig(&self, namespace: &str, name: &str) -> Kubeconfig {
        self.ensure_service_account(namespace, name).await;
        testenv::service_account_kubeconfig(
            &self.kubeconfig,
            namespace,
            name,
            Duration::from_secs(3600),
        )
        .await
        .expect("service account kubeconfig")
    }

    /// Writes a kubeconfig for ServiceAccount `namespace/name` to a file, for a program run
    /// under that identity ([`Program::spawn`]).
    pub async fn service_account_kubeconfig_file(&self, namespace: &str, name: &str) -> PathBuf {
        let kc = self.service_account_kubeconfig(namespace, name).await;
        let path = self.workdir.join(format!("{namespace}-{name}.kubeconfig"));
        std::fs::write(&path, testenv::kubeconfig_yaml(&kc).expect("yaml"))
            .expect("write kubeconfig");
        path
    }
}

/// A `kube-sentinel` subcommand running as a separate process (a [`ChildProcess`] tied by its
/// stdin); killed when dropped, and it exits by itself when this test process ends (its stdin
/// closes).
pub struct Program(ChildProcess);

impl Program {
    /// Runs `kube-sentinel <args>` with `KUBECONFIG=kubeconfig`, logging to a file in the
    /// run's work directory.
    pub fn spawn(name: &str, args: &[&str], kubeconfig: &Path) -> Self {
        Self::spawn_with(name, args, kubeconfig, control_plane().workdir(), &[])
    }

    /// [`Program::spawn`] with extra environment variables `env`, logging to a file in
    /// `log_dir` (for a program of a control plane other than the shared one).
    pub fn spawn_with(
        name: &str,
        args: &[&str],
        kubeconfig: &Path,
        log_dir: &Path,
        env: &[(&str, &str)],
    ) -> Self {
        let log = log_dir.join(format!("{name}-{}.log", uuid::Uuid::new_v4().simple()));
        let mut command = Command::new(env!("CARGO_BIN_EXE_kube-sentinel"));
        command
            .arg("--exit-on-stdin-eof")
            .args(args)
            // The harness's own KUBE_SENTINEL_KUBECONFIG names the admin kubeconfig; a program
            // must run only as the identity of the kubeconfig it is given.
            .env_remove("KUBE_SENTINEL_KUBECONFIG")
            .env("KUBECONFIG", kubeconfig)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info,kube_sentinel=debug".into()),
            )
            .envs(env.iter().copied());
        Self(ChildProcess::spawn(name, command, Tie::StdinPipe, log).expect("spawn kube-sentinel"))
    }

    /// The program's log so far.
    pub fn log(&self) -> String {
        self.0.log()
    }

    /// The process id, unless it is known to have exited (to signal it).
    pub fn pid(&self) -> Option<u32> {
        self.0.pid()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.0.is_running()
    }

    /// Sends SIGTERM (as Kubernetes does to stop a pod) and waits up to `timeout` for the
    /// process to exit; returns its exit status, or None if it is still running.
    pub fn terminate(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        self.0.terminate(timeout)
    }

    /// Kills the process (as a crash would) and waits for it.
    pub fn kill(&mut self) {
        self.0.kill();
    }
}

/// `GET path` on a local program's port ([`testenv::http_get`]): status and body, `None` if
/// nothing answers.
pub async fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let response = testenv::http_get(port, path).await.ok()?;
    Some((response.status, response.body))
}

/// The body of `GET path` on a local program's port, trimmed, if it answers 200.
/// The value of one metric sample (`name{labels}` exactly as exposed) on `port`'s `/metrics`;
/// 0 when absent or unreadable.
pub async fn metric_sample(port: u16, sample: &str) -> u64 {
    let text = http_get(port, "/metrics")
        .await
        .map(|(_, body)| body)
        .unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' '))
        .and_then(|n| n.trim().parse::<f64>().ok())
        .map_or(0, |n| n as u64)
}

pub async fn http_ok_body(port: u16, path: &str) -> Option<String> {
    let (status, body) = http_get(port, path).await?;
    (status == 200).then(|| body.trim().to_string())
}

/// Polls `check` every 100 ms until it returns `Some`, or panics after `timeout` with `what`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Repository root, for manifests under `deploy/`.
pub const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// Installs the committed StatefulCluster CRD (idempotent) and waits until it is served.
pub async fn install_crd(client: &Client) -> kube::api::ApiResource {
    let yaml = std::fs::read_to_string(format!("{REPO}/deploy/crd/statefulcluster.yaml"))
        .expect("read CRD");
    kube_sentinel::manifests::apply(client, &yaml, "e2e", "default")
        .await
        .expect("apply CRD");
    let gvk = kube::api::GroupVersionKind::gvk(
        kube_sentinel::contract::DEFAULT_GROUP,
        kube_sentinel::contract::DEFAULT_VERSION,
        kube_sentinel::contract::DEFAULT_KIND,
    );
    eventually(
        Duration::from_secs(30),
        "StatefulCluster served",
        || async {
            kube::discovery::pinned_kind(client, &gvk)
                .await
                .ok()
                .map(|(ar, _)| ar)
        },
    )
    .await
}

/// The manifests of `deploy/<component>/`, moved from namespace `kube-sentinel` to
/// `namespace`, with cluster-scoped names made unique to it, applied as admin.
pub async fn apply_component_manifests(client: &Client, component: &str, namespace: &str) {
    let dir = format!("{REPO}/deploy/{component}");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("deploy dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .filter(|p| !is_kustomization(p))
        .collect();
    files.sort();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("read manifest");
        let yaml = kube_sentinel::manifests::without_kinds(
            &relocate(&text, namespace),
            &["Namespace", "Deployment"],
        )
        .expect("parse");
        kube_sentinel::manifests::apply(client, &yaml, "e2e", namespace)
            .await
            .unwrap_or_else(|e| panic!("apply {}: {e:#}", file.display()));
    }
}

/// Whether `path` is a kustomization (not a manifest).
pub fn is_kustomization(path: &Path) -> bool {
    path.file_name().is_some_and(|n| n == "kustomization.yaml")
}

/// Rewrites manifests written for namespace `kube-sentinel` to `namespace`.
pub fn relocate(text: &str, namespace: &str) -> String {
    text.replace(
        "namespace: kube-sentinel\n",
        &format!("namespace: {namespace}\n"),
    )
    .replace("name: kube-sentinel-", &format!("name: {namespace}-"))
    .replace(
        "policyName: kube-sentinel-",
        &format!("policyName: {namespace}-"),
    )
}

/// A program whose log (under this name) is printed when the test fails.
pub struct Logged(pub Program, pub &'static str);

impl Drop for Logged {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- {} log ----\n{}", self.1, self.0.log());
        }
    }
}

/// A process stopped with SIGSTOP; continued (SIGCONT) when dropped, even by a panic.
pub struct Stopped(nix::unistd::Pid);

impl Stopped {
    /// Stops process `pid`.
    pub fn stop(pid: u32) -> Self {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).expect("a pid fits an i32"));
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP)
            .unwrap_or_else(|e| panic!("SIGSTOP {pid}: {e}"));
        Self(pid)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(self.0, nix::sys::signal::Signal::SIGCONT);
    }
}

/// Starts a control plane of the test's own (for a test that stops, breaks or reconfigures
/// it) and creates namespace `ns` in it; the plane and an admin client.
pub async fn own_control_plane(
    config: testenv::ControlPlaneConfig,
    ns: &str,
) -> (testenv::ControlPlane, Client) {
    let plane = testenv::ControlPlane::start(config)
        .await
        .expect("own control plane");
    let admin = plane.admin_client().await.expect("admin");
    let namespace = Namespace {
        metadata: ObjectMeta {
            name: Some(ns.into()),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<Namespace>::all(admin.clone())
        .create(&PostParams::default(), &namespace)
        .await
        .expect("namespace");
    (plane, admin)
}

/// An operator for `ns` on a control plane of the test's own, as its ServiceAccount (RBAC
/// from `deploy/operator`; the CRD is the caller's), with `extra` arguments and its log in
/// `dir`; its metrics port. Not waited for.
pub async fn spawn_operator(
    plane: &testenv::ControlPlane,
    ns: &str,
    dir: &Path,
    extra: &[&str],
) -> (Program, u16) {
    let admin = plane.admin_client().await.expect("admin");
    apply_component_manifests(&admin, "operator", ns).await;
    let kubeconfig = plane
        .service_account_kubeconfig(ns, &format!("{ns}-operator"), Duration::from_secs(3600))
        .await
        .expect("operator kubeconfig");
    let path = dir.join("operator.kubeconfig");
    testenv::write_kubeconfig(&kubeconfig, &path).expect("write kubeconfig");
    let port = testenv::free_port().expect("port");
    let addr = format!("127.0.0.1:{port}");
    let mut args = vec!["operator", "--namespace", ns, "--metrics-addr", &addr];
    args.extend_from_slice(extra);
    (
        Program::spawn_with("operator", &args, &path, dir, &[]),
        port,
    )
}

/// kubectl, built from its upstream module by `tests/controlplane/build-kubectl.sh` (cached
/// across runs), once per test run.
pub fn kubectl() -> &'static Path {
    static KUBECTL: OnceLock<PathBuf> = OnceLock::new();
    KUBECTL.get_or_init(|| {
        let out = std::process::Command::new("bash")
            .arg(format!("{REPO}/tests/controlplane/build-kubectl.sh"))
            .stderr(std::process::Stdio::inherit())
            .output()
            .expect("run build-kubectl.sh");
        assert!(out.status.success(), "build-kubectl.sh failed");
        PathBuf::from(String::from_utf8(out.stdout).expect("a UTF-8 path").trim())
    })
}

/// Runs kubectl with `args` (and `stdin`), as the user of `kubeconfig`; its stdout, or a
/// panic with its stderr.
pub fn run_kubectl(kubeconfig: &Path, args: &[&str], stdin: Option<&str>) -> String {
    let out = kubectl_output(kubeconfig, args, stdin);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "kubectl {args:?}: {stderr}");
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

/// Runs kubectl with `args` (and `stdin`), as the user of `kubeconfig`; whatever it did.
pub fn kubectl_output(
    kubeconfig: &Path,
    args: &[&str],
    stdin: Option<&str>,
) -> std::process::Output {
    use std::io::Write as _;
    let mut child = std::process::Command::new(kubectl())
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn kubectl");
    if let (Some(text), Some(mut input)) = (stdin, child.stdin.take()) {
        input.write_all(text.as_bytes()).expect("kubectl stdin");
    }
    drop(child.stdin.take());
    child.wait_with_output().expect("kubectl")
}

/// A control plane of the test's own where `deploy/<kustomization>` was rendered by
/// `kubectl kustomize` and applied for real with server-side apply, as the admin.
pub struct Installed {
    pub plane: testenv::ControlPlane,
    pub admin: Client,
    /// Holds the admin kubeconfig and whatever else the test writes.
    pub dir: tempfile::TempDir,
    pub kubeconfig: PathBuf,
    /// What `kubectl kustomize` rendered.
    pub rendered: String,
    /// What `kubectl apply` printed.
    pub applied: String,
}

/// Installs `deploy/<kustomization>` on a control plane of its own with namespace `ns`.
pub async fn install_on_own_plane(ns: &str, kustomization: &str) -> Installed {
    install_kustomization_on_own_plane(ns, Path::new(&format!("{REPO}/deploy/{kustomization}")))
        .await
}

/// Installs the kustomization in directory `path` on a control plane of its own with
/// namespace `ns`.
pub async fn install_kustomization_on_own_plane(ns: &str, path: &Path) -> Installed {
    let config = testenv::ControlPlaneConfig::from_build_script().expect("control-plane binaries");
    let (plane, admin) = own_control_plane(config, ns).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = dir.path().join("admin.kubeconfig");
    plane
        .write_admin_kubeconfig(&kubeconfig)
        .expect("admin kubeconfig");
    let path = path.to_str().expect("a UTF-8 path");
    let rendered = run_kubectl(&kubeconfig, &["kustomize", path], None);
    let apply = [
        "apply",
        "--server-side",
        "--field-manager",
        "e2e",
        "-f",
        "-",
    ];
    let applied = run_kubectl(&kubeconfig, &apply, Some(&rendered));
    Installed {
        plane,
        admin,
        dir,
        kubeconfig,
        rendered,
        applied,
    }
}
