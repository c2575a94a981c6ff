//! The operator on a real control plane: the StatefulCluster CRD and its admission rules.

use kube::{
    Api,
    api::{DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams},
    discovery,
};
use kube_sentinel::{manifests, operator::crd};
use serde_json::{Value, json};

use crate::support::{self, control_plane};

const SAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/samples");

async fn clusters(client: &kube::Client, ns: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("kube-sentinel.dev", "v1alpha1", "StatefulCluster");
    let (resource, _) = discovery::pinned_kind(client, &gvk)
        .await
        .expect("StatefulCluster served");
    Api::namespaced_with(client.clone(), ns, &resource)
}

/// One way to break a valid object.
type Mutation = Box<dyn Fn(&mut Value)>;

fn sample(name: &str) -> Value {
    let text = std::fs::read_to_string(format!("{SAMPLES}/{name}.yaml")).expect("read sample");
    manifests::parse(&text).expect("parse sample").remove(0)
}

#[tokio::test]
async fn crd_accepts_both_samples_and_rejects_invalid_specs_with_their_messages() {
    let cp = control_plane();
    let client = cp.admin().await;
    let ns = cp.namespace("crd").await;
    support::install_crd(&client).await;
    let applied = manifests::apply_dir(&client, SAMPLES.as_ref(), "e2e", &ns)
        .await
        .expect("both samples are accepted");
    assert_eq!(applied.len(), 2);
    let api = clusters(&client, &ns).await;
    let full = api.get("full").await.expect("full sample stored");
    let typed: crd::StatefulCluster =
        serde_json::from_value(serde_json::to_value(&full).expect("json")).expect("typed");
    assert_eq!(typed.spec.upgrade.strategy, crd::UpgradeStrategy::BlueGreen);
    let minimal = api.get("minimal").await.expect("minimal sample stored");
    assert_eq!(
        minimal.data["spec"]["upgrade"]["strategy"], "Rolling",
        "defaults are filled in at admission"
    );

    let base = sample("full");
    let cases: Vec<(&str, Mutation, &str)> = vec![
        (
            "zero replicas",
            Box::new(|v| v["spec"]["replicas"] = json!(0)),
            "spec.replicas: Invalid value",
        ),
        (
            "image with a tag",
            Box::new(|v| v["spec"]["image"] = json!("registry.example/db:1.2")),
            "spec.image must be a repository without tag or digest",
        ),
        (
            "rotate before validity",
            Box::new(|v| v["spec"]["tls"]["rotateBeforeDays"] = json!(90)),
            "spec.tls.rotateBeforeDays must be less than spec.tls.validityDays",
        ),
        (
            "duplicate port names",
            Box::new(|v| v["spec"]["ports"][1]["name"] = json!("client")),
            "spec.ports names must be unique",
        ),
        (
            "duplicate port numbers",
            Box::new(|v| v["spec"]["ports"][1]["port"] = json!(7000)),
            "spec.ports numbers must be unique",
        ),
        (
            "bad config key",
            Box::new(|v| v["spec"]["config"]["bad key"] = json!("x")),
            "spec.config keys must be valid ConfigMap keys",
        ),
        (
            "unknown strategy",
            Box::new(|v| v["spec"]["upgrade"]["strategy"] = json!("Canary")),
            "Unsupported value: \"Canary\"",
        ),
        (
            "debounce window out of range",
            Box::new(|v| v["spec"]["sentinel"]["debounceWindowSeconds"] = json!(61)),
            "spec.sentinel.debounceWindowSeconds",
        ),
        (
            "backup retention zero",
            Box::new(|v| v["spec"]["backup"]["retention"] = json!(0)),
            "spec.backup.retention",
        ),
        (
            "name too long",
            Box::new(|v| v["metadata"]["name"] = json!("a".repeat(41))),
            "metadata.name must be at most 40 characters",
        ),
    ];
    for (what, mutate, message) in cases {
        let mut obj = base.clone();
        obj["metadata"]["name"] = json!("invalid");
        mutate(&mut obj);
        let obj: DynamicObject = serde_json::from_value(obj).expect("object");
        let err = api
            .create(&PostParams::default(), &obj)
            .await
            .expect_err(what);
        let text = err.to_string();
        assert!(
            text.contains(message),
            "{what}: expected {message:?} in {text}"
        );
    }

    // A transition rule: no upgrade while paused.
    api.patch(
        "minimal",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"paused": true}})),
    )
    .await
    .expect("pause");
    let err = api
        .patch(
            "minimal",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"version": "3.11"}})),
        )
        .await
        .expect_err("no upgrade while paused");
    assert!(
        err.to_string()
            .contains("spec.version cannot change while spec.paused is true"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------------
// The operator as a separate process under its own ServiceAccount and deploy/operator RBAC.

pub(crate) mod running {
    use std::{collections::BTreeMap, time::Duration};

    use futures::StreamExt;
    use k8s_openapi::api::{
        apps::v1::StatefulSet,
        batch::v1::Job,
        core::v1::{ConfigMap, Pod, Secret, Service},
        events::v1::Event,
    };
    use kube::{
        Api, Client, ResourceExt,
        api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
    };
    use kube_sentinel::{
        contract::{INSTANCE_LABEL, SENTINEL_FIELD_MANAGER},
        operator::crd::{Outcome, StatefulCluster, UpgradePhase},
    };
    use serde_json::{Value, json};

    use crate::support::{self, Program, control_plane, eventually};

    const WAIT: Duration = Duration::from_secs(60);

    /// An operator process for one namespace, its metrics port, and its log printed when a test
    /// fails.
    pub struct Operator {
        pub program: Program,
        pub port: u16,
    }

    impl Drop for Operator {
        fn drop(&mut self) {
            if std::thread::panicking() {
                eprintln!("---- operator log ----\n{}", self.program.log());
            }
        }
    }

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port")
    }

    /// Installs the CRD and the operator's RBAC in `ns` (once per namespace), then starts the
    /// operator as its ServiceAccount.
    pub async fn start_operator(ns: &str, extra: &[&str]) -> Operator {
        let cp = control_plane();
        let admin = cp.admin().await;
        support::install_crd(&admin).await;
        support::apply_component_manifests(&admin, "operator", ns).await;
        let kubeconfig = cp
            .service_account_kubeconfig_file(ns, &format!("{ns}-operator"))
            .await;
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let mut args = vec![
            "operator",
            "--namespace",
            ns,
            "--metrics-addr",
            &addr,
            "--latency-log-interval",
            "5s",
        ];
        args.extend_from_slice(extra);
        let program = Program::spawn("operator", &args, &kubeconfig);
        let op = Operator { program, port };
        eventually(WAIT, "operator /readyz", || async {
            (http_get(op.port, "/readyz").await.as_deref() == Some("ok")).then_some(())
        })
        .await;
        op
    }

    /// Starts the sentinel for `ns` as its ServiceAccount (its manifests applied), with
    /// `extra` flags, and waits until it is ready.
    pub async fn start_sentinel(ns: &str, extra: &[&str]) -> Program {
        start_sentinel_on_port(ns, extra).await.0
    }

    /// [`start_sentinel`], and its metrics port.
    pub async fn start_sentinel_on_port(ns: &str, extra: &[&str]) -> (Program, u16) {
        let cp = control_plane();
        support::apply_component_manifests(&cp.admin().await, "sentinel", ns).await;
        let kubeconfig = cp.service_account_kubeconfig_file(ns, "sentinel").await;
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let mut args = vec!["sentinel", "--namespace", ns, "--metrics-addr", &addr];
        args.extend_from_slice(extra);
        let sentinel = Program::spawn("sentinel", &args, &kubeconfig);
        eventually(WAIT, "sentinel /readyz", || async {
            (http_get(port, "/readyz").await.as_deref() == Some("ok")).then_some(())
        })
        .await;
        (sentinel, port)
    }

    /// The body of `GET path` on the operator's metrics port, trimmed, if it answers 200.
    pub use crate::support::http_ok_body as http_get;

    /// Marks every pod of a namespace Running and Ready, as a kubelet would, until dropped.
    pub use kube_sentinel::testenv::PodReadiness as Kubelet;

    pub fn cluster(name: &str, extra: Value) -> StatefulCluster {
        let mut spec = json!({
            "replicas": 3,
            "image": "registry.k8s.io/pause",
            "version": "3.9",
            "config": {"mode": "primary", "cache.size": "64Mi"},
            "ports": [{"name": "client", "port": 7000}, {"name": "peer", "port": 7001}],
            "tls": {"enabled": true, "validityDays": 30, "rotateBeforeDays": 10},
        });
        if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
            for (k, v) in extra {
                spec.insert(k.clone(), v.clone());
            }
        }
        serde_json::from_value(json!({
            "apiVersion": "kube-sentinel.dev/v1alpha1",
            "kind": "StatefulCluster",
            "metadata": {"name": name},
            "spec": spec,
        }))
        .expect("cluster")
    }

    pub async fn create(client: &Client, ns: &str, cr: &StatefulCluster) -> StatefulCluster {
        Api::<StatefulCluster>::namespaced(client.clone(), ns)
            .create(&PostParams::default(), cr)
            .await
            .expect("create StatefulCluster")
    }

    pub async fn wait_ready(client: &Client, ns: &str, name: &str) -> StatefulCluster {
        let api: Api<StatefulCluster> = Api::namespaced(client.clone(), ns);
        eventually(WAIT, "StatefulCluster Ready", || async {
            let cr = api.get(name).await.ok()?;
            let status = cr.status.as_ref()?;
            let ready = status
                .conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            (ready && status.observed_generation == cr.metadata.generation).then_some(cr)
        })
        .await
    }

    /// Writes a trigger as the sentinel would; returns its ID.
    pub async fn trigger(
        client: &Client,
        ns: &str,
        name: &str,
        drifted: &[(&str, &str, &str)],
    ) -> String {
        let id = uuid::Uuid::new_v4().to_string();
        let now = jiff::Timestamp::now().to_string();
        let objects: Vec<Value> = drifted
            .iter()
            .map(|(kind, name, change)| json!({"kind": kind, "name": name, "change": change}))
            .collect();
        let patch = json!({"status": {"sentinel": {
            "triggerID": id, "triggeredAt": now, "detectedAt": now,
            "driftedObjects": objects, "driftedTotal": drifted.len(),
        }}});
        Api::<StatefulCluster>::namespaced(client.clone(), ns)
            .patch_status(
                name,
                &PatchParams {
                    field_manager: Some(SENTINEL_FIELD_MANAGER.into()),
                    ..Default::default()
                },
                &Patch::Merge(patch),
            )
            .await
            .expect("write trigger");
        id
    }

    /// Waits until the operator acknowledged trigger `id`; returns the resource then.
    pub async fn handled(client: &Client, ns: &str, name: &str, id: &str) -> StatefulCluster {
        let api: Api<StatefulCluster> = Api::namespaced(client.clone(), ns);
        eventually(WAIT, "trigger acknowledged", || async {
            let cr = api.get(name).await.ok()?;
            let s = cr.status.as_ref()?.sentinel.as_ref()?;
            (s.last_handled_trigger_id.as_deref() == Some(id)).then_some(cr)
        })
        .await
    }

    fn edit() -> PatchParams {
        PatchParams {
            field_manager: Some("kubectl-edit".into()),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn creates_every_owned_object_with_owner_references_and_reports_ready() {
        let cp = control_plane();
        let ns = cp.namespace("op-create").await;
        let client = cp.admin().await;
        let _op = start_operator(&ns, &[]).await;
        let _kubelet = Kubelet::start(client.clone(), &ns);
        let cr = cluster(
            "db",
            json!({"backup": {"intervalMinutes": 60, "retention": 2}}),
        );
        let created = create(&client, &ns, &cr).await;
        let ready = wait_ready(&client, &ns, "db").await;
        let status = ready.status.clone().expect("status");
        assert_eq!(status.current_version.as_deref(), Some("3.9"));
        assert_eq!(status.ready_replicas, Some(3));
        for t in ["Progressing", "Degraded"] {
            let c = status
                .conditions
                .iter()
                .find(|c| c.type_ == t)
                .expect("condition");
            assert_eq!(c.status, "False", "{t}: {c:?}");
        }
        let uid = created.metadata.uid.clone().expect("uid");
        let owned = |meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
            let owner = &meta.owner_references.as_ref().expect("ownerReferences")[0];
            assert_eq!(
                (owner.uid.as_str(), owner.controller),
                (uid.as_str(), Some(true)),
                "{:?}",
                meta.name
            );
            assert_eq!(meta.labels.as_ref().expect("labels")[INSTANCE_LABEL], "db");
            assert_eq!(
                meta.labels.as_ref().expect("labels")["app.kubernetes.io/managed-by"],
                "kube-sentinel-operator"
            );
        };
        owned(
            &Api::<StatefulSet>::namespaced(client.clone(), &ns)
                .get("db")
                .await
                .expect("sts")
                .metadata,
        );
        for svc in ["db", "db-headless"] {
            owned(
                &Api::<Service>::namespaced(client.clone(), &ns)
                    .get(svc)
                    .await
                    .expect("svc")
                    .metadata,
            );
        }
        let cm = Api::<ConfigMap>::namespaced(client.clone(), &ns)
            .get("db-config")
            .await
            .expect("cm");
        owned(&cm.metadata);
        assert_eq!(cm.data.expect("data")["mode"], "primary");
        for secret in ["db-ca", "db-tls"] {
            owned(
                &Api::<Secret>::namespaced(client.clone(), &ns)
                    .get(secret)
                    .await
                    .expect("secret")
                    .metadata,
            );
        }
        let jobs = Api::<Job>::namespaced(client.clone(), &ns)
            .list(&ListParams::default())
            .await
            .expect("jobs");
        assert_eq!(jobs.items.len(), 1, "one backup Job per interval");
        owned(&jobs.items[0].metadata);
        assert_eq!(
            status.backup.and_then(|b| b.last_job),
            jobs.items[0].metadata.name
        );
        assert_eq!(status.certificate.map(|c| c.issued), Some(1));
    }

    /// One kind of drift: what a person does, the objects the sentinel would name, and a check
    /// that the object is back as desired.
    /// Completed full reconciles, from the operator's metrics.
    pub async fn full_reconciles(port: u16) -> u64 {
        crate::support::metric_sample(
            port,
            "kube_sentinel_operator_reconciles_total{path=\"full\",result=\"ok\"}",
        )
        .await
    }

    /// Waits until no full reconcile completed for 3 s: no follow-up pass can race a drift.
    pub async fn settle(port: u16) {
        let mut last = full_reconciles(port).await;
        loop {
            tokio::time::sleep(Duration::from_secs(3)).await;
            let now = full_reconciles(port).await;
            if now == last {
                return;
            }
            last = now;
        }
    }

    /// Writes a trigger naming `objects`, waits for its acknowledgement (which must be a
    /// correction) and for the full reconcile the fast path queues after it.
    async fn drift_and_revert(
        op: &Operator,
        client: &Client,
        ns: &str,
        what: &str,
        objects: &[(&str, &str, &str)],
    ) -> (StatefulCluster, Duration) {
        let full_before = full_reconciles(op.port).await;
        let started = std::time::Instant::now();
        let id = trigger(client, ns, "db", objects).await;
        let cr = handled(client, ns, "db", &id).await;
        let took = started.elapsed();
        eventually(WAIT, "the follow-up full reconcile", || async {
            (full_reconciles(op.port).await > full_before).then_some(())
        })
        .await;
        let s = cr
            .status
            .as_ref()
            .and_then(|s| s.sentinel.clone())
            .expect("sentinel status");
        assert_eq!(s.last_outcome, Some(Outcome::Corrected), "{what}: {s:?}");
        for (kind, name, _) in objects {
            assert!(
                s.reverted_objects
                    .iter()
                    .any(|o| o.kind == *kind && o.name == *name),
                "{what}: {kind} {name} not in revertedObjects {:?}",
                s.reverted_objects
            );
        }
        eprintln!("{what}: trigger written -> acknowledged in {took:?}");
        (cr, took)
    }

    #[tokio::test]
    async fn fast_path_reverts_every_kind_of_drift_and_skips_upgrade_and_backup() {
        let cp = control_plane();
        let ns = cp.namespace("op-drift").await;
        let client = cp.admin().await;
        // The operator's own Secret watch would repair the Secret too; keep it out of this test.
        let op = start_operator(&ns, &["--secret-debounce", "60s"]).await;
        let _kubelet = Kubelet::start(client.clone(), &ns);
        create(
            &client,
            &ns,
            &cluster(
                "db",
                json!({"backup": {"intervalMinutes": 60, "retention": 2}}),
            ),
        )
        .await;
        wait_ready(&client, &ns, "db").await;
        settle(op.port).await;
        let sts: Api<StatefulSet> = Api::namespaced(client.clone(), &ns);
        let svc: Api<Service> = Api::namespaced(client.clone(), &ns);
        let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
        let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
        let mut latencies = Vec::new();

        // Replicas.
        sts.patch(
            "db",
            &edit(),
            &Patch::Merge(json!({"spec": {"replicas": 1}})),
        )
        .await
        .expect("scale");
        latencies.push(
            drift_and_revert(
                &op,
                &client,
                &ns,
                "replicas",
                &[("StatefulSet", "db", "modified")],
            )
            .await
            .1,
        );
        assert_eq!(sts.get("db").await.expect("sts").spec.replicas, Some(3));

        // Container image.
        let image = json!({"spec": {"template": {"spec": {"containers": [{"name": "member", "image": "evil/image:1"}]}}}});
        sts.patch("db", &edit(), &Patch::Strategic(image))
            .await
            .expect("image");
        latencies.push(
            drift_and_revert(
                &op,
                &client,
                &ns,
                "image",
                &[("StatefulSet", "db", "modified")],
            )
            .await
            .1,
        );
        let live = sts.get("db").await.expect("sts");
        let containers = live.spec.template.spec.expect("pod").containers;
        assert_eq!(containers.len(), 1);
        assert_eq!(
            containers[0].image.as_deref(),
            Some("registry.k8s.io/pause:3.9")
        );

        // A label and an annotation added by hand: a force-apply alone would keep them.
        svc.patch(
            "db",
            &edit(),
            &Patch::Merge(
                json!({"metadata": {"labels": {"hand": "made"}, "annotations": {"note": "x"}}}),
            ),
        )
        .await
        .expect("label");
        latencies.push(
            drift_and_revert(&op, &client, &ns, "label", &[("Service", "db", "modified")])
                .await
                .1,
        );
        let live = svc.get("db").await.expect("svc");
        assert!(!live.labels().contains_key("hand"), "{:?}", live.labels());
        assert!(
            !live.annotations().contains_key("note"),
            "{:?}",
            live.annotations()
        );

        // A ConfigMap key changed and one added.
        cms.patch(
            "db-config",
            &edit(),
            &Patch::Merge(json!({"data": {"mode": "replica", "injected": "1"}})),
        )
        .await
        .expect("cm");
        latencies.push(
            drift_and_revert(
                &op,
                &client,
                &ns,
                "configmap",
                &[("ConfigMap", "db-config", "modified")],
            )
            .await
            .1,
        );
        let data = cms.get("db-config").await.expect("cm").data.expect("data");
        assert_eq!(
            data,
            BTreeMap::from([
                ("cache.size".to_string(), "64Mi".to_string()),
                ("mode".to_string(), "primary".to_string())
            ])
        );

        // A Service deleted.
        svc.delete("db-headless", &DeleteParams::default())
            .await
            .expect("delete");
        latencies.push(
            drift_and_revert(
                &op,
                &client,
                &ns,
                "service deleted",
                &[("Service", "db-headless", "deleted")],
            )
            .await
            .1,
        );
        let back = svc.get("db-headless").await.expect("re-created");
        assert_eq!(back.spec.expect("spec").cluster_ip.as_deref(), Some("None"));

        // The TLS Secret edited.
        let before = secrets
            .get("db-tls")
            .await
            .expect("secret")
            .data
            .expect("data");
        secrets
            .patch(
                "db-tls",
                &edit(),
                &Patch::Merge(json!({"data": {"tls.crt": "ZWRpdGVk"}})),
            )
            .await
            .expect("edit secret");
        latencies.push(
            drift_and_revert(
                &op,
                &client,
                &ns,
                "tls secret",
                &[("Secret", "db-tls", "modified")],
            )
            .await
            .1,
        );
        let after = secrets
            .get("db-tls")
            .await
            .expect("secret")
            .data
            .expect("data");
        assert_ne!(after["tls.crt"], before["tls.crt"], "a fresh certificate");
        assert_ne!(after["tls.crt"].0, b"edited".to_vec());
        assert_eq!(
            after["ca.crt"], before["ca.crt"],
            "the CA was fine and is kept"
        );

        // Every revert was announced, and the fast path never ran Upgrade or Backup.
        let events: Api<Event> = Api::namespaced(client.clone(), &ns);
        let reverted = events
            .list(&ListParams::default())
            .await
            .expect("events")
            .items;
        let notes: Vec<String> = reverted
            .iter()
            .filter(|e| e.reason.as_deref() == Some("DriftReverted"))
            .filter_map(|e| e.note.clone())
            .collect();
        for object in [
            "StatefulSet db",
            "Service db",
            "ConfigMap db-config",
            "Service db-headless",
            "Secret db-tls",
        ] {
            assert!(
                notes.iter().any(|n| n.contains(object)),
                "no DriftReverted naming {object}: {notes:?}"
            );
        }
        let metrics = super::running::http_get(op.port, "/metrics")
            .await
            .expect("metrics");
        assert!(
            metrics.contains(
                "kube_sentinel_operator_manager_runs_total{manager=\"infra\",path=\"fast\"}"
            ),
            "{metrics}"
        );
        assert!(
            !metrics.contains("manager=\"upgrade\",path=\"fast\""),
            "the fast path ran UpgradeManager"
        );
        assert!(
            !metrics.contains("manager=\"backup\",path=\"fast\""),
            "the fast path ran BackupManager"
        );
        assert!(
            metrics.contains(
                "kube_sentinel_operator_revert_latency_seconds_count{since=\"triggered\"} 6"
            ),
            "{metrics}"
        );
        let table = super::running::http_get(op.port, "/debug/latency")
            .await
            .expect("debug latency");
        assert!(
            table.contains(&format!("# {ns}/db since=detected")),
            "{table}"
        );
        let headers: Vec<&str> = table.lines().filter(|l| l.starts_with('#')).collect();
        eprintln!("operator /debug/latency:\n{}", headers.join("\n"));
        let cr = Api::<StatefulCluster>::namespaced(client.clone(), &ns)
            .get("db")
            .await
            .expect("cr");
        let s = cr.status.expect("status");
        assert!(s.sentinel.expect("sentinel").corrections >= 6);
        assert_eq!(s.backup.map(|b| b.last_job.is_some()), Some(true));
        latencies.sort();
        eprintln!(
            "trigger written -> acknowledged (seen by a 100 ms poll): min {:?} median {:?} max {:?}",
            latencies[0],
            latencies[latencies.len() / 2],
            latencies[latencies.len() - 1]
        );
    }

    #[tokio::test]
    async fn foreign_edit_of_the_tls_secret_is_repaired_by_the_operators_own_watch() {
        let cp = control_plane();
        let ns = cp.namespace("op-secret").await;
        let client = cp.admin().await;
        let op = start_operator(&ns, &[]).await;
        let _kubelet = Kubelet::start(client.clone(), &ns);
        create(&client, &ns, &cluster("db", json!({}))).await;
        wait_ready(&client, &ns, "db").await;
        settle(op.port).await;
        let fast_adds = || async {
            let text = http_get(op.port, "/metrics").await.unwrap_or_default();
            text.lines()
                .find_map(|l| {
                    l.strip_prefix(
                        "workqueue_adds_total{controller=\"statefulcluster\",name=\"statefulcluster-fast\"} ",
                    )
                })
                .and_then(|n| n.trim().parse::<u64>().ok())
                .unwrap_or(0)
        };
        let fast_before = fast_adds().await;
        let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
        let before = secrets
            .get("db-tls")
            .await
            .expect("secret")
            .data
            .expect("data");
        let started = std::time::Instant::now();
        // No trigger: the sentinel cannot see Secrets.
        secrets
            .patch("db-tls", &edit(), &Patch::Merge(json!({"metadata": {"labels": {"hand": "made"}}, "data": {"tls.key": "ZWRpdGVk"}})))
            .await
            .expect("edit secret");
        let repaired = eventually(WAIT, "TLS Secret repaired", || async {
            let s = secrets.get("db-tls").await.ok()?;
            let data = s.data.clone()?;
            (data["tls.key"].0 != b"edited".to_vec() && !s.labels().contains_key("hand"))
                .then_some(data)
        })
        .await;
        eprintln!(
            "foreign Secret edit -> repaired (seen by a 100 ms poll) in {:?}",
            started.elapsed()
        );
        assert_ne!(
            repaired["tls.crt"], before["tls.crt"],
            "a new key needs a new certificate"
        );
        assert_eq!(repaired["ca.crt"], before["ca.crt"]);
        assert!(
            fast_adds().await > fast_before,
            "the repair went through the fast lane"
        );
        let events: Api<Event> = Api::namespaced(client.clone(), &ns);
        eventually(WAIT, "a DriftReverted Event for the Secret", || async {
            let list = events.list(&ListParams::default()).await.ok()?;
            list.items
                .iter()
                .any(|e| {
                    e.reason.as_deref() == Some("DriftReverted")
                        && e.note.as_deref().is_some_and(|n| {
                            n.contains("Secret db-tls") && n.contains("Secret watch")
                        })
                })
                .then_some(())
        })
        .await;
        // The operator's own repair is not drift to its own watch (the removal of the foreign label
        // leaves the operator's mark in managedFields): no second pass, and the Secret is at rest.
        let after = fast_adds().await;
        let rv = secrets
            .get("db-tls")
            .await
            .expect("secret")
            .metadata
            .resource_version;
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(
            fast_adds().await,
            after,
            "the operator's own write was taken for drift"
        );
        assert_eq!(
            secrets
                .get("db-tls")
                .await
                .expect("secret")
                .metadata
                .resource_version,
            rv,
            "the Secret keeps changing"
        );
    }

    #[tokio::test]
    async fn paused_resource_is_acknowledged_not_reverted() {
        let cp = control_plane();
        let ns = cp.namespace("op-paused").await;
        let client = cp.admin().await;
        let _op = start_operator(&ns, &[]).await;
        let _kubelet = Kubelet::start(client.clone(), &ns);
        create(&client, &ns, &cluster("db", json!({}))).await;
        wait_ready(&client, &ns, "db").await;
        let api: Api<StatefulCluster> = Api::namespaced(client.clone(), &ns);
        api.patch(
            "db",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"paused": true}})),
        )
        .await
        .expect("pause");
        let sts: Api<StatefulSet> = Api::namespaced(client.clone(), &ns);
        sts.patch(
            "db",
            &edit(),
            &Patch::Merge(json!({"spec": {"replicas": 1}})),
        )
        .await
        .expect("scale");
        let id = trigger(&client, &ns, "db", &[("StatefulSet", "db", "modified")]).await;
        let cr = handled(&client, &ns, "db", &id).await;
        assert_eq!(
            cr.status
                .and_then(|s| s.sentinel)
                .and_then(|s| s.last_outcome),
            Some(Outcome::Noop)
        );
        // Give a (wrong) full reconcile time to run, then check nothing was reverted.
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(sts.get("db").await.expect("sts").spec.replicas, Some(1));
        let events = Api::<Event>::namespaced(client.clone(), &ns)
            .list(&ListParams::default())
            .await
            .expect("events");
        assert!(
            events
                .items
                .iter()
                .any(|e| e.reason.as_deref() == Some("DriftIgnored"))
        );
        // Unpaused, the next pass restores it.
        api.patch(
            "db",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"paused": false}})),
        )
        .await
        .expect("unpause");
        eventually(WAIT, "replicas restored after unpausing", || async {
            (sts.get("db").await.ok()?.spec.replicas == Some(3)).then_some(())
        })
        .await;
    }

    #[tokio::test]
    async fn trigger_written_while_the_operator_was_down_is_handled_after_start() {
        let cp = control_plane();
        let ns = cp.namespace("op-down").await;
        let client = cp.admin().await;
        let mut op = start_operator(&ns, &[]).await;
        let _kubelet = Kubelet::start(client.clone(), &ns);
        create(&client, &ns, &cluster("db", json!({}))).await;
        wait_ready(&client, &ns, "db").await;
        op.program.kill();
        let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
        cms.patch(
            "db-config",
            &edit(),
            &Patch::Merge(json!({"data": {"mode": "replica"}})),
        )
        .await
        .expect("cm");
        let id = trigger(
            &client,
            &ns,
            "db",
            &[("ConfigMap", "db-config", "modified")],
        )
        .await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let api: Api<StatefulCluster> = Api::namespaced(client.clone(), &ns);
        let pending = api.get("db").await.expect("cr");
        assert_eq!(
            pending.pending_trigger(),
            Some(id.as_str()),
            "nobody handled it while the operator was down"
        );
        let _op = start_operator(&ns, &[]).await;
        let cr = handled(&client, &ns, "db", &id).await;
        assert_eq!(
            cr.status
                .and_then(|s| s.sentinel)
                .and_then(|s| s.last_outcome),
            Some(Outcome::Corrected)
        );
        assert_eq!(
            cms.get("db-config").await.expect("cm").data.expect("data")["mode"],
            "primary"
        );
    }

    #[tokio::test]
    async fn trigger_is_served_before_500_queued_normal_reconciles() {
        let cp = control_plane();
        let ns = cp.namespace("op-lanes").await;
        let client = cp.admin().await;
        support::install_crd(&client).await;
        let api: Api<StatefulCluster> = Api::namespaced(client.clone(), &ns);
        // 500 paused resources: each full reconcile is real work (a read and a status write)
        // but creates nothing, so the queue, not the cluster, is what is measured.
        let names: Vec<String> = (0..500).map(|i| format!("bulk-{i:03}")).collect();
        futures::stream::iter(names.iter())
            .for_each_concurrent(16, |name| {
                let api = api.clone();
                async move {
                    api.create(
                        &PostParams::default(),
                        &cluster(name, json!({"paused": true, "tls": null})),
                    )
                    .await
                    .expect("create");
                }
            })
            .await;
        create(&client, &ns, &cluster("target", json!({"tls": null}))).await;
        let _op = start_operator(&ns, &["--workers", "1", "--fast-workers", "0"]).await;
        let reconciled = || async {
            api.list(&ListParams::default())
                .await
                .expect("list")
                .items
                .iter()
                .filter(|c| {
                    c.name_any().starts_with("bulk-")
                        && c.status
                            .as_ref()
                            .is_some_and(|s| s.observed_generation.is_some())
                })
                .count()
        };
        // The normal lane is busy with the initial list...
        eventually(WAIT, "normal reconciles under way", || async {
            (reconciled().await > 0).then_some(())
        })
        .await;
        let id = trigger(&client, &ns, "target", &[("Service", "target", "deleted")]).await;
        handled(&client, &ns, "target", &id).await;
        let done = reconciled().await;
        eprintln!("trigger handled after {done} of 500 queued normal reconciles");
        assert!(
            done < 400,
            "the trigger waited for the normal lane: {done} of 500 were reconciled first"
        );
        assert!(
            Api::<Service>::namespaced(client.clone(), &ns)
                .get_opt("target")
                .await
                .expect("get")
                .is_some()
        );
    }

    async fn upgrade_completes(strategy: &str) -> StatefulCluster {
        let cp = control_plane();
        let ns = cp
            .namespace(&format!("op-{}", strategy.to_lowercase()))
            .await;
        let client = cp.admin().await;
        let _op = start_operator(&ns, &[]).await;
        let _kubelet = Kubelet::start(client.clone(), &ns);
        create(
            &client,
            &ns,
            &cluster(
                "db",
                json!({"upgrade": {"strategy": strategy}, "tls": null}),
            ),
        )
        .await;
        wait_ready(&client, &ns, "db").await;
        let api: Api<StatefulCluster> = Api::namespaced(client.clone(), &ns);
        api.patch(
            "db",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"version": "3.10"}})),
        )
        .await
        .expect("upgrade");
        let phases = std::cell::RefCell::new(Vec::new());
        let (api, seen) = (&api, &phases);
        let done = eventually(
            Duration::from_secs(120),
            "upgrade completed",
            || async move {
                let cr = api.get("db").await.ok()?;
                let status = cr.status.clone()?;
                let upgrade = status.upgrade.clone()?;
                let mut seen = seen.borrow_mut();
                if seen.last() != Some(&upgrade.phase) {
                    seen.push(upgrade.phase);
                }
                (status.current_version.as_deref() == Some("3.10")
                    && upgrade.phase == UpgradePhase::Idle)
                    .then_some(cr)
            },
        )
        .await;
        eprintln!("{strategy} phases seen: {:?}", phases.borrow());
        assert_eq!(
            done.status
                .as_ref()
                .and_then(|s| s.upgrade.as_ref())
                .map(|u| u.completed),
            Some(1)
        );
        // The serving set runs the new version on every member once the upgrade is recorded
        // complete (a retired blue/green set's pods go with garbage collection, later).
        let serving = done
            .status
            .as_ref()
            .and_then(|s| s.upgrade.as_ref())
            .and_then(|u| u.active_set.clone())
            .expect("active set");
        let pods = Api::<Pod>::namespaced(client.clone(), &ns)
            .list(&ListParams::default().labels(&format!(
                "{INSTANCE_LABEL}=db,kube-sentinel.dev/set={serving}"
            )))
            .await
            .expect("pods");
        let images: Vec<_> = pods
            .items
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter_map(|p| p.spec.as_ref()?.containers[0].image.clone())
            .collect();
        let sets = Api::<StatefulSet>::namespaced(client.clone(), &ns)
            .list(&ListParams::default())
            .await
            .expect("sets");
        let pod_view: Vec<_> = pods
            .items
            .iter()
            .map(|p| {
                (
                    p.name_any(),
                    p.labels().get("controller-revision-hash").cloned(),
                    p.metadata.deletion_timestamp.clone(),
                )
            })
            .collect();
        assert!(
            images.len() == 3 && images.iter().all(|i| i == "registry.k8s.io/pause:3.10"),
            "{images:?} {pod_view:?} {:?}",
            sets.items
                .iter()
                .map(|s| (s.name_any(), s.metadata.generation, s.status.clone()))
                .collect::<Vec<_>>()
        );
        wait_ready(&client, &ns, "db").await
    }

    #[tokio::test]
    async fn rolling_upgrade_completes_when_pods_report_ready() {
        let cr = upgrade_completes("Rolling").await;
        let upgrade = cr.status.and_then(|s| s.upgrade).expect("upgrade");
        assert_eq!(upgrade.active_set.as_deref(), Some("db"));
    }

    #[tokio::test]
    async fn blue_green_upgrade_switches_services_and_retires_the_old_set() {
        let cr = upgrade_completes("BlueGreen").await;
        let ns = cr.namespace().expect("ns");
        let client = control_plane().admin().await;
        let upgrade = cr.status.and_then(|s| s.upgrade).expect("upgrade");
        assert_eq!(upgrade.active_set.as_deref(), Some("db-b"));
        let svc = Api::<Service>::namespaced(client.clone(), &ns)
            .get("db")
            .await
            .expect("svc");
        assert_eq!(
            svc.spec.and_then(|s| s.selector).expect("selector")["kube-sentinel.dev/set"],
            "db-b"
        );
        eventually(WAIT, "old StatefulSet retired", || async {
            Api::<StatefulSet>::namespaced(client.clone(), &ns)
                .get_opt("db")
                .await
                .ok()?
                .is_none()
                .then_some(())
        })
        .await;
    }
}

/// Leader election and graceful shutdown, with two operators run in this process.
mod election {
    use std::time::Duration;

    use clap::Parser;
    use k8s_openapi::api::coordination::v1::Lease;
    use kube::Api;
    use kube_sentinel::operator::{self, OperatorArgs};
    use serde_json::json;

    use super::running::{self, http_get};
    use crate::support::{self, control_plane, eventually};

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: OperatorArgs,
    }

    /// `kube_sentinel_operator_leader` on an operator's metrics port: "1" leading, "0" not.
    async fn leader_metric(port: u16) -> Option<String> {
        let text = http_get(port, "/metrics").await?;
        text.lines()
            .find_map(|l| l.strip_prefix("kube_sentinel_operator_leader "))
            .map(|v| v.trim().to_string())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn standby_takes_over_after_the_leader_shuts_down_gracefully() {
        let cp = control_plane();
        let ns = cp.namespace("op-leader").await;
        let client = cp.admin().await;
        support::install_crd(&client).await;
        support::apply_component_manifests(&client, "operator", &ns).await;
        let kubeconfig = cp
            .service_account_kubeconfig_file(&ns, &format!("{ns}-operator"))
            .await;
        let start = |identity: &'static str| {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .expect("free port");
            let addr = format!("127.0.0.1:{port}");
            let kubeconfig = kubeconfig.to_string_lossy().to_string();
            let cli = Cli::parse_from([
                "operator",
                "--kubeconfig",
                &kubeconfig,
                "--namespace",
                &ns,
                "--metrics-addr",
                &addr,
                "--leader-elect",
                "--lease-namespace",
                &ns,
                "--lease-name",
                "kube-sentinel-operator",
                "--lease-duration",
                "4s",
                "--lease-grace",
                "1s",
                "--identity",
                identity,
            ]);
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let task = tokio::spawn(operator::run(cli.args, async move {
                let _ = stopped.await;
            }));
            (port, stop, task)
        };
        let holder = || async {
            Api::<Lease>::namespaced(client.clone(), &ns)
                .get_opt("kube-sentinel-operator")
                .await
                .ok()
                .flatten()
                .and_then(|l| l.spec?.holder_identity)
        };

        let (a_port, a_stop, a_task) = start("first");
        eventually(
            Duration::from_secs(30),
            "the first instance leads and is ready",
            || async { (http_get(a_port, "/readyz").await.as_deref() == Some("ok")).then_some(()) },
        )
        .await;
        // Ready does not mean leading (a standby is Ready too): wait for the Lease.
        eventually(
            Duration::from_secs(30),
            "the first instance holds the Lease",
            || async { (holder().await.as_deref() == Some("first")).then_some(()) },
        )
        .await;
        let (b_port, b_stop, b_task) = start("second");
        running::create(&client, &ns, &running::cluster("db", json!({"tls": null}))).await;
        let clusters: Api<kube_sentinel::operator::crd::StatefulCluster> =
            Api::namespaced(client.clone(), &ns);
        eventually(Duration::from_secs(30), "the leader reconciles", || async {
            clusters
                .get("db")
                .await
                .ok()?
                .status?
                .observed_generation
                .map(|_| ())
        })
        .await;
        // Longer than a Lease duration: the standby does not lead, and it is Ready (its watches
        // are warm; leadership is a metric, not readiness, so a rolling update completes).
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(holder().await.as_deref(), Some("first"));
        assert_eq!(
            http_get(b_port, "/readyz").await.as_deref(),
            Some("ok"),
            "a standby is Ready"
        );
        assert_eq!(leader_metric(b_port).await.as_deref(), Some("0"));

        let _ = a_stop.send(());
        let stopped = tokio::time::timeout(Duration::from_secs(20), a_task)
            .await
            .expect("the leader stops within its shutdown timeout")
            .expect("task");
        assert!(stopped.is_ok(), "graceful shutdown: {stopped:?}");
        assert_ne!(
            holder().await.as_deref(),
            Some("first"),
            "the Lease was released"
        );
        eventually(
            Duration::from_secs(15),
            "the standby takes over",
            || async { (leader_metric(b_port).await.as_deref() == Some("1")).then_some(()) },
        )
        .await;
        let id = running::trigger(&client, &ns, "db", &[("Service", "db", "deleted")]).await;
        running::handled(&client, &ns, "db", &id).await;
        assert_eq!(holder().await.as_deref(), Some("second"));
        let _ = b_stop.send(());
        let _ = tokio::time::timeout(Duration::from_secs(20), b_task).await;
    }
}
