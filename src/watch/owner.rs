//! Which custom resource owns a watched object: [`OwnerKind`] and its [`owner_of`](OwnerKind::owner_of).
//!
//! Both programs serve a namespaced custom resource (the sentinel any whose status follows the
//! [`contract`], the operator its `StatefulCluster`). An object maps to its
//! owner through its controller `ownerReference` of the configured group and kind, or else
//! through the [`INSTANCE_LABEL`] naming the owner in the object's namespace.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{
    api::{ApiResource, GroupVersionKind},
    core::gvk::ParseGroupVersionError,
};

use super::NamespacedName;
use crate::contract::{self, INSTANCE_LABEL};

/// The kind of custom resource that owns the watched objects (by default `StatefulCluster`).
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
    pub fn owner_of(&self, meta: &ObjectMeta) -> Option<NamespacedName> {
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
        (!name.is_empty()).then(|| NamespacedName::new(namespace, name))
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

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
}
