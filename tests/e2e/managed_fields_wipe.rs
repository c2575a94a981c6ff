//! A client wipes `managedFields` on objects the operator owns (issue 10 item 14): the revert
//! restores the operator's ownership in one fast-path pass, leaves the API server's defaults in
//! place and still removes what the wiping client added.

use std::time::Duration;

use k8s_openapi::{
    api::{apps::v1::StatefulSet, core::v1::Service, events::v1::Event},
    apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry,
};
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube_sentinel::{
    contract::OPERATOR_FIELD_MANAGER,
    operator::crd::{Outcome, StatefulCluster},
};
use serde_json::json;

use crate::{
    operator::running,
    support::{control_plane, eventually, metric_sample},
};

const WAIT: Duration = Duration::from_secs(60);

/// Failed fast-path passes so far, from the operator's metrics.
async fn fast_path_errors(port: u16) -> u64 {
    metric_sample(
        port,
        "kube_sentinel_operator_reconciles_total{path=\"fast\",result=\"error\"}",
    )
    .await
}

/// The entries of `manager` (any operation) outside subresources.
fn entries_of<'a>(entries: &'a [ManagedFieldsEntry], manager: &str) -> Vec<&'a ManagedFieldsEntry> {
    entries
        .iter()
        .filter(|e| e.manager.as_deref() == Some(manager))
        .filter(|e| e.subresource.as_deref().unwrap_or_default().is_empty())
        .collect()
}

/// Whether the operator's Apply entry owns the field at `path` (fieldsV1 keys, e.g. `f:spec`).
fn operator_owns(entries: &[ManagedFieldsEntry], path: &[&str]) -> bool {
    entries_of(entries, OPERATOR_FIELD_MANAGER)
        .iter()
        .filter(|e| e.operation.as_deref() == Some("Apply"))
        .filter_map(|e| e.fields_v1.as_ref())
        .any(|f| path.iter().try_fold(&f.0, |v, k| v.get(*k)).is_some())
}

#[tokio::test]
async fn a_revert_after_a_managed_fields_wipe_restores_ownership_in_one_pass() {
    let cp = control_plane();
    let admin = cp.admin().await;
    let ns = cp.namespace("mf-wipe").await;
    let op = running::start_operator(&ns, &[]).await;
    let _kubelet = running::Kubelet::start(admin.clone(), &ns);
    let sentinel = running::start_sentinel(&ns, &[]).await;
    running::create(&admin, &ns, &running::cluster("db", json!({}))).await;
    running::wait_ready(&admin, &ns, "db").await;
    running::settle(op.port).await;

    let sts: Api<StatefulSet> = Api::namespaced(admin.clone(), &ns);
    let services: Api<Service> = Api::namespaced(admin.clone(), &ns);
    let clusters: Api<StatefulCluster> = Api::namespaced(admin.clone(), &ns);
    let cluster_ip = services
        .get("db")
        .await
        .expect("service")
        .spec
        .and_then(|s| s.cluster_ip);
    let errors_before = fast_path_errors(op.port).await;
    let wiper = PatchParams {
        field_manager: Some("wiper".into()),
        ..Default::default()
    };
    // One request wipes the entries and drifts: a replica count the operator sets and a label
    // it does not.
    sts.patch(
        "db",
        &wiper,
        &Patch::Merge(json!({
            "metadata": {"managedFields": [{}], "labels": {"wiped-by": "someone"}},
            "spec": {"replicas": 1},
        })),
    )
    .await
    .expect("wipe the StatefulSet's managedFields");
    services
        .patch(
            "db",
            &wiper,
            &Patch::Merge(json!({"metadata": {"managedFields": [{}]}})),
        )
        .await
        .expect("wipe the Service's managedFields");

    let handled = eventually(WAIT, "the wipe's trigger acknowledged", || async {
        let c = clusters.get("db").await.ok()?;
        let s = c.status.as_ref()?.sentinel.as_ref()?;
        let id = s.trigger.trigger_id.as_deref()?;
        (s.last_handled_trigger_id.as_deref() == Some(id)).then(|| s.clone())
    })
    .await;
    running::settle(op.port).await;
    let live = sts.get("db").await.expect("sts");
    let service = services.get("db").await.expect("service");
    let managed = live.metadata.managed_fields.clone().unwrap_or_default();
    eprintln!(
        "StatefulSet managedFields after the revert: {}",
        serde_json::to_string_pretty(&managed).expect("json")
    );
    eprintln!(
        "Service managedFields after the revert: {}",
        serde_json::to_string_pretty(&service.metadata.managed_fields).expect("json")
    );
    let errors = fast_path_errors(op.port).await - errors_before;
    let warnings: Vec<String> = Api::<Event>::namespaced(admin.clone(), &ns)
        .list(&ListParams::default())
        .await
        .expect("events")
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("RevertFailed"))
        .filter_map(|e| e.note)
        .collect();
    assert_eq!(
        (errors, warnings.as_slice()),
        (0, &[][..]),
        "the revert took more than one fast-path pass; operator log:\n{}",
        op.program.log()
    );
    assert_eq!(
        handled.last_outcome,
        Some(Outcome::Corrected),
        "{handled:?}"
    );

    // The drift is gone: the operator's value back, the wiping client's label removed.
    let spec = live.spec.clone();
    assert_eq!(spec.replicas, Some(3));
    let labels = live.metadata.labels.clone().unwrap_or_default();
    assert!(!labels.contains_key("wiped-by"), "{labels:?}");
    // The API server's defaults stay as it set them.
    let pod = spec.template.spec.clone().expect("pod spec");
    assert_eq!(pod.termination_grace_period_seconds, Some(30));
    assert_eq!(pod.scheduler_name.as_deref(), Some("default-scheduler"));
    assert_eq!(pod.dns_policy.as_deref(), Some("ClusterFirst"));
    assert_eq!(pod.restart_policy.as_deref(), Some("Always"));
    assert_eq!(
        pod.containers[0].termination_message_path.as_deref(),
        Some("/dev/termination-log")
    );
    assert_eq!(spec.revision_history_limit, Some(10));
    let service_spec = service.spec.clone().expect("service spec");
    assert_eq!(service_spec.cluster_ip, cluster_ip);
    assert_eq!(service_spec.session_affinity.as_deref(), Some("None"));

    // Ownership is the operator's again.
    assert!(
        operator_owns(&managed, &["f:spec", "f:replicas"]),
        "{managed:?}"
    );
    assert!(
        operator_owns(
            &managed,
            &["f:spec", "f:template", "f:spec", "f:containers"]
        ),
        "{managed:?}"
    );
    let service_managed = service.metadata.managed_fields.clone().unwrap_or_default();
    assert!(
        operator_owns(&service_managed, &["f:spec", "f:ports"]),
        "{service_managed:?}"
    );

    // The revert is the operator's own write: no further trigger.
    let id = handled.trigger.trigger_id.clone();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let after = clusters.get("db").await.expect("get");
    let trigger = after
        .status
        .and_then(|s| s.sentinel)
        .and_then(|s| s.trigger.trigger_id);
    assert_eq!(
        trigger,
        id,
        "a trigger after the revert; sentinel log:\n{}",
        sentinel.log()
    );
}
