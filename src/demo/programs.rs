//! The operator and the sentinel as separate child processes of this binary, each under its own
//! ServiceAccount, tied to us through their standard input, serving `/metrics` on a free port.

use std::{
    fmt,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context, Result, bail};
use tokio::time::Instant;

use super::{WAIT, install};
use kube::config::Kubeconfig;

use crate::testenv::{self, ChildProcess, Tie};

/// How long a stopping program has, after its standard input closes, before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// How often [`Programs::watch`] looks whether a program has exited.
const WATCH_EVERY: Duration = Duration::from_millis(500);

/// Which program.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ProgramKind {
    /// `kube-sentinel operator`.
    Operator,
    /// `kube-sentinel sentinel`.
    Sentinel,
}

impl ProgramKind {
    /// Its subcommand of this binary.
    pub(crate) fn subcommand(self) -> &'static str {
        match self {
            ProgramKind::Operator => "operator",
            ProgramKind::Sentinel => "sentinel",
        }
    }

    /// Its ServiceAccount in the system namespace (`deploy/<program>/rbac.yaml`).
    pub(crate) fn service_account(self) -> &'static str {
        match self {
            ProgramKind::Operator => "kube-sentinel-operator",
            ProgramKind::Sentinel => "sentinel",
        }
    }
}

impl fmt::Display for ProgramKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.subcommand())
    }
}

/// A `kube-sentinel` subcommand running as a child process. It exits when its standard input
/// closes (`--exit-on-stdin-eof`), so it cannot outlive us, and is killed if dropped.
pub(crate) struct Program {
    kind: ProgramKind,
    /// Its log's name, and its identity where replicas run side by side.
    name: String,
    process: ChildProcess,
    port: u16,
}

impl Program {
    /// Starts `kind` as `name` with `kubeconfig`, its metrics on a free loopback port and its
    /// log in `<logs>/<name>.log`.
    pub(crate) fn spawn(
        kind: ProgramKind,
        name: &str,
        kubeconfig: &Path,
        logs: &Path,
        extra_flags: &[String],
    ) -> Result<Self> {
        let exe = std::env::current_exe().context("finding this program's own path")?;
        let port = testenv::free_port()?;
        let mut command = Command::new(exe);
        command
            .arg("--exit-on-stdin-eof")
            .arg(kind.subcommand())
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .arg("--metrics-addr")
            .arg(format!("127.0.0.1:{port}"))
            .args(extra_flags)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            );
        let log = logs.join(format!("{name}.log"));
        let process = ChildProcess::spawn(format!("the {name}"), command, Tie::StdinPipe, log)?;
        Ok(Self {
            kind,
            name: name.to_string(),
            process,
            port,
        })
    }

    /// Its process id, while it runs.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    /// Which program it is.
    pub(crate) fn kind(&self) -> ProgramKind {
        self.kind
    }

    /// The name it was started as.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// Kills it with SIGKILL, as a crash or a node loss would, and waits for it.
    pub(crate) fn kill(&mut self) {
        self.process.kill();
    }

    /// Its metrics port on `127.0.0.1`.
    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// Its log file.
    pub(crate) fn log_path(&self) -> &Path {
        self.process.log_path()
    }

    /// Fails with the log's tail if it has exited.
    pub(crate) fn check_running(&mut self) -> Result<()> {
        self.process.check_running()
    }

    /// Waits until its `/readyz` answers `ok`; fails if it exits or is not ready in time.
    pub(crate) async fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + WAIT;
        loop {
            self.check_running()?;
            if testenv::http_get(self.port, "/readyz")
                .await
                .is_ok_and(|r| r.status == 200 && r.body.trim() == "ok")
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "the {} was not ready within {WAIT:?}; last log lines:\n{}",
                    self.kind,
                    self.process.log_tail(20)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Closes its standard input (it shuts down gracefully), then kills it after 10 s.
    pub(crate) async fn stop(self) {
        self.process.stop(STOP_GRACE).await;
    }
}

/// The programs started so far: whoever holds them stops them, also after a failed start.
#[derive(Default)]
pub(crate) struct Programs(Vec<Program>);

impl Programs {
    /// Starts every [`ProgramKind`] as its ServiceAccount (kubeconfigs and logs in `logs`),
    /// the sentinel with `sentinel_flags` too, without waiting for them to be ready.
    pub(crate) async fn spawn_all(
        &mut self,
        admin: &Kubeconfig,
        logs: &Path,
        sentinel_flags: &[String],
    ) -> Result<()> {
        self.spawn(admin, logs, ProgramKind::Operator, &[]).await?;
        self.spawn(admin, logs, ProgramKind::Sentinel, sentinel_flags)
            .await
    }

    /// Starts `kind` as its ServiceAccount (a token asked for with `admin`) with `flags`
    /// besides the usual ones, without waiting for it to be ready.
    pub(crate) async fn spawn(
        &mut self,
        admin: &Kubeconfig,
        logs: &Path,
        kind: ProgramKind,
        flags: &[String],
    ) -> Result<()> {
        let kubeconfig: PathBuf = install::service_account_kubeconfig(
            admin,
            kind.service_account(),
            logs,
            kind.subcommand(),
        )
        .await?;
        let name = kind.subcommand();
        self.0
            .push(Program::spawn(kind, name, &kubeconfig, logs, flags)?);
        Ok(())
    }

    /// Starts `kind` as `name` with `kubeconfig` and `flags` besides the usual ones, without
    /// waiting for it to be ready: one of several replicas.
    pub(crate) fn spawn_named(
        &mut self,
        kind: ProgramKind,
        name: &str,
        kubeconfig: &Path,
        logs: &Path,
        flags: &[String],
    ) -> Result<()> {
        self.0
            .push(Program::spawn(kind, name, kubeconfig, logs, flags)?);
        Ok(())
    }

    /// Forgets the programs that have exited; for each, its kind, name and why (the exit and
    /// its log's tail).
    pub(crate) fn remove_exited(&mut self) -> Vec<(ProgramKind, String, String)> {
        let mut exited = Vec::new();
        let mut index = 0;
        while index < self.0.len() {
            match self.0[index].check_running() {
                Ok(()) => index += 1,
                Err(why) => {
                    let program = self.0.remove(index);
                    exited.push((program.kind, program.name, format!("{why:#}")));
                }
            }
        }
        exited
    }

    /// Kills the program started as `name` (SIGKILL) and forgets it; whether it ran.
    pub(crate) fn kill(&mut self, name: &str) -> bool {
        let Some(index) = self.0.iter().position(|p| p.name == name) else {
            return false;
        };
        self.0.remove(index).kill();
        true
    }

    /// Stops `kind` if it runs, starts it again with `flags` and waits until it is ready.
    pub(crate) async fn restart(
        &mut self,
        admin: &Kubeconfig,
        logs: &Path,
        kind: ProgramKind,
        flags: &[String],
    ) -> Result<()> {
        if let Some(index) = self.0.iter().position(|p| p.kind == kind) {
            self.0.remove(index).stop().await;
        }
        self.spawn(admin, logs, kind, flags).await?;
        let started = self.0.last_mut().expect("just spawned");
        started.wait_ready().await
    }

    /// The programs, in the order they were started.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Program> {
        self.0.iter()
    }

    /// The programs, to wait on.
    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = &mut Program> {
        self.0.iter_mut()
    }

    /// The metrics port of `kind`, if it was started.
    pub(crate) fn port(&self, kind: ProgramKind) -> Option<u16> {
        self.iter().find(|p| p.kind == kind).map(Program::port)
    }

    /// Fails with the log's tail of the first program that has exited.
    pub(crate) fn check_running(&mut self) -> Result<()> {
        self.iter_mut().try_for_each(Program::check_running)
    }

    /// Resolves with an error when any program exits.
    pub(crate) async fn watch(&mut self) -> anyhow::Error {
        loop {
            if let Err(e) = self.check_running() {
                return e;
            }
            tokio::time::sleep(WATCH_EVERY).await;
        }
    }

    /// Stops them all, in the order they were started.
    pub(crate) async fn stop(self) {
        for program in self.0 {
            program.stop().await;
        }
    }
}
