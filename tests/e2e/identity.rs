//! Identity, proven by acting as the ServiceAccounts under the manifests in `deploy/`: each
//! program may write only its own Lease (RBAC resourceNames, and the sentinel's admission
//! policy for a create), and the field-manager names the sentinel ignores are reserved for
//! their real identities (`deploy/identity/field-managers.yaml`).

use std::time::Duration;

use k8s_openapi::api::{apps::v1::StatefulSet, coordination::v1::Lease, core::v1::ConfigMap};
use kube::{
    Api,
    api::{Patch, PatchParams, PostParams},
};
use kube_sentinel::contract::{MANAGED_BY_LABEL, MANAGED_BY_VALUE, OPERATOR_FIELD_MANAGER};
use serde_json::{Value, json};

use crate::support::{REPO, apply_component_manifests, control_plane, eventually, relocate};

const OPERATOR_LEASE: &str = "kube-sentinel-operator";
const SENTINEL_LEASE: &str = "kube-sentinel-sentinel";

/// The HTTP code of a refused request, or None if it was allowed.
fn refused<T>(result: Result<T, kube::Error>) -> Option<(u16, String)> {
    match result {
        Ok(_) => None,
        Err(kube::Error::Api(s)) => Some((s.code, s.message)),
        Err(e) => panic!("unexpected error: {e}"),
    }
}

fn lease(name: &str, holder: &str) -> Lease {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15}
    }))
    .expect("lease")
}

fn hold(holder: &str) -> Patch<Value> {
    Patch::Merge(json!({"spec": {"holderIdentity": holder, "leaseDurationSeconds": 86400}}))
}

#[tokio::test]
async fn each_program_may_write_only_its_own_lease() {
    let cp = control_plane();
    let admin = cp.admin().await;
    crate::support::install_crd(&admin).await;
    let ns = cp.namespace("id-lease").await;
    apply_component_manifests(&admin, "operator", &ns).await;
    apply_component_manifests(&admin, "sentinel", &ns).await;
    let operator: Api<Lease> = Api::namespaced(
        cp.service_account_client(&ns, &format!("{ns}-operator"))
            .await,
        &ns,
    );
    let sentinel: Api<Lease> =
        Api::namespaced(cp.service_account_client(&ns, "sentinel").await, &ns);
    let pp = PostParams::default();

    // Before the operator ever ran: the sentinel cannot create the operator's Lease (RBAC
    // cannot name a create; the sentinel's admission policy does). The policy loads
    // asynchronously, hence the wait; a create that got through is removed and retried.
    let admin_leases: Api<Lease> = Api::namespaced(admin.clone(), &ns);
    let (_, msg) = eventually(
        Duration::from_secs(30),
        "the sentinel's policy to refuse the operator's Lease",
        || async {
            let result = sentinel.create(&pp, &lease(OPERATOR_LEASE, "evil")).await;
            if result.is_ok() {
                let _ = admin_leases
                    .delete(OPERATOR_LEASE, &Default::default())
                    .await;
            }
            refused(result)
        },
    )
    .await;
    assert!(msg.contains("kube-sentinel policy"), "{msg}");

    // Each creates and renews its own.
    operator
        .create(&pp, &lease(OPERATOR_LEASE, "op-0"))
        .await
        .expect("the operator creates its Lease");
    sentinel
        .create(&pp, &lease(SENTINEL_LEASE, "sen-0"))
        .await
        .expect("the sentinel creates its Lease");
    let renew = PatchParams::default();
    operator
        .patch(OPERATOR_LEASE, &renew, &hold("op-0"))
        .await
        .expect("the operator renews its Lease");
    sentinel
        .patch(SENTINEL_LEASE, &renew, &hold("sen-0"))
        .await
        .expect("the sentinel renews its Lease");

    // Neither may read, take or break the other's.
    for (who, api, other) in [
        ("sentinel", &sentinel, OPERATOR_LEASE),
        ("operator", &operator, SENTINEL_LEASE),
    ] {
        assert_eq!(
            refused(api.patch(other, &renew, &hold("evil")).await).map(|r| r.0),
            Some(403),
            "the {who} patched {other}"
        );
        assert_eq!(
            refused(api.get(other).await).map(|r| r.0),
            Some(403),
            "the {who} read {other}"
        );
        let mut taken = api
            .get(other)
            .await
            .unwrap_or_else(|_| lease(other, "evil"));
        taken.metadata.resource_version = None;
        assert_eq!(
            refused(api.replace(other, &pp, &taken).await).map(|r| r.0),
            Some(403),
            "the {who} replaced {other}"
        );
    }
    let holders: Vec<Option<String>> =
        futures::future::join_all([OPERATOR_LEASE, SENTINEL_LEASE].map(|name| {
            let api = admin_leases.clone();
            async move {
                api.get(name)
                    .await
                    .expect("lease")
                    .spec
                    .and_then(|s| s.holder_identity)
            }
        }))
        .await;
    assert_eq!(holders, [Some("op-0".into()), Some("sen-0".into())]);
}

/// `deploy/identity/field-managers.yaml` for namespace `ns` (its operator's ServiceAccount is
/// `<ns>-operator` there), its bindings limited to `ns` so that other tests are not judged.
fn field_manager_policy(ns: &str) -> String {
    let text = std::fs::read_to_string(format!("{REPO}/deploy/identity/field-managers.yaml"))
        .expect("deploy/identity/field-managers.yaml");
    let mut docs = kube_sentinel::manifests::parse(&relocate(&text, ns)).expect("parse");
    for doc in &mut docs {
        if doc["kind"] == "ValidatingAdmissionPolicyBinding" {
            doc["spec"]["matchResources"] = json!({"namespaceSelector": {"matchLabels": {
                "kubernetes.io/metadata.name": ns
            }}});
        }
    }
    docs.iter()
        .map(|d| serde_json::to_string(d).expect("json"))
        .collect::<Vec<_>>()
        .join("\n---\n")
}

fn as_manager(name: &str) -> PatchParams {
    PatchParams {
        field_manager: Some(name.into()),
        ..Default::default()
    }
}

#[tokio::test]
async fn reserved_field_manager_names_belong_to_their_identities() {
    let cp = control_plane();
    let admin = cp.admin().await;
    crate::support::install_crd(&admin).await;
    let ns = cp.namespace("id-managers").await;
    // Both ServiceAccounts: each is the parameter of its binding of the policy.
    apply_component_manifests(&admin, "operator", &ns).await;
    apply_component_manifests(&admin, "sentinel", &ns).await;
    kube_sentinel::manifests::apply(&admin, &field_manager_policy(&ns), "e2e", &ns)
        .await
        .expect("apply the field-manager policy");
    crate::smoke::grant(
        &admin,
        &ns,
        "intruder",
        json!([{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "create", "patch", "update"]}]),
    )
    .await;
    let intruder: Api<ConfigMap> =
        Api::namespaced(cp.service_account_client(&ns, "intruder").await, &ns);
    let operator: Api<ConfigMap> = Api::namespaced(
        cp.service_account_client(&ns, &format!("{ns}-operator"))
            .await,
        &ns,
    );
    let admin_cms: Api<ConfigMap> = Api::namespaced(admin.clone(), &ns);
    let desired = |value: &str| {
        json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "db-config", "labels": {MANAGED_BY_LABEL: MANAGED_BY_VALUE}},
            "data": {"mode": value}
        })
    };

    // The operator's ServiceAccount applies under its name.
    let (_, msg) = eventually(
        Duration::from_secs(30),
        "the policy to refuse an impostor",
        || async {
            refused(
                intruder
                    .patch(
                        "db-config",
                        &PatchParams::apply(OPERATOR_FIELD_MANAGER).force(),
                        &Patch::Apply(desired("hidden")),
                    )
                    .await,
            )
        },
    )
    .await;
    assert!(msg.contains("reserved for its own identity"), "{msg}");
    operator
        .patch(
            "db-config",
            &PatchParams::apply(OPERATOR_FIELD_MANAGER).force(),
            &Patch::Apply(desired("primary")),
        )
        .await
        .expect("the operator applies under its own name");

    // An impostor may not write under any reserved name, by apply or by update.
    for manager in [
        OPERATOR_FIELD_MANAGER,
        "kube-controller-manager",
        "kube-sentinel",
    ] {
        let denied = refused(
            intruder
                .patch(
                    "db-config",
                    &as_manager(manager),
                    &Patch::Merge(json!({"data": {"mode": "hidden"}})),
                )
                .await,
        );
        assert!(
            denied
                .as_ref()
                .is_some_and(|(code, m)| *code == 403 && m.contains(manager)),
            "{manager}: {denied:?}"
        );
    }
    // Ordinary drift stays possible (and visible): someone else takes the operator's field.
    intruder
        .patch(
            "db-config",
            &as_manager("kubectl-edit"),
            &Patch::Merge(json!({"data": {"mode": "edited"}})),
        )
        .await
        .expect("a visible edit of an operator-owned field is allowed");
    let cm = admin_cms.get("db-config").await.expect("get");
    assert_eq!(cm.data.expect("data")["mode"], "edited");

    // kube-controller-manager's own writes pass: a managed StatefulSet gets its status.
    let sts: StatefulSet = serde_json::from_value(json!({
        "metadata": {"name": "db", "labels": {MANAGED_BY_LABEL: MANAGED_BY_VALUE}},
        "spec": {
            "replicas": 0, "serviceName": "db",
            "selector": {"matchLabels": {"app": "db"}},
            "template": {"metadata": {"labels": {"app": "db", MANAGED_BY_LABEL: MANAGED_BY_VALUE}},
                         "spec": {"containers": [{"name": "db", "image": "registry.k8s.io/pause"}]}}
        }
    }))
    .expect("statefulset");
    let sets: Api<StatefulSet> = Api::namespaced(admin, &ns);
    sets.create(&PostParams::default(), &sts)
        .await
        .expect("create statefulset");
    eventually(
        Duration::from_secs(30),
        "kube-controller-manager to write the StatefulSet's status",
        || async {
            let s = sets.get("db").await.ok()?;
            let managers: Vec<String> = s
                .metadata
                .managed_fields
                .unwrap_or_default()
                .into_iter()
                .filter_map(|e| e.manager)
                .collect();
            (s.status?.observed_generation == s.metadata.generation
                && managers.iter().any(|m| m == "kube-controller-manager"))
            .then_some(())
        },
    )
    .await;
}
