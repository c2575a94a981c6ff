//! The four managers of a [`StatefulCluster`]: each owns one concern, is driven by the
//! reconciler, and reports what it changed.
//!
//! * [`infra`]: StatefulSet(s), headless and client Services, ConfigMap.
//! * [`cert`]: CA and serving certificate Secrets.
//! * [`upgrade`]: the Rolling / BlueGreen state machine that tells `infra` which StatefulSets
//!   to run at which version.
//! * [`backup`]: a backup Job per interval, `retention` kept.
//!
//! [`converge()`] is the write all of them share: a forced server-side apply followed by the
//! removal of whatever other field managers added, so a revert restores the desired object
//! exactly.

pub mod backup;
pub mod cert;
pub mod converge;
pub mod infra;
pub mod upgrade;

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::{Resource, ResourceExt};

pub use converge::{Action, ObjectChange, converge};

use crate::{
    contract::{INSTANCE_LABEL, MANAGED_BY_LABEL, MANAGED_BY_VALUE},
    operator::crd::StatefulCluster,
};

/// Label naming the StatefulSet a pod belongs to; the Services select the serving one by it.
pub const SET_LABEL: &str = "kube-sentinel.dev/set";
/// Label naming the part of a cluster an object is (`member`, `backup`, `tls`).
pub const COMPONENT_LABEL: &str = "app.kubernetes.io/component";

/// Errors of a manager.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A call to the API server failed.
    #[error("{context}: {source}")]
    Kube {
        /// What the call was for.
        context: String,
        /// The client error.
        #[source]
        source: kube::Error,
    },
    /// The resource lacks something the API server always sets (name, namespace, uid).
    #[error("the StatefulCluster has no {0}")]
    Incomplete(&'static str),
    /// Issuing or parsing a certificate failed.
    #[error("certificate: {0}")]
    Certificate(String),
    /// Another writer kept changing the object while it was being reverted.
    #[error("{0} kept changing while it was being reverted")]
    Conflict(String),
    /// A manager failed in a full reconcile (reason, message), recorded in `Degraded`.
    #[error("{0}: {1}")]
    Degraded(&'static str, String),
    /// An object could not be converted to or from JSON.
    #[error("serializing {0}: {1}")]
    Json(&'static str, serde_json::Error),
    /// An object with a derived name exists but is not controlled by this resource: it is left
    /// untouched.
    #[error(
        "{kind} {name} exists and is not controlled by this StatefulCluster; rename or remove it"
    )]
    NameConflict {
        /// Its kind.
        kind: String,
        /// Its name.
        name: String,
    },
    /// A value read back from the status is not one the operator could have written (a forged
    /// StatefulSet name or version): it is refused and never acted on.
    #[error("refused {0}")]
    InvalidStatus(String),
}

impl Error {
    pub(crate) fn kube(context: impl Into<String>) -> impl FnOnce(kube::Error) -> Self {
        let context = context.into();
        move |source| Error::Kube { context, source }
    }
}

/// Result of a manager.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Name and namespace of a resource, checked once.
#[derive(Clone, Debug)]
pub struct Names {
    /// The resource's name.
    pub name: String,
    /// The resource's namespace.
    pub namespace: String,
}

impl Names {
    /// Reads them off `cr`.
    pub fn of(cr: &StatefulCluster) -> Result<Self> {
        Ok(Self {
            name: cr.metadata.name.clone().ok_or(Error::Incomplete("name"))?,
            namespace: cr.namespace().ok_or(Error::Incomplete("namespace"))?,
        })
    }
    /// The client Service (also the default StatefulSet name).
    pub fn client_service(&self) -> String {
        self.name.clone()
    }
    /// The headless Service giving members stable DNS names.
    pub fn headless_service(&self) -> String {
        format!("{}-headless", self.name)
    }
    /// The ConfigMap with `spec.config`.
    pub fn config_map(&self) -> String {
        format!("{}-config", self.name)
    }
    /// The CA Secret.
    pub fn ca_secret(&self) -> String {
        format!("{}-ca", self.name)
    }
    /// The serving certificate Secret.
    pub fn tls_secret(&self) -> String {
        format!("{}-tls", self.name)
    }
    /// The first StatefulSet slot.
    pub fn set_a(&self) -> String {
        self.name.clone()
    }
    /// The other StatefulSet slot, used by blue/green upgrades.
    pub fn set_b(&self) -> String {
        format!("{}-b", self.name)
    }
    /// Whether `set` is one of the two StatefulSet slots.
    pub fn is_set(&self, set: &str) -> bool {
        set == self.set_a() || set == self.set_b()
    }
    /// The slot that is not `set`.
    pub fn other_set(&self, set: &str) -> String {
        if set == self.set_a() {
            self.set_b()
        } else {
            self.set_a()
        }
    }
}

/// Labels every object owned by `cr` carries.
pub fn owned_labels(names: &Names, component: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (MANAGED_BY_LABEL.to_string(), MANAGED_BY_VALUE.to_string()),
        (INSTANCE_LABEL.to_string(), names.name.clone()),
        (COMPONENT_LABEL.to_string(), component.to_string()),
    ])
}

/// The controller owner reference to `cr`.
pub fn owner_reference(cr: &StatefulCluster) -> Result<OwnerReference> {
    let mut owner = cr
        .controller_owner_ref(&())
        .ok_or(Error::Incomplete("uid"))?;
    owner.block_owner_deletion = Some(true);
    Ok(owner)
}

/// Metadata of an object named `name` owned by `cr`.
pub fn owned_meta(
    cr: &StatefulCluster,
    names: &Names,
    name: String,
    component: &str,
) -> Result<ObjectMeta> {
    Ok(ObjectMeta {
        name: Some(name),
        namespace: Some(names.namespace.clone()),
        labels: Some(owned_labels(names, component)),
        owner_references: Some(vec![owner_reference(cr)?]),
        ..Default::default()
    })
}

/// Fails with [`Error::NameConflict`] unless `meta` (of an existing object) has a controller
/// owner reference with UID `owner_uid`: the operator adopts only what it created.
pub fn check_controlled(meta: &ObjectMeta, owner_uid: &str, kind: &str) -> Result<()> {
    let controlled = meta
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.controller == Some(true) && o.uid == owner_uid);
    if controlled {
        return Ok(());
    }
    Err(Error::NameConflict {
        kind: kind.to_string(),
        name: meta.name.clone().unwrap_or_default(),
    })
}

/// Kind of a Kubernetes object type, for reports.
pub fn kind_of<K: Resource<DynamicType = ()>>() -> String {
    K::kind(&()).into_owned()
}
