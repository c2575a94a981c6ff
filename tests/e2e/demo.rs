//! `kube-sentinel demo` end to end, as a person runs it: its own control plane, the operator
//! and the sentinel as processes under their ServiceAccounts, five drifts reverted and a
//! summary, then a clean exit.

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use kube_sentinel::testenv::ControlPlaneConfig;

/// What one run of the demo left: its standard output, its standard error and where its
/// kubeconfig was.
struct DemoRun {
    output: Vec<String>,
    stderr: String,
    kubeconfig: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

/// Runs `kube-sentinel demo --exit-when-done --rounds 1` with `extra` flags (`{dir}` in a flag
/// is the run's own directory) and asserts that it succeeds.
fn run_demo(extra: &[&str]) -> DemoRun {
    // KUBE_SENTINEL_BIN_DIR when set, else the build script's (cached) output.
    let bin_dir = ControlPlaneConfig::from_build_script()
        .expect("control-plane binaries")
        .bin_dir;
    // Not the shared control plane's: the demo starts its own.
    let dir = tempfile::Builder::new()
        .prefix("kube-sentinel-e2e-demo-")
        .tempdir()
        .expect("workdir");
    let workdir = dir.path();
    let kubeconfig = workdir.join("demo.kubeconfig");
    let stderr = std::fs::File::create(workdir.join("demo.stderr")).expect("stderr file");
    let mut child = Command::new(env!("CARGO_BIN_EXE_kube-sentinel"))
        .args([
            "--exit-on-stdin-eof",
            "demo",
            "--exit-when-done",
            "--rounds",
            "1",
        ])
        .arg("--bin-dir")
        .arg(&bin_dir)
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(
            extra
                .iter()
                .map(|flag| flag.replace("{dir}", &workdir.display().to_string())),
        )
        // Held open until the demo ends: if this test dies, the demo stops.
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("spawn kube-sentinel demo");
    let stdout = child.stdout.take().expect("stdout");
    let (lines_tx, lines_rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });

    let deadline = Instant::now() + Duration::from_secs(120);
    let mut output = Vec::new();
    let status = loop {
        output.extend(lines_rx.try_iter());
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the demo did not finish in time; output:\n{}",
                output.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    // The reader thread ends at end of file.
    std::thread::sleep(Duration::from_millis(200));
    output.extend(lines_rx.try_iter());
    let text = output.join("\n");
    let stderr = std::fs::read_to_string(workdir.join("demo.stderr")).unwrap_or_default();
    assert!(
        status.success(),
        "{status}\n{text}\n---- stderr ----\n{stderr}"
    );

    DemoRun {
        output,
        stderr,
        kubeconfig,
        _dir: dir,
    }
}

#[test]
fn demo_reverts_five_drifts_and_exits_cleanly() {
    let DemoRun {
        output,
        stderr,
        kubeconfig,
        _dir,
    } = run_demo(&[]);
    let text = output.join("\n");
    let rounds: Vec<&String> = output
        .iter()
        .filter(|l| l.starts_with("round ") && l.contains(" reverted in "))
        .collect();
    assert_eq!(rounds.len(), 5, "{text}");
    for (line, object) in rounds.iter().zip([
        "StatefulSet/minimal",
        "StatefulSet/minimal",
        "Service/minimal",
        "ConfigMap/minimal-config",
        "Service/minimal",
    ]) {
        assert!(line.contains(object), "{line}");
        assert!(line.contains("trigger "), "{line}");
    }
    let summary = output
        .iter()
        .find(|l| l.starts_with("drift-to-revert over 5 rounds: p50 "))
        .unwrap_or_else(|| panic!("no summary:\n{text}"));
    assert!(
        summary.contains(" p99 ") && summary.contains(" max "),
        "{summary}"
    );
    assert!(
        text.contains("kube_sentinel_sentinel_triggers_written_total 5"),
        "{text}"
    );
    assert!(text.contains("operator /debug/latency:"), "{text}");
    // A clean run logs no error: waiting for the API server to start is not one.
    let errors: Vec<&str> = stderr.lines().filter(|l| l.contains(" ERROR ")).collect();
    assert!(
        errors.is_empty(),
        "{} error lines on a clean run, the first: {:?}",
        errors.len(),
        errors.first()
    );
    assert!(
        !kubeconfig.exists(),
        "the demo removes its kubeconfig when it stops"
    );
    eprintln!("{text}");
}

#[test]
fn demo_in_leading_mode_writes_its_figures_as_json() {
    let run = run_demo(&[
        "--mode",
        "leading",
        "--debounce",
        "1s",
        "--summary-json",
        "{dir}/summary.json",
    ]);
    let text = run.output.join("\n");
    assert!(
        text.contains("1000 ms leading debounce window"),
        "the printed summary names the mode and window asked for:\n{text}"
    );
    let path = run._dir.path().join("summary.json");
    let summary: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e}\n{text}", path.display())),
    )
    .expect("the summary is JSON");
    assert_eq!(summary["mode"], "leading", "{summary:#}");
    assert_eq!(summary["debounce_ms"], 1000.0, "{summary:#}");
    assert_eq!(summary["injected"], 5, "{summary:#}");
    assert_eq!(summary["reverted"], 5, "{summary:#}");
    let rounds = summary["rounds"].as_array().expect("rounds");
    assert_eq!(rounds.len(), 5, "{summary:#}");
    let latency = &summary["latency_ms"];
    let [p50, p90, p99, max] = ["p50", "p90", "p99", "max"].map(|q| {
        latency[q]
            .as_f64()
            .unwrap_or_else(|| panic!("latency_ms.{q}: {summary:#}"))
    });
    assert!(
        0.0 < p50 && p50 <= p90 && p90 <= p99 && p99 <= max,
        "{summary:#}"
    );
    // Each round's line on standard output is the same figure, in whole milliseconds.
    for round in rounds {
        let ms = round["latency_ms"].as_f64().expect("a round's latency") as u128;
        let object = round["object"].as_str().expect("a round's object");
        assert!(
            run.output.iter().any(|l| l.starts_with("round ")
                && l.contains(object)
                && l.contains(&format!("reverted in {ms:>5} ms"))),
            "round {round} is not printed:\n{text}"
        );
    }
}
