//! The faults: what each one breaks, for how long, and how it is undone. Every one is real: a
//! killed or stopped process, a toxic on a real proxy, a real API Priority and Fairness level or
//! admission webhook making the API server itself answer 429 or 500.

use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::json;
use tokio::time::Instant;

use super::{rig::Rig, toxiproxy::Toxic};
use crate::{
    demo::{programs::ProgramKind, report::counter},
    manifests,
};

/// How long a leader kill may take to hand over: the Lease duration (15 s) and a margin.
const HANDOVER: Duration = Duration::from_secs(40);
/// Field manager of what the suite applies.
const FAULTS: &str = "kube-sentinel-faults";

/// One fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Fault {
    /// kube-apiserver SIGKILLed, then started again.
    ApiserverKill,
    /// etcd SIGKILLed, then started again on its data.
    EtcdRestart,
    /// kube-apiserver SIGSTOPped for the hold, then continued: a hang, not a crash.
    ApiserverStall,
    /// The sentinel's leader SIGKILLed while debounce windows are open.
    SentinelLeaderKill,
    /// The operator's leader SIGKILLed right after a revert, before its acknowledgement.
    OperatorLeaderKill,
    /// Both leaders SIGKILLed together.
    BothLeadersKill,
    /// 800 ms (± 200) added to everything the API server sends both programs.
    Latency,
    /// Both programs' downloads limited to 16 KB/s.
    Bandwidth,
    /// Every connection of both programs reset 500 ms after it carries data.
    Resets,
    /// Both programs' path to the API server cut (connections closed, new ones refused).
    Outage,
    /// Both programs' connections left open with no byte getting through.
    HalfOpen,
    /// API Priority and Fairness rejects every request of both programs: real 429s.
    Throttled,
    /// A failing admission webhook: the API server answers 500 to every write of both programs.
    ServerErrors,
    /// Both programs cut off while etcd is compacted and the API server restarted: their
    /// watches resume from an expired revision (410 Gone) and must list again.
    WatchExpired,
}

impl Fault {
    /// Every fault, in the order the full profile runs them.
    pub const ALL: [Fault; 14] = [
        Fault::ApiserverKill,
        Fault::EtcdRestart,
        Fault::ApiserverStall,
        Fault::SentinelLeaderKill,
        Fault::OperatorLeaderKill,
        Fault::BothLeadersKill,
        Fault::Latency,
        Fault::Bandwidth,
        Fault::Resets,
        Fault::Outage,
        Fault::HalfOpen,
        Fault::Throttled,
        Fault::ServerErrors,
        Fault::WatchExpired,
    ];

    /// Its name on the command line and in the report.
    pub fn name(self) -> String {
        clap::ValueEnum::to_possible_value(&self)
            .map(|v| v.get_name().to_string())
            .unwrap_or_default()
    }

    /// Injects the fault, holds it for `hold` where it has a duration, and undoes it; what
    /// happened, for the report.
    pub(crate) async fn run(self, rig: &mut Rig, hold: Duration) -> Result<String> {
        match self {
            Fault::ApiserverKill => restart(rig, "kube-apiserver").await,
            Fault::EtcdRestart => restart(rig, "etcd").await,
            Fault::ApiserverStall => stall(rig, hold).await,
            Fault::SentinelLeaderKill => kill_sentinel_leader(rig).await,
            Fault::OperatorLeaderKill => kill_operator_leader(rig).await,
            Fault::BothLeadersKill => kill_both_leaders(rig).await,
            Fault::Latency => toxic(rig, hold, latency()).await,
            Fault::Bandwidth => toxic(rig, hold, bandwidth()).await,
            Fault::Resets => toxic(rig, hold, resets()).await,
            Fault::Outage => outage(rig, hold).await,
            Fault::HalfOpen => toxic(rig, hold, half_open()).await,
            Fault::Throttled => applied(rig, hold, THROTTLE).await,
            Fault::ServerErrors => applied(rig, hold, FAILING_WEBHOOK).await,
            Fault::WatchExpired => expire_watches(rig, hold).await,
        }
    }
}

const PROXIES: [ProgramKind; 2] = [ProgramKind::Operator, ProgramKind::Sentinel];

async fn restart(rig: &mut Rig, component: &str) -> Result<String> {
    let started = Instant::now();
    rig.plane.kill_and_restart(component).await?;
    Ok(format!(
        "{component} SIGKILLed, serving again after {:.1} s",
        started.elapsed().as_secs_f64()
    ))
}

async fn stall(rig: &mut Rig, hold: Duration) -> Result<String> {
    use nix::{sys::signal, unistd::Pid};
    let pid = rig
        .plane
        .pids()
        .into_iter()
        .find(|(name, _)| *name == "kube-apiserver")
        .map(|(_, pid)| pid)
        .context("kube-apiserver runs")?;
    let pid = Pid::from_raw(i32::try_from(pid).context("a pid fits an i32")?);
    signal::kill(pid, signal::Signal::SIGSTOP).context("SIGSTOP kube-apiserver")?;
    // Continued whatever happened while it was stopped.
    let held = rig.hold(hold).await;
    signal::kill(pid, signal::Signal::SIGCONT).context("SIGCONT kube-apiserver")?;
    held?;
    Ok(format!("kube-apiserver stopped for {} s", hold.as_secs()))
}

/// Kills the sentinel's leader once it holds an open debounce window.
async fn kill_sentinel_leader(rig: &mut Rig) -> Result<String> {
    let leader = leader_of(rig, ProgramKind::Sentinel).await?;
    let port = rig.port_of(&leader).context("the leader's port")?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut open = 0.0;
    while open == 0.0 && Instant::now() < deadline {
        open = counter(port, "kube_sentinel_sentinel_pending_keys", "")
            .await
            .unwrap_or(0.0);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    rig.kill_and_replace(&leader).await?;
    let (next, after) = handover(rig, ProgramKind::Sentinel, &leader).await?;
    Ok(format!(
        "{leader} killed with {open} debounce windows open; {next} leads after {after:.1} s"
    ))
}

/// Kills the operator's leader as soon as it has reverted an object, before it acknowledges:
/// a 300 ms latency toxic on its path holds the acknowledgement back long enough.
async fn kill_operator_leader(rig: &mut Rig) -> Result<String> {
    let leader = leader_of(rig, ProgramKind::Operator).await?;
    let port = rig.port_of(&leader).context("the leader's port")?;
    let slow = Toxic {
        name: "slow-ack",
        kind: "latency",
        stream: "downstream",
        attributes: json!({"latency": 300}),
    };
    rig.toxiproxy.add("operator", &slow).await?;
    let reverted = || counter(port, "kube_sentinel_operator_reverted_objects_total", "");
    let first = reverted().await.unwrap_or(0.0);
    let deadline = Instant::now() + Duration::from_secs(20);
    while reverted().await.unwrap_or(0.0) == first && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    rig.kill_and_replace(&leader).await?;
    let unacknowledged = pending_triggers(rig).await?;
    rig.toxiproxy.remove("operator", slow.name).await?;
    let (next, after) = handover(rig, ProgramKind::Operator, &leader).await?;
    Ok(format!(
        "{leader} killed right after a revert, {unacknowledged} triggers unacknowledged at the \
         kill; {next} leads after {after:.1} s"
    ))
}

async fn kill_both_leaders(rig: &mut Rig) -> Result<String> {
    let operator = leader_of(rig, ProgramKind::Operator).await?;
    let sentinel = leader_of(rig, ProgramKind::Sentinel).await?;
    rig.kill_and_replace(&operator).await?;
    rig.kill_and_replace(&sentinel).await?;
    let (next_operator, a) = handover(rig, ProgramKind::Operator, &operator).await?;
    let (next_sentinel, b) = handover(rig, ProgramKind::Sentinel, &sentinel).await?;
    Ok(format!(
        "{operator} and {sentinel} killed; {next_operator} leads after {a:.1} s, \
         {next_sentinel} after {b:.1} s"
    ))
}

async fn leader_of(rig: &Rig, kind: ProgramKind) -> Result<String> {
    let deadline = Instant::now() + HANDOVER;
    loop {
        if let Some(leader) = rig.leader(kind).await? {
            return Ok(leader);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "no {kind} leader within {HANDOVER:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits for a leader of `kind` other than `old`; it and the seconds it took.
async fn handover(rig: &Rig, kind: ProgramKind, old: &str) -> Result<(String, f64)> {
    let started = Instant::now();
    loop {
        if let Some(leader) = rig.leader(kind).await?.filter(|l| l != old) {
            return Ok((leader, started.elapsed().as_secs_f64()));
        }
        anyhow::ensure!(
            started.elapsed() < HANDOVER,
            "no new {kind} leader within {HANDOVER:?} of killing {old}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// StatefulClusters whose trigger the operator has not acknowledged yet.
async fn pending_triggers(rig: &Rig) -> Result<usize> {
    use crate::operator::crd::StatefulCluster;
    let crs: kube::Api<StatefulCluster> = kube::Api::all(rig.admin.clone());
    let list = crs.list(&Default::default()).await?;
    Ok(list
        .items
        .iter()
        .filter_map(|cr| cr.status.as_ref()?.sentinel.as_ref())
        .filter(|s| {
            s.trigger.trigger_id.is_some() && s.trigger.trigger_id != s.last_handled_trigger_id
        })
        .count())
}

fn latency() -> Toxic {
    Toxic {
        name: "latency",
        kind: "latency",
        stream: "downstream",
        attributes: json!({"latency": 800, "jitter": 200}),
    }
}

fn bandwidth() -> Toxic {
    Toxic {
        name: "bandwidth",
        kind: "bandwidth",
        stream: "downstream",
        attributes: json!({"rate": 16}),
    }
}

fn resets() -> Toxic {
    Toxic {
        name: "resets",
        kind: "reset_peer",
        stream: "downstream",
        attributes: json!({"timeout": 500}),
    }
}

fn half_open() -> Toxic {
    Toxic {
        name: "half-open",
        kind: "timeout",
        stream: "downstream",
        attributes: json!({"timeout": 0}),
    }
}

async fn toxic(rig: &mut Rig, hold: Duration, toxic: Toxic) -> Result<String> {
    for proxy in PROXIES {
        rig.toxiproxy.add(proxy.subcommand(), &toxic).await?;
    }
    let held = rig.hold(hold).await;
    for proxy in PROXIES {
        rig.toxiproxy.remove(proxy.subcommand(), toxic.name).await?;
    }
    held?;
    Ok(format!(
        "toxic {} {} on both programs' paths for {} s",
        toxic.kind,
        toxic.attributes,
        hold.as_secs()
    ))
}

async fn outage(rig: &mut Rig, hold: Duration) -> Result<String> {
    cut(rig, true).await?;
    let held = rig.hold(hold).await;
    cut(rig, false).await?;
    held?;
    Ok(format!("both programs' paths cut for {} s", hold.as_secs()))
}

async fn cut(rig: &Rig, cut: bool) -> Result<()> {
    for proxy in PROXIES {
        rig.toxiproxy.set_enabled(proxy.subcommand(), !cut).await?;
    }
    Ok(())
}

/// A priority level with no seats that cannot borrow any ("a jail"), rejecting at once, for
/// every request of both programs' ServiceAccounts.
const THROTTLE: &str = r#"
apiVersion: flowcontrol.apiserver.k8s.io/v1
kind: PriorityLevelConfiguration
metadata:
  name: kube-sentinel-faults
spec:
  type: Limited
  limited:
    nominalConcurrencyShares: 0
    lendablePercent: 0
    borrowingLimitPercent: 0
    limitResponse:
      type: Reject
---
apiVersion: flowcontrol.apiserver.k8s.io/v1
kind: FlowSchema
metadata:
  name: kube-sentinel-faults
spec:
  priorityLevelConfiguration:
    name: kube-sentinel-faults
  matchingPrecedence: 100
  distinguisherMethod:
    type: ByUser
  rules:
    - subjects:
        - kind: ServiceAccount
          serviceAccount: {namespace: kube-sentinel, name: sentinel}
        - kind: ServiceAccount
          serviceAccount: {namespace: kube-sentinel, name: kube-sentinel-operator}
      resourceRules:
        - verbs: ["*"]
          apiGroups: ["*"]
          resources: ["*"]
          namespaces: ["*"]
          clusterScope: true
      nonResourceRules:
        - verbs: ["*"]
          nonResourceURLs: ["*"]
"#;

/// A webhook nobody serves, failing closed, for every write of both programs: the API server
/// answers 500 ("failed calling webhook").
const FAILING_WEBHOOK: &str = r#"
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingWebhookConfiguration
metadata:
  name: kube-sentinel-faults
webhooks:
  - name: faults.kube-sentinel.dev
    clientConfig:
      url: https://127.0.0.1:1/nobody-serves-this
    rules:
      - apiGroups: ["*"]
        apiVersions: ["*"]
        operations: ["CREATE", "UPDATE", "DELETE"]
        resources: ["*/*"]
    failurePolicy: Fail
    sideEffects: None
    admissionReviewVersions: ["v1"]
    timeoutSeconds: 1
    matchConditions:
      - name: our-programs
        expression: >-
          request.userInfo.username in [
            'system:serviceaccount:kube-sentinel:sentinel',
            'system:serviceaccount:kube-sentinel:kube-sentinel-operator']
"#;

/// Applies `manifests` for `hold`, then deletes them.
async fn applied(rig: &mut Rig, hold: Duration, yaml: &str) -> Result<String> {
    let applied = manifests::apply(&rig.admin, yaml, FAULTS, "default").await?;
    let held = rig.hold(hold).await;
    let mut kinds = Vec::new();
    for object in &applied {
        delete(&rig.admin, &object.kind, &object.name)
            .await
            .with_context(|| format!("removing {} {}", object.kind, object.name))?;
        kinds.push(object.kind.as_str());
    }
    held?;
    Ok(format!(
        "{} in force for {} s",
        kinds.join(" + "),
        hold.as_secs()
    ))
}

/// Deletes the cluster-scoped object `kind`/`name` the suite applied.
async fn delete(client: &kube::Client, kind: &str, name: &str) -> Result<()> {
    use k8s_openapi::api::{
        admissionregistration::v1::ValidatingWebhookConfiguration,
        flowcontrol::v1::{FlowSchema, PriorityLevelConfiguration},
    };
    let params = kube::api::DeleteParams::default();
    match kind {
        "FlowSchema" => drop(
            kube::Api::<FlowSchema>::all(client.clone())
                .delete(name, &params)
                .await?,
        ),
        "PriorityLevelConfiguration" => drop(
            kube::Api::<PriorityLevelConfiguration>::all(client.clone())
                .delete(name, &params)
                .await?,
        ),
        "ValidatingWebhookConfiguration" => drop(
            kube::Api::<ValidatingWebhookConfiguration>::all(client.clone())
                .delete(name, &params)
                .await?,
        ),
        other => anyhow::bail!("the suite does not apply a {other}"),
    }
    Ok(())
}

/// Cuts both programs off, lets drift happen, compacts etcd to its current revision and
/// restarts the API server (its watch cache starts above the compaction), then reconnects.
async fn expire_watches(rig: &mut Rig, hold: Duration) -> Result<String> {
    cut(rig, true).await?;
    let held = rig.hold(hold).await;
    let expired = compact_and_restart(rig).await;
    // Reconnected whatever happened while they were cut off.
    cut(rig, false).await?;
    held?;
    let revision = expired?;
    Ok(format!(
        "programs cut off for {} s, etcd compacted to revision {revision}, kube-apiserver \
         restarted",
        hold.as_secs()
    ))
}

/// Compacts etcd to its current revision and restarts the API server; the revision.
async fn compact_and_restart(rig: &mut Rig) -> Result<u64> {
    let namespaces: kube::Api<k8s_openapi::api::core::v1::Namespace> =
        kube::Api::all(rig.admin.clone());
    let revision: u64 = namespaces
        .list_metadata(&Default::default())
        .await?
        .metadata
        .resource_version
        .context("a list's resourceVersion")?
        .parse()
        .context("a resourceVersion that is a number (etcd's revision)")?;
    rig.plane.compact_etcd(revision).await?;
    rig.plane.kill_and_restart("kube-apiserver").await?;
    Ok(revision)
}
