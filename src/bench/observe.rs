//! The load generator's own eyes: watches of the fleet's StatefulSets, Services, ConfigMaps
//! and TLS Secrets, and the drifted part of each object as they last showed it.

use std::collections::HashMap;

use futures::{Stream, StreamExt, stream, stream::BoxStream};
use k8s_openapi::api::{
    apps::v1::StatefulSet,
    core::v1::{ConfigMap, Secret, Service},
};
use kube::{
    Api, Client, ResourceExt,
    runtime::{WatchStreamExt, watcher},
};

use crate::demo::{
    DriftKind,
    drift::{Baseline, config_map_name, tls_secret_name},
};

/// One change the watches saw.
pub(crate) enum Seen {
    /// A StatefulSet as it is now.
    Set(Box<StatefulSet>),
    /// A Service as it is now.
    Service(Box<Service>),
    /// A Service deleted, by name.
    ServiceGone(String),
    /// A ConfigMap as it is now.
    ConfigMap(Box<ConfigMap>),
    /// A Secret as it is now.
    Secret(Box<Secret>),
    /// A watch failed (it retries with backoff).
    Error,
}

/// The watches of `namespace`, merged.
pub(crate) fn watch_fleet(client: &Client, namespace: &str) -> impl Stream<Item = Seen> + use<> {
    stream::select_all([
        watch_kind(
            Api::namespaced(client.clone(), namespace),
            |o| Seen::Set(Box::new(o)),
            None,
        ),
        watch_kind(
            Api::namespaced(client.clone(), namespace),
            |o| Seen::Service(Box::new(o)),
            Some(|o: Service| Seen::ServiceGone(o.name_any())),
        ),
        watch_kind(
            Api::namespaced(client.clone(), namespace),
            |o| Seen::ConfigMap(Box::new(o)),
            None,
        ),
        watch_kind(
            Api::namespaced(client.clone(), namespace),
            |o| Seen::Secret(Box::new(o)),
            None,
        ),
    ])
    .filter_map(std::future::ready)
}

/// One kind's watch: an object as it is now through `seen`, a deletion through `gone` (if
/// the generator cares), a failed watch as [`Seen::Error`].
fn watch_kind<K>(
    api: Api<K>,
    seen: fn(K) -> Seen,
    gone: Option<fn(K) -> Seen>,
) -> BoxStream<'static, Option<Seen>>
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
{
    watcher(api, watcher::Config::default())
        .default_backoff()
        .map(move |e| match e {
            Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => Some(seen(o)),
            Ok(watcher::Event::Delete(o)) => gone.map(|gone| gone(o)),
            Ok(_) => None,
            Err(_) => Some(Seen::Error),
        })
        .boxed()
}

/// The objects as the watches last showed them, by name.
#[derive(Default)]
pub(crate) struct Objects {
    sets: HashMap<String, StatefulSet>,
    services: HashMap<String, Service>,
    config_maps: HashMap<String, ConfigMap>,
    secrets: HashMap<String, Secret>,
}

impl Objects {
    /// Takes in one change; returns the name of the object it was about.
    pub(crate) fn update(&mut self, seen: Seen) -> Option<String> {
        match seen {
            Seen::Set(o) => {
                let name = o.name_any();
                self.sets.insert(name.clone(), *o);
                Some(name)
            }
            Seen::Service(o) => {
                let name = o.name_any();
                self.services.insert(name.clone(), *o);
                Some(name)
            }
            Seen::ServiceGone(name) => {
                self.services.remove(&name);
                Some(name)
            }
            Seen::ConfigMap(o) => {
                let name = o.name_any();
                self.config_maps.insert(name.clone(), *o);
                Some(name)
            }
            Seen::Secret(o) => {
                let name = o.name_any();
                self.secrets.insert(name.clone(), *o);
                Some(name)
            }
            Seen::Error => None,
        }
    }

    /// What drift `kind` changes on StatefulCluster `cluster`'s object, as last seen; `None`
    /// while that object has not been seen (a deleted Service reads as `Uid(None)`).
    pub(crate) fn state(&self, cluster: &str, kind: DriftKind) -> Option<Baseline> {
        match kind {
            DriftKind::Replicas | DriftKind::Image => {
                self.sets.get(cluster).map(|s| Baseline::of_set(kind, s))
            }
            DriftKind::Label => self
                .services
                .get(cluster)
                .map(|s| Baseline::of_service(kind, s)),
            DriftKind::ServiceDeleted => Some(Baseline::Uid(
                self.services
                    .get(cluster)
                    .and_then(|s| s.metadata.uid.clone()),
            )),
            DriftKind::ConfigMapKey => self
                .config_maps
                .get(&config_map_name(cluster))
                .map(Baseline::of_config_map),
            DriftKind::TlsSecret => self
                .secrets
                .get(&tls_secret_name(cluster))
                .map(Baseline::of_tls_secret),
        }
    }

    /// The StatefulCluster an object of this name belongs to (`<cluster>-config` is its
    /// ConfigMap, `<cluster>-tls` its TLS Secret; the StatefulSet and the client Service carry
    /// the cluster's own name).
    pub(crate) fn cluster_of(object: &str) -> &str {
        ["-config", "-tls"]
            .iter()
            .find_map(|suffix| object.strip_suffix(suffix))
            .unwrap_or(object)
    }
}
