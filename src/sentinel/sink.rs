//! The trigger sink: each gated burst written to its owner's status.
//!
//! The trigger sink: each gated burst written to its owner's `status.sentinel`, retried with
//! backoff, latest wins per owner (a newer burst absorbs an older one not yet written), with a
//! `DriftDetected` Event, and a `TriggerFailed` Warning when a trigger cannot be written.

use std::{convert::Infallible, sync::Arc, time::Duration};

use futures::Sink;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::{
    Api, Client,
    api::DynamicObject,
    runtime::events::{Event, EventType, Recorder},
};

use super::{
    gate::Pending,
    metrics::SentinelMetrics,
    trigger::{self, is_transient},
};
use crate::{
    contract::SentinelTrigger,
    events::{self, SENTINEL_REPORTING_CONTROLLER},
    stream::{Delivery, Retry, RetryConfig, RetryOutcome, RetrySink},
    watch::{NamespacedName, OwnerKind},
};

/// The sink: at most `max_concurrent` writes in flight, Events reported as `identity`.
pub fn trigger_sink(
    client: Client,
    kind: OwnerKind,
    max_concurrent: usize,
    metrics: SentinelMetrics,
    identity: String,
) -> impl Sink<(NamespacedName, Pending), Error = Infallible> {
    let recorder = Recorder::new(
        client.clone(),
        events::reporter(SENTINEL_REPORTING_CONTROLLER, Some(identity)),
    );
    let outcome_metrics = metrics.clone();
    let retried = metrics.triggers_retried.clone();
    let (failure_recorder, failure_kind) = (recorder.clone(), kind.clone());
    let config = RetryConfig {
        max_concurrent,
        backoff_base: Duration::from_millis(200),
        backoff_max: Duration::from_secs(30),
        max_attempts: None,
    };
    let write = move |owner: NamespacedName, pending: Pending| {
        let api: Api<DynamicObject> =
            Api::namespaced_with(client.clone(), &owner.namespace, &kind.resource);
        write_trigger(
            api,
            recorder.clone(),
            kind.clone(),
            metrics.clone(),
            owner,
            pending,
        )
    };
    let classify = |e: &kube::Error| {
        if is_transient(e) {
            Retry::Transient
        } else {
            Retry::Permanent
        }
    };
    RetrySink::new(config, write, classify)
        .merge_superseded(|newer: &mut Pending, older: Pending| {
            Arc::make_mut(&mut newer.burst).absorb(Arc::unwrap_or_clone(older.burst));
            newer.first_seen = newer.first_seen.min(older.first_seen);
        })
        .on_retry(move |owner, attempts, delay, error| {
            retried.inc();
            tracing::warn!(owner = %owner, attempts, ?delay, error = %error, "trigger write failed; retrying");
        })
        .on_outcome(move |outcome| {
            if let Delivery::Failed(e) = &outcome.delivery {
                let (recorder, kind) = (failure_recorder.clone(), failure_kind.clone());
                let (owner, error) = (outcome.key.clone(), e.to_string());
                // The outcome callback is synchronous; the Event must not hold up the sink.
                tokio::spawn(async move { publish_failure(&recorder, &kind, &owner, error).await });
            }
            count_outcome(&outcome_metrics, outcome)
        })
}

/// One attempt: the trigger written, its latency recorded and logged, the Event published.
async fn write_trigger(
    api: Api<DynamicObject>,
    recorder: Recorder,
    kind: OwnerKind,
    metrics: SentinelMetrics,
    owner: NamespacedName,
    pending: Pending,
) -> Result<(), kube::Error> {
    let trigger = pending.burst.to_trigger(Timestamp::now());
    trigger::write(&api, &owner.name, &trigger).await?;
    let latency = pending.first_seen.elapsed();
    metrics
        .drift_to_trigger_seconds
        .observe(latency.as_secs_f64());
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
    Ok(())
}

/// Counts a final outcome: written, failed (and logged), or superseded (retries are counted
/// as they happen).
fn count_outcome(
    metrics: &SentinelMetrics,
    outcome: RetryOutcome<NamespacedName, (), kube::Error>,
) {
    match outcome.delivery {
        Delivery::Sent(()) => {
            metrics.triggers_written.inc();
        }
        Delivery::Failed(e) => {
            metrics.triggers_failed.inc();
            tracing::error!(owner = %outcome.key, error = %e, "trigger could not be written");
        }
        Delivery::Superseded => {}
    }
}

/// A reference to `owner`, an object of `kind`.
fn owner_reference(kind: &OwnerKind, owner: &NamespacedName) -> ObjectReference {
    ObjectReference {
        api_version: Some(kind.resource.api_version.clone()),
        kind: Some(kind.resource.kind.clone()),
        name: Some(owner.name.clone()),
        namespace: Some(owner.namespace.clone()),
        ..Default::default()
    }
}

/// The `TriggerFailed` Warning on the owner: its drift will not be reverted until the next
/// trigger (or the operator's resync), and says why.
async fn publish_failure(
    recorder: &Recorder,
    kind: &OwnerKind,
    owner: &NamespacedName,
    error: String,
) {
    let event = Event {
        type_: EventType::Warning,
        reason: "TriggerFailed".into(),
        note: Some(events::note(format!(
            "the trigger could not be written: {error}"
        ))),
        action: "Trigger".into(),
        secondary: None,
    };
    if let Err(e) = recorder
        .publish(&event, &owner_reference(kind, owner))
        .await
    {
        tracing::warn!(owner = %owner, error = %e, "could not record the TriggerFailed event");
    }
}

/// The `DriftDetected` Event on the owner, naming the drifted objects and the trigger.
async fn publish_event(
    recorder: &Recorder,
    kind: &OwnerKind,
    owner: &NamespacedName,
    trigger: &SentinelTrigger,
) {
    let reference = owner_reference(kind, owner);
    let names: Vec<String> = trigger
        .drifted_objects
        .iter()
        .map(|o| format!("{}/{}", o.kind, o.name))
        .collect();
    let event = Event {
        type_: EventType::Normal,
        reason: "DriftDetected".into(),
        note: Some(events::note(format!(
            "drift on {} object(s), trigger {}: {}",
            trigger.drifted_total.unwrap_or_default(),
            trigger.trigger_id.as_deref().unwrap_or_default(),
            names.join(", ")
        ))),
        action: "Trigger".into(),
        secondary: None,
    };
    if let Err(e) = recorder.publish(&event, &reference).await {
        tracing::warn!(owner = %owner, error = %e, "could not record the DriftDetected event");
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use axum::{
        Router,
        extract::Request,
        http::{Method, StatusCode, header::CONTENT_TYPE},
        response::{IntoResponse, Response},
    };
    use futures::SinkExt;
    use prometheus_client::registry::Registry;
    use tokio::time::Instant;

    use super::*;
    use crate::{
        api_client::{self, Timeouts},
        contract::{DriftChange, DriftedObject},
        sentinel::trigger::DriftBurst,
    };

    /// Trigger writes (status patches) the server refuses before it takes one.
    const THROTTLED: usize = 3;
    const TOO_MANY_REQUESTS: Refusal = (
        StatusCode::TOO_MANY_REQUESTS,
        r#"{"kind":"Status","apiVersion":"v1","status":"Failure","message":"slow down","reason":"TooManyRequests","code":429}"#,
    );
    /// What a restarted API server answers until its RBAC authorizer has synced.
    const FORBIDDEN: Refusal = (
        StatusCode::FORBIDDEN,
        r#"{"kind":"Status","apiVersion":"v1","status":"Failure","message":"statefulclusters.kube-sentinel.dev \"db\" is forbidden: User \"system:serviceaccount:kube-sentinel:sentinel\" cannot patch resource \"statefulclusters/status\"","reason":"Forbidden","code":403}"#,
    );
    type Refusal = (StatusCode, &'static str);

    /// An API server stand-in: each status patch's arrival recorded, the first [`THROTTLED`]
    /// refused with `refusal`, then 200; anything else (the Event) 201.
    async fn refusing_server(patches: Arc<Mutex<Vec<Instant>>>, refusal: Refusal) -> String {
        let app = Router::new().fallback(move |request: Request| {
            let patches = patches.clone();
            async move { answer(&patches, request.method(), refusal) }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        url
    }

    fn answer(patches: &Mutex<Vec<Instant>>, method: &Method, refusal: Refusal) -> Response {
        let json = [(CONTENT_TYPE, "application/json")];
        if method != Method::PATCH {
            return (StatusCode::CREATED, json, "{}").into_response();
        }
        let seen = {
            let mut patches = patches.lock().expect("not poisoned");
            patches.push(Instant::now());
            patches.len()
        };
        if seen <= THROTTLED {
            (refusal.0, json, refusal.1).into_response()
        } else {
            let object = r#"{"apiVersion":"kube-sentinel.dev/v1alpha1","kind":"StatefulCluster","metadata":{"name":"db","namespace":"ns"}}"#;
            (StatusCode::OK, json, object).into_response()
        }
    }

    #[tokio::test]
    async fn a_throttled_trigger_write_is_retried_by_one_layer_and_every_retry_is_counted() {
        let gaps = written_after_refusals(TOO_MANY_REQUESTS).await;
        // The sink's backoff, 200 ms doubling with equal jitter: at least half of each delay.
        for (n, gap) in gaps.iter().enumerate() {
            let floor = Duration::from_millis(100) * 2u32.pow(n as u32);
            assert!(
                *gap >= floor,
                "retry {} after {gap:?} (< {floor:?}): {gaps:?}",
                n + 1
            );
        }
        eprintln!("retries after {gaps:?}");
    }

    /// Found by `kube-sentinel faults` (apiserver-kill): right after a restart the API server
    /// denies until its authorizer has synced; a trigger given up on then was a lost drift.
    #[tokio::test]
    async fn a_trigger_denied_while_a_restarted_api_server_warms_up_is_retried() {
        written_after_refusals(FORBIDDEN).await;
    }

    /// Sends one trigger to a server that refuses it [`THROTTLED`] times with `refusal`;
    /// checks it was written after one call per attempt, every retry counted; the gaps
    /// between the calls.
    async fn written_after_refusals(refusal: Refusal) -> Vec<Duration> {
        let patches = Arc::new(Mutex::new(Vec::new()));
        let url = refusing_server(patches.clone(), refusal).await;
        // The programs' own client: if it retried 429 itself, the sink would see one success
        // and count no retry, while the server saw several calls.
        let client = api_client::build(
            kube::Config::new(url.parse().expect("url")),
            Timeouts::default(),
        )
        .expect("client");
        let metrics = SentinelMetrics::register(&mut Registry::default());
        let mut sink = Box::pin(trigger_sink(
            client,
            OwnerKind::default(),
            1,
            metrics.clone(),
            "test".into(),
        ));
        let object = DriftedObject {
            kind: "Service".into(),
            name: "db".into(),
            change: DriftChange::Modified,
        };
        let burst = DriftBurst::new(object, &["kubectl-edit".into()], Timestamp::now());
        let pending = Pending {
            burst: Arc::new(burst),
            first_seen: Instant::now(),
        };
        tokio::time::timeout(
            Duration::from_secs(20),
            sink.send((NamespacedName::new("ns", "db"), pending)),
        )
        .await
        .expect("written within the backoff")
        .expect("infallible");

        let patches = patches.lock().expect("not poisoned").clone();
        assert_eq!(patches.len(), THROTTLED + 1, "one call per attempt");
        assert_eq!(metrics.triggers_retried.get(), THROTTLED as u64);
        assert_eq!(metrics.triggers_written.get(), 1);
        patches.windows(2).map(|w| w[1] - w[0]).collect()
    }
}
