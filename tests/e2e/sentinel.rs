//! The sentinel on a real control plane, running as its own process under its ServiceAccount
//! (`deploy/sentinel/` manifests). Tests play the operator (writes with the operator's field
//! manager) and outside actors (writes with other managers), and read the triggers from a watch
//! of the custom resource, so that every trigger written is seen, even one quickly replaced.
//!
//! Negative tests ("no trigger") always pair with a positive control in the same sentinel, and
//! wait until the control's trigger has arrived and one more window has passed.

use std::{
    net::TcpListener,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::StreamExt;
use k8s_openapi::api::{
    apps::v1::StatefulSet,
    core::v1::{ConfigMap, Service},
};
use kube::{
    Api, Client,
    api::{ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, PostParams},
    runtime::{WatchStreamExt, watcher},
};
use kube_sentinel::contract::{
    INSTANCE_LABEL, MANAGED_BY_LABEL, MANAGED_BY_VALUE, OPERATOR_FIELD_MANAGER,
};
use serde_json::{Value, json};

use crate::support::{
    Program, REPO, apply_component_manifests, control_plane, eventually, http_get, install_crd,
};

/// A trigger as seen on the custom resource.
#[derive(Clone, Debug)]
pub(crate) struct Seen {
    pub(crate) id: String,
    pub(crate) objects: Vec<(String, String)>,
    total: u64,
    at: tokio::time::Instant,
}

pub(crate) struct Fixture {
    pub(crate) ns: String,
    pub(crate) admin: Client,
    pub(crate) clusters: Api<DynamicObject>,
    resource: ApiResource,
    pub(crate) kubeconfig: std::path::PathBuf,
    metrics_port: u16,
    pub(crate) args: Vec<String>,
    sentinel: Option<Program>,
    triggers: Arc<Mutex<Vec<(String, Seen)>>>,
    _watch: tokio::task::JoinHandle<()>,
}

pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

impl Fixture {
    /// A namespace with the sentinel's RBAC and policy, a watch recording every trigger, and
    /// the sentinel started with `args` (plus its namespace and a metrics port).
    pub(crate) async fn start(prefix: &str, args: &[&str]) -> Self {
        let cp = control_plane();
        let admin = cp.admin().await;
        let resource = install_crd(&admin).await;
        let ns = cp.namespace(prefix).await;
        apply_component_manifests(&admin, "sentinel", &ns).await;
        let kubeconfig = cp.service_account_kubeconfig_file(&ns, "sentinel").await;
        let clusters: Api<DynamicObject> = Api::namespaced_with(admin.clone(), &ns, &resource);
        let triggers: Arc<Mutex<Vec<(String, Seen)>>> = Arc::default();
        let record = triggers.clone();
        let watch = tokio::spawn(
            watcher(clusters.clone(), watcher::Config::default())
                .applied_objects()
                .for_each(move |o| {
                    if let Ok(o) = o {
                        let s = &o.data["status"]["sentinel"];
                        if let Some(id) = s["triggerID"].as_str() {
                            let name = o.metadata.name.clone().unwrap_or_default();
                            let mut all = record.lock().expect("lock");
                            if !all.iter().any(|(_, t)| t.id == id) {
                                let objects = s["driftedObjects"]
                                    .as_array()
                                    .into_iter()
                                    .flatten()
                                    .map(|d| {
                                        (
                                            d["kind"].as_str().unwrap_or_default().to_owned(),
                                            d["name"].as_str().unwrap_or_default().to_owned(),
                                        )
                                    })
                                    .collect();
                                all.push((
                                    name,
                                    Seen {
                                        id: id.to_owned(),
                                        objects,
                                        total: s["driftedTotal"].as_u64().unwrap_or_default(),
                                        at: tokio::time::Instant::now(),
                                    },
                                ));
                            }
                        }
                    }
                    futures::future::ready(())
                }),
        );
        let mut args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let metrics_port = free_port();
        args.extend([
            "--namespace".into(),
            ns.clone(),
            "--metrics-addr".into(),
            format!("127.0.0.1:{metrics_port}"),
        ]);
        let mut f = Self {
            ns,
            admin,
            clusters,
            resource,
            kubeconfig,
            metrics_port,
            args,
            sentinel: None,
            triggers,
            _watch: watch,
        };
        f.start_sentinel().await;
        f
    }

    pub(crate) async fn start_sentinel(&mut self) {
        let mut args = vec!["sentinel"];
        args.extend(self.args.iter().map(String::as_str));
        self.sentinel = Some(Program::spawn("sentinel", &args, &self.kubeconfig));
        let port = self.metrics_port;
        let sentinel = self.sentinel.as_mut().expect("started");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some((200, _)) = http_get(port, "/readyz").await {
                break;
            }
            assert!(
                sentinel.is_running(),
                "sentinel exited:\n{}",
                sentinel.log()
            );
            assert!(
                tokio::time::Instant::now() < deadline,
                "sentinel not ready:\n{}",
                sentinel.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub(crate) fn stop_sentinel(&mut self) {
        if let Some(mut s) = self.sentinel.take() {
            s.kill();
        }
    }

    pub(crate) fn log(&self) -> String {
        self.sentinel.as_ref().map(Program::log).unwrap_or_default()
    }

    /// Creates StatefulCluster `name` (minimal sample, `spec` merged in); returns its uid.
    pub(crate) async fn cluster(&self, name: &str, spec: Value) -> String {
        let text =
            std::fs::read_to_string(format!("{REPO}/deploy/samples/minimal.yaml")).expect("sample");
        let mut obj = kube_sentinel::manifests::parse(&text)
            .expect("parse")
            .remove(0);
        obj["metadata"]["name"] = json!(name);
        if let (Some(dst), Some(src)) = (obj["spec"].as_object_mut(), spec.as_object()) {
            for (k, v) in src {
                dst.insert(k.clone(), v.clone());
            }
        }
        let obj: DynamicObject = serde_json::from_value(obj).expect("object");
        let created = self
            .clusters
            .create(&PostParams::default(), &obj)
            .await
            .expect("create cluster");
        created.metadata.uid.expect("uid")
    }

    fn metadata(&self, name: &str, owner: &str, uid: &str) -> Value {
        json!({
            "name": name,
            "labels": {MANAGED_BY_LABEL: MANAGED_BY_VALUE, INSTANCE_LABEL: owner},
            "ownerReferences": [{
                "apiVersion": self.resource.api_version, "kind": self.resource.kind,
                "name": owner, "uid": uid, "controller": true, "blockOwnerDeletion": true
            }]
        })
    }

    /// The operator's objects for cluster `owner`: a StatefulSet, a Service and a ConfigMap,
    /// each named `name`, applied with the operator's field manager.
    pub(crate) async fn operator_objects(&self, name: &str, owner: &str, uid: &str) {
        let meta = self.metadata(name, owner, uid);
        let op = PatchParams::apply(OPERATOR_FIELD_MANAGER).force();
        let sts = json!({
            "apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": meta,
            "spec": {
                "replicas": 1, "serviceName": name,
                "selector": {"matchLabels": {"app": name}},
                "template": {"metadata": {"labels": {"app": name}},
                    "spec": {"containers": [{"name": "db", "image": "registry.k8s.io/pause:3.10"}]}}
            }
        });
        self.sts()
            .patch(name, &op, &Patch::Apply(sts))
            .await
            .expect("statefulset");
        let svc = json!({
            "apiVersion": "v1", "kind": "Service", "metadata": meta,
            "spec": {"selector": {"app": name}, "ports": [{"name": "client", "port": 7000}]}
        });
        self.svc()
            .patch(name, &op, &Patch::Apply(svc))
            .await
            .expect("service");
        self.operator_configmap(name, owner, uid, "1").await;
    }

    async fn operator_configmap(&self, name: &str, owner: &str, uid: &str, value: &str) {
        let op = PatchParams::apply(OPERATOR_FIELD_MANAGER).force();
        let cm = json!({
            "apiVersion": "v1", "kind": "ConfigMap", "metadata": self.metadata(name, owner, uid),
            "data": {"setting": value}
        });
        self.cm()
            .patch(name, &op, &Patch::Apply(cm))
            .await
            .expect("configmap");
    }

    pub(crate) fn sts(&self) -> Api<StatefulSet> {
        Api::namespaced(self.admin.clone(), &self.ns)
    }
    pub(crate) fn svc(&self) -> Api<Service> {
        Api::namespaced(self.admin.clone(), &self.ns)
    }
    pub(crate) fn cm(&self) -> Api<ConfigMap> {
        Api::namespaced(self.admin.clone(), &self.ns)
    }

    /// A foreign merge patch by field manager `manager`.
    pub(crate) fn foreign(manager: &str) -> PatchParams {
        PatchParams {
            field_manager: Some(manager.into()),
            ..Default::default()
        }
    }

    pub(crate) fn triggers(&self, cluster: &str) -> Vec<Seen> {
        self.triggers
            .lock()
            .expect("lock")
            .iter()
            .filter(|(c, _)| c == cluster)
            .map(|(_, t)| t.clone())
            .collect()
    }

    /// Waits for the `n`th trigger of `cluster`.
    pub(crate) async fn nth_trigger(&self, cluster: &str, n: usize, timeout: Duration) -> Seen {
        let what = format!("trigger #{n} on {cluster}");
        let found = tokio::time::timeout(timeout, async {
            loop {
                if let Some(t) = self.triggers(cluster).get(n - 1) {
                    return t.clone();
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        found.unwrap_or_else(|_| {
            panic!(
                "timed out waiting for {what}; sentinel log:\n{}",
                self.log()
            )
        })
    }
}

pub(crate) const FAST: &[&str] = &["--debounce", "1s", "--max-wait", "4s", "--jitter", "0s"];
/// A window and a margin: after this much quiet, no trigger is still due.
pub(crate) const SETTLE: Duration = Duration::from_secs(3);

pub(crate) fn names(t: &Seen) -> Vec<String> {
    let mut n: Vec<String> = t.objects.iter().map(|(k, n)| format!("{k}/{n}")).collect();
    n.sort();
    n
}

#[tokio::test]
async fn foreign_replicas_patch_gives_exactly_one_trigger_naming_it() {
    let f = Fixture::start("sen-replicas", FAST).await;
    let uid = f.cluster("db", json!({})).await;
    f.operator_objects("db", "db", &uid).await;
    tokio::time::sleep(SETTLE).await;
    assert!(
        f.triggers("db").is_empty(),
        "the operator's own objects are not drift"
    );
    f.sts()
        .patch(
            "db",
            &Fixture::foreign("kubectl-patch"),
            &Patch::Merge(json!({"spec": {"replicas": 5}})),
        )
        .await
        .expect("patch");
    let t = f.nth_trigger("db", 1, Duration::from_secs(15)).await;
    assert_eq!(names(&t), ["StatefulSet/db"]);
    assert_eq!(t.total, 1);
    uuid::Uuid::parse_str(&t.id).expect("triggerID is a UUID");
    tokio::time::sleep(SETTLE).await;
    assert_eq!(f.triggers("db").len(), 1, "exactly one trigger");
    // The trigger names its time of detection and of writing, and an Event tells people.
    let obj = f.clusters.get_status("db").await.expect("get");
    assert!(obj.data["status"]["sentinel"]["detectedAt"].is_string());
    let (_, metrics) = http_get(f.metrics_port, "/metrics").await.expect("metrics");
    assert!(
        metrics.contains("kube_sentinel_sentinel_triggers_written_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("kube_sentinel_sentinel_drift_to_trigger_seconds_count 1"),
        "{metrics}"
    );
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(f.admin.clone(), &f.ns);
    eventually(Duration::from_secs(10), "a DriftDetected event", || async {
        let list = events.list(&Default::default()).await.ok()?;
        list.items
            .into_iter()
            .find(|e| e.reason.as_deref() == Some("DriftDetected"))
    })
    .await;
}

#[tokio::test]
async fn operator_writes_and_foreign_status_updates_are_not_drift() {
    let f = Fixture::start("sen-ignore", FAST).await;
    let uid = f.cluster("db", json!({})).await;
    f.operator_objects("db", "db", &uid).await;
    // The operator changes replicas (an Update) and the ConfigMap (an Apply) with its own
    // field manager.
    f.sts()
        .patch(
            "db",
            &Fixture::foreign(OPERATOR_FIELD_MANAGER),
            &Patch::Merge(json!({"spec": {"replicas": 2}})),
        )
        .await
        .expect("operator apply");
    f.operator_configmap("db", "db", &uid, "2").await;
    // Another controller writes the StatefulSet's status subresource.
    f.sts()
        .patch_status(
            "db",
            &Fixture::foreign("status-writer"),
            &Patch::Merge(json!({"status": {"replicas": 1, "availableReplicas": 0}})),
        )
        .await
        .expect("status patch");
    tokio::time::sleep(SETTLE).await;
    assert!(f.triggers("db").is_empty(), "{:?}", f.triggers("db"));
    // Positive control: the same sentinel does see a foreign change.
    f.cm()
        .patch(
            "db",
            &Fixture::foreign("kubectl-edit"),
            &Patch::Merge(json!({"data": {"setting": "x"}})),
        )
        .await
        .expect("foreign");
    let t = f.nth_trigger("db", 1, Duration::from_secs(15)).await;
    assert_eq!(
        names(&t),
        ["ConfigMap/db"],
        "ConfigMap data change is drift"
    );
}

#[tokio::test]
async fn deleted_service_relabelled_configmap_and_annotation_added_then_removed_each_trigger() {
    let f = Fixture::start("sen-delete", FAST).await;
    let uid = f.cluster("db", json!({})).await;
    f.operator_objects("db", "db", &uid).await;
    let annotate = Fixture::foreign("kubectl-annotate");
    f.svc()
        .patch(
            "db",
            &annotate,
            &Patch::Merge(json!({"metadata": {"annotations": {"team": "x"}}})),
        )
        .await
        .expect("annotate");
    let first = f.nth_trigger("db", 1, Duration::from_secs(15)).await;
    assert_eq!(names(&first), ["Service/db"]);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    f.svc()
        .patch(
            "db",
            &annotate,
            &Patch::Merge(json!({"metadata": {"annotations": {"team": null}}})),
        )
        .await
        .expect("remove annotation");
    let second = f.nth_trigger("db", 2, Duration::from_secs(15)).await;
    assert_eq!(names(&second), ["Service/db"]);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    f.svc()
        .delete("db", &DeleteParams::default())
        .await
        .expect("delete");
    let third = f.nth_trigger("db", 3, Duration::from_secs(15)).await;
    assert_eq!(names(&third), ["Service/db"]);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // Re-labelled out of the selector: to a label-selector watch it left, as if deleted.
    f.cm()
        .patch(
            "db",
            &Fixture::foreign("kubectl-label"),
            &Patch::Merge(json!({"metadata": {"labels": {MANAGED_BY_LABEL: null}}})),
        )
        .await
        .expect("relabel");
    let fourth = f.nth_trigger("db", 4, Duration::from_secs(15)).await;
    assert_eq!(names(&fourth), ["ConfigMap/db"]);
    tokio::time::sleep(SETTLE).await;
    assert_eq!(f.triggers("db").len(), 4);
}

#[tokio::test]
async fn a_hundred_patches_to_three_objects_make_one_trigger_naming_all() {
    // Default timing: window 2 s, max wait 10 s.
    let f = Fixture::start("sen-burst", &["--jitter", "0s"]).await;
    let uid = f.cluster("db", json!({})).await;
    f.operator_objects("db", "db", &uid).await;
    let started = tokio::time::Instant::now();
    for i in 0..100 {
        let p = Fixture::foreign("burst-writer");
        match i % 3 {
            0 => f
                .sts()
                .patch(
                    "db",
                    &p,
                    &Patch::Merge(json!({"metadata": {"annotations": {"n": i.to_string()}}})),
                )
                .await
                .map(drop),
            1 => f
                .svc()
                .patch(
                    "db",
                    &p,
                    &Patch::Merge(json!({"metadata": {"annotations": {"n": i.to_string()}}})),
                )
                .await
                .map(drop),
            _ => f
                .cm()
                .patch(
                    "db",
                    &p,
                    &Patch::Merge(json!({"data": {"n": i.to_string()}})),
                )
                .await
                .map(drop),
        }
        .expect("patch");
    }
    let spent = started.elapsed();
    assert!(
        spent < Duration::from_secs(8),
        "the patches must fit in one burst: {spent:?}"
    );
    let t = f.nth_trigger("db", 1, Duration::from_secs(20)).await;
    assert_eq!(names(&t), ["ConfigMap/db", "Service/db", "StatefulSet/db"]);
    assert_eq!(t.total, 3);
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(f.triggers("db").len(), 1, "{:?}", f.triggers("db"));
    let (_, metrics) = http_get(f.metrics_port, "/metrics").await.expect("metrics");
    assert!(
        metrics.contains("kube_sentinel_sentinel_triggers_coalesced_total 99"),
        "{metrics}"
    );
}

#[tokio::test]
async fn fifty_resources_drifting_at_once_get_one_trigger_each() {
    let f = Fixture::start("sen-fifty", FAST).await;
    let mut uids = Vec::new();
    for i in 0..50 {
        let name = format!("c{i}");
        let uid = f.cluster(&name, json!({})).await;
        f.operator_configmap(&name, &name, &uid, "1").await;
        uids.push(name);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let p = Fixture::foreign("mass-edit");
    for name in &uids {
        f.cm()
            .patch(
                name,
                &p,
                &Patch::Merge(json!({"data": {"setting": "drifted"}})),
            )
            .await
            .expect("patch");
    }
    for name in &uids {
        let t = f.nth_trigger(name, 1, Duration::from_secs(30)).await;
        assert_eq!(names(&t), [format!("ConfigMap/{name}")]);
    }
    tokio::time::sleep(SETTLE).await;
    for name in &uids {
        assert_eq!(f.triggers(name).len(), 1, "{name}");
    }
}

#[tokio::test]
async fn continuous_drift_is_triggered_every_max_wait() {
    // Default timing: window 2 s, max wait 10 s; a patch every 500 ms for 30 s.
    let f = Fixture::start("sen-continuous", &["--jitter", "0s"]).await;
    let uid = f.cluster("db", json!({})).await;
    f.operator_objects("db", "db", &uid).await;
    let started = tokio::time::Instant::now();
    let p = Fixture::foreign("flapper");
    let mut i = 0u32;
    while started.elapsed() < Duration::from_secs(30) {
        f.cm()
            .patch(
                "db",
                &p,
                &Patch::Merge(json!({"data": {"flap": i.to_string()}})),
            )
            .await
            .expect("patch");
        i += 1;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    let all = f.triggers("db");
    // Three max-wait bursts during the 30 s, and one for the tail.
    assert!(
        (3..=4).contains(&all.len()),
        "{} triggers: {all:?}",
        all.len()
    );
    let first = all[0].at.duration_since(started);
    assert!(
        first >= Duration::from_secs(9) && first <= Duration::from_secs(13),
        "first at {first:?}"
    );
    for pair in all.windows(2).take(2) {
        let gap = pair[1].at.duration_since(pair[0].at);
        assert!(
            gap >= Duration::from_secs(8) && gap <= Duration::from_secs(12),
            "gap {gap:?}"
        );
    }
}

#[tokio::test]
async fn unlabelled_objects_and_paused_resources_get_no_trigger() {
    let f = Fixture::start("sen-quiet", FAST).await;
    let uid = f.cluster("db", json!({})).await;
    f.operator_objects("db", "db", &uid).await;
    let paused_uid = f.cluster("paused", json!({"paused": true})).await;
    f.operator_configmap("paused", "paused", &paused_uid, "1")
        .await;
    // An object owned by db but without the managed-by label is not watched.
    let unlabelled = json!({"metadata": {"name": "extra", "ownerReferences": [{
        "apiVersion": f.resource.api_version, "kind": f.resource.kind, "name": "db", "uid": uid, "controller": true}]},
        "data": {"a": "1"}});
    f.cm()
        .create(
            &PostParams::default(),
            &serde_json::from_value(unlabelled).expect("cm"),
        )
        .await
        .expect("create");
    let p = Fixture::foreign("kubectl-edit");
    f.cm()
        .patch("extra", &p, &Patch::Merge(json!({"data": {"a": "2"}})))
        .await
        .expect("patch");
    f.cm()
        .patch(
            "paused",
            &p,
            &Patch::Merge(json!({"data": {"setting": "x"}})),
        )
        .await
        .expect("patch");
    // Positive control.
    f.cm()
        .patch("db", &p, &Patch::Merge(json!({"data": {"setting": "x"}})))
        .await
        .expect("patch");
    let t = f.nth_trigger("db", 1, Duration::from_secs(15)).await;
    assert_eq!(
        names(&t),
        ["ConfigMap/db"],
        "the unlabelled ConfigMap is not named"
    );
    tokio::time::sleep(SETTLE).await;
    assert!(f.triggers("paused").is_empty());
    assert_eq!(f.triggers("db").len(), 1);
}

#[tokio::test]
async fn same_named_statefulset_and_service_are_attributed_apart() {
    let f = Fixture::start("sen-names", FAST).await;
    let uid = f.cluster("db", json!({})).await;
    f.operator_objects("db", "db", &uid).await;
    let p = Fixture::foreign("kubectl-label");
    f.svc()
        .patch(
            "db",
            &p,
            &Patch::Merge(json!({"metadata": {"labels": {"x": "1"}}})),
        )
        .await
        .expect("patch");
    let first = f.nth_trigger("db", 1, Duration::from_secs(15)).await;
    assert_eq!(names(&first), ["Service/db"]);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    f.sts()
        .patch(
            "db",
            &p,
            &Patch::Merge(json!({"metadata": {"labels": {"x": "1"}}})),
        )
        .await
        .expect("patch");
    let second = f.nth_trigger("db", 2, Duration::from_secs(15)).await;
    assert_eq!(names(&second), ["StatefulSet/db"]);
}

#[tokio::test]
async fn drift_while_stopped_is_triggered_once_after_restart() {
    let mut f = Fixture::start("sen-restart", FAST).await;
    let uid = f.cluster("db", json!({})).await;
    f.operator_objects("db", "db", &uid).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    f.stop_sentinel();
    // A second passes so that the drift is newer than anything the sentinel knew.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    f.sts()
        .patch(
            "db",
            &Fixture::foreign("night-shift"),
            &Patch::Merge(json!({"spec": {"replicas": 4}})),
        )
        .await
        .expect("patch while stopped");
    f.start_sentinel().await;
    let t = f.nth_trigger("db", 1, Duration::from_secs(15)).await;
    assert_eq!(
        names(&t),
        ["StatefulSet/db"],
        "unchanged objects are not named"
    );
    tokio::time::sleep(SETTLE).await;
    // Restarting again does not trigger the same drift twice.
    f.stop_sentinel();
    f.start_sentinel().await;
    tokio::time::sleep(SETTLE).await;
    assert_eq!(f.triggers("db").len(), 1, "{:?}", f.triggers("db"));
}

#[tokio::test]
async fn standby_takes_over_and_catches_drift_the_dead_leader_left() {
    let mut args: Vec<&str> = FAST.to_vec();
    args.extend([
        "--leader-elect",
        "--lease-duration",
        "3s",
        "--identity",
        "first",
    ]);
    // The Lease goes to the namespace of the sentinel's kubeconfig, the test's.
    let mut f = Fixture::start("sen-ha", &args).await;
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(f.admin.clone(), &f.ns);
    eventually(
        Duration::from_secs(20),
        "the first instance to lead",
        || async {
            let lease = leases.get("kube-sentinel-sentinel").await.ok()?;
            (lease.spec?.holder_identity.as_deref() == Some("first")).then_some(())
        },
    )
    .await;
    let mut standby_args = vec!["sentinel".to_owned()];
    standby_args.extend(f.args.iter().map(|a| {
        if a == "first" {
            "second".to_owned()
        } else {
            a.clone()
        }
    }));
    let standby_port = free_port();
    if let Some(i) = standby_args.iter().position(|a| a == "--metrics-addr") {
        standby_args[i + 1] = format!("127.0.0.1:{standby_port}");
    }
    let standby_args: Vec<&str> = standby_args.iter().map(String::as_str).collect();
    let standby = Program::spawn("sentinel-standby", &standby_args, &f.kubeconfig);
    eventually(Duration::from_secs(30), "the standby ready", || async {
        matches!(http_get(standby_port, "/readyz").await, Some((200, _))).then_some(())
    })
    .await;

    let uid = f.cluster("db", json!({})).await;
    f.operator_objects("db", "db", &uid).await;
    let p = Fixture::foreign("kubectl-edit");
    f.cm()
        .patch("db", &p, &Patch::Merge(json!({"data": {"setting": "a"}})))
        .await
        .expect("patch");
    f.nth_trigger("db", 1, Duration::from_secs(15)).await;
    tokio::time::sleep(SETTLE).await;
    assert_eq!(f.triggers("db").len(), 1, "only the leader writes");

    // The leader dies; drift happens before the standby holds the lease.
    f.stop_sentinel();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    f.sts()
        .patch("db", &p, &Patch::Merge(json!({"spec": {"replicas": 2}})))
        .await
        .expect("patch");
    let t = f.nth_trigger("db", 2, Duration::from_secs(30)).await;
    assert_eq!(
        names(&t),
        ["StatefulSet/db"],
        "standby log:\n{}",
        standby.log()
    );
    let lease = leases.get("kube-sentinel-sentinel").await.expect("lease");
    assert_eq!(
        lease.spec.and_then(|s| s.holder_identity).as_deref(),
        Some("second")
    );
    tokio::time::sleep(SETTLE).await;
    assert_eq!(f.triggers("db").len(), 2, "{:?}", f.triggers("db"));
}

#[tokio::test]
async fn shutdown_writes_the_triggers_still_in_their_window() {
    // A long window: without the flush at shutdown the trigger would come 30 s later, or never.
    let mut f = Fixture::start("sen-stop", &["--debounce", "30s", "--max-wait", "60s"]).await;
    let uid = f.cluster("db", json!({})).await;
    f.operator_objects("db", "db", &uid).await;
    f.cm()
        .patch(
            "db",
            &Fixture::foreign("kubectl-edit"),
            &Patch::Merge(json!({"data": {"setting": "late"}})),
        )
        .await
        .expect("patch");
    // Let the sentinel see the event, then stop it as Kubernetes would.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(f.triggers("db").is_empty());
    let sentinel = f.sentinel.as_mut().expect("running");
    let status = sentinel.terminate(Duration::from_secs(15));
    assert!(
        status.is_some_and(|s| s.success()),
        "exit {status:?}:\n{}",
        sentinel.log()
    );
    let t = f.nth_trigger("db", 1, Duration::from_secs(5)).await;
    assert_eq!(names(&t), ["ConfigMap/db"]);
}
