//! The worker: a reconcile per claimed key, and the drain at shutdown.
//!
//! The worker: what the work queue's runner does with each claimed key (a reconcile, its
//! result turned into the key's next step), and the drain that lets the work in flight finish
//! at shutdown.

use std::{
    collections::HashMap,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use futures::{Stream, StreamExt};

use super::{
    reconcile::{ClaimTimes, Context, Error, Requeue, SecretHint},
    secrets::SecretDrift,
};
use crate::{
    stream::{Claim, Lane, Next},
    watch::NamespacedName,
};

/// Secret drift waiting for its key's fast-lane claim: added by the inputs, taken by the worker.
#[derive(Clone, Debug, Default)]
pub struct SecretHints(Arc<Mutex<HashMap<NamespacedName, SecretHint>>>);

impl SecretHints {
    /// Records `drift` (joining the Secrets already waiting for its key).
    pub fn add(&self, drift: SecretDrift) {
        let hint = SecretHint {
            objects: drift.value,
            first_seen: drift.first_seen,
        };
        let mut pending = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match pending.get_mut(&drift.key) {
            Some(waiting) => waiting.objects.extend(hint.objects),
            None => {
                pending.insert(drift.key, hint);
            }
        }
    }

    /// Takes the hint waiting for `key`, if any.
    pub fn take(&self, key: &NamespacedName) -> Option<SecretHint> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).remove(key)
    }
}

/// Reconciles claimed keys; shared by every claim (cheap to clone).
#[derive(Clone)]
pub struct Worker {
    ctx: Arc<Context>,
    hints: SecretHints,
    draining: Arc<AtomicBool>,
    in_flight: Arc<AtomicUsize>,
}

impl Worker {
    /// A worker reconciling with `ctx`, taking Secret hints from `hints`.
    pub fn new(ctx: Context, hints: SecretHints) -> Self {
        Self {
            ctx: Arc::new(ctx),
            hints,
            draining: Arc::default(),
            in_flight: Arc::default(),
        }
    }

    /// Works on one claim: reconciles the key (with its Secret hint) and says what next; every
    /// requeue goes on the normal lane. Once draining, a new claim returns at once.
    pub fn work(
        &self,
        claim: Claim<NamespacedName>,
    ) -> impl Future<Output = Result<Next, Error>> + use<> {
        let worker = self.clone();
        // Taken now, at the claim: drift seen after it waits for the next one.
        let hint = self.hints.take(&claim.key);
        async move {
            if worker.draining.load(Ordering::Relaxed) {
                return Ok(Next::Done);
            }
            worker.in_flight.fetch_add(1, Ordering::Relaxed);
            let waited = claim.enqueued_at.elapsed();
            let started = tokio::time::Instant::now();
            let times = ClaimTimes::since_queued(waited);
            let result = worker.ctx.reconcile(&claim.key, hint, times).await;
            worker.in_flight.fetch_sub(1, Ordering::Relaxed);
            tracing::debug!(resource = %claim.key, lane = %claim.lane, attempt = claim.attempt, ?waited, took = ?started.elapsed(), path = ?result.as_ref().map(|h| h.path).ok(), "reconciled");
            result.map(|handled| match handled.requeue {
                Requeue::Done => Next::Done,
                Requeue::Now => Next::Requeue(Lane::Normal),
                Requeue::After(d) => Next::RequeueAfter(Lane::Normal, d),
            })
        }
    }

    /// Lets the reconciles already running finish, for at most `timeout`: new claims return at
    /// once from here on, and `runner` is driven until none is in flight.
    pub async fn drain<R: Stream>(&self, mut runner: Pin<&mut R>, timeout: Duration) {
        self.draining.store(true, Ordering::Relaxed);
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        while self.in_flight.load(Ordering::Relaxed) > 0 {
            tokio::select! {
                done = runner.next() => if done.is_none() { break },
                _ = &mut deadline => {
                    tracing::warn!(in_flight = self.in_flight.load(Ordering::Relaxed), "shutdown timeout: abandoning work in flight");
                    break;
                }
            }
        }
    }
}
