//! The outside actor: the kinds of drift it makes on a StatefulCluster's objects (as `kubectl
//! edit`, `scale`, `label` and `delete` would), and the checks that a drift has been reverted.

use std::{collections::BTreeMap, fmt, time::Duration};

use anyhow::{Result, bail};
use k8s_openapi::api::{
    apps::v1::StatefulSet,
    core::v1::{ConfigMap, Secret, Service},
};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, Patch, PatchParams},
};
use serde_json::json;
use tokio::time::Instant;

use super::{CLUSTER_NAME, WAIT, programs::Programs};
use crate::operator::crd::StatefulCluster;

/// The outside changes the demo makes, one per round.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
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
    /// `kubectl edit`: the serving certificate in the TLS Secret replaced (resources with
    /// `spec.tls` on only; the operator's own Secret watch sees it, not the sentinel).
    TlsSecret,
}

impl DriftKind {
    /// Every kind, in the order of a cycle.
    pub const ALL: [DriftKind; 6] = [
        DriftKind::Replicas,
        DriftKind::Image,
        DriftKind::Label,
        DriftKind::ConfigMapKey,
        DriftKind::ServiceDeleted,
        DriftKind::TlsSecret,
    ];

    /// The kinds the demo cycles through: its resource runs without TLS.
    pub const DEMO: [DriftKind; 5] = [
        DriftKind::Replicas,
        DriftKind::Image,
        DriftKind::Label,
        DriftKind::ConfigMapKey,
        DriftKind::ServiceDeleted,
    ];

    /// Whether the sentinel sees this drift (it may not read Secrets; the operator watches
    /// those itself), so that its trigger times the stages.
    pub fn seen_by_sentinel(self) -> bool {
        self != DriftKind::TlsSecret
    }

    /// The drifted object of the demo's StatefulCluster, as `Kind/name`.
    pub fn object(self) -> String {
        self.object_of(CLUSTER_NAME)
    }

    /// The drifted object of StatefulCluster `cluster`, as `Kind/name`.
    pub fn object_of(self, cluster: &str) -> String {
        match self {
            DriftKind::Replicas | DriftKind::Image => format!("StatefulSet/{cluster}"),
            DriftKind::Label | DriftKind::ServiceDeleted => format!("Service/{cluster}"),
            DriftKind::ConfigMapKey => format!("ConfigMap/{}", config_map_name(cluster)),
            DriftKind::TlsSecret => format!("Secret/{}", tls_secret_name(cluster)),
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
            DriftKind::TlsSecret => "TLS secret edited",
        })
    }
}

/// The name of StatefulCluster `cluster`'s ConfigMap.
pub(crate) fn config_map_name(cluster: &str) -> String {
    format!("{cluster}-config")
}

/// The name of StatefulCluster `cluster`'s serving-certificate Secret.
pub(crate) fn tls_secret_name(cluster: &str) -> String {
    format!("{cluster}-tls")
}

/// The certificate the TLS drift writes in place of the operator's.
const TAMPERED_CERTIFICATE: &str = "tampered";

/// What a drifted object looked like before the drift: the revert must bring it back.
#[derive(Debug, PartialEq)]
pub(crate) enum Baseline {
    /// The StatefulSet's `spec.replicas`.
    Replicas(Option<i32>),
    /// The StatefulSet's `member` container image.
    Image(Option<String>),
    /// The Service's labels.
    Labels(BTreeMap<String, String>),
    /// The ConfigMap's data.
    Data(BTreeMap<String, String>),
    /// The Service's uid: it is restored when a Service of that name exists again.
    Uid(Option<String>),
    /// Whether the TLS Secret holds the tampered certificate (the operator may re-issue
    /// rather than restore the old one: any certificate of its own is the desired state).
    Tampered(bool),
}

impl Baseline {
    /// What drift `kind` (replicas or image) changes on `set`, as it is.
    pub(crate) fn of_set(kind: DriftKind, set: &StatefulSet) -> Self {
        match kind {
            DriftKind::Replicas => Baseline::Replicas(set.spec.replicas),
            _ => Baseline::Image(member_image(set)),
        }
    }

    /// What drift `kind` (label or deletion) changes on `service`, as it is.
    pub(crate) fn of_service(kind: DriftKind, service: &Service) -> Self {
        match kind {
            DriftKind::ServiceDeleted => Baseline::Uid(service.metadata.uid.clone()),
            _ => Baseline::Labels(service.labels().clone()),
        }
    }

    /// The data of `config_map`, as it is.
    pub(crate) fn of_config_map(config_map: &ConfigMap) -> Self {
        Baseline::Data(config_map.data.clone().unwrap_or_default())
    }

    /// Whether `secret` holds the tampered certificate.
    pub(crate) fn of_tls_secret(secret: &Secret) -> Self {
        let certificate = secret.data.as_ref().and_then(|d| d.get("tls.crt"));
        Baseline::Tampered(certificate.is_some_and(|c| c.0 == TAMPERED_CERTIFICATE.as_bytes()))
    }

    /// Whether `now`, read from the object drift `kind` changed, is back to this baseline. A
    /// deleted Service is back when one of that name exists again, with a new uid.
    pub(crate) fn restored_by(&self, now: &Baseline) -> bool {
        match (self, now) {
            (Baseline::Uid(old), Baseline::Uid(new)) => new.is_some() && new != old,
            _ => self == now,
        }
    }
}

/// One StatefulCluster's objects, read and written as an outside actor (admin).
#[derive(Clone)]
pub(crate) struct Cluster {
    namespace: String,
    name: String,
    crs: Api<StatefulCluster>,
    sets: Api<StatefulSet>,
    services: Api<Service>,
    config_maps: Api<ConfigMap>,
    secrets: Api<Secret>,
}

impl Cluster {
    /// StatefulCluster `namespace/name`, seen by `admin`.
    pub(crate) fn new(admin: &Client, namespace: &str, name: &str) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
            crs: Api::namespaced(admin.clone(), namespace),
            sets: Api::namespaced(admin.clone(), namespace),
            services: Api::namespaced(admin.clone(), namespace),
            config_maps: Api::namespaced(admin.clone(), namespace),
            secrets: Api::namespaced(admin.clone(), namespace),
        }
    }

    /// The custom resource's name.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// The custom resource's namespace.
    pub(crate) fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Waits until the custom resource is Ready for its current generation; fails if one of
    /// `programs` exits meanwhile.
    pub(crate) async fn wait_ready(&self, programs: &mut Programs) -> Result<()> {
        let deadline = Instant::now() + WAIT;
        loop {
            let cr = self.crs.get_opt(&self.name).await.ok().flatten();
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
            programs.check_running()?;
            if Instant::now() > deadline {
                let conditions = cr
                    .and_then(|cr| cr.status)
                    .map(|s| format!("{:?}", s.conditions))
                    .unwrap_or_else(|| "no status".into());
                bail!(
                    "StatefulCluster {}/{} not Ready within {WAIT:?}: {conditions}",
                    self.namespace,
                    self.name
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The part of the object `kind` drifts, as it is now.
    pub(crate) async fn read(&self, kind: DriftKind) -> Result<Baseline> {
        let name = self.name.as_str();
        Ok(match kind {
            DriftKind::Replicas | DriftKind::Image => {
                Baseline::of_set(kind, &self.sets.get(name).await?)
            }
            DriftKind::Label => Baseline::of_service(kind, &self.services.get(name).await?),
            DriftKind::ConfigMapKey => {
                Baseline::of_config_map(&self.config_maps.get(&config_map_name(name)).await?)
            }
            DriftKind::ServiceDeleted => Baseline::Uid(
                self.services
                    .get_opt(name)
                    .await?
                    .and_then(|s| s.metadata.uid),
            ),
            DriftKind::TlsSecret => {
                Baseline::of_tls_secret(&self.secrets.get(&tls_secret_name(name)).await?)
            }
        })
    }

    /// Whether the object is back to `baseline`.
    pub(crate) async fn restored(&self, kind: DriftKind, baseline: &Baseline) -> Result<bool> {
        Ok(baseline.restored_by(&self.read(kind).await?))
    }

    /// Makes the change an outside actor would, with its field manager (`kubectl-edit`, …).
    pub(crate) async fn drift(&self, kind: DriftKind) -> Result<()> {
        let by = |manager: &str| PatchParams {
            field_manager: Some(manager.into()),
            ..Default::default()
        };
        let name = self.name.as_str();
        match kind {
            DriftKind::Replicas => {
                let scale = Patch::Merge(json!({"spec": {"replicas": 1}}));
                self.sets.patch(name, &by("kubectl-scale"), &scale).await?;
            }
            DriftKind::Image => {
                let image = json!({"spec": {"template": {"spec": {"containers": [
                    {"name": "member", "image": "registry.example/not-approved:latest"}
                ]}}}});
                self.sets
                    .patch(name, &by("kubectl-edit"), &Patch::Strategic(image))
                    .await?;
            }
            DriftKind::Label => {
                let label = Patch::Merge(json!({"metadata": {"labels": {"edited-by": "hand"}}}));
                self.services
                    .patch(name, &by("kubectl-label"), &label)
                    .await?;
            }
            DriftKind::ConfigMapKey => {
                let key = Patch::Merge(json!({"data": {"mode": "tampered"}}));
                self.config_maps
                    .patch(&config_map_name(name), &by("kubectl-edit"), &key)
                    .await?;
            }
            DriftKind::ServiceDeleted => {
                self.services.delete(name, &DeleteParams::default()).await?;
            }
            DriftKind::TlsSecret => {
                let certificate =
                    Patch::Merge(json!({"stringData": {"tls.crt": TAMPERED_CERTIFICATE}}));
                self.secrets
                    .patch(&tls_secret_name(name), &by("kubectl-edit"), &certificate)
                    .await?;
            }
        }
        Ok(())
    }

    /// Whether the custom resource reads Ready and not Progressing for its generation.
    pub(crate) async fn settled(&self) -> bool {
        self.crs
            .get(&self.name)
            .await
            .is_ok_and(|cr| is_settled(&cr))
    }

    /// The current trigger, and the outcome if the operator has acknowledged it.
    pub(crate) async fn trigger(&self) -> Result<(Option<String>, Option<String>)> {
        let cr = self.crs.get(&self.name).await?;
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

/// Whether `cr` reads Ready and not Progressing for its current generation.
pub(crate) fn is_settled(cr: &StatefulCluster) -> bool {
    let Some(status) = &cr.status else {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_demo_cycle_drifts_every_kind_its_resource_has_once() {
        let objects: Vec<String> = DriftKind::DEMO.iter().map(|k| k.object()).collect();
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
}
