//! [`RuntimeCollector`]: the tokio runtime's alive tasks as the gauge `tokio_alive_tasks`, read
//! at each scrape (as Go's `go_goroutines`), so that a task leak shows as growth.

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{MetricType, gauge::ConstGauge},
    registry::Registry,
};

/// Reads the runtime of the task that scrapes: the programs serve `/metrics` on their one
/// runtime, so that is the runtime whose tasks are counted.
#[derive(Debug, Default)]
pub struct RuntimeCollector;

impl RuntimeCollector {
    /// Registers `tokio_alive_tasks` on `registry`.
    pub fn register(registry: &mut Registry) {
        registry.register_collector(Box::new(RuntimeCollector));
    }
}

impl Collector for RuntimeCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        // Outside a runtime (an encode in a plain test) there is nothing to count.
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return Ok(());
        };
        let tasks = i64::try_from(handle.metrics().num_alive_tasks()).unwrap_or(i64::MAX);
        let family = encoder.encode_descriptor(
            "tokio_alive_tasks",
            "Tasks alive in the tokio runtime (spawned and not yet finished)",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(tasks).encode(family)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scrape() -> String {
        let mut registry = Registry::default();
        RuntimeCollector::register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
        text
    }

    #[tokio::test]
    async fn alive_tasks_count_a_spawned_task_until_it_ends() {
        let value = || -> i64 {
            let text = scrape();
            let line = text
                .lines()
                .find(|l| l.starts_with("tokio_alive_tasks "))
                .unwrap_or_else(|| panic!("no gauge in {text}"));
            line["tokio_alive_tasks ".len()..]
                .parse()
                .expect("a number")
        };
        let before = value();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = stopped.await;
        });
        assert_eq!(value(), before + 1);
        let _ = stop.send(());
        task.await.expect("the task ends");
        assert_eq!(value(), before);
    }

    #[test]
    fn outside_a_runtime_nothing_is_written() {
        assert!(!scrape().contains("tokio_alive_tasks "));
    }
}
