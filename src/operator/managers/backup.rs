//! BackupManager: one backup Job every `spec.backup.intervalMinutes`, the newest `retention`
//! kept, the newest success recorded in `status.backup`.
//!
//! The schedule is an interval, not a cron expression: the next run is due `intervalMinutes`
//! after the last one was created (`status.backup.lastScheduledAt`), so a restart or a long
//! outage causes one catch-up run, never a burst.

use std::time::Duration;

use k8s_openapi::{
    api::{
        batch::v1::{Job, JobSpec},
        core::v1::{Container, EnvVar, PodSpec, PodTemplateSpec},
    },
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time},
};
use kube::{
    Api, Client,
    api::{DeleteParams, ListParams, PostParams, PropagationPolicy},
};

use super::{COMPONENT_LABEL, Error, Names, Result, check_controlled, owned_meta};
use crate::{
    contract::INSTANCE_LABEL,
    operator::crd::{BackupSpec, BackupStatus, StatefulCluster},
};

/// Whether a backup is due at `now`, and if not, how long until it is.
pub fn due(
    spec: &BackupSpec,
    last: Option<jiff::Timestamp>,
    now: jiff::Timestamp,
) -> std::result::Result<(), Duration> {
    let interval = Duration::from_secs(u64::from(spec.interval_minutes) * 60);
    let Some(last) = last else { return Ok(()) };
    let elapsed = now.duration_since(last);
    let elapsed = Duration::try_from(elapsed).unwrap_or(Duration::ZERO);
    if elapsed >= interval {
        Ok(())
    } else {
        Err(interval - elapsed)
    }
}

/// The Job of one backup run at `now`.
pub fn job(
    cr: &StatefulCluster,
    names: &Names,
    spec: &BackupSpec,
    now: jiff::Timestamp,
) -> Result<Job> {
    let name = format!("{}-backup-{}", names.name, now.as_second());
    let mut metadata = owned_meta(cr, names, name, "backup")?;
    metadata
        .labels
        .get_or_insert_default()
        .insert(COMPONENT_LABEL.into(), "backup".into());
    let image = spec
        .image
        .clone()
        .unwrap_or_else(|| format!("{}:{}", cr.spec.image, cr.spec.version));
    Ok(Job {
        metadata,
        spec: Some(JobSpec {
            backoff_limit: Some(2),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(
                        [
                            (INSTANCE_LABEL.to_string(), names.name.clone()),
                            (COMPONENT_LABEL.to_string(), "backup".to_string()),
                        ]
                        .into(),
                    ),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".into()),
                    containers: vec![Container {
                        name: "backup".into(),
                        image: Some(image),
                        command: spec.command.clone(),
                        env: Some(vec![
                            EnvVar {
                                name: "CLUSTER_NAME".into(),
                                value: Some(names.name.clone()),
                                ..Default::default()
                            },
                            EnvVar {
                                name: "CLUSTER_SERVICE".into(),
                                value: Some(format!(
                                    "{}.{}.svc",
                                    names.client_service(),
                                    names.namespace
                                )),
                                ..Default::default()
                            },
                        ]),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        status: None,
    })
}

fn succeeded(job: &Job) -> Option<Time> {
    let status = job.status.as_ref()?;
    let complete = status.succeeded.unwrap_or(0) > 0
        || status
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "Complete" && c.status == "True");
    complete
        .then(|| {
            status
                .completion_time
                .clone()
                .or_else(|| job.metadata.creation_timestamp.clone())
        })
        .flatten()
}

/// Result of a BackupManager pass.
#[derive(Clone, Debug, PartialEq)]
pub struct BackupOutcome {
    /// Bookkeeping to record.
    pub status: BackupStatus,
    /// The Job created in this pass, if any.
    pub created: Option<String>,
    /// Jobs deleted by retention.
    pub deleted: Vec<String>,
    /// When the next run is due.
    pub next_in: Duration,
}

/// Runs backups on their schedule; see the module docs.
#[derive(Clone)]
pub struct BackupManager {
    client: Client,
}

impl BackupManager {
    /// A manager using `client`.
    pub fn new(client: Client) -> Self {
        Self { client }
    }

    /// Creates a Job if one is due, applies retention and records the newest success.
    /// `None` when backups are off.
    pub async fn reconcile(
        &self,
        cr: &StatefulCluster,
        names: &Names,
        now: jiff::Timestamp,
    ) -> Result<Option<BackupOutcome>> {
        let Some(spec) = cr.spec.backup.as_ref() else {
            return Ok(None);
        };
        let api: Api<Job> = Api::namespaced(self.client.clone(), &names.namespace);
        let mut status = cr
            .status
            .as_ref()
            .and_then(|s| s.backup.clone())
            .unwrap_or_default();
        let mut created = None;
        let next_in = match due(spec, status.last_scheduled_at.as_ref().map(|t| t.0), now) {
            Ok(()) => {
                let name = start(&api, cr, names, spec, now).await?;
                status.last_scheduled_at = Some(Time(now));
                status.last_job = Some(name.clone());
                created = Some(name);
                Duration::from_secs(u64::from(spec.interval_minutes) * 60)
            }
            Err(wait) => wait,
        };
        let jobs = newest_first(&api, cr, names).await?;
        if let Some((job, at)) = jobs.iter().find_map(|j| succeeded(j).map(|t| (j, t))) {
            status.last_success_at = Some(at);
            status.last_success_job = job.metadata.name.clone();
        }
        let deleted = retire(&api, &jobs, spec.retention as usize).await?;
        Ok(Some(BackupOutcome {
            status,
            created,
            deleted,
            next_in,
        }))
    }
}

/// Creates the Job of the run at `now`; returns its name.
async fn start(
    api: &Api<Job>,
    cr: &StatefulCluster,
    names: &Names,
    spec: &BackupSpec,
    now: jiff::Timestamp,
) -> Result<String> {
    let job = job(cr, names, spec, now)?;
    let name = job.metadata.name.clone().unwrap_or_default();
    match api.create(&PostParams::default(), &job).await {
        Ok(_) => tracing::info!(job = %name, "created a backup Job"),
        // Created by a pass that failed before recording it: count it as this run.
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => return Err(Error::kube(format!("creating backup Job {name}"))(e)),
    }
    Ok(name)
}

/// The cluster's backup Jobs, newest first: those with its labels that it controls (labels
/// anyone can set; retention must not delete someone else's Job).
async fn newest_first(api: &Api<Job>, cr: &StatefulCluster, names: &Names) -> Result<Vec<Job>> {
    let owner_uid = cr.metadata.uid.as_deref().ok_or(Error::Incomplete("uid"))?;
    let selector = format!("{INSTANCE_LABEL}={},{COMPONENT_LABEL}=backup", names.name);
    let mut jobs = api
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(Error::kube("listing backup Jobs"))?
        .items;
    jobs.retain(|j| check_controlled(&j.metadata, owner_uid, "Job").is_ok());
    // Newest first; names carry the creation second, so they break ties.
    jobs.sort_by(|a, b| {
        (
            b.metadata.creation_timestamp.as_ref().map(|t| t.0),
            b.metadata.name.as_ref(),
        )
            .cmp(&(
                a.metadata.creation_timestamp.as_ref().map(|t| t.0),
                a.metadata.name.as_ref(),
            ))
    });
    Ok(jobs)
}

/// Deletes the Jobs beyond the newest `retention` (not those already going); returns their
/// names.
async fn retire(api: &Api<Job>, jobs: &[Job], retention: usize) -> Result<Vec<String>> {
    let mut deleted = Vec::new();
    for old in jobs.iter().skip(retention) {
        let Some(name) = old.metadata.name.clone() else {
            continue;
        };
        if old.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let params = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Background),
            ..Default::default()
        };
        match api.delete(&name, &params).await {
            Ok(_) => deleted.push(name),
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(Error::kube(format!("deleting backup Job {name}"))(e)),
        }
    }
    if !deleted.is_empty() {
        tracing::info!(?deleted, retention, "deleted old backup Jobs");
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> BackupSpec {
        BackupSpec {
            interval_minutes: 10,
            retention: 2,
            image: None,
            command: None,
        }
    }

    #[test]
    fn due_after_the_interval_since_the_last_run() {
        let t0 = jiff::Timestamp::from_second(1_800_000_000).expect("ts");
        assert_eq!(due(&spec(), None, t0), Ok(()));
        let later = t0 + jiff::SignedDuration::from_secs(9 * 60);
        assert_eq!(due(&spec(), Some(t0), later), Err(Duration::from_secs(60)));
        let at = t0 + jiff::SignedDuration::from_secs(10 * 60);
        assert_eq!(due(&spec(), Some(t0), at), Ok(()));
    }

    #[test]
    fn job_is_owned_and_runs_the_cluster_image_by_default() {
        let spec_json = serde_json::json!({"replicas": 1, "image": "reg/db", "version": "2", "ports": [{"name": "c", "port": 1}]});
        let mut cr = StatefulCluster::new("db", serde_json::from_value(spec_json).expect("spec"));
        cr.metadata.namespace = Some("ns".into());
        cr.metadata.uid = Some("u".into());
        let names = Names::of(&cr).expect("names");
        let now = jiff::Timestamp::from_second(1_800_000_000).expect("ts");
        let job = job(&cr, &names, &spec(), now).expect("job");
        assert_eq!(job.metadata.name.as_deref(), Some("db-backup-1800000000"));
        assert_eq!(job.metadata.owner_references.expect("owner")[0].uid, "u");
        let pod = job.spec.expect("spec").template.spec.expect("pod");
        assert_eq!(pod.containers[0].image.as_deref(), Some("reg/db:2"));
    }
}
