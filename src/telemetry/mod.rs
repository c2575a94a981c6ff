//! Telemetry: readiness, Prometheus metrics, latency histograms, logging.
//!
//! Generic pieces, usable without Kubernetes (the crate's `kubernetes` feature off):
//! * [`Health`] and [`Gate`]: readiness as a set of named gates; `/readyz` answers 200 only
//!   when every gate is open, and otherwise 503 naming the closed ones, so a probe failure says
//!   why. [`Reachability`] drives a gate from the outcome of API calls. [`Heartbeat`]: liveness,
//!   beaten by a program's main loop; `/healthz` answers 503 naming a stalled one.
//! * [`LatencyRecorder`]: a lock-free latency histogram shared by many tasks.
//! * [`PrometheusQueueMetrics`]: the two-lane work queue's
//!   [`QueueMetrics`](crate::stream::QueueMetrics) as Prometheus metrics.
//!
//! The programs' operations endpoints (with the `kubernetes` feature): `router` and `serve`
//! (`/healthz`, `/readyz`, `/metrics`, plus any debug routes a program adds) and
//! `init_tracing`, the `tracing` subscriber set-up.

mod health;
#[cfg(feature = "kubernetes")]
mod http;
mod latency;
mod liveness;
#[cfg(feature = "kubernetes")]
mod logging;
mod queue_metrics;
#[cfg(feature = "kubernetes")]
mod runtime;

pub use health::{Gate, Health, Reachability};
#[cfg(feature = "kubernetes")]
pub use http::{router, serve};
pub use latency::{LatencyRecorder, LatencySnapshot, LatencySummary};
pub use liveness::{BEAT_EVERY, Heartbeat};
#[cfg(feature = "kubernetes")]
pub use logging::init_tracing;
pub use queue_metrics::PrometheusQueueMetrics;
#[cfg(feature = "kubernetes")]
pub use runtime::RuntimeCollector;
