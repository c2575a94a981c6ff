//! The sentinel's privileges, proven by acting as its ServiceAccount against the real API
//! server under the manifests in `deploy/sentinel/`: RBAC grants reads and the trigger write,
//! and the ValidatingAdmissionPolicy confines even a mistakenly broad grant to the trigger.

use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::{
    Api, Client,
    api::{DynamicObject, ListParams, Patch, PatchParams, PostParams},
};
use kube_sentinel::contract::SENTINEL_FIELD_MANAGER;
use serde_json::{Value, json};

use crate::support::{REPO, apply_component_manifests, control_plane, eventually, install_crd};

/// A namespace with the sentinel's manifests applied and one StatefulCluster `db` whose
/// status has operator-written fields; returns (namespace, admin API, sentinel API).
async fn setup(prefix: &str) -> (String, Api<DynamicObject>, Api<DynamicObject>, Client) {
    let cp = control_plane();
    let admin = cp.admin().await;
    let ar = install_crd(&admin).await;
    let ns = cp.namespace(prefix).await;
    apply_component_manifests(&admin, "sentinel", &ns).await;
    let clusters: Api<DynamicObject> = Api::namespaced_with(admin.clone(), &ns, &ar);
    let text =
        std::fs::read_to_string(format!("{REPO}/deploy/samples/minimal.yaml")).expect("sample");
    let mut sample = kube_sentinel::manifests::parse(&text)
        .expect("parse")
        .remove(0);
    sample["metadata"]["name"] = json!("db");
    let obj: DynamicObject = serde_json::from_value(sample).expect("object");
    clusters
        .create(&PostParams::default(), &obj)
        .await
        .expect("create cluster");
    clusters
        .patch_status(
            "db",
            &PatchParams::apply("e2e-operator").force(),
            &Patch::Apply(json!({
                "apiVersion": "kube-sentinel.dev/v1alpha1", "kind": "StatefulCluster",
                "status": {
                    "currentVersion": "3.10",
                    "sentinel": {"lastHandledTriggerID": "00000000-0000-4000-8000-000000000000"}
                }
            })),
        )
        .await
        .expect("operator status");
    let sentinel = cp.service_account_client(&ns, "sentinel").await;
    let as_sentinel = Api::namespaced_with(sentinel.clone(), &ns, &ar);
    (ns, clusters, as_sentinel, sentinel)
}

fn params() -> PatchParams {
    PatchParams {
        field_manager: Some(SENTINEL_FIELD_MANAGER.into()),
        ..Default::default()
    }
}

fn trigger(id: &str) -> Value {
    json!({"status": {"sentinel": {
        "triggerID": id,
        "triggeredAt": "2026-11-29T10:00:02Z",
        "detectedAt": "2026-11-29T10:00:00Z",
        "driftedObjects": [{"kind": "StatefulSet", "name": "db", "change": "modified"}],
        "driftedTotal": 1
    }}})
}

/// Message of a denied request, or None if it was allowed.
fn denial<T>(result: Result<T, kube::Error>) -> Option<(u16, String)> {
    match result {
        Ok(_) => None,
        Err(kube::Error::Api(s)) => Some((s.code, s.message)),
        Err(e) => panic!("unexpected error: {e}"),
    }
}

/// Waits until the policy is in force (policies load asynchronously). The probe changes
/// `status.observedGeneration` to a new value each time, so that it is a real change the policy
/// must deny (a repeated, already applied value would be a no-op it allows); no test reads it.
async fn policy_in_force(api: &Api<DynamicObject>) -> (u16, String) {
    let mut probe = 1000;
    eventually(
        Duration::from_secs(30),
        "the admission policy to deny",
        || {
            probe += 1;
            let patch = json!({"status": {"observedGeneration": probe}});
            async move {
                denial(
                    api.patch_status("db", &params(), &Patch::Merge(patch))
                        .await,
                )
            }
        },
    )
    .await
}

#[tokio::test]
async fn sentinel_can_write_a_trigger_and_nothing_else_in_status() {
    let (_ns, admin, sentinel, _) = setup("sec-status").await;
    // Wait for the policy, then prove the allowed write.
    let (code, msg) = policy_in_force(&sentinel).await;
    assert_eq!(code, 403, "{msg}");
    assert!(msg.contains("may change only status.sentinel"), "{msg}");
    let denied = denial(
        sentinel
            .patch_status(
                "db",
                &params(),
                &Patch::Merge(json!({"status": {"currentVersion": "9"}})),
            )
            .await,
    );
    assert!(denied.is_some_and(|(_, m)| m.contains("may change only status.sentinel")));

    let id = uuid::Uuid::new_v4().to_string();
    sentinel
        .patch_status("db", &params(), &Patch::Merge(trigger(&id)))
        .await
        .expect("the trigger write is allowed");
    let got = admin.get_status("db").await.expect("get");
    assert_eq!(got.data["status"]["sentinel"]["triggerID"], json!(id));
    assert_eq!(got.data["status"]["currentVersion"], json!("3.10"));

    // The operator's acknowledgement is not the sentinel's to write.
    let (code, msg) = denial(
        sentinel
            .patch_status(
                "db",
                &params(),
                &Patch::Merge(json!({"status": {"sentinel": {"lastHandledTriggerID": id}}})),
            )
            .await,
    )
    .expect("lastHandledTriggerID denied");
    assert_eq!(code, 403);
    assert!(msg.contains("only the trigger fields"), "{msg}");

    // Nested state of another status key (the upgrade phase) and new keys are protected.
    for patch in [
        json!({"status": {"upgrade": {"phase": "Rolling"}}}),
        json!({"status": {"observedGeneration": 7}}),
        json!({"status": {"sentinel": {"corrections": 5}}}),
        json!({"status": {"currentVersion": null}}),
    ] {
        let denied = denial(
            sentinel
                .patch_status("db", &params(), &Patch::Merge(patch.clone()))
                .await,
        );
        assert!(denied.is_some(), "{patch} was allowed");
    }
}

#[tokio::test]
async fn trigger_must_be_a_uuid_and_bounded() {
    let (_ns, _admin, sentinel, _) = setup("sec-uuid").await;
    policy_in_force(&sentinel).await;
    let (code, msg) = denial(
        sentinel
            .patch_status("db", &params(), &Patch::Merge(trigger("not-a-uuid")))
            .await,
    )
    .expect("non-UUID trigger denied");
    assert_eq!(code, 422, "{msg}");
    assert!(
        msg.contains("triggerID must be a lower-case UUID v4"),
        "{msg}"
    );

    let many: Vec<Value> = (0..17)
        .map(|i| json!({"kind": "ConfigMap", "name": format!("c{i}"), "change": "modified"}))
        .collect();
    let mut too_many = trigger(&uuid::Uuid::new_v4().to_string());
    too_many["status"]["sentinel"]["driftedObjects"] = json!(many);
    let (_, msg) = denial(
        sentinel
            .patch_status("db", &params(), &Patch::Merge(too_many))
            .await,
    )
    .expect("17 objects denied");
    assert!(msg.contains("at most 16 objects"), "{msg}");
}

#[tokio::test]
async fn even_a_mistaken_grant_cannot_change_spec_or_labels() {
    let (ns, admin, sentinel, _) = setup("sec-spec").await;
    policy_in_force(&sentinel).await;
    // RBAC alone already refuses: patch on the resource itself is not granted.
    let (code, _) = denial(
        sentinel
            .patch(
                "db",
                &params(),
                &Patch::Merge(json!({"spec": {"replicas": 1}})),
            )
            .await,
    )
    .expect("spec patch denied by RBAC");
    assert_eq!(code, 403);

    // Someone grants too much by mistake; the admission policy still holds.
    let cp = control_plane();
    let admin_client = cp.admin().await;
    crate::smoke::grant(
        &admin_client,
        &ns,
        "sentinel",
        json!([{"apiGroups": ["kube-sentinel.dev"], "resources": ["statefulclusters"], "verbs": ["patch", "update"]},
               {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["create", "patch"]}]),
    )
    .await;
    let spec = eventually(
        Duration::from_secs(20),
        "the policy to deny a spec change",
        || async {
            denial(
                sentinel
                    .patch(
                        "db",
                        &params(),
                        &Patch::Merge(json!({"spec": {"replicas": 1}})),
                    )
                    .await,
            )
            .filter(|(_, msg)| msg.contains("kube-sentinel policy"))
        },
    )
    .await;
    assert!(
        spec.1.contains("may only write status.sentinel"),
        "{}",
        spec.1
    );
    let (_, msg) = denial(
        sentinel
            .patch(
                "db",
                &params(),
                &Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}})),
            )
            .await,
    )
    .expect("label change denied");
    assert!(msg.contains("kube-sentinel policy"), "{msg}");
    let cm: Api<ConfigMap> = Api::namespaced(cp.service_account_client(&ns, "sentinel").await, &ns);
    let (_, msg) = denial(
        cm.create(&PostParams::default(), &ConfigMap::default().with_name("x"))
            .await,
    )
    .expect("configmap create denied");
    assert!(msg.contains("kube-sentinel policy"), "{msg}");
    let still = admin.get("db").await.expect("get");
    assert_eq!(still.data["spec"]["replicas"], json!(3));
    assert!(!still.metadata.labels.unwrap_or_default().contains_key("x"));
}

#[tokio::test]
async fn sentinel_cannot_list_secrets_and_an_impostor_gets_nothing() {
    let (ns, _admin, _sentinel, sentinel_client) = setup("sec-secrets").await;
    let secrets: Api<Secret> = Api::namespaced(sentinel_client.clone(), &ns);
    let (code, _) = denial(secrets.list(&ListParams::default()).await).expect("secrets denied");
    assert_eq!(code, 403);
    let all: Api<Secret> = Api::all(sentinel_client);
    assert_eq!(
        denial(all.list(&ListParams::default()).await).map(|d| d.0),
        Some(403)
    );

    // A ServiceAccount of the same name in another namespace has none of the sentinel's rights.
    let cp = control_plane();
    let other = cp.namespace("sec-impostor").await;
    let impostor = cp.service_account_client(&other, "sentinel").await;
    let ar = install_crd(&cp.admin().await).await;
    let clusters: Api<DynamicObject> = Api::namespaced_with(impostor.clone(), &ns, &ar);
    let id = uuid::Uuid::new_v4().to_string();
    let (code, _) = denial(
        clusters
            .patch_status("db", &params(), &Patch::Merge(trigger(&id)))
            .await,
    )
    .expect("impostor trigger denied");
    assert_eq!(code, 403);
    let sts: Api<k8s_openapi::api::apps::v1::StatefulSet> = Api::all(impostor);
    assert_eq!(
        denial(sts.list(&ListParams::default()).await).map(|d| d.0),
        Some(403)
    );
}

trait WithName {
    fn with_name(self, name: &str) -> Self;
}

impl WithName for ConfigMap {
    fn with_name(mut self, name: &str) -> Self {
        self.metadata.name = Some(name.into());
        self
    }
}
