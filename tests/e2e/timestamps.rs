//! Timestamps with the precision latency needs: the operator's detection-to-revert figure
//! agrees with the same revert timed from outside, and a foreign write in the same second as
//! the last acknowledgement is drift when the sentinel restarts.

use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::{
    Api,
    api::{Patch, PatchParams},
    runtime::{WatchStreamExt, watcher},
};
use kube_sentinel::contract::OPERATOR_FIELD_MANAGER;
use serde_json::json;

use crate::{
    operator::running,
    sentinel::{FAST, Fixture, names},
    support::eventually,
};

/// Sleeps until the wall clock's fraction of a second is in `[from_ms, to_ms)`.
async fn until_fraction(from_ms: i32, to_ms: i32) {
    loop {
        let ms = Timestamp::now().subsec_millisecond();
        if (from_ms..to_ms).contains(&ms) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// The operator's `since="detected"` latency histogram: (count, sum in seconds).
async fn detected_latency(port: u16) -> (u64, f64) {
    let text = running::http_get(port, "/metrics")
        .await
        .unwrap_or_default();
    let read = |suffix: &str| {
        let prefix = format!(
            "kube_sentinel_operator_revert_latency_seconds_{suffix}{{since=\"detected\"}} "
        );
        text.lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()).map(str::to_owned))
    };
    let count = read("count")
        .and_then(|c| c.trim().parse().ok())
        .unwrap_or(0);
    let sum = read("sum")
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0.0);
    (count, sum)
}

#[tokio::test]
async fn operator_latency_matches_the_revert_timed_from_outside() {
    let f = Fixture::start("ts-latency", FAST).await;
    let operator = running::start_operator(&f.ns, &[]).await;
    let _kubelet = running::Kubelet::start(f.admin.clone(), &f.ns);
    running::create(&f.admin, &f.ns, &running::cluster("db", json!({}))).await;
    running::wait_ready(&f.admin, &f.ns, "db").await;
    let config_maps: Api<ConfigMap> = Api::namespaced(f.admin.clone(), &f.ns);
    let setting = |cm: &ConfigMap| {
        cm.data
            .as_ref()
            .and_then(|d| d.get("mode"))
            .cloned()
            .unwrap_or_default()
    };
    eventually(Duration::from_secs(60), "ConfigMap db-config", || async {
        (setting(&config_maps.get("db-config").await.ok()?) == "primary").then_some(())
    })
    .await;
    running::settle(operator.port).await;
    assert_eq!(detected_latency(operator.port).await.0, 0, "no revert yet");

    let mut changes = watcher(
        config_maps.clone(),
        watcher::Config::default().fields("metadata.name=db-config"),
    )
    .applied_objects()
    .boxed();
    // Wait for the watch's initial list, so that the revert's event is the first "primary"
    // after the drift.
    while let Some(Ok(cm)) = changes.next().await {
        if setting(&cm) == "primary" {
            break;
        }
    }
    // Mid-second: a timestamp truncated to whole seconds would be off by 0.4 s or more.
    until_fraction(400, 600).await;
    config_maps
        .patch(
            "db-config",
            &PatchParams {
                field_manager: Some("kubectl-edit".into()),
                ..Default::default()
            },
            &Patch::Merge(json!({"data": {"mode": "replica"}})),
        )
        .await
        .expect("drift");
    let drifted = tokio::time::Instant::now();
    let reverted = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(event) = changes.next().await {
            if event.is_ok_and(|cm| setting(&cm) == "primary") {
                return drifted.elapsed();
            }
        }
        panic!("the watch ended")
    })
    .await
    .expect("the drift is reverted");
    let (count, operator_figure) = eventually(
        Duration::from_secs(10),
        "the operator's latency recorded",
        || async {
            let (count, sum) = detected_latency(operator.port).await;
            (count > 0).then_some((count, sum))
        },
    )
    .await;
    assert_eq!(count, 1, "one revert");
    let outside = reverted.as_secs_f64();
    let difference = operator_figure - outside;
    eprintln!(
        "detection to revert: operator {operator_figure:.6} s, outside {outside:.6} s, difference {:.1} ms",
        difference * 1000.0
    );
    assert!(
        difference.abs() < 0.050,
        "operator {operator_figure:.6} s vs outside {outside:.6} s"
    );
}

#[tokio::test]
async fn a_foreign_edit_in_the_second_of_the_acknowledgement_is_drift_after_restart() {
    let mut f = Fixture::start("ts-tie", FAST).await;
    let uid = f.cluster("db", json!({})).await;
    f.operator_objects("db", "db", &uid).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    f.stop_sentinel();
    // Early in a second: the edit and the acknowledgement after it share that second.
    until_fraction(0, 300).await;
    let edited = f
        .sts()
        .patch(
            "db",
            &Fixture::foreign("night-shift"),
            &Patch::Merge(json!({"spec": {"replicas": 4}})),
        )
        .await
        .expect("patch while stopped");
    let acknowledged = Timestamp::now();
    f.clusters
        .patch_status(
            "db",
            &PatchParams {
                field_manager: Some(OPERATOR_FIELD_MANAGER.into()),
                ..Default::default()
            },
            &Patch::Merge(json!({"status": {"sentinel": {
                "lastHandledTriggerID": "an-earlier-trigger",
                "lastHandledAt": acknowledged.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string(),
            }}})),
        )
        .await
        .expect("acknowledge");
    let edit_second = edited
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .find(|e| e.manager.as_deref() == Some("night-shift"))
        .and_then(|e| e.time.as_ref())
        .map(|t| t.0.as_second());
    assert_eq!(
        edit_second,
        Some(acknowledged.as_second()),
        "the edit and the acknowledgement share one second"
    );
    f.start_sentinel().await;
    let t = f.nth_trigger("db", 1, Duration::from_secs(15)).await;
    assert_eq!(names(&t), ["StatefulSet/db"]);
}
