//! The optional lock on managed objects (`deploy/overlays/lock`), on a control plane of the
//! test's own (its policy applies to every namespace): in Warn+Audit mode a foreign edit is
//! admitted with a warning and reverted by the sentinel and the operator; in Deny mode it is
//! refused with the policy's message, while the operator's applies, the controller manager's
//! status writes and the garbage collector's deletes are admitted.

use std::time::Duration;

use k8s_openapi::api::{
    apps::v1::StatefulSet,
    core::v1::{ConfigMap, Service},
};
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube_sentinel::operator::crd::StatefulCluster;
use serde_json::json;

use crate::{
    liveness::{ready, start_programs},
    operator::running::{Kubelet, cluster, create, wait_ready},
    support::{self, eventually, kubectl_output, run_kubectl},
};

const WAIT: Duration = Duration::from_secs(60);
const NS: &str = "kube-sentinel";
const LOCK_MESSAGE: &str =
    "kube-sentinel lock: statefulsets db is managed by kube-sentinel-operator";

async fn replicas(sts: &Api<StatefulSet>) -> Option<i32> {
    sts.get_opt("db").await.ok()??.spec.replicas
}

#[tokio::test]
async fn the_lock_warns_or_denies_foreign_edits_and_admits_the_operator_and_the_controllers() {
    let installed = support::install_on_own_plane(NS, "overlays/lock").await;
    let (plane, admin, kubeconfig) = (&installed.plane, &installed.admin, &installed.kubeconfig);
    // The managed cluster's pods (a bare pause image) share the programs' namespace here,
    // which enforces the "restricted" profile they do not meet.
    run_kubectl(
        kubeconfig,
        &[
            "label",
            "namespace",
            NS,
            "--overwrite",
            "pod-security.kubernetes.io/enforce=privileged",
        ],
        None,
    );
    let (_operator, op_port, _sentinel, sentinel_port) =
        start_programs(plane, NS, installed.dir.path()).await;
    eventually(WAIT, "both programs Ready", || async {
        (ready(op_port).await && ready(sentinel_port).await).then_some(())
    })
    .await;
    let _kubelet = Kubelet::start(admin.clone(), NS);
    create(admin, NS, &cluster("db", json!({}))).await;
    // Ready needs the StatefulSet's status, which the controller manager writes: admitted.
    wait_ready(admin, NS, "db").await;
    let sts: Api<StatefulSet> = Api::namespaced(admin.clone(), NS);
    let patch = |replicas: i32| {
        kubectl_output(
            kubeconfig,
            &[
                "patch",
                "statefulset",
                "db",
                "-n",
                NS,
                "--type",
                "merge",
                "--field-manager",
                "kubectl-patch",
                "-p",
                &json!({"spec": {"replicas": replicas}}).to_string(),
            ],
            None,
        )
    };

    // Warn and Audit (the default): admitted with the policy's warning, then reverted.
    let warned = eventually(WAIT, "a foreign patch admitted with a warning", || async {
        let out = patch(1);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        (out.status.success() && stderr.contains(LOCK_MESSAGE)).then_some(stderr)
    })
    .await;
    assert!(warned.contains("Warning:"), "{warned}");
    eventually(WAIT, "the warned edit reverted", || async {
        (replicas(&sts).await == Some(3)).then_some(())
    })
    .await;

    // Deny: the same patch is refused with the policy's message.
    run_kubectl(
        kubeconfig,
        &[
            "patch",
            "validatingadmissionpolicybinding",
            "kube-sentinel-lock",
            "--type",
            "merge",
            "-p",
            r#"{"spec":{"validationActions":["Deny"]}}"#,
        ],
        None,
    );
    let denied = eventually(WAIT, "a foreign patch denied", || async {
        let out = patch(2);
        (!out.status.success()).then(|| String::from_utf8_lossy(&out.stderr).into_owned())
    })
    .await;
    assert!(denied.contains(LOCK_MESSAGE), "{denied}");
    assert!(
        denied.contains("ValidatingAdmissionPolicy 'kube-sentinel-lock'"),
        "{denied}"
    );
    eventually(WAIT, "the spec's replicas kept", || async {
        (replicas(&sts).await == Some(3)).then_some(())
    })
    .await;

    // The operator's apply is admitted: a spec change reaches the StatefulSet.
    let clusters: Api<StatefulCluster> = Api::namespaced(admin.clone(), NS);
    let edit = PatchParams {
        field_manager: Some("e2e".into()),
        ..Default::default()
    };
    clusters
        .patch("db", &edit, &Patch::Merge(json!({"spec": {"replicas": 2}})))
        .await
        .expect("spec change");
    eventually(WAIT, "the operator's apply admitted", || async {
        (replicas(&sts).await == Some(2)).then_some(())
    })
    .await;

    // The garbage collector's deletes are admitted: the resource's objects go with it.
    clusters
        .delete("db", &DeleteParams::default())
        .await
        .expect("delete the resource");
    let services: Api<Service> = Api::namespaced(admin.clone(), NS);
    let maps: Api<ConfigMap> = Api::namespaced(admin.clone(), NS);
    eventually(WAIT, "the managed objects garbage-collected", || async {
        let gone = sts.get_opt("db").await.ok()?.is_none()
            && services.get_opt("db").await.ok()?.is_none()
            && maps.get_opt("db-config").await.ok()?.is_none();
        gone.then_some(())
    })
    .await;
}
