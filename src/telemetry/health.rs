//! Readiness: named gates ([`Health`], [`Gate`]) and a gate driven by API calls ([`Reachability`]).

use std::sync::{
    Arc, Mutex,
    atomic::{AtomicBool, Ordering},
};

use super::liveness::Heartbeat;

type Gates = Vec<(&'static str, Arc<AtomicBool>)>;

/// Readiness gates and liveness heartbeats shared between the program's stages and the
/// `/readyz` and `/healthz` handlers.
#[derive(Clone, Default)]
pub struct Health {
    gates: Arc<Mutex<Gates>>,
    hearts: Arc<Mutex<Vec<(&'static str, Heartbeat)>>>,
}

/// One readiness condition, closed until [`Gate::set`] opens it.
#[derive(Clone, Debug)]
pub struct Gate(Arc<AtomicBool>);

impl Gate {
    /// Opens (`true`) or closes (`false`) the gate.
    pub fn set(&self, open: bool) {
        self.0.store(open, Ordering::Relaxed);
    }

    /// Whether the gate is open.
    pub fn is_open(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

impl Health {
    /// A health registry with no gates: ready until a gate is added.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a readiness gate named `name`, initially closed.
    pub fn gate(&self, name: &'static str) -> Gate {
        let flag = Arc::new(AtomicBool::new(false));
        self.lock().push((name, flag.clone()));
        Gate(flag)
    }

    /// Adds a liveness heartbeat named `name`, stalled after `max_silence` without a beat.
    pub fn heartbeat(&self, name: &'static str, max_silence: std::time::Duration) -> Heartbeat {
        let heart = Heartbeat::new(max_silence);
        self.hearts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((name, heart.clone()));
        heart
    }

    /// The heartbeats that are stalled, with how long they have been silent; empty when live.
    pub fn stalled(&self) -> Vec<(&'static str, std::time::Duration)> {
        self.hearts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter_map(|(name, heart)| Some((*name, heart.stalled_for()?)))
            .collect()
    }

    /// Names of the gates that are closed; empty when ready.
    pub fn not_ready(&self) -> Vec<&'static str> {
        self.lock()
            .iter()
            .filter(|(_, open)| !open.load(Ordering::Relaxed))
            .map(|(name, _)| *name)
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Gates> {
        // A poisoned list of flags is still a valid list of flags.
        self.gates.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Readiness from the outcome of API calls: unready once calls have failed without a success
/// for longer than a grace period (a blip is not an outage).
#[derive(Debug)]
pub struct Reachability {
    gate: Gate,
    grace: std::time::Duration,
    failing_since: Option<tokio::time::Instant>,
}

impl Reachability {
    /// Drives `gate` (opened now) with the given grace period.
    pub fn new(gate: Gate, grace: std::time::Duration) -> Self {
        gate.set(true);
        Self {
            gate,
            grace,
            failing_since: None,
        }
    }

    /// A call succeeded.
    pub fn succeeded(&mut self) {
        self.failing_since = None;
        self.gate.set(true);
    }

    /// A call failed; returns for how long calls have been failing.
    pub fn failed(&mut self) -> std::time::Duration {
        let since = *self
            .failing_since
            .get_or_insert_with(tokio::time::Instant::now);
        let down_for = since.elapsed();
        self.gate.set(down_for < self.grace);
        down_for
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn unready_only_after_failing_for_the_grace_period() {
        let health = Health::new();
        let mut r = Reachability::new(health.gate("api"), std::time::Duration::from_secs(30));
        assert!(health.not_ready().is_empty());
        r.failed();
        tokio::time::advance(std::time::Duration::from_secs(29)).await;
        assert_eq!(r.failed(), std::time::Duration::from_secs(29));
        assert!(health.not_ready().is_empty(), "a blip is not an outage");
        tokio::time::advance(std::time::Duration::from_secs(1)).await;
        r.failed();
        assert_eq!(health.not_ready(), ["api"]);
        r.succeeded();
        assert!(health.not_ready().is_empty());
        r.failed();
        assert!(
            health.not_ready().is_empty(),
            "the clock restarts after a success"
        );
    }

    #[test]
    fn ready_only_when_every_gate_is_open() {
        let health = Health::new();
        assert!(health.not_ready().is_empty());
        let synced = health.gate("watches-synced");
        let api = health.gate("api-reachable");
        assert_eq!(health.not_ready(), vec!["watches-synced", "api-reachable"]);
        synced.set(true);
        assert_eq!(health.not_ready(), vec!["api-reachable"]);
        api.set(true);
        assert!(health.not_ready().is_empty());
        api.set(false);
        assert_eq!(health.not_ready(), vec!["api-reachable"]);
    }
}
