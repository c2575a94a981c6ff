//! `kube-sentinel faults --profile short`, as CI runs it: its own control plane, toxiproxy, two
//! replicas of each program; an API-server crash, a sentinel leader killed inside a window, a
//! cut network path and APF 429s, each under steady drift. The full profile is the documented
//! command (RELIABILITY.md).

use kube_sentinel::testenv::ControlPlaneConfig;

use crate::support::SubcommandRun;

#[test]
fn the_short_fault_profile_loses_no_drift_and_shows_each_fault_happened() {
    let bin_dir = ControlPlaneConfig::from_build_script()
        .expect("control-plane binaries")
        .bin_dir;
    let bin_dir = bin_dir.to_str().expect("a UTF-8 path");
    let run = SubcommandRun::run(
        "faults",
        &[
            "--profile",
            "short",
            "--resources",
            "10",
            "--bin-dir",
            bin_dir,
        ],
    );
    let rows = run.json("faults.json");
    let rows = rows.as_array().expect("rows");
    let last = run.stdout.lines().last().unwrap_or_default();
    assert_eq!(last, "4 passed, 0 failed", "{run}");
    let faults: Vec<&str> = rows.iter().filter_map(|r| r["fault"].as_str()).collect();
    assert_eq!(
        faults,
        [
            "apiserver-kill",
            "sentinel-leader-kill",
            "outage",
            "throttled"
        ]
    );
    for row in rows {
        let count = |field: &str| row[field].as_u64().expect(field);
        assert!(count("injected") > 0, "{row}");
        assert_eq!(count("reverted"), count("injected"), "{row}");
        assert_eq!(count("lost") + count("unacknowledged"), 0, "{row}");
    }
    // Each fault was real: the programs saw the API server go (watch errors), a new sentinel
    // leader took over, the path was cut (watch errors), the API server answered 429.
    let counted = |i: usize, field: &str| rows[i]["counted"][field].as_f64().expect(field);
    assert!(counted(0, "watch_errors") > 0.0, "{}", rows[0]);
    assert!(
        rows[1]["notes"]
            .as_str()
            .is_some_and(|n| n.contains("leads after")),
        "{}",
        rows[1]
    );
    assert!(counted(2, "watch_errors") > 0.0, "{}", rows[2]);
    assert!(counted(3, "throttled") > 0.0, "{}", rows[3]);
    let table = std::fs::read_to_string(run.out.join("faults.md")).expect("faults.md");
    assert!(table.contains("| apiserver-kill |"), "{table}");
}
