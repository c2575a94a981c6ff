//! Retrying, latest-wins sink.
//!
//! [`RetrySink`] is a [`futures::Sink`] of `(key, value)` that applies an async operation per
//! item (a status patch, in the sentinel) with these rules:
//!
//! * **Bounded concurrency**: at most [`RetryConfig::max_concurrent`] operations in flight, all
//!   polled by the sink itself (no task spawned), and at most one per key.
//! * **Latest wins per key**: an item replaces the item of the same key that is waiting for a
//!   slot or waiting to retry (it takes its place in line and its retry instant; its attempt
//!   count starts again). An item for a key whose operation is in flight waits for that
//!   operation to finish, then runs with the latest value; if the operation in flight fails, it
//!   is not retried, since a newer value is waiting. Each replaced item counts as *superseded*.
//! * **Retries**: the caller classifies each error as [`Retry::Transient`] (retried after an
//!   exponential backoff, `backoff_base * 2^(attempt-1)` capped at `backoff_max`, with "equal
//!   jitter": uniform in the upper half of that delay) or [`Retry::Permanent`] (failed at once).
//!   After `max_attempts` tries a transient error fails too.
//! * **Telemetry**: counts through a cloneable [`RetryStats`] handle, and an optional callback
//!   receiving the final [`RetryOutcome`] of every item.
//!
//! The sink makes progress whenever it is polled: `poll_ready` (so `send_all`/`forward` drive it
//! while feeding), `poll_flush` (ready when every accepted item is final) and `poll_close` (the
//! same: closing flushes everything). It never applies backpressure: memory is bounded by the
//! number of distinct keys, since a key holds at most one running and one waiting item.
//!
//! ## Warning
//!
//! Keep a sink polled: between polls nothing runs, not even a due retry. With
//! `max_attempts: None` a key whose operation keeps failing transiently is retried forever, and
//! `close` does not finish.

mod sink;
mod state;
mod stats;
#[cfg(test)]
mod tests;
mod types;

pub use sink::RetrySink;
pub use stats::{RetryCounts, RetryStats};
pub use types::{Delivery, Retry, RetryConfig, RetryOutcome};
