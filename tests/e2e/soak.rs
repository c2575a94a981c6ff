//! `kube-sentinel bench --scenarios soak` on a short profile, as CI runs it: steady drift
//! over a small fleet for two and a half minutes while a StatefulCluster is created (and one
//! deleted) every second. Only what cannot be flaky on a loaded machine is asserted: nothing
//! lost, the programs drained at the end, and no state, task or memory kept per deleted
//! resource. The full soak (30 minutes) is the command in RELIABILITY.md.

use kube_sentinel::testenv::ControlPlaneConfig;

use crate::support::SubcommandRun;

/// Fleet resources: the operator's latency recorders may grow by two each after warm-up (a
/// fleet resource first drifted late), and by nothing per churned resource.
const RESOURCES: f64 = 4.0;
/// Alive tasks the end may have above the warm-up's (a request or a retry in flight).
const TASK_SLACK: f64 = 10.0;
/// RSS growth allowed: allocator noise, plus far less per deleted resource than its state
/// (two latency recorders alone are about 74 KB).
const RSS_SLACK_MIB: f64 = 8.0;
const RSS_PER_DELETED_MIB: f64 = 0.05;

const SHORT_SOAK: [&str; 18] = [
    "--scenarios",
    "soak",
    "--modes",
    "trailing",
    "--baselines",
    "--resources",
    "4",
    "--rate",
    "1",
    "--duration",
    "150s",
    "--soak-churn-rate",
    "1",
    "--soak-sample",
    "5s",
    "--seed",
    "11",
    "--debounce=2s",
];

#[test]
fn a_short_soak_loses_nothing_and_keeps_nothing_per_deleted_resource() {
    let bin_dir = ControlPlaneConfig::from_build_script()
        .expect("control-plane binaries")
        .bin_dir;
    let bin_dir = bin_dir.to_str().expect("a UTF-8 path");
    let mut args = SHORT_SOAK.to_vec();
    args.extend(["--bin-dir", bin_dir]);
    let run = SubcommandRun::run("bench", &args);
    let summary = run.json("summary.json");
    let soak = &summary["variants"][0]["soak"];
    let drift = &soak["drift"];
    let injected = drift["injected"].as_u64().expect("injected");
    assert!(injected >= 20, "{drift:#}");
    assert_eq!(drift["reverted"], injected, "{drift:#}");
    assert_eq!(drift["lost"], 0, "{drift:#}");
    let figures = &soak["figures"];
    let churn = &figures["churn"];
    let created = churn["created"].as_u64().expect("created");
    assert!(created >= 30, "{churn:#}");
    assert_eq!(
        churn["deleted"], created,
        "every churned resource deleted: {churn:#}"
    );
    let deleted = created as f64;
    assert!(
        figures["samples"].as_array().expect("samples").len() >= 10,
        "{figures:#}"
    );
    let series = |name: &str| -> (f64, f64) {
        let s = figures["series"]
            .as_array()
            .expect("series")
            .iter()
            .find(|s| s["name"] == name)
            .unwrap_or_else(|| panic!("series {name}: {figures:#}"));
        let value = |field: &str| -> f64 {
            s[field]
                .as_f64()
                .unwrap_or_else(|| panic!("{name}.{field}: {s:#}"))
        };
        (value("warm"), value("end"))
    };
    // Drained: no open burst, no queued work.
    assert_eq!(series("sentinel_pending_keys").1, 0.0, "{figures:#}");
    assert_eq!(series("operator_queue_depth").1, 0.0, "{figures:#}");
    let (warm, end) = series("operator_latency_recorders");
    assert!(
        end <= warm + 2.0 * RESOURCES,
        "{warm} -> {end}: {figures:#}"
    );
    for program in ["sentinel", "operator"] {
        let (warm, end) = series(&format!("{program}_alive_tasks"));
        assert!(warm > 0.0, "{program}: tokio_alive_tasks read: {figures:#}");
        assert!(
            end <= warm + TASK_SLACK,
            "{program}: tasks {warm} -> {end}: {figures:#}"
        );
        let (warm, end) = series(&format!("{program}_rss_mib"));
        assert!(
            end - warm <= RSS_SLACK_MIB + RSS_PER_DELETED_MIB * deleted,
            "{program}: RSS {warm} -> {end} MiB over {deleted} deleted: {figures:#}"
        );
    }
    assert!(run.out.join("soak.svg").exists(), "soak.svg written");
    assert!(run.stdout.contains("sentinel_pending_keys"), "{run}");
}
