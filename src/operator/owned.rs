//! Optional metadata watches of the managed objects (`--watch-owned`).
//!
//! Optional (`--watch-owned`, off by default): metadata-only watches of the StatefulSets,
//! Services and ConfigMaps the operator manages; a change puts the owning resource on the
//! **normal** lane, as controller-runtime's `Owns()` would.
//!
//! Off by default: the sentinel already reports foreign changes, attributed and debounced, for
//! the fast lane, and the periodic resync covers the rest. Turn it on to run the operator
//! without a sentinel. Changes are debounced per owner (1 s, at most 5 s) so that a rollout's
//! stream of status updates becomes a few reconciles. It needs list and watch on the three
//! kinds: `deploy/operator/rbac-watch-owned.yaml`.

use std::{pin::Pin, time::Duration};

use futures::{Stream, StreamExt, stream};
use k8s_openapi::api::{
    apps::v1::StatefulSet,
    core::v1::{ConfigMap, Service},
};
use kube::{
    Client,
    runtime::{WatchStreamExt, watcher},
};

use crate::{
    contract::{MANAGED_BY_LABEL, MANAGED_BY_VALUE},
    stream::{ControllerStreamExt, DebounceConfig},
    watch::{
        NamespacedName, OwnerKind,
        errors::WatchErrors,
        metadata::{MetadataEvent, metadata_events},
    },
};

/// Owners of changed managed objects, debounced per owner.
pub fn owner_changes(
    client: Client,
    namespace: Option<&str>,
    watch: watcher::Config,
    errors: WatchErrors,
) -> impl Stream<Item = NamespacedName> + Send + use<> {
    let config = watch.labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}"));
    stream::select_all([
        owners_of(
            metadata_events::<StatefulSet>(client.clone(), namespace, config.clone()),
            errors.clone(),
        ),
        owners_of(
            metadata_events::<Service>(client.clone(), namespace, config.clone()),
            errors.clone(),
        ),
        owners_of(
            metadata_events::<ConfigMap>(client, namespace, config),
            errors,
        ),
    ])
    .debounce_keyed(
        DebounceConfig::trailing(Duration::from_secs(1)).max_wait(Duration::from_secs(5)),
        NamespacedName::clone,
        |_: Option<()>, _| (),
    )
    .map(|d| d.key)
}

/// The owners of the objects of one watch that change, as they change.
fn owners_of(
    events: impl Stream<Item = MetadataEvent> + Send + 'static,
    errors: WatchErrors,
) -> Pin<Box<dyn Stream<Item = NamespacedName> + Send>> {
    let owner_kind = OwnerKind::default();
    Box::pin(events.touched_objects().filter_map(move |object| {
        let key = match object {
            Ok(meta) => owner_kind.owner_of(&meta),
            Err(e) => {
                let reason = errors.record(&e).as_str();
                tracing::warn!(error = %e, reason, "owned-object watch error; retrying");
                None
            }
        };
        futures::future::ready(key)
    }))
}
