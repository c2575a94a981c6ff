//! The system under faults: a local control plane, toxiproxy between each program and the API
//! server, two replicas of each program with leader election (as `deploy/` runs them), and
//! the programs' counters, kept across the replicas a fault kills.

use std::{
    collections::HashMap,
    ops::{Add, Sub},
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context, Result};
use k8s_openapi::api::coordination::v1::Lease;
use kube::{Api, Client, config::Kubeconfig};

use super::toxiproxy::Toxiproxy;
use crate::{
    demo::{
        SYSTEM_NAMESPACE, install,
        programs::{ProgramKind, Programs},
        report::{counter_in, metrics_text},
    },
    testenv::{self, ControlPlane, ControlPlaneConfig, client_from_kubeconfig},
};

/// How long the programs' tokens last: longer than any run.
const TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);
/// Replicas of each program, as in `deploy/`.
const REPLICAS: usize = 2;

/// The running system.
pub(crate) struct Rig {
    pub plane: ControlPlane,
    pub admin: Client,
    pub toxiproxy: Toxiproxy,
    programs: Programs,
    logs: PathBuf,
    /// Each program's kubeconfig, through its proxy.
    kubeconfigs: Vec<(ProgramKind, PathBuf)>,
    /// Replicas started so far (the next one's number).
    started: usize,
    /// The counters of the replicas killed so far, read just before each kill.
    retired: Counters,
    /// Replicas that exited by design after losing their Lease, replaced since the last
    /// [`Rig::take_exits`].
    lease_exits: u64,
    /// Replicas that exited otherwise (a crash), since the last [`Rig::take_exits`].
    crashes: Vec<String>,
    /// Each live replica's counters as last read: what a replica that exits by itself counted.
    last_read: HashMap<String, Counters>,
}

/// What the programs counted, summed over replicas.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub(crate) struct Counters {
    /// The sentinel's API writes (POST, PUT, PATCH, DELETE).
    pub sentinel_writes: f64,
    /// The operator's API writes.
    pub operator_writes: f64,
    /// Triggers the sentinel wrote.
    pub triggers_written: f64,
    /// Watch errors both programs retried.
    pub watch_errors: f64,
    /// Of those, watches whose resource version expired (410 Gone) and relisted.
    pub watches_expired: f64,
    /// Answers 429 (Too Many Requests) both programs received.
    pub throttled: f64,
    /// Answers 5xx both programs received.
    pub server_errors: f64,
}

impl Rig {
    /// Starts everything and waits until both programs' replicas are ready.
    pub(crate) async fn start(
        config: ControlPlaneConfig,
        toxiproxy: &Path,
        logs: &Path,
    ) -> Result<Self> {
        let plane = ControlPlane::start(config).await?;
        let admin = plane.admin_client().await?;
        install::install_system(&admin).await?;
        let toxiproxy = Toxiproxy::start(toxiproxy, logs).await?;
        let upstream = plane.server().trim_start_matches("https://").to_string();
        let mut kubeconfigs = Vec::new();
        for kind in [ProgramKind::Operator, ProgramKind::Sentinel] {
            let port = toxiproxy.proxy(kind.subcommand(), &upstream).await?;
            let path = logs.join(format!("{kind}.kubeconfig"));
            let kubeconfig = through(
                plane
                    .service_account_kubeconfig(SYSTEM_NAMESPACE, kind.service_account(), TOKEN_TTL)
                    .await?,
                port,
            );
            testenv::write_kubeconfig(&kubeconfig, &path)?;
            kubeconfigs.push((kind, path));
        }
        let mut rig = Self {
            plane,
            admin,
            toxiproxy,
            programs: Programs::default(),
            logs: logs.to_path_buf(),
            kubeconfigs,
            started: 0,
            retired: Counters::default(),
            lease_exits: 0,
            crashes: Vec::new(),
            last_read: HashMap::new(),
        };
        for kind in [ProgramKind::Operator, ProgramKind::Sentinel] {
            for _ in 0..REPLICAS {
                rig.spawn(kind)?;
            }
        }
        for program in rig.programs.iter_mut() {
            program.wait_ready().await?;
        }
        Ok(rig)
    }

    /// The programs, to wait on.
    pub(crate) fn programs(&mut self) -> &mut Programs {
        &mut self.programs
    }

    /// Starts one more replica of `kind`, as a Deployment replaces a lost pod; its name.
    pub(crate) fn spawn(&mut self, kind: ProgramKind) -> Result<String> {
        let name = format!("{kind}-{}", self.started);
        self.started += 1;
        let kubeconfig = self
            .kubeconfigs
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, path)| path.clone())
            .context("a kubeconfig for every program")?;
        let flags = [
            "--leader-elect",
            "--identity",
            &name,
            "--lease-namespace",
            SYSTEM_NAMESPACE,
        ]
        .map(String::from);
        self.programs
            .spawn_named(kind, &name, &kubeconfig, &self.logs, &flags)?;
        Ok(name)
    }

    /// Replaces the replicas that have exited, as a Deployment restarts a pod. A replica that
    /// lost its Lease exits by design (the new leader must act alone); any other exit is a
    /// crash, replaced too and reported by [`Rig::take_exits`].
    pub(crate) fn replace_exited(&mut self) -> Result<()> {
        for (kind, name, why) in self.programs.remove_exited() {
            let last = self.last_read.remove(&name).unwrap_or_default();
            self.retired = self.retired + last;
            if why.contains("lost the Lease") {
                self.lease_exits += 1;
            } else {
                self.crashes.push(why);
            }
            tracing::info!(replica = name, "faults: a replica exited; starting another");
            self.spawn(kind)?;
        }
        Ok(())
    }

    /// Holds a fault for `hold`, reading the replicas' counters and replacing exited ones
    /// every second meanwhile.
    pub(crate) async fn hold(&mut self, hold: Duration) -> Result<()> {
        let end = tokio::time::Instant::now() + hold;
        while tokio::time::Instant::now() < end {
            self.counters().await;
            self.replace_exited()?;
            tokio::time::sleep_until(end.min(tokio::time::Instant::now() + Duration::from_secs(1)))
                .await;
        }
        Ok(())
    }

    /// The replicas that exited after losing their Lease, and the crashes, since last asked.
    pub(crate) fn take_exits(&mut self) -> (u64, Vec<String>) {
        (
            std::mem::take(&mut self.lease_exits),
            std::mem::take(&mut self.crashes),
        )
    }

    /// The replica of `kind` that holds its Lease, if one does.
    pub(crate) async fn leader(&self, kind: ProgramKind) -> Result<Option<String>> {
        let leases: Api<Lease> = Api::namespaced(self.admin.clone(), SYSTEM_NAMESPACE);
        let name = match kind {
            ProgramKind::Operator => "kube-sentinel-operator",
            ProgramKind::Sentinel => "kube-sentinel-sentinel",
        };
        let lease = leases.get_opt(name).await?;
        Ok(lease
            .and_then(|l| l.spec?.holder_identity)
            .filter(|holder| self.programs.iter().any(|p| p.name() == holder)))
    }

    /// Kills replica `name` with SIGKILL (its counters kept) and starts a replacement.
    pub(crate) async fn kill_and_replace(&mut self, name: &str) -> Result<()> {
        let victim = self.programs.iter().find(|p| p.name() == name);
        let (kind, port) = victim
            .map(|p| (p.kind(), p.port()))
            .context("no such replica")?;
        let last = match Counters::of(kind, port).await {
            Some(now) => now,
            None => self.last_read.get(name).copied().unwrap_or_default(),
        };
        self.last_read.remove(name);
        self.retired = self.retired + last;
        self.programs.kill(name);
        tracing::info!(replica = name, "faults: killed a replica");
        self.spawn(kind)?;
        Ok(())
    }

    /// The counters of every replica so far, the killed and exited ones included (as last
    /// read: call this often enough that a replica's last reading is recent).
    pub(crate) async fn counters(&mut self) -> Counters {
        let mut total = self.retired;
        for program in self.programs.iter() {
            let name = program.name().to_string();
            if let Some(now) = Counters::of(program.kind(), program.port()).await {
                self.last_read.insert(name.clone(), now);
            }
            total = total + self.last_read.get(&name).copied().unwrap_or_default();
        }
        total
    }

    /// The metrics port of replica `name`.
    pub(crate) fn port_of(&self, name: &str) -> Option<u16> {
        self.programs
            .iter()
            .find(|p| p.name() == name)
            .map(|p| p.port())
    }

    /// Stops every program, toxiproxy and the control plane.
    pub(crate) async fn stop(self) {
        self.programs.stop().await;
        drop(self.toxiproxy);
        self.plane.stop().await;
    }

    /// An admin client (the load generator's, which goes to the API server directly).
    pub(crate) async fn admin_client(&self) -> Result<Client> {
        client_from_kubeconfig(self.plane.admin_kubeconfig().clone()).await
    }
}

/// `kubeconfig` with its server moved to the proxy on `port` (the API server's certificate
/// names 127.0.0.1, so TLS still verifies through the proxy).
fn through(mut kubeconfig: Kubeconfig, port: u16) -> Kubeconfig {
    for cluster in kubeconfig
        .clusters
        .iter_mut()
        .filter_map(|c| c.cluster.as_mut())
    {
        cluster.server = Some(format!("https://127.0.0.1:{port}"));
    }
    kubeconfig
}

/// The label of watch errors that were expired resource versions.
const EXPIRED: &str = "reason=\"expired\"";

impl Counters {
    /// What the replica of `kind` serving metrics on `port` counted; `None` if unreadable.
    async fn of(kind: ProgramKind, port: u16) -> Option<Self> {
        let body = metrics_text(port).await.ok()?;
        let sum = |name: &str, label: &str| counter_in(&body, name, label);
        let requests = |labels: &[&str], key: &str| -> f64 {
            labels
                .iter()
                .map(|v| sum("rest_client_requests_total", &format!("{key}=\"{v}\"")))
                .sum()
        };
        let writes = requests(&["POST", "PUT", "PATCH", "DELETE"], "method");
        let throttled = requests(&["429"], "code");
        let server_errors = requests(&["500", "502", "503", "504"], "code");
        Some(match kind {
            ProgramKind::Sentinel => Self {
                sentinel_writes: writes,
                triggers_written: sum("kube_sentinel_sentinel_triggers_written_total", ""),
                watch_errors: sum("kube_sentinel_sentinel_watch_errors_total", ""),
                watches_expired: sum("kube_sentinel_sentinel_watch_errors_total", EXPIRED),
                throttled,
                server_errors,
                ..Self::default()
            },
            ProgramKind::Operator => Self {
                operator_writes: writes,
                watch_errors: sum("kube_sentinel_operator_watch_errors_total", ""),
                watches_expired: sum("kube_sentinel_operator_watch_errors_total", EXPIRED),
                throttled,
                server_errors,
                ..Self::default()
            },
        })
    }
}

impl Add for Counters {
    type Output = Self;
    fn add(self, o: Self) -> Self {
        Self {
            sentinel_writes: self.sentinel_writes + o.sentinel_writes,
            operator_writes: self.operator_writes + o.operator_writes,
            triggers_written: self.triggers_written + o.triggers_written,
            watch_errors: self.watch_errors + o.watch_errors,
            watches_expired: self.watches_expired + o.watches_expired,
            throttled: self.throttled + o.throttled,
            server_errors: self.server_errors + o.server_errors,
        }
    }
}

impl Sub for Counters {
    type Output = Self;
    fn sub(self, o: Self) -> Self {
        Self {
            sentinel_writes: self.sentinel_writes - o.sentinel_writes,
            operator_writes: self.operator_writes - o.operator_writes,
            triggers_written: self.triggers_written - o.triggers_written,
            watch_errors: self.watch_errors - o.watch_errors,
            watches_expired: self.watches_expired - o.watches_expired,
            throttled: self.throttled - o.throttled,
            server_errors: self.server_errors - o.server_errors,
        }
    }
}
