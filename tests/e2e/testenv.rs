//! `kube-sentinel testenv` leaks nothing: its processes and data go away when it is told to
//! stop, when its parent disappears, and when it is killed outright.

use std::{
    os::unix::process::ExitStatusExt,
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use kube_sentinel::testenv::{ChildProcess, Tie};

use crate::support::control_plane;

struct Testenv {
    process: ChildProcess,
    kubeconfig: PathBuf,
}

fn start(tag: &str) -> Testenv {
    let workdir = control_plane().workdir();
    let kubeconfig = workdir.join(format!("testenv-{tag}.kubeconfig"));
    let mut command = Command::new(env!("CARGO_BIN_EXE_kube-sentinel"));
    command
        .args([
            "testenv",
            "--exit-on-stdin-eof",
            "--quiet",
            "--no-controller-manager",
            "--kubeconfig",
        ])
        .arg(&kubeconfig);
    let process = ChildProcess::spawn(
        format!("testenv-{tag}"),
        command,
        Tie::StdinPipe,
        workdir.join(format!("testenv-{tag}.log")),
    )
    .expect("spawn testenv");
    let deadline = Instant::now() + Duration::from_secs(120);
    while !kubeconfig.exists() {
        assert!(Instant::now() < deadline, "testenv did not become ready");
        std::thread::sleep(Duration::from_millis(100));
    }
    Testenv {
        process,
        kubeconfig,
    }
}

/// Child pids of `pid` (from /proc) and etcd's data directory, found in its command line.
fn children(pid: u32) -> (Vec<u32>, PathBuf) {
    let mut pids = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).expect("proc tasks") {
        let path = task.expect("task").path().join("children");
        let text = std::fs::read_to_string(path).unwrap_or_default();
        pids.extend(
            text.split_whitespace()
                .filter_map(|p| p.parse::<u32>().ok()),
        );
    }
    let data_dir = pids
        .iter()
        .filter_map(|p| std::fs::read(format!("/proc/{p}/cmdline")).ok())
        .flat_map(|c| {
            c.split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect::<Vec<_>>()
        })
        .find_map(|arg| arg.strip_prefix("--data-dir=").map(PathBuf::from))
        .expect("etcd's --data-dir");
    (pids, data_dir)
}

fn alive(pid: u32) -> bool {
    // A zombie has exited; only its parent's wait is missing.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.contains(") Z "))
        .unwrap_or(false)
}

fn wait_gone(pids: &[u32]) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while pids.iter().any(|p| alive(*p)) {
        assert!(Instant::now() < deadline, "processes still alive: {pids:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn stops_everything_when_its_parent_goes_away() {
    let mut env = start("eof");
    let (pids, data_dir) = children(env.process.pid().expect("running"));
    assert_eq!(pids.len(), 2, "etcd and kube-apiserver: {pids:?}");
    assert!(data_dir.exists());
    env.process.close_stdin(); // what the kernel does when the parent dies
    let status = env.process.wait().expect("wait");
    assert!(status.success(), "{status}");
    wait_gone(&pids);
    assert!(
        !data_dir.parent().expect("parent").exists(),
        "data directory removed"
    );
    assert!(!env.kubeconfig.exists(), "kubeconfig removed");
}

#[test]
fn killing_it_kills_its_processes_and_the_next_start_sweeps_its_data() {
    let mut env = start("kill");
    let (pids, data_dir) = children(env.process.pid().expect("running"));
    env.process.kill();
    let killed = env.process.wait().expect("reaped");
    assert_eq!(killed.signal(), Some(9), "SIGKILL testenv: {killed}");

    wait_gone(&pids);
    let stale = data_dir.parent().expect("parent").to_path_buf();
    assert!(stale.exists(), "SIGKILL leaves the data behind");
    let mut next = start("after-kill");
    assert!(
        !stale.exists(),
        "the next start removed {}",
        stale.display()
    );
    next.process.close_stdin();
    let _ = next.process.wait();
}
