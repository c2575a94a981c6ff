//! The operator's inputs, served into the work queue by one `select!` loop.
//!
//! The operator's inputs: the StatefulCluster watch, the Secret watch, the optional owned-object
//! watches and two timers, served into the work queue by one `select!` loop while the
//! runner works.

use std::{pin::Pin, time::Duration};

use futures::{Stream, StreamExt, TryStreamExt, stream::BoxStream};
use kube::{
    Client,
    runtime::{WatchStreamExt, watcher},
};
use prometheus_client::metrics::gauge::Gauge;
use tokio::{
    sync::watch,
    time::{Instant, Interval, interval_at},
};
use tokio_stream::wrappers::WatchStream;

use super::{
    args::OperatorArgs,
    crd::StatefulCluster,
    feeder::Feeder,
    metrics::Metrics,
    owned,
    secrets::{self, SecretDrift},
    undecodable::Undecodable,
    worker::SecretHints,
};
use crate::{
    stream::{Lane, Next},
    telemetry::{BEAT_EVERY, Gate, Heartbeat, Reachability},
    watch::{NamespacedName, api::dynamic_namespaced_or_all},
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
    beat: Interval,
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
    /// 1 while this instance leads.
    pub leader: Gauge,
    /// Decodes the StatefulClusters, reporting those that do not decode.
    pub undecodable: Undecodable,
    /// Beaten by the input loop, which also drives the workers; `/healthz` fails when it stops.
    pub heartbeat: Heartbeat,
}

impl Inputs {
    /// Starts the watches `args` asks for (`--namespace`, `--secret-debounce`,
    /// `--watch-owned`) and the timers (`--resync`, `--latency-log-interval`), feeding `feeder`.
    pub fn watch(client: &Client, args: &OperatorArgs, feeder: Feeder, reports: Reports) -> Self {
        let namespace = args.namespace.as_deref();
        // Read untyped and decoded one by one: one undecodable object must not fail the list.
        let undecodable = reports.undecodable.clone();
        let api = dynamic_namespaced_or_all(client.clone(), namespace, undecodable.resource());
        let watch = args.common.watch_config();
        let resources = watcher(api, watch.clone())
            .backoff(crate::watch::backoff::watch_backoff())
            .map_ok(move |event| undecodable.event(event))
            .boxed();
        let secret_drifts = secrets::secret_drifts(
            client.clone(),
            namespace,
            args.secret_debounce,
            watch.clone(),
            reports.metrics.watch_errors.clone(),
        )
        .boxed();
        let owned_changes = if args.watch_owned {
            let errors = reports.metrics.watch_errors.clone();
            owned::owner_changes(client.clone(), namespace, watch, errors).boxed()
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
            beat: every(BEAT_EVERY),
            feeder,
            reports,
        }
    }

    /// Serves the inputs while driving `runner`, until `shutdown`, a lost Lease or an input's
    /// end. The watches run on a standby too; the feeder queues work once `leadership` says
    /// this instance leads, and a loss of the Lease after that stops the loop. Shutdown and the
    /// Lease come first; the feeder (and with it the queue's input) is dropped on return.
    pub async fn serve<R, E>(
        mut self,
        mut runner: Pin<&mut R>,
        mut shutdown: Pin<&mut impl Future<Output = ()>>,
        leadership: watch::Receiver<bool>,
    ) -> Stop
    where
        R: Stream<Item = (NamespacedName, Lane, Result<Next, E>)>,
        E: std::fmt::Display,
    {
        // The current value first, then every change; it ends when the election task is gone
        // (a closed channel keeps its last value).
        let mut leadership = WatchStream::new(leadership);
        let mut leading = false;
        loop {
            tokio::select! {
                biased;
                _ = &mut shutdown => return Stop::Shutdown,
                Some(leads) = leadership.next() => match (leading, leads) {
                    (false, true) => {
                        leading = true;
                        self.reports.leader.set(1);
                        tracing::info!("leading: queueing every resource");
                        self.feeder.lead();
                    }
                    (true, false) => return Stop::LostLease,
                    _ => {}
                },
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
                _ = self.beat.tick() => self.reports.heartbeat.beat(),
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
                let reason = self.reports.metrics.watch_errors.record(&e).as_str();
                let down_for = self.reports.reachability.failed();
                let cause = crate::watch::cause::likely_cause(&e);
                tracing::warn!(error = %e, reason, ?down_for, cause, "StatefulCluster watch error; retrying");
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
