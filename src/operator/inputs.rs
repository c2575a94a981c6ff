//! The operator's inputs, served into the work queue by one `select!` loop.
//!
//! The operator's inputs: the StatefulCluster watch, the Secret watch, the optional owned-object
//! watches and two timers, served into the work queue by one `select!` loop while the
//! runner works.

use std::{pin::Pin, time::Duration};

use futures::{Stream, StreamExt, stream::BoxStream};
use kube::{
    Client,
    runtime::{WatchStreamExt, watcher},
};
use tokio::time::{Instant, Interval, interval_at};

use super::{
    args::OperatorArgs,
    crd::StatefulCluster,
    feeder::Feeder,
    metrics::Metrics,
    owned,
    secrets::{self, SecretDrift},
    worker::SecretHints,
};
use crate::{
    stream::{Lane, Next},
    telemetry::{Gate, Reachability},
    watch::{NamespacedName, api::namespaced_or_all},
};

/// Why the input loop stopped.
#[derive(Debug, PartialEq, Eq)]
pub enum Stop {
    /// Shutdown was asked for, or an input ended.
    Shutdown,
    /// Another instance holds the Lease now.
    LostLease,
}

/// Every input of the operator, each with where it goes.
pub struct Inputs {
    resources: BoxStream<'static, Result<watcher::Event<StatefulCluster>, watcher::Error>>,
    secret_drifts: BoxStream<'static, SecretDrift>,
    owned_changes: BoxStream<'static, NamespacedName>,
    resync: Interval,
    summary: Interval,
    feeder: Feeder,
    reports: Reports,
}

/// Where the inputs report: the Secret hints for the worker, readiness and the latency log.
pub struct Reports {
    /// Secret drift for the worker.
    pub hints: SecretHints,
    /// Opens after the first list of the StatefulClusters.
    pub synced: Gate,
    /// Closes when the StatefulCluster watch has failed too long.
    pub reachability: Reachability,
    /// Logged as the revert-latency summary.
    pub metrics: Metrics,
}

impl Inputs {
    /// Starts the watches `args` asks for (`--namespace`, `--secret-debounce`,
    /// `--watch-owned`) and the timers (`--resync`, `--latency-log-interval`), feeding `feeder`.
    pub fn watch(client: &Client, args: &OperatorArgs, feeder: Feeder, reports: Reports) -> Self {
        let namespace = args.namespace.as_deref();
        let api = namespaced_or_all::<StatefulCluster>(client.clone(), namespace);
        let resources = watcher(api, watcher::Config::default())
            .default_backoff()
            .boxed();
        let secret_drifts =
            secrets::secret_drifts(client.clone(), namespace, args.secret_debounce).boxed();
        let owned_changes = if args.watch_owned {
            owned::owner_changes(client.clone(), namespace).boxed()
        } else {
            // Never ready, never ends: the select below must not spin on an empty stream.
            futures::stream::pending().boxed()
        };
        Self {
            resources,
            secret_drifts,
            owned_changes,
            resync: every(args.resync),
            summary: every(args.latency_log_interval),
            feeder,
            reports,
        }
    }

    /// Serves the inputs while driving `runner`, until `shutdown`, a lost Lease (`lost`) or an
    /// input's end. Shutdown and the Lease come first; the feeder (and with it the queue's
    /// input) is dropped on return.
    pub async fn serve<R, E>(
        mut self,
        mut runner: Pin<&mut R>,
        mut shutdown: Pin<&mut impl Future<Output = ()>>,
        mut lost: Pin<&mut impl Future<Output = ()>>,
    ) -> Stop
    where
        R: Stream<Item = (NamespacedName, Lane, Result<Next, E>)>,
        E: std::fmt::Display,
    {
        loop {
            tokio::select! {
                biased;
                _ = &mut shutdown => return Stop::Shutdown,
                _ = &mut lost => return Stop::LostLease,
                event = self.resources.next() => match event {
                    Some(event) => self.on_resource_event(event),
                    None => return Stop::Shutdown,
                },
                done = runner.next() => match done {
                    Some((key, lane, Err(e))) => tracing::warn!(resource = %key, %lane, error = %e, "reconcile failed; retrying with backoff"),
                    Some(_) => {}
                    None => return Stop::Shutdown,
                },
                drift = self.secret_drifts.next() => if let Some(drift) = drift {
                    tracing::debug!(resource = %drift.key, secrets = ?drift.value, "foreign Secret change: fast lane");
                    let key = drift.key.clone();
                    self.reports.hints.add(drift);
                    self.feeder.push_fast(key);
                },
                Some(key) = self.owned_changes.next() => {
                    tracing::debug!(resource = %key, "owned object changed: normal lane");
                    self.feeder.push_normal(key);
                }
                _ = self.resync.tick() => self.feeder.resync(),
                _ = self.summary.tick() => log_summary(&self.reports.metrics),
            }
        }
    }

    fn on_resource_event(
        &mut self,
        event: Result<watcher::Event<StatefulCluster>, watcher::Error>,
    ) {
        match event {
            Ok(event) => {
                self.reports.reachability.succeeded();
                self.reports.metrics.track(&event);
                self.feeder.on_event(event, &self.reports.synced);
            }
            Err(e) => {
                let down_for = self.reports.reachability.failed();
                tracing::warn!(error = %e, ?down_for, "StatefulCluster watch error; retrying");
            }
        }
    }
}

/// Logs the revert-latency summary, one line per resource and overall.
pub fn log_summary(metrics: &Metrics) {
    for line in metrics.summary() {
        tracing::info!("revert latency {line}");
    }
}

/// A timer that first fires one `period` from now.
fn every(period: Duration) -> Interval {
    interval_at(Instant::now() + period, period)
}
