//! The operator: reconciles StatefulClusters on a two-lane work queue, triggers first.
//!
//! It holds the [`StatefulCluster`](crd::StatefulCluster) custom resource, its managers and its
//! reconciler:
//!
//! ```text
//! watch StatefulClusters ─┬─ triggerID ≠ lastHandledTriggerID ──▶ fast lane ─┐
//!                         └─ new generation / initial list ────▶ normal lane ┼─▶ TwoLaneQueue
//! watch own Secrets → actor filter → debounce ───────────────▶ fast lane   │
//! resync (10 h) ───────────────────────────────────────────────▶ normal lane ┘   │ --workers
//!                                                                                ▼
//!                         reconcile::Context::reconcile: fast path or full path
//! ```
//!
//! Bounded workers (`--fast-workers` of them never taken by full reconciles), never two on one
//! resource, fast lane first (within `--fast-burst`); errors
//! are retried with per-key backoff on the lane they came from. [`run`] wires, in order: the
//! telemetry server (`/healthz`, `/readyz`, `/metrics`, `/debug/latency`), leader election,
//! the [`worker`] on the [`TwoLaneQueue`]'s runner, the [`inputs`] (fed through the
//! [`feeder`]) until shutdown or a lost Lease, then the [`Worker::drain`] of the work in flight
//! and the Lease's release. A standby runs its watches too and is Ready once they have listed;
//! its feeder queues work only once it leads (leadership is the `leader` metric).
//! StatefulClusters are read untyped and decoded one by one: one that does not decode is
//! reported and skipped ([`undecodable`]), and the others are reconciled.

pub mod args;
pub mod controller_runtime;
pub mod crd;
pub mod feeder;
pub mod fights;
pub mod inputs;
pub mod managers;
pub mod metrics;
pub mod owned;
pub mod reconcile;
pub mod secrets;
pub mod undecodable;
pub mod worker;

use std::{net::SocketAddr, sync::Arc};

use anyhow::{Context as _, Result, anyhow};
use axum::routing::get;
use prometheus_client::{metrics::gauge::Gauge, registry::Registry};
use tokio::{sync::watch, task::JoinHandle};

pub use self::args::{OperatorArgs, OperatorProgram};
use self::{
    feeder::Feeder,
    inputs::{Inputs, Reports, Stop, log_summary},
    reconcile::Context,
    worker::{SecretHints, Worker},
};
use crate::{
    stream::{LanesConfig, TwoLaneQueue, run_two_lanes},
    telemetry::{self, Gate, Health, Heartbeat, PrometheusQueueMetrics, Reachability},
};

/// Runs the operator until `shutdown` resolves (then finishes in-flight work and releases the
/// Lease), or until leadership is lost (an error: restart and stand by).
pub async fn run(
    args: OperatorArgs,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    args.validate()?;
    let client = args.common.client().await?;
    let identity = args.common.identity();
    let telemetry = Telemetry::serve(&args);
    let shutdown = async move {
        shutdown.await;
        tracing::info!("shutting down: finishing work in flight");
    };
    tokio::pin!(shutdown);
    let leadership = args
        .common
        .leadership(&client, &identity, crate::cli::Join::AtOnce)
        .await?;

    let hints = SecretHints::default();
    let context = Context::new(client.clone(), telemetry.metrics.clone(), Some(identity))
        .with_drift_action(args.drift_action);
    let undecodable = context.undecodable().clone();
    let worker = Worker::new(context, hints.clone());
    let (feeder, lanes) = Feeder::new();
    let feeder = if args.single_lane {
        feeder.single_lane()
    } else {
        feeder
    };
    let queue = TwoLaneQueue::new(LanesConfig {
        fast_burst_before_normal: args.fast_burst,
        ..LanesConfig::default()
    })
    .with_metrics(Box::new(telemetry.queue_metrics));
    let work = {
        let worker = worker.clone();
        move |claim| worker.work(claim)
    };
    // The single lane is the baseline without a fast lane: nothing kept for one.
    let reserved = if args.single_lane {
        0
    } else {
        args.fast_workers
    };
    let runner = run_two_lanes(lanes.fast, lanes.normal, queue, args.workers, work)
        .reserve_for_fast(reserved);
    tokio::pin!(runner);
    let reports = Reports {
        hints,
        synced: telemetry.synced.clone(),
        reachability: telemetry.reachability,
        metrics: telemetry.metrics.clone(),
        leader: telemetry.leader.clone(),
        undecodable,
        heartbeat: telemetry.heartbeat.clone(),
    };
    // A standby watches too (it is Ready once synced); the inputs queue work once it leads.
    let inputs = Inputs::watch(&client, &args, feeder, reports);
    let stop = inputs
        .serve(runner.as_mut(), shutdown, leadership.subscribe())
        .await;

    worker.drain(runner, args.shutdown_timeout).await;
    log_summary(&telemetry.metrics);
    telemetry.leader.set(0);
    leadership.release().await;
    telemetry.server.stop().await;
    match stop {
        Stop::Shutdown => Ok(()),
        Stop::LostLease => Err(anyhow!(
            "lost the Lease {}; exiting so that the new leader acts alone",
            args.common.lease_name
        )),
    }
    .context("operator")
}

/// The operator's metrics, readiness gates and their server.
struct Telemetry {
    metrics: metrics::Metrics,
    queue_metrics: PrometheusQueueMetrics,
    synced: Gate,
    reachability: Reachability,
    /// 1 while this instance leads (`kube_sentinel_operator_leader`): leadership is a metric,
    /// not readiness, so that a standby is Ready and a rolling update completes.
    leader: Gauge,
    /// Beaten by the input loop; `/healthz` fails when it stops.
    heartbeat: Heartbeat,
    server: Server,
}

/// The telemetry server's task, and how to stop it.
struct Server {
    stop: watch::Sender<bool>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Server {
    /// Stops the server and waits for it.
    async fn stop(self) {
        let _ = self.stop.send(true);
        match self.task.await {
            Ok(Err(e)) => tracing::warn!(error = %e, "metrics server failed"),
            Err(e) => tracing::warn!(error = %e, "metrics server task failed"),
            Ok(Ok(())) => {}
        }
    }
}

impl Telemetry {
    /// Registers the metrics and serves them on `--metrics-addr` until [`Server::stop`].
    fn serve(args: &OperatorArgs) -> Self {
        let mut registry = Registry::default();
        let metrics = metrics::Metrics::register(&mut registry);
        crate::api_client::register(&mut registry);
        crate::telemetry::RuntimeCollector::register(&mut registry);
        metrics.controller_runtime.set_workers(args.workers);
        let queue_metrics =
            PrometheusQueueMetrics::register(&mut registry, controller_runtime::CONTROLLER);
        let health = Health::new();
        let synced = health.gate("watch-synced");
        let reachability = Reachability::new(health.gate("api-reachable"), args.unreachable_after);
        let heartbeat = health.heartbeat("input-loop", args.common.liveness_limit());
        let leader = Gauge::default();
        registry
            .sub_registry_with_prefix("kube_sentinel_operator")
            .register(
                "leader",
                "1 while this instance holds the Lease and acts",
                leader.clone(),
            );
        let (stop, stopped) = watch::channel(false);
        let task = spawn_server(
            args.metrics_addr,
            health,
            registry,
            metrics.clone(),
            stopped,
        );
        Self {
            metrics,
            queue_metrics,
            synced,
            reachability,
            leader,
            heartbeat,
            server: Server { stop, task },
        }
    }
}

/// Serves `/healthz`, `/readyz`, `/metrics` and `/debug/latency` on `addr` until `stopped`.
fn spawn_server(
    addr: SocketAddr,
    health: Health,
    registry: Registry,
    metrics: metrics::Metrics,
    mut stopped: watch::Receiver<bool>,
) -> JoinHandle<std::io::Result<()>> {
    let router = telemetry::router(health, Arc::new(registry)).route(
        "/debug/latency",
        get(move || {
            let m = metrics.clone();
            async move { m.percentile_text() }
        }),
    );
    let until_stopped = async move {
        let _ = stopped.wait_for(|s| *s).await;
    };
    tokio::spawn(async move { telemetry::serve(addr, router, until_stopped).await })
}
