//! A metadata-only watch: a `watcher` of `PartialObjectMeta<K>`, as `ObjectMeta` events.
//!
//! Both programs judge changes by metadata alone (`managedFields`, owner references, labels),
//! so they never fetch, cache or decode the objects' bodies: smaller watch events, and no read
//! access to a Secret's data needed to watch it.

use futures::{Stream, StreamExt};
use k8s_openapi::{NamespaceResourceScope, apimachinery::pkg::apis::meta::v1::ObjectMeta};
use kube::{
    Client, Resource,
    core::PartialObjectMeta,
    runtime::{WatchStreamExt, watcher},
};
use serde::de::DeserializeOwned;

use super::api::namespaced_or_all;

/// One event of a metadata-only watch.
pub type MetadataEvent = Result<watcher::Event<ObjectMeta>, watcher::Error>;

/// A metadata-only watch of `K` in `namespace` (or all), with `config` (its label selector is
/// sent to the API server) and kube's default backoff between retries.
pub fn metadata_events<K>(
    client: Client,
    namespace: Option<&str>,
    config: watcher::Config,
) -> impl Stream<Item = MetadataEvent> + Send + use<K>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let api = namespaced_or_all::<PartialObjectMeta<K>>(client, namespace);
    watcher(api, config)
        .backoff(crate::watch::backoff::watch_backoff())
        .map(|event| event.map(into_metadata))
}

/// The same event, carrying the object's metadata only.
fn into_metadata<K>(event: watcher::Event<PartialObjectMeta<K>>) -> watcher::Event<ObjectMeta> {
    match event {
        watcher::Event::Apply(o) => watcher::Event::Apply(o.metadata),
        watcher::Event::Delete(o) => watcher::Event::Delete(o.metadata),
        watcher::Event::Init => watcher::Event::Init,
        watcher::Event::InitApply(o) => watcher::Event::InitApply(o.metadata),
        watcher::Event::InitDone => watcher::Event::InitDone,
    }
}
