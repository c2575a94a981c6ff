//! Which custom resource owns a watched object, and what that resource asks of the sentinel.
//!
//! The sentinel is generic: any namespaced custom resource whose status follows the
//! [`contract`](crate::contract) can be served. An object maps to its owner through its
//! controller `ownerReference` of the configured group and kind, or else through the
//! [`INSTANCE_LABEL`] naming the owner in the object's namespace.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::{
    api::{ApiResource, DynamicObject, GroupVersionKind},
    core::gvk::ParseGroupVersionError,
};
use serde::Deserialize;

use crate::contract::{self, INSTANCE_LABEL, SentinelSpec};

/// The custom resource kind the sentinel triggers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnerKind {
    /// API resource (group, version, kind, plural) of the custom resource.
    pub resource: ApiResource,
}

impl Default for OwnerKind {
    fn default() -> Self {
        Self::new(
            contract::DEFAULT_GROUP,
            contract::DEFAULT_VERSION,
            contract::DEFAULT_KIND,
            contract::DEFAULT_PLURAL,
        )
    }
}

impl OwnerKind {
    /// An owner kind from its group, version, kind and plural.
    pub fn new(group: &str, version: &str, kind: &str, plural: &str) -> Self {
        let gvk = GroupVersionKind::gvk(group, version, kind);
        Self {
            resource: ApiResource::from_gvk_with_plural(&gvk, plural),
        }
    }

    /// Parses `plural.group/version` and `Kind`, e.g. `statefulclusters.kube-sentinel.dev/v1alpha1`.
    pub fn parse(resource: &str, kind: &str) -> Result<Self, ParseGroupVersionError> {
        let (plural_group, version) = resource
            .split_once('/')
            .ok_or_else(|| ParseGroupVersionError(resource.to_owned()))?;
        let (plural, group) = plural_group
            .split_once('.')
            .ok_or_else(|| ParseGroupVersionError(resource.to_owned()))?;
        if plural.is_empty() || group.is_empty() || version.is_empty() || kind.is_empty() {
            return Err(ParseGroupVersionError(resource.to_owned()));
        }
        Ok(Self::new(group, version, kind, plural))
    }

    /// The owning resource of an object with this metadata, if any.
    pub fn owner_of(&self, meta: &ObjectMeta) -> Option<OwnerKey> {
        let namespace = meta.namespace.as_deref().filter(|ns| !ns.is_empty())?;
        let by_reference = meta.owner_references.iter().flatten().find(|r| {
            r.controller == Some(true)
                && r.kind == self.resource.kind
                && r.api_version.split_once('/').map(|(g, _)| g) == Some(&self.resource.group)
        });
        let name = match by_reference {
            Some(r) => r.name.as_str(),
            None => meta.labels.as_ref()?.get(INSTANCE_LABEL)?.as_str(),
        };
        (!name.is_empty()).then(|| OwnerKey {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        })
    }
}

/// A custom resource, by namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OwnerKey {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl std::fmt::Display for OwnerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// What the sentinel reads from a custom resource.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OwnerState {
    /// `spec.paused`: people are working by hand; no triggers.
    pub paused: bool,
    /// `spec.sentinel`.
    pub sentinel: SentinelSpec,
    /// Being deleted: deletions of its objects are garbage collection, not drift.
    pub deleting: bool,
    /// The later of `status.sentinel.triggeredAt` and `lastHandledAt`: drift older than this
    /// was already triggered.
    pub last_trigger: Option<Timestamp>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct SpecView {
    paused: Option<bool>,
    sentinel: Option<SentinelSpec>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct SentinelStatusView {
    triggered_at: Option<Time>,
    last_handled_at: Option<Time>,
}

impl OwnerState {
    /// Reads a custom resource leniently: a field of the wrong shape is treated as absent
    /// (the CRD's schema is what rejects bad specs; the sentinel must not stop on one).
    pub fn from_object(obj: &DynamicObject) -> Self {
        let spec: SpecView = obj
            .data
            .get("spec")
            .and_then(|s| SpecView::deserialize(s).ok())
            .unwrap_or_default();
        let status: SentinelStatusView = obj
            .data
            .get("status")
            .and_then(|s| s.get("sentinel"))
            .and_then(|s| SentinelStatusView::deserialize(s).ok())
            .unwrap_or_default();
        let last_trigger = [status.triggered_at, status.last_handled_at]
            .into_iter()
            .flatten()
            .map(|t| t.0)
            .max();
        Self {
            paused: spec.paused.unwrap_or(false),
            sentinel: spec.sentinel.unwrap_or_default(),
            deleting: obj.metadata.deletion_timestamp.is_some(),
            last_trigger,
        }
    }

    /// Whether drift on this resource's objects should trigger it.
    pub fn wants_triggers(&self) -> bool {
        !self.paused && !self.deleting && self.sentinel.is_enabled()
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
    use serde_json::json;

    use super::*;

    fn meta(owner: Option<(&str, &str, bool)>, instance: Option<&str>) -> ObjectMeta {
        ObjectMeta {
            namespace: Some("prod".into()),
            name: Some("db".into()),
            owner_references: owner.map(|(api_version, kind, controller)| {
                vec![OwnerReference {
                    api_version: api_version.into(),
                    kind: kind.into(),
                    name: "by-ref".into(),
                    uid: "u".into(),
                    controller: Some(controller),
                    block_owner_deletion: None,
                }]
            }),
            labels: instance.map(|i| [(INSTANCE_LABEL.to_owned(), i.to_owned())].into()),
            ..Default::default()
        }
    }

    #[test]
    fn controller_reference_first_then_instance_label() {
        let kind = OwnerKind::default();
        let ours = format!("{}/v1alpha1", contract::DEFAULT_GROUP);
        let by_ref = kind.owner_of(&meta(
            Some((&ours, contract::DEFAULT_KIND, true)),
            Some("by-label"),
        ));
        assert_eq!(by_ref.map(|o| o.name), Some("by-ref".into()));
        // Another version of the same group still matches.
        let other_version = format!("{}/v1", contract::DEFAULT_GROUP);
        assert!(
            kind.owner_of(&meta(
                Some((&other_version, contract::DEFAULT_KIND, true)),
                None
            ))
            .is_some()
        );
        // Not the controller, or another kind: the label decides.
        let by_label = kind.owner_of(&meta(
            Some((&ours, contract::DEFAULT_KIND, false)),
            Some("by-label"),
        ));
        assert_eq!(by_label.map(|o| o.name), Some("by-label".into()));
        assert_eq!(
            kind.owner_of(&meta(Some(("apps/v1", "Deployment", true)), None)),
            None
        );
        assert_eq!(kind.owner_of(&meta(None, Some(""))), None);
        let mut cluster_scoped = meta(None, Some("x"));
        cluster_scoped.namespace = None;
        assert_eq!(kind.owner_of(&cluster_scoped), None);
    }

    #[test]
    fn parses_resource_flags() {
        let k = OwnerKind::parse(
            "statefulclusters.kube-sentinel.dev/v1alpha1",
            "StatefulCluster",
        )
        .expect("parses");
        assert_eq!(k, OwnerKind::default());
        for bad in ["statefulclusters", "statefulclusters/v1", ".x/v1", "a.b/"] {
            assert!(OwnerKind::parse(bad, "K").is_err(), "{bad}");
        }
        assert!(OwnerKind::parse("a.b/v1", "").is_err());
    }

    #[test]
    fn reads_owner_state_leniently() {
        let obj: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "kube-sentinel.dev/v1alpha1", "kind": "StatefulCluster",
            "metadata": {"name": "a", "namespace": "prod"},
            "spec": {"paused": true, "sentinel": {"debounceWindowSeconds": 5}},
            "status": {"sentinel": {"triggeredAt": "2026-01-01T00:00:10Z", "lastHandledAt": "2026-01-01T00:00:20Z"}}
        }))
        .expect("object");
        let s = OwnerState::from_object(&obj);
        assert!(s.paused && !s.wants_triggers());
        assert_eq!(s.sentinel.debounce_window_seconds, Some(5));
        assert_eq!(s.last_trigger.map(|t| t.as_second()), Some(1_767_225_620));

        let odd: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "kube-sentinel.dev/v1alpha1", "kind": "StatefulCluster",
            "metadata": {"name": "a"},
            "spec": {"paused": "yes", "sentinel": 7},
            "status": {"sentinel": {"triggeredAt": 12}}
        }))
        .expect("object");
        let s = OwnerState::from_object(&odd);
        assert_eq!(s, OwnerState::default());
        assert!(s.wants_triggers());
    }
}
