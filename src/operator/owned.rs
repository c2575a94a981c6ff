//! Optional (`--watch-owned`, off by default): metadata-only watches of the StatefulSets,
//! Services and ConfigMaps the operator manages; a change puts the owning resource on the
//! **normal** lane, as controller-runtime's `Owns()` would.
//!
//! Off by default: the sentinel already reports foreign changes, attributed and debounced, for
//! the fast lane, and the periodic resync covers the rest. Turn it on to run the operator
//! without a sentinel. Changes are debounced per owner (1 s, at most 5 s) so that a rollout's
//! stream of status updates becomes a few reconciles. It needs list and watch on the three
//! kinds: `deploy/operator/rbac-watch-owned.yaml`.

use std::time::Duration;

use futures::{Stream, StreamExt, stream};
use k8s_openapi::{
    NamespaceResourceScope,
    api::{
        apps::v1::StatefulSet,
        core::v1::{ConfigMap, Service},
    },
};
use kube::{
    Api, Client, Resource,
    core::PartialObjectMeta,
    runtime::{WatchStreamExt, watcher},
};
use serde::de::DeserializeOwned;

use crate::{
    contract::{MANAGED_BY_LABEL, MANAGED_BY_VALUE},
    operator::reconcile::Key,
    sentinel::owner::OwnerKind,
    stream::{ControllerStreamExt, DebounceConfig},
};

/// Owners of changed managed objects, debounced per owner.
pub fn owner_changes(client: Client, namespace: Option<&str>) -> impl Stream<Item = Key> + Send {
    let config =
        watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}"));
    stream::select_all([
        owners_of::<StatefulSet>(&client, namespace, config.clone()),
        owners_of::<Service>(&client, namespace, config.clone()),
        owners_of::<ConfigMap>(&client, namespace, config),
    ])
    .debounce_keyed(
        DebounceConfig::trailing(Duration::from_secs(1)).max_wait(Duration::from_secs(5)),
        Key::clone,
        |_: Option<()>, _| (),
    )
    .map(|d| d.key)
}

fn owners_of<K>(
    client: &Client,
    namespace: Option<&str>,
    config: watcher::Config,
) -> std::pin::Pin<Box<dyn Stream<Item = Key> + Send>>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let api: Api<PartialObjectMeta<K>> = match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let owner_kind = OwnerKind::default();
    Box::pin(
        watcher(api, config)
            .default_backoff()
            .touched_objects()
            .filter_map(move |object| {
                let key = match object {
                    Ok(o) => owner_kind.owner_of(&o.metadata).map(|owner| Key {
                        namespace: owner.namespace,
                        name: owner.name,
                    }),
                    Err(e) => {
                        tracing::warn!(error = %e, "owned-object watch error; retrying");
                        None
                    }
                };
                futures::future::ready(key)
            }),
    )
}
