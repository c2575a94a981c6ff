//! Reconciling one [`StatefulCluster`]: the fast path for a pending trigger and the full path
//! for everything else.
//!
//! * **Fast path** (a trigger is pending): InfraManager and CertManager only, targeted to the
//!   drifted objects the trigger names; every change read back and verified; then
//!   `status.sentinel.{lastHandledTriggerID, lastHandledAt, lastOutcome, revertedObjects,
//!   corrections}` written with the operator's field manager, a `DriftReverted` Event naming the
//!   objects, the latencies recorded, and a full reconcile requested on the normal lane. A
//!   paused resource's trigger is acknowledged with outcome `noop` and an Event, not reverted.
//! * **Full path**: upgrade step, infrastructure, certificates, backups, then status and the
//!   `Ready` / `Progressing` / `Degraded` conditions.
//!
//! Both read the resource fresh from the API server, so a stale queue entry costs one GET.

use std::time::Duration;

use k8s_openapi::{
    api::{apps::v1::StatefulSet, core::v1::ObjectReference},
    apimachinery::pkg::apis::meta::v1::{Condition, Time},
};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{Patch, PatchParams},
    runtime::events::{Event, EventType, Recorder, Reporter},
};
use serde_json::{Map, Value, json};

use crate::{
    contract::OPERATOR_FIELD_MANAGER,
    operator::{
        crd::{Outcome, OwnedObject, StatefulCluster, StatefulClusterStatus, UpgradePhase},
        managers::{
            self, Names, ObjectChange,
            backup::BackupManager,
            cert::CertManager,
            infra::InfraManager,
            upgrade::{self, UpgradeManager},
        },
        metrics::{Metrics, PathLabels, Since},
    },
    watch::NamespacedName,
};

/// Which path ran.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Path {
    /// A trigger was handled.
    Fast,
    /// The whole resource was reconciled.
    Full,
}

impl Path {
    fn label(self) -> &'static str {
        match self {
            Path::Fast => "fast",
            Path::Full => "full",
        }
    }
}

/// What the queue should do with the key next; every requeue goes on the normal lane.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Requeue {
    /// Nothing until the next event or resync.
    Done,
    /// A full reconcile now (after a fast path).
    Now,
    /// A full reconcile after a delay (an upgrade in flight, a backup due).
    After(Duration),
}

/// What a reconcile did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Handled {
    /// The path that ran.
    pub path: Path,
    /// What to do next.
    pub requeue: Requeue,
}

/// Errors of a reconcile; the queue retries the key with backoff on the lane it came from.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A manager failed.
    #[error(transparent)]
    Manager(#[from] managers::Error),
    /// Reading or writing the resource failed.
    #[error("{0}: {1}")]
    Kube(&'static str, #[source] kube::Error),
    /// A revert did not hold when read back.
    #[error("reverted objects did not read back as desired: {0:?}")]
    Unverified(Vec<String>),
}

/// Secrets the operator's own watch saw changed by someone else, and when it first did.
#[derive(Clone, Debug)]
pub struct SecretHint {
    /// The Secrets.
    pub objects: Vec<OwnedObject>,
    /// When the first change of the burst was seen.
    pub first_seen: tokio::time::Instant,
}

fn describe(changes: &[&ObjectChange]) -> String {
    changes
        .iter()
        .map(|c| {
            if c.changed.is_empty() {
                format!("{} {} ({:?})", c.kind, c.name, c.action)
            } else {
                format!("{} {} ({})", c.kind, c.name, c.changed.join(", "))
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Everything a reconcile needs; cheap to share by reference across workers.
pub struct Context {
    client: Client,
    infra: InfraManager,
    cert: CertManager,
    upgrade: UpgradeManager,
    backup: BackupManager,
    recorder: Recorder,
    metrics: Metrics,
}

/// Seconds since the epoch now.
fn now() -> jiff::Timestamp {
    jiff::Timestamp::now()
}

fn since(t: Option<&Time>, now: jiff::Timestamp) -> Option<Duration> {
    Duration::try_from(now.duration_since(t?.0)).ok()
}

impl Context {
    /// A context acting through `client`; Events are reported as `instance`.
    pub fn new(client: Client, metrics: Metrics, instance: Option<String>) -> Self {
        let reporter = Reporter {
            controller: OPERATOR_FIELD_MANAGER.into(),
            instance,
        };
        Self {
            infra: InfraManager::new(client.clone()),
            cert: CertManager::new(client.clone()),
            upgrade: UpgradeManager::new(client.clone()),
            backup: BackupManager::new(client.clone()),
            recorder: Recorder::new(client.clone(), reporter),
            client,
            metrics,
        }
    }

    /// The metrics this context records into.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    fn api(&self, namespace: &str) -> Api<StatefulCluster> {
        Api::namespaced(self.client.clone(), namespace)
    }

    /// Reconciles `key`: the fast path when a trigger is pending, the full path otherwise.
    ///
    /// `secrets` names Secrets the operator's own Secret watch saw changed by someone else:
    /// without a pending trigger, they are repaired on the fast path alone.
    pub async fn reconcile(
        &self,
        key: &NamespacedName,
        secrets: Option<SecretHint>,
    ) -> Result<Handled, Error> {
        let Some(cr) = self
            .api(&key.namespace)
            .get_opt(&key.name)
            .await
            .map_err(|e| Error::Kube("reading the StatefulCluster", e))?
        else {
            return Ok(Handled {
                path: Path::Full,
                requeue: Requeue::Done,
            });
        };
        if cr.metadata.deletion_timestamp.is_some() {
            // Owned objects go with it (ownerReferences); nothing to do.
            return Ok(Handled {
                path: Path::Full,
                requeue: Requeue::Done,
            });
        }
        let (path, result) = match (cr.pending_trigger(), secrets) {
            (Some(_), _) => (Path::Fast, self.fast(&cr).await),
            (None, Some(hint)) => (Path::Fast, self.repair_secrets(&cr, hint).await),
            (None, None) => (Path::Full, self.full(&cr).await),
        };
        let label = if result.is_ok() { "ok" } else { "error" };
        self.metrics
            .reconciles
            .get_or_create(&PathLabels {
                path: path.label(),
                result: label,
            })
            .inc();
        result.map(|requeue| Handled { path, requeue })
    }

    async fn event(
        &self,
        cr: &StatefulCluster,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) {
        self.event_about(cr, type_, reason, action, note, None)
            .await;
    }

    /// Publishes an Event on `cr`; `related` names a second object (and keeps Events about
    /// different objects from folding into one series).
    async fn event_about(
        &self,
        cr: &StatefulCluster,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
        related: Option<&ObjectChange>,
    ) {
        let secondary = related.map(|c| ObjectReference {
            api_version: Some(match c.kind.as_str() {
                "StatefulSet" => "apps/v1".into(),
                _ => "v1".into(),
            }),
            kind: Some(c.kind.clone()),
            name: Some(c.name.clone()),
            namespace: cr.namespace(),
            ..Default::default()
        });
        let event = Event {
            type_,
            reason: reason.into(),
            note: Some(truncate(note, 1000)),
            action: action.into(),
            secondary,
        };
        if let Err(e) = self.recorder.publish(&event, &cr.object_ref(&())).await {
            tracing::warn!(error = %e, reason, "could not publish an Event");
        }
    }

    /// The fast path; see the module docs.
    pub async fn fast(&self, cr: &StatefulCluster) -> Result<Requeue, Error> {
        let names = Names::of(cr)?;
        let Some(trigger_id) = cr.pending_trigger().map(str::to_string) else {
            return Ok(Requeue::Now);
        };
        let sentinel = cr
            .status
            .as_ref()
            .and_then(|s| s.sentinel.clone())
            .unwrap_or_default();
        let only: Vec<OwnedObject> = sentinel
            .trigger
            .drifted_objects
            .iter()
            .map(|o| OwnedObject {
                kind: o.kind.clone(),
                name: o.name.clone(),
            })
            .collect();
        if cr.spec.paused {
            self.acknowledge(cr, &names, &trigger_id, Outcome::Noop, &[], None)
                .await?;
            let objects = only
                .iter()
                .map(|o| format!("{} {}", o.kind, o.name))
                .collect::<Vec<_>>()
                .join(", ");
            self.event(
                cr,
                EventType::Normal,
                "DriftIgnored",
                "Acknowledge",
                format!("paused: drift on [{objects}] left in place (trigger {trigger_id})"),
            )
            .await;
            tracing::info!(resource = %names.name, trigger = %trigger_id, "paused: trigger acknowledged without a revert");
            return Ok(Requeue::Done);
        }
        // A trigger that names objects limits the work to them; one that names none, or fewer
        // than drifted (the list is capped), gets both managers in full.
        let complete_list = sentinel
            .trigger
            .drifted_total
            .is_none_or(|t| t as usize <= only.len());
        let only = if complete_list { only } else { Vec::new() };
        let names_infra = only
            .iter()
            .any(|o| matches!(o.kind.as_str(), "StatefulSet" | "Service" | "ConfigMap"));
        let names_secrets = only.iter().any(|o| o.kind == "Secret");
        let mut changes: Vec<ObjectChange> = Vec::new();
        if only.is_empty() || names_infra || !names_secrets {
            let plan = upgrade::plan(cr, &names, &upgrade::recorded(cr, &names));
            self.metrics.manager_ran("infra", "fast");
            changes.extend(self.infra.reconcile(cr, &names, &plan, &only).await?);
        }
        let mut certificate = None;
        if only.is_empty() || names_secrets || !names_infra {
            self.metrics.manager_ran("cert", "fast");
            if let Some(outcome) = self
                .cert
                .reconcile(cr, &names, now().as_second(), &only)
                .await?
            {
                changes.extend(outcome.changes);
                certificate = Some(outcome.status);
            }
        }
        let unverified: Vec<String> = changes
            .iter()
            .filter(|c| !c.verified)
            .map(|c| format!("{} {}", c.kind, c.name))
            .collect();
        if !unverified.is_empty() {
            self.record_failure(cr, &names).await;
            return Err(Error::Unverified(unverified));
        }
        let verified_at = now();
        let reverted: Vec<&ObjectChange> = changes.iter().filter(|c| c.is_change()).collect();
        let outcome = if reverted.is_empty() {
            Outcome::Noop
        } else {
            Outcome::Corrected
        };
        let resource = format!("{}/{}", names.namespace, names.name);
        for (at, which) in [
            (sentinel.trigger.detected_at.as_ref(), Since::Detected),
            (sentinel.trigger.triggered_at.as_ref(), Since::Triggered),
        ] {
            if let Some(latency) = since(at, verified_at) {
                self.metrics.record_latency(&resource, which, latency);
            }
        }
        let refs: Vec<OwnedObject> = reverted
            .iter()
            .map(|c| OwnedObject {
                kind: c.kind.clone(),
                name: c.name.clone(),
            })
            .collect();
        self.metrics.reverted.inc_by(refs.len() as u64);
        self.acknowledge(cr, &names, &trigger_id, outcome, &refs, certificate)
            .await?;
        let detail = describe(&reverted);
        let latency = since(sentinel.trigger.detected_at.as_ref(), verified_at);
        tracing::info!(resource = %resource, trigger = %trigger_id, ?outcome, reverted = %detail, detection_to_revert = ?latency, "trigger handled");
        match outcome {
            Outcome::Corrected => {
                self.event_about(
                    cr,
                    EventType::Normal,
                    "DriftReverted",
                    "Revert",
                    format!("reverted {detail} (trigger {trigger_id})"),
                    reverted.first().copied(),
                )
                .await;
            }
            _ => {
                self.event(
                    cr,
                    EventType::Normal,
                    "NoDriftFound",
                    "Revert",
                    format!("nothing to revert (trigger {trigger_id})"),
                )
                .await;
            }
        }
        Ok(Requeue::Now)
    }

    /// Repairs Secrets changed by someone else (no trigger involved: the sentinel cannot see
    /// Secrets): CertManager targeted to them, verified, announced, then a full reconcile.
    pub async fn repair_secrets(
        &self,
        cr: &StatefulCluster,
        hint: SecretHint,
    ) -> Result<Requeue, Error> {
        let names = Names::of(cr)?;
        let listed = hint
            .objects
            .iter()
            .map(|o| o.name.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        if cr.spec.paused {
            self.event(
                cr,
                EventType::Normal,
                "DriftIgnored",
                "Acknowledge",
                format!("paused: Secret change on [{listed}] left in place"),
            )
            .await;
            return Ok(Requeue::Done);
        }
        self.metrics.manager_ran("cert", "fast");
        let Some(outcome) = self
            .cert
            .reconcile(cr, &names, now().as_second(), &hint.objects)
            .await?
        else {
            // TLS is off: these Secrets are leftovers the operator no longer manages.
            return Ok(Requeue::Now);
        };
        let unverified: Vec<String> = outcome
            .changes
            .iter()
            .filter(|c| !c.verified)
            .map(|c| format!("{} {}", c.kind, c.name))
            .collect();
        if !unverified.is_empty() {
            return Err(Error::Unverified(unverified));
        }
        let latency = hint.first_seen.elapsed();
        let reverted: Vec<&ObjectChange> =
            outcome.changes.iter().filter(|c| c.is_change()).collect();
        if reverted.is_empty() {
            return Ok(Requeue::Now);
        }
        self.metrics.record_latency(
            &format!("{}/{}", names.namespace, names.name),
            Since::Detected,
            latency,
        );
        self.metrics.reverted.inc_by(reverted.len() as u64);
        let detail = describe(&reverted);
        tracing::info!(resource = %names.name, reverted = %detail, detection_to_revert = ?latency, "Secret drift repaired");
        self.patch_status(&names, json!({"certificate": outcome.status}))
            .await?;
        self.event_about(
            cr,
            EventType::Normal,
            "DriftReverted",
            "Revert",
            format!("reverted {detail} (seen by the operator's Secret watch)"),
            reverted.first().copied(),
        )
        .await;
        Ok(Requeue::Now)
    }

    async fn acknowledge(
        &self,
        cr: &StatefulCluster,
        names: &Names,
        trigger_id: &str,
        outcome: Outcome,
        reverted: &[OwnedObject],
        certificate: Option<crate::operator::crd::CertificateStatus>,
    ) -> Result<(), Error> {
        let previous = cr
            .status
            .as_ref()
            .and_then(|s| s.sentinel.as_ref())
            .map(|s| s.corrections)
            .unwrap_or(0);
        let mut status = json!({"sentinel": {
            "lastHandledTriggerID": trigger_id,
            "lastHandledAt": Time(now()),
            "lastOutcome": outcome,
            "revertedObjects": if reverted.is_empty() { Value::Null } else { json!(reverted) },
            "corrections": previous + reverted.len() as u64,
        }});
        if let Some(certificate) = certificate {
            status["certificate"] = json!(certificate);
        }
        self.patch_status(names, status).await
    }

    async fn record_failure(&self, cr: &StatefulCluster, names: &Names) {
        if let Err(e) = self
            .patch_status(names, json!({"sentinel": {"lastOutcome": Outcome::Failed}}))
            .await
        {
            tracing::warn!(error = %e, "could not record the failed outcome");
        }
        self.event(
            cr,
            EventType::Warning,
            "RevertFailed",
            "Revert",
            "a revert did not hold when read back; retrying".into(),
        )
        .await;
    }

    async fn patch_status(&self, names: &Names, status: Value) -> Result<(), Error> {
        let params = PatchParams {
            field_manager: Some(OPERATOR_FIELD_MANAGER.into()),
            ..Default::default()
        };
        self.api(&names.namespace)
            .patch_status(
                &names.name,
                &params,
                &Patch::Merge(json!({ "status": status })),
            )
            .await
            .map_err(|e| Error::Kube("writing status", e))?;
        Ok(())
    }

    /// The full path; see the module docs.
    pub async fn full(&self, cr: &StatefulCluster) -> Result<Requeue, Error> {
        let names = Names::of(cr)?;
        let old = cr.status.clone().unwrap_or_default();
        let mut status = old.clone();
        status.sentinel = None;
        let generation = cr.metadata.generation;
        if cr.spec.paused {
            set_condition(
                &mut status.conditions,
                generation,
                "Progressing",
                false,
                "Paused",
                "spec.paused is true: the operator changes nothing",
            );
            status.observed_generation = generation;
            self.write_status(&names, &old, &status).await?;
            return Ok(Requeue::Done);
        }
        let mut failures: Vec<(&'static str, String)> = Vec::new();
        let mut requeue: Option<Duration> = None;
        let mut soonest = |d: Duration| requeue = Some(requeue.map_or(d, |r: Duration| r.min(d)));

        self.metrics.manager_ran("upgrade", "full");
        let state = match self.upgrade.step(cr, &names).await {
            Ok(step) => {
                if let Some(version) = step.current_version {
                    if status.current_version.is_some() {
                        self.event(
                            cr,
                            EventType::Normal,
                            "UpgradeCompleted",
                            "Upgrade",
                            format!("every member runs {version}"),
                        )
                        .await;
                    }
                    status.current_version = Some(version);
                }
                if step.state.phase != UpgradePhase::Idle
                    && old
                        .upgrade
                        .as_ref()
                        .is_none_or(|u| u.phase == UpgradePhase::Idle)
                {
                    self.event(
                        cr,
                        EventType::Normal,
                        "UpgradeStarted",
                        "Upgrade",
                        format!(
                            "{:?} upgrade to {}",
                            cr.spec.upgrade.strategy, cr.spec.version
                        ),
                    )
                    .await;
                }
                if step.in_progress {
                    soonest(Duration::from_secs(1));
                }
                step.state
            }
            Err(e) => {
                failures.push(("UpgradeFailed", e.to_string()));
                upgrade::recorded(cr, &names)
            }
        };
        status.upgrade = Some(state.clone());
        // Plan with this pass's state: an upgrade that just finished made its version current,
        // and planning from the stale status would roll the members back.
        let mut planned = cr.clone();
        planned.status.get_or_insert_default().current_version = status.current_version.clone();
        let plan = upgrade::plan(&planned, &names, &state);

        self.metrics.manager_ran("infra", "full");
        match self.infra.reconcile(cr, &names, &plan, &[]).await {
            Ok(changes) => log_changes("infra", &changes),
            Err(e) => failures.push(("InfraFailed", e.to_string())),
        }
        self.metrics.manager_ran("cert", "full");
        match self
            .cert
            .reconcile(cr, &names, now().as_second(), &[])
            .await
        {
            Ok(Some(outcome)) => {
                log_changes("cert", &outcome.changes);
                if !outcome.reissued.is_empty() {
                    let what = outcome
                        .reissued
                        .iter()
                        .map(|(n, p)| format!("{n} ({p:?})"))
                        .collect::<Vec<_>>()
                        .join(", ");
                    self.event(
                        cr,
                        EventType::Normal,
                        "CertificateIssued",
                        "Issue",
                        format!("issued {what}"),
                    )
                    .await;
                }
                status.certificate = Some(outcome.status);
            }
            Ok(None) => status.certificate = None,
            Err(e) => failures.push(("CertificateFailed", e.to_string())),
        }
        self.metrics.manager_ran("backup", "full");
        match self.backup.reconcile(cr, &names, now()).await {
            Ok(Some(outcome)) => {
                if let Some(job) = &outcome.created {
                    self.event(
                        cr,
                        EventType::Normal,
                        "BackupStarted",
                        "Backup",
                        format!("created Job {job}"),
                    )
                    .await;
                }
                soonest(outcome.next_in);
                status.backup = Some(outcome.status);
            }
            Ok(None) => status.backup = None,
            Err(e) => failures.push(("BackupFailed", e.to_string())),
        }

        let serving: Api<StatefulSet> = Api::namespaced(self.client.clone(), &names.namespace);
        let serving = serving
            .get_opt(&plan.serving_set)
            .await
            .map_err(|e| Error::Kube("reading the serving StatefulSet", e))?;
        let ready = serving
            .as_ref()
            .and_then(|s| s.status.as_ref())
            .and_then(|s| s.ready_replicas)
            .unwrap_or(0);
        status.ready_replicas = Some(ready);
        let replicas = cr.spec.replicas;
        let all_ready = ready >= replicas;
        if all_ready && status.current_version.is_none() && state.phase == UpgradePhase::Idle {
            // The first rollout is complete: the plan ran the spec's version.
            status.current_version = plan.sets.first().map(|s| s.version.clone());
        }
        let ready_message = format!("{ready}/{replicas} members ready");
        set_condition(
            &mut status.conditions,
            generation,
            "Ready",
            all_ready,
            if all_ready {
                "AllMembersReady"
            } else {
                "MembersNotReady"
            },
            &ready_message,
        );
        let (progressing, reason, message) = match state.phase {
            UpgradePhase::Idle if all_ready => (
                false,
                "Stable",
                format!(
                    "running {}",
                    status.current_version.clone().unwrap_or_default()
                ),
            ),
            UpgradePhase::Idle => (true, "RollingOut", ready_message.clone()),
            UpgradePhase::Rolling => (
                true,
                "RollingUpgrade",
                format!(
                    "upgrading to {}: partition {}",
                    state.to_version.clone().unwrap_or_default(),
                    state.partition.unwrap_or(0)
                ),
            ),
            UpgradePhase::Deploying => (
                true,
                "BlueGreenDeploying",
                format!(
                    "starting {} at {}",
                    state.candidate_set.clone().unwrap_or_default(),
                    state.to_version.clone().unwrap_or_default()
                ),
            ),
            UpgradePhase::Retiring => (
                true,
                "BlueGreenRetiring",
                format!(
                    "serving from {}; retiring {}",
                    state.active_set.clone().unwrap_or_default(),
                    state.candidate_set.clone().unwrap_or_default()
                ),
            ),
        };
        if progressing {
            soonest(Duration::from_secs(2));
        }
        set_condition(
            &mut status.conditions,
            generation,
            "Progressing",
            progressing,
            reason,
            &message,
        );
        match failures.first() {
            Some((reason, message)) => set_condition(
                &mut status.conditions,
                generation,
                "Degraded",
                true,
                reason,
                message,
            ),
            None => set_condition(
                &mut status.conditions,
                generation,
                "Degraded",
                false,
                "Healthy",
                "every manager succeeded",
            ),
        }
        status.observed_generation = generation;
        self.write_status(&names, &old, &status).await?;
        if let Some((reason, message)) = failures.into_iter().next() {
            tracing::warn!(resource = %names.name, reason, %message, "full reconcile degraded");
            return Err(Error::Manager(managers::Error::Degraded(reason, message)));
        }
        Ok(requeue.map_or(Requeue::Done, Requeue::After))
    }

    /// Writes the operator's part of the status (never the sentinel's fields) as a merge patch
    /// that turns `old` into `new`.
    async fn write_status(
        &self,
        names: &Names,
        old: &StatefulClusterStatus,
        new: &StatefulClusterStatus,
    ) -> Result<(), Error> {
        let strip = |s: &StatefulClusterStatus| {
            let mut v = serde_json::to_value(s).unwrap_or_default();
            if let Some(o) = v.as_object_mut() {
                o.remove("sentinel");
            }
            v
        };
        let patch = merge_patch(&strip(old), &strip(new));
        if patch.as_object().is_some_and(Map::is_empty) {
            return Ok(());
        }
        self.patch_status(names, patch).await
    }
}

fn log_changes(manager: &str, changes: &[ObjectChange]) {
    for c in changes.iter().filter(|c| c.is_change()) {
        tracing::info!(manager, kind = %c.kind, name = %c.name, action = ?c.action, changed = ?c.changed, "converged");
    }
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

/// Sets condition `type_`, keeping its transition time when the status did not change.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    generation: Option<i64>,
    type_: &str,
    value: bool,
    reason: &str,
    message: &str,
) {
    let status = if value { "True" } else { "False" };
    let existing = conditions.iter_mut().find(|c| c.type_ == type_);
    let transition = match &existing {
        Some(c) if c.status == status => c.last_transition_time.clone(),
        _ => Time(now()),
    };
    let condition = Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
        message: message.into(),
        last_transition_time: transition,
        observed_generation: generation,
    };
    match existing {
        Some(c) => *c = condition,
        None => conditions.push(condition),
    }
}

/// A JSON merge patch (RFC 7396) that turns `old` into `new`.
pub fn merge_patch(old: &Value, new: &Value) -> Value {
    match (old, new) {
        (Value::Object(o), Value::Object(n)) => {
            let mut patch = Map::new();
            for (k, nv) in n {
                match o.get(k) {
                    Some(ov) if ov == nv => {}
                    Some(ov @ Value::Object(_)) if nv.is_object() => {
                        patch.insert(k.clone(), merge_patch(ov, nv));
                    }
                    _ => {
                        patch.insert(k.clone(), nv.clone());
                    }
                }
            }
            for k in o.keys().filter(|k| !n.contains_key(*k)) {
                patch.insert(k.clone(), Value::Null);
            }
            Value::Object(patch)
        }
        (_, n) => n.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_patch_sets_changes_and_nulls_removals() {
        let old = json!({"upgrade": {"phase": "Rolling", "partition": 1}, "readyReplicas": 3, "backup": {"lastJob": "a"}});
        let new = json!({"upgrade": {"phase": "Idle"}, "readyReplicas": 3, "currentVersion": "2"});
        assert_eq!(
            merge_patch(&old, &new),
            json!({"upgrade": {"phase": "Idle", "partition": null}, "currentVersion": "2", "backup": null})
        );
        assert_eq!(merge_patch(&new, &new), json!({}));
    }

    #[test]
    fn conditions_keep_their_transition_time_while_unchanged() {
        let mut conditions = Vec::new();
        set_condition(
            &mut conditions,
            Some(1),
            "Ready",
            false,
            "MembersNotReady",
            "0/3",
        );
        let first = conditions[0].last_transition_time.clone();
        set_condition(
            &mut conditions,
            Some(2),
            "Ready",
            false,
            "MembersNotReady",
            "1/3",
        );
        assert_eq!(conditions.len(), 1);
        assert_eq!(conditions[0].last_transition_time, first);
        assert_eq!(
            (
                conditions[0].message.as_str(),
                conditions[0].observed_generation
            ),
            ("1/3", Some(2))
        );
        set_condition(
            &mut conditions,
            Some(2),
            "Ready",
            true,
            "AllMembersReady",
            "3/3",
        );
        assert_eq!(conditions[0].status, "True");
    }
}
