//! StatefulClusters the operator cannot decode: reported once per resourceVersion, then skipped.
//!
//! A stored object can hold what the typed [`StatefulCluster`] cannot take (an integer beyond
//! its Rust type, written before the CRD bounded it: a tightened schema leaves stored objects
//! as they are). A typed list fails as a whole on one such object, so the operator reads
//! StatefulClusters as [`DynamicObject`]s and decodes each one here. One that does not decode
//! is logged, counted (`kube_sentinel_operator_undecodable_resources_total`), reported by a
//! Warning Event `Undecodable` on it, and treated as absent: the feeder forgets it, a reconcile
//! of its key does nothing. Each resourceVersion is reported once (a relist repeats nothing);
//! once it decodes again, it is fed like a new resource and reconciled.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
};

use kube::{
    Api, Client, Resource,
    api::{ApiResource, DynamicObject},
    runtime::{
        events::{Event, EventType, Recorder},
        watcher,
    },
};
use prometheus_client::metrics::counter::Counter;
use serde::de::DeserializeOwned;

use crate::{
    events::note,
    operator::crd::{StatefulCluster, StatefulClusterSpec, StatefulClusterStatus},
    watch::NamespacedName,
};

/// Decodes StatefulClusters read as [`DynamicObject`]s and reports those that do not decode;
/// cheap to clone (clones share what was reported).
#[derive(Clone)]
pub struct Undecodable {
    resource: ApiResource,
    recorder: Recorder,
    reported: Counter,
    /// The resourceVersion last reported, per resource undecodable now.
    seen: Arc<Mutex<HashMap<NamespacedName, Option<String>>>>,
}

impl Undecodable {
    /// Reports through `recorder` (Events) and `reported` (one count per report).
    pub fn new(recorder: Recorder, reported: Counter) -> Self {
        Self {
            resource: ApiResource::erase::<StatefulCluster>(&()),
            recorder,
            reported,
            seen: Arc::default(),
        }
    }

    /// The StatefulCluster resource, to read it as [`DynamicObject`]s.
    pub fn resource(&self) -> &ApiResource {
        &self.resource
    }

    /// Reads `key`: `None` when it is absent, or undecodable (reported).
    pub async fn get(
        &self,
        client: &Client,
        key: &NamespacedName,
    ) -> Result<Option<StatefulCluster>, kube::Error> {
        let api: Api<DynamicObject> =
            Api::namespaced_with(client.clone(), &key.namespace, &self.resource);
        Ok(api
            .get_opt(&key.name)
            .await?
            .and_then(|object| self.decode(&object)))
    }

    /// The StatefulCluster watch event for `event`: an object that does not decode is reported
    /// and stands as deleted (only its name is set), a deletion always goes through.
    pub fn event(&self, event: watcher::Event<DynamicObject>) -> watcher::Event<StatefulCluster> {
        match event {
            watcher::Event::Init => watcher::Event::Init,
            watcher::Event::InitDone => watcher::Event::InitDone,
            watcher::Event::InitApply(object) => self
                .decode(&object)
                .map_or_else(|| absent(object), watcher::Event::InitApply),
            watcher::Event::Apply(object) => self
                .decode(&object)
                .map_or_else(|| absent(object), watcher::Event::Apply),
            watcher::Event::Delete(object) => {
                if let Some(key) = NamespacedName::of(&object) {
                    self.seen().remove(&key);
                }
                match decoded(&object) {
                    Ok(cr) => watcher::Event::Delete(cr),
                    Err(_) => absent(object),
                }
            }
        }
    }

    /// `object` as a StatefulCluster, or `None` once it is reported.
    pub fn decode(&self, object: &DynamicObject) -> Option<StatefulCluster> {
        let key = NamespacedName::of(object)?;
        match decoded(object) {
            Ok(cr) => {
                if self.seen().remove(&key).is_some() {
                    tracing::info!(namespace = %key.namespace, name = %key.name, "StatefulCluster decodes again; reconciling it");
                }
                Some(cr)
            }
            Err(error) => {
                let version = object.metadata.resource_version.clone();
                let previous = self.seen().insert(key.clone(), version.clone());
                if previous.as_ref() != Some(&version) {
                    self.report(object, &key, version, error);
                }
                None
            }
        }
    }

    /// Logs, counts and publishes (in the background) the Event of one undecodable version.
    fn report(
        &self,
        object: &DynamicObject,
        key: &NamespacedName,
        version: Option<String>,
        error: String,
    ) {
        tracing::warn!(namespace = %key.namespace, name = %key.name, resource_version = ?version, %error, "StatefulCluster cannot be decoded; skipping it until it can");
        self.reported.inc();
        let event = Event {
            type_: EventType::Warning,
            reason: "Undecodable".into(),
            note: Some(note(format!(
                "The operator cannot decode this StatefulCluster and skips it until it can: {error}"
            ))),
            action: "Decode".into(),
            secondary: None,
        };
        let reference = object.object_ref(&self.resource);
        let recorder = self.recorder.clone();
        // Not awaited: the watch that saw the object must not wait on the Event.
        tokio::spawn(async move {
            if let Err(e) = recorder.publish(&event, &reference).await {
                tracing::warn!(error = %e, reason = "Undecodable", "could not publish an Event");
            }
        });
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, HashMap<NamespacedName, Option<String>>> {
        // A poisoned map of versions is still a valid map.
        self.seen.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// `object` decoded, or why not, naming the part (`spec` or `status`) that does not decode.
fn decoded(object: &DynamicObject) -> Result<StatefulCluster, String> {
    let whole = serde_json::to_value(object)
        .and_then(serde_json::from_value)
        .map_err(|e| e.to_string());
    whole.map_err(|e| {
        let part = |name: &str, fails: fn(&serde_json::Value) -> Option<String>| {
            object
                .data
                .get(name)
                .and_then(fails)
                .map(|e| format!("{name}: {e}"))
        };
        part("spec", fails::<StatefulClusterSpec>)
            .or_else(|| part("status", fails::<StatefulClusterStatus>))
            .unwrap_or(e)
    })
}

/// Why `value` does not decode as `T`, if it does not.
fn fails<T: DeserializeOwned>(value: &serde_json::Value) -> Option<String> {
    T::deserialize(value).err().map(|e| e.to_string())
}

/// The deletion of `object`, as the feeder and the metrics need it: its name alone.
fn absent(object: DynamicObject) -> watcher::Event<StatefulCluster> {
    let spec = StatefulClusterSpec {
        replicas: 0,
        image: String::new(),
        version: String::new(),
        config: BTreeMap::new(),
        ports: Vec::new(),
        tls: None,
        upgrade: Default::default(),
        backup: None,
        sentinel: Default::default(),
        paused: false,
    };
    watcher::Event::Delete(StatefulCluster {
        metadata: object.metadata,
        spec,
        status: None,
    })
}

#[cfg(test)]
#[path = "undecodable_properties.rs"]
mod properties;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(name: &str, version: &str, issued: u64) -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": "kube-sentinel.dev/v1alpha1",
            "kind": "StatefulCluster",
            "metadata": {"name": name, "namespace": "ns", "resourceVersion": version},
            "spec": {"replicas": 1, "image": "db", "version": "1", "ports": [{"name": "c", "port": 1}]},
            "status": {"certificate": {"issued": issued}},
        }))
        .expect("object")
    }

    /// Nothing listens at this address: every Event publish fails (and is logged).
    fn undecodable() -> Undecodable {
        let config = kube::Config::new("http://127.0.0.1:9".parse().expect("uri"));
        let client = Client::try_from(config).expect("client");
        let reporter = crate::events::reporter(crate::events::OPERATOR_REPORTING_CONTROLLER, None);
        Undecodable::new(Recorder::new(client, reporter), Counter::default())
    }

    /// What the feeder gets: the variant and the name.
    fn as_fed(event: &watcher::Event<StatefulCluster>) -> String {
        match event {
            watcher::Event::Init => "init".into(),
            watcher::Event::InitDone => "init-done".into(),
            watcher::Event::InitApply(cr) => {
                format!("init-apply {}", cr.metadata.name.as_deref().unwrap_or(""))
            }
            watcher::Event::Apply(cr) => {
                format!("apply {}", cr.metadata.name.as_deref().unwrap_or(""))
            }
            watcher::Event::Delete(cr) => {
                format!("delete {}", cr.metadata.name.as_deref().unwrap_or(""))
            }
        }
    }

    #[tokio::test]
    async fn an_undecodable_object_stands_as_deleted_and_is_reported_once_per_resource_version() {
        let u = undecodable();
        let too_big = u64::from(u32::MAX) + 1;
        let events = [
            watcher::Event::Init,
            watcher::Event::InitApply(object("bad", "1", too_big)),
            watcher::Event::InitApply(object("good", "2", 1)),
            watcher::Event::InitDone,
            // A relist: the same version again.
            watcher::Event::Init,
            watcher::Event::InitApply(object("bad", "1", too_big)),
            watcher::Event::InitDone,
            // A new version, still undecodable; then repaired; then broken again.
            watcher::Event::Apply(object("bad", "3", too_big)),
            watcher::Event::Apply(object("bad", "4", 2)),
            watcher::Event::Apply(object("bad", "5", too_big)),
            watcher::Event::Delete(object("bad", "6", too_big)),
        ];
        let fed: Vec<String> = events.into_iter().map(|e| as_fed(&u.event(e))).collect();
        assert_eq!(
            fed,
            [
                "init",
                "delete bad",
                "init-apply good",
                "init-done",
                "init",
                "delete bad",
                "init-done",
                "delete bad",
                "apply bad",
                "delete bad",
                "delete bad",
            ]
        );
        assert_eq!(u.reported.get(), 3, "versions 1, 3 and 5");
        assert!(u.seen().is_empty(), "nothing kept for a deleted resource");
    }

    #[tokio::test]
    async fn the_report_names_the_part_that_does_not_decode() {
        let error = decoded(&object("bad", "1", u64::from(u32::MAX) + 1)).expect_err("too big");
        assert!(error.starts_with("status: "), "{error}");
        assert!(error.contains("4294967296"), "{error}");
        let mut bad_spec = object("bad", "1", 1);
        bad_spec.data["spec"]["replicas"] = json!(1_u64 << 31);
        let error = decoded(&bad_spec).expect_err("replicas beyond i32");
        assert!(error.starts_with("spec: "), "{error}");
    }
}
