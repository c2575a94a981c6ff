//! The figures of a benchmark run: a table on standard output, `.hgrm` percentile files and a
//! JSON summary, every baseline also as a ratio to ours.

use std::{path::Path, time::Duration};

use anyhow::{Context, Result};
use serde::Serialize;
use serde_json::{Value, json};

use super::{
    backlog::BacklogResult,
    churn::ChurnResult,
    options::{BenchOptions, Variant},
    scale::ScaleResult,
    scenarios::{ARGO_CD_SELF_HEAL_BACKOFF_S, StormResult},
    soak::{self, SoakResult},
    steady::SteadyResult,
};
use crate::telemetry::LatencySummary;

/// `/proc`'s clock tick (USER_HZ), 100 on every Linux architecture.
const USER_HZ: f64 = 100.0;

/// CPU time and memory of one program, read from `/proc` before it stops.
#[derive(Clone, Copy, Debug, Serialize)]
pub(crate) struct ProcessStats {
    /// User and system CPU seconds.
    pub cpu_seconds: f64,
    /// Peak resident set size (VmHWM), MiB.
    pub peak_rss_mib: f64,
    /// Resident set size now (VmRSS), MiB.
    pub rss_mib: f64,
    /// Of that, anonymous memory (RssAnon: heap, stacks), MiB: what the process allocated.
    pub rss_anon_mib: f64,
    /// Of that, file-backed pages (RssFile: the binary's code), MiB, shared and reclaimable.
    pub rss_file_mib: f64,
}

/// [`ProcessStats`] of process `pid`, if `/proc` has it.
pub(crate) fn process_stats(pid: u32) -> Option<ProcessStats> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start at the last ')'.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i)?.parse::<f64>().ok();
    // utime and stime are fields 14 and 15 of stat(5); 11 and 12 after the name and state.
    let cpu_seconds = (ticks(11)? + ticks(12)?) / USER_HZ;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let mib = |field: &str| -> Option<f64> {
        let kib: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix(field))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        Some(kib / 1024.0)
    };
    Some(ProcessStats {
        cpu_seconds,
        peak_rss_mib: mib("VmHWM:")?,
        rss_mib: mib("VmRSS:")?,
        rss_anon_mib: mib("RssAnon:")?,
        rss_file_mib: mib("RssFile:")?,
    })
}

/// Everything one variant measured.
pub(crate) struct VariantReport {
    /// Which variant.
    pub variant: Variant,
    /// The steady scenario, if run.
    pub steady: Option<SteadyResult>,
    /// The repeated scenario's drift→revert times, if run.
    pub repeated: Option<Vec<Duration>>,
    /// The storm scenario, if run.
    pub storm: Option<StormResult>,
    /// The backlog scenario, if run.
    pub backlog: Option<BacklogResult>,
    /// The churn scenario, if run.
    pub churn: Option<ChurnResult>,
    /// The scale scenario, if run.
    pub scale: Option<ScaleResult>,
    /// The soak scenario, if run.
    pub soak: Option<SoakResult>,
    /// The programs' CPU and memory, by program.
    pub programs: Vec<(String, ProcessStats)>,
    /// The operator's own `/debug/latency` (its detection→revert histogram).
    pub operator_latency: Option<String>,
}

impl VariantReport {
    /// Nothing measured yet for `variant`.
    pub(crate) fn new(variant: Variant) -> Self {
        Self {
            variant,
            steady: None,
            backlog: None,
            repeated: None,
            storm: None,
            churn: None,
            scale: None,
            soak: None,
            programs: Vec::new(),
            operator_latency: None,
        }
    }
}

/// The JSON summary of every variant, with each baseline's steady p50 and p99 as a ratio to
/// ours in trailing mode (the default).
pub(crate) fn summary(options: &BenchOptions, reports: &[VariantReport]) -> Value {
    let trailing = reports.iter().find(|r| r.variant == Variant::Trailing);
    let references = References {
        steady: trailing
            .and_then(|r| r.steady.as_ref())
            .map(|s| s.latency.snapshot().summary()),
        backlog: trailing
            .and_then(|r| r.backlog.as_ref())
            .map(|b| b.drift.latency.snapshot().summary()),
    };
    json!({
        "machine": { "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0) },
        "date": jiff::Timestamp::now().to_string(),
        "command": std::env::args().collect::<Vec<_>>().join(" "),
        "load": {
            "resources": options.resources,
            "rate_per_s": options.rate,
            "duration_s": options.duration.as_secs_f64(),
            "kinds": options.kinds.iter().map(|k| k.to_string()).collect::<Vec<_>>(),
            "debounce_ms": ms(options.debounce),
            "seed": options.seed,
            "backlog_spec_changes_per_s": options.backlog_rate,
        },
        "argo_cd_self_heal_backoff_s": ARGO_CD_SELF_HEAL_BACKOFF_S,
        "variants": reports.iter().map(|r| variant_json(r, &references)).collect::<Vec<_>>(),
    })
}

/// Ours in trailing mode, which every ratio is taken to.
struct References {
    steady: Option<LatencySummary>,
    backlog: Option<LatencySummary>,
}

fn variant_json(report: &VariantReport, references: &References) -> Value {
    let steady = report
        .steady
        .as_ref()
        .map(|s| steady_json(s, references.steady.as_ref()));
    let backlog = report.backlog.as_ref().map(|b| {
        json!({
            "spec_changes": b.spec_changes,
            "spec_changes_skipped": b.spec_changes_skipped,
            "spec_change_errors": b.spec_change_errors,
            "full_reconciles": b.full_reconciles,
            "drift": steady_json(&b.drift, references.backlog.as_ref()),
        })
    });
    let repeated = report.repeated.as_ref().map(|times| {
        let all: Vec<f64> = times.iter().map(|d| ms(*d)).collect();
        let last_to_first = match (times.first(), times.last()) {
            (Some(first), Some(last)) => ratio(*last, *first),
            _ => None,
        };
        json!({ "latency_ms": all, "last_to_first": last_to_first })
    });
    json!({
        "variant": report.variant,
        "steady": steady,
        "backlog": backlog,
        "repeated": repeated,
        "storm": report.storm,
        "churn": report.churn,
        "scale": report.scale,
        "soak": report.soak.as_ref().map(|s| json!({
            "drift": steady_json(&s.drift, None),
            "figures": s,
        })),
        "programs": report.programs.iter().map(|(name, stats)| json!({"program": name, "stats": stats})).collect::<Vec<_>>(),
    })
}

/// A drift run's counts, percentiles, stage breakdown and ratio to `reference`.
fn steady_json(s: &SteadyResult, reference: Option<&LatencySummary>) -> Value {
    let summary = s.latency.snapshot().summary();
    json!({
        "injected": s.injected,
        "reverted": s.reverted,
        "lost": s.lost,
        "write_errors": s.write_errors,
        "skipped_ticks": s.skipped,
        "watch_errors": s.watch_errors,
        "latency_ms": percentiles(&summary),
        "by_kind": s.by_kind.iter().map(|(kind, recorder)| json!({
            "kind": kind.to_string(),
            "latency_ms": percentiles(&recorder.snapshot().summary()),
        })).collect::<Vec<_>>(),
        "breakdown": (s.breakdown.measured > 0).then(|| json!({
            "measured": s.breakdown.measured,
            "unmatched": s.breakdown.unmatched,
            "negative_clamped": s.breakdown.negative,
            "stages": s.breakdown.summary(),
        })),
        "api_writes": s.api_writes,
        "api_writes_per_drift": s.api_writes.per(s.injected),
        "ratio_to_trailing": reference.map(|r| json!({
            "p50": ratio(summary.p50, r.p50),
            "p99": ratio(summary.p99, r.p99),
        })),
    })
}

fn percentiles(s: &LatencySummary) -> Value {
    json!({
        "p50": ms(s.p50), "p90": ms(s.p90), "p99": ms(s.p99), "p99_9": ms(s.p999), "max": ms(s.max),
        "count": s.count,
    })
}

fn ratio(value: Duration, reference: Duration) -> Option<f64> {
    (!reference.is_zero()).then(|| value.as_secs_f64() / reference.as_secs_f64())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Writes `summary.json` and one `.hgrm` file per steady run (and the operator's own
/// histogram) to `dir`, and the summary to `extra` too.
pub(crate) fn write(
    dir: &Path,
    extra: Option<&Path>,
    summary: &Value,
    reports: &[VariantReport],
) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let text = serde_json::to_string_pretty(summary).context("serializing the summary")? + "\n";
    for path in std::iter::once(dir.join("summary.json")).chain(extra.map(Path::to_path_buf)) {
        std::fs::write(&path, &text).with_context(|| format!("writing {}", path.display()))?;
    }
    for report in reports {
        if let Some(steady) = &report.steady {
            let path = dir.join(format!("{}-steady.hgrm", report.variant));
            let hgrm = steady.latency.snapshot().percentile_distribution();
            std::fs::write(&path, hgrm).with_context(|| format!("writing {}", path.display()))?;
        }
        if let Some(backlog) = &report.backlog {
            let path = dir.join(format!("{}-backlog.hgrm", report.variant));
            let hgrm = backlog.drift.latency.snapshot().percentile_distribution();
            std::fs::write(&path, hgrm).with_context(|| format!("writing {}", path.display()))?;
        }
        if let Some(operator) = &report.operator_latency {
            let path = dir.join(format!("{}-operator.hgrm", report.variant));
            std::fs::write(&path, operator)
                .with_context(|| format!("writing {}", path.display()))?;
        }
    }
    Ok(())
}

/// A drift run's row and, if the programs' timestamps were read, its stages.
fn print_drift_rows(variant: Variant, scenario: &str, s: &SteadyResult) {
    let q = s.latency.snapshot().summary();
    println!(
        "{:<12} {:<9} {:>8} {:>8} {:>9.1} {:>9.1} {:>9.1} {:>9.1}",
        variant.to_string(),
        scenario,
        s.injected,
        s.reverted,
        ms(q.p50),
        ms(q.p90),
        ms(q.p99),
        ms(q.max)
    );
    if !s.by_kind.is_empty() {
        let kinds: Vec<String> = s
            .by_kind
            .iter()
            .map(|(kind, recorder)| {
                let q = recorder.snapshot().summary();
                format!("{kind} {:.0}/{:.0}", ms(q.p50), ms(q.p99))
            })
            .collect();
        println!(
            "{:<12} {:<9} p50/p99 ms: {}",
            variant.to_string(),
            "by kind",
            kinds.join(", ")
        );
    }
    let per_drift = s.api_writes.per(s.injected);
    let fmt = |n: Option<f64>| n.map_or("-".into(), |n| format!("{n:.2}"));
    println!(
        "{:<12} {:<9} API writes per drift: sentinel {}, operator {}",
        variant.to_string(),
        scenario,
        fmt(per_drift.sentinel),
        fmt(per_drift.operator)
    );
    if s.breakdown.measured > 0 {
        let stages: Vec<String> = s
            .breakdown
            .summary()
            .iter()
            .map(|st| format!("{} {:.0}/{:.0}", st.stage, st.p50_ms, st.p99_ms))
            .collect();
        println!(
            "{:<12} {:<9} p50/p99 ms: {}",
            variant.to_string(),
            "stages",
            stages.join(", ")
        );
    }
}

/// One line per variant and scenario, for standard output.
pub(crate) fn print_table(reports: &[VariantReport]) {
    println!(
        "\n{:<12} {:<9} {:>8} {:>8} {:>9} {:>9} {:>9} {:>9}",
        "variant", "scenario", "injected", "reverted", "p50 ms", "p90 ms", "p99 ms", "max ms"
    );
    for r in reports {
        if let Some(s) = &r.steady {
            print_drift_rows(r.variant, "steady", s);
        }
        if let Some(b) = &r.backlog {
            print_drift_rows(r.variant, "backlog", &b.drift);
            println!(
                "{:<12} {:<9} {} spec changes ({} skipped, {} refused), {} full reconciles",
                r.variant.to_string(),
                "backlog",
                b.spec_changes,
                b.spec_changes_skipped,
                b.spec_change_errors,
                b.full_reconciles.map_or("?".into(), |n| n.to_string())
            );
        }
        if let Some(times) = &r.repeated {
            let all: Vec<String> = times.iter().map(|d| format!("{:.0}", ms(*d))).collect();
            println!(
                "{:<12} {:<9} ms: {}",
                r.variant.to_string(),
                "repeated",
                all.join(" ")
            );
        }
        if let Some(storm) = &r.storm {
            println!(
                "{:<12} {:<9} {} patches in {:.0} ms -> {} triggers, {} fast reconciles, {} reverted objects; reverted {:.0} ms after the last patch",
                r.variant.to_string(),
                "storm",
                storm.patches,
                storm.patching_ms,
                storm.triggers,
                storm.fast_reconciles,
                storm.reverted_objects,
                storm.revert_after_last_patch_ms
            );
        }
        if let Some(churn) = &r.churn {
            let rounds: Vec<String> = churn
                .rounds
                .iter()
                .map(|round| {
                    format!(
                        "{:.1} MiB ({} recorders after drift, {} after delete)",
                        round.operator.rss_mib, round.recorders_drifted, round.recorders_deleted
                    )
                })
                .collect();
            println!(
                "{:<12} {:<9} {} resources per round; operator RSS {:.1} MiB before, after each round: {}",
                r.variant.to_string(),
                "churn",
                churn.resources,
                churn.before.rss_mib,
                rounds.join(", ")
            );
        }
        if let Some(s) = &r.soak {
            print_drift_rows(r.variant, "soak", &s.drift);
            soak::print(&r.variant.to_string(), s);
        }
        if let Some(scale) = &r.scale {
            for level in &scale.levels {
                println!(
                    "{:<12} {:<9} {} objects: sentinel {:.1} MiB after sync ({:.1} idle, {:.0} B/object), synced in {:.1} s, {:.3} CPU s per 1k events",
                    r.variant.to_string(),
                    "scale",
                    level.objects,
                    level.synced.rss_mib,
                    scale.idle.rss_mib,
                    level.bytes_per_object,
                    level.sync_s,
                    level.cpu_s_per_1k_events
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_cpu_time_and_a_peak_rss() {
        let stats = process_stats(std::process::id()).expect("/proc of this process");
        assert!(stats.peak_rss_mib > 1.0, "{stats:?}");
        assert!(
            stats.rss_mib > 1.0 && stats.rss_mib <= stats.peak_rss_mib,
            "{stats:?}"
        );
        assert!(stats.cpu_seconds >= 0.0, "{stats:?}");
    }

    #[test]
    fn a_ratio_to_nothing_is_none() {
        assert_eq!(ratio(Duration::from_secs(1), Duration::ZERO), None);
        assert_eq!(
            ratio(Duration::from_secs(3), Duration::from_secs(2)),
            Some(1.5)
        );
    }
}
