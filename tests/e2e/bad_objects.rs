//! One bad object must not stop the operator: integer bounds in the CRD, and an undecodable
//! StatefulCluster reported and skipped.

use std::{path::Path, process::Command, time::Duration};

use k8s_openapi::api::{core::v1::Service, events::v1::Event};
use kube::{
    Api, Client, ResourceExt,
    api::{ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams},
};
use kube_sentinel::{
    events::{MAX_NOTE_BYTES, OPERATOR_REPORTING_CONTROLLER},
    operator::crd::{Outcome, StatefulCluster},
    testenv::{ControlPlane, ControlPlaneConfig},
};
use serde_json::{Value, json};

use crate::{
    operator::running::{Operator, cluster, create, handled, trigger},
    support::{self, control_plane, eventually},
};

const WAIT: Duration = Duration::from_secs(60);

/// The operator's count of custom resources it could not decode.
const UNDECODABLE: &str = "kube_sentinel_operator_undecodable_resources_total";

#[tokio::test]
async fn kubectl_apply_of_the_crd_prints_no_warnings() {
    let cp = control_plane();
    // The API server warns about a schema only where it changes: create the CRD under a group
    // of its own (dry run), so every field is new.
    let yaml =
        std::fs::read_to_string(format!("{}/deploy/crd/statefulcluster.yaml", support::REPO))
            .expect("read CRD");
    let path = cp.workdir().join("crd-warnings.yaml");
    std::fs::write(
        &path,
        yaml.replace("kube-sentinel.dev", "warnings.kube-sentinel.dev"),
    )
    .expect("write CRD copy");
    let output = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(cp.admin_kubeconfig_path())
        .args(["create", "--dry-run=server", "-f"])
        .arg(&path)
        .output()
        .expect("run kubectl");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "kubectl apply failed: {stderr}");
    assert!(
        !stderr.contains("Warning"),
        "kubectl apply of the CRD warned:\n{stderr}"
    );
}

/// The CRD the crate generates with every integer range removed: what a cluster held before
/// the schema bounded its integers.
fn loosened_crd() -> String {
    fn strip_ranges(value: &mut Value) {
        match value {
            Value::Object(map) => {
                if map.get("type").and_then(Value::as_str) == Some("integer") {
                    map.remove("maximum");
                    map.remove("minimum");
                }
                map.values_mut().for_each(strip_ranges);
            }
            Value::Array(items) => items.iter_mut().for_each(strip_ranges),
            _ => {}
        }
    }
    let mut crd = serde_json::to_value(kube_sentinel::operator::crd::crd()).expect("CRD as JSON");
    strip_ranges(&mut crd);
    crd.to_string()
}

/// The StatefulCluster resource, once the API server serves it.
async fn served(client: &Client) -> ApiResource {
    let gvk = GroupVersionKind::gvk(
        kube_sentinel::contract::DEFAULT_GROUP,
        kube_sentinel::contract::DEFAULT_VERSION,
        kube_sentinel::contract::DEFAULT_KIND,
    );
    eventually(WAIT, "StatefulCluster served", || async {
        let (resource, _) = kube::discovery::pinned_kind(client, &gvk).await.ok()?;
        Some(resource)
    })
    .await
}

/// The status write that stores a value beyond `status.certificate.issued`'s `u32`.
fn too_many_certificates() -> Patch<Value> {
    Patch::Merge(json!({"status": {"certificate": {"issued": 4_294_967_296_u64}}}))
}

/// The operator of `ns` on `plane`, as its ServiceAccount (RBAC from `deploy/operator`).
async fn start_operator(plane: &ControlPlane, ns: &str, dir: &Path) -> Operator {
    let (program, port) = support::spawn_operator(plane, ns, dir, &[]).await;
    Operator { program, port }
}

/// Waits until a full reconcile acted on `name`'s current generation.
async fn reconciled(client: &Client, ns: &str, name: &str) {
    let crs: Api<StatefulCluster> = Api::namespaced(client.clone(), ns);
    eventually(WAIT, &format!("a full reconcile of {name}"), || async {
        let cr = crs.get(name).await.ok()?;
        (cr.status?.observed_generation == cr.metadata.generation).then_some(())
    })
    .await;
}

#[tokio::test]
async fn an_undecodable_resource_is_reported_and_skipped_while_the_others_are_reconciled() {
    let config = ControlPlaneConfig::from_build_script().expect("control-plane binaries");
    let ns = "bad-objects";
    let (plane, admin) = support::own_control_plane(config, ns).await;
    let dir = tempfile::tempdir().expect("temp dir");

    // A schema without integer ranges lets a status writer store 2^32 in a u32 field.
    kube_sentinel::manifests::apply(&admin, &loosened_crd(), "e2e", ns)
        .await
        .expect("apply the loosened CRD");
    let resource = served(&admin).await;
    for name in ["bad", "good"] {
        create(&admin, ns, &cluster(name, json!({"replicas": 1}))).await;
    }
    let dynamic: Api<DynamicObject> = Api::namespaced_with(admin.clone(), ns, &resource);
    let stored = dynamic
        .patch_status("bad", &PatchParams::default(), &too_many_certificates())
        .await
        .expect("the loosened schema stores 2^32");
    assert_eq!(
        stored.data["status"]["certificate"]["issued"],
        json!(4_294_967_296_u64)
    );

    // Tightened: new writes are refused, the stored object keeps its value.
    support::install_crd(&admin).await;
    let dry_run = PatchParams {
        dry_run: true,
        ..Default::default()
    };
    eventually(WAIT, "the tightened schema refusing 2^32", || async {
        let refused = dynamic
            .patch_status("good", &dry_run, &too_many_certificates())
            .await;
        refused.is_err().then_some(())
    })
    .await;

    let op = start_operator(&plane, ns, dir.path()).await;
    reconciled(&admin, ns, "good").await;
    eventually(WAIT, "operator /readyz", || async {
        (support::http_ok_body(op.port, "/readyz").await.as_deref() == Some("ok")).then_some(())
    })
    .await;

    // Drift on the good resource is reverted.
    let services: Api<Service> = Api::namespaced(admin.clone(), ns);
    let edit = PatchParams {
        field_manager: Some("kubectl-edit".into()),
        ..Default::default()
    };
    services
        .patch(
            "good",
            &edit,
            &Patch::Merge(json!({"metadata": {"labels": {"hand": "made"}}})),
        )
        .await
        .expect("drift the Service");
    let id = trigger(&admin, ns, "good", &[("Service", "good", "modified")]).await;
    let acknowledged = handled(&admin, ns, "good", &id).await;
    let outcome = acknowledged
        .status
        .and_then(|s| s.sentinel)
        .and_then(|s| s.last_outcome);
    assert_eq!(outcome, Some(Outcome::Corrected));
    let live = services.get("good").await.expect("Service good");
    assert!(!live.labels().contains_key("hand"), "{:?}", live.labels());

    // The bad resource is reported: a Warning Event on it and the counter, once.
    let events: Api<Event> = Api::namespaced(admin.clone(), ns);
    let event = eventually(WAIT, "an Undecodable Event on bad", || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        list.items.into_iter().find(|e| {
            e.reason.as_deref() == Some("Undecodable")
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("bad")
        })
    })
    .await;
    assert_eq!(event.type_.as_deref(), Some("Warning"));
    assert_eq!(
        event.reporting_controller.as_deref(),
        Some(OPERATOR_REPORTING_CONTROLLER)
    );
    let note = event.note.unwrap_or_default();
    assert!(note.contains("4294967296"), "{note}");
    assert!(note.len() <= MAX_NOTE_BYTES, "{}", note.len());
    let undecodable = support::metric_sample(op.port, UNDECODABLE).await;
    assert_eq!(undecodable, 1, "one report for one resourceVersion");

    // Repaired, it is reconciled like any other.
    dynamic
        .patch_status(
            "bad",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"certificate": {"issued": 1}}})),
        )
        .await
        .expect("repair bad's status");
    reconciled(&admin, ns, "bad").await;
    assert_eq!(support::metric_sample(op.port, UNDECODABLE).await, 1);
    drop(op);
    plane.stop().await;
}
