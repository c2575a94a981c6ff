//! The control plane behaves as a real cluster for what kube-sentinel relies on:
//! managedFields attribution, RBAC for ServiceAccounts, ValidatingAdmissionPolicy.

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::{
    admissionregistration::v1::ValidatingAdmissionPolicy,
    core::v1::{ConfigMap, Secret},
    rbac::v1::{Role, RoleBinding},
};
use kube::{
    Api, ResourceExt,
    api::{ListParams, Patch, PatchParams, PostParams},
    discovery::Discovery,
    runtime::{WatchStreamExt, watcher},
};
use serde_json::json;

use crate::support::{control_plane, eventually};

#[tokio::test]
async fn readyz_ok_and_admission_policies_served() {
    let cp = control_plane();
    let client = cp.admin().await;
    let readyz = client
        .request_text(
            http::Request::get("/readyz")
                .body(Vec::new())
                .expect("request"),
        )
        .await
        .expect("/readyz");
    assert_eq!(readyz.trim(), "ok");
    let discovery = Discovery::new(client).run().await.expect("discovery");
    let served: Vec<String> = discovery
        .groups()
        .flat_map(|g| g.recommended_resources())
        .map(|(ar, _)| ar.plural)
        .collect();
    assert!(
        served.iter().any(|p| p == "validatingadmissionpolicies"),
        "{served:?}"
    );
    assert!(served.iter().any(|p| p == "statefulsets"));
}

#[tokio::test]
async fn managed_fields_name_each_manager_with_operation_and_time() {
    let cp = control_plane();
    let ns = cp.namespace("smoke-mf").await;
    let admin = cp.admin().await;
    // The ServiceAccount may patch ConfigMaps in this namespace, nothing more.
    grant(
        &admin,
        &ns,
        "editor",
        json!([{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "patch"]}]),
    )
    .await;
    let sa = cp.service_account_client(&ns, "editor").await;

    let admin_cms: Api<ConfigMap> = Api::namespaced(admin, &ns);
    let events = watcher(admin_cms.clone(), watcher::Config::default())
        .applied_objects()
        .boxed();
    let cm: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "shared"}, "data": {"owned-by-a": "1"}
    }))
    .expect("configmap");
    admin_cms
        .create(
            &PostParams {
                field_manager: Some("a".into()),
                ..Default::default()
            },
            &cm,
        )
        .await
        .expect("create as a");
    Api::<ConfigMap>::namespaced(sa, &ns)
        .patch(
            "shared",
            &PatchParams::apply("b"),
            &Patch::Apply(
                json!({"apiVersion": "v1", "kind": "ConfigMap", "data": {"owned-by-b": "2"}}),
            ),
        )
        .await
        .expect("apply as b");

    let seen = tokio::time::timeout(
        Duration::from_secs(30),
        events
            .try_filter(|cm| futures::future::ready(cm.managed_fields().len() >= 2))
            .next(),
    )
    .await
    .expect("watch event with both managers")
    .expect("watch stream ended")
    .expect("watch error");
    let entries = seen.managed_fields();
    let a = entries
        .iter()
        .find(|e| e.manager.as_deref() == Some("a"))
        .expect("entry for a");
    let b = entries
        .iter()
        .find(|e| e.manager.as_deref() == Some("b"))
        .expect("entry for b");
    assert_eq!(a.operation.as_deref(), Some("Update"));
    assert_eq!(b.operation.as_deref(), Some("Apply"));
    assert!(a.time.is_some() && b.time.is_some());
    let b_fields = serde_json::to_string(&b.fields_v1).expect("fieldsV1");
    assert!(
        b_fields.contains("owned-by-b") && !b_fields.contains("owned-by-a"),
        "{b_fields}"
    );
}

#[tokio::test]
async fn service_account_without_role_cannot_list_secrets() {
    let cp = control_plane();
    let ns = cp.namespace("smoke-rbac").await;
    let sa = cp.service_account_client(&ns, "nobody").await;
    let err = Api::<Secret>::namespaced(sa, &ns)
        .list(&ListParams::default())
        .await
        .expect_err("listing secrets must be forbidden");
    assert_eq!(status_code(&err), Some(403), "{err}");
}

#[tokio::test]
async fn validating_admission_policy_denies_with_its_message() {
    let cp = control_plane();
    let ns = cp.namespace("smoke-vap").await;
    let admin = cp.admin().await;
    let name = format!("{ns}-no-forbidden-key");
    let policy: ValidatingAdmissionPolicy = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": [{
                "apiGroups": [""], "apiVersions": ["v1"],
                "operations": ["CREATE", "UPDATE"], "resources": ["configmaps"]
            }]},
            "validations": [{
                "expression": "!has(object.data) || !('forbidden' in object.data)",
                "message": "configmaps may not carry the key 'forbidden'"
            }]
        }
    }))
    .expect("policy");
    Api::<ValidatingAdmissionPolicy>::all(admin.clone())
        .create(&PostParams::default(), &policy)
        .await
        .expect("create policy");
    let binding: k8s_openapi::api::admissionregistration::v1::ValidatingAdmissionPolicyBinding =
        serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {
                "policyName": name,
                "validationActions": ["Deny"],
                "matchResources": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}}}
            }
        }))
        .expect("binding");
    Api::all(admin.clone())
        .create(&PostParams::default(), &binding)
        .await
        .expect("create binding");

    let cms: Api<ConfigMap> = Api::namespaced(admin, &ns);
    // Allowed writes still pass.
    let ok: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "fine"}, "data": {"k": "v"}}))
            .expect("cm");
    cms.create(&PostParams::default(), &ok)
        .await
        .expect("allowed write");
    // The policy reaches the admission chain asynchronously; retry until it denies.
    let message = eventually(Duration::from_secs(30), "the policy to deny", || {
        let cms = cms.clone();
        async move {
            let name = format!("bad-{}", uuid::Uuid::new_v4().simple());
            let bad: ConfigMap = serde_json::from_value(
                json!({"metadata": {"name": name}, "data": {"forbidden": "x"}}),
            )
            .ok()?;
            match cms.create(&PostParams::default(), &bad).await {
                Ok(_) => None,
                Err(e) => Some(e.to_string()),
            }
        }
    })
    .await;
    assert!(
        message.contains("configmaps may not carry the key 'forbidden'"),
        "{message}"
    );
    assert!(
        message.contains(&name),
        "the denial names the policy: {message}"
    );
}

/// Grants ServiceAccount `ns/sa` the namespaced `rules`.
pub async fn grant(admin: &kube::Client, ns: &str, sa: &str, rules: serde_json::Value) {
    let role: Role =
        serde_json::from_value(json!({"metadata": {"name": sa}, "rules": rules})).expect("role");
    Api::<Role>::namespaced(admin.clone(), ns)
        .create(&PostParams::default(), &role)
        .await
        .expect("create role");
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": sa},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": sa},
        "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": ns}]
    }))
    .expect("rolebinding");
    Api::<RoleBinding>::namespaced(admin.clone(), ns)
        .create(&PostParams::default(), &binding)
        .await
        .expect("create rolebinding");
}

/// The HTTP status of an API error, if it is one.
pub fn status_code(err: &kube::Error) -> Option<u16> {
    match err {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}

#[tokio::test]
async fn manifests_apply_namespaced_and_cluster_scoped_objects() {
    let cp = control_plane();
    let ns = cp.namespace("smoke-apply").await;
    let admin = cp.admin().await;
    let yaml = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: from-yaml\ndata:\n  k: v\n---\n\
         apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata:\n  name: {ns}-reader\nrules: []\n"
    );
    let applied = kube_sentinel::manifests::apply(&admin, &yaml, "smoke", &ns)
        .await
        .expect("apply");
    assert_eq!(applied.len(), 2);
    assert_eq!(applied[0].namespace.as_deref(), Some(ns.as_str()));
    assert_eq!(applied[1].namespace, None);
    let cm = Api::<ConfigMap>::namespaced(admin.clone(), &ns)
        .get("from-yaml")
        .await
        .expect("configmap");
    assert_eq!(
        cm.data.and_then(|d| d.get("k").cloned()).as_deref(),
        Some("v")
    );
    // Applying again is idempotent.
    kube_sentinel::manifests::apply(&admin, &yaml, "smoke", &ns)
        .await
        .expect("re-apply");
}
