//! The sentinel: watch → managedFields actor filter → keyed debounce → status-patch trigger.
//!
//! ```text
//!  metadata watches (StatefulSet, Service, ConfigMap; label selector)
//!      │  watcher::Event<ObjectMeta>
//!      ▼
//!  detect::Detector        actor filter (actor.rs) + owner (owner.rs) + owner's wishes
//!      │  DriftEvent { owner, object, managers, timing }
//!      ▼
//!  debounce_keyed_with     per owner: window 2 s, max wait 10 s, jitter (stream::debounce)
//!      │  Debounced<OwnerKey, DriftBurst>
//!      ▼
//!  leader / paused gate
//!      │
//!      ▼
//!  RetrySink               status.sentinel trigger, retried, latest wins (trigger.rs)
//! ```
//!
//! The sentinel reads the custom resources through a reflector cache and never reads a Secret
//! nor writes anything but the trigger; `deploy/sentinel/` makes the API server enforce that.

pub mod actor;
pub mod detect;
pub mod metrics;
pub mod owner;
pub mod trigger;

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use anyhow::{Context, Result};
use futures::{FutureExt, StreamExt, future, stream};
use jiff::Timestamp;
use k8s_openapi::api::{
    apps::v1::StatefulSet,
    core::v1::{ConfigMap, Service},
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{
    Api, Client, Resource,
    api::DynamicObject,
    core::PartialObjectMeta,
    runtime::{
        WatchStreamExt,
        events::{Event as K8sEvent, EventType, Recorder, Reporter},
        reflector, watcher,
    },
};
use prometheus_client::registry::Registry;
use serde::de::DeserializeOwned;
use tokio::time::Instant;

use self::{
    actor::ActorFilter,
    detect::{Detector, DriftEvent, Input, OwnerLookup, StoreOwners, TimingDefaults},
    metrics::SentinelMetrics,
    owner::{OwnerKey, OwnerKind},
    trigger::DriftBurst,
};
use crate::{
    cli::parse_duration,
    contract::{
        MANAGED_BY_LABEL, MANAGED_BY_VALUE, OPERATOR_FIELD_MANAGER, SENTINEL_FIELD_MANAGER,
        SentinelTrigger,
    },
    leader::{Leadership, LeaseConfig},
    stream::{
        ControllerStreamExt, DebounceConfig, DebounceMode, Debounced, Delivery, OnInputEnd, Retry,
        RetryConfig, RetrySink,
    },
    telemetry::{self, Health},
};

/// Debounce mode flag.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ModeArg {
    /// Trigger once the window has been quiet (at most max-wait after the first drift).
    Trailing,
    /// Trigger at once on the first drift, then at most once more per window.
    Leading,
}

/// Flags of `kube-sentinel sentinel`; each has an environment variable fallback.
#[derive(Clone, Debug, clap::Args)]
pub struct SentinelArgs {
    /// Kubeconfig to use (default: in-cluster configuration, then KUBECONFIG, then ~/.kube/config).
    #[arg(long, env = "KUBE_SENTINEL_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Watch one namespace only (default: all namespaces).
    #[arg(long, env = "KUBE_SENTINEL_NAMESPACE")]
    pub namespace: Option<String>,
    /// Label selector of the watched StatefulSets, Services and ConfigMaps.
    #[arg(long, env = "KUBE_SENTINEL_SELECTOR", default_value_t = format!("{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}"))]
    pub selector: String,
    /// The custom resource to trigger, as `plural.group/version`.
    #[arg(
        long,
        env = "KUBE_SENTINEL_OWNER_RESOURCE",
        default_value = "statefulclusters.kube-sentinel.dev/v1alpha1"
    )]
    pub owner_resource: String,
    /// Kind of the custom resource to trigger.
    #[arg(
        long,
        env = "KUBE_SENTINEL_OWNER_KIND",
        default_value = "StatefulCluster"
    )]
    pub owner_kind: String,
    /// Field managers whose changes are not drift (repeatable). The operator's and the
    /// sentinel's own are always ignored.
    #[arg(
        long = "ignore-manager",
        env = "KUBE_SENTINEL_IGNORE_MANAGERS",
        value_delimiter = ',',
        default_value = "kube-controller-manager"
    )]
    pub ignore_managers: Vec<String>,
    /// Debounce window: quiet time after the last drift before the trigger (1s..60s).
    #[arg(long, env = "KUBE_SENTINEL_DEBOUNCE", default_value = "2s", value_parser = parse_duration)]
    pub debounce: Duration,
    /// Longest a burst of drift may delay its trigger.
    #[arg(long, env = "KUBE_SENTINEL_MAX_WAIT", default_value = "10s", value_parser = parse_duration)]
    pub max_wait: Duration,
    /// Default debounce mode (a resource's spec.sentinel.mode overrides it).
    #[arg(long, env = "KUBE_SENTINEL_MODE", value_enum, default_value_t = ModeArg::Trailing)]
    pub mode: ModeArg,
    /// Largest per-resource jitter added to the window (below 1 s), so that resources that
    /// drift together do not all trigger in the same instant.
    #[arg(long, env = "KUBE_SENTINEL_JITTER", default_value = "250ms", value_parser = parse_duration)]
    pub jitter: Duration,
    /// Trigger writes in flight at most.
    #[arg(long, env = "KUBE_SENTINEL_MAX_CONCURRENT_WRITES", default_value_t = 8)]
    pub max_concurrent_writes: usize,
    /// Address of /healthz, /readyz and /metrics.
    #[arg(
        long,
        env = "KUBE_SENTINEL_METRICS_ADDR",
        default_value = "0.0.0.0:8080"
    )]
    pub metrics_addr: SocketAddr,
    /// Not ready after the API server has been unreachable for this long.
    #[arg(long, env = "KUBE_SENTINEL_UNREACHABLE_AFTER", default_value = "30s", value_parser = parse_duration)]
    pub unreachable_after: Duration,
    /// Compete for a Lease; only the leader writes triggers, standbys keep their watches warm.
    #[arg(long, env = "KUBE_SENTINEL_LEADER_ELECT")]
    pub leader_elect: bool,
    /// Namespace of the Lease (default: the namespace of the client's configuration, in a
    /// cluster the sentinel's own).
    #[arg(long, env = "KUBE_SENTINEL_LEASE_NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// Name of the Lease.
    #[arg(
        long,
        env = "KUBE_SENTINEL_LEASE_NAME",
        default_value = "kube-sentinel-sentinel"
    )]
    pub lease_name: String,
    /// Lease duration.
    #[arg(long, env = "KUBE_SENTINEL_LEASE_DURATION", default_value = "15s", value_parser = parse_duration)]
    pub lease_duration: Duration,
    /// This instance's identity in the Lease (default: the host name).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
}

impl SentinelArgs {
    fn validate(&self) -> Result<(OwnerKind, TimingDefaults)> {
        let owner =
            OwnerKind::parse(&self.owner_resource, &self.owner_kind).with_context(|| {
                format!(
                    "--owner-resource {:?} must look like plural.group/version",
                    self.owner_resource
                )
            })?;
        anyhow::ensure!(
            (Duration::from_secs(1)..=Duration::from_secs(60)).contains(&self.debounce),
            "--debounce must be between 1s and 60s, not {:?}",
            self.debounce
        );
        anyhow::ensure!(
            self.max_wait >= self.debounce,
            "--max-wait ({:?}) must be at least --debounce ({:?})",
            self.max_wait,
            self.debounce
        );
        anyhow::ensure!(
            self.max_concurrent_writes > 0,
            "--max-concurrent-writes must be positive"
        );
        let mode = match self.mode {
            ModeArg::Trailing => DebounceMode::Trailing,
            ModeArg::Leading => DebounceMode::LeadingTrailing,
        };
        Ok((
            owner,
            TimingDefaults {
                window: self.debounce,
                max_wait: self.max_wait,
                mode,
            },
        ))
    }
}

/// Longest the sentinel keeps writing pending triggers after a shutdown signal.
const SHUTDOWN_FLUSH: Duration = Duration::from_secs(10);

/// A burst ready to be written, with the instant its first event arrived.
#[derive(Clone, Debug)]
struct Pending {
    burst: Arc<DriftBurst>,
    first_seen: Instant,
}

/// Runs the sentinel until Ctrl-C or SIGTERM (or `shutdown` resolves).
pub async fn run(
    args: SentinelArgs,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let (owner_kind, defaults) = args.validate()?;
    let client = crate::cli::kube_client(args.kubeconfig.as_deref()).await?;
    let mut registry = Registry::default();
    let metrics = SentinelMetrics::register(&mut registry);
    let health = Health::new();
    let synced_gate = health.gate("watches-synced");
    let mut reachability =
        telemetry::Reachability::new(health.gate("api-reachable"), args.unreachable_after);

    let shutdown = shutdown.shared();
    let server = tokio::spawn(telemetry::serve(
        args.metrics_addr,
        telemetry::router(health.clone(), Arc::new(registry)),
        shutdown.clone(),
    ));

    let leadership = if args.leader_elect {
        let identity = args
            .identity
            .clone()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_else(|| format!("sentinel-{}", uuid::Uuid::new_v4().simple()));
        Leadership::elect(
            client.clone(),
            LeaseConfig {
                namespace: args
                    .lease_namespace
                    .clone()
                    .unwrap_or_else(|| client.default_namespace().to_owned()),
                name: args.lease_name.clone(),
                identity,
                duration: args.lease_duration,
                grace: args.lease_duration / 3,
            },
        )
        .await?
    } else {
        Leadership::always()
    };

    // The custom resources, cached: the owner's spec.sentinel, pause flag and last trigger.
    let owners_api: Api<DynamicObject> = match &args.namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &owner_kind.resource),
        None => Api::all_with(client.clone(), &owner_kind.resource),
    };
    let writer = reflector::store::Writer::new(owner_kind.resource.clone());
    let owners = writer.as_reader();
    let owner_errors = metrics.watch_errors.clone();
    let owner_watch = tokio::spawn(
        watcher(owners_api, watcher::Config::default())
            .default_backoff()
            .reflect(writer)
            .for_each(move |event| {
                if let Err(e) = event {
                    owner_errors.inc();
                    tracing::warn!(error = %e, "watching the custom resources failed; retrying");
                }
                future::ready(())
            }),
    );
    tokio::select! {
        ready = owners.wait_until_ready() => ready.context("the custom resource cache closed")?,
        () = shutdown.clone() => { owner_watch.abort(); return Ok(()); }
    }

    let selector = args.selector.clone();
    let config = watcher::Config::default().labels(&selector);
    let infra = stream::select_all([
        metadata_events::<StatefulSet>(
            "StatefulSet",
            &client,
            args.namespace.as_deref(),
            config.clone(),
        ),
        metadata_events::<Service>(
            "Service",
            &client,
            args.namespace.as_deref(),
            config.clone(),
        ),
        metadata_events::<ConfigMap>("ConfigMap", &client, args.namespace.as_deref(), config),
    ]);

    let mut ignored = args.ignore_managers.clone();
    ignored.extend([
        OPERATOR_FIELD_MANAGER.to_owned(),
        SENTINEL_FIELD_MANAGER.to_owned(),
    ]);
    let store_owners = StoreOwners {
        store: owners.clone(),
        kind: owner_kind.clone(),
    };
    let mut detector = Detector::new(
        ActorFilter::new(ignored),
        owner_kind.clone(),
        store_owners.clone(),
        defaults,
        metrics.clone(),
    );

    // Leadership gains become catch-up inputs (not the initial state: the first list covers it).
    let leader_gains = tokio_stream::wrappers::WatchStream::from_changes(leadership.subscribe())
        .filter(|leads| future::ready(*leads))
        .map(|_| Input::CatchUp);

    let watch_errors = metrics.watch_errors.clone();
    let watch_inputs = infra.filter_map(move |(kind, event)| {
        let input = match event {
            Ok(event) => {
                reachability.succeeded();
                Some(Input::Watch(kind, event))
            }
            Err(e) => {
                watch_errors.inc();
                let down_for = reachability.failed();
                tracing::warn!(kind, error = %e, down_for = ?down_for, "watch failed; retrying with backoff");
                None
            }
        };
        future::ready(input)
    });

    let pending_gauge = metrics.pending_keys.clone();
    let debounce = DebounceConfig {
        timing: crate::stream::Timing {
            window: defaults.window,
            max_wait: Some(defaults.max_wait),
            mode: defaults.mode,
        },
        max_jitter: args.jitter,
        on_input_end: OnInputEnd::Immediately,
    };
    let synced_detector_gate = synced_gate.clone();
    let drifts = stream::select(watch_inputs, leader_gains)
        .take_until(shutdown.clone())
        .flat_map(move |input| {
            let events = detector.handle(input);
            if ["StatefulSet", "Service", "ConfigMap"]
                .iter()
                .all(|k| detector.is_synced(k))
            {
                synced_detector_gate.set(true);
            }
            stream::iter(events)
        })
        .debounce_keyed_with(
            debounce,
            |e: &DriftEvent| e.owner.clone(),
            |e: &DriftEvent| Some(e.timing),
            move |burst: Option<DriftBurst>, e: DriftEvent| match burst {
                Some(mut b) => {
                    b.add(e.object, &e.managers);
                    b
                }
                None => {
                    pending_gauge.inc();
                    DriftBurst::new(e.object, &e.managers, e.received)
                }
            },
        );

    let leader_state = leadership.subscribe();
    let gate_metrics = metrics.clone();
    let gate_owners = store_owners.clone();
    let gated = drifts.filter_map(move |d: Debounced<OwnerKey, DriftBurst>| {
        gate_metrics.pending_keys.dec();
        gate_metrics.triggers_coalesced.inc_by(d.absorbed.saturating_sub(1));
        let drop_reason = if !*leader_state.borrow() {
            Some("standby")
        } else {
            match gate_owners.owner_state(&d.key) {
                None => Some("owner_not_found"),
                Some(s) if s.paused => Some("owner_paused"),
                Some(s) if s.deleting => Some("owner_deleting"),
                Some(s) if !s.sentinel.is_enabled() => Some("sentinel_disabled"),
                Some(_) => None,
            }
        };
        let item = match drop_reason {
            Some(reason) => {
                gate_metrics.triggers_dropped.get_or_create(&[("reason", reason)]).inc();
                tracing::info!(owner = %d.key, reason, objects = d.value.total(), "drift not triggered");
                None
            }
            None => Some(Ok((
                d.key,
                Pending {
                    burst: Arc::new(d.value),
                    first_seen: d.first_seen,
                },
            ))),
        };
        future::ready(item)
    });

    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "kube-sentinel".into(),
            instance: args.identity.clone(),
        },
    );
    let write_client = client.clone();
    let write_kind = owner_kind.clone();
    let write_metrics = metrics.clone();
    let outcome_metrics = metrics.clone();
    let sink = RetrySink::new(
        RetryConfig {
            max_concurrent: args.max_concurrent_writes,
            backoff_base: Duration::from_millis(200),
            backoff_max: Duration::from_secs(30),
            max_attempts: None,
        },
        move |owner: OwnerKey, pending: Pending| {
            let api: Api<DynamicObject> =
                Api::namespaced_with(write_client.clone(), &owner.namespace, &write_kind.resource);
            let recorder = recorder.clone();
            let metrics = write_metrics.clone();
            let kind = write_kind.clone();
            async move {
                let trigger = pending.burst.to_trigger(Timestamp::now());
                trigger::write(&api, &owner.name, &trigger).await?;
                let latency = pending.first_seen.elapsed();
                metrics.drift_to_trigger_seconds.observe(latency.as_secs_f64());
                tracing::info!(
                    owner = %owner,
                    trigger_id = trigger.trigger_id.as_deref().unwrap_or_default(),
                    objects = ?pending.burst.objects.iter().map(|o| format!("{}/{}", o.kind, o.name)).collect::<Vec<_>>(),
                    total = pending.burst.total(),
                    managers = ?pending.burst.managers,
                    latency_ms = latency.as_millis() as u64,
                    "trigger written"
                );
                publish_event(&recorder, &kind, &owner, &trigger).await;
                Ok::<(), kube::Error>(())
            }
        },
        |e: &kube::Error| {
            if trigger::is_transient(e) {
                Retry::Transient
            } else {
                Retry::Permanent
            }
        },
    )
    .merge_superseded(|newer: &mut Pending, older: Pending| {
        Arc::make_mut(&mut newer.burst).absorb(Arc::unwrap_or_clone(older.burst));
        newer.first_seen = newer.first_seen.min(older.first_seen);
    })
    .on_outcome(move |outcome| {
        outcome_metrics.triggers_retried.inc_by(u64::from(outcome.attempts.saturating_sub(1)));
        match outcome.delivery {
            Delivery::Sent(()) => {
                outcome_metrics.triggers_written.inc();
            }
            Delivery::Failed(e) => {
                outcome_metrics.triggers_failed.inc();
                tracing::error!(owner = %outcome.key, error = %e, "trigger could not be written");
            }
            Delivery::Superseded => {}
        }
    });

    tracing::info!(
        selector = %selector, owner = %args.owner_resource, namespace = args.namespace.as_deref().unwrap_or("*"),
        debounce = ?args.debounce, max_wait = ?args.max_wait, "sentinel started"
    );
    // On shutdown the inputs end and bursts still in their window are flushed at once; the
    // sink then writes them, for a bounded time (an unreachable API server must not hold the
    // process forever).
    let flush_deadline = {
        let shutdown = shutdown.clone();
        async move {
            shutdown.await;
            tokio::time::sleep(SHUTDOWN_FLUSH).await;
        }
    };
    let result = tokio::select! {
        r = gated.forward(sink) => r,
        () = flush_deadline => {
            tracing::warn!(waited = ?SHUTDOWN_FLUSH, "stopping with triggers not yet written");
            Ok(())
        }
    };
    owner_watch.abort();
    leadership.release().await;
    let _ = server.await;
    tracing::info!("sentinel stopped");
    result.map_err(|e: std::convert::Infallible| match e {})
}

async fn publish_event(
    recorder: &Recorder,
    kind: &OwnerKind,
    owner: &OwnerKey,
    trigger: &SentinelTrigger,
) {
    let reference = k8s_openapi::api::core::v1::ObjectReference {
        api_version: Some(kind.resource.api_version.clone()),
        kind: Some(kind.resource.kind.clone()),
        name: Some(owner.name.clone()),
        namespace: Some(owner.namespace.clone()),
        ..Default::default()
    };
    let names: Vec<String> = trigger
        .drifted_objects
        .iter()
        .map(|o| format!("{}/{}", o.kind, o.name))
        .collect();
    let event = K8sEvent {
        type_: EventType::Normal,
        reason: "DriftDetected".into(),
        note: Some(format!(
            "drift on {} object(s): {}; trigger {}",
            trigger.drifted_total.unwrap_or_default(),
            names.join(", "),
            trigger.trigger_id.as_deref().unwrap_or_default()
        )),
        action: "Trigger".into(),
        secondary: None,
    };
    if let Err(e) = recorder.publish(&event, &reference).await {
        tracing::warn!(owner = %owner, error = %e, "could not record the DriftDetected event");
    }
}

type MetadataEvents = std::pin::Pin<
    Box<
        dyn futures::Stream<
                Item = (
                    &'static str,
                    Result<watcher::Event<ObjectMeta>, watcher::Error>,
                ),
            > + Send,
    >,
>;

/// A metadata-only watch of `K` (label selector sent to the API server), as `ObjectMeta` events.
fn metadata_events<K>(
    kind: &'static str,
    client: &Client,
    namespace: Option<&str>,
    config: watcher::Config,
) -> MetadataEvents
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let api: Api<PartialObjectMeta<K>> = match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    Box::pin(
        watcher(api, config)
            .default_backoff()
            .map(move |r| (kind, r.map(into_metadata))),
    )
}

fn into_metadata<K>(event: watcher::Event<PartialObjectMeta<K>>) -> watcher::Event<ObjectMeta> {
    match event {
        watcher::Event::Apply(o) => watcher::Event::Apply(o.metadata),
        watcher::Event::Delete(o) => watcher::Event::Delete(o.metadata),
        watcher::Event::Init => watcher::Event::Init,
        watcher::Event::InitApply(o) => watcher::Event::InitApply(o.metadata),
        watcher::Event::InitDone => watcher::Event::InitDone,
    }
}
