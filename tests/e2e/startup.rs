//! What each program does when it cannot start as asked: a missing kubeconfig, an API server
//! that does not answer, a CRD not installed, a ServiceAccount with no rights. Either one
//! clear line and a non-zero exit, or (where waiting is what a user expects) a retry that says
//! so in its log while `/readyz` is not ok; never a panic, never a silent hang.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use kube_sentinel::testenv::{self, ControlPlaneConfig};

use crate::support::{self, control_plane, http_get};

/// Longest a program may take to give up on a cause it cannot wait out (2 noisy cores).
const EXIT_WITHIN: Duration = Duration::from_secs(30);
/// How long a program that waits is watched waiting.
const WATCHED: Duration = Duration::from_secs(12);

/// One program run with its output in a file, killed when dropped.
struct Run {
    child: Child,
    output: PathBuf,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Run {
    /// `kube-sentinel <program> --metrics-addr 127.0.0.1:<free> <args>` with `KUBECONFIG`.
    fn start(program: &str, args: &[&str], kubeconfig: &Path) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let output = dir.path().join("output.log");
        let file = std::fs::File::create(&output).expect("log file");
        let port = testenv::free_port().expect("port");
        let child = Command::new(env!("CARGO_BIN_EXE_kube-sentinel"))
            .arg(program)
            .args(["--metrics-addr", &format!("127.0.0.1:{port}")])
            .args(args)
            .env_remove("KUBE_SENTINEL_KUBECONFIG")
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log file"))
            .stderr(file)
            .spawn()
            .expect("spawn kube-sentinel");
        Self {
            child,
            output,
            port,
            _dir: dir,
        }
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.output).unwrap_or_default()
    }

    /// The exit code, if the program ended within `within`.
    fn exited(&mut self, within: Duration) -> Option<i32> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return Some(status.code().unwrap_or(-1));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    async fn readyz(&self) -> Option<u16> {
        http_get(self.port, "/readyz")
            .await
            .map(|(status, _)| status)
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a program did about a cause it cannot wait out: one line naming `what`, a non-zero
/// exit, no panic.
fn assert_one_clear_line(run: &mut Run, program: &str, what: &str) {
    let code = run.exited(EXIT_WITHIN);
    let output = run.output();
    let lines: Vec<&str> = output.lines().filter(|l| !l.trim().is_empty()).collect();
    eprintln!("{program}: exit {code:?}, output {output:?}");
    assert!(
        !output.contains("panicked"),
        "{program} panicked:\n{output}"
    );
    assert!(
        code.is_some_and(|c| c != 0),
        "{program}: exit {code:?} within {EXIT_WITHIN:?}:\n{output}"
    );
    let errors: Vec<&&str> = lines.iter().filter(|l| l.contains(what)).collect();
    assert!(
        !errors.is_empty() && lines.len() <= 3,
        "{program}: not one clear line naming {what:?}:\n{output}"
    );
}

/// What a program did about a cause it may wait out: still running after [`WATCHED`], not
/// ready, a log line naming `what`, no panic.
async fn assert_waits_unready(run: &mut Run, program: &str, what: &[&str]) {
    let code = run.exited(WATCHED);
    let output = run.output();
    eprintln!(
        "{program}: exit {code:?} after {WATCHED:?}, output:\n{}",
        output.lines().take(12).collect::<Vec<_>>().join("\n")
    );
    assert!(
        !output.contains("panicked"),
        "{program} panicked:\n{output}"
    );
    if let Some(code) = code {
        // Giving up is also acceptable, if it says why.
        assert_ne!(code, 0, "{program} exited 0:\n{output}");
        assert!(
            what.iter().any(|w| output.contains(w)),
            "{program}: no line naming {what:?}:\n{output}"
        );
        return;
    }
    assert_ne!(
        run.readyz().await,
        Some(200),
        "{program} ready while it cannot work:\n{output}"
    );
    assert!(
        what.iter().any(|w| output.contains(w)),
        "{program}: waits without a line naming {what:?}:\n{output}"
    );
}

#[test]
fn a_missing_kubeconfig_ends_either_program_with_one_line() {
    let missing = Path::new("/nonexistent/kube-sentinel-startup.kubeconfig");
    for program in ["sentinel", "operator"] {
        let mut run = Run::start(
            program,
            &["--kubeconfig", missing.to_str().expect("utf-8")],
            missing,
        );
        assert_one_clear_line(&mut run, program, "kubeconfig");
    }
}

#[tokio::test]
async fn an_unreachable_api_server_is_waited_for_unready_and_said() {
    // A port nobody listens on: connections are refused at once.
    let port = testenv::free_port().expect("port");
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = dir.path().join("unreachable.kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: c\n\
             clusters: [{{name: c, cluster: {{server: 'https://127.0.0.1:{port}', insecure-skip-tls-verify: true}}}}]\n\
             users: [{{name: u, user: {{token: nobody}}}}]\n\
             contexts: [{{name: c, context: {{cluster: c, user: u, namespace: default}}}}]\n"
        ),
    )
    .expect("write kubeconfig");
    for program in ["sentinel", "operator"] {
        let mut run = Run::start(program, &["--namespace", "default"], &kubeconfig);
        assert_waits_unready(&mut run, program, &["the API server does not answer"]).await;
    }
}

#[tokio::test]
async fn a_missing_crd_is_waited_for_unready_and_said_then_ready_once_installed() {
    // A control plane of the test's own: the shared one has the CRD.
    let config = ControlPlaneConfig::from_build_script().expect("control-plane binaries");
    let ns = "startup-crd";
    let (plane, admin) = support::own_control_plane(config, ns).await;
    let dir = tempfile::tempdir().expect("temp dir");
    support::apply_component_manifests(&admin, "operator", ns).await;
    support::apply_component_manifests(&admin, "sentinel", ns).await;
    let mut runs = Vec::new();
    for (program, account) in [
        ("sentinel", "sentinel".to_string()),
        ("operator", format!("{ns}-operator")),
    ] {
        let kubeconfig = plane
            .service_account_kubeconfig(ns, &account, Duration::from_secs(3600))
            .await
            .expect("kubeconfig");
        let path = dir.path().join(format!("{program}.kubeconfig"));
        testenv::write_kubeconfig(&kubeconfig, &path).expect("write kubeconfig");
        let mut run = Run::start(program, &["--namespace", ns], &path);
        assert_waits_unready(&mut run, program, &["is the StatefulCluster CRD installed"]).await;
        runs.push((program, run));
    }
    support::install_crd(&admin).await;
    for (program, run) in &mut runs {
        let started = Instant::now();
        support::eventually(
            Duration::from_secs(90),
            &format!("{program} ready"),
            || async { (run.readyz().await == Some(200)).then_some(()) },
        )
        .await;
        eprintln!(
            "{program}: ready {:?} after the CRD was installed",
            started.elapsed()
        );
        assert!(!run.output().contains("panicked"), "{}", run.output());
    }
}

#[tokio::test]
async fn a_service_account_with_no_rights_ends_or_waits_unready_and_says_forbidden() {
    let cp = control_plane();
    let admin = cp.admin().await;
    support::install_crd(&admin).await;
    let ns = cp.namespace("startup-rbac").await;
    let kubeconfig = cp.service_account_kubeconfig_file(&ns, "nobody").await;
    for program in ["sentinel", "operator"] {
        let mut run = Run::start(program, &["--namespace", &ns], &kubeconfig);
        assert_waits_unready(&mut run, program, &["lacks the rights"]).await;
    }
}
