//! A user's overlay that moves the install to its own namespace and renames it
//! (`namespace: platform`, `namePrefix: acme-`) keeps every admission policy pinned to the
//! renamed ServiceAccounts: the policies take their identity from the ServiceAccount named by
//! the binding's `paramRef`, which `deploy/base/identity-references.yaml` lets kustomize move.
//! Proven on a control plane of the test's own (the policies judge every namespace).

use std::{collections::BTreeSet, time::Duration};

use k8s_openapi::api::{coordination::v1::Lease, core::v1::ConfigMap};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube_sentinel::contract::{MANAGED_BY_LABEL, MANAGED_BY_VALUE, OPERATOR_FIELD_MANAGER};
use serde_json::{Value, json};

use crate::support::{self, REPO, eventually, kubectl_output};

const NS: &str = "platform";
const SENTINEL: &str = "acme-sentinel";
const OPERATOR: &str = "acme-kube-sentinel-operator";

/// A kustomization under `target/` (kustomize refuses absolute resource paths) that builds on
/// `deploy/overlays/lock` the way a user's overlay would.
fn user_overlay() -> tempfile::TempDir {
    let target = format!("{REPO}/target");
    std::fs::create_dir_all(&target).expect("target dir");
    let dir = tempfile::Builder::new()
        .prefix("user-overlay-")
        .tempdir_in(&target)
        .expect("overlay dir");
    let text =
        format!("resources:\n  - ../../deploy/overlays/lock\nnamespace: {NS}\nnamePrefix: acme-\n");
    std::fs::write(dir.path().join("kustomization.yaml"), text).expect("write overlay");
    dir
}

/// An object's `(namespace, name)`.
type At = (String, String);

/// Where every ServiceAccount rendered is, and what every binding's `paramRef` names.
fn accounts_and_params(rendered: &str) -> (BTreeSet<At>, Vec<At>) {
    let docs = kube_sentinel::manifests::parse(rendered).expect("rendered YAML");
    let at = |v: &Value| {
        (
            v["namespace"].as_str().unwrap_or_default().to_string(),
            v["name"].as_str().unwrap_or_default().to_string(),
        )
    };
    let accounts = docs
        .iter()
        .filter(|d| d["kind"] == "ServiceAccount")
        .map(|d| at(&d["metadata"]))
        .collect();
    let params = docs
        .iter()
        .filter(|d| d["kind"] == "ValidatingAdmissionPolicyBinding")
        .map(|d| at(&d["spec"]["paramRef"]))
        .collect();
    (accounts, params)
}

fn refusal<T>(result: Result<T, kube::Error>) -> Option<String> {
    match result {
        Err(kube::Error::Api(e)) if e.code == 403 => Some(e.message),
        _ => None,
    }
}

fn managed_config_map(value: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "db-config", "labels": {MANAGED_BY_LABEL: MANAGED_BY_VALUE}},
        "data": {"mode": value}
    })
}

#[tokio::test]
async fn an_overlay_that_renames_and_moves_the_install_keeps_every_policy_pinned_to_its_identities()
{
    let overlay = user_overlay();
    let installed = support::install_kustomization_on_own_plane(NS, overlay.path()).await;
    let (plane, admin) = (&installed.plane, &installed.admin);

    // The render: every binding's parameter is a ServiceAccount of the moved install.
    let (accounts, params) = accounts_and_params(&installed.rendered);
    assert_eq!(
        accounts,
        BTreeSet::from([(NS.into(), SENTINEL.into()), (NS.into(), OPERATOR.into())])
    );
    assert_eq!(
        params.len(),
        4,
        "sentinel, lock and two field-manager bindings"
    );
    for param in &params {
        assert!(accounts.contains(param), "{param:?} is not in {accounts:?}");
    }

    // The sentinel policy judges the renamed sentinel: RBAC lets it create any Lease in its
    // namespace, the policy only its own.
    let as_sentinel = plane
        .service_account_kubeconfig(NS, SENTINEL, Duration::from_secs(600))
        .await
        .expect("sentinel token");
    let leases: Api<Lease> = Api::namespaced(
        kube_sentinel::testenv::client_from_kubeconfig(as_sentinel)
            .await
            .expect("sentinel client"),
        NS,
    );
    let lease = |name: &str| Lease {
        metadata: kube::api::ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        ..Default::default()
    };
    let refused = eventually(
        Duration::from_secs(30),
        "the sentinel policy to refuse a Lease not the sentinel's",
        || async { refusal(leases.create(&PostParams::default(), &lease("other")).await) },
    )
    .await;
    assert!(refused.contains("the sentinel may only write"), "{refused}");
    leases
        .create(&PostParams::default(), &lease("kube-sentinel-sentinel"))
        .await
        .expect("the sentinel's own Lease in its moved namespace");

    // The reserved field managers belong to the renamed identities.
    let operator_kubeconfig = plane
        .service_account_kubeconfig(NS, OPERATOR, Duration::from_secs(600))
        .await
        .expect("operator token");
    let operator_path = installed.dir.path().join("operator.kubeconfig");
    kube_sentinel::testenv::write_kubeconfig(&operator_kubeconfig, &operator_path).expect("write");
    let operator: Api<ConfigMap> = Api::namespaced(
        kube_sentinel::testenv::client_from_kubeconfig(operator_kubeconfig)
            .await
            .expect("operator client"),
        NS,
    );
    let apply = |manager: &str| PatchParams::apply(manager).force();
    let refused = eventually(
        Duration::from_secs(30),
        "the field-manager policy to refuse the admin the operator's name",
        || async {
            refusal(
                Api::<ConfigMap>::namespaced(admin.clone(), NS)
                    .patch(
                        "db-config",
                        &apply(OPERATOR_FIELD_MANAGER),
                        &Patch::Apply(managed_config_map("hidden")),
                    )
                    .await,
            )
        },
    )
    .await;
    assert!(
        refused.contains("reserved for its own identity"),
        "{refused}"
    );
    operator
        .patch(
            "db-config",
            &apply(OPERATOR_FIELD_MANAGER),
            &Patch::Apply(managed_config_map("primary")),
        )
        .await
        .expect("the renamed operator applies under its own name");
    let refused = refusal(
        operator
            .patch(
                "db-config",
                &apply("kube-sentinel"),
                &Patch::Apply(managed_config_map("primary")),
            )
            .await,
    );
    assert!(
        refused
            .as_ref()
            .is_some_and(|m| m.contains("field manager kube-sentinel is reserved")),
        "the sentinel's name is not the operator's: {refused:?}"
    );

    // The lock (Warn and Audit) warns a foreign edit and lets the renamed operator's through.
    let patch = |kubeconfig: &std::path::Path, mode: &str| {
        let out = kubectl_output(
            kubeconfig,
            &[
                "patch",
                "configmap",
                "db-config",
                "-n",
                NS,
                "--type",
                "merge",
                "--field-manager",
                "kubectl-patch",
                "-p",
                &json!({"data": {"mode": mode}}).to_string(),
            ],
            None,
        );
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let lock_warning = "kube-sentinel lock: configmaps db-config is managed by";
    eventually(
        Duration::from_secs(30),
        "the lock to warn the admin",
        || async {
            patch(&installed.kubeconfig, "edited")
                .contains(lock_warning)
                .then_some(())
        },
    )
    .await;
    let operators = patch(&operator_path, "primary");
    assert!(!operators.contains(lock_warning), "{operators}");
}
