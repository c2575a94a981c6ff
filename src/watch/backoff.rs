//! The backoff between a failed watch and its retry, for every watch of both programs.
//!
//! kube's default doubles from 0.8 s up to 30 s: after an outage of 20 s a watch may wait up
//! to 30 s more after the API server is back, and drift made meanwhile waits with it
//! (`kube-sentinel faults`: connection resets recovered 24 s after they stopped, an expired
//! watch 47 s), and kube's jitter can double that. Capped at 5 s jitter included, it costs one
//! request per watch every few seconds while the API server is away, and recovery takes
//! seconds. As kube's, it is jittered and starts over after two minutes without an error.

use std::time::Duration;

use kube::runtime::{
    utils::{Backoff, ResetTimerBackoff},
    watcher::ExponentialBackoff,
};

/// The first retry's delay, before jitter.
pub const FIRST: Duration = Duration::from_millis(800);
/// The longest delay between retries, jitter included (backon's jitter adds up to the delay
/// itself, so the doubling stops at half of it).
pub const LONGEST: Duration = Duration::from_secs(5);
/// Time without an error after which the delays start over.
const RESET_AFTER: Duration = Duration::from_secs(120);

/// A fresh backoff for one watch.
pub fn watch_backoff() -> impl Backoff {
    let doubling = backon::ExponentialBuilder::default()
        .with_min_delay(FIRST)
        .with_max_delay(LONGEST / 2)
        .with_factor(2.0)
        .with_jitter()
        .without_max_times();
    ResetTimerBackoff::new(ExponentialBackoff::from(doubling), RESET_AFTER)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_from_the_first_and_never_pass_five_seconds() {
        let delays: Vec<Duration> = watch_backoff().take(12).collect();
        assert!(delays[0] <= FIRST * 2, "{delays:?}");
        assert!(delays.iter().all(|d| *d <= LONGEST), "{delays:?}");
        assert!(delays[8..].iter().all(|d| *d >= LONGEST / 2), "{delays:?}");
    }
}
