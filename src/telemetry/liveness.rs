//! Liveness: a [`Heartbeat`] that a program's main loop beats, and that `/healthz` reads.
//!
//! `/healthz` answering a constant "ok" would keep a wedged program alive forever: the pod's
//! liveness probe must fail when the loop that does the work stops turning. Each program
//! beats from inside its pipeline (the sentinel's detect stage, which the whole chain down to
//! the trigger writes pulls from; the operator's input loop, which also drives the workers), so
//! a beat proves the pipeline moved, not merely that the HTTP server is up. A stalled API
//! server is not a wedge: every call has a deadline, so the loop keeps turning.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::time::Instant;

/// How often a program beats its heartbeat.
pub const BEAT_EVERY: Duration = Duration::from_secs(5);

/// A liveness signal: [`Heartbeat::beat`] from the loop it watches; silent for longer than its
/// limit, it is stalled. Clones beat the same heart.
#[derive(Clone, Debug)]
pub struct Heartbeat {
    origin: Instant,
    /// Milliseconds from `origin` to the last beat.
    last: Arc<AtomicU64>,
    max_silence: Duration,
}

impl Heartbeat {
    /// A heartbeat that counts as beaten now, stalled after `max_silence` without a beat.
    pub fn new(max_silence: Duration) -> Self {
        Self {
            origin: Instant::now(),
            last: Arc::new(AtomicU64::new(0)),
            max_silence,
        }
    }

    /// Records that the watched loop turned.
    pub fn beat(&self) {
        let since = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.fetch_max(since, Ordering::Relaxed);
    }

    /// How long since the last beat, if longer than the limit.
    pub fn stalled_for(&self) -> Option<Duration> {
        let last = Duration::from_millis(self.last.load(Ordering::Relaxed));
        let silent = self.origin.elapsed().saturating_sub(last);
        (silent > self.max_silence).then_some(silent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_heartbeat_is_stalled_only_after_its_limit_without_a_beat() {
        let heart = Heartbeat::new(Duration::from_secs(60));
        let beater = heart.clone();
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(heart.stalled_for(), None, "at the limit, not past it");
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(heart.stalled_for(), Some(Duration::from_secs(61)));
        beater.beat();
        assert_eq!(heart.stalled_for(), None, "a clone's beat counts");
        tokio::time::advance(Duration::from_secs(59)).await;
        assert_eq!(heart.stalled_for(), None);
    }
}
