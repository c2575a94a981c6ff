//! A `kube-sentinel` subcommand that runs to its end (`bench`, `faults`), as a user runs it.

use std::{
    path::PathBuf,
    process::{Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

/// A finished run of `kube-sentinel <subcommand>`.
pub struct SubcommandRun {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    /// Its `--out-dir`.
    pub out: PathBuf,
    _dir: tempfile::TempDir,
}

impl SubcommandRun {
    /// Runs `kube-sentinel <subcommand>` with `args` and an `--out-dir` of its own, for at
    /// most fifteen minutes.
    pub fn run<S: AsRef<std::ffi::OsStr>>(subcommand: &str, args: &[S]) -> Self {
        let dir = tempfile::Builder::new()
            .prefix(&format!("kube-sentinel-e2e-{subcommand}-"))
            .tempdir()
            .expect("workdir");
        let out = dir.path().join("out");
        let stdout = std::fs::File::create(dir.path().join("stdout")).expect("stdout file");
        let stderr = std::fs::File::create(dir.path().join("stderr")).expect("stderr file");
        let mut child = Command::new(env!("CARGO_BIN_EXE_kube-sentinel"))
            .args(["--exit-on-stdin-eof", subcommand])
            .args(args)
            .arg("--out-dir")
            .arg(&out)
            // Held open until the run ends: if this test dies, the run stops.
            .stdin(Stdio::piped())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn kube-sentinel {subcommand}: {e}"));
        let deadline = Instant::now() + Duration::from_secs(900);
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                break child.wait().expect("wait");
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        let read = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap_or_default();
        Self {
            status,
            stdout: read("stdout"),
            stderr: read("stderr"),
            out,
            _dir: dir,
        }
    }

    /// Its `--out-dir`'s JSON file `name`, once it has succeeded.
    pub fn json(&self, name: &str) -> Value {
        assert!(self.status.success(), "{self}");
        let text = std::fs::read_to_string(self.out.join(name)).expect(name);
        serde_json::from_str(&text).expect("JSON")
    }
}

impl std::fmt::Display for SubcommandRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (status, stdout, stderr) = (self.status, &self.stdout, &self.stderr);
        write!(f, "{status}\n{stdout}\n---- stderr ----\n{stderr}")
    }
}
