//! Hostile input on a real control plane, with the sentinel and the operator running as their
//! ServiceAccounts: unknown fields, huge objects, a trigger ID that is not a UUID, a trigger
//! storm, objects moved out of the selector, an owner or a namespace deleted under them.
//! Whatever happens, both programs stay up, nothing panics, and drift is still reverted.

use std::time::{Duration, Instant};

use k8s_openapi::api::{
    apps::v1::StatefulSet,
    core::v1::{ConfigMap, Namespace, Service},
    events::v1::Event,
};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams},
};
use kube_sentinel::{
    contract::{INSTANCE_LABEL, MANAGED_BY_LABEL},
    operator::crd::StatefulCluster,
};
use serde_json::{Value, json};

use crate::{
    operator::running::{self, Operator},
    support::{self, Logged, control_plane, eventually, metric_sample},
};

const WAIT: Duration = Duration::from_secs(60);

/// The operator, a kubelet stand-in and the sentinel for one namespace, as their accounts.
struct Programs {
    operator: Operator,
    sentinel: Logged,
    _kubelet: running::Kubelet,
}

impl Programs {
    async fn start(admin: &Client, ns: &str) -> Self {
        let operator = running::start_operator(ns, &[]).await;
        let kubelet = running::Kubelet::start(admin.clone(), ns);
        let sentinel = running::start_sentinel(ns, &[]).await;
        Self {
            operator,
            sentinel: Logged(sentinel, "sentinel"),
            _kubelet: kubelet,
        }
    }

    /// Both still running, neither panicked; their resident memory in MiB.
    fn healthy(&mut self) -> (u64, u64) {
        for (name, program) in [
            ("operator", &mut self.operator.program),
            ("sentinel", &mut self.sentinel.0),
        ] {
            let log = program.log();
            assert!(!log.contains("panicked"), "{name} panicked:\n{log}");
            assert!(program.is_running(), "{name} exited:\n{log}");
        }
        (
            rss_mib(self.operator.program.pid()),
            rss_mib(self.sentinel.0.pid()),
        )
    }
}

/// Resident memory of process `pid` in MiB (0 if unknown).
fn rss_mib(pid: Option<u32>) -> u64 {
    let Some(pid) = pid else { return 0 };
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb / 1024)
}

fn foreign(manager: &str) -> PatchParams {
    PatchParams {
        field_manager: Some(manager.into()),
        ..Default::default()
    }
}

/// Scales StatefulSet `name` to 1 as a person would; how long until it is back at 3.
async fn drift_and_time_revert(admin: &Client, ns: &str, name: &str) -> Duration {
    let sts: Api<StatefulSet> = Api::namespaced(admin.clone(), ns);
    let started = Instant::now();
    sts.patch(
        name,
        &foreign("kubectl-scale"),
        &Patch::Merge(json!({"spec": {"replicas": 1}})),
    )
    .await
    .expect("drift");
    eventually(WAIT, &format!("{name} reverted to 3 replicas"), || async {
        let s = sts.get(name).await.ok()?;
        (s.spec.replicas == Some(3)).then_some(())
    })
    .await;
    started.elapsed()
}

/// A cluster named `name`, Ready.
async fn ready_cluster(admin: &Client, ns: &str, name: &str) {
    running::create(admin, ns, &running::cluster(name, json!({}))).await;
    running::wait_ready(admin, ns, name).await;
}

#[tokio::test]
async fn unknown_fields_are_pruned_and_drift_on_huge_objects_is_still_reverted() {
    let cp = control_plane();
    let admin = cp.admin().await;
    let ns = cp.namespace("hostile-huge").await;
    let mut programs = Programs::start(&admin, &ns).await;
    let resource = support::install_crd(&admin).await;

    // Unknown fields, at the top of the spec and deep in it: the structural schema prunes them.
    let mut cr = serde_json::to_value(running::cluster("db", json!({}))).expect("json");
    cr["spec"]["bogus"] = json!({"nested": [1, 2, 3]});
    cr["spec"]["tls"]["bogus"] = json!("x");
    cr["bogus"] = json!(true);
    let dynamic: Api<DynamicObject> = Api::namespaced_with(admin.clone(), &ns, &resource);
    let object: DynamicObject = serde_json::from_value(cr).expect("object");
    let stored = dynamic
        .create(&PostParams::default(), &object)
        .await
        .expect("created with unknown fields");
    let spec = &stored.data["spec"];
    assert_eq!(spec.get("bogus"), None, "spec.bogus kept: {spec}");
    assert_eq!(
        spec["tls"].get("bogus"),
        None,
        "spec.tls.bogus kept: {spec}"
    );
    assert_eq!(stored.data.get("bogus"), None, "bogus kept");
    running::wait_ready(&admin, &ns, "db").await;

    // 200 KiB of annotation on the StatefulSet (the API server allows 256 KiB in all).
    let sts: Api<StatefulSet> = Api::namespaced(admin.clone(), &ns);
    let huge = "a".repeat(200 * 1024);
    sts.patch(
        "db",
        &foreign("kubectl-annotate"),
        &Patch::Merge(json!({"metadata": {"annotations": {"example.com/huge": huge}}})),
    )
    .await
    .expect("huge annotation");
    let with_annotation = drift_and_time_revert(&admin, &ns, "db").await;

    // The managed ConfigMap near its 1 MiB limit, and a managed key changed with it.
    let cms: Api<ConfigMap> = Api::namespaced(admin.clone(), &ns);
    let blob = "b".repeat(1000 * 1024);
    let started = Instant::now();
    cms.patch(
        "db-config",
        &foreign("kubectl-edit"),
        &Patch::Merge(json!({"data": {"blob": blob, "mode": "rogue"}})),
    )
    .await
    .expect("near-limit ConfigMap");
    let cm = eventually(WAIT, "db-config mode reverted", || async {
        let cm = cms.get("db-config").await.ok()?;
        (cm.data.as_ref()?.get("mode")? == "primary").then_some(cm)
    })
    .await;
    let config_map = started.elapsed();
    let blob_kept = cm.data.as_ref().is_some_and(|d| d.contains_key("blob"));
    let (operator_mib, sentinel_mib) = programs.healthy();
    eprintln!(
        "huge objects: StatefulSet with a 200 KiB annotation reverted in {with_annotation:?}; \
         1000 KiB ConfigMap's key reverted in {config_map:?} (foreign key kept: {blob_kept}); \
         RSS operator {operator_mib} MiB, sentinel {sentinel_mib} MiB"
    );
    assert!(operator_mib < 512 && sentinel_mib < 512, "memory");
}

/// Writes `id` as `db`'s trigger as an admin would (no admission policy applies to it).
async fn admin_trigger(admin: &Client, ns: &str, name: &str, id: &str) {
    let now = jiff::Timestamp::now().to_string();
    let patch = json!({"status": {"sentinel": {
        "triggerID": id, "triggeredAt": now, "detectedAt": now,
        "driftedObjects": [{"kind": "StatefulSet", "name": name, "change": "modified"}],
        "driftedTotal": 1,
    }}});
    Api::<StatefulCluster>::namespaced(admin.clone(), ns)
        .patch_status(name, &foreign("admin"), &Patch::Merge(patch))
        .await
        .expect("admin trigger");
}

fn sentinel_status(cr: &StatefulCluster) -> Value {
    serde_json::to_value(cr.status.as_ref().and_then(|s| s.sentinel.as_ref())).expect("json")
}

#[tokio::test]
async fn a_trigger_id_that_is_not_a_uuid_gets_a_clear_outcome_and_loses_nothing() {
    let cp = control_plane();
    let admin = cp.admin().await;
    let ns = cp.namespace("hostile-id").await;
    let mut programs = Programs::start(&admin, &ns).await;
    ready_cluster(&admin, &ns, "db").await;
    let clusters: Api<StatefulCluster> = Api::namespaced(admin.clone(), &ns);

    // Quotes, a newline and a metric line: what would break a log line, an Event or /metrics.
    let id = format!("not-a-uuid\" }} injected_metric 1\n# {}", "x".repeat(4096));
    admin_trigger(&admin, &ns, "db", &id).await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let cr = clusters.get("db").await.expect("get");
    let status = sentinel_status(&cr);
    let events = Api::<Event>::namespaced(admin.clone(), &ns)
        .list(&ListParams::default())
        .await
        .expect("events");
    let notes: Vec<String> = events
        .items
        .iter()
        .filter(|e| {
            e.note
                .as_deref()
                .is_some_and(|n| n.contains("not-a-uuid") || n.contains("trigger"))
        })
        .map(|e| format!("{:?} {:?}: {:?}", e.type_, e.reason, e.note))
        .collect();
    let log = programs.operator.program.log();
    let log_lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("not-a-uuid"))
        .take(5)
        .collect();
    eprintln!(
        "non-UUID trigger: lastHandledTriggerID {:?}, lastOutcome {:?}\nEvents: {notes:#?}\nlog: {log_lines:#?}",
        status["lastHandledTriggerID"]
            .as_str()
            .map(|s| &s[..s.len().min(40)]),
        status["lastOutcome"],
    );
    // Refused, not acted on: acknowledged `failed` (so it is not pending for ever), a Warning
    // Event, and the ID never written raw into a log line (its newline would forge a line).
    assert_eq!(status["lastHandledTriggerID"].as_str(), Some(id.as_str()));
    assert_eq!(status["lastOutcome"], json!("failed"));
    assert!(
        events
            .items
            .iter()
            .any(|e| e.type_.as_deref() == Some("Warning")
                && e.reason.as_deref() == Some("InvalidTrigger")),
        "no InvalidTrigger Warning Event: {notes:#?}"
    );
    assert!(
        !log.lines().any(|l| l.starts_with("# xxx")),
        "the trigger ID forged a log line"
    );
    assert_eq!(
        metric_sample(
            programs.operator.port,
            "kube_sentinel_operator_invalid_triggers_total"
        )
        .await,
        1
    );
    let metrics = support::http_get(programs.operator.port, "/metrics")
        .await
        .map(|(_, b)| b)
        .unwrap_or_default();
    assert!(
        !metrics.lines().any(|l| l.starts_with("injected_metric")),
        "the trigger ID broke /metrics"
    );
    programs.healthy();

    // Nothing lost: a real drift after it is still detected and reverted.
    let took = drift_and_time_revert(&admin, &ns, "db").await;
    eprintln!("drift after the non-UUID trigger reverted in {took:?}");
    programs.healthy();
}

/// Rewrites `name`'s trigger with fresh UUIDs from `tasks` concurrent admin loops until
/// `stop`; counts the writes the API server accepted.
fn storm(
    admin: &Client,
    ns: &str,
    name: &str,
    tasks: usize,
    stop: &std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> (
    std::sync::Arc<std::sync::atomic::AtomicU64>,
    Vec<tokio::task::JoinHandle<()>>,
) {
    use std::sync::atomic::Ordering;
    let written = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let handles = (0..tasks)
        .map(|_| {
            let (api, name, stop, written) = (
                Api::<StatefulCluster>::namespaced(admin.clone(), ns),
                name.to_string(),
                stop.clone(),
                written.clone(),
            );
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let now = jiff::Timestamp::now().to_string();
                    let patch = json!({"status": {"sentinel": {
                        "triggerID": uuid::Uuid::new_v4().to_string(),
                        "triggeredAt": now, "detectedAt": now,
                        "driftedObjects": [{"kind": "StatefulSet", "name": name, "change": "modified"}],
                    }}});
                    match api
                        .patch_status(&name, &foreign("admin-storm"), &Patch::Merge(patch))
                        .await
                    {
                        Ok(_) => {
                            written.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => eprintln!("storm write refused: {e}"),
                    }
                }
            })
        })
        .collect();
    (written, handles)
}

/// Sets `name`'s `spec.config.mode` (a full reconcile's work, the normal lane); how long until
/// its ConfigMap shows it.
async fn normal_lane_time(admin: &Client, ns: &str, name: &str, mode: &str) -> Duration {
    let started = Instant::now();
    Api::<StatefulCluster>::namespaced(admin.clone(), ns)
        .patch(
            name,
            &foreign("kubectl-edit"),
            &Patch::Merge(json!({"spec": {"config": {"mode": mode}}})),
        )
        .await
        .expect("spec change");
    let cms: Api<ConfigMap> = Api::namespaced(admin.clone(), ns);
    let config = format!("{name}-config");
    eventually(WAIT, &format!("{config} mode {mode}"), || async {
        let cm = cms.get(&config).await.ok()?;
        (cm.data.as_ref()?.get("mode")? == mode).then_some(())
    })
    .await;
    started.elapsed()
}

/// The operator's completed fast-path reconciles.
async fn fast_reconciles(port: u16) -> u64 {
    metric_sample(
        port,
        "kube_sentinel_operator_reconciles_total{path=\"fast\",result=\"ok\"}",
    )
    .await
}

#[tokio::test]
async fn a_trigger_storm_on_one_resource_does_not_hold_up_the_others() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let cp = control_plane();
    let admin = cp.admin().await;
    let ns = cp.namespace("hostile-storm").await;
    let mut programs = Programs::start(&admin, &ns).await;
    ready_cluster(&admin, &ns, "storm").await;
    ready_cluster(&admin, &ns, "calm").await;
    running::settle(programs.operator.port).await;

    let revert_quiet = drift_and_time_revert(&admin, &ns, "calm").await;
    let normal_quiet = normal_lane_time(&admin, &ns, "calm", "replica").await;

    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let fast_before = fast_reconciles(programs.operator.port).await;
    let started = Instant::now();
    let (written, tasks) = storm(&admin, &ns, "storm", 8, &stop);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let revert_storm = drift_and_time_revert(&admin, &ns, "calm").await;
    let normal_storm = normal_lane_time(&admin, &ns, "calm", "primary").await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        let _ = task.await;
    }
    let elapsed = started.elapsed();
    let writes = written.load(Ordering::Relaxed);
    let fast = fast_reconciles(programs.operator.port).await - fast_before;
    let (operator_mib, sentinel_mib) = programs.healthy();
    eprintln!(
        "trigger storm: {writes} trigger writes in {elapsed:?} ({:.0}/s) on one resource, \
         {fast} fast-path reconciles in all; other resource's drift reverted in \
         {revert_quiet:?} quiet, {revert_storm:?} in the storm; its spec change applied in \
         {normal_quiet:?} quiet, {normal_storm:?} in the storm; RSS operator {operator_mib} \
         MiB, sentinel {sentinel_mib} MiB",
        writes as f64 / elapsed.as_secs_f64()
    );
    assert!(writes > 100, "the storm wrote {writes} triggers");
    // Generous: the storm's writes load the same 2 cores as the API server and both programs.
    assert!(revert_storm < Duration::from_secs(30), "{revert_storm:?}");
    assert!(normal_storm < Duration::from_secs(30), "{normal_storm:?}");
    // The storm's triggers coalesce: far fewer fast-path runs than triggers written.
    assert!(
        fast < writes / 2 + 10,
        "{fast} fast runs for {writes} triggers"
    );
}

/// Whether `name`'s StatefulSet is at 3 replicas within `within`.
async fn reverted_within(admin: &Client, ns: &str, name: &str, within: Duration) -> bool {
    let sts: Api<StatefulSet> = Api::namespaced(admin.clone(), ns);
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if sts.get(name).await.ok().and_then(|s| s.spec.replicas) == Some(3) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

#[tokio::test]
async fn objects_moved_out_of_the_selector_or_orphaned_are_handled_without_a_panic() {
    let cp = control_plane();
    let admin = cp.admin().await;
    let ns = cp.namespace("hostile-label").await;
    let mut programs = Programs::start(&admin, &ns).await;
    ready_cluster(&admin, &ns, "db").await;
    let (sts, svcs): (Api<StatefulSet>, Api<Service>) = (
        Api::namespaced(admin.clone(), &ns),
        Api::namespaced(admin.clone(), &ns),
    );
    // The Service leaves the sentinel's selector; the StatefulSet loses its owner reference.
    svcs.patch(
        "db",
        &foreign("kubectl-label"),
        &Patch::Merge(json!({"metadata": {"labels": {MANAGED_BY_LABEL: "someone-else"}}})),
    )
    .await
    .expect("relabel");
    sts.patch(
        "db",
        &foreign("kubectl-edit"),
        &Patch::Merge(json!({"metadata": {"ownerReferences": null}})),
    )
    .await
    .expect("orphan");
    tokio::time::sleep(Duration::from_secs(10)).await;
    let label = svcs
        .get("db")
        .await
        .expect("svc")
        .labels()
        .get(MANAGED_BY_LABEL)
        .cloned();
    let owners = sts.get("db").await.expect("sts").owner_references().len();
    let reverted = reverted_within(&admin, &ns, "db", Duration::ZERO).await;
    eprintln!("after 10 s: Service label {label:?}, StatefulSet owner references {owners}");
    // Leaving the selector is a deletion to the sentinel: the operator puts the label back.
    assert_eq!(
        label.as_deref(),
        Some(kube_sentinel::contract::MANAGED_BY_VALUE)
    );
    // A drift of the orphaned StatefulSet, then of the relabelled Service.
    let sts_drift = async {
        sts.patch(
            "db",
            &foreign("kubectl-scale"),
            &Patch::Merge(json!({"spec": {"replicas": 1}})),
        )
        .await
        .expect("drift");
        reverted_within(&admin, &ns, "db", Duration::from_secs(30)).await
    }
    .await;
    let after = sts.get("db").await.expect("sts");
    eprintln!(
        "orphaned StatefulSet's drift reverted: {sts_drift} (owner references now {}, instance label {:?}); replicas were 3 before: {reverted}",
        after.owner_references().len(),
        after.labels().get(INSTANCE_LABEL)
    );
    // An object that lost its controller reference is not adopted back (someone may have
    // orphaned it on purpose): the resource is Degraded with NameConflict, its drift stays,
    // and the operator retries with backoff, not in a hot loop.
    assert!(!sts_drift, "the orphan was reverted: update this test");
    let cr = Api::<StatefulCluster>::namespaced(admin.clone(), &ns)
        .get("db")
        .await
        .expect("get");
    let degraded = cr
        .status
        .iter()
        .flat_map(|s| &s.conditions)
        .find(|c| c.type_ == "Degraded");
    assert_eq!(
        degraded.map(|c| (c.status.as_str(), c.reason.as_str())),
        Some(("True", "NameConflict")),
        "{degraded:?}"
    );
    let retries = programs
        .operator
        .program
        .log()
        .lines()
        .filter(|l| l.contains("retrying with backoff"))
        .count();
    eprintln!("orphan: Degraded NameConflict; {retries} retries logged in about 40 s");
    assert!(retries < 60, "{retries} retries: a hot loop");
    programs.healthy();
}

#[tokio::test]
async fn an_owner_deleted_mid_revert_leaves_no_error_loop_and_no_orphan() {
    let cp = control_plane();
    let admin = cp.admin().await;
    let ns = cp.namespace("hostile-owner").await;
    let mut programs = Programs::start(&admin, &ns).await;
    ready_cluster(&admin, &ns, "db").await;
    let sts: Api<StatefulSet> = Api::namespaced(admin.clone(), &ns);
    let errors_before = metric_sample(
        programs.operator.port,
        "controller_runtime_reconcile_errors_total{controller=\"statefulcluster\"}",
    )
    .await;
    sts.patch(
        "db",
        &foreign("kubectl-scale"),
        &Patch::Merge(json!({"spec": {"replicas": 1}})),
    )
    .await
    .expect("drift");
    // Inside the sentinel's window: its trigger, or the operator's revert, meets no owner.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    Api::<StatefulCluster>::namespaced(admin.clone(), &ns)
        .delete("db", &DeleteParams::default())
        .await
        .expect("delete owner");
    let services: Api<Service> = Api::namespaced(admin.clone(), &ns);
    // The deploy manifests' metrics Services are not the resource's.
    let owned = ListParams::default().labels(&format!("{INSTANCE_LABEL}=db"));
    let deleted_at = jiff::Timestamp::now();
    for _ in 0..300 {
        let left = services.list(&owned).await.expect("list").items;
        if sts.get_opt("db").await.expect("get").is_none() && left.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for svc in services.list(&owned).await.expect("list").items {
        let m = &svc.metadata;
        eprintln!(
            "left after the owner's deletion at {deleted_at}: Service {:?} created {:?}, \
             deleting {:?}, finalizers {:?}, owners {:?}, managers {:?}",
            m.name,
            m.creation_timestamp,
            m.deletion_timestamp,
            m.finalizers,
            m.owner_references
                .iter()
                .flatten()
                .map(|o| (&o.kind, &o.uid))
                .collect::<Vec<_>>(),
            m.managed_fields
                .iter()
                .flatten()
                .map(|f| &f.manager)
                .collect::<Vec<_>>(),
        );
    }
    // Long enough for a retry loop or a late revert to show.
    tokio::time::sleep(Duration::from_secs(15)).await;
    let objects = (
        sts.list(&owned).await.expect("list").items.len(),
        Api::<Service>::namespaced(admin.clone(), &ns)
            .list(&owned)
            .await
            .expect("list")
            .items
            .len(),
        Api::<ConfigMap>::namespaced(admin.clone(), &ns)
            .list(&ListParams::default().labels(&format!("{INSTANCE_LABEL}=db")))
            .await
            .expect("list")
            .items
            .len(),
    );
    let errors = metric_sample(
        programs.operator.port,
        "controller_runtime_reconcile_errors_total{controller=\"statefulcluster\"}",
    )
    .await
        - errors_before;
    let log = programs.operator.program.log();
    let late_errors = log
        .lines()
        .filter(|l| l.contains("ERROR") || l.contains(" WARN"))
        .count();
    let sentinel_log = programs.sentinel.0.log();
    let sentinel_warnings = sentinel_log
        .lines()
        .filter(|l| l.contains("ERROR") || l.contains(" WARN"))
        .count();
    eprintln!(
        "owner deleted mid-revert: objects left (StatefulSets, Services, ConfigMaps) {objects:?}; \
         reconcile errors {errors}; operator warning/error lines {late_errors}, sentinel's {sentinel_warnings}"
    );
    assert_eq!(objects, (0, 0, 0), "an orphan was recreated");
    assert!(errors < 5, "{errors} reconcile errors: an error loop");
    assert!(
        late_errors < 10 && sentinel_warnings < 10,
        "an error loop in the logs"
    );
    programs.healthy();
}

/// Both programs watching every namespace of `plane`, as their accounts (manifests in `home`).
async fn cluster_wide(
    plane: &kube_sentinel::testenv::ControlPlane,
    admin: &Client,
    home: &str,
    dir: &std::path::Path,
) -> (Operator, Logged, u16) {
    use kube_sentinel::testenv;
    support::install_crd(admin).await;
    let mut started = Vec::new();
    for (component, account) in [
        ("operator", format!("{home}-operator")),
        ("sentinel", "sentinel".into()),
    ] {
        support::apply_component_manifests(admin, component, home).await;
        let kubeconfig = plane
            .service_account_kubeconfig(home, &account, Duration::from_secs(3600))
            .await
            .expect("kubeconfig");
        let path = dir.join(format!("{component}.kubeconfig"));
        testenv::write_kubeconfig(&kubeconfig, &path).expect("write kubeconfig");
        let port = testenv::free_port().expect("port");
        let addr = format!("127.0.0.1:{port}");
        let program = support::Program::spawn_with(
            component,
            &[component, "--metrics-addr", &addr],
            &path,
            dir,
            &[("POD_NAMESPACE", home)],
        );
        eventually(WAIT, &format!("{component} /readyz"), || async {
            (support::http_ok_body(port, "/readyz").await.as_deref() == Some("ok")).then_some(())
        })
        .await;
        started.push((program, port));
    }
    let (sentinel, sentinel_port) = started.pop().expect("sentinel");
    let (program, port) = started.pop().expect("operator");
    (
        Operator { program, port },
        Logged(sentinel, "sentinel"),
        sentinel_port,
    )
}

#[tokio::test]
async fn a_namespace_deleted_with_everything_in_it_leaves_both_programs_reverting_elsewhere() {
    use kube_sentinel::testenv::{ControlPlaneConfig, PodReadiness};
    let config = ControlPlaneConfig::from_build_script().expect("control-plane binaries");
    let home = "hostile-home";
    let (plane, admin) = support::own_control_plane(config, home).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let (operator, sentinel, _) = cluster_wide(&plane, &admin, home, dir.path()).await;
    let mut programs = Programs {
        operator,
        sentinel,
        _kubelet: PodReadiness::start(admin.clone(), "kept"),
    };
    let namespaces: Api<Namespace> = Api::all(admin.clone());
    for ns in ["kept", "doomed"] {
        namespaces
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": ns}})).expect("ns"),
            )
            .await
            .expect("namespace");
        running::create(&admin, ns, &running::cluster("db", json!({}))).await;
    }
    let _doomed_kubelet = PodReadiness::start(admin.clone(), "doomed");
    running::wait_ready(&admin, "kept", "db").await;
    running::wait_ready(&admin, "doomed", "db").await;
    let before = drift_and_time_revert(&admin, "kept", "db").await;

    // A drift in the doomed namespace, then the namespace deleted with everything in it.
    Api::<StatefulSet>::namespaced(admin.clone(), "doomed")
        .patch(
            "db",
            &foreign("kubectl-scale"),
            &Patch::Merge(json!({"spec": {"replicas": 1}})),
        )
        .await
        .expect("drift");
    namespaces
        .delete("doomed", &DeleteParams::default())
        .await
        .expect("delete namespace");
    let after = drift_and_time_revert(&admin, "kept", "db").await;
    eventually(
        Duration::from_secs(120),
        "namespace doomed gone",
        || async {
            namespaces
                .get_opt("doomed")
                .await
                .ok()?
                .is_none()
                .then_some(())
        },
    )
    .await;
    let recreated = namespaces.get_opt("doomed").await.expect("get").is_some();
    let later = drift_and_time_revert(&admin, "kept", "db").await;
    for port in [programs.operator.port] {
        assert_eq!(
            support::http_ok_body(port, "/healthz").await.as_deref(),
            Some("ok"),
            "healthz"
        );
    }
    let operator_log = programs.operator.program.log();
    let refused = operator_log
        .lines()
        .filter(|l| l.contains("doomed") && (l.contains("ERROR") || l.contains(" WARN")))
        .count();
    eprintln!(
        "namespace deleted: drift elsewhere reverted in {before:?} before, {after:?} while it \
         terminated, {later:?} after; namespace recreated: {recreated}; operator warning/error \
         lines naming it: {refused}"
    );
    assert!(!recreated, "something recreated the deleted namespace");
    assert!(
        refused < 20,
        "an error loop on the deleted namespace:\n{operator_log}"
    );
    programs.healthy();
}
