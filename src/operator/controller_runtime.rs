//! The reconcile metrics in controller-runtime's vocabulary, so that stock dashboards read the
//! operator: `controller_runtime_reconcile_total{controller, result}` (`success`, `error`,
//! `requeue`, `requeue_after`), `controller_runtime_reconcile_errors_total`,
//! `controller_runtime_reconcile_time_seconds` and `controller_runtime_max_concurrent_reconciles`
//! (the work queue's `controller_runtime_active_workers` is in
//! [`PrometheusQueueMetrics`](crate::telemetry::PrometheusQueueMetrics)).

use std::time::Duration;

use prometheus_client::{
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};

use super::reconcile::Requeue;

/// The controller's name in every `controller` label.
pub const CONTROLLER: &str = "statefulcluster";

type Controller = [(&'static str, &'static str); 1];
type ControllerResult = [(&'static str, &'static str); 2];

/// controller-runtime's reconcile metrics; cheap to clone.
#[derive(Clone, Debug)]
pub struct ReconcileMetrics {
    total: Family<ControllerResult, Counter>,
    errors: Family<Controller, Counter>,
    time: Family<Controller, Histogram, fn() -> Histogram>,
    max_concurrent: Family<Controller, Gauge>,
}

fn time_histogram() -> Histogram {
    // 5 ms .. ~80 s.
    Histogram::new(exponential_buckets(0.005, 2.0, 15))
}

impl ReconcileMetrics {
    /// Registers them in `registry` (unprefixed).
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            total: Family::default(),
            errors: Family::default(),
            time: Family::new_with_constructor(time_histogram),
            max_concurrent: Family::default(),
        };
        registry.register(
            "controller_runtime_reconcile",
            "Reconciles by result",
            metrics.total.clone(),
        );
        registry.register(
            "controller_runtime_reconcile_errors",
            "Reconciles that returned an error",
            metrics.errors.clone(),
        );
        registry.register(
            "controller_runtime_reconcile_time_seconds",
            "Time of each reconcile",
            metrics.time.clone(),
        );
        registry.register(
            "controller_runtime_max_concurrent_reconciles",
            "Most reconciles at once (--workers)",
            metrics.max_concurrent.clone(),
        );
        metrics
    }

    /// Sets the most reconciles at once.
    pub fn set_workers(&self, workers: usize) {
        self.max_concurrent
            .get_or_create(&[("controller", CONTROLLER)])
            .set(i64::try_from(workers).unwrap_or(i64::MAX));
    }

    /// Records one reconcile that took `took` and ended with `outcome`.
    pub fn record<E>(&self, outcome: &Result<Requeue, E>, took: Duration) {
        let result = match outcome {
            Err(_) => "error",
            Ok(Requeue::Done) => "success",
            Ok(Requeue::Now) => "requeue",
            Ok(Requeue::After(_)) => "requeue_after",
        };
        self.total
            .get_or_create(&[("controller", CONTROLLER), ("result", result)])
            .inc();
        if outcome.is_err() {
            self.errors
                .get_or_create(&[("controller", CONTROLLER)])
                .inc();
        }
        self.time
            .get_or_create(&[("controller", CONTROLLER)])
            .observe(took.as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_are_named_as_controller_runtime_names_them() {
        let mut registry = Registry::default();
        let metrics = ReconcileMetrics::register(&mut registry);
        metrics.set_workers(8);
        let ms = Duration::from_millis(20);
        metrics.record::<()>(&Ok(Requeue::Done), ms);
        metrics.record::<()>(&Ok(Requeue::Now), ms);
        metrics.record::<()>(&Ok(Requeue::After(Duration::from_secs(1))), ms);
        metrics.record(&Err::<Requeue, _>("no"), ms);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
        for line in [
            r#"controller_runtime_reconcile_total{controller="statefulcluster",result="success"} 1"#,
            r#"controller_runtime_reconcile_total{controller="statefulcluster",result="requeue"} 1"#,
            r#"controller_runtime_reconcile_total{controller="statefulcluster",result="requeue_after"} 1"#,
            r#"controller_runtime_reconcile_total{controller="statefulcluster",result="error"} 1"#,
            r#"controller_runtime_reconcile_errors_total{controller="statefulcluster"} 1"#,
            r#"controller_runtime_reconcile_time_seconds_count{controller="statefulcluster"} 4"#,
            r#"controller_runtime_max_concurrent_reconciles{controller="statefulcluster"} 8"#,
        ] {
            assert!(text.contains(line), "{line} missing in\n{text}");
        }
    }
}
