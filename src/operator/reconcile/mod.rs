//! Reconciling one StatefulCluster: the fast path or the full path.
//!
//! * **Fast path** (a trigger is pending): InfraManager and CertManager only, targeted to the
//!   drifted objects the trigger names; every change read back and verified; then
//!   `status.sentinel.{lastHandledTriggerID, lastHandledAt, lastOutcome, revertedObjects,
//!   corrections}` written with the operator's field manager, a `DriftReverted` Event naming the
//!   objects, the latencies recorded, and a full reconcile requested on the normal lane. A
//!   paused resource's trigger is acknowledged with outcome `noop` and an Event, not reverted.
//!   A trigger whose fast path fails [`fast::FAST_PATH_ATTEMPTS`] times is acknowledged with
//!   outcome `failed` and `lastError`, `Degraded` and a Warning Event, and the full path runs.
//! * **Full path**: upgrade step, infrastructure, certificates, backups, then status and the
//!   `Ready` / `Progressing` / `Degraded` conditions.
//!
//! Both read the resource fresh from the API server, so a stale queue entry costs one GET.
//!
//! [`fast`] holds the fast path and the Secret repair, [`full`] the full path, whose
//! [`conditions`] are a pure function of what it observed; [`status`] writes the status and
//! [`events`] the Events.

pub mod conditions;
pub mod events;
pub mod fast;
pub mod full;
mod invalid_trigger;
mod policy;
pub mod status;

use std::{sync::Arc, time::Duration};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::{Api, Client, runtime::events::Recorder};

use crate::{
    contract::DriftAction,
    events::{OPERATOR_REPORTING_CONTROLLER, reporter},
    operator::{
        crd::{OwnedObject, StatefulCluster},
        fights::Fights,
        managers::{
            self, backup::BackupManager, cert::CertManager, infra::InfraManager,
            upgrade::UpgradeManager,
        },
        metrics::{Metrics, PathLabels},
        undecodable::Undecodable,
    },
    watch::NamespacedName,
};

/// Which path ran.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReconcilePath {
    /// A trigger was handled.
    Fast,
    /// The whole resource was reconciled.
    Full,
}

impl ReconcilePath {
    fn label(self) -> &'static str {
        match self {
            ReconcilePath::Fast => "fast",
            ReconcilePath::Full => "full",
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
    pub path: ReconcilePath,
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

/// When a claim's work was queued and began (wall clock), written with a trigger's
/// acknowledgement so that its time can be split by stage.
#[derive(Clone, Copy, Debug)]
pub struct ClaimTimes {
    /// The key became pending.
    pub queued_at: jiff::Timestamp,
    /// A worker took it.
    pub started_at: jiff::Timestamp,
}

impl ClaimTimes {
    /// `queued` instants ago, and now.
    pub fn since_queued(queued: Duration) -> Self {
        let started_at = now();
        let queued_at = jiff::SignedDuration::try_from(queued)
            .ok()
            .and_then(|d| started_at.checked_sub(d).ok())
            .unwrap_or(started_at);
        Self {
            queued_at,
            started_at,
        }
    }
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
    trigger_failures: fast::TriggerFailures,
    undecodable: Undecodable,
    fights: Arc<Fights>,
    /// What drift leads to where `spec.sentinel.action` is unset.
    drift_action: DriftAction,
}

/// Seconds since the epoch now.
fn now() -> jiff::Timestamp {
    jiff::Timestamp::now()
}

fn since(t: Option<&MicroTime>, now: jiff::Timestamp) -> Option<Duration> {
    Duration::try_from(now.duration_since(t?.0)).ok()
}

impl Context {
    /// A context acting through `client`; Events are reported as `instance`.
    pub fn new(client: Client, metrics: Metrics, instance: Option<String>) -> Self {
        let reporter = reporter(OPERATOR_REPORTING_CONTROLLER, instance);
        let recorder = Recorder::new(client.clone(), reporter);
        let fights = Arc::new(Fights::default());
        Self {
            infra: InfraManager::new(client.clone(), fights.clone()),
            cert: CertManager::new(client.clone()),
            upgrade: UpgradeManager::new(client.clone()),
            backup: BackupManager::new(client.clone()),
            undecodable: Undecodable::new(recorder.clone(), metrics.undecodable.clone()),
            recorder,
            client,
            metrics,
            trigger_failures: fast::TriggerFailures::default(),
            fights,
            drift_action: DriftAction::Revert,
        }
    }

    /// Makes `action` what drift leads to where `spec.sentinel.action` is unset.
    pub fn with_drift_action(mut self, action: DriftAction) -> Self {
        self.drift_action = action;
        self
    }

    /// What drift on `cr` leads to.
    fn drift_action(&self, cr: &StatefulCluster) -> DriftAction {
        cr.spec.sentinel.action.unwrap_or(self.drift_action)
    }

    /// Decodes the resources it reads; shared with the StatefulCluster watch, so that each
    /// undecodable version is reported once.
    pub fn undecodable(&self) -> &Undecodable {
        &self.undecodable
    }

    /// The metrics this context records into.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    fn api(&self, namespace: &str) -> Api<StatefulCluster> {
        Api::namespaced(self.client.clone(), namespace)
    }

    /// Forgets what is kept about the resource `key` (gone or going).
    fn forget(&self, key: &NamespacedName) {
        self.trigger_failures.forget(key);
        self.fights.forget(key);
    }

    /// Reconciles `key`: the fast path when a trigger is pending, the full path otherwise.
    ///
    /// `secrets` names Secrets the operator's own Secret watch saw changed by someone else:
    /// without a pending trigger, they are repaired on the fast path alone.
    pub async fn reconcile(
        &self,
        key: &NamespacedName,
        secrets: Option<SecretHint>,
        times: ClaimTimes,
    ) -> Result<Handled, Error> {
        // An undecodable resource reads as absent (and is reported): skipped, not retried.
        let Some(cr) = self
            .undecodable
            .get(&self.client, key)
            .await
            .map_err(|e| Error::Kube("reading the StatefulCluster", e))?
        else {
            self.forget(key);
            return Ok(Handled {
                path: ReconcilePath::Full,
                requeue: Requeue::Done,
            });
        };
        if cr.metadata.deletion_timestamp.is_some() {
            self.forget(key);
            // Owned objects go with it (ownerReferences); nothing to do.
            return Ok(Handled {
                path: ReconcilePath::Full,
                requeue: Requeue::Done,
            });
        }
        let started = tokio::time::Instant::now();
        let (path, result) = match (cr.pending_trigger(), secrets) {
            (Some(_), _) => (ReconcilePath::Fast, self.fast(&cr, times).await),
            (None, Some(hint)) => (ReconcilePath::Fast, self.repair_secrets(&cr, hint).await),
            (None, None) => (ReconcilePath::Full, self.full(&cr).await),
        };
        self.metrics
            .controller_runtime
            .record(&result, started.elapsed());
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
}
