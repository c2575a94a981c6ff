//! The one child-process runner of the local tools: a program spawned with its output in a log
//! file, tied to our lifetime, checked, and stopped with a grace before it is killed.

use std::{
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use nix::{sys::signal::Signal, unistd::Pid};

/// Lines of the log shown when a process has exited unexpectedly.
const LOG_TAIL_LINES: usize = 30;
/// How often a bounded wait looks whether the process has exited.
const EXIT_POLL: Duration = Duration::from_millis(20);

/// How a child process is tied to this one, so that it cannot outlive it, and how it is asked
/// to stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tie {
    /// The kernel SIGKILLs the child when the thread that spawned it exits
    /// (`PR_SET_PDEATHSIG`); its standard input is `/dev/null` and it is asked to stop with
    /// SIGTERM. For programs that know nothing of us (etcd, kube-apiserver); spawn from a
    /// long-lived thread.
    ParentDeathSignal,
    /// Its standard input is a pipe that only this process holds: a `kube-sentinel` subcommand
    /// run with `--exit-on-stdin-eof` stops when the pipe closes, which happens however this
    /// process ends (even SIGKILL). It is asked to stop by closing the pipe.
    StdinPipe,
}

/// A running child process with its output (stdout and stderr) in a log file. Killed when
/// dropped; [`ChildProcess::stop`] stops it gracefully first.
///
/// Blocking methods ([`ChildProcess::terminate`], [`ChildProcess::kill`]) suit tests and
/// synchronous callers; [`ChildProcess::stop`] waits on a blocking thread, off the runtime.
#[derive(Debug)]
pub struct ChildProcess {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    tie: Tie,
    log: PathBuf,
    exited: Option<ExitStatus>,
}

impl ChildProcess {
    /// Spawns `command` (its program, arguments and environment as the caller set them) with
    /// stdout and stderr written to a new file `log`, tied to this process by `tie`. `name`
    /// names it in errors and logs.
    pub fn spawn(
        name: impl Into<String>,
        mut command: Command,
        tie: Tie,
        log: PathBuf,
    ) -> Result<Self> {
        let name = name.into();
        let out = std::fs::File::create(&log)
            .with_context(|| format!("creating log file {}", log.display()))?;
        let err = out.try_clone().context("duplicating a log file handle")?;
        command.stdout(out).stderr(err);
        match tie {
            Tie::ParentDeathSignal => {
                command.stdin(Stdio::null());
                die_with_parent(&mut command);
            }
            Tie::StdinPipe => {
                command.stdin(Stdio::piped());
            }
        }
        let mut child = command.spawn().with_context(|| {
            format!(
                "starting {name} ({})",
                command.get_program().to_string_lossy()
            )
        })?;
        let stdin = child.stdin.take();
        tracing::debug!(process = %name, pid = child.id(), log = %log.display(), "started");
        Ok(Self {
            name,
            child,
            stdin,
            tie,
            log,
            exited: None,
        })
    }

    /// The name it was spawned with.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The process id, unless it is known to have exited.
    pub fn pid(&self) -> Option<u32> {
        self.exited.is_none().then(|| self.child.id())
    }

    /// The log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The log so far (empty if unreadable).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last `lines` lines of the log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = self.log();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// The exit status, if it has exited (without waiting).
    pub fn try_exit_status(&mut self) -> Result<Option<ExitStatus>> {
        if self.exited.is_none() {
            self.exited = self
                .child
                .try_wait()
                .with_context(|| format!("checking {}", self.name))?;
        }
        Ok(self.exited)
    }

    /// Whether it is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.try_exit_status(), Ok(None))
    }

    /// Fails with the log's tail if it has exited.
    pub fn check_running(&mut self) -> Result<()> {
        match self.try_exit_status()? {
            None => Ok(()),
            Some(status) => bail!(
                "{} exited with {status}; last log lines:\n{}",
                self.name,
                self.log_tail(LOG_TAIL_LINES)
            ),
        }
    }

    /// Closes its standard input (with [`Tie::StdinPipe`], what the kernel does when this
    /// process dies).
    pub fn close_stdin(&mut self) {
        drop(self.stdin.take());
    }

    /// Waits until it exits, however long that takes.
    pub fn wait(&mut self) -> Result<ExitStatus> {
        if let Some(status) = self.exited {
            return Ok(status);
        }
        let status = self
            .child
            .wait()
            .with_context(|| format!("waiting for {}", self.name))?;
        self.exited = Some(status);
        Ok(status)
    }

    /// Waits up to `timeout` for it to exit; `None` if it still runs.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.try_exit_status() {
                Ok(Some(status)) => return Some(status),
                Ok(None) if Instant::now() < deadline => std::thread::sleep(EXIT_POLL),
                _ => return None,
            }
        }
    }

    /// Sends SIGTERM (as Kubernetes does to stop a pod) and waits up to `timeout` for it to
    /// exit; its exit status, or `None` if it still runs.
    pub fn terminate(&mut self, timeout: Duration) -> Option<ExitStatus> {
        self.signal(Signal::SIGTERM).ok()?;
        self.wait_timeout(timeout)
    }

    /// Kills it (SIGKILL, as a crash would) and waits for it.
    pub fn kill(&mut self) {
        if self.exited.is_none() {
            // It may already be gone; then there is nothing to kill.
            let _ = self.child.kill();
            self.exited = self.child.wait().ok();
        }
    }

    /// Asks it to stop as its [`Tie`] says (SIGTERM, or closing its standard input), then kills
    /// it if it has not exited within `grace`. Waits on a blocking thread.
    pub async fn stop(self, grace: Duration) {
        let name = self.name.clone();
        if let Err(e) = tokio::task::spawn_blocking(move || self.stop_blocking(grace)).await {
            tracing::warn!(process = %name, error = %e, "stopping a child process");
        }
    }

    /// [`ChildProcess::stop`], blocking the calling thread.
    pub fn stop_blocking(mut self, grace: Duration) {
        match self.tie {
            Tie::ParentDeathSignal => {
                // It may already be gone; then the wait below returns at once.
                let _ = self.signal(Signal::SIGTERM);
            }
            Tie::StdinPipe => self.close_stdin(),
        }
        if self.wait_timeout(grace).is_some() {
            tracing::debug!(process = %self.name, "stopped");
        } else {
            self.kill();
            tracing::debug!(process = %self.name, "killed");
        }
    }

    fn signal(&self, signal: Signal) -> Result<()> {
        let pid = self.pid().context("the process has exited")?;
        let pid = i32::try_from(pid).context("a process id beyond i32")?;
        nix::sys::signal::kill(Pid::from_raw(pid), signal)
            .with_context(|| format!("sending {signal} to {}", self.name))
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Asks the kernel to SIGKILL the child when the thread that spawned it exits, so a crashed or
/// killed launcher never leaks an etcd or an API server. Spawn from a long-lived thread.
#[allow(unsafe_code)]
fn die_with_parent(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs between fork and exec and only calls prctl(2), which is
    // async-signal-safe; it touches no memory shared with the parent.
    unsafe {
        command.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `sh -c script`, logging to `<dir>/<name>.log`.
    fn sh(dir: &tempfile::TempDir, name: &str, script: &str, tie: Tie) -> ChildProcess {
        let mut command = Command::new("sh");
        command.args(["-c", script]);
        ChildProcess::spawn(name, command, tie, dir.path().join(format!("{name}.log")))
            .expect("spawn sh")
    }

    #[test]
    fn reports_an_exit_with_the_tail_of_its_log() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut process = sh(
            &dir,
            "printer",
            "echo one; echo two >&2; exit 3",
            Tie::ParentDeathSignal,
        );
        let status = process.wait().expect("wait");
        assert_eq!(status.code(), Some(3));
        assert_eq!(process.pid(), None, "no pid once it has exited");
        let err = process.check_running().expect_err("it exited");
        let text = format!("{err:#}");
        assert!(text.starts_with("printer exited with"), "{text}");
        assert!(text.ends_with("one\ntwo"), "{text}");
    }

    #[test]
    fn a_stdin_tied_process_stops_when_its_pipe_closes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut process = sh(&dir, "reader", "cat >/dev/null; echo eof", Tie::StdinPipe);
        assert!(process.is_running());
        assert!(process.check_running().is_ok());
        process.close_stdin();
        let status = process
            .wait_timeout(Duration::from_secs(10))
            .expect("exits at end of input");
        assert!(status.success(), "{status}");
        assert_eq!(process.log(), "eof\n");
    }

    #[test]
    fn terminate_sends_sigterm_and_stop_kills_after_the_grace() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut polite = sh(&dir, "polite", "exec sleep 30", Tie::ParentDeathSignal);
        let status = polite.terminate(Duration::from_secs(10)).expect("exits");
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(Signal::SIGTERM as i32));

        let stubborn = sh(
            &dir,
            "stubborn",
            "trap '' TERM; echo ready; exec sleep 30",
            Tie::ParentDeathSignal,
        );
        while stubborn.log().is_empty() {
            std::thread::sleep(EXIT_POLL);
        }
        let started = Instant::now();
        stubborn.stop_blocking(Duration::from_millis(200));
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(200), "{took:?}");
        assert!(took < Duration::from_secs(10), "{took:?}");
    }
}
