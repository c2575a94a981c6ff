//! UpgradeManager: takes the cluster from `status.currentVersion` to `spec.version`.
//!
//! The state machine lives in `status.upgrade` ([`UpgradeStatus`]), so an operator that restarts
//! mid-upgrade continues where the last one stopped:
//!
//! ```text
//! Rolling:   Idle ──version changed──▶ Rolling(partition = n-1) ──pods ≥ partition updated
//!            and every pod ready──▶ partition - 1 … ──partition 0, all updated and ready──▶ Idle
//! BlueGreen: Idle ──version changed──▶ Deploying(candidate = other slot at the new version)
//!            ──candidate fully ready──▶ Retiring(Services switched; old set deleted)
//!            ──old set gone──▶ Idle
//! ```
//!
//! The status is writable by anyone who may patch `statefulclusters/status`, so what is read
//! back is checked first ([`refusals`]): only the two set names the operator derives and
//! versions the spec would accept are used; a forged state is reset to Idle, and nothing is
//! deleted that this resource does not control.
//!
//! [`plan`] turns the recorded state into the StatefulSets the InfraManager must run; it makes
//! no API calls, so the fast path can revert drift mid-upgrade without advancing the upgrade.
//! [`UpgradeManager::step`] (full path only) observes the StatefulSets and advances one step.

use k8s_openapi::api::apps::v1::StatefulSet;
use kube::{
    Api, Client,
    api::{DeleteParams, PropagationPolicy},
};

use super::{Error, Names, Result, check_controlled};
use crate::operator::crd::{StatefulCluster, UpgradePhase, UpgradeStatus, UpgradeStrategy};

/// One StatefulSet the InfraManager runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetPlan {
    /// StatefulSet name.
    pub name: String,
    /// Image tag its pod template runs.
    pub version: String,
    /// Rolling-update partition (pods with a lower ordinal keep the previous template).
    pub partition: i32,
}

/// The StatefulSets to run and which one the Services select.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InfraPlan {
    /// Every StatefulSet to run.
    pub sets: Vec<SetPlan>,
    /// The StatefulSet the Services select.
    pub serving_set: String,
}

/// The recorded upgrade state, or the initial one; a state with a refused value (see
/// [`refusals`]) is reset to Idle on a derived serving set, keeping the completed count.
pub fn recorded(cr: &StatefulCluster, names: &Names) -> UpgradeStatus {
    let stored = cr.status.as_ref().and_then(|s| s.upgrade.clone());
    let mut state = stored.unwrap_or_default();
    if !refusals(cr, names)
        .iter()
        .all(|r| r.field == "currentVersion")
    {
        state = UpgradeStatus {
            active_set: state.active_set.filter(|a| names.is_set(a)),
            completed: state.completed,
            ..Default::default()
        };
    }
    if state.active_set.is_none() {
        state.active_set = Some(names.set_a());
    }
    state
}

/// A status value the operator refuses to act on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// The field, relative to `status` (`upgrade.candidateSet`, `currentVersion`, ...).
    pub field: &'static str,
    /// The value found there.
    pub value: String,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "status.{} {:?}", self.field, self.value)
    }
}

/// The values in `cr`'s status the operator could not have written: a StatefulSet name other
/// than the two it derives (the candidate must be the slot that is not active), or a version
/// the spec would not accept.
pub fn refusals(cr: &StatefulCluster, names: &Names) -> Vec<Refusal> {
    let Some(status) = cr.status.as_ref() else {
        return Vec::new();
    };
    let mut refused = Vec::new();
    let mut check = |field, value: &Option<String>, valid: &dyn Fn(&str) -> bool| {
        if let Some(value) = value.as_deref().filter(|v| !valid(v)) {
            refused.push(Refusal {
                field,
                value: value.to_string(),
            });
        }
    };
    check("currentVersion", &status.current_version, &valid_version);
    let Some(upgrade) = status.upgrade.as_ref() else {
        return refused;
    };
    let active = upgrade.active_set.clone().unwrap_or_else(|| names.set_a());
    check("upgrade.activeSet", &upgrade.active_set, &|s| {
        names.is_set(s)
    });
    let other = names.other_set(&active);
    check("upgrade.candidateSet", &upgrade.candidate_set, &|s| {
        s == other
    });
    check("upgrade.fromVersion", &upgrade.from_version, &valid_version);
    check("upgrade.toVersion", &upgrade.to_version, &valid_version);
    refused
}

/// Whether `version` is one `spec.version` accepts: 1–128 characters matching
/// [`VERSION_PATTERN`](crate::operator::crd::VERSION_PATTERN).
pub fn valid_version(version: &str) -> bool {
    let mut chars = version.chars();
    version.len() <= 128
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// The version every member runs, or the spec's version before the first rollout finished
/// (or when the recorded one is refused).
fn current_version(cr: &StatefulCluster) -> String {
    cr.status
        .as_ref()
        .and_then(|s| s.current_version.clone())
        .filter(|v| valid_version(v))
        .unwrap_or_else(|| cr.spec.version.clone())
}

/// What the InfraManager must run in `state`; no API calls.
pub fn plan(cr: &StatefulCluster, names: &Names, state: &UpgradeStatus) -> InfraPlan {
    let active = state.active_set.clone().unwrap_or_else(|| names.set_a());
    let to = state
        .to_version
        .clone()
        .unwrap_or_else(|| cr.spec.version.clone());
    let from = state
        .from_version
        .clone()
        .unwrap_or_else(|| current_version(cr));
    let set = |name: &str, version: &str, partition: i32| SetPlan {
        name: name.to_string(),
        version: version.to_string(),
        partition,
    };
    let sets = match state.phase {
        UpgradePhase::Idle => vec![set(&active, &current_version(cr), 0)],
        UpgradePhase::Rolling => vec![set(&active, &to, state.partition.unwrap_or(0))],
        UpgradePhase::Deploying => {
            let candidate = state
                .candidate_set
                .clone()
                .unwrap_or_else(|| names.other_set(&active));
            vec![set(&active, &from, 0), set(&candidate, &to, 0)]
        }
        UpgradePhase::Retiring => vec![set(&active, &to, 0)],
    };
    InfraPlan {
        sets,
        serving_set: active,
    }
}

/// What one StatefulSet reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SetObservation {
    /// Whether it exists.
    pub exists: bool,
    /// Whether its controller has seen the latest spec (`status.observedGeneration`).
    pub observed: bool,
    /// `status.readyReplicas`.
    pub ready: i32,
    /// `status.updatedReplicas` (pods at the newest template).
    pub updated: i32,
    /// `status.currentRevision == status.updateRevision`: the controller considers the
    /// rollout of the newest template complete.
    pub rolled_out: bool,
}

impl SetObservation {
    /// Reads a StatefulSet (or its absence).
    pub fn of(sts: Option<&StatefulSet>) -> Self {
        let Some(sts) = sts else {
            return Self::default();
        };
        let status = sts.status.clone().unwrap_or_default();
        Self {
            exists: true,
            observed: status.observed_generation.is_some()
                && status.observed_generation >= sts.metadata.generation,
            ready: status.ready_replicas.unwrap_or(0),
            updated: status.updated_replicas.unwrap_or(0),
            rolled_out: status.update_revision.is_some()
                && status.current_revision == status.update_revision,
        }
    }

    fn all_ready(&self, replicas: i32) -> bool {
        self.exists && self.observed && self.ready >= replicas
    }
}

/// What the next state is, given the recorded one and what the StatefulSets report.
///
/// `active` and `candidate` observe the sets named in `state`. Returns the new state and, when
/// an upgrade completed or the first rollout became ready, the version now current.
pub fn transition(
    cr: &StatefulCluster,
    names: &Names,
    state: &UpgradeStatus,
    active: SetObservation,
    candidate: SetObservation,
) -> (UpgradeStatus, Option<String>) {
    let replicas = cr.spec.replicas;
    let spec_version = &cr.spec.version;
    let current = cr
        .status
        .as_ref()
        .and_then(|s| s.current_version.clone())
        .filter(|v| valid_version(v));
    let mut next = state.clone();
    let active_name = state.active_set.clone().unwrap_or_else(|| names.set_a());
    match state.phase {
        UpgradePhase::Idle => match current {
            None => {
                if active.all_ready(replicas) {
                    return (next, Some(spec_version.clone()));
                }
            }
            Some(current) if current != *spec_version => {
                next.from_version = Some(current);
                next.to_version = Some(spec_version.clone());
                match cr.spec.upgrade.strategy {
                    UpgradeStrategy::Rolling => {
                        next.phase = UpgradePhase::Rolling;
                        next.partition = Some((replicas - 1).max(0));
                    }
                    UpgradeStrategy::BlueGreen => {
                        next.phase = UpgradePhase::Deploying;
                        next.candidate_set = Some(names.other_set(&active_name));
                    }
                }
            }
            Some(_) => {}
        },
        UpgradePhase::Rolling => {
            if next.to_version.as_ref() != Some(spec_version) {
                // Retargeted mid-rollout: start over from the top ordinal.
                next.to_version = Some(spec_version.clone());
                next.partition = Some((replicas - 1).max(0));
                return (next, None);
            }
            let partition = state.partition.unwrap_or(0).min(replicas);
            let stepped = active.observed
                && active.updated >= replicas - partition
                && active.ready >= replicas;
            if stepped && partition > 0 {
                next.partition = Some(partition - 1);
            } else if stepped && active.rolled_out {
                let to = next.to_version.take();
                next = finished(next);
                return (next, to);
            }
        }
        UpgradePhase::Deploying => {
            next.to_version = Some(spec_version.clone());
            if candidate.all_ready(replicas)
                && candidate.updated >= replicas
                && candidate.rolled_out
            {
                next.phase = UpgradePhase::Retiring;
                next.candidate_set = Some(active_name);
                next.active_set = state.candidate_set.clone();
            }
        }
        UpgradePhase::Retiring => {
            if !candidate.exists {
                let to = next.to_version.take();
                next = finished(next);
                return (next, to);
            }
        }
    }
    (next, None)
}

fn finished(mut state: UpgradeStatus) -> UpgradeStatus {
    state.phase = UpgradePhase::Idle;
    state.from_version = None;
    state.to_version = None;
    state.partition = None;
    state.candidate_set = None;
    state.completed += 1;
    state
}

/// Result of one upgrade step.
#[derive(Clone, Debug, PartialEq)]
pub struct UpgradeOutcome {
    /// The state to record.
    pub state: UpgradeStatus,
    /// The version now current, when it changed.
    pub current_version: Option<String>,
    /// Whether an upgrade is in flight (poll again soon).
    pub in_progress: bool,
}

/// Advances upgrades; see the module docs.
#[derive(Clone)]
pub struct UpgradeManager {
    client: Client,
}

impl UpgradeManager {
    /// A manager using `client`.
    pub fn new(client: Client) -> Self {
        Self { client }
    }

    /// Observes the StatefulSets named in the recorded state, retires an old blue/green set, and
    /// returns the next state. Fails with [`Error::InvalidStatus`], before any API call, when
    /// the status holds a value the operator could not have written.
    pub async fn step(&self, cr: &StatefulCluster, names: &Names) -> Result<UpgradeOutcome> {
        let refused = refusals(cr, names);
        if !refused.is_empty() {
            let what = refused.iter().map(ToString::to_string).collect::<Vec<_>>();
            return Err(Error::InvalidStatus(format!(
                "{}: not written by the operator (its StatefulSets are {} and {}); the upgrade state is reset",
                what.join(", "),
                names.set_a(),
                names.set_b()
            )));
        }
        let owner_uid = cr.metadata.uid.as_deref().ok_or(Error::Incomplete("uid"))?;
        let api: Api<StatefulSet> = Api::namespaced(self.client.clone(), &names.namespace);
        let state = recorded(cr, names);
        let active_name = state.active_set.clone().unwrap_or_else(|| names.set_a());
        let active = api
            .get_opt(&active_name)
            .await
            .map_err(Error::kube(format!("reading StatefulSet {active_name}")))?;
        let candidate = match &state.candidate_set {
            Some(name) => api
                .get_opt(name)
                .await
                .map_err(Error::kube(format!("reading StatefulSet {name}")))?,
            None => None,
        };
        if state.phase == UpgradePhase::Retiring
            && let (Some(old), Some(name)) = (&candidate, &state.candidate_set)
            && old.metadata.deletion_timestamp.is_none()
        {
            check_controlled(&old.metadata, owner_uid, "StatefulSet")?;
            tracing::info!(statefulset = %name, "retiring the previous blue/green StatefulSet");
            api.delete(
                name,
                &DeleteParams {
                    propagation_policy: Some(PropagationPolicy::Background),
                    ..Default::default()
                },
            )
            .await
            .map_err(Error::kube(format!("deleting StatefulSet {name}")))?;
        }
        let (next, current_version) = transition(
            cr,
            names,
            &state,
            SetObservation::of(active.as_ref()),
            SetObservation::of(candidate.as_ref()),
        );
        if next != state {
            tracing::info!(phase = ?next.phase, partition = ?next.partition, to = ?next.to_version, "upgrade step");
        }
        let in_progress = next.phase != UpgradePhase::Idle;
        Ok(UpgradeOutcome {
            state: next,
            current_version,
            in_progress,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::crd::{StatefulClusterSpec, StatefulClusterStatus};

    fn cluster(
        strategy: UpgradeStrategy,
        version: &str,
        current: Option<&str>,
    ) -> (StatefulCluster, Names) {
        let spec: StatefulClusterSpec = serde_json::from_value(serde_json::json!({
            "replicas": 3, "image": "db", "version": version, "ports": [{"name": "c", "port": 1}],
            "upgrade": {"strategy": strategy}
        }))
        .expect("spec");
        let mut cr = StatefulCluster::new("db", spec);
        cr.metadata.namespace = Some("ns".into());
        cr.status = Some(StatefulClusterStatus {
            current_version: current.map(Into::into),
            ..Default::default()
        });
        let names = Names::of(&cr).expect("names");
        (cr, names)
    }

    fn obs(ready: i32, updated: i32) -> SetObservation {
        SetObservation {
            exists: true,
            observed: true,
            ready,
            updated,
            rolled_out: updated >= 3,
        }
    }

    #[test]
    fn first_rollout_becomes_current_when_ready() {
        let (cr, names) = cluster(UpgradeStrategy::Rolling, "1", None);
        let state = recorded(&cr, &names);
        assert_eq!(plan(&cr, &names, &state).sets[0].version, "1");
        assert_eq!(
            transition(&cr, &names, &state, obs(2, 3), SetObservation::default()).1,
            None
        );
        assert_eq!(
            transition(&cr, &names, &state, obs(3, 3), SetObservation::default())
                .1
                .as_deref(),
            Some("1")
        );
    }

    #[test]
    fn rolling_steps_the_partition_down_as_pods_become_ready() {
        let (mut cr, names) = cluster(UpgradeStrategy::Rolling, "2", Some("1"));
        let mut state = recorded(&cr, &names);
        // Until the upgrade starts, the plan keeps the current version.
        assert_eq!(plan(&cr, &names, &state).sets[0].version, "1");
        (state, _) = transition(&cr, &names, &state, obs(3, 3), SetObservation::default());
        assert_eq!(
            (state.phase, state.partition),
            (UpgradePhase::Rolling, Some(2))
        );
        assert_eq!(
            plan(&cr, &names, &state).sets,
            vec![SetPlan {
                name: "db".into(),
                version: "2".into(),
                partition: 2
            }]
        );
        // The top pod is updated but not ready yet: wait.
        let (same, _) = transition(&cr, &names, &state, obs(2, 1), SetObservation::default());
        assert_eq!(same.partition, Some(2));
        for (partition, updated) in [(1, 1), (0, 2)] {
            (state, _) = transition(
                &cr,
                &names,
                &state,
                obs(3, updated),
                SetObservation::default(),
            );
            assert_eq!(state.partition, Some(partition));
        }
        // Counts can run ahead of the controller's own verdict: wait for the revisions to match.
        let not_yet = SetObservation {
            rolled_out: false,
            ..obs(3, 3)
        };
        assert_eq!(
            transition(&cr, &names, &state, not_yet, SetObservation::default()).0,
            state
        );
        let (done, current) = transition(&cr, &names, &state, obs(3, 3), SetObservation::default());
        assert_eq!(
            (done.phase, done.completed, current.as_deref()),
            (UpgradePhase::Idle, 1, Some("2"))
        );
        cr.status.as_mut().expect("status").current_version = current;
        assert_eq!(plan(&cr, &names, &done).sets[0].version, "2");
    }

    #[test]
    fn blue_green_switches_when_the_candidate_is_ready_then_retires_the_old_set() {
        let (cr, names) = cluster(UpgradeStrategy::BlueGreen, "2", Some("1"));
        let state = recorded(&cr, &names);
        let (deploying, _) = transition(&cr, &names, &state, obs(3, 3), SetObservation::default());
        assert_eq!(deploying.phase, UpgradePhase::Deploying);
        let p = plan(&cr, &names, &deploying);
        assert_eq!(p.serving_set, "db");
        assert_eq!(
            p.sets
                .iter()
                .map(|s| (s.name.as_str(), s.version.as_str()))
                .collect::<Vec<_>>(),
            vec![("db", "1"), ("db-b", "2")]
        );
        let (waiting, _) = transition(&cr, &names, &deploying, obs(3, 3), obs(2, 3));
        assert_eq!(waiting.phase, UpgradePhase::Deploying);
        let (retiring, _) = transition(&cr, &names, &deploying, obs(3, 3), obs(3, 3));
        assert_eq!(
            (
                retiring.phase,
                retiring.active_set.as_deref(),
                retiring.candidate_set.as_deref()
            ),
            (UpgradePhase::Retiring, Some("db-b"), Some("db"))
        );
        let p = plan(&cr, &names, &retiring);
        assert_eq!((p.serving_set.as_str(), p.sets.len()), ("db-b", 1));
        let (still, _) = transition(&cr, &names, &retiring, obs(3, 3), obs(3, 3));
        assert_eq!(still.phase, UpgradePhase::Retiring);
        let (done, current) =
            transition(&cr, &names, &retiring, obs(3, 3), SetObservation::default());
        assert_eq!(
            (done.phase, done.active_set.as_deref(), current.as_deref()),
            (UpgradePhase::Idle, Some("db-b"), Some("2"))
        );
    }

    #[test]
    fn forged_set_names_and_versions_are_refused_and_the_state_reset() {
        let (mut cr, names) = cluster(UpgradeStrategy::BlueGreen, "2", Some("1"));
        let status = cr.status.as_mut().expect("status");
        status.upgrade = Some(UpgradeStatus {
            phase: UpgradePhase::Retiring,
            active_set: Some("db-b".into()),
            candidate_set: Some("db".into()),
            to_version: Some("2".into()),
            completed: 4,
            ..Default::default()
        });
        assert_eq!(refusals(&cr, &names), vec![], "what the operator writes");
        for (field, value) in [
            ("upgrade.candidateSet", "payments"),
            ("upgrade.candidateSet", "db-b"),
            ("upgrade.activeSet", "payments"),
            ("upgrade.toVersion", "2 --privileged"),
            ("upgrade.fromVersion", ""),
            ("currentVersion", "../1"),
        ] {
            let mut forged = cr.clone();
            let status = forged.status.as_mut().expect("status");
            let upgrade = status.upgrade.as_mut().expect("upgrade");
            match field {
                "upgrade.candidateSet" => upgrade.candidate_set = Some(value.into()),
                "upgrade.activeSet" => upgrade.active_set = Some(value.into()),
                "upgrade.toVersion" => upgrade.to_version = Some(value.into()),
                "upgrade.fromVersion" => upgrade.from_version = Some(value.into()),
                _ => status.current_version = Some(value.into()),
            }
            let refused = refusals(&forged, &names);
            assert_eq!(refused.len(), 1, "{field} {value:?}: {refused:?}");
            assert_eq!(
                (refused[0].field, refused[0].value.as_str()),
                (field, value)
            );
            let state = recorded(&forged, &names);
            let sets = plan(&forged, &names, &state).sets;
            assert!(
                sets.iter()
                    .all(|s| names.is_set(&s.name) && valid_version(&s.version)),
                "{field}: {sets:?}"
            );
            if field != "currentVersion" {
                assert_eq!(state.phase, UpgradePhase::Idle, "{field}");
                assert_eq!(state.completed, 4, "{field}");
            }
        }
    }

    #[test]
    fn versions_are_checked_as_the_spec_checks_them() {
        for good in ["1", "3.10", "v1.2.3-rc.1", "_x", &"a".repeat(128)] {
            assert!(valid_version(good), "{good}");
        }
        for bad in ["", "-1", ".1", "1 2", "1:2", "1/2", "ü", &"a".repeat(129)] {
            assert!(!valid_version(bad), "{bad}");
        }
    }
}
