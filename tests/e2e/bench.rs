//! `kube-sentinel bench` on a short profile, as CI runs it: its own control plane, every
//! variant (ours in both modes, the three baselines) under the same load, and the figures.

use std::{path::PathBuf, time::Duration};

use kube::{Api, api::PostParams};
use kube_sentinel::{operator::crd::StatefulCluster, testenv::ControlPlaneConfig};
use serde_json::json;

use crate::support::{self, SubcommandRun};

/// The short profile: four resources, one drift a second for six seconds; three churned; the
/// sentinel watching 20, then 50 more objects; two spec changes a second in the backlog. (With
/// two, the backlog drifted one resource, which a 2 s window lets drift only every few
/// seconds: a loaded machine made two drifts of it, fewer than the test asks.)
const SHORT_PROFILE: [&str; 26] = [
    "--resources",
    "4",
    "--rate",
    "1",
    "--duration",
    "6s",
    "--modes",
    "trailing,leading",
    "--baselines",
    "single-lane,watch-owned,resync",
    "--resync",
    "5s",
    "--storm-patches",
    "100",
    "--repeats",
    "2",
    "--seed",
    "7",
    "--churn-resources",
    "3",
    "--scale-objects",
    "20,50",
    "--backlog-rate",
    "2",
    "--scenarios",
    "steady,repeated,storm,backlog,churn,scale",
];

#[test]
fn a_short_bench_measures_every_variant_and_loses_no_drift() {
    let bin_dir = ControlPlaneConfig::from_build_script()
        .expect("control-plane binaries")
        .bin_dir;
    let bin_dir = bin_dir.to_str().expect("a UTF-8 path");
    let mut args = SHORT_PROFILE.to_vec();
    args.extend(["--bin-dir", bin_dir]);
    let run = SubcommandRun::run("bench", &args);
    let summary = run.json("summary.json");
    let (stdout, out) = (&run.stdout, &run.out);
    let variants = summary["variants"].as_array().expect("variants");
    let names: Vec<&str> = variants
        .iter()
        .map(|v| v["variant"].as_str().expect("a name"))
        .collect();
    assert_eq!(
        names,
        [
            "trailing",
            "leading",
            "single-lane",
            "watch-owned",
            "resync"
        ],
        "{stdout}"
    );
    for v in variants {
        let name = v["variant"].as_str().expect("a name");
        let steady = &v["steady"];
        let injected = steady["injected"].as_u64().expect("injected");
        assert!(injected >= 3, "{name}: {steady:#}");
        assert_eq!(
            steady["reverted"], injected,
            "{name}: every drift reverted: {steady:#}"
        );
        assert_eq!(steady["lost"], 0, "{name}: {steady:#}");
        let per_kind: u64 = steady["by_kind"]
            .as_array()
            .expect("by_kind")
            .iter()
            .map(|k| k["latency_ms"]["count"].as_u64().expect("a count"))
            .sum();
        assert_eq!(
            per_kind, injected,
            "{name}: every revert in its kind: {steady:#}"
        );
        assert_eq!(steady["write_errors"], 0, "{name}: {steady:#}");
        let p50 = steady["latency_ms"]["p50"].as_f64().expect("p50");
        let max = steady["latency_ms"]["max"].as_f64().expect("max");
        assert!(0.0 < p50 && p50 <= max, "{name}: {steady:#}");
        assert!(
            steady["ratio_to_trailing"]["p99"].as_f64().is_some(),
            "{name}: a ratio to ours: {steady:#}"
        );
        assert!(
            out.join(format!("{name}-steady.hgrm")).exists(),
            "{name}: its .hgrm file"
        );
        let programs = v["programs"].as_array().expect("programs");
        let expected = if name == "watch-owned" || name == "resync" {
            1
        } else {
            2
        };
        assert_eq!(programs.len(), expected, "{name}: {programs:?}");
        for p in programs {
            assert!(
                p["stats"]["peak_rss_mib"].as_f64().expect("rss") > 1.0,
                "{p}"
            );
        }
    }
    for ours in &variants[..2] {
        let repeated = ours["repeated"]["latency_ms"].as_array().expect("repeated");
        assert_eq!(repeated.len(), 2, "{ours:#}");
        // The storm's label was read back reverted (the bench fails otherwise); what it cost:
        let storm = &ours["storm"];
        assert_eq!(storm["patches"], 100, "{storm:#}");
        assert!(
            storm["triggers"].as_f64().expect("triggers") >= 1.0,
            "{storm:#}"
        );
        assert!(
            storm["fast_reconciles"].as_f64().expect("fast") >= 1.0,
            "{storm:#}"
        );
    }
    // The backlog: ours and the single lane under spec changes to one resource, drift on the
    // other, nothing lost.
    for v in &variants[..3] {
        let backlog = &v["backlog"];
        assert!(
            backlog["spec_changes"].as_u64().expect("spec changes") >= 6,
            "{backlog:#}"
        );
        assert!(
            backlog["full_reconciles"]
                .as_u64()
                .expect("full reconciles")
                >= 1,
            "{backlog:#}"
        );
        let drift = &backlog["drift"];
        let injected = drift["injected"].as_u64().expect("injected");
        assert!(injected >= 3, "{backlog:#}");
        assert_eq!(drift["reverted"], injected, "{backlog:#}");
        assert_eq!(drift["lost"], 0, "{backlog:#}");
    }
    for v in &variants[3..] {
        assert!(
            v["backlog"].is_null(),
            "only the single lane is compared on the backlog: {v:#}"
        );
    }
    for ours in &variants[..2] {
        // Each churned resource reverted (two recorders each) and took its recorders with it.
        let churn = &ours["churn"];
        let before = churn["recorders_before"]
            .as_f64()
            .expect("recorders before");
        let rounds = churn["rounds"].as_array().expect("rounds");
        assert_eq!(rounds.len(), 2, "{churn:#}");
        for round in rounds {
            assert_eq!(round["recorders_drifted"], before + 6.0, "{churn:#}");
            assert_eq!(round["recorders_deleted"], before, "{churn:#}");
            assert!(
                round["operator"]["rss_mib"].as_f64().expect("rss") > 1.0,
                "{churn:#}"
            );
        }
    }
    // Every revert of ours timed stage by stage, from the programs' own instants.
    for ours in &variants[..2] {
        let breakdown = &ours["steady"]["breakdown"];
        assert!(
            breakdown["measured"].as_u64().expect("measured") >= 1,
            "{breakdown:#}"
        );
        let stages: Vec<&str> = breakdown["stages"]
            .as_array()
            .expect("stages")
            .iter()
            .map(|s| s["stage"].as_str().expect("a name"))
            .collect();
        assert_eq!(
            stages,
            [
                "write_to_detected",
                "detected_to_triggered",
                "triggered_to_queued",
                "queued_to_started",
                "started_to_reverted",
                "reverted_to_seen"
            ]
        );
    }
    // In trailing mode the trigger comes after the storm has ended, so its fast path reverts
    // the label itself (in leading mode the storm may outlast the fast path's tries, and the
    // full path it falls back to reverts it).
    let trailing_storm = &variants[0]["storm"];
    assert!(
        trailing_storm["reverted_objects"]
            .as_f64()
            .expect("reverts")
            >= 1.0,
        "{trailing_storm:#}"
    );
    assert!(
        stdout.contains("variant      scenario"),
        "the table: {stdout}"
    );
}

/// The smallest load: one resource, ours in trailing mode, a few drifts.
const TINY_PROFILE: [&str; 13] = [
    "--resources",
    "1",
    "--rate",
    "1",
    "--duration",
    "4s",
    "--modes",
    "trailing",
    "--baselines",
    "--scenarios",
    "steady",
    "--seed",
    "3",
];

#[tokio::test]
async fn a_bench_on_a_named_cluster_refuses_one_it_would_disturb_and_measures_on_one_of_its_own() {
    let config = ControlPlaneConfig::from_build_script().expect("control-plane binaries");
    let (plane, admin) = support::own_control_plane(config, "elsewhere").await;
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = dir.path().join("admin.kubeconfig");
    plane
        .write_admin_kubeconfig(&kubeconfig)
        .expect("kubeconfig");
    let mut args: Vec<PathBuf> = TINY_PROFILE.iter().map(PathBuf::from).collect();
    args.extend([PathBuf::from("--kubeconfig"), kubeconfig]);

    // A StatefulCluster of someone else's: the bench's operator would reconcile it.
    support::install_crd(&admin).await;
    let theirs: StatefulCluster = serde_json::from_value(json!({
        "apiVersion": "kube-sentinel.dev/v1alpha1", "kind": "StatefulCluster",
        "metadata": {"name": "theirs"},
        "spec": {
            "replicas": 1, "image": "registry.k8s.io/pause", "version": "3.10",
            "ports": [{"name": "client", "port": 7000}], "paused": true,
        },
    }))
    .expect("a StatefulCluster");
    let clusters: Api<StatefulCluster> = Api::namespaced(admin.clone(), "elsewhere");
    clusters
        .create(&PostParams::default(), &theirs)
        .await
        .expect("create theirs");
    let args_ = args.clone();
    let refused = tokio::task::spawn_blocking(move || SubcommandRun::run("bench", &args_))
        .await
        .expect("bench");
    assert!(!refused.status.success(), "{refused}");
    assert!(
        refused.stderr.contains("StatefulCluster elsewhere/theirs"),
        "the refusal names what it would disturb: {refused}"
    );
    assert!(
        !refused.stdout.contains("starting the local control plane"),
        "{refused}"
    );

    clusters
        .delete("theirs", &Default::default())
        .await
        .expect("delete theirs");
    support::eventually(Duration::from_secs(30), "theirs gone", || async {
        clusters
            .get_opt("theirs")
            .await
            .expect("get")
            .is_none()
            .then_some(())
    })
    .await;
    let measured = tokio::task::spawn_blocking(move || SubcommandRun::run("bench", &args))
        .await
        .expect("bench");
    let summary = measured.json("summary.json");
    assert!(
        measured.stdout.contains("running on the cluster of"),
        "{measured}"
    );
    let steady = &summary["variants"][0]["steady"];
    let injected = steady["injected"].as_u64().expect("injected");
    assert!(injected >= 2, "{steady:#}");
    assert_eq!(steady["reverted"], injected, "{steady:#}");
    // The bench's namespaces are gone from the cluster it was given, the CRD stays.
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(admin.clone());
    let bench = namespaces.get_opt("bench").await.expect("get");
    assert!(
        bench.is_none_or(|n| n.metadata.deletion_timestamp.is_some()),
        "namespace bench deleted"
    );
    plane.stop().await;
}
