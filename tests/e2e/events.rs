//! Events follow the conventions, read back from the real API server: each program reports
//! under its own namespaced controller name (`kube-sentinel.dev/sentinel`,
//! `kube-sentinel.dev/operator`), and a note longer than the API server's 1 KiB is cut on a
//! character boundary instead of losing the Event.

use std::time::Duration;

use k8s_openapi::api::{core::v1::ConfigMap, events::v1::Event};
use kube::{
    Api,
    api::{ListParams, Patch, PatchParams, PostParams},
};
use kube_sentinel::contract::{INSTANCE_LABEL, MANAGED_BY_LABEL, MANAGED_BY_VALUE};
use serde_json::{Value, json};

use crate::{
    operator::running::{Kubelet, cluster, create, start_operator, trigger, wait_ready},
    support::{apply_component_manifests, control_plane, eventually, install_crd},
};

const WAIT: Duration = Duration::from_secs(60);

/// The API server's limit on `note`.
const MAX_NOTE: usize = 1024;

pub(crate) async fn events_with_reason(api: &Api<Event>, reason: &str) -> Vec<Event> {
    api.list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default()
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some(reason))
        .collect()
}

#[tokio::test]
async fn the_operator_reports_as_kube_sentinel_dev_operator() {
    let cp = control_plane();
    let ns = cp.namespace("ev-op").await;
    let _op = start_operator(&ns, &[]).await;
    let client = cp.admin().await;
    let _kubelet = Kubelet::start(client.clone(), &ns);
    create(&client, &ns, &cluster("db", json!({}))).await;
    wait_ready(&client, &ns, "db").await;
    trigger(
        &client,
        &ns,
        "db",
        &[("ConfigMap", "db-config", "modified")],
    )
    .await;
    let events: Api<Event> = Api::namespaced(client, &ns);
    let event = eventually(WAIT, "the operator's NoDriftFound Event", || async {
        events_with_reason(&events, "NoDriftFound").await.pop()
    })
    .await;
    assert_eq!(
        event.reporting_controller.as_deref(),
        Some("kube-sentinel.dev/operator")
    );
    assert_eq!(event.type_.as_deref(), Some("Normal"));
}

/// A namespace with the sentinel's manifests and a StatefulCluster `db`; returns the
/// namespace and an admin client.
async fn sentinel_namespace(prefix: &str) -> (String, kube::Client) {
    let cp = control_plane();
    let admin = cp.admin().await;
    let resource = install_crd(&admin).await;
    let ns = cp.namespace(prefix).await;
    apply_component_manifests(&admin, "sentinel", &ns).await;
    let clusters: Api<kube::api::DynamicObject> =
        Api::namespaced_with(admin.clone(), &ns, &resource);
    let text = std::fs::read_to_string(format!(
        "{}/deploy/samples/minimal.yaml",
        env!("CARGO_MANIFEST_DIR")
    ))
    .expect("sample");
    let mut sample = kube_sentinel::manifests::parse(&text)
        .expect("parse")
        .remove(0);
    sample["metadata"]["name"] = json!("db");
    clusters
        .create(
            &PostParams::default(),
            &serde_json::from_value(sample).expect("object"),
        )
        .await
        .expect("create cluster");
    (ns, admin)
}

/// Creates managed ConfigMaps `names` owned by `db` (by the instance label).
async fn managed_configmaps(admin: &kube::Client, ns: &str, names: &[String]) {
    let configmaps: Api<ConfigMap> = Api::namespaced(admin.clone(), ns);
    for name in names {
        let cm: ConfigMap = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {
                MANAGED_BY_LABEL: MANAGED_BY_VALUE, INSTANCE_LABEL: "db"
            }},
            "data": {"k": "v"}
        }))
        .expect("configmap");
        configmaps
            .create(&PostParams::default(), &cm)
            .await
            .expect("create configmap");
    }
}

/// Edits every ConfigMap of `names` as someone else: drift.
async fn drift(admin: &kube::Client, ns: &str, names: &[String]) {
    let configmaps: Api<ConfigMap> = Api::namespaced(admin.clone(), ns);
    let edit = PatchParams {
        field_manager: Some("kubectl-edit".into()),
        ..Default::default()
    };
    for name in names {
        configmaps
            .patch(
                name,
                &edit,
                &Patch::Merge(json!({"data": {"k": "drifted"}})),
            )
            .await
            .expect("drift");
    }
}

/// Sixteen managed ConfigMaps with long names drift at once: the sentinel's `DriftDetected`
/// note names them all (over 3 KiB), so it must be cut to be accepted.
#[tokio::test]
async fn the_sentinel_reports_as_kube_sentinel_dev_sentinel_with_a_note_cut_to_1_kib() {
    let (ns, admin) = sentinel_namespace("ev-sen").await;
    let names: Vec<String> = (0..16)
        .map(|i| format!("db-{i:02}-{}", "x".repeat(240)))
        .collect();
    managed_configmaps(&admin, &ns, &names).await;
    let sentinel =
        crate::operator::running::start_sentinel(&ns, &["--debounce", "1s", "--jitter", "0s"])
            .await;
    drift(&admin, &ns, &names).await;
    let events: Api<Event> = Api::namespaced(admin, &ns);
    let event = eventually(WAIT, "the sentinel's DriftDetected Event", || async {
        events_with_reason(&events, "DriftDetected")
            .await
            .into_iter()
            .find(|e| {
                e.note
                    .as_deref()
                    .is_some_and(|n| n.contains("16 object(s)"))
            })
    });
    let event = tokio::time::timeout(WAIT * 2, event)
        .await
        .unwrap_or_else(|_| panic!("no DriftDetected Event; sentinel log:\n{}", sentinel.log()));
    assert_eq!(
        event.reporting_controller.as_deref(),
        Some("kube-sentinel.dev/sentinel")
    );
    let note = event.note.expect("note");
    assert!(note.len() <= MAX_NOTE, "{} bytes", note.len());
    assert!(
        note.len() > MAX_NOTE - 8,
        "cut near the limit, not far below: {note}"
    );
    assert!(note.ends_with('…'), "the cut is marked: {note}");
}

/// An admin's policy refuses the sentinel's trigger writes: the failure is a Warning Event on
/// the owner, with the API server's reason.
#[tokio::test]
async fn a_trigger_that_cannot_be_written_is_a_warning_event() {
    let (ns, admin) = sentinel_namespace("ev-fail").await;
    let policy = format!("{ns}-refuse-triggers");
    let refusal = json!([
        {
            "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
            "metadata": {"name": policy},
            "spec": {
                "failurePolicy": "Fail",
                "matchConstraints": {"resourceRules": [{
                    "apiGroups": ["kube-sentinel.dev"], "apiVersions": ["*"],
                    "resources": ["statefulclusters/status"], "operations": ["UPDATE"]
                }]},
                "matchConditions": [{"name": "sentinel", "expression":
                    format!("request.userInfo.username == 'system:serviceaccount:{ns}:sentinel'")}],
                "validations": [{"expression": "false", "message": "e2e: triggers refused"}]
            }
        },
        {
            "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
            "metadata": {"name": policy},
            "spec": {"policyName": policy, "validationActions": ["Deny"]}
        }
    ]);
    let yaml = refusal
        .as_array()
        .expect("documents")
        .iter()
        .map(Value::to_string)
        .collect::<Vec<_>>()
        .join("\n---\n");
    kube_sentinel::manifests::apply(&admin, &yaml, "e2e", &ns)
        .await
        .expect("apply the refusing policy");
    // In force once it refuses the sentinel's own status write.
    let cp = control_plane();
    let resource = install_crd(&admin).await;
    let as_sentinel: Api<kube::api::DynamicObject> = Api::namespaced_with(
        cp.service_account_client(&ns, "sentinel").await,
        &ns,
        &resource,
    );
    eventually(WAIT, "the refusing policy in force", || async {
        let id = uuid::Uuid::new_v4().to_string();
        let patch = json!({"status": {"sentinel": {"triggerID": id}}});
        let params = PatchParams {
            field_manager: Some(kube_sentinel::contract::SENTINEL_FIELD_MANAGER.into()),
            ..Default::default()
        };
        match as_sentinel
            .patch_status("db", &params, &Patch::Merge(patch))
            .await
        {
            Err(kube::Error::Api(s)) if s.message.contains("e2e: triggers refused") => Some(()),
            _ => None,
        }
    })
    .await;
    let names = vec!["db-extra".to_string()];
    managed_configmaps(&admin, &ns, &names).await;
    let sentinel =
        crate::operator::running::start_sentinel(&ns, &["--debounce", "1s", "--jitter", "0s"])
            .await;
    drift(&admin, &ns, &names).await;
    let events: Api<Event> = Api::namespaced(admin.clone(), &ns);
    let event = eventually(WAIT, "the sentinel's TriggerFailed Event", || async {
        events_with_reason(&events, "TriggerFailed").await.pop()
    });
    let event = tokio::time::timeout(WAIT * 2, event)
        .await
        .unwrap_or_else(|_| panic!("no TriggerFailed Event; sentinel log:\n{}", sentinel.log()));
    assert_eq!(event.type_.as_deref(), Some("Warning"));
    assert_eq!(
        event.reporting_controller.as_deref(),
        Some("kube-sentinel.dev/sentinel")
    );
    let note = event.note.unwrap_or_default();
    assert!(note.contains("e2e: triggers refused"), "{note}");
}
