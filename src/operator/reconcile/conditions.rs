//! The conditions of a full reconcile, as a pure function of what it observed.
//!
//! The conditions of a full reconcile, `Ready`, `Progressing` and `Degraded`, as a pure
//! function of what the pass observed ([`assess`]), and their writing into the status list
//! ([`set_condition`]).

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use super::now;
use crate::operator::crd::{UpgradePhase, UpgradeStatus};

/// How soon a full reconcile comes back while the cluster is progressing.
const PROGRESSING_REQUEUE: Duration = Duration::from_secs(2);

/// What a full pass observed, as the conditions need it.
#[derive(Clone, Copy, Debug)]
pub struct Observed<'a> {
    /// The upgrade state after this pass's step.
    pub upgrade: &'a UpgradeStatus,
    /// Members the serving StatefulSet reports ready.
    pub ready: i32,
    /// `spec.replicas`.
    pub replicas: i32,
    /// The version every member runs, if known.
    pub current_version: Option<&'a str>,
    /// The first manager failure of the pass (reason, message), if any.
    pub failure: Option<(&'static str, &'a str)>,
}

/// One condition to set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConditionValue {
    /// `Ready`, `Progressing` or `Degraded`.
    pub type_: &'static str,
    /// `True` or `False`.
    pub status: bool,
    /// A CamelCase reason.
    pub reason: &'static str,
    /// For people.
    pub message: String,
}

impl ConditionValue {
    fn new(type_: &'static str, status: bool, reason: &'static str, message: String) -> Self {
        Self {
            type_,
            status,
            reason,
            message,
        }
    }
}

/// The conditions of a pass, and how soon they ask for the next one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assessment {
    /// `Ready`, `Progressing`, `Degraded`, in that order.
    pub conditions: [ConditionValue; 3],
    /// Another full reconcile after this delay, while progressing.
    pub requeue_after: Option<Duration>,
}

/// The conditions for what a pass observed.
///
/// * `Ready` when at least `spec.replicas` members are ready;
/// * `Progressing` while members are not all ready or an upgrade is in flight, with the
///   upgrade phase as reason; then a requeue in 2 s;
/// * `Degraded` with the reason of the first manager that failed.
pub fn assess(observed: &Observed) -> Assessment {
    let all_ready = observed.ready >= observed.replicas;
    let ready_message = format!("{}/{} members ready", observed.ready, observed.replicas);
    let ready = ConditionValue::new(
        "Ready",
        all_ready,
        if all_ready {
            "AllMembersReady"
        } else {
            "MembersNotReady"
        },
        ready_message.clone(),
    );
    let progressing = progressing(observed, all_ready, ready_message);
    let degraded = match observed.failure {
        Some((reason, message)) => ConditionValue::new("Degraded", true, reason, message.into()),
        None => ConditionValue::new(
            "Degraded",
            false,
            "Healthy",
            "every manager succeeded".into(),
        ),
    };
    let requeue_after = progressing.status.then_some(PROGRESSING_REQUEUE);
    Assessment {
        conditions: [ready, progressing, degraded],
        requeue_after,
    }
}

/// `Progressing`, by upgrade phase.
fn progressing(observed: &Observed, all_ready: bool, ready_message: String) -> ConditionValue {
    let state = observed.upgrade;
    let or_empty = |s: &Option<String>| s.clone().unwrap_or_default();
    let (status, reason, message) = match state.phase {
        UpgradePhase::Idle if all_ready => (
            false,
            "Stable",
            format!("running {}", observed.current_version.unwrap_or_default()),
        ),
        UpgradePhase::Idle => (true, "RollingOut", ready_message),
        UpgradePhase::Rolling => (
            true,
            "RollingUpgrade",
            format!(
                "upgrading to {}: partition {}",
                or_empty(&state.to_version),
                state.partition.unwrap_or(0)
            ),
        ),
        UpgradePhase::Deploying => (
            true,
            "BlueGreenDeploying",
            format!(
                "starting {} at {}",
                or_empty(&state.candidate_set),
                or_empty(&state.to_version)
            ),
        ),
        UpgradePhase::Retiring => (
            true,
            "BlueGreenRetiring",
            format!(
                "serving from {}; retiring {}",
                or_empty(&state.active_set),
                or_empty(&state.candidate_set)
            ),
        ),
    };
    ConditionValue::new("Progressing", status, reason, message)
}

/// The condition of a paused resource: not progressing, whatever else is true.
pub fn paused() -> ConditionValue {
    ConditionValue::new(
        "Progressing",
        false,
        "Paused",
        "spec.paused is true: the operator changes nothing".into(),
    )
}

/// Sets each of `values` in `conditions` (see [`set_condition`]).
pub fn apply(conditions: &mut Vec<Condition>, generation: Option<i64>, values: &[ConditionValue]) {
    for v in values {
        set_condition(
            conditions, generation, v.type_, v.status, v.reason, &v.message,
        );
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn idle() -> UpgradeStatus {
        UpgradeStatus::default()
    }

    fn observed(upgrade: &UpgradeStatus, ready: i32) -> Observed<'_> {
        Observed {
            upgrade,
            ready,
            replicas: 3,
            current_version: Some("1.2"),
            failure: None,
        }
    }

    fn summary(c: &ConditionValue) -> (&str, bool, &str, &str) {
        (c.type_, c.status, c.reason, c.message.as_str())
    }

    #[test]
    fn all_members_ready_and_idle_is_stable_and_asks_for_nothing() {
        let state = idle();
        let a = assess(&observed(&state, 3));
        assert_eq!(
            a.conditions.each_ref().map(summary),
            [
                ("Ready", true, "AllMembersReady", "3/3 members ready"),
                ("Progressing", false, "Stable", "running 1.2"),
                ("Degraded", false, "Healthy", "every manager succeeded"),
            ]
        );
        assert_eq!(a.requeue_after, None);
        // More members than asked for (a scale-down under way) is still ready.
        assert!(assess(&observed(&state, 4)).conditions[0].status);
        // No version known yet: the message says so by being empty.
        let unknown = Observed {
            current_version: None,
            ..observed(&state, 3)
        };
        assert_eq!(assess(&unknown).conditions[1].message, "running ");
    }

    #[test]
    fn members_not_ready_is_a_rollout_that_comes_back_in_two_seconds() {
        let state = idle();
        let a = assess(&observed(&state, 1));
        assert_eq!(
            summary(&a.conditions[0]),
            ("Ready", false, "MembersNotReady", "1/3 members ready")
        );
        assert_eq!(
            summary(&a.conditions[1]),
            ("Progressing", true, "RollingOut", "1/3 members ready")
        );
        assert_eq!(a.requeue_after, Some(Duration::from_secs(2)));
    }

    #[test]
    fn an_upgrade_in_flight_is_progressing_by_phase_even_with_every_member_ready() {
        let rolling = UpgradeStatus {
            phase: UpgradePhase::Rolling,
            to_version: Some("2.0".into()),
            partition: Some(1),
            ..Default::default()
        };
        let deploying = UpgradeStatus {
            phase: UpgradePhase::Deploying,
            to_version: Some("2.0".into()),
            active_set: Some("db".into()),
            candidate_set: Some("db-b".into()),
            ..Default::default()
        };
        let retiring = UpgradeStatus {
            phase: UpgradePhase::Retiring,
            active_set: Some("db-b".into()),
            candidate_set: Some("db".into()),
            ..Default::default()
        };
        let progressing = |state: &UpgradeStatus| {
            let a = assess(&observed(state, 3));
            assert!(a.conditions[0].status, "members are ready");
            assert_eq!(a.requeue_after, Some(Duration::from_secs(2)));
            let p = &a.conditions[1];
            assert!(p.status);
            (p.reason, p.message.clone())
        };
        assert_eq!(
            progressing(&rolling),
            ("RollingUpgrade", "upgrading to 2.0: partition 1".into())
        );
        assert_eq!(
            progressing(&deploying),
            ("BlueGreenDeploying", "starting db-b at 2.0".into())
        );
        assert_eq!(
            progressing(&retiring),
            ("BlueGreenRetiring", "serving from db-b; retiring db".into())
        );
        // A rolling upgrade recorded without its details still reads.
        let bare = UpgradeStatus {
            phase: UpgradePhase::Rolling,
            ..Default::default()
        };
        assert_eq!(progressing(&bare).1, "upgrading to : partition 0");
    }

    #[test]
    fn the_first_failure_degrades_without_touching_the_other_conditions() {
        let state = idle();
        let failed = Observed {
            failure: Some(("CertificateFailed", "certificate: bad key")),
            ..observed(&state, 3)
        };
        let a = assess(&failed);
        assert_eq!(
            summary(&a.conditions[2]),
            (
                "Degraded",
                true,
                "CertificateFailed",
                "certificate: bad key"
            )
        );
        assert_eq!(
            a.conditions[..2],
            assess(&observed(&state, 3)).conditions[..2]
        );
        assert_eq!(a.requeue_after, None);
    }

    #[test]
    fn applying_keeps_the_order_and_the_paused_condition_only_touches_progressing() {
        let state = idle();
        let mut conditions = Vec::new();
        apply(
            &mut conditions,
            Some(1),
            &assess(&observed(&state, 1)).conditions,
        );
        let types: Vec<&str> = conditions.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(types, ["Ready", "Progressing", "Degraded"]);
        apply(&mut conditions, Some(2), &[paused()]);
        assert_eq!(conditions.len(), 3);
        let p = &conditions[1];
        assert_eq!(
            (p.status.as_str(), p.reason.as_str(), p.observed_generation),
            ("False", "Paused", Some(2))
        );
        assert_eq!(conditions[0].observed_generation, Some(1));
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
