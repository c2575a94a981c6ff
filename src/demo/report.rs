//! The figures: drift-to-revert percentiles, and what the programs' own `/metrics` and
//! `/debug/latency` say.

use std::path::Path;

use anyhow::{Context, Result};

use super::{
    DemoOptions,
    programs::{ProgramKind, Programs},
    rounds::Rounds,
};
use crate::{telemetry::LatencySummary, testenv};

/// Counter samples worth showing: the drift, trigger, reconcile and revert counts.
const REPORTED_COUNTERS: [&str; 9] = [
    "kube_sentinel_sentinel_events_seen_total",
    "kube_sentinel_sentinel_events_ignored_total",
    "kube_sentinel_sentinel_drifts_detected_total",
    "kube_sentinel_sentinel_triggers_written_total",
    "kube_sentinel_sentinel_triggers_coalesced_total",
    "kube_sentinel_sentinel_triggers_failed_total",
    "kube_sentinel_operator_reconciles_total",
    "kube_sentinel_operator_reverted_objects_total",
    "kube_sentinel_operator_manager_runs_total",
];

/// Prints the percentiles of the rounds' drift-to-revert times.
pub(crate) fn print_summary(rounds: &Rounds, options: &DemoOptions) {
    let summary = rounds.latency.snapshot().summary();
    println!(
        "\ndrift-to-revert over {} rounds: p50 {} ms, p90 {} ms, p99 {} ms, max {} ms",
        summary.count,
        summary.p50.as_millis(),
        summary.p90.as_millis(),
        summary.p99.as_millis(),
        summary.max.as_millis()
    );
    println!(
        "  (from just before the outside change to the read-back of the restored object, with \
         status.sentinel.lastHandledTriggerID == triggerID; includes the sentinel's {} ms {} \
         debounce window)",
        options.debounce.as_millis(),
        options.mode_name()
    );
}

/// The figures as JSON: `injected`, `reverted`, `latency_ms` percentiles and every round.
pub(crate) fn summary_json(rounds: &Rounds, options: &DemoOptions) -> serde_json::Value {
    let summary = rounds.latency.snapshot().summary();
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
    let LatencySummary {
        p50, p90, p99, max, ..
    } = summary;
    serde_json::json!({
        "mode": options.mode_name(),
        "debounce_ms": ms(options.debounce),
        "injected": rounds.records.len(),
        // A round ends only when its object reads back restored: each record is a revert.
        "reverted": rounds.records.len(),
        "reverted_by_fast_path": rounds.records.iter().filter(|r| r.outcome == "corrected").count(),
        "latency_ms": { "p50": ms(p50), "p90": ms(p90), "p99": ms(p99), "max": ms(max) },
        "rounds": rounds.records,
    })
}

/// Writes [`summary_json`] to `path`.
pub(crate) fn write_summary_json(
    path: &Path,
    rounds: &Rounds,
    options: &DemoOptions,
) -> Result<()> {
    let text = serde_json::to_string_pretty(&summary_json(rounds, options))
        .context("serializing the summary")?;
    std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))
}

/// Full reconciles the operator has completed, from its `/metrics` on `port`; `None` if
/// unreadable.
pub(crate) async fn full_reconciles(port: u16) -> Option<u64> {
    counter(
        port,
        "kube_sentinel_operator_reconciles_total",
        "path=\"full\"",
    )
    .await
    .map(|n| n as u64)
}

/// The sum of the samples of counter `name` whose labels contain `label` (`""`: every
/// sample), from the `/metrics` on `port`; `None` if unreadable.
pub(crate) async fn counter(port: u16, name: &str, label: &str) -> Option<f64> {
    let body = metrics(port, "/metrics").await.ok()?;
    Some(counter_in(&body, name, label))
}

/// The sum of the samples of metric `name` whose labels contain `label`, in the text
/// exposition `body`.
pub(crate) fn counter_in(body: &str, name: &str, label: &str) -> f64 {
    body.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
                && l.contains(label)
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The text exposition of a program's `/metrics`.
pub(crate) async fn metrics_text(port: u16) -> anyhow::Result<String> {
    metrics(port, "/metrics").await
}

/// Prints the operator's `/debug/latency` and the counters of both programs' `/metrics`.
pub(crate) async fn print_program_figures(programs: &Programs) {
    if let Some(port) = programs.port(ProgramKind::Operator) {
        match metrics(port, "/debug/latency").await {
            Ok(body) => println!("\noperator /debug/latency:\n{}", indent(&body)),
            Err(e) => println!("\noperator /debug/latency unavailable: {e:#}"),
        }
    }
    for program in programs.iter() {
        let name = program.kind();
        match metrics(program.port(), "/metrics").await {
            Ok(body) => {
                let lines: Vec<&str> = body.lines().filter(|l| is_reported_counter(l)).collect();
                println!(
                    "\n{name} /metrics (counters):\n{}",
                    indent(&lines.join("\n"))
                );
            }
            Err(e) => println!("\n{name} /metrics unavailable: {e:#}"),
        }
    }
}

/// The body of `GET path` on a program's metrics port; an error unless it answers 200.
async fn metrics(port: u16, path: &str) -> anyhow::Result<String> {
    testenv::http_get(port, path).await?.ok_body()
}

fn is_reported_counter(line: &str) -> bool {
    REPORTED_COUNTERS.iter().any(|name| {
        line.strip_prefix(name)
            .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
    })
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("  {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_the_counters_and_not_their_metadata() {
        assert!(is_reported_counter(
            "kube_sentinel_sentinel_triggers_written_total 5"
        ));
        assert!(is_reported_counter(
            "kube_sentinel_operator_reverted_objects_total{kind=\"Service\"} 2"
        ));
        assert!(!is_reported_counter(
            "# TYPE kube_sentinel_sentinel_triggers_written counter"
        ));
        assert!(!is_reported_counter(
            "kube_sentinel_sentinel_triggers_written_total_extra 1"
        ));
    }
}
