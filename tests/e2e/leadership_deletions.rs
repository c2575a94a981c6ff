//! Deletions survive a leadership change: an object deleted while the sentinel's Lease moves
//! is triggered by the new leader, and the operator re-creates it.

use std::time::Duration;

use k8s_openapi::api::{coordination::v1::Lease, core::v1::Service};
use kube::{Api, api::DeleteParams};
use serde_json::json;

use crate::{
    operator::running,
    sentinel::{FAST, Fixture, free_port},
    support::{Program, eventually, http_get},
};

/// A second sentinel process of `f`'s arguments under identity `second`, Ready as a standby.
async fn standby(f: &Fixture) -> Program {
    let port = free_port();
    let mut args = vec!["sentinel".to_owned()];
    args.extend(f.args.iter().map(|a| match a.as_str() {
        "first" => "second".to_owned(),
        _ => a.clone(),
    }));
    if let Some(i) = args.iter().position(|a| a == "--metrics-addr") {
        args[i + 1] = format!("127.0.0.1:{port}");
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let standby = Program::spawn("sentinel-standby", &args, &f.kubeconfig);
    eventually(Duration::from_secs(30), "the standby ready", || async {
        matches!(http_get(port, "/readyz").await, Some((200, _))).then_some(())
    })
    .await;
    standby
}

async fn holder(leases: &Api<Lease>) -> Option<String> {
    leases
        .get("kube-sentinel-sentinel")
        .await
        .ok()?
        .spec?
        .holder_identity
}

#[tokio::test]
async fn a_service_deleted_while_leadership_moves_is_triggered_and_recreated() {
    let mut args: Vec<&str> = FAST.to_vec();
    args.extend([
        "--leader-elect",
        "--lease-duration",
        "3s",
        "--identity",
        "first",
    ]);
    let mut f = Fixture::start("del-ha", &args).await;
    let leases: Api<Lease> = Api::namespaced(f.admin.clone(), &f.ns);
    eventually(
        Duration::from_secs(20),
        "the first instance leads",
        || async { (holder(&leases).await.as_deref() == Some("first")).then_some(()) },
    )
    .await;
    let standby = standby(&f).await;
    let operator = running::start_operator(&f.ns, &[]).await;
    let _kubelet = running::Kubelet::start(f.admin.clone(), &f.ns);
    running::create(&f.admin, &f.ns, &running::cluster("db", json!({}))).await;
    running::wait_ready(&f.admin, &f.ns, "db").await;
    // No full reconcile is still due: only a trigger can re-create the Service.
    running::settle(operator.port).await;
    let services: Api<Service> = Api::namespaced(f.admin.clone(), &f.ns);
    let created = eventually(Duration::from_secs(60), "Service db created", || async {
        services.get("db").await.ok()?.metadata.uid
    })
    .await;

    // The leader dies; the Service is deleted before the standby holds the Lease.
    f.stop_sentinel();
    services
        .delete("db", &DeleteParams::default())
        .await
        .expect("delete Service db");
    assert_eq!(
        holder(&leases).await.as_deref(),
        Some("first"),
        "deleted before the standby took over"
    );

    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !f
        .triggers("db")
        .iter()
        .any(|t| t.objects.contains(&("Service".to_owned(), "db".to_owned())))
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no trigger named the deleted Service: {:?}\nstandby log:\n{}",
            f.triggers("db"),
            standby.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(holder(&leases).await.as_deref(), Some("second"));
    let recreated = eventually(Duration::from_secs(30), "Service db re-created", || async {
        services.get("db").await.ok()?.metadata.uid
    })
    .await;
    assert_ne!(recreated, created, "a new Service, not the old one");
}
