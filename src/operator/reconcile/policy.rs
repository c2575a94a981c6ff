//! Drift policy in the reconciler: warn mode, and what fights are reported as.
//!
//! * **Warn mode** (`spec.sentinel.action: warn`, or the operator's `--drift-action warn`): a
//!   trigger is acknowledged `detected` with a Warning `DriftDetected` Event naming the drifted
//!   objects and the managers that changed them, and nothing is changed; the full path applies
//!   the spec only when it changed (a new generation, a pass that failed, an upgrade in
//!   flight), so drift stays where it is until the spec changes or the mode goes back to
//!   `revert`. The TLS Secrets are kept valid in either mode: they are the operator's
//!   credentials, not infrastructure the sentinel watches.
//! * **Fights** (see [`crate::operator::fights`]): a Warning `DriftFighting` Event when a fight
//!   is recognised, the `DriftFighting` condition while one lasts, the held reverts counted,
//!   and a full reconcile when the soonest hold ends.

use k8s_openapi::api::{
    apps::v1::StatefulSet,
    core::v1::{ConfigMap, Service},
};
use kube::{
    Api,
    api::{ApiResource, DynamicObject},
    runtime::events::EventType,
};

use super::{Context, Error, Requeue, conditions::ConditionValue, fast::Acknowledgement};
use crate::{
    contract::{DriftAction, DriftChange, DriftedObject, SentinelTrigger},
    operator::{
        crd::{Outcome, StatefulCluster, StatefulClusterStatus, UpgradePhase},
        fights::drifting_writers,
        managers::{Action, Names, ObjectChange},
    },
    watch::{NamespacedName, field_path::ignored_paths},
};

/// Reasons of a failed pass after which the spec may not be fully applied.
const UNAPPLIED: [&str; 2] = ["InfraFailed", "NameConflict"];

impl Context {
    /// Whether the full path may leave the infrastructure as it is: warn mode, and the spec
    /// already applied (same generation, no failed pass, no upgrade in flight).
    pub(super) fn leaves_drift(
        &self,
        cr: &StatefulCluster,
        old: &StatefulClusterStatus,
        phase: UpgradePhase,
    ) -> bool {
        let applied = old.observed_generation.is_some()
            && old.observed_generation == cr.metadata.generation
            && phase == UpgradePhase::Idle
            && !old.conditions.iter().any(|c| {
                c.type_ == "Degraded"
                    && c.status == "True"
                    && UNAPPLIED.contains(&c.reason.as_str())
            });
        self.drift_action(cr) == DriftAction::Warn && applied
    }

    /// Warn mode's fast path: the trigger acknowledged `detected`, a Warning Event naming the
    /// objects and who changed them, nothing changed.
    pub(super) async fn acknowledge_detected(
        &self,
        cr: &StatefulCluster,
        names: &Names,
        trigger_id: &str,
        trigger: &SentinelTrigger,
    ) -> Result<Requeue, Error> {
        let ack = Acknowledgement {
            outcome: Outcome::Detected,
            reverted: &[],
            certificate: None,
            stages: None,
        };
        self.acknowledge(cr, names, trigger_id, ack).await?;
        let mut described = Vec::new();
        for object in &trigger.drifted_objects {
            described.push(self.describe_drift(cr, names, object).await);
        }
        let more = trigger
            .drifted_total
            .and_then(|t| usize::try_from(t).ok())
            .map_or(0, |t| t.saturating_sub(described.len()));
        if more > 0 {
            described.push(format!("{more} more"));
        }
        let note = format!(
            "warn mode: drift left in place: {} (trigger {trigger_id})",
            described.join("; ")
        );
        tracing::info!(resource = %names.name, trigger = %trigger_id, drift = %note, "warn mode: trigger acknowledged without a revert");
        self.event(cr, EventType::Warning, "DriftDetected", "Detect", note)
            .await;
        Ok(Requeue::Done)
    }

    /// `StatefulSet db changed by kubectl-patch`, or `... deleted`; the managers are read from
    /// the object's `managedFields` (the trigger does not carry them).
    async fn describe_drift(
        &self,
        cr: &StatefulCluster,
        names: &Names,
        object: &DriftedObject,
    ) -> String {
        let what = format!("{} {}", object.kind, object.name);
        let resource = match object.kind.as_str() {
            "StatefulSet" => ApiResource::erase::<StatefulSet>(&()),
            "Service" => ApiResource::erase::<Service>(&()),
            "ConfigMap" => ApiResource::erase::<ConfigMap>(&()),
            _ => return format!("{what} changed"),
        };
        if object.change == DriftChange::Deleted {
            return format!("{what} deleted");
        }
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), &names.namespace, &resource);
        let live = match api.get_opt(&object.name).await {
            Ok(Some(live)) => live,
            Ok(None) => return format!("{what} deleted"),
            Err(error) => return format!("{what} changed (managers unknown: {error})"),
        };
        let ignore = ignored_paths(&cr.spec.sentinel.ignore, &object.kind, &object.name);
        let managers: Vec<String> = drifting_writers(&live.metadata, &ignore)
            .into_iter()
            .map(|w| w.manager)
            .collect();
        if managers.is_empty() {
            format!("{what} changed")
        } else {
            format!("{what} changed by {}", managers.join(", "))
        }
    }

    /// Reports what fights `changes` reveal: a `DriftFighting` Event per fight recognised, and
    /// the reverts held.
    pub(super) async fn report_fights(&self, cr: &StatefulCluster, changes: &[ObjectChange]) {
        let held = self.fights.held(jiff::Timestamp::now());
        self.metrics
            .objects_held
            .set(i64::try_from(held).unwrap_or(i64::MAX));
        for change in changes {
            if let Action::Held { until } = change.action {
                self.metrics.reverts_held.inc();
                tracing::info!(resource = ?cr.metadata.name, kind = %change.kind, name = %change.name, %until, "revert held: every manager drifting it is in a fight");
            }
            for fight in &change.fights {
                self.metrics.drift_fights.inc();
                let note = format!(
                    "{} {}: {} undid {} reverts in a row; reverts against it now wait {} s, then 3 times longer each time (spec.sentinel.fightBackoff)",
                    change.kind,
                    change.name,
                    fight.manager,
                    fight.strikes,
                    fight.delay.as_secs()
                );
                tracing::warn!(resource = ?cr.metadata.name, kind = %change.kind, name = %change.name, manager = %fight.manager, strikes = fight.strikes, "drift fight: reverts back off");
                self.event_about(
                    cr,
                    EventType::Warning,
                    "DriftFighting",
                    "Revert",
                    note,
                    Some(change),
                )
                .await;
            }
        }
    }

    /// The `DriftFighting` condition of `resource` now.
    pub(super) fn fighting_condition(&self, resource: &NamespacedName) -> ConditionValue {
        let active = self.fights.active(resource, jiff::Timestamp::now());
        if active.is_empty() {
            return ConditionValue {
                type_: "DriftFighting",
                status: false,
                reason: "NoFight",
                message: "no foreign manager is undoing reverts".into(),
            };
        }
        let fights: Vec<String> = active
            .iter()
            .map(|f| {
                let hold = f
                    .hold_until
                    .map_or_else(String::new, |h| format!(", held until {h}"));
                format!(
                    "{} {} by {} ({} reverts in a row{hold})",
                    f.kind, f.name, f.manager, f.strikes
                )
            })
            .collect();
        ConditionValue {
            type_: "DriftFighting",
            status: true,
            reason: "RevertsBackedOff",
            message: format!("reverts back off: {}", fights.join("; ")),
        }
    }
}
