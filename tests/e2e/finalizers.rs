//! The operator's owner references under OwnerReferencesPermissionEnforcement, on a control
//! plane of its own (the shared one runs the default admission plugins).

use std::time::Duration;

use k8s_openapi::api::{
    apps::v1::StatefulSet,
    core::v1::{ConfigMap, Namespace, Secret, Service},
};
use kube::{
    Api, Client, Resource,
    api::{ObjectMeta, PostParams},
};
use kube_sentinel::{
    operator::crd::StatefulCluster,
    testenv::{self, ControlPlane, ControlPlaneConfig},
};
use serde_json::json;

use crate::{
    operator::running::{cluster, create, http_get},
    support::{self, Program, eventually},
};

const WAIT: Duration = Duration::from_secs(60);

/// Whether `name` exists with a controller reference that blocks its owner's deletion.
async fn owned_blocking<K>(client: &Client, ns: &str, name: &str) -> Option<()>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let object = Api::<K>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .ok()??;
    object
        .meta()
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.controller == Some(true) && o.block_owner_deletion == Some(true))
        .then_some(())
}

#[tokio::test]
async fn owner_references_are_allowed_under_owner_references_permission_enforcement() {
    let mut config = ControlPlaneConfig::from_build_script().expect("control plane binaries");
    config.admission_plugins = vec!["OwnerReferencesPermissionEnforcement".into()];
    let plane = ControlPlane::start(config)
        .await
        .expect("own control plane");
    let admin = testenv::client_from_kubeconfig(plane.admin_kubeconfig().clone())
        .await
        .expect("admin client");
    let ns = "finalizers";
    Api::<Namespace>::all(admin.clone())
        .create(
            &PostParams::default(),
            &Namespace {
                metadata: ObjectMeta {
                    name: Some(ns.into()),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await
        .expect("namespace");
    support::install_crd(&admin).await;
    support::apply_component_manifests(&admin, "operator", ns).await;
    let kubeconfig = testenv::service_account_kubeconfig(
        plane.admin_kubeconfig(),
        ns,
        &format!("{ns}-operator"),
        Duration::from_secs(3600),
    )
    .await
    .expect("operator kubeconfig");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("operator.kubeconfig");
    testenv::write_kubeconfig(&kubeconfig, &path).expect("write kubeconfig");
    let port = testenv::free_port().expect("port");
    let addr = format!("127.0.0.1:{port}");
    let program = Program::spawn(
        "operator-finalizers",
        &["operator", "--namespace", ns, "--metrics-addr", &addr],
        &path,
    );
    eventually(WAIT, "operator /readyz", || async {
        (http_get(port, "/readyz").await.as_deref() == Some("ok")).then_some(())
    })
    .await;

    create(&admin, ns, &cluster("db", json!({"replicas": 1}))).await;
    let crs: Api<StatefulCluster> = Api::namespaced(admin.clone(), ns);
    let degraded = eventually(WAIT, "a full reconcile's Degraded condition", || async {
        let cr = crs.get("db").await.ok()?;
        let status = cr.status?;
        (status.observed_generation == cr.metadata.generation)
            .then(|| {
                status
                    .conditions
                    .into_iter()
                    .find(|c| c.type_ == "Degraded")
            })
            .flatten()
    })
    .await;
    let log = program.log();
    assert_eq!(
        (degraded.status.as_str(), degraded.reason.as_str()),
        ("False", "Healthy"),
        "{}\n---- operator log ----\n{log}",
        degraded.message
    );
    for (kind, present) in [
        (
            "StatefulSet db",
            owned_blocking::<StatefulSet>(&admin, ns, "db").await,
        ),
        (
            "Service db",
            owned_blocking::<Service>(&admin, ns, "db").await,
        ),
        (
            "Service db-headless",
            owned_blocking::<Service>(&admin, ns, "db-headless").await,
        ),
        (
            "ConfigMap db-config",
            owned_blocking::<ConfigMap>(&admin, ns, "db-config").await,
        ),
        (
            "Secret db-ca",
            owned_blocking::<Secret>(&admin, ns, "db-ca").await,
        ),
        (
            "Secret db-tls",
            owned_blocking::<Secret>(&admin, ns, "db-tls").await,
        ),
    ] {
        assert!(present.is_some(), "{kind} with blockOwnerDeletion");
    }
    drop(program);
    plane.stop().await;
}
