//! The benchmark's SVG plots: the drift→revert distribution of every variant, the
//! repeated-drift chart beside Argo CD's documented self-heal backoff, where a revert's time
//! goes stage by stage, the sentinel's memory against the objects it watches, and the soak's
//! samples against time.

use std::{path::Path, time::Duration};

use anyhow::{Result, anyhow};
use plotters::prelude::*;

use super::{
    breakdown::{STAGES, StageSummary},
    report::VariantReport,
    scenarios::ARGO_CD_SELF_HEAL_BACKOFF_S,
    soak::SoakResult,
};

/// Quantiles drawn on the distribution plot.
const QUANTILES: [f64; 12] = [
    0.0, 0.25, 0.5, 0.75, 0.9, 0.95, 0.97, 0.99, 0.995, 0.999, 0.9995, 0.9999,
];
const SIZE: (u32, u32) = (760, 440);
const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

/// Writes `latency.svg` (every steady run) and, for the scenarios that ran, `repeated.svg`,
/// `stages.svg` and `scale.svg` to `dir`.
pub(crate) fn write(dir: &Path, reports: &[VariantReport]) -> Result<()> {
    distribution(&dir.join("latency.svg"), reports)?;
    if reports.iter().any(|r| r.repeated.is_some()) {
        repeated(&dir.join("repeated.svg"), reports)?;
    }
    let bars = stage_bars(reports);
    if !bars.is_empty() {
        stages(&dir.join("stages.svg"), &bars)?;
    }
    if let Some(points) = reports.iter().find_map(scale_points) {
        scale(&dir.join("scale.svg"), &points)?;
    }
    if let Some(soaked) = reports.iter().find_map(|r| r.soak.as_ref()) {
        soak(&dir.join("soak.svg"), soaked)?;
    }
    Ok(())
}

/// The soak's panels: each a title and the series drawn in it.
const SOAK_PANELS: [(&str, &[&str]); 4] = [
    ("RSS, MiB", &["sentinel_rss_mib", "operator_rss_mib"]),
    (
        "alive tokio tasks",
        &["sentinel_alive_tasks", "operator_alive_tasks"],
    ),
    (
        "sentinel: open bursts (pending keys)",
        &["sentinel_pending_keys"],
    ),
    (
        "operator: latency recorders, queue depth",
        &["operator_latency_recorders", "operator_queue_depth"],
    ),
];

/// Four panels of the soak's samples against time, warm-up and the load's end marked.
fn soak(path: &Path, soaked: &SoakResult) -> Result<()> {
    let curves = soaked.curves();
    let minutes = soaked
        .samples
        .last()
        .map_or(1.0, |s| s.at_s / 60.0)
        .max(1.0);
    let root = SVGBackend::new(path, (960, 640)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_error)?;
    let root = root
        .titled(
            "soak: drift and churn; warm-up and the load's end marked",
            ("sans-serif", 18),
        )
        .map_err(plot_error)?;
    for (area, (title, names)) in root.split_evenly((2, 2)).iter().zip(SOAK_PANELS) {
        let drawn: Vec<&(&str, Vec<(f64, f64)>)> =
            curves.iter().filter(|(n, _)| names.contains(n)).collect();
        let top = drawn
            .iter()
            .flat_map(|(_, p)| p.iter().map(|p| p.1))
            .fold(1.0_f64, f64::max);
        let mut chart = ChartBuilder::on(area)
            .caption(title, ("sans-serif", 14))
            .margin(8)
            .x_label_area_size(30)
            .y_label_area_size(50)
            .build_cartesian_2d(0.0..minutes, 0.0..top * 1.3)
            .map_err(plot_error)?;
        chart
            .configure_mesh()
            .x_desc("minutes")
            .draw()
            .map_err(plot_error)?;
        for marker in [soaked.warmup_s, soaked.load_s] {
            let at = marker / 60.0;
            let line = [(at, 0.0), (at, top * 1.3)];
            chart
                .draw_series(LineSeries::new(line, BLACK.mix(0.3)))
                .map_err(plot_error)?;
        }
        for (i, (name, points)) in drawn.into_iter().enumerate() {
            let color = COLORS[i % COLORS.len()];
            let points = points.iter().map(|(t, v)| (t / 60.0, *v));
            chart
                .draw_series(LineSeries::new(points, color.stroke_width(2)))
                .map_err(plot_error)?
                .label(*name)
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color));
        }
        legend(&mut chart)?;
    }
    root.present().map_err(plot_error)
}

/// One bar per drift run whose reverts were timed stage by stage: its name and stages.
fn stage_bars(reports: &[VariantReport]) -> Vec<(String, Vec<StageSummary>)> {
    let mut bars = Vec::new();
    for r in reports {
        let runs = [
            ("steady", r.steady.as_ref()),
            ("backlog", r.backlog.as_ref().map(|b| &b.drift)),
        ];
        for (scenario, run) in runs {
            if let Some(run) = run.filter(|s| s.breakdown.measured > 0) {
                bars.push((
                    format!("{}, {scenario}", r.variant),
                    run.breakdown.summary(),
                ));
            }
        }
    }
    bars
}

/// Stacked bars of each stage's median, one per drift run.
fn stages(path: &Path, bars: &[(String, Vec<StageSummary>)]) -> Result<()> {
    let widest = bars
        .iter()
        .map(|(_, stages)| stages.iter().map(|s| s.p50_ms).sum::<f64>())
        .fold(1.0_f64, f64::max);
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(plot_error)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "where a revert's time goes (median of each stage)",
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(130)
        .build_cartesian_2d(0.0..widest * 1.05, -0.5..bars.len() as f64 - 0.5)
        .map_err(plot_error)?;
    chart
        .configure_mesh()
        .x_desc("ms")
        .y_labels(bars.len())
        .y_label_formatter(&|y| {
            let index = y.round();
            (index >= 0.0 && (y - index).abs() < 1e-6)
                .then(|| bars.get(index as usize).map(|(name, _)| name.clone()))
                .flatten()
                .unwrap_or_default()
        })
        .draw()
        .map_err(plot_error)?;
    for (s, name) in STAGES.iter().enumerate() {
        let color = COLORS[s % COLORS.len()];
        let rectangles = bars.iter().enumerate().map(|(i, (_, stages))| {
            let start: f64 = stages[..s].iter().map(|st| st.p50_ms).sum();
            let end = start + stages[s].p50_ms;
            let y = i as f64;
            Rectangle::new([(start, y - 0.35), (end, y + 0.35)], color.filled())
        });
        chart
            .draw_series(rectangles)
            .map_err(plot_error)?
            .label(name.replace('_', " "))
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(plot_error)?;
    root.present().map_err(plot_error)
}

/// The sentinel's RSS (MiB) after a fresh sync, by watched objects, the idle one at zero.
fn scale_points(report: &VariantReport) -> Option<Vec<(f64, f64)>> {
    let scale = report.scale.as_ref()?;
    let idle = std::iter::once((0.0, scale.idle.rss_mib));
    let levels = scale
        .levels
        .iter()
        .map(|l| (l.objects as f64, l.synced.rss_mib));
    Some(idle.chain(levels).collect())
}

fn scale(path: &Path, points: &[(f64, f64)]) -> Result<()> {
    let most = points.iter().map(|p| p.0).fold(1.0_f64, f64::max);
    let top = points.iter().map(|p| p.1).fold(1.0_f64, f64::max);
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(plot_error)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "the sentinel's memory by objects watched",
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..most * 1.05, 0.0..top * 1.2)
        .map_err(plot_error)?;
    chart
        .configure_mesh()
        .x_desc("objects watched")
        .y_desc("RSS after a fresh sync, MiB")
        .draw()
        .map_err(plot_error)?;
    let color = COLORS[0];
    chart
        .draw_series(LineSeries::new(
            points.iter().copied(),
            color.stroke_width(2),
        ))
        .map_err(plot_error)?
        .label("sentinel RSS")
        .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color));
    chart
        .draw_series(points.iter().map(|p| Circle::new(*p, 4, color.filled())))
        .map_err(plot_error)?;
    legend(&mut chart)?;
    root.present().map_err(plot_error)
}

/// "Nines" of a quantile: 0 at the median's left end, 1 at p90, 2 at p99, 3 at p99.9.
fn nines(q: f64) -> f64 {
    -(1.0 - q).max(1e-4).log10()
}

fn distribution(path: &Path, reports: &[VariantReport]) -> Result<()> {
    let curves: Vec<(String, Vec<(f64, f64)>)> = reports
        .iter()
        .filter_map(|r| {
            let snapshot = r.steady.as_ref()?.latency.snapshot();
            let h = snapshot.histogram();
            (!h.is_empty()).then(|| {
                let points = QUANTILES
                    .iter()
                    .map(|q| (nines(*q), h.value_at_quantile(*q) as f64 / 1e6))
                    .collect();
                (r.variant.to_string(), points)
            })
        })
        .collect();
    let top = curves
        .iter()
        .flat_map(|(_, p)| p.iter().map(|(_, ms)| *ms))
        .fold(1.0_f64, f64::max);
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(plot_error)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("drift→revert, steady load", ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..nines(0.9999), 0.0..top * 1.1)
        .map_err(plot_error)?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("ms")
        .x_label_formatter(&|n| format!("{:.2}%", 100.0 * (1.0 - 10f64.powf(-n))))
        .draw()
        .map_err(plot_error)?;
    for (i, (name, points)) in curves.into_iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))
            .map_err(plot_error)?
            .label(name)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color));
    }
    legend(&mut chart)?;
    root.present().map_err(plot_error)
}

fn repeated(path: &Path, reports: &[VariantReport]) -> Result<()> {
    let ours: Vec<(String, Vec<Duration>)> = reports
        .iter()
        .filter_map(|r| Some((r.variant.to_string(), r.repeated.clone()?)))
        .collect();
    let drifts = ours.iter().map(|(_, t)| t.len()).max().unwrap_or(0).max(1);
    // Argo CD waits this long before its n-th self-heal of the same object.
    let argo: Vec<(f64, f64)> = (0..drifts)
        .map(|n| {
            let wait = ARGO_CD_SELF_HEAL_BACKOFF_S[n.min(ARGO_CD_SELF_HEAL_BACKOFF_S.len() - 1)];
            ((n + 1) as f64, wait as f64)
        })
        .collect();
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(plot_error)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "the same StatefulSet drifted again and again",
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(1.0..drifts as f64, 0.0..320.0)
        .map_err(plot_error)?;
    chart
        .configure_mesh()
        .x_desc("drift")
        .y_desc("seconds to revert")
        .draw()
        .map_err(plot_error)?;
    let gray = RGBColor(120, 120, 120);
    chart
        .draw_series(LineSeries::new(argo, gray.stroke_width(2)))
        .map_err(plot_error)?
        .label("Argo CD self-heal backoff (documented, not run)")
        .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], gray));
    for (i, (name, times)) in ours.into_iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let points = times
            .iter()
            .enumerate()
            .map(|(n, d)| ((n + 1) as f64, d.as_secs_f64()));
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))
            .map_err(plot_error)?
            .label(format!("kube-sentinel, {name}"))
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color));
    }
    legend(&mut chart)?;
    root.present().map_err(plot_error)
}

fn legend<'a, DB: DrawingBackend + 'a, CT: plotters::coord::CoordTranslate>(
    chart: &mut ChartContext<'a, DB, CT>,
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(plot_error)
}

fn plot_error<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow!("drawing a plot: {e}")
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::{
        bench::{Variant, steady::SteadyResult},
        telemetry::LatencyRecorder,
    };

    fn report(variant: Variant, base_ms: u64) -> VariantReport {
        let latency = LatencyRecorder::new();
        for i in 0..100 {
            latency.record(Duration::from_millis(base_ms + i * 3));
        }
        VariantReport {
            steady: Some(SteadyResult::with_latency(latency)),
            repeated: Some(
                (0..10)
                    .map(|i| Duration::from_millis(base_ms + i))
                    .collect(),
            ),
            ..VariantReport::new(variant)
        }
    }

    #[test]
    fn both_plots_name_every_variant_and_the_reference() {
        let dir = tempfile::tempdir().expect("tempdir");
        let reports = [
            report(Variant::Trailing, 2200),
            report(Variant::Leading, 80),
        ];
        write(dir.path(), &reports).expect("plots");
        let latency = std::fs::read_to_string(dir.path().join("latency.svg")).expect("latency");
        assert!(
            latency.starts_with("<svg")
                && latency.contains("trailing")
                && latency.contains("leading")
        );
        let repeated = std::fs::read_to_string(dir.path().join("repeated.svg")).expect("repeated");
        assert!(
            repeated.contains("Argo CD self-heal backoff")
                && repeated.contains("kube-sentinel, leading")
        );
    }

    #[test]
    fn the_stage_plot_stacks_every_stage_of_each_timed_run_and_the_scale_plot_draws_each_level() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut timed = report(Variant::Trailing, 2200);
        let status = serde_json::json!({"sentinel": {
            "triggerID": "t", "lastHandledTriggerID": "t",
            "detectedAt": "2026-12-03T10:00:00.010Z", "triggeredAt": "2026-12-03T10:00:02.100Z",
            "lastQueuedAt": "2026-12-03T10:00:02.110Z", "lastStartedAt": "2026-12-03T10:00:02.120Z",
            "lastRevertedAt": "2026-12-03T10:00:02.200Z",
        }});
        let at =
            |s: &str| std::time::SystemTime::from(s.parse::<jiff::Timestamp>().expect("timestamp"));
        let observed = crate::bench::breakdown::Observed {
            written: at("2026-12-03T10:00:00Z"),
            seen: at("2026-12-03T10:00:02.210Z"),
        };
        timed
            .steady
            .as_mut()
            .expect("steady")
            .breakdown
            .record(&status, observed);
        write(dir.path(), &[timed, report(Variant::SingleLane, 5000)]).expect("plots");
        let stages = std::fs::read_to_string(dir.path().join("stages.svg")).expect("stages");
        assert!(stages.contains("trailing, steady"), "{stages}");
        assert!(
            !stages.contains("single-lane"),
            "only timed runs have a bar"
        );
        for stage in STAGES {
            assert!(stages.contains(&stage.replace('_', " ")), "{stage}");
        }
        scale(
            &dir.path().join("scale.svg"),
            &[(0.0, 19.0), (1000.0, 22.0), (10_000.0, 27.0)],
        )
        .expect("scale plot");
        let drawn = std::fs::read_to_string(dir.path().join("scale.svg")).expect("scale");
        assert_eq!(drawn.matches("<circle").count(), 3, "{drawn}");
    }

    #[test]
    fn nines_put_p90_at_one_and_p99_at_two() {
        assert!((nines(0.9) - 1.0).abs() < 1e-9);
        assert!((nines(0.99) - 2.0).abs() < 1e-9);
        assert_eq!(nines(0.0), 0.0);
    }
}
