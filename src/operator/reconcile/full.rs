//! The full path: every manager, then the status with its conditions.
//!
//! The full path: upgrade step, infrastructure, certificates, backups, then the status with
//! its conditions. A manager that fails does not stop the others: the pass goes on, records
//! the first failure in `Degraded`, and returns it as the reconcile's error.

use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use kube::{Api, runtime::events::EventType};

use super::{
    Context, Error, Requeue,
    conditions::{self, Observed},
    now,
};
use crate::operator::{
    crd::{StatefulCluster, StatefulClusterStatus, UpgradePhase, UpgradeStatus},
    managers::{
        self, Action, Names, ObjectChange,
        upgrade::{self, InfraPlan},
    },
};
use crate::watch::NamespacedName;

/// How soon a full reconcile comes back while an upgrade step is in progress.
const UPGRADE_REQUEUE: Duration = Duration::from_secs(1);

/// What one full pass has gathered so far: the managers' failures and the soonest requeue.
#[derive(Debug, Default)]
struct Pass {
    failures: Vec<(&'static str, String)>,
    requeue: Option<Duration>,
}

impl Pass {
    /// Asks for another pass after `delay` at the latest.
    fn soonest(&mut self, delay: Duration) {
        self.requeue = Some(self.requeue.map_or(delay, |r| r.min(delay)));
    }

    /// Records a manager's failure under `reason`.
    fn fail(&mut self, reason: &'static str, error: impl std::fmt::Display) {
        self.failures.push((reason, error.to_string()));
    }

    /// The first failure, which `Degraded` reports.
    fn first_failure(&self) -> Option<(&'static str, &str)> {
        self.failures.first().map(|(r, m)| (*r, m.as_str()))
    }

    /// The pass's result: its first failure as the error, else the soonest requeue.
    fn finish(self, names: &Names) -> Result<Requeue, Error> {
        if let Some((reason, message)) = self.failures.into_iter().next() {
            tracing::warn!(resource = %names.name, reason, %message, "full reconcile degraded");
            return Err(Error::Manager(managers::Error::Degraded(reason, message)));
        }
        Ok(self.requeue.map_or(Requeue::Done, Requeue::After))
    }
}

impl Context {
    /// The full path; see the module docs.
    pub async fn full(&self, cr: &StatefulCluster) -> Result<Requeue, Error> {
        let names = Names::of(cr)?;
        let old = cr.status.clone().unwrap_or_default();
        let mut status = old.clone();
        status.sentinel = None;
        let generation = cr.metadata.generation;
        if cr.spec.paused {
            conditions::apply(&mut status.conditions, generation, &[conditions::paused()]);
            status.observed_generation = generation;
            self.write_status(&names, &old, &status).await?;
            return Ok(Requeue::Done);
        }
        let mut pass = Pass::default();
        let state = self
            .step_upgrade(cr, &names, &old, &mut status, &mut pass)
            .await;
        status.upgrade = Some(state.clone());
        // Plan with this pass's state: an upgrade that just finished made its version current,
        // and planning from the stale status would roll the members back.
        let mut planned = cr.clone();
        planned.status.get_or_insert_default().current_version = status.current_version.clone();
        let plan = upgrade::plan(&planned, &names, &state);
        if self.leaves_drift(cr, &old, state.phase) {
            tracing::debug!(resource = %names.name, "warn mode: the spec is applied; infrastructure left as it is");
        } else {
            self.converge_infra(cr, &names, &plan, &mut pass).await;
        }
        self.converge_certificates(cr, &names, &mut status, &mut pass)
            .await;
        self.run_backups(cr, &names, &mut status, &mut pass).await;

        let ready = self.ready_members(&names, &plan).await?;
        status.ready_replicas = Some(ready);
        let replicas = cr.spec.replicas;
        if ready >= replicas
            && status.current_version.is_none()
            && state.phase == UpgradePhase::Idle
        {
            // The first rollout is complete: the plan ran the spec's version.
            status.current_version = plan.sets.first().map(|s| s.version.clone());
        }
        let assessment = conditions::assess(&Observed {
            upgrade: &state,
            ready,
            replicas,
            current_version: status.current_version.as_deref(),
            failure: pass.first_failure(),
        });
        if let Some(delay) = assessment.requeue_after {
            pass.soonest(delay);
        }
        conditions::apply(&mut status.conditions, generation, &assessment.conditions);
        let key = NamespacedName::new(&names.namespace, &names.name);
        let fighting = self.fighting_condition(&key);
        conditions::apply(&mut status.conditions, generation, &[fighting]);
        status.observed_generation = generation;
        self.write_status(&names, &old, &status).await?;
        pass.finish(&names)
    }

    /// One step of the upgrade state machine, with its Events; the state it leaves (the
    /// recorded one if the step failed).
    async fn step_upgrade(
        &self,
        cr: &StatefulCluster,
        names: &Names,
        old: &StatefulClusterStatus,
        status: &mut StatefulClusterStatus,
        pass: &mut Pass,
    ) -> UpgradeStatus {
        self.metrics.manager_ran("upgrade", "full");
        // A refused version is not kept: the plan already runs the spec's version instead.
        status.current_version = status
            .current_version
            .take()
            .filter(|v| upgrade::valid_version(v));
        let step = match self.upgrade.step(cr, names).await {
            Ok(step) => step,
            Err(e) => {
                self.manager_failed(cr, pass, "UpgradeFailed", e).await;
                return upgrade::recorded(cr, names);
            }
        };
        if let Some(version) = step.current_version {
            if status.current_version.is_some() {
                let note = format!("every member runs {version}");
                self.event(cr, EventType::Normal, "UpgradeCompleted", "Upgrade", note)
                    .await;
            }
            status.current_version = Some(version);
        }
        let was_idle = old
            .upgrade
            .as_ref()
            .is_none_or(|u| u.phase == UpgradePhase::Idle);
        if step.state.phase != UpgradePhase::Idle && was_idle {
            let note = format!(
                "{:?} upgrade to {}",
                cr.spec.upgrade.strategy, cr.spec.version
            );
            self.event(cr, EventType::Normal, "UpgradeStarted", "Upgrade", note)
                .await;
        }
        if step.in_progress {
            pass.soonest(UPGRADE_REQUEUE);
        }
        step.state
    }

    /// InfraManager: every object of `plan`.
    async fn converge_infra(
        &self,
        cr: &StatefulCluster,
        names: &Names,
        plan: &InfraPlan,
        pass: &mut Pass,
    ) {
        self.metrics.manager_ran("infra", "full");
        match self.infra.reconcile(cr, names, plan, &[]).await {
            Ok(changes) => {
                log_changes("infra", &changes);
                self.report_fights(cr, &changes).await;
                for change in &changes {
                    if let Action::Held { until } = change.action {
                        let left = until.duration_since(now());
                        pass.soonest(Duration::try_from(left).unwrap_or_default());
                    }
                }
            }
            Err(e) => self.manager_failed(cr, pass, "InfraFailed", e).await,
        }
    }

    /// CertManager: both Secrets, a `CertificateIssued` Event for what it issued.
    async fn converge_certificates(
        &self,
        cr: &StatefulCluster,
        names: &Names,
        status: &mut StatefulClusterStatus,
        pass: &mut Pass,
    ) {
        self.metrics.manager_ran("cert", "full");
        match self.cert.reconcile(cr, names, now().as_second(), &[]).await {
            Ok(Some(outcome)) => {
                log_changes("cert", &outcome.changes);
                if !outcome.reissued.is_empty() {
                    let what = outcome
                        .reissued
                        .iter()
                        .map(|(n, p)| format!("{n} ({p:?})"))
                        .collect::<Vec<_>>()
                        .join(", ");
                    let note = format!("issued {what}");
                    self.event(cr, EventType::Normal, "CertificateIssued", "Issue", note)
                        .await;
                }
                status.certificate = Some(outcome.status);
            }
            Ok(None) => status.certificate = None,
            Err(e) => self.manager_failed(cr, pass, "CertificateFailed", e).await,
        }
    }

    /// BackupManager: a Job if one is due (with a `BackupStarted` Event), retention, and a
    /// requeue for the next one.
    async fn run_backups(
        &self,
        cr: &StatefulCluster,
        names: &Names,
        status: &mut StatefulClusterStatus,
        pass: &mut Pass,
    ) {
        self.metrics.manager_ran("backup", "full");
        match self.backup.reconcile(cr, names, now()).await {
            Ok(Some(outcome)) => {
                if let Some(job) = &outcome.created {
                    let note = format!("created Job {job}");
                    self.event(cr, EventType::Normal, "BackupStarted", "Backup", note)
                        .await;
                }
                pass.soonest(outcome.next_in);
                status.backup = Some(outcome.status);
            }
            Ok(None) => status.backup = None,
            Err(e) => pass.fail("BackupFailed", e),
        }
    }

    /// Records a manager's failure under `reason`, or under `NameConflict` with a Warning
    /// Event naming the object when the failure is a name taken by an object not ours.
    async fn manager_failed(
        &self,
        cr: &StatefulCluster,
        pass: &mut Pass,
        reason: &'static str,
        error: managers::Error,
    ) {
        if let managers::Error::NameConflict { kind, name } = &error {
            let note =
                format!("{kind} {name} is not controlled by this StatefulCluster: left untouched");
            self.event(cr, EventType::Warning, "NameConflict", "Reconcile", note)
                .await;
            pass.fail("NameConflict", error);
            return;
        }
        if let managers::Error::InvalidStatus(what) = &error {
            let note = format!("refused {what}");
            self.event(cr, EventType::Warning, "InvalidStatus", "Reconcile", note)
                .await;
            pass.fail("InvalidStatus", error);
            return;
        }
        pass.fail(reason, error);
    }

    /// Members the serving StatefulSet reports ready (0 if it is missing).
    async fn ready_members(&self, names: &Names, plan: &InfraPlan) -> Result<i32, Error> {
        let sets: Api<StatefulSet> = Api::namespaced(self.client.clone(), &names.namespace);
        let serving = sets
            .get_opt(&plan.serving_set)
            .await
            .map_err(|e| Error::Kube("reading the serving StatefulSet", e))?;
        Ok(serving
            .as_ref()
            .and_then(|s| s.status.as_ref())
            .and_then(|s| s.ready_replicas)
            .unwrap_or(0))
    }
}

fn log_changes(manager: &str, changes: &[ObjectChange]) {
    for c in changes.iter().filter(|c| c.is_change()) {
        tracing::info!(manager, kind = %c.kind, name = %c.name, action = ?c.action, changed = ?c.changed, "converged");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pass_requeues_at_the_soonest_and_fails_with_its_first_failure() {
        let names = Names {
            name: "db".into(),
            namespace: "ns".into(),
        };
        assert_eq!(Pass::default().finish(&names).ok(), Some(Requeue::Done));
        let mut pass = Pass::default();
        pass.soonest(Duration::from_secs(60));
        pass.soonest(Duration::from_secs(2));
        pass.soonest(Duration::from_secs(30));
        assert_eq!(
            pass.finish(&names).ok(),
            Some(Requeue::After(Duration::from_secs(2)))
        );
        let mut pass = Pass::default();
        pass.fail("InfraFailed", "no");
        pass.fail("BackupFailed", "also no");
        assert_eq!(pass.first_failure(), Some(("InfraFailed", "no")));
        match pass.finish(&names) {
            Err(Error::Manager(managers::Error::Degraded(reason, message))) => {
                assert_eq!((reason, message.as_str()), ("InfraFailed", "no"));
            }
            other => panic!("expected Degraded, got {other:?}"),
        }
    }
}
