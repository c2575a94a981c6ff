//! The whole loop on a real control plane: an outside actor drifts a StatefulSet, the sentinel
//! (its own process, its own ServiceAccount) writes the trigger, the operator (likewise)
//! reverts on the fast lane and acknowledges it.

use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use kube::api::{Api, Patch, PatchParams};
use kube_sentinel::operator::crd::{Outcome, StatefulCluster};
use serde_json::json;

use crate::{
    operator::running,
    support::{control_plane, eventually},
};

#[tokio::test]
async fn sentinel_and_operator_revert_a_drift_end_to_end() {
    let cp = control_plane();
    let admin = cp.admin().await;
    let ns = cp.namespace("e2e-loop").await;
    let _operator = running::start_operator(&ns, &[]).await;
    let _kubelet = running::Kubelet::start(admin.clone(), &ns);
    let sentinel = running::start_sentinel(&ns, &[]).await;

    running::create(&admin, &ns, &running::cluster("db", json!({}))).await;
    running::wait_ready(&admin, &ns, "db").await;
    // Let the operator's own writes settle: none of them may trigger.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let clusters: Api<StatefulCluster> = Api::namespaced(admin.clone(), &ns);
    let before = clusters.get("db").await.expect("get");
    let trigger_of = |c: &StatefulCluster| {
        c.status
            .as_ref()
            .and_then(|s| s.sentinel.as_ref())
            .and_then(|s| s.trigger.trigger_id.clone())
    };
    assert_eq!(
        trigger_of(&before),
        None,
        "the operator's writes are not drift: {}",
        sentinel.log()
    );

    let sts: Api<StatefulSet> = Api::namespaced(admin.clone(), &ns);
    let drifted_at = tokio::time::Instant::now();
    sts.patch(
        "db",
        &PatchParams {
            field_manager: Some("kubectl-scale".into()),
            ..Default::default()
        },
        &Patch::Merge(json!({"spec": {"replicas": 1}})),
    )
    .await
    .expect("drift");
    let handled = eventually(
        Duration::from_secs(30),
        "drift reverted and acknowledged",
        || async {
            let c = clusters.get("db").await.ok()?;
            let s = c.status.as_ref()?.sentinel.as_ref()?;
            let id = s.trigger.trigger_id.as_deref()?;
            (s.last_handled_trigger_id.as_deref() == Some(id)).then_some(c.clone())
        },
    )
    .await;
    let replicas = sts.get("db").await.expect("sts").spec.replicas;
    let elapsed = drifted_at.elapsed();
    assert_eq!(replicas, Some(3), "reverted");
    let s = handled
        .status
        .and_then(|s| s.sentinel)
        .expect("sentinel status");
    assert_eq!(s.last_outcome, Some(Outcome::Corrected));
    assert!(
        s.trigger
            .drifted_objects
            .iter()
            .any(|o| o.kind == "StatefulSet" && o.name == "db"),
        "{:?}",
        s.trigger.drifted_objects
    );
    eprintln!("drift to verified revert: {elapsed:?}");
    // Default window 2 s: the loop closes within seconds, not at the next resync.
    assert!(elapsed < Duration::from_secs(15), "{elapsed:?}");
    // The revert is the operator's own write: no second trigger.
    let id = s.trigger.trigger_id.clone();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let after = clusters.get("db").await.expect("get");
    assert_eq!(trigger_of(&after), id, "{}", sentinel.log());
}

/// The id of the trigger `db` has acknowledged, once it is the pending one too.
async fn acknowledged(clusters: &Api<StatefulCluster>, after: Option<&str>) -> String {
    eventually(
        Duration::from_secs(30),
        "a new trigger acknowledged",
        || async {
            let c = clusters.get("db").await.ok()?;
            let s = c.status.as_ref()?.sentinel.as_ref()?;
            let id = s.trigger.trigger_id.as_deref()?;
            (s.last_handled_trigger_id.as_deref() == Some(id) && Some(id) != after)
                .then(|| id.to_string())
        },
    )
    .await
}

#[tokio::test]
async fn in_leading_mode_a_drift_after_the_acknowledgement_does_not_wait_for_the_window() {
    let cp = control_plane();
    let admin = cp.admin().await;
    let ns = cp.namespace("e2e-leading").await;
    let _operator = running::start_operator(&ns, &[]).await;
    let _kubelet = running::Kubelet::start(admin.clone(), &ns);
    // A window far longer than a revert: a drift held until its trailing edge would show.
    let window = Duration::from_secs(20);
    let sentinel = running::start_sentinel(
        &ns,
        &[
            "--mode",
            "leading",
            "--debounce",
            "20s",
            "--max-wait",
            "60s",
        ],
    )
    .await;
    running::create(&admin, &ns, &running::cluster("db", json!({}))).await;
    running::wait_ready(&admin, &ns, "db").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let clusters: Api<StatefulCluster> = Api::namespaced(admin.clone(), &ns);
    let sts: Api<StatefulSet> = Api::namespaced(admin.clone(), &ns);
    let scale = |replicas: i32| {
        let sts = sts.clone();
        async move {
            sts.patch(
                "db",
                &PatchParams {
                    field_manager: Some("kubectl-scale".into()),
                    ..Default::default()
                },
                &Patch::Merge(json!({"spec": {"replicas": replicas}})),
            )
            .await
            .expect("drift");
        }
    };
    let started = tokio::time::Instant::now();
    scale(1).await;
    let first = acknowledged(&clusters, None).await;
    // The first drift's window is still open: the second, a moment after the acknowledgement
    // (which the sentinel learns through its own watch), is triggered at once all the same.
    tokio::time::sleep(Duration::from_secs(1)).await;
    scale(2).await;
    let second = acknowledged(&clusters, Some(&first)).await;
    let took = started.elapsed();
    assert_ne!(first, second);
    assert_eq!(sts.get("db").await.expect("sts").spec.replicas, Some(3));
    assert!(
        took < window / 2,
        "two drifts reverted in {took:?}: the second waited for the {window:?} window\n{}",
        sentinel.log()
    );
}
