//! Two-lane priority work queue.
//!
//! [`TwoLaneQueue`] hands out keys (object references, in a controller) to workers. It is
//! controller-runtime's workqueue with two priorities, and this page is its design note.
//!
//! # What is ordered by what
//!
//! Every key the queue knows is in at most one of these places:
//!
//! * **pending** in a lane, [`Lane::Fast`] or [`Lane::Normal`]: ready to be handed out. Within a
//!   lane keys leave in arrival order (FIFO, by an insertion sequence number).
//! * **delayed**: waiting for an instant given to [`TwoLaneQueue::schedule`] or for a retry
//!   backoff after [`TwoLaneQueue::fail`]. At its instant it becomes pending in its lane. All
//!   delayed keys share one binary heap ordered by instant and one `tokio::time::Sleep` armed
//!   for the earliest, so a million delayed keys cost one timer.
//! * **claimed**: handed out to a worker (a [`Claim`]) and not yet given back with
//!   [`TwoLaneQueue::complete`] or [`TwoLaneQueue::fail`].
//!
//! A claim takes the oldest pending fast key if there is one, else the oldest pending normal
//! key. The one exception is the fairness bound: after
//! [`LanesConfig::fast_burst_before_normal`] consecutive fast claims made while normal work was
//! waiting, the next claim takes a normal key, so a flood on the fast lane delays the normal
//! lane but cannot starve it.
//!
//! # Deduplication and promotion
//!
//! A key is pending at most once. Pushing a key that is already pending in the same or a lower
//! lane changes nothing (it keeps its place); pushing a key pending on the normal lane onto the
//! fast lane *promotes* it: it leaves the normal lane and joins the back of the fast lane. It
//! keeps the instant it was first enqueued, so the queue-wait metric counts from the first add.
//! A push for a delayed key makes it pending now (in the higher of the two lanes); a schedule for
//! a pending key is absorbed (the key runs sooner than asked); two schedules keep the earlier
//! instant and the higher lane.
//!
//! # Why a key is locked while handed out
//!
//! A reconcile reads the world and writes it; two reconciles of one object at once race each
//! other. So a claimed key is never handed out again until it is given back. A push or a due
//! schedule for a claimed key is remembered on the claim, with the highest lane seen, and the key
//! becomes pending in that lane when the claim is completed. That is how the operator's "revert
//! (fast) then full reconcile (normal)" runs in that order, one after the other, never
//! concurrently.
//!
//! # Failures
//!
//! [`TwoLaneQueue::fail`] gives a claim back and delays the key by a per-key exponential backoff
//! (`retry_backoff_base * 2^(failures-1)`, capped at `retry_backoff_max`) on the lane it was
//! claimed from. A successful [`TwoLaneQueue::complete`] resets the count. If the key was pushed
//! again while its failing claim ran, it becomes pending at once instead: there is new work.
//!
//! # Telemetry
//!
//! A [`QueueMetrics`] implementation (see [`PrometheusQueueMetrics`](crate::telemetry::PrometheusQueueMetrics)) receives adds and depth
//! per lane, the time each key waited in the queue, the work duration and retries, in the manner
//! of controller-runtime's `workqueue_*` metrics.
//!
//! # Polling
//!
//! The queue is a plain data structure owned by one task: [`TwoLaneQueue::poll_claim`] (or the
//! [`Stream`](futures::Stream) impl, which never ends) returns `Pending` when nothing is ready, registering the
//! waker only with the timer of the earliest delayed key. Mutations (`push`, `complete`, ...)
//! need `&mut self` and so happen in the owning task, which polls again afterwards; they do not
//! wake it. [`run_two_lanes`](super::run_two_lanes) is the usual owner.

mod metrics;
mod queue;
mod state;
#[cfg(test)]
mod tests;
mod types;

pub use metrics::QueueMetrics;
pub use queue::TwoLaneQueue;
pub use types::{Claim, Lane, LanesConfig, Next, QueueStats};
