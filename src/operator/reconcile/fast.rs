//! The fast path: a trigger's drift reverted, verified and acknowledged.
//!
//! The fast path: a pending trigger's drift reverted (InfraManager and CertManager only,
//! targeted to the objects it names), verified and acknowledged; and the repair of Secrets the
//! operator's own watch saw changed.

use std::{collections::HashMap, sync::Mutex};

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::runtime::events::EventType;
use serde_json::{Value, json};

use super::{
    ClaimTimes, Context, Error, Requeue, SecretHint, conditions,
    events::{MAX_LAST_ERROR, describe, truncate},
    now, since,
};
use crate::{
    contract::{DriftAction, SentinelTrigger},
    operator::{
        crd::{CertificateStatus, Outcome, OwnedObject, SentinelStatus, StatefulCluster},
        managers::{Action, Names, ObjectChange, upgrade},
        metrics::Since,
    },
    watch::NamespacedName,
};

/// What an acknowledgement says besides the trigger's ID.
pub(super) struct Acknowledgement<'a> {
    pub(super) outcome: Outcome,
    pub(super) reverted: &'a [OwnedObject],
    pub(super) certificate: Option<CertificateStatus>,
    /// When the trigger was queued and taken, and when its revert was read back: written as
    /// `lastQueuedAt`, `lastStartedAt`, `lastRevertedAt`; `None` clears them.
    pub(super) stages: Option<(ClaimTimes, Timestamp)>,
}

/// Failed tries of one trigger's fast path before it is acknowledged `failed` and left to the
/// full path: enough to ride out a conflict or a blip (the work queue's backoff between them),
/// few enough that one refused revert does not hold up the resource.
pub const FAST_PATH_ATTEMPTS: u32 = 5;

/// Failed fast-path tries of each resource's pending trigger; a resource's count goes when its
/// trigger is acknowledged or the resource is gone.
#[derive(Debug, Default)]
pub struct TriggerFailures(Mutex<HashMap<NamespacedName, (String, u32)>>);

impl TriggerFailures {
    /// Counts a failed try of `trigger_id` on `key` (a new trigger starts again at one);
    /// returns the tries of this trigger so far.
    fn failed(&self, key: &NamespacedName, trigger_id: &str) -> u32 {
        let mut counts = self.lock();
        let count = counts
            .entry(key.clone())
            .or_insert_with(|| (trigger_id.to_string(), 0));
        if count.0 != trigger_id {
            *count = (trigger_id.to_string(), 0);
        }
        count.1 += 1;
        count.1
    }

    /// Forgets `key`'s count.
    pub fn forget(&self, key: &NamespacedName) {
        self.lock().remove(key);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<NamespacedName, (String, u32)>> {
        // A poisoned map of counts is still a valid map of counts.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Context {
    /// The fast path; see the module docs. The [`FAST_PATH_ATTEMPTS`]th failure of the same
    /// trigger acknowledges it as failed instead of retrying.
    pub async fn fast(&self, cr: &StatefulCluster, times: ClaimTimes) -> Result<Requeue, Error> {
        let names = Names::of(cr)?;
        let Some(trigger_id) = cr.pending_trigger().map(str::to_string) else {
            return Ok(Requeue::Now);
        };
        if !crate::contract::is_trigger_id(&trigger_id) {
            return self.refuse_invalid_trigger(cr, &names, &trigger_id).await;
        }
        let sentinel = cr
            .status
            .as_ref()
            .and_then(|s| s.sentinel.clone())
            .unwrap_or_default();
        let named = named_objects(&sentinel.trigger);
        if cr.spec.paused {
            return self
                .acknowledge_paused(cr, &names, &trigger_id, &named)
                .await;
        }
        if self.drift_action(cr) == DriftAction::Warn {
            return self
                .acknowledge_detected(cr, &names, &trigger_id, &sentinel.trigger)
                .await;
        }
        let key = NamespacedName::new(&names.namespace, &names.name);
        let error = match self
            .handle(cr, &names, &trigger_id, &sentinel, named, times)
            .await
        {
            Ok(requeue) => {
                self.trigger_failures.forget(&key);
                return Ok(requeue);
            }
            Err(error) => error,
        };
        let tries = self.trigger_failures.failed(&key, &trigger_id);
        if tries < FAST_PATH_ATTEMPTS {
            return Err(error);
        }
        let given_up = self.give_up(cr, &names, &trigger_id, &error, tries).await?;
        self.trigger_failures.forget(&key);
        Ok(given_up)
    }

    /// Reverts what `sentinel`'s trigger names, verifies and acknowledges it.
    async fn handle(
        &self,
        cr: &StatefulCluster,
        names: &Names,
        trigger_id: &str,
        sentinel: &SentinelStatus,
        named: Vec<OwnedObject>,
        times: ClaimTimes,
    ) -> Result<Requeue, Error> {
        let only = targets(&sentinel.trigger, named);
        let (changes, certificate) = self.revert(cr, names, &only).await?;
        if let Err(e) = all_verified(&changes) {
            self.record_failure(cr, names).await;
            return Err(e);
        }
        let verified_at = now();
        let reverted: Vec<&ObjectChange> = changes.iter().filter(|c| c.is_change()).collect();
        let held = changes
            .iter()
            .any(|c| matches!(c.action, Action::Held { .. }));
        let outcome = match (reverted.is_empty(), held) {
            (false, _) => Outcome::Corrected,
            (true, true) => Outcome::Deferred,
            (true, false) => Outcome::Noop,
        };
        let resource = format!("{}/{}", names.namespace, names.name);
        if outcome != Outcome::Deferred {
            self.record_trigger_latencies(&resource, &sentinel.trigger, verified_at);
        }
        let refs: Vec<OwnedObject> = reverted
            .iter()
            .map(|c| OwnedObject {
                kind: c.kind.clone(),
                name: c.name.clone(),
            })
            .collect();
        self.metrics.reverted.inc_by(refs.len() as u64);
        let ack = Acknowledgement {
            outcome,
            reverted: &refs,
            certificate,
            stages: Some((times, verified_at)),
        };
        self.acknowledge(cr, names, trigger_id, ack).await?;
        let detail = describe(&reverted);
        let latency = since(sentinel.trigger.detected_at.as_ref(), verified_at);
        tracing::info!(resource = %resource, trigger = %trigger_id, ?outcome, reverted = %detail, detection_to_revert = ?latency, "trigger handled");
        self.announce_handled(cr, trigger_id, outcome, &detail, reverted.first().copied())
            .await;
        self.report_fights(cr, &changes).await;
        Ok(Requeue::Now)
    }

    /// A trigger whose fast path keeps failing: acknowledged with outcome `failed` and the
    /// error, `Degraded`, a Warning Event; then the full path runs (which reports on its own).
    async fn give_up(
        &self,
        cr: &StatefulCluster,
        names: &Names,
        trigger_id: &str,
        error: &Error,
        attempts: u32,
    ) -> Result<Requeue, Error> {
        let message = truncate(failure_message(error), MAX_LAST_ERROR);
        let mut conditions = cr
            .status
            .as_ref()
            .map(|s| s.conditions.clone())
            .unwrap_or_default();
        conditions::set_condition(
            &mut conditions,
            cr.metadata.generation,
            "Degraded",
            true,
            "RevertFailed",
            &message,
        );
        let status = json!({
            "sentinel": {
                "lastHandledTriggerID": trigger_id,
                "lastHandledAt": MicroTime(now()),
                "lastOutcome": Outcome::Failed,
                "lastError": message,
                "revertedObjects": Value::Null,
                "lastQueuedAt": Value::Null,
                "lastStartedAt": Value::Null,
                "lastRevertedAt": Value::Null,
            },
            "conditions": conditions,
        });
        self.patch_status(names, status).await?;
        tracing::warn!(resource = %names.name, trigger = %trigger_id, attempts, error = %message, "trigger not reverted: acknowledged as failed; running the full reconcile");
        self.event(
            cr,
            EventType::Warning,
            "RevertFailed",
            "Revert",
            format!("trigger {trigger_id} not reverted after {attempts} attempts: {message}"),
        )
        .await;
        Ok(Requeue::Now)
    }

    /// A paused resource's trigger: acknowledged with outcome `noop` and an Event, nothing
    /// reverted.
    async fn acknowledge_paused(
        &self,
        cr: &StatefulCluster,
        names: &Names,
        trigger_id: &str,
        named: &[OwnedObject],
    ) -> Result<Requeue, Error> {
        let ack = Acknowledgement {
            outcome: Outcome::Noop,
            reverted: &[],
            certificate: None,
            stages: None,
        };
        self.acknowledge(cr, names, trigger_id, ack).await?;
        let objects = named
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
        Ok(Requeue::Done)
    }

    /// Runs InfraManager and CertManager, each only if `only` is empty, names objects of its
    /// own, or names none of the other's; returns every object's outcome and the certificate.
    async fn revert(
        &self,
        cr: &StatefulCluster,
        names: &Names,
        only: &[OwnedObject],
    ) -> Result<(Vec<ObjectChange>, Option<CertificateStatus>), Error> {
        let names_infra = only
            .iter()
            .any(|o| matches!(o.kind.as_str(), "StatefulSet" | "Service" | "ConfigMap"));
        let names_secrets = only.iter().any(|o| o.kind == "Secret");
        let mut changes: Vec<ObjectChange> = Vec::new();
        if only.is_empty() || names_infra || !names_secrets {
            let plan = upgrade::plan(cr, names, &upgrade::recorded(cr, names));
            self.metrics.manager_ran("infra", "fast");
            changes.extend(self.infra.reconcile(cr, names, &plan, only).await?);
        }
        let mut certificate = None;
        if only.is_empty() || names_secrets || !names_infra {
            self.metrics.manager_ran("cert", "fast");
            if let Some(outcome) = self
                .cert
                .reconcile(cr, names, now().as_second(), only)
                .await?
            {
                changes.extend(outcome.changes);
                certificate = Some(outcome.status);
            }
        }
        Ok((changes, certificate))
    }

    /// Records detection-to-revert and trigger-to-revert for `resource`.
    fn record_trigger_latencies(
        &self,
        resource: &str,
        trigger: &SentinelTrigger,
        verified_at: Timestamp,
    ) {
        for (at, which) in [
            (trigger.detected_at.as_ref(), Since::Detected),
            (trigger.triggered_at.as_ref(), Since::Triggered),
        ] {
            if let Some(latency) = since(at, verified_at) {
                match trigger.trigger_id.as_deref() {
                    Some(id) => self
                        .metrics
                        .record_trigger_latency(resource, which, latency, id),
                    None => self.metrics.record_latency(resource, which, latency),
                }
            }
        }
    }

    /// The Event of a handled trigger: `DriftReverted` naming the objects, or `NoDriftFound`.
    async fn announce_handled(
        &self,
        cr: &StatefulCluster,
        trigger_id: &str,
        outcome: Outcome,
        detail: &str,
        first: Option<&ObjectChange>,
    ) {
        match outcome {
            Outcome::Corrected => {
                self.event_about(
                    cr,
                    EventType::Normal,
                    "DriftReverted",
                    "Revert",
                    format!("reverted {detail} (trigger {trigger_id})"),
                    first,
                )
                .await;
            }
            Outcome::Deferred => {
                self.event(
                    cr,
                    EventType::Normal,
                    "RevertDeferred",
                    "Revert",
                    format!("revert held back by a drift fight's backoff; reverted when the hold ends (trigger {trigger_id})"),
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
        all_verified(&outcome.changes)?;
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

    /// Writes the operator's acknowledgement of `trigger_id` in `status.sentinel`.
    pub(super) async fn acknowledge(
        &self,
        cr: &StatefulCluster,
        names: &Names,
        trigger_id: &str,
        ack: Acknowledgement<'_>,
    ) -> Result<(), Error> {
        let Acknowledgement {
            outcome,
            reverted,
            certificate,
            stages,
        } = ack;
        let previous = cr
            .status
            .as_ref()
            .and_then(|s| s.sentinel.as_ref())
            .map(|s| s.corrections)
            .unwrap_or(0);
        let at = |t: Option<Timestamp>| t.map_or(Value::Null, |t| json!(MicroTime(t)));
        let mut status = json!({"sentinel": {
            "lastHandledTriggerID": trigger_id,
            "lastHandledAt": MicroTime(now()),
            "lastOutcome": outcome,
            "lastError": Value::Null,
            "revertedObjects": if reverted.is_empty() { Value::Null } else { json!(reverted) },
            "corrections": previous + reverted.len() as u64,
            "lastQueuedAt": at(stages.map(|(times, _)| times.queued_at)),
            "lastStartedAt": at(stages.map(|(times, _)| times.started_at)),
            "lastRevertedAt": at(stages.map(|(_, reverted_at)| reverted_at)),
        }});
        if let Some(certificate) = certificate {
            status["certificate"] = json!(certificate);
        }
        self.patch_status(names, status).await
    }

    /// Records a failed revert (`lastOutcome: failed`) and a `RevertFailed` Event.
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
}

/// What a person needs of a failure: the API server's own message when it refused a call (a
/// kube API error prints its whole status besides), else the error.
fn failure_message(error: &Error) -> String {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = cause {
        if let Some(kube::Error::Api(status)) = e.downcast_ref::<kube::Error>() {
            return status.message.clone();
        }
        cause = e.source();
    }
    error.to_string()
}

/// The objects a trigger names.
fn named_objects(trigger: &SentinelTrigger) -> Vec<OwnedObject> {
    trigger
        .drifted_objects
        .iter()
        .map(|o| OwnedObject {
            kind: o.kind.clone(),
            name: o.name.clone(),
        })
        .collect()
}

/// What the fast path works on. A trigger that names objects limits the work to them; one that
/// names none, or fewer than drifted (the list is capped), gets both managers in full (no
/// targets).
fn targets(trigger: &SentinelTrigger, named: Vec<OwnedObject>) -> Vec<OwnedObject> {
    let complete_list = trigger
        .drifted_total
        .is_none_or(|t| t as usize <= named.len());
    if complete_list { named } else { Vec::new() }
}

/// `Ok` when every change read back as desired, else the objects that did not.
fn all_verified(changes: &[ObjectChange]) -> Result<(), Error> {
    let unverified: Vec<String> = changes
        .iter()
        .filter(|c| !c.verified)
        .map(|c| format!("{} {}", c.kind, c.name))
        .collect();
    if unverified.is_empty() {
        Ok(())
    } else {
        Err(Error::Unverified(unverified))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        contract::{DriftChange, DriftedObject},
        operator::managers::Action,
    };

    fn trigger(objects: &[(&str, &str)], total: Option<u32>) -> SentinelTrigger {
        SentinelTrigger {
            drifted_objects: objects
                .iter()
                .map(|(kind, name)| DriftedObject {
                    kind: (*kind).into(),
                    name: (*name).into(),
                    change: DriftChange::Modified,
                })
                .collect(),
            drifted_total: total,
            ..Default::default()
        }
    }

    #[test]
    fn a_complete_list_is_targeted_and_a_capped_one_is_not() {
        let listed = trigger(&[("Service", "db"), ("Secret", "db-tls")], Some(2));
        let named = named_objects(&listed);
        assert_eq!(
            named,
            [
                OwnedObject {
                    kind: "Service".into(),
                    name: "db".into()
                },
                OwnedObject {
                    kind: "Secret".into(),
                    name: "db-tls".into()
                }
            ]
        );
        assert_eq!(targets(&listed, named.clone()), named);
        let untotalled = trigger(&[("Service", "db")], None);
        assert_eq!(targets(&untotalled, named_objects(&untotalled)).len(), 1);
        let capped = trigger(&[("Service", "db")], Some(20));
        assert!(targets(&capped, named_objects(&capped)).is_empty());
    }

    #[test]
    fn failures_are_counted_per_trigger_and_forgotten() {
        let failures = TriggerFailures::default();
        let (db, web) = (
            NamespacedName::new("ns", "db"),
            NamespacedName::new("ns", "web"),
        );
        assert_eq!(failures.failed(&db, "t1"), 1);
        assert_eq!(failures.failed(&db, "t1"), 2);
        assert_eq!(failures.failed(&web, "t1"), 1, "per resource");
        assert_eq!(failures.failed(&db, "t2"), 1, "a new trigger starts again");
        failures.forget(&db);
        assert_eq!(failures.failed(&db, "t2"), 1);
        failures.forget(&db);
        failures.forget(&web);
        assert!(failures.lock().is_empty());
    }

    #[test]
    fn an_unverified_change_names_its_object() {
        let change = |name: &str, verified| ObjectChange {
            kind: "Service".into(),
            name: name.into(),
            action: Action::Updated,
            changed: Vec::new(),
            verified,
            fights: Vec::new(),
        };
        assert!(all_verified(&[change("a", true)]).is_ok());
        match all_verified(&[change("a", true), change("b", false)]) {
            Err(Error::Unverified(objects)) => assert_eq!(objects, ["Service b"]),
            other => panic!("expected Unverified, got {other:?}"),
        }
    }
}
