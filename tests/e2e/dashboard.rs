//! The Grafana dashboard in `deploy/monitoring/` queries only metrics that the programs serve:
//! every metric name in its PromQL is on a running operator's or sentinel's `/metrics`.

use std::{collections::BTreeSet, time::Duration};

use k8s_openapi::api::apps::v1::StatefulSet;
use kube::api::{Api, Patch, PatchParams};
use kube_sentinel::operator::crd::StatefulCluster;
use serde_json::{Value, json};

use crate::{
    operator::running::{self, Kubelet},
    support::{REPO, control_plane, eventually, http_ok_body},
};

/// Every metric name the dashboard's queries select (each written with a `{...}` selector).
fn dashboard_metrics() -> BTreeSet<String> {
    let text = std::fs::read_to_string(format!("{REPO}/deploy/monitoring/grafana-dashboard.json"))
        .expect("dashboard");
    let dashboard: Value = serde_json::from_str(&text).expect("dashboard JSON");
    let mut names = BTreeSet::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("expr");
            names.extend(selected_metrics(expr));
        }
    }
    names
}

/// The identifiers of `expr` directly followed by a `{` selector.
fn selected_metrics(expr: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut name = String::new();
    for c in expr.chars() {
        if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
            name.push(c);
            continue;
        }
        if c == '{' && !name.is_empty() {
            found.push(name.clone());
        }
        name.clear();
    }
    found
}

/// The metric families a `/metrics` page declares (`# TYPE name ...`).
fn families(page: &str) -> BTreeSet<String> {
    page.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// Whether sample `name` belongs to one of `families` (a counter's `_total`, a histogram's
/// `_bucket`, `_sum`, `_count`).
fn served(name: &str, families: &BTreeSet<String>) -> bool {
    families.contains(name)
        || ["_total", "_bucket", "_sum", "_count"]
            .iter()
            .any(|suffix| {
                name.strip_suffix(suffix)
                    .is_some_and(|f| families.contains(f))
            })
}

#[test]
fn the_dashboard_queries_are_parsed_into_metric_names() {
    let names = dashboard_metrics();
    assert!(
        names.contains("kube_sentinel_operator_revert_latency_seconds_bucket"),
        "{names:?}"
    );
    assert!(
        names.contains("workqueue_longest_running_processor_seconds"),
        "{names:?}"
    );
    assert_eq!(
        selected_metrics(r#"sum by (le) (rate(a_b{x="y"}[5m])) / c{}"#),
        ["a_b", "c"]
    );
}

#[tokio::test]
async fn every_metric_the_dashboard_queries_is_served() {
    let cp = control_plane();
    let admin = cp.admin().await;
    let ns = cp.namespace("dashboard").await;
    let operator = running::start_operator(&ns, &[]).await;
    let _kubelet = Kubelet::start(admin.clone(), &ns);
    let (_sentinel, sentinel_port) = running::start_sentinel_on_port(&ns, &[]).await;
    running::create(&admin, &ns, &running::cluster("db", json!({}))).await;
    running::wait_ready(&admin, &ns, "db").await;
    // One drift reverted, so that the latency histograms and trigger counters have samples.
    let sts: Api<StatefulSet> = Api::namespaced(admin.clone(), &ns);
    let params = PatchParams {
        field_manager: Some("kubectl-scale".into()),
        ..Default::default()
    };
    sts.patch(
        "db",
        &params,
        &Patch::Merge(json!({"spec": {"replicas": 1}})),
    )
    .await
    .expect("drift");
    let clusters: Api<StatefulCluster> = Api::namespaced(admin.clone(), &ns);
    eventually(
        Duration::from_secs(60),
        "the drift acknowledged",
        || async {
            let s = clusters.get("db").await.ok()?.status?.sentinel?;
            (s.last_handled_trigger_id.is_some()
                && s.last_handled_trigger_id == s.trigger.trigger_id)
                .then_some(())
        },
    )
    .await;
    let mut served_families = BTreeSet::new();
    for port in [operator.port, sentinel_port] {
        let page = http_ok_body(port, "/metrics").await.expect("/metrics");
        served_families.extend(families(&page));
    }
    let missing: Vec<String> = dashboard_metrics()
        .into_iter()
        .filter(|name| !served(name, &served_families))
        .collect();
    assert!(
        missing.is_empty(),
        "the dashboard queries metrics no program serves: {missing:?}\nserved: {served_families:?}"
    );
}
