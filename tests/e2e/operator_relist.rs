//! The operator's own Secret watch across a relist: a Secret deleted while the watch was down
//! (no `Delete` event ever comes) is still restored, on a control plane of the test's own.
//!
//! The API server runs without its watch cache, so a watch resumes from etcd for as long as
//! etcd keeps its revision. With the operator stopped (SIGSTOP) its watches end (a short
//! `--watch-timeout`), a Secret is deleted, and etcd is compacted between the Secret watch's
//! revision and the StatefulCluster watch's: on SIGCONT the Secret watch gets 410 Gone and
//! lists again, while the StatefulCluster watch resumes (a relist of it would queue a full
//! reconcile, which re-creates the Secret anyway and hides the hole).

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, ListParams, ObjectMeta, Patch, PatchParams},
};
use kube_sentinel::{
    contract::{MANAGED_BY_LABEL, MANAGED_BY_VALUE},
    operator::crd::StatefulCluster,
    testenv::{ControlPlane, ControlPlaneConfig},
};
use serde_json::json;

use crate::{
    operator::running::{Kubelet, cluster, create, http_get, settle, wait_ready},
    support::{self, Logged, Stopped, eventually},
};

const WAIT: Duration = Duration::from_secs(60);
/// The operator's `--watch-timeout`: its watches end this long after they open.
const WATCH_TIMEOUT: Duration = Duration::from_secs(2);

/// Runs of the CertManager on the fast lane (the repair of Secrets named by Secret drift).
const CERT_FAST_RUNS: &str =
    "kube_sentinel_operator_manager_runs_total{manager=\"cert\",path=\"fast\"}";

/// The etcd revision an object was written at.
fn revision(meta: &ObjectMeta) -> u64 {
    meta.resource_version
        .as_deref()
        .and_then(|rv| rv.parse().ok())
        .expect("an etcd revision as resourceVersion")
}

/// The operator of `ns` on `plane` with a short `--watch-timeout`, once Ready; its metrics
/// port.
async fn start_operator(plane: &ControlPlane, ns: &str, dir: &std::path::Path) -> (Logged, u16) {
    let admin = plane.admin_client().await.expect("admin");
    support::install_crd(&admin).await;
    let timeout = format!("{}s", WATCH_TIMEOUT.as_secs());
    let (program, port) =
        support::spawn_operator(plane, ns, dir, &["--watch-timeout", &timeout]).await;
    let operator = Logged(program, "operator");
    eventually(WAIT, "operator /readyz", || async {
        (http_get(port, "/readyz").await.as_deref() == Some("ok")).then_some(())
    })
    .await;
    (operator, port)
}

#[tokio::test]
async fn a_secret_deleted_while_the_secret_watch_was_down_is_restored_after_the_relist() {
    let mut config = ControlPlaneConfig::from_build_script().expect("control-plane binaries");
    config.apiserver_flags = vec!["--watch-cache=false".into()];
    let ns = "relist";
    let (plane, admin) = support::own_control_plane(config, ns).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let (operator, port) = start_operator(&plane, ns, dir.path()).await;
    let _kubelet = Kubelet::start(admin.clone(), ns);
    create(&admin, ns, &cluster("db", json!({}))).await;
    wait_ready(&admin, ns, "db").await;
    settle(port).await;

    // The Secret watch's revision: its last event, the newest of the operator's Secrets.
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), ns);
    let selector = ListParams::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}"));
    let listed = secrets
        .list_metadata(&selector)
        .await
        .expect("list Secrets");
    let names: Vec<String> = listed.items.iter().map(|s| s.name_any()).collect();
    assert!(names.contains(&"db-tls".to_string()), "{names:?}");
    let secret_revision = listed
        .items
        .iter()
        .map(|s| revision(&s.metadata))
        .max()
        .expect("the operator's Secrets");
    // Two edits the operator's StatefulCluster watch sees and nothing acts on (metadata
    // only): its revision moves past the Secret watch's by two.
    let clusters: Api<StatefulCluster> = Api::namespaced(admin.clone(), ns);
    let mut cluster_revision = 0;
    for touch in ["1", "2"] {
        let patch = Patch::Merge(json!({"metadata": {"annotations": {"e2e/touch": touch}}}));
        let cr = clusters
            .patch("db", &PatchParams::default(), &patch)
            .await
            .expect("touch the StatefulCluster");
        cluster_revision = revision(&cr.metadata);
    }
    assert!(
        cluster_revision >= secret_revision + 2,
        "{cluster_revision} vs {secret_revision}"
    );
    // Past a watch timeout: the StatefulCluster watch has had the edits.
    tokio::time::sleep(WATCH_TIMEOUT * 2).await;

    let fast_runs = support::metric_sample(port, CERT_FAST_RUNS).await;
    let stopped = Stopped::stop(operator.0.pid().expect("operator pid"));
    // Both watches end on the server while the operator cannot reopen them.
    tokio::time::sleep(WATCH_TIMEOUT * 2).await;
    secrets
        .delete("db-tls", &DeleteParams::default())
        .await
        .expect("delete db-tls");
    // The Secret watch's revision compacted away, the StatefulCluster watch's kept.
    plane
        .compact_etcd(cluster_revision)
        .await
        .expect("compact etcd");
    drop(stopped);

    eventually(WAIT, "db-tls re-created after the relist", || async {
        secrets.get_opt("db-tls").await.ok().flatten().map(drop)
    })
    .await;
    // Restored as Secret drift on the fast lane, not by a full reconcile after a relist of
    // the StatefulCluster watch.
    assert!(
        support::metric_sample(port, CERT_FAST_RUNS).await > fast_runs,
        "the cert manager ran on the fast lane"
    );
    drop(operator);
    plane.stop().await;
}
