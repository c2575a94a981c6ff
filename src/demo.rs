//! `kube-sentinel demo`: the whole system on a local control plane, in one command.
//!
//! 1. Starts the local control plane ([`crate::testenv`]) and writes its admin kubeconfig.
//! 2. Installs the StatefulCluster CRD and the manifests of `deploy/operator` and
//!    `deploy/sentinel` as they are (namespace `kube-sentinel`, ServiceAccounts, RBAC, the
//!    sentinel's ValidatingAdmissionPolicy), embedded in the binary. Their Deployments are
//!    left out: the programs run as local processes.
//! 3. Runs the operator and the sentinel as separate processes of this binary, each as its own
//!    ServiceAccount (a TokenRequest token), tied to the demo through their standard input.
//! 4. Stands in for the kubelet in namespace `demo` ([`PodReadiness`]): the control plane has
//!    no kubelet, so pods are marked Ready as a kubelet would.
//! 5. Creates `deploy/samples/minimal.yaml` in namespace `demo` and waits until it is Ready.
//! 6. Drifts it as an outside actor would (`kubectl edit`, `scale`, `label`, `delete`), one kind
//!    of drift per round, and measures each drift-to-revert: from just before the change to the
//!    read-back showing the object restored, with the trigger acknowledged.
//! 7. Prints the figures and the programs' own metrics, then keeps everything running for
//!    `kubectl` until Ctrl-C or SIGTERM (or exits, with [`DemoOptions::exit_when_done`]).

use std::{
    collections::BTreeMap,
    fmt,
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::{
    apps::v1::StatefulSet,
    core::v1::{ConfigMap, Service},
};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, Patch, PatchParams},
};
use serde_json::json;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    process::{Child, ChildStdin, Command},
    time::Instant,
};

use crate::{
    manifests,
    operator::crd::{StatefulCluster, crd_yaml},
    telemetry::LatencyRecorder,
    testenv::{self, ControlPlane, ControlPlaneConfig, PodReadiness},
};

/// Namespace of the operator and the sentinel (as in `deploy/`).
pub const SYSTEM_NAMESPACE: &str = "kube-sentinel";
/// Namespace of the demo's StatefulCluster.
pub const DEMO_NAMESPACE: &str = "demo";
/// Name of the demo's StatefulCluster (`deploy/samples/minimal.yaml`).
pub const CLUSTER_NAME: &str = "minimal";

/// Field manager of the demo's own installation writes.
const INSTALLER: &str = "kube-sentinel-demo";
/// The operator's ServiceAccount (`deploy/operator/rbac.yaml`).
const OPERATOR_ACCOUNT: &str = "kube-sentinel-operator";
/// The sentinel's ServiceAccount (`deploy/sentinel/rbac.yaml`).
const SENTINEL_ACCOUNT: &str = "sentinel";
/// Lifetime of the programs' ServiceAccount tokens: longer than anyone plays with a demo.
const TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);
/// Longest wait for a program's `/readyz`, the StatefulCluster's readiness, or one revert.
const WAIT: Duration = Duration::from_secs(60);
/// How often a round reads the drifted object and the custom resource back.
const POLL: Duration = Duration::from_millis(25);

/// `deploy/operator` and `deploy/sentinel`, in the order they are applied.
const COMPONENT_MANIFESTS: [(&str, &str); 5] = [
    (
        "deploy/operator/namespace.yaml",
        include_str!("../deploy/operator/namespace.yaml"),
    ),
    (
        "deploy/operator/rbac.yaml",
        include_str!("../deploy/operator/rbac.yaml"),
    ),
    (
        "deploy/operator/deployment.yaml",
        include_str!("../deploy/operator/deployment.yaml"),
    ),
    (
        "deploy/sentinel/rbac.yaml",
        include_str!("../deploy/sentinel/rbac.yaml"),
    ),
    (
        "deploy/sentinel/admission-policy.yaml",
        include_str!("../deploy/sentinel/admission-policy.yaml"),
    ),
];
/// The sample StatefulCluster.
const SAMPLE: &str = include_str!("../deploy/samples/minimal.yaml");

/// What the demo does besides starting the system.
#[derive(Clone, Debug)]
pub struct DemoOptions {
    /// Where to write the admin kubeconfig (removed when the demo stops).
    pub kubeconfig: PathBuf,
    /// Cycles of drift: each cycle drifts every [`DriftKind`] once.
    pub rounds: u32,
    /// Stop after the figures instead of running until Ctrl-C.
    pub exit_when_done: bool,
}

/// The outside changes the demo makes, one per round.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DriftKind {
    /// `kubectl scale`: the StatefulSet's replicas changed.
    Replicas,
    /// `kubectl edit`: the StatefulSet's container image changed.
    Image,
    /// `kubectl label`: a label added to the client Service.
    Label,
    /// `kubectl edit`: a ConfigMap key changed.
    ConfigMapKey,
    /// `kubectl delete`: the client Service deleted.
    ServiceDeleted,
}

impl DriftKind {
    /// Every kind, in the order of a cycle.
    pub const ALL: [DriftKind; 5] = [
        DriftKind::Replicas,
        DriftKind::Image,
        DriftKind::Label,
        DriftKind::ConfigMapKey,
        DriftKind::ServiceDeleted,
    ];

    /// The drifted object, as `Kind/name`.
    pub fn object(self) -> String {
        match self {
            DriftKind::Replicas | DriftKind::Image => format!("StatefulSet/{CLUSTER_NAME}"),
            DriftKind::Label | DriftKind::ServiceDeleted => format!("Service/{CLUSTER_NAME}"),
            DriftKind::ConfigMapKey => format!("ConfigMap/{CLUSTER_NAME}-config"),
        }
    }
}

impl fmt::Display for DriftKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DriftKind::Replicas => "replicas changed",
            DriftKind::Image => "image changed",
            DriftKind::Label => "label added",
            DriftKind::ConfigMapKey => "config key changed",
            DriftKind::ServiceDeleted => "service deleted",
        })
    }
}

/// Runs the demo until it is done (with `exit_when_done`) or `shutdown` resolves, then stops
/// the programs and the control plane. `shutdown` also interrupts the set-up and the rounds.
pub async fn run(
    config: ControlPlaneConfig,
    options: DemoOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    tokio::pin!(shutdown);
    refuse_to_clobber(&options.kubeconfig)?;
    println!("starting the local control plane (etcd, kube-apiserver, kube-controller-manager)");
    let plane = tokio::select! {
        plane = ControlPlane::start(config) => plane?,
        () = &mut shutdown => {
            println!("interrupted");
            return Ok(());
        }
    };
    let logs = match tempfile::Builder::new()
        .prefix("kube-sentinel-demo-")
        .tempdir()
        .context("creating a directory for the programs' logs")
    {
        Ok(dir) => dir,
        Err(e) => {
            plane.stop().await;
            return Err(e);
        }
    };
    // Held for the whole demo, so that pods created with kubectl later also become Ready.
    let kubelet = match plane.admin_client().await {
        Ok(admin) => PodReadiness::start(admin, DEMO_NAMESPACE),
        Err(e) => {
            plane.stop().await;
            return Err(e);
        }
    };
    let mut programs = Vec::new();
    let outcome = tokio::select! {
        result = demonstrate(&plane, &options, logs.path(), &mut programs) => result.map(|()| false),
        () = &mut shutdown => Ok(true),
    };
    let outcome = match outcome {
        Ok(false) if !options.exit_when_done => {
            println!(
                "\neverything keeps running: try `kubectl --kubeconfig {} get statefulclusters,statefulsets,services,configmaps -n {DEMO_NAMESPACE}`, \
                 edit or delete one of them and watch it come back. Ctrl-C stops the demo.",
                options.kubeconfig.display()
            );
            tokio::select! {
                () = &mut shutdown => Ok(true),
                exited = watch_programs(&mut programs) => Err(exited),
            }
        }
        other => other,
    };
    if matches!(outcome, Ok(true)) {
        println!("interrupted");
    }
    println!("stopping the operator, the sentinel and the control plane");
    for program in programs {
        program.stop().await;
    }
    drop(kubelet);
    plane.stop().await;
    let _ = std::fs::remove_file(&options.kubeconfig);
    match outcome {
        Ok(_) => {
            // Nothing failed: the logs have served their purpose.
            let _ = logs.close();
            Ok(())
        }
        Err(e) => {
            let kept = logs.keep();
            Err(e.context(format!("the programs' logs are kept in {}", kept.display())))
        }
    }
}

/// Steps 1 to 6: everything up to and including the figures.
async fn demonstrate(
    plane: &ControlPlane,
    options: &DemoOptions,
    logs: &Path,
    programs: &mut Vec<Program>,
) -> Result<()> {
    plane
        .write_admin_kubeconfig(&options.kubeconfig)
        .with_context(|| format!("writing {}", options.kubeconfig.display()))?;
    println!("control plane ready at {}", plane.server());
    println!(
        "  admin kubeconfig: {0}\n  try: kubectl --kubeconfig {0} get statefulclusters -A",
        options.kubeconfig.display()
    );
    let admin = plane.admin_client().await?;

    manifests::apply(&admin, &crd_yaml(), INSTALLER, "default")
        .await
        .context("installing the StatefulCluster CRD")?;
    for (file, text) in COMPONENT_MANIFESTS {
        manifests::apply(
            &admin,
            &without_deployments(text)?,
            INSTALLER,
            SYSTEM_NAMESPACE,
        )
        .await
        .with_context(|| format!("applying {file}"))?;
    }
    println!(
        "installed the CRD, deploy/operator and deploy/sentinel (namespace {SYSTEM_NAMESPACE}; \
         the Deployments are replaced by local processes)"
    );

    let exe = std::env::current_exe().context("finding this program's own path")?;
    for (name, account) in [
        ("operator", OPERATOR_ACCOUNT),
        ("sentinel", SENTINEL_ACCOUNT),
    ] {
        let kubeconfig = testenv::service_account_kubeconfig(
            plane.admin_kubeconfig(),
            SYSTEM_NAMESPACE,
            account,
            TOKEN_TTL,
        )
        .await?;
        let path = logs.join(format!("{name}.kubeconfig"));
        testenv::write_kubeconfig(&kubeconfig, &path)?;
        programs.push(Program::spawn(&exe, name, &path, logs)?);
    }
    for program in programs.iter_mut() {
        program.wait_ready().await?;
        println!(
            "{:<8} running as ServiceAccount {SYSTEM_NAMESPACE}/{}\n  log:     {}\n  metrics: http://127.0.0.1:{}/metrics",
            program.name,
            if program.name == "operator" {
                OPERATOR_ACCOUNT
            } else {
                SENTINEL_ACCOUNT
            },
            program.log.display(),
            program.port
        );
    }

    manifests::apply(
        &admin,
        &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": DEMO_NAMESPACE}})
            .to_string(),
        INSTALLER,
        DEMO_NAMESPACE,
    )
    .await
    .context("creating the demo namespace")?;
    manifests::apply(&admin, SAMPLE, INSTALLER, DEMO_NAMESPACE)
        .await
        .context("applying deploy/samples/minimal.yaml")?;
    let started = Instant::now();
    wait_ready(&admin, programs).await?;
    println!(
        "StatefulCluster {DEMO_NAMESPACE}/{CLUSTER_NAME} Ready in {} ms (pods marked Ready by \
         the demo's kubelet stand-in)\n",
        started.elapsed().as_millis()
    );

    let latency = LatencyRecorder::new();
    let total = options.rounds.saturating_mul(DriftKind::ALL.len() as u32);
    let cluster = Cluster::new(&admin);
    let operator_port = programs
        .iter()
        .find(|p| p.name == "operator")
        .map(|p| p.port)
        .context("the operator is not running")?;
    settle(&cluster, operator_port, None).await;
    for round in 0..total {
        let kind = DriftKind::ALL[round as usize % DriftKind::ALL.len()];
        let full_before = full_reconciles(operator_port).await;
        let reverted = tokio::select! {
            result = drift_and_wait(&cluster, kind) => result
                .with_context(|| format!("round {} ({kind} on {})", round + 1, kind.object()))?,
            exited = watch_programs(programs) => return Err(exited),
        };
        latency.record(reverted.elapsed);
        println!(
            "round {:>3}/{total}  {:<24} {:<20} reverted in {:>5} ms  ({}, trigger {})",
            round + 1,
            kind.object(),
            kind.to_string(),
            reverted.elapsed.as_millis(),
            reverted.outcome,
            reverted.trigger_id
        );
        // The fast path queues a full reconcile after each revert. Let it finish, so that the
        // next round's drift is reverted by the fast path, not by that reconcile in passing.
        settle(&cluster, operator_port, full_before).await;
    }
    let summary = latency.snapshot().summary();
    println!(
        "\ndrift-to-revert over {} rounds: p50 {} ms, p90 {} ms, p99 {} ms, max {} ms",
        summary.count,
        summary.p50.as_millis(),
        summary.p90.as_millis(),
        summary.p99.as_millis(),
        summary.max.as_millis()
    );
    println!(
        "  (from just before the outside change to the read-back of the restored object, with \
         status.sentinel.lastHandledTriggerID == triggerID; includes the sentinel's 2 s debounce \
         window)"
    );
    report_program_figures(programs).await;
    Ok(())
}

/// Fails if `path` holds a kubeconfig that is not a local control plane's (one left by an
/// earlier demo or `testenv` is fine): the demo overwrites the file and removes it at the end.
fn refuse_to_clobber(path: &Path) -> Result<()> {
    match std::fs::read_to_string(path) {
        Ok(text) if !text.contains("https://127.0.0.1:") => bail!(
            "{} exists and is not a local control plane's kubeconfig; the demo would overwrite \
             and then remove it: pass another --kubeconfig",
            path.display()
        ),
        _ => Ok(()),
    }
}

/// The documents of `yaml` except Deployments, as a multi-document YAML (JSON) text.
fn without_deployments(yaml: &str) -> Result<String> {
    let docs = manifests::parse(yaml)?;
    let kept = docs
        .iter()
        .filter(|d| d["kind"] != "Deployment")
        .map(serde_json::to_string)
        .collect::<Result<Vec<_>, _>>()
        .context("serializing a manifest")?;
    Ok(kept.join("\n---\n"))
}

/// Waits until the sample is Ready for its current generation.
async fn wait_ready(admin: &Client, programs: &mut [Program]) -> Result<()> {
    let api: Api<StatefulCluster> = Api::namespaced(admin.clone(), DEMO_NAMESPACE);
    let deadline = Instant::now() + WAIT;
    loop {
        let cr = api.get_opt(CLUSTER_NAME).await.ok().flatten();
        let ready = cr.as_ref().is_some_and(|cr| {
            cr.status.as_ref().is_some_and(|s| {
                s.observed_generation == cr.metadata.generation
                    && s.conditions
                        .iter()
                        .any(|c| c.type_ == "Ready" && c.status == "True")
            })
        });
        if ready {
            return Ok(());
        }
        for program in programs.iter_mut() {
            program.check_running()?;
        }
        if Instant::now() > deadline {
            let conditions = cr
                .and_then(|cr| cr.status)
                .map(|s| format!("{:?}", s.conditions))
                .unwrap_or_else(|| "no status".into());
            bail!(
                "StatefulCluster {DEMO_NAMESPACE}/{CLUSTER_NAME} not Ready within {WAIT:?}: {conditions}"
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The demo cluster's objects, read and written as an outside actor (admin).
struct Cluster {
    crs: Api<StatefulCluster>,
    sets: Api<StatefulSet>,
    services: Api<Service>,
    config_maps: Api<ConfigMap>,
}

/// What a drifted object looked like before the drift: the revert must bring it back.
#[derive(Debug, PartialEq)]
enum Baseline {
    Replicas(Option<i32>),
    Image(Option<String>),
    Labels(BTreeMap<String, String>),
    Data(BTreeMap<String, String>),
    /// The Service's uid: it is restored when a Service of that name exists again.
    Uid(Option<String>),
}

/// One verified revert.
struct Reverted {
    elapsed: Duration,
    trigger_id: String,
    /// The operator's `lastOutcome`: `corrected` when its fast path made the revert.
    outcome: String,
}

impl Cluster {
    fn new(admin: &Client) -> Self {
        Self {
            crs: Api::namespaced(admin.clone(), DEMO_NAMESPACE),
            sets: Api::namespaced(admin.clone(), DEMO_NAMESPACE),
            services: Api::namespaced(admin.clone(), DEMO_NAMESPACE),
            config_maps: Api::namespaced(admin.clone(), DEMO_NAMESPACE),
        }
    }

    fn config_map_name() -> String {
        format!("{CLUSTER_NAME}-config")
    }

    /// The part of the object `kind` drifts, as it is now.
    async fn read(&self, kind: DriftKind) -> Result<Baseline> {
        Ok(match kind {
            DriftKind::Replicas => {
                Baseline::Replicas(self.sets.get(CLUSTER_NAME).await?.spec.replicas)
            }
            DriftKind::Image => Baseline::Image(member_image(&self.sets.get(CLUSTER_NAME).await?)),
            DriftKind::Label => {
                Baseline::Labels(self.services.get(CLUSTER_NAME).await?.labels().clone())
            }
            DriftKind::ConfigMapKey => Baseline::Data(
                self.config_maps
                    .get(&Self::config_map_name())
                    .await?
                    .data
                    .unwrap_or_default(),
            ),
            DriftKind::ServiceDeleted => Baseline::Uid(
                self.services
                    .get_opt(CLUSTER_NAME)
                    .await?
                    .and_then(|s| s.metadata.uid),
            ),
        })
    }

    /// Whether the object is back to `baseline`.
    async fn restored(&self, kind: DriftKind, baseline: &Baseline) -> Result<bool> {
        if let (DriftKind::ServiceDeleted, Baseline::Uid(old)) = (kind, baseline) {
            let now = self.services.get_opt(CLUSTER_NAME).await?;
            return Ok(now.is_some_and(|s| s.metadata.uid.is_some() && s.metadata.uid != *old));
        }
        Ok(self.read(kind).await? == *baseline)
    }

    /// Makes the change an outside actor would.
    async fn drift(&self, kind: DriftKind) -> Result<()> {
        let by = |manager: &str| PatchParams {
            field_manager: Some(manager.into()),
            ..Default::default()
        };
        match kind {
            DriftKind::Replicas => {
                self.sets
                    .patch(
                        CLUSTER_NAME,
                        &by("kubectl-scale"),
                        &Patch::Merge(json!({"spec": {"replicas": 1}})),
                    )
                    .await?;
            }
            DriftKind::Image => {
                let image = json!({"spec": {"template": {"spec": {"containers": [
                    {"name": "member", "image": "registry.example/not-approved:latest"}
                ]}}}});
                self.sets
                    .patch(CLUSTER_NAME, &by("kubectl-edit"), &Patch::Strategic(image))
                    .await?;
            }
            DriftKind::Label => {
                self.services
                    .patch(
                        CLUSTER_NAME,
                        &by("kubectl-label"),
                        &Patch::Merge(json!({"metadata": {"labels": {"edited-by": "hand"}}})),
                    )
                    .await?;
            }
            DriftKind::ConfigMapKey => {
                self.config_maps
                    .patch(
                        &Self::config_map_name(),
                        &by("kubectl-edit"),
                        &Patch::Merge(json!({"data": {"mode": "tampered"}})),
                    )
                    .await?;
            }
            DriftKind::ServiceDeleted => {
                self.services
                    .delete(CLUSTER_NAME, &DeleteParams::default())
                    .await?;
            }
        }
        Ok(())
    }

    /// Whether the custom resource reads Ready and not Progressing for its generation.
    async fn settled(&self) -> bool {
        let Ok(cr) = self.crs.get(CLUSTER_NAME).await else {
            return false;
        };
        let Some(status) = cr.status else {
            return false;
        };
        let is = |type_: &str| {
            status
                .conditions
                .iter()
                .any(|c| c.type_ == type_ && c.status == "True")
        };
        status.observed_generation == cr.metadata.generation && is("Ready") && !is("Progressing")
    }

    /// The current trigger, and the outcome if the operator has acknowledged it.
    async fn trigger(&self) -> Result<(Option<String>, Option<String>)> {
        let cr = self.crs.get(CLUSTER_NAME).await?;
        let sentinel = cr.status.and_then(|s| s.sentinel);
        let id = sentinel.as_ref().and_then(|s| s.trigger.trigger_id.clone());
        let outcome = sentinel
            .filter(|s| id.is_some() && s.last_handled_trigger_id == id)
            .map(|s| {
                s.last_outcome
                    .map(|o| format!("{o:?}").to_lowercase())
                    .unwrap_or_else(|| "unknown".into())
            });
        Ok((id, outcome))
    }
}

fn member_image(set: &StatefulSet) -> Option<String> {
    set.spec
        .template
        .spec
        .as_ref()?
        .containers
        .iter()
        .find(|c| c.name == "member")?
        .image
        .clone()
}

/// One round: drift `kind`, then poll until the object reads back restored and a new trigger
/// is acknowledged. The clock runs from just before the change to that read-back.
async fn drift_and_wait(cluster: &Cluster, kind: DriftKind) -> Result<Reverted> {
    let baseline = cluster.read(kind).await?;
    let (previous, _) = cluster.trigger().await?;
    let started = Instant::now();
    cluster.drift(kind).await.context("drifting")?;
    let deadline = started + WAIT;
    loop {
        let (id, outcome) = cluster.trigger().await?;
        if let (Some(id), Some(outcome)) = (id.filter(|id| Some(id) != previous.as_ref()), outcome)
            && cluster.restored(kind, &baseline).await?
        {
            return Ok(Reverted {
                elapsed: started.elapsed(),
                trigger_id: id,
                outcome,
            });
        }
        if Instant::now() > deadline {
            let now = cluster.read(kind).await.ok();
            bail!(
                "not reverted and acknowledged within {WAIT:?}: expected {baseline:?}, found \
                 {now:?}; last trigger {:?}",
                cluster.trigger().await.ok()
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Full reconciles the operator has completed, from its `/metrics`; `None` if unreadable.
async fn full_reconciles(port: u16) -> Option<u64> {
    let body = http_get(port, "/metrics").await.ok()?;
    Some(
        body.lines()
            .filter(|l| {
                l.starts_with("kube_sentinel_operator_reconciles_total{")
                    && l.contains("path=\"full\"")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64,
    )
}

/// Waits until the operator has completed a full reconcile since `after` (a count from
/// [`full_reconciles`]), the cluster reads Ready and not Progressing (an image revert rolls the
/// pods; the operator rechecks a progressing cluster every 2 s), and no full reconcile has
/// completed for a second: nothing of it is still in flight. Gives up quietly after 60 s; the
/// rounds measure correctly either way.
async fn settle(cluster: &Cluster, port: u16, after: Option<u64>) {
    let deadline = Instant::now() + WAIT;
    let mut last = full_reconciles(port).await;
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = full_reconciles(port).await;
        let followed_up = match (after, now) {
            (Some(before), Some(now)) => now > before,
            _ => true,
        };
        if followed_up && now == last && cluster.settled().await {
            return;
        }
        last = now;
    }
}

/// Prints the operator's `/debug/latency` and the counters of both programs' `/metrics`.
async fn report_program_figures(programs: &[Program]) {
    for program in programs {
        if program.name == "operator" {
            match http_get(program.port, "/debug/latency").await {
                Ok(body) => println!("\noperator /debug/latency:\n{}", indent(&body)),
                Err(e) => println!("\noperator /debug/latency unavailable: {e:#}"),
            }
        }
    }
    for program in programs {
        match http_get(program.port, "/metrics").await {
            Ok(body) => {
                let lines: Vec<&str> = body.lines().filter(|l| is_reported_counter(l)).collect();
                println!(
                    "\n{} /metrics (counters):\n{}",
                    program.name,
                    indent(&lines.join("\n"))
                );
            }
            Err(e) => println!("\n{} /metrics unavailable: {e:#}", program.name),
        }
    }
}

/// Counter samples worth showing: the drift, trigger, reconcile and revert counts.
fn is_reported_counter(line: &str) -> bool {
    const NAMES: [&str; 9] = [
        "kube_sentinel_sentinel_events_seen_total",
        "kube_sentinel_sentinel_events_ignored_total",
        "kube_sentinel_sentinel_drifts_detected_total",
        "kube_sentinel_sentinel_triggers_written_total",
        "kube_sentinel_sentinel_triggers_coalesced_total",
        "kube_sentinel_sentinel_triggers_failed_total",
        "kube_sentinel_operator_reconciles_total",
        "kube_sentinel_operator_reverted_objects_total",
        "kube_sentinel_operator_manager_runs_total",
    ];
    NAMES.iter().any(|name| {
        line.strip_prefix(name)
            .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
    })
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("  {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A `kube-sentinel` subcommand running as a child process. It exits when its standard input
/// closes (`--exit-on-stdin-eof`), so it cannot outlive the demo, and is killed if dropped.
struct Program {
    name: &'static str,
    child: Child,
    stdin: Option<ChildStdin>,
    log: PathBuf,
    port: u16,
}

impl Program {
    fn spawn(exe: &Path, name: &'static str, kubeconfig: &Path, logs: &Path) -> Result<Self> {
        let port = free_port()?;
        let log = logs.join(format!("{name}.log"));
        let out = std::fs::File::create(&log)
            .with_context(|| format!("creating log file {}", log.display()))?;
        let err = out.try_clone().context("duplicating a log file handle")?;
        let mut cmd = Command::new(exe);
        cmd.arg("--exit-on-stdin-eof")
            .arg(name)
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .arg("--metrics-addr")
            .arg(format!("127.0.0.1:{port}"))
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::piped())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting the {name} ({})", exe.display()))?;
        let stdin = child.stdin.take();
        Ok(Self {
            name,
            child,
            stdin,
            log,
            port,
        })
    }

    /// Fails with the log's tail if the program has exited.
    fn check_running(&mut self) -> Result<()> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => bail!(
                "the {} exited with {status}; last log lines:\n{}",
                self.name,
                self.log_tail(20)
            ),
            Err(e) => Err(e).with_context(|| format!("checking the {}", self.name)),
        }
    }

    fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    async fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + WAIT;
        loop {
            self.check_running()?;
            if http_get(self.port, "/readyz")
                .await
                .is_ok_and(|b| b.trim() == "ok")
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "the {} was not ready within {WAIT:?}; last log lines:\n{}",
                    self.name,
                    self.log_tail(20)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Closes its standard input (it shuts down gracefully), then kills it after 10 s.
    async fn stop(mut self) {
        drop(self.stdin.take());
        if tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

/// Resolves with an error when any program exits.
async fn watch_programs(programs: &mut [Program]) -> anyhow::Error {
    loop {
        for program in programs.iter_mut() {
            if let Err(e) = program.check_running() {
                return e;
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn free_port() -> Result<u16> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .context("finding a free loopback port")
}

/// The body of `GET path` on `127.0.0.1:port`; an error unless it answers 200.
async fn http_get(port: u16, path: &str) -> Result<String> {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .with_context(|| format!("connecting to 127.0.0.1:{port}"))?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .context("a malformed HTTP response")?;
    let status = head.lines().next().unwrap_or_default();
    if !status.contains(" 200") {
        bail!("GET {path}: {status}");
    }
    Ok(body.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_manifests_parse_and_lose_only_their_deployments() {
        let mut kinds = Vec::new();
        for (file, text) in COMPONENT_MANIFESTS {
            let kept = without_deployments(text).expect(file);
            kinds.extend(
                manifests::parse(&kept)
                    .expect(file)
                    .iter()
                    .map(|d| d["kind"].as_str().expect("kind").to_string()),
            );
        }
        assert!(!kinds.iter().any(|k| k == "Deployment"), "{kinds:?}");
        for kind in [
            "Namespace",
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "ValidatingAdmissionPolicy",
            "ValidatingAdmissionPolicyBinding",
        ] {
            assert!(kinds.iter().any(|k| k == kind), "{kind} missing: {kinds:?}");
        }
        let sample = manifests::parse(SAMPLE).expect("sample");
        assert_eq!(sample.len(), 1);
        assert_eq!(sample[0]["metadata"]["name"], CLUSTER_NAME);
    }

    #[test]
    fn never_overwrites_a_kubeconfig_of_another_cluster() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config");
        assert!(refuse_to_clobber(&path).is_ok(), "a new file");
        std::fs::write(
            &path,
            "clusters:\n- cluster:\n    server: https://127.0.0.1:6443\n",
        )
        .expect("write");
        assert!(refuse_to_clobber(&path).is_ok(), "a local control plane's");
        std::fs::write(
            &path,
            "clusters:\n- cluster:\n    server: https://prod.example:443\n",
        )
        .expect("write");
        let err = refuse_to_clobber(&path).expect_err("another cluster's");
        assert!(
            err.to_string().contains("pass another --kubeconfig"),
            "{err}"
        );
    }

    #[test]
    fn a_cycle_drifts_every_kind_once() {
        let objects: Vec<String> = DriftKind::ALL.iter().map(|k| k.object()).collect();
        assert_eq!(
            objects,
            [
                "StatefulSet/minimal",
                "StatefulSet/minimal",
                "Service/minimal",
                "ConfigMap/minimal-config",
                "Service/minimal",
            ]
        );
    }

    #[test]
    fn reports_the_counters_and_not_their_metadata() {
        assert!(is_reported_counter(
            "kube_sentinel_sentinel_triggers_written_total 5"
        ));
        assert!(is_reported_counter(
            "kube_sentinel_operator_reverted_objects_total{kind=\"Service\"} 2"
        ));
        assert!(!is_reported_counter(
            "# TYPE kube_sentinel_sentinel_triggers_written counter"
        ));
        assert!(!is_reported_counter(
            "kube_sentinel_sentinel_triggers_written_total_extra 1"
        ));
    }
}
