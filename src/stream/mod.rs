//! Generic stream combinators for controllers.
//!
//! Nothing in this module knows about Kubernetes, and it builds without the crate's
//! `kubernetes` feature. Each combinator is a small poll-driven state machine in a module of
//! its own (a folder when it has a vocabulary, a store and tests of its own), reached through
//! a method on [`ControllerStreamExt`], in the manner of kube-runtime's `WatchStreamExt`:
//!
//! * [`debounce`]: keyed debounce, one emission per key per burst
//!   ([`debounce_keyed`](ControllerStreamExt::debounce_keyed));
//! * [`lanes`]: the two-lane priority work queue, and [`runner`], which works its keys with a
//!   bounded pool of futures ([`run_two_lanes`](ControllerStreamExt::run_two_lanes));
//! * [`retry_sink`]: a retrying, latest-wins sink per key.
//!
//! They share one timer heap (`timer_heap`: many deadlines, one tokio timer) and one
//! exponential backoff formula (`backoff`). Their telemetry adapters (Prometheus metrics of the
//! queue, latency histograms) are in [`telemetry`](crate::telemetry).

mod backoff;
pub mod debounce;
mod ext;
pub mod lanes;
pub mod retry_sink;
pub mod runner;
mod timer_heap;

pub use debounce::{
    ConfigTiming, DebounceConfig, DebounceKeyed, DebounceMode, Debounced, OnInputEnd, Timing,
};
pub use ext::ControllerStreamExt;
pub use lanes::{Claim, Lane, LanesConfig, Next, QueueMetrics, QueueStats, TwoLaneQueue};
pub use retry_sink::{
    Delivery, Retry, RetryConfig, RetryCounts, RetryOutcome, RetrySink, RetryStats,
};
pub use runner::{TwoLaneRunner, run_two_lanes};
