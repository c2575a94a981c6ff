//! The sentinel: watch → managedFields actor filter → keyed debounce → status-patch trigger.
//!
//! ```text
//!  inputs.rs      metadata watches (StatefulSet, Service, ConfigMap; label selector),
//!                 leadership gains, the owners' cache
//!      │  Input
//!      ▼
//!  detect.rs      actor filter (watch::actor) + owner (watch::owner) + refusal policy
//!      │  DriftEvent { owner, object, managers, timing }
//!      ▼
//!  bursts.rs      per owner: window 2 s, max wait 10 s, jitter (stream::debounce);
//!                 acknowledged.rs ends a leading burst's hold once its trigger is handled
//!      │  Debounced<NamespacedName, DriftBurst>
//!      ▼
//!  gate.rs        leader only; refusal policy again (paused, deleting, disabled, gone)
//!      │  (NamespacedName, Pending)
//!      ▼
//!  sink.rs        RetrySink: status.sentinel trigger (trigger.rs), retried, latest wins
//! ```
//!
//! [`run`] wires these stages in this order. The sentinel reads the custom resources through
//! a reflector cache and never reads a Secret nor writes anything but the trigger;
//! `deploy/sentinel/` makes the API server enforce that.

pub mod acknowledged;
pub mod args;
pub mod bursts;
pub mod detect;
pub mod gate;
pub mod inputs;
pub mod metrics;
pub mod owner_state;
pub mod refusal;
pub mod sink;
pub mod trigger;

use std::{sync::Arc, time::Duration};

use anyhow::Result;
use futures::{FutureExt, Sink, Stream, StreamExt};
use prometheus_client::registry::Registry;
use tokio::task::JoinHandle;

pub use self::args::{ModeArg, SentinelArgs};
use self::{
    detect::{Detector, StoreOwners},
    gate::Pending,
    inputs::OwnerCache,
    metrics::SentinelMetrics,
};
use crate::{
    telemetry::{self, Gate, Health, Heartbeat, Reachability},
    watch::{NamespacedName, actor::ActorFilter},
};

/// Longest the sentinel keeps writing pending triggers after a shutdown signal.
const SHUTDOWN_FLUSH: Duration = Duration::from_secs(10);

/// Runs the sentinel until Ctrl-C or SIGTERM (or `shutdown` resolves).
pub async fn run(
    args: SentinelArgs,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let (owner_kind, defaults) = args.validate()?;
    let client = args.common.client().await?;
    let identity = args.common.identity();
    let shutdown = shutdown.shared();
    let telemetry = Telemetry::serve(&args, shutdown.clone());
    let metrics = telemetry.metrics.clone();
    let leadership = args
        .common
        .leadership(&client, &identity, crate::cli::Join::DeferringToAHolder)
        .await?;
    let namespace = args.namespace.as_deref();
    let errors = metrics.watch_errors.clone();
    let watch = args.common.watch_config();
    let Some(mut cache) = OwnerCache::start(
        &client,
        namespace,
        &owner_kind,
        watch.clone(),
        errors,
        shutdown.clone(),
    )
    .await?
    else {
        return Ok(());
    };
    let owners = StoreOwners {
        store: cache.store.clone(),
        kind: owner_kind.clone(),
    };

    let leader = leadership.subscribe();
    let inputs = inputs::detector_inputs(
        &client,
        namespace,
        watch,
        &args.selector,
        leader.clone(),
        telemetry.reachability,
        metrics.watch_errors.clone(),
    );
    let filter = ActorFilter::new(args.ignored_managers());
    let detector = Detector::new(
        filter,
        owner_kind.clone(),
        owners.clone(),
        defaults,
        metrics.clone(),
    );
    let drifts = detect::detect(
        inputs.take_until(shutdown.clone()),
        detector,
        telemetry.synced,
        telemetry.heartbeat,
    );
    let config = bursts::debounce_config(defaults, args.jitter);
    let acknowledged = futures::stream::iter(cache.acknowledged.take()).flatten();
    let bursts = bursts::bursts(drifts, acknowledged, config, metrics.pending_keys.clone());
    let triggers = gate::gate(bursts, leader, owners, metrics.clone());
    let sink = sink::trigger_sink(
        client,
        owner_kind,
        args.max_concurrent_writes,
        metrics,
        identity,
    );

    tracing::info!(
        selector = %args.selector, owner = %args.owner_resource, namespace = namespace.unwrap_or("*"),
        debounce = ?args.debounce, max_wait = ?args.max_wait, "sentinel started"
    );
    write_until_flushed(triggers, sink, shutdown).await;
    cache.stop();
    leadership.release().await;
    let _ = telemetry.server.await;
    tracing::info!("sentinel stopped");
    Ok(())
}

/// Drives `triggers` into `sink`. On shutdown the inputs end and bursts still in their window
/// are flushed at once; the sink then writes them, for at most [`SHUTDOWN_FLUSH`] (an
/// unreachable API server must not hold the process forever).
async fn write_until_flushed(
    triggers: impl Stream<Item = Result<(NamespacedName, Pending), std::convert::Infallible>>,
    sink: impl Sink<(NamespacedName, Pending), Error = std::convert::Infallible>,
    shutdown: impl Future<Output = ()>,
) {
    let flush_deadline = async move {
        shutdown.await;
        tokio::time::sleep(SHUTDOWN_FLUSH).await;
    };
    tokio::select! {
        r = triggers.forward(sink) => match r {
            Ok(()) => {}
            Err(never) => match never {},
        },
        () = flush_deadline => {
            tracing::warn!(waited = ?SHUTDOWN_FLUSH, "stopping with triggers not yet written");
        }
    }
}

/// The sentinel's metrics, readiness gates and the server of `/healthz`, `/readyz`, `/metrics`.
struct Telemetry {
    metrics: SentinelMetrics,
    /// Open once every watch has listed.
    synced: Gate,
    /// Closes when the API server has been unreachable too long.
    reachability: Reachability,
    /// Beaten by the pipeline; `/healthz` fails when it stops.
    heartbeat: Heartbeat,
    server: JoinHandle<std::io::Result<()>>,
}

impl Telemetry {
    /// Registers the metrics and serves them on `--metrics-addr` until `shutdown`.
    fn serve(args: &SentinelArgs, shutdown: impl Future<Output = ()> + Send + 'static) -> Self {
        let mut registry = Registry::default();
        let metrics = SentinelMetrics::register(&mut registry);
        crate::api_client::register(&mut registry);
        crate::telemetry::RuntimeCollector::register(&mut registry);
        let health = Health::new();
        let synced = health.gate("watches-synced");
        let reachability = Reachability::new(health.gate("api-reachable"), args.unreachable_after);
        let heartbeat = health.heartbeat("pipeline", args.common.liveness_limit());
        let server = tokio::spawn(telemetry::serve(
            args.metrics_addr,
            telemetry::router(health, Arc::new(registry)),
            shutdown,
        ));
        Self {
            metrics,
            synced,
            reachability,
            heartbeat,
            server,
        }
    }
}
