//! `operator --watch-owned`: without a sentinel, a change to a managed object is reconciled on
//! the normal lane within seconds (without the flag it would wait for the 10-hour resync).

use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use crate::{
    operator::running,
    support::{control_plane, eventually},
};

#[tokio::test]
async fn watch_owned_reconciles_a_changed_object_without_a_sentinel() {
    let cp = control_plane();
    let admin = cp.admin().await;
    let ns = cp.namespace("op-owned").await;
    let operator = running::start_operator(&ns, &["--watch-owned"]).await;
    let _kubelet = running::Kubelet::start(admin.clone(), &ns);
    running::create(&admin, &ns, &running::cluster("db", json!({}))).await;
    running::wait_ready(&admin, &ns, "db").await;
    running::settle(operator.port).await;
    let before = running::full_reconciles(operator.port).await;

    let config_maps: Api<ConfigMap> = Api::namespaced(admin.clone(), &ns);
    config_maps
        .patch(
            "db-config",
            &PatchParams {
                field_manager: Some("kubectl-edit".into()),
                ..Default::default()
            },
            &Patch::Merge(json!({"data": {"mode": "drifted"}})),
        )
        .await
        .expect("drift");
    eventually(
        Duration::from_secs(20),
        "the ConfigMap restored",
        || async {
            let cm = config_maps.get("db-config").await.ok()?;
            (cm.data?.get("mode").map(String::as_str) == Some("primary")).then_some(())
        },
    )
    .await;
    // A normal-lane (full) reconcile did it; its count is published when it finishes.
    eventually(
        Duration::from_secs(10),
        "a full reconcile counted",
        || async { (running::full_reconciles(operator.port).await > before).then_some(()) },
    )
    .await;
}
