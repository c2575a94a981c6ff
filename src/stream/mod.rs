//! Generic stream combinators for controllers.
//!
//! Nothing in this module knows about Kubernetes: each combinator is a small poll-driven
//! state machine (one `#[pin_project]` struct per file), reached through a method on
//! [`ControllerStreamExt`], in the manner of kube-runtime's `WatchStreamExt`.

use futures::Stream;

pub mod lanes;

pub use lanes::{
    Claim, Lane, LanesConfig, Next, PrometheusQueueMetrics, QueueMetrics, QueueStats, TwoLaneQueue,
};

/// Fluent entry points for the combinators in this module.
pub trait ControllerStreamExt: Stream {}

impl<S: Stream + ?Sized> ControllerStreamExt for S {}
