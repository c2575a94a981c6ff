//! The sentinel's inputs, merged into one stream for the detector.
//!
//! The sentinel's inputs: the owners' cache, the metadata watches of the infrastructure, and
//! leadership gains, merged into one stream of detector [`Input`]s.

use futures::{Stream, StreamExt, channel::mpsc, future, stream};
use k8s_openapi::api::{
    apps::v1::StatefulSet,
    core::v1::{ConfigMap, Service},
};
use kube::{
    Client,
    api::DynamicObject,
    runtime::{WatchStreamExt, reflector, watcher},
};
use tokio::{sync::watch, task::JoinHandle};

use super::{acknowledged::Acknowledgements, detect::Input};
use crate::{
    telemetry::{BEAT_EVERY, Reachability},
    watch::{
        NamespacedName, OwnerKind,
        api::dynamic_namespaced_or_all,
        errors::WatchErrors,
        metadata::{MetadataEvent, metadata_events},
    },
};

/// The kinds the sentinel watches, by the names its inputs carry.
pub const WATCHED_KINDS: [&str; 3] = ["StatefulSet", "Service", "ConfigMap"];

/// The custom resources, cached by a reflector: the owners' `spec.sentinel`, pause flag and
/// last trigger.
pub struct OwnerCache {
    /// The cache.
    pub store: reflector::Store<DynamicObject>,
    /// Owners whose trigger the operator has just handled ([`Acknowledgements`]), for the
    /// taking.
    pub acknowledged: Option<mpsc::UnboundedReceiver<NamespacedName>>,
    task: JoinHandle<()>,
}

impl OwnerCache {
    /// Starts watching the custom resources of `kind` (in `namespace`, or all) and waits for
    /// the first list; `None` if `shutdown` comes first. Watch errors count in `errors`.
    pub async fn start(
        client: &Client,
        namespace: Option<&str>,
        kind: &OwnerKind,
        watch: watcher::Config,
        errors: WatchErrors,
        shutdown: impl Future<Output = ()>,
    ) -> anyhow::Result<Option<Self>> {
        let api = dynamic_namespaced_or_all(client.clone(), namespace, &kind.resource);
        let writer = reflector::store::Writer::new(kind.resource.clone());
        let store = writer.as_reader();
        let (sender, acknowledged) = mpsc::unbounded();
        let mut acknowledgements = Acknowledgements::new(sender);
        let task = tokio::spawn(
            watcher(api, watch)
                .backoff(crate::watch::backoff::watch_backoff())
                .reflect(writer)
                .for_each(move |event| {
                    match event {
                        Ok(event) => acknowledgements.observe(&event),
                        Err(e) => {
                            let reason = errors.record(&e).as_str();
                            let cause = crate::watch::cause::likely_cause(&e);
                            tracing::warn!(error = %e, reason, cause, "watching the custom resources failed; retrying");
                        }
                    }
                    future::ready(())
                }),
        );
        tokio::select! {
            ready = store.wait_until_ready() => {
                if let Err(e) = ready {
                    task.abort();
                    return Err(anyhow::Error::new(e).context("the custom resource cache closed"));
                }
            }
            () = shutdown => { task.abort(); return Ok(None); }
        }
        Ok(Some(Self {
            store,
            acknowledged: Some(acknowledged),
            task,
        }))
    }

    /// Stops the watch.
    pub fn stop(&self) {
        self.task.abort();
    }
}

/// Every input of the detector: the infrastructure's watch events (errors counted in
/// `watch_errors` and reported to `reachability`, then dropped: the watches retry), a
/// [`Input::CatchUp`] each time this instance becomes the leader, and a [`Input::Beat`] every
/// [`BEAT_EVERY`] (liveness: see [`crate::telemetry::Heartbeat`]).
pub fn detector_inputs(
    client: &Client,
    namespace: Option<&str>,
    watch: watcher::Config,
    selector: &str,
    leadership: watch::Receiver<bool>,
    reachability: Reachability,
    watch_errors: WatchErrors,
) -> impl Stream<Item = Input> + Send + 'static {
    let events = infrastructure_events(client, namespace, watch.labels(selector));
    let beats = tokio_stream::wrappers::IntervalStream::new(tokio::time::interval(BEAT_EVERY))
        .map(|_| Input::Beat);
    stream::select_all([
        watch_inputs(events, reachability, watch_errors).boxed(),
        leader_gains(leadership).boxed(),
        beats.boxed(),
    ])
}

/// The metadata watches of the three kinds with `config` (its label selector sent to the API
/// server), tagged with their kind.
fn infrastructure_events(
    client: &Client,
    namespace: Option<&str>,
    config: watcher::Config,
) -> impl Stream<Item = (&'static str, MetadataEvent)> + Send + 'static {
    let [statefulsets, services, configmaps] = WATCHED_KINDS;
    stream::select_all([
        metadata_events::<StatefulSet>(client.clone(), namespace, config.clone())
            .map(move |e| (statefulsets, e))
            .boxed(),
        metadata_events::<Service>(client.clone(), namespace, config.clone())
            .map(move |e| (services, e))
            .boxed(),
        metadata_events::<ConfigMap>(client.clone(), namespace, config)
            .map(move |e| (configmaps, e))
            .boxed(),
    ])
}

/// Watch events as inputs; errors are counted, logged and reported to `reachability`.
fn watch_inputs(
    events: impl Stream<Item = (&'static str, MetadataEvent)> + Send + 'static,
    mut reachability: Reachability,
    watch_errors: WatchErrors,
) -> impl Stream<Item = Input> + Send + 'static {
    events.filter_map(move |(kind, event)| {
        let input = match event {
            Ok(event) => {
                reachability.succeeded();
                Some(Input::Watch(kind, event))
            }
            Err(e) => {
                let reason = watch_errors.record(&e).as_str();
                let down_for = reachability.failed();
                tracing::warn!(kind, error = %e, reason, down_for = ?down_for, "watch failed; retrying with backoff");
                None
            }
        };
        future::ready(input)
    })
}

/// A catch-up input at each leadership gain (not for the initial state: the first list covers
/// it).
fn leader_gains(leadership: watch::Receiver<bool>) -> impl Stream<Item = Input> + Send + 'static {
    tokio_stream::wrappers::WatchStream::from_changes(leadership)
        .filter(|leads| future::ready(*leads))
        .map(|_| Input::CatchUp)
}
