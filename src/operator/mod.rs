//! The operator: the [`StatefulCluster`] custom resource, its managers and
//! its reconciler, run on a two-lane work queue.
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
//! Bounded workers, never two on one resource, fast lane first (within `--fast-burst`); errors
//! are retried with per-key backoff on the lane they came from. [`run`] adds leader election,
//! `/healthz`, `/readyz`, `/metrics`, `/debug/latency` and a graceful shutdown that finishes the
//! work in flight and releases the Lease.

pub mod crd;
pub mod managers;
pub mod metrics;
pub mod reconcile;

use std::{
    collections::HashMap,
    net::SocketAddr,
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use anyhow::{Context as _, Result, anyhow};
use axum::routing::get;
use futures::{StreamExt, channel::mpsc};
use kube::{
    Api,
    runtime::{WatchStreamExt, watcher},
};
use prometheus_client::registry::Registry;

use crate::{
    cli::parse_duration,
    leader::{Leadership, LeaseConfig},
    stream::{Lane, LanesConfig, Next, TwoLaneQueue, run_two_lanes},
    telemetry::{self, Health, PrometheusQueueMetrics},
};
use crd::StatefulCluster;
use reconcile::{Context, Key, Requeue, SecretHint};

/// Flags of `kube-sentinel operator`; each has an environment fallback.
#[derive(Clone, Debug, clap::Args)]
pub struct OperatorArgs {
    /// Kubeconfig file (default: in-cluster config, then `KUBECONFIG`, then ~/.kube/config).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Watch StatefulClusters in this namespace only (default: all namespaces).
    #[arg(long, env = "KUBE_SENTINEL_NAMESPACE")]
    pub namespace: Option<String>,
    /// Address of /healthz, /readyz, /metrics and /debug/latency.
    #[arg(
        long,
        env = "KUBE_SENTINEL_METRICS_ADDR",
        default_value = "0.0.0.0:8080"
    )]
    pub metrics_addr: SocketAddr,
    /// Reconciles run at once (never two on one resource).
    #[arg(long, env = "KUBE_SENTINEL_WORKERS", default_value_t = 4)]
    pub workers: usize,
    /// Full reconcile of every resource this often, whatever happened.
    #[arg(long, env = "KUBE_SENTINEL_RESYNC", default_value = "10h", value_parser = parse_duration)]
    pub resync: Duration,
    /// Consecutive fast-lane claims before one waiting normal key is served.
    #[arg(long, env = "KUBE_SENTINEL_FAST_BURST", default_value_t = 8)]
    pub fast_burst: usize,
    /// Compete for a Lease and act only while holding it.
    #[arg(long, env = "KUBE_SENTINEL_LEADER_ELECT")]
    pub leader_elect: bool,
    /// Name of the Lease.
    #[arg(
        long,
        env = "KUBE_SENTINEL_LEASE_NAME",
        default_value = "kube-sentinel-operator"
    )]
    pub lease_name: String,
    /// Namespace of the Lease (default: `POD_NAMESPACE`, then `kube-sentinel`).
    #[arg(long, env = "KUBE_SENTINEL_LEASE_NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// How long the Lease lasts without renewal.
    #[arg(long, env = "KUBE_SENTINEL_LEASE_DURATION", default_value = "15s", value_parser = parse_duration)]
    pub lease_duration: Duration,
    /// How long before expiry the holder renews.
    #[arg(long, env = "KUBE_SENTINEL_LEASE_GRACE", default_value = "5s", value_parser = parse_duration)]
    pub lease_grace: Duration,
    /// This instance's identity in the Lease and in Events (default: `POD_NAME`, `HOSTNAME`).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// How often the latency summary is logged.
    #[arg(long, env = "KUBE_SENTINEL_LATENCY_LOG_INTERVAL", default_value = "60s", value_parser = parse_duration)]
    pub latency_log_interval: Duration,
    /// Also watch the managed StatefulSets, Services and ConfigMaps (metadata only) and
    /// reconcile their owner on the normal lane when one changes; for running without the
    /// sentinel (needs deploy/operator/rbac-watch-owned.yaml).
    #[arg(long, env = "KUBE_SENTINEL_WATCH_OWNED")]
    pub watch_owned: bool,
    /// Quiet period of the operator's own Secret watch before a foreign change to a Secret goes
    /// on the fast lane (at most four times this from the first change).
    #[arg(long, env = "KUBE_SENTINEL_SECRET_DEBOUNCE", default_value = "200ms", value_parser = parse_duration)]
    pub secret_debounce: Duration,
    /// Not ready (`/readyz`) after the StatefulCluster watch has failed for this long.
    #[arg(long, env = "KUBE_SENTINEL_UNREACHABLE_AFTER", default_value = "30s", value_parser = parse_duration)]
    pub unreachable_after: Duration,
    /// Longest wait for work in flight at shutdown.
    #[arg(long, env = "KUBE_SENTINEL_SHUTDOWN_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub shutdown_timeout: Duration,
}

/// Turns watch events into queue keys: a pending trigger on the fast lane, a new generation
/// or the initial list on the normal lane, every known resource again at each resync.
struct Feeder {
    generations: HashMap<Key, Option<i64>>,
    fast: mpsc::UnboundedSender<Key>,
    normal: mpsc::UnboundedSender<Key>,
}

impl Feeder {
    fn on_object(&mut self, cr: &StatefulCluster, initial: bool) {
        let Some(key) = Key::of(cr) else { return };
        let generation = cr.metadata.generation;
        let changed = self.generations.insert(key.clone(), generation) != Some(generation);
        if cr.pending_trigger().is_some() {
            tracing::debug!(resource = %key, trigger = ?cr.pending_trigger(), "trigger: fast lane");
            let _ = self.fast.unbounded_send(key);
        } else if initial || changed {
            let _ = self.normal.unbounded_send(key);
        }
    }

    fn on_event(&mut self, event: watcher::Event<StatefulCluster>, synced: &telemetry::Gate) {
        match event {
            watcher::Event::Init => {}
            watcher::Event::InitApply(cr) => self.on_object(&cr, true),
            watcher::Event::InitDone => synced.set(true),
            watcher::Event::Apply(cr) => self.on_object(&cr, false),
            watcher::Event::Delete(cr) => {
                if let Some(key) = Key::of(&cr) {
                    self.generations.remove(&key);
                }
            }
        }
    }

    fn resync(&self) {
        tracing::info!(
            resources = self.generations.len(),
            "resync: every resource on the normal lane"
        );
        for key in self.generations.keys() {
            let _ = self.normal.unbounded_send(key.clone());
        }
    }
}

fn identity(args: &OperatorArgs) -> String {
    args.identity
        .clone()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| {
            format!(
                "kube-sentinel-operator-{}",
                &uuid::Uuid::new_v4().simple().to_string()[..8]
            )
        })
}

/// Runs the operator until `shutdown` resolves (then finishes in-flight work and releases the
/// Lease), or until leadership is lost (an error: restart and stand by).
pub async fn run(
    args: OperatorArgs,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let client = crate::cli::kube_client(args.kubeconfig.as_deref()).await?;
    let identity = identity(&args);
    let mut registry = Registry::default();
    let metrics = metrics::Metrics::register(&mut registry);
    let queue_metrics = PrometheusQueueMetrics::register(
        registry.sub_registry_with_prefix("kube_sentinel_operator"),
    );
    let health = Health::new();
    let synced = health.gate("watch-synced");
    let mut reachability =
        telemetry::Reachability::new(health.gate("api-reachable"), args.unreachable_after);
    let leading = health.gate("leader");

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let server_stop = {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let debug_metrics = metrics.clone();
    let router = telemetry::router(health.clone(), Arc::new(registry)).route(
        "/debug/latency",
        get(move || {
            let m = debug_metrics.clone();
            async move { m.percentile_text() }
        }),
    );
    let listener_addr = args.metrics_addr;
    let server =
        tokio::spawn(async move { telemetry::serve(listener_addr, router, server_stop).await });

    let shutdown = async move {
        shutdown.await;
        tracing::info!("shutting down: finishing work in flight");
    };
    tokio::pin!(shutdown);

    let mut leadership = if args.leader_elect {
        let config = LeaseConfig {
            namespace: args
                .lease_namespace
                .clone()
                .or_else(|| std::env::var("POD_NAMESPACE").ok())
                .unwrap_or_else(|| "kube-sentinel".into()),
            name: args.lease_name.clone(),
            identity: identity.clone(),
            duration: args.lease_duration,
            grace: args.lease_grace,
        };
        Leadership::elect(client.clone(), config).await?
    } else {
        Leadership::always()
    };
    let won = tokio::select! {
        _ = leadership.until_leader() => true,
        _ = &mut shutdown => false,
    };
    if !won {
        leadership.release().await;
        let _ = stop_tx.send(true);
        let _ = server.await;
        return Ok(());
    }
    leading.set(true);
    tracing::info!(%identity, "leading: starting the work queue");
    let mut leader_state = leadership.subscribe();
    // Boxed so that it (and its receiver) can be dropped before the Lease is released.
    let mut lost = Box::pin(async move {
        // A closed channel (no election, or the election task gone) keeps its last value.
        if leader_state.wait_for(|leads| !*leads).await.is_err() {
            std::future::pending::<()>().await;
        }
    });

    let ctx = Arc::new(Context::new(
        client.clone(),
        metrics.clone(),
        Some(identity.clone()),
    ));
    let api: Api<StatefulCluster> = match &args.namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let (fast_tx, fast_rx) = mpsc::unbounded();
    let (normal_tx, normal_rx) = mpsc::unbounded();
    let mut feeder = Feeder {
        generations: HashMap::new(),
        fast: fast_tx,
        normal: normal_tx,
    };
    let events = watcher(api, watcher::Config::default()).default_backoff();
    tokio::pin!(events);

    let queue = TwoLaneQueue::new(LanesConfig {
        fast_burst_before_normal: args.fast_burst,
        ..LanesConfig::default()
    })
    .with_metrics(Box::new(queue_metrics));
    let secret_drifts = secrets::secret_drifts(
        client.clone(),
        args.namespace.as_deref(),
        args.secret_debounce,
    );
    tokio::pin!(secret_drifts);
    let mut owned_changes = if args.watch_owned {
        owned::owner_changes(client.clone(), args.namespace.as_deref()).boxed()
    } else {
        // Never ready, never ends: the select below must not spin on an empty stream.
        futures::stream::pending().boxed()
    };
    // Secret drift waiting for its key's fast-lane claim; read and cleared by the worker.
    let hints: Arc<Mutex<HashMap<Key, SecretHint>>> = Arc::default();
    let draining = Arc::new(AtomicBool::new(false));
    let in_flight = Arc::new(AtomicUsize::new(0));
    let runner = {
        let (draining, in_flight, hints) = (draining.clone(), in_flight.clone(), hints.clone());
        run_two_lanes(fast_rx, normal_rx, queue, args.workers, move |claim| {
            let (ctx, draining, in_flight) = (ctx.clone(), draining.clone(), in_flight.clone());
            let hint = hints
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&claim.key);
            async move {
                if draining.load(Ordering::Relaxed) {
                    return Ok(Next::Done);
                }
                in_flight.fetch_add(1, Ordering::Relaxed);
                let waited = claim.enqueued_at.elapsed();
                let started = tokio::time::Instant::now();
                let result = ctx.reconcile(&claim.key, hint).await;
                in_flight.fetch_sub(1, Ordering::Relaxed);
                tracing::debug!(resource = %claim.key, lane = %claim.lane, attempt = claim.attempt, ?waited, took = ?started.elapsed(), path = ?result.as_ref().map(|h| h.path).ok(), "reconciled");
                result.map(|handled| match handled.requeue {
                    Requeue::Done => Next::Done,
                    Requeue::Now => Next::Requeue(Lane::Normal),
                    Requeue::After(d) => Next::RequeueAfter(Lane::Normal, d),
                })
            }
        })
    };
    tokio::pin!(runner);
    let mut resync =
        tokio::time::interval_at(tokio::time::Instant::now() + args.resync, args.resync);
    let mut summary = tokio::time::interval_at(
        tokio::time::Instant::now() + args.latency_log_interval,
        args.latency_log_interval,
    );

    let mut outcome = Ok(());
    loop {
        tokio::select! {
            biased;
            _ = &mut shutdown => break,
            _ = &mut lost => {
                outcome = Err(anyhow!("lost the Lease {}; exiting so that the new leader acts alone", args.lease_name));
                break;
            }
            event = events.next() => match event {
                Some(Ok(event)) => {
                    reachability.succeeded();
                    feeder.on_event(event, &synced);
                }
                Some(Err(e)) => {
                    let down_for = reachability.failed();
                    tracing::warn!(error = %e, ?down_for, "StatefulCluster watch error; retrying");
                }
                None => break,
            },
            done = runner.next() => match done {
                Some((key, lane, Err(e))) => tracing::warn!(resource = %key, %lane, error = %e, "reconcile failed; retrying with backoff"),
                Some(_) => {}
                None => break,
            },
            drift = secret_drifts.next() => if let Some(drift) = drift {
                tracing::debug!(resource = %drift.key, secrets = ?drift.value, "foreign Secret change: fast lane");
                let hint = SecretHint { objects: drift.value, first_seen: drift.first_seen };
                let mut pending = hints.lock().unwrap_or_else(|e| e.into_inner());
                match pending.get_mut(&drift.key) {
                    Some(waiting) => waiting.objects.extend(hint.objects),
                    None => { pending.insert(drift.key.clone(), hint); }
                }
                let _ = feeder.fast.unbounded_send(drift.key);
            },
            Some(key) = owned_changes.next() => {
                tracing::debug!(resource = %key, "owned object changed: normal lane");
                let _ = feeder.normal.unbounded_send(key);
            }
            _ = resync.tick() => feeder.resync(),
            _ = summary.tick() => {
                for line in metrics.summary() {
                    tracing::info!("revert latency {line}");
                }
            }
        }
    }
    // New claims return at once from here on; wait for the ones already running.
    draining.store(true, Ordering::Relaxed);
    drop(feeder);
    let deadline = tokio::time::sleep(args.shutdown_timeout);
    tokio::pin!(deadline);
    while in_flight.load(Ordering::Relaxed) > 0 {
        tokio::select! {
            done = runner.next() => if done.is_none() { break },
            _ = &mut deadline => {
                tracing::warn!(in_flight = in_flight.load(Ordering::Relaxed), "shutdown timeout: abandoning work in flight");
                break;
            }
        }
    }
    for line in metrics.summary() {
        tracing::info!("revert latency {line}");
    }
    leading.set(false);
    drop(lost);
    leadership.release().await;
    let _ = stop_tx.send(true);
    match server.await {
        Ok(Err(e)) => tracing::warn!(error = %e, "metrics server failed"),
        Err(e) => tracing::warn!(error = %e, "metrics server task failed"),
        Ok(Ok(())) => {}
    }
    outcome.context("operator")
}
pub mod owned;
pub mod secrets;

#[cfg(test)]
mod tests {
    use super::*;
    use crd::{SentinelStatus, StatefulClusterStatus};

    fn cr(
        name: &str,
        generation: i64,
        trigger: Option<&str>,
        handled: Option<&str>,
    ) -> StatefulCluster {
        let spec = serde_json::from_value(serde_json::json!({
            "replicas": 1, "image": "db", "version": "1", "ports": [{"name": "c", "port": 1}]
        }))
        .expect("spec");
        let mut cr = StatefulCluster::new(name, spec);
        cr.metadata.namespace = Some("ns".into());
        cr.metadata.generation = Some(generation);
        let mut sentinel = SentinelStatus::default();
        sentinel.trigger.trigger_id = trigger.map(Into::into);
        sentinel.last_handled_trigger_id = handled.map(Into::into);
        cr.status = Some(StatefulClusterStatus {
            sentinel: Some(sentinel),
            ..Default::default()
        });
        cr
    }

    fn drain(rx: &mut mpsc::UnboundedReceiver<Key>) -> Vec<String> {
        let mut out = Vec::new();
        while let Ok(key) = rx.try_recv() {
            out.push(key.name);
        }
        out
    }

    #[test]
    fn pending_triggers_go_fast_new_generations_and_the_initial_list_go_normal() {
        let (fast, mut fast_rx) = mpsc::unbounded();
        let (normal, mut normal_rx) = mpsc::unbounded();
        let mut feeder = Feeder {
            generations: HashMap::new(),
            fast,
            normal,
        };
        let health = Health::new();
        let synced = health.gate("watch-synced");
        feeder.on_event(watcher::Event::Init, &synced);
        feeder.on_event(
            watcher::Event::InitApply(cr("quiet", 1, Some("t1"), Some("t1"))),
            &synced,
        );
        feeder.on_event(
            watcher::Event::InitApply(cr("pending", 1, Some("t2"), Some("t1"))),
            &synced,
        );
        assert!(!synced.is_open());
        feeder.on_event(watcher::Event::InitDone, &synced);
        assert!(synced.is_open());
        assert_eq!(drain(&mut fast_rx), vec!["pending"]);
        assert_eq!(drain(&mut normal_rx), vec!["quiet"]);

        // A status-only change (the operator's own acknowledgement) queues nothing.
        feeder.on_event(
            watcher::Event::Apply(cr("pending", 1, Some("t2"), Some("t2"))),
            &synced,
        );
        assert!(drain(&mut fast_rx).is_empty() && drain(&mut normal_rx).is_empty());
        // A spec change goes on the normal lane, a new trigger on the fast lane.
        feeder.on_event(
            watcher::Event::Apply(cr("quiet", 2, Some("t1"), Some("t1"))),
            &synced,
        );
        feeder.on_event(
            watcher::Event::Apply(cr("pending", 1, Some("t3"), Some("t2"))),
            &synced,
        );
        assert_eq!(drain(&mut normal_rx), vec!["quiet"]);
        assert_eq!(drain(&mut fast_rx), vec!["pending"]);

        feeder.on_event(watcher::Event::Delete(cr("quiet", 2, None, None)), &synced);
        feeder.resync();
        assert_eq!(drain(&mut normal_rx), vec!["pending"]);
    }
}
