//! Which object: a custom resource by namespace and name, an infrastructure object by kind too.
//!
//! Two keys, for two meanings. [`NamespacedName`] names one custom resource (the kind is the
//! one the program serves): the operator's work-queue key and the sentinel's debounce key.
//! [`ObjectKey`] names one watched object of any of several kinds: the actor filter's record.
//! The objects a `StatefulCluster`'s status names on the wire are
//! [`OwnedObject`](crate::operator::crd::OwnedObject), whose serialized shape is the CRD's.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;

/// A namespaced custom resource, by namespace and name (as Kubernetes' `types.NamespacedName`).
///
/// Displayed as `namespace/name`.
///
/// ```
/// use kube_sentinel::watch::NamespacedName;
///
/// let key = NamespacedName::new("prod", "db");
/// assert_eq!(key.to_string(), "prod/db");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NamespacedName {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl NamespacedName {
    /// The key of the resource `name` in `namespace`.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// The key of `resource`, if it has a namespace and a name.
    pub fn of<K: ResourceExt>(resource: &K) -> Option<Self> {
        Some(Self {
            namespace: resource.namespace()?,
            name: resource.meta().name.clone()?,
        })
    }
}

impl std::fmt::Display for NamespacedName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// A watched object of one of several kinds: kind, namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    /// Kind, e.g. `StatefulSet`.
    pub kind: &'static str,
    /// Namespace (empty for cluster-scoped objects).
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl ObjectKey {
    /// The key of an object of `kind` with this metadata.
    pub fn new(kind: &'static str, meta: &ObjectMeta) -> Self {
        Self {
            kind,
            namespace: meta.namespace.clone().unwrap_or_default(),
            name: meta.name.clone().unwrap_or_default(),
        }
    }
}
