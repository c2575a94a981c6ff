//! Bad flags end the program at once: one clear line on standard error, a non-zero exit, and
//! no connection to the API server. The kubeconfig points at a local listener that counts the
//! connections it is offered, so "before any API call" is checked, not assumed.

use std::{
    io::ErrorKind,
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

/// Longest a refused flag may take to end the program (generous: 2 noisy cores).
const EXIT_WITHIN: Duration = Duration::from_secs(5);

/// A kubeconfig naming `server`, written to a fresh file.
fn kubeconfig_for(server: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!(
        "kube-sentinel-flags-{}.kubeconfig",
        uuid::Uuid::new_v4().simple()
    ));
    let yaml = format!(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n\
         clusters: [{{name: c, cluster: {{server: '{server}', insecure-skip-tls-verify: true}}}}]\n\
         users: [{{name: u, user: {{token: nobody}}}}]\n\
         contexts: [{{name: c, context: {{cluster: c, user: u, namespace: default}}}}]\n"
    );
    std::fs::write(&path, yaml).expect("write kubeconfig");
    path
}

/// Runs `kube-sentinel <args> --kubeconfig <kubeconfig>`; returns its exit code (None if it had
/// to be killed), its standard error, and how long it ran.
fn run(args: &[&str], kubeconfig: &Path) -> (Option<i32>, String, Duration) {
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_kube-sentinel"))
        .args(args)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .env_remove("KUBE_SENTINEL_KUBECONFIG")
        .env("KUBECONFIG", kubeconfig)
        .env("RUST_LOG", "error")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn kube-sentinel");
    let code = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status.code();
        }
        if started.elapsed() > EXIT_WITHIN * 2 {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let elapsed = started.elapsed();
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        use std::io::Read;
        let _ = pipe.read_to_string(&mut stderr);
    }
    (code, stderr, elapsed)
}

/// Connections the listener was offered so far.
fn connections(listener: &TcpListener) -> usize {
    let mut count = 0;
    loop {
        match listener.accept() {
            Ok(_) => count += 1,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return count,
            Err(e) => panic!("accept: {e}"),
        }
    }
}

#[test]
fn every_bad_flag_exits_at_once_with_one_line_and_no_api_call() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let port = listener.local_addr().expect("addr").port();
    let kubeconfig = kubeconfig_for(&format!("https://127.0.0.1:{port}"));
    let local = ["--metrics-addr", "127.0.0.1:0"];
    let cases: &[(&str, &[&str], &str)] = &[
        ("operator", &["--resync", "0"], "--resync"),
        (
            "operator",
            &["--latency-log-interval", "0"],
            "--latency-log-interval",
        ),
        ("operator", &["--resync", "100000000h"], "--resync"),
        ("operator", &["--workers", "0"], "--workers"),
        (
            "operator",
            &["--workers", "2", "--fast-workers", "2"],
            "--fast-workers",
        ),
        ("operator", &["--fast-burst", "0"], "--fast-burst"),
        (
            "operator",
            &["--lease-duration", "10s", "--lease-grace", "10s"],
            "--lease-grace",
        ),
        (
            "operator",
            &["--shutdown-timeout", "1000000000s"],
            "--shutdown-timeout",
        ),
        (
            "operator",
            &["--unreachable-after", "0"],
            "--unreachable-after",
        ),
        (
            "sentinel",
            &["--lease-duration", "5s", "--lease-grace", "6s"],
            "--lease-grace",
        ),
        ("sentinel", &["--lease-duration", "0"], "--lease-duration"),
        ("sentinel", &["--selector", "app in (a"], "--selector"),
        ("sentinel", &["--selector", "a b"], "--selector"),
        ("sentinel", &["--selector", "=x"], "--selector"),
        ("sentinel", &["--max-wait", "9999999999h"], "--max-wait"),
        ("sentinel", &["--jitter", "2s"], "--jitter"),
        (
            "sentinel",
            &["--unreachable-after", "0"],
            "--unreachable-after",
        ),
    ];
    let mut failures = Vec::new();
    for (program, flags, named) in cases {
        let mut args = vec![*program];
        args.extend_from_slice(&local);
        args.extend_from_slice(flags);
        let (code, stderr, elapsed) = run(&args, &kubeconfig);
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        let connected = connections(&listener);
        let ok = code.is_some_and(|c| c != 0)
            && lines.len() == 1
            && lines[0].contains(named)
            && elapsed < EXIT_WITHIN
            && connected == 0;
        if !ok {
            failures.push(format!(
                "{args:?}: exit {code:?} after {elapsed:?}, {connected} connection(s), \
                 stderr {stderr:?}"
            ));
        }
    }
    let _ = std::fs::remove_file(&kubeconfig);
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // The same flags, valid, do reach the API server (the check above can see a connection).
    let (_, _, _) = run(
        &[
            "operator",
            "--metrics-addr",
            "127.0.0.1:0",
            "--workers",
            "1",
            "--fast-workers",
            "0",
        ],
        &kubeconfig_for(&format!("https://127.0.0.1:{port}")),
    );
    assert!(
        connections(&listener) > 0,
        "a valid run connects to the API server"
    );
}
