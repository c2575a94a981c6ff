//! The suite's report: a row per scenario, printed as a table, written as `faults.md` (the
//! table RELIABILITY.md shows) and `faults.json`, and the last line `N passed, N failed`.

use std::{path::Path, time::Duration};

use anyhow::{Context, Result};

use super::{fault::Fault, rig::Counters};

/// What one scenario measured and whether its invariants held.
#[derive(Clone, Debug, serde::Serialize)]
pub(crate) struct Row {
    pub fault: Fault,
    /// How long the fault was held (where it has a duration).
    pub hold: Duration,
    /// From injecting to having undone it (restarts and handovers included).
    pub fault_lasted: Duration,
    /// Drifts written (a write the API server refused is not one).
    pub injected: u64,
    /// Drift writes the API server refused during the fault.
    pub write_errors: u64,
    /// Drifts reverted, seen by the load generator's watch or read back after the load.
    pub reverted: u64,
    /// Of those, the ones only the read-back found (the generator's watch was down).
    pub reverted_unseen: u64,
    /// Drifts not reverted within the grace.
    pub lost: u64,
    /// Which: the resource and the kind of drift.
    pub lost_drifts: Vec<String>,
    /// Triggers not acknowledged within the grace.
    pub unacknowledged: u64,
    /// Resources left mid-upgrade.
    pub half_upgraded: u64,
    /// The worst drift→revert of drifts written during the fault.
    pub worst_during: Option<Duration>,
    /// How long after the fault reverts were still slower than the steady state.
    pub recovered_after: Duration,
    pub sentinel_writes_per_drift: f64,
    pub operator_writes_per_drift: f64,
    /// Replicas that exited after losing their Lease (by design) and were replaced.
    pub lease_exits: u64,
    /// The programs' counters over the scenario.
    pub counted: Counters,
    /// What happened, in words.
    pub notes: String,
    /// The invariants that did not hold (empty: passed).
    pub failures: Vec<String>,
}

impl Row {
    pub(crate) fn new(fault: Fault, hold: Duration) -> Self {
        Self {
            fault,
            hold,
            fault_lasted: Duration::ZERO,
            injected: 0,
            write_errors: 0,
            reverted: 0,
            reverted_unseen: 0,
            lost: 0,
            lost_drifts: Vec::new(),
            unacknowledged: 0,
            half_upgraded: 0,
            worst_during: None,
            recovered_after: Duration::ZERO,
            sentinel_writes_per_drift: 0.0,
            operator_writes_per_drift: 0.0,
            lease_exits: 0,
            counted: Counters::default(),
            notes: String::new(),
            failures: Vec::new(),
        }
    }

    pub(crate) fn fail(&mut self, why: String) {
        self.failures.push(why);
    }

    pub(crate) fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

/// The rows as a Markdown table.
pub(crate) fn table(rows: &[Row]) -> String {
    let mut out = String::from(
        "| fault | lasted | injected | reverted (read back) | lost | unacked | worst drift→revert during | recovered after | writes/drift (sentinel, operator) | 429s, 5xx, watch errors (410 Gone), Lease-loss exits | result |\n\
         | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n",
    );
    for row in rows {
        let worst = row
            .worst_during
            .map_or("–".into(), |d| format!("{:.1} s", d.as_secs_f64()));
        let result = if row.passed() {
            "pass".to_string()
        } else {
            format!("**FAIL**: {}", row.failures.join("; "))
        };
        out.push_str(&format!(
            "| {} | {:.1} s | {} | {} ({}) | {} | {} | {worst} | {:.1} s | {:.2}, {:.2} | {}, {}, {} ({}), {} | {result} |\n",
            row.fault.name(),
            row.fault_lasted.as_secs_f64(),
            row.injected,
            row.reverted,
            row.reverted_unseen,
            row.lost,
            row.unacknowledged,
            row.recovered_after.as_secs_f64(),
            row.sentinel_writes_per_drift,
            row.operator_writes_per_drift,
            row.counted.throttled,
            row.counted.server_errors,
            row.counted.watch_errors,
            row.counted.watches_expired,
            row.lease_exits,
        ));
    }
    out
}

/// What each fault did, one line each.
pub(crate) fn notes(rows: &[Row]) -> String {
    rows.iter()
        .map(|r| format!("- {}: {}\n", r.fault.name(), r.notes))
        .collect()
}

/// Writes `faults.md` and `faults.json` to `dir`.
pub(crate) fn write(dir: &Path, heading: &str, rows: &[Row]) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let markdown = format!("{heading}\n\n{}\n{}", table(rows), notes(rows));
    std::fs::write(dir.join("faults.md"), markdown).context("writing faults.md")?;
    let json = serde_json::to_string_pretty(rows).context("the rows as JSON")?;
    std::fs::write(dir.join("faults.json"), json).context("writing faults.json")?;
    Ok(())
}
