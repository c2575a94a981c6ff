//! `Api` handles on one namespace, or on all of them.
//!
//! Both programs take an optional `--namespace`: these turn it into the `Api` to list and watch
//! with.

use k8s_openapi::NamespaceResourceScope;
use kube::{
    Api, Client, Resource,
    api::{ApiResource, DynamicObject},
};

/// An `Api` of the namespaced `K` in `namespace`, or in every namespace when it is `None`.
///
/// An `Api` of [`PartialObjectMeta<K>`](kube::core::PartialObjectMeta) makes metadata-only
/// requests.
pub fn namespaced_or_all<K>(client: Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match namespace {
        Some(ns) => Api::namespaced(client, ns),
        None => Api::all(client),
    }
}

/// An `Api` of the custom resource `resource` in `namespace`, or in every namespace.
pub fn dynamic_namespaced_or_all(
    client: Client,
    namespace: Option<&str>,
    resource: &ApiResource,
) -> Api<DynamicObject> {
    match namespace {
        Some(ns) => Api::namespaced_with(client, ns, resource),
        None => Api::all_with(client, resource),
    }
}
