//! The benchmark's SVG plots: the drift→revert distribution of every variant, and the
//! repeated-drift chart beside Argo CD's documented self-heal backoff.

use std::{path::Path, time::Duration};

use anyhow::{Result, anyhow};
use plotters::prelude::*;

use super::{report::VariantReport, scenarios::ARGO_CD_SELF_HEAL_BACKOFF_S};

/// Quantiles drawn on the distribution plot.
const QUANTILES: [f64; 12] = [
    0.0, 0.25, 0.5, 0.75, 0.9, 0.95, 0.97, 0.99, 0.995, 0.999, 0.9995, 0.9999,
];
const SIZE: (u32, u32) = (760, 440);
const COLORS: [RGBColor; 5] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
];

/// Writes `latency.svg` (every steady run) and, if there was one, `repeated.svg` to `dir`.
pub(crate) fn write(dir: &Path, reports: &[VariantReport]) -> Result<()> {
    distribution(&dir.join("latency.svg"), reports)?;
    if reports.iter().any(|r| r.repeated.is_some()) {
        repeated(&dir.join("repeated.svg"), reports)?;
    }
    Ok(())
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
    fn nines_put_p90_at_one_and_p99_at_two() {
        assert!((nines(0.9) - 1.0).abs() < 1e-9);
        assert!((nines(0.99) - 2.0).abs() < 1e-9);
        assert_eq!(nines(0.0), 0.0);
    }
}
