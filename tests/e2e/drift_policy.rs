//! Drift policy on the real control plane, with the sentinel and the operator as their
//! ServiceAccounts: ignored fields, warn mode, a fight backed off, and the CRD refusing
//! malformed rules.

use std::time::Duration;

use k8s_openapi::api::{apps::v1::StatefulSet, core::v1::Service, events::v1::Event};
use kube::{
    Api, Client,
    api::{DynamicObject, Patch, PatchParams, PostParams},
};
use kube_sentinel::operator::crd::{Outcome, StatefulCluster};
use serde_json::{Value, json};

use crate::{
    events::events_with_reason,
    operator::running::{self, Kubelet},
    support::{Logged, control_plane, eventually},
};

const WAIT: Duration = Duration::from_secs(60);
const DESIRED_IMAGE: &str = "registry.k8s.io/pause:3.9";

fn as_manager(manager: &str) -> PatchParams {
    PatchParams {
        field_manager: Some(manager.into()),
        ..Default::default()
    }
}

/// Sets the member image of StatefulSet `db` as `manager` (a JSON Patch: one field, nothing
/// else owned).
async fn set_image(sts: &Api<StatefulSet>, manager: &str, image: &str) {
    let patch = json!([{"op": "replace", "path": "/spec/template/spec/containers/0/image",
                        "value": image}]);
    let patch = Patch::Json::<()>(serde_json::from_value(patch).expect("patch"));
    sts.patch("db", &as_manager(manager), &patch)
        .await
        .expect("image drift");
}

async fn image(sts: &Api<StatefulSet>) -> Option<String> {
    let sts = sts.get("db").await.ok()?;
    sts.spec.template.spec?.containers.first()?.image.clone()
}

async fn replicas(sts: &Api<StatefulSet>) -> Option<i32> {
    sts.get("db").await.ok()?.spec.replicas
}

/// Waits until `what`: the StatefulSet runs the desired image again.
async fn image_reverted(sts: &Api<StatefulSet>, what: &str) {
    eventually(WAIT, what, || async {
        (image(sts).await.as_deref() == Some(DESIRED_IMAGE)).then_some(())
    })
    .await;
}

/// Waits until `db`'s pending trigger is acknowledged; the resource then.
async fn acknowledged(clusters: &Api<StatefulCluster>) -> StatefulCluster {
    eventually(WAIT, "the trigger acknowledged", || async {
        let cr = clusters.get("db").await.ok()?;
        let s = cr.status.as_ref()?.sentinel.as_ref()?;
        (s.last_handled_trigger_id.is_some() && s.last_handled_trigger_id == s.trigger.trigger_id)
            .then_some(cr)
    })
    .await
}

fn trigger_id(cr: &StatefulCluster) -> Option<String> {
    cr.status
        .as_ref()?
        .sentinel
        .as_ref()?
        .trigger
        .trigger_id
        .clone()
}

/// A running pair and a ready `db` with `sentinel` as its `spec.sentinel`.
struct Setup {
    admin: Client,
    ns: String,
    operator: running::Operator,
    _kubelet: Kubelet,
    sentinel: Logged,
}

async fn setup(prefix: &str, sentinel: Value) -> Setup {
    let cp = control_plane();
    let admin = cp.admin().await;
    let ns = cp.namespace(prefix).await;
    let operator = running::start_operator(&ns, &[]).await;
    let kubelet = Kubelet::start(admin.clone(), &ns);
    let program = running::start_sentinel(&ns, &[]).await;
    let cr = running::cluster("db", json!({"sentinel": sentinel}));
    running::create(&admin, &ns, &cr).await;
    running::wait_ready(&admin, &ns, "db").await;
    running::settle(operator.port).await;
    Setup {
        admin,
        ns,
        operator,
        _kubelet: kubelet,
        sentinel: Logged(program, "sentinel"),
    }
}

#[tokio::test]
async fn an_ignored_field_is_neither_drift_nor_reverted_while_the_rest_still_is() {
    let s = setup(
        "policy-ignore",
        json!({"ignore": [{"kind": "StatefulSet", "paths": ["/spec/replicas"]}]}),
    )
    .await;
    let sts: Api<StatefulSet> = Api::namespaced(s.admin.clone(), &s.ns);
    let clusters: Api<StatefulCluster> = Api::namespaced(s.admin.clone(), &s.ns);
    // A scale alone, as `kubectl scale` makes it (the scale subresource): no trigger at all.
    let scale = |n: i32| {
        let sts = sts.clone();
        async move {
            sts.patch_scale(
                "db",
                &as_manager("kubectl"),
                &Patch::Merge(json!({"spec": {"replicas": n}})),
            )
            .await
            .expect("scale");
        }
    };
    scale(5).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let cr = clusters.get("db").await.expect("get");
    assert_eq!(
        trigger_id(&cr),
        None,
        "a scale is not drift: {}",
        s.sentinel.0.log()
    );
    assert_eq!(replicas(&sts).await, Some(5));
    // A scale and an image change in the same second: the image is reverted, the scale kept.
    scale(4).await;
    set_image(&sts, "kubectl-patch", "registry.k8s.io/pause:evil").await;
    image_reverted(&sts, "the image reverted").await;
    let cr = acknowledged(&clusters).await;
    let sentinel = cr.status.and_then(|s| s.sentinel).expect("sentinel");
    assert_eq!(sentinel.last_outcome, Some(Outcome::Corrected));
    // The full reconcile that follows does not take the replicas back either.
    running::settle(s.operator.port).await;
    assert_eq!(
        replicas(&sts).await,
        Some(4),
        "the ignored field is left alone"
    );
    assert_eq!(image(&sts).await.as_deref(), Some(DESIRED_IMAGE));
}

#[tokio::test]
async fn warn_mode_reports_drift_and_leaves_it_until_revert_is_chosen_again() {
    let s = setup("policy-warn", json!({"action": "warn"})).await;
    let sts: Api<StatefulSet> = Api::namespaced(s.admin.clone(), &s.ns);
    let clusters: Api<StatefulCluster> = Api::namespaced(s.admin.clone(), &s.ns);
    let events: Api<Event> = Api::namespaced(s.admin.clone(), &s.ns);
    set_image(&sts, "kubectl-patch", "registry.k8s.io/pause:evil").await;
    let cr = acknowledged(&clusters).await;
    let sentinel = cr.status.and_then(|s| s.sentinel).expect("sentinel");
    assert_eq!(sentinel.last_outcome, Some(Outcome::Detected));
    let event = eventually(WAIT, "a DriftDetected Event", || async {
        events_with_reason(&events, "DriftDetected").await.pop()
    })
    .await;
    assert_eq!(event.type_.as_deref(), Some("Warning"));
    let note = event.note.unwrap_or_default();
    assert!(
        note.contains("StatefulSet db changed by kubectl-patch"),
        "{note}"
    );
    // A full reconcile (a label on the resource: no new generation) leaves the drift too.
    clusters
        .patch(
            "db",
            &as_manager("someone"),
            &Patch::Merge(json!({"metadata": {"labels": {"touched": "yes"}}})),
        )
        .await
        .expect("label");
    running::settle(s.operator.port).await;
    assert_eq!(
        image(&sts).await.as_deref(),
        Some("registry.k8s.io/pause:evil"),
        "left in place"
    );
    // Back to revert: the drift goes.
    clusters
        .patch(
            "db",
            &as_manager("someone"),
            &Patch::Merge(json!({"spec": {"sentinel": {"action": "revert"}}})),
        )
        .await
        .expect("revert mode");
    image_reverted(&sts, "the image reverted").await;
}

/// How long the fighter re-drifts, and how often.
const FIGHT: Duration = Duration::from_secs(60);
const FIGHTER_PERIOD: Duration = Duration::from_secs(1);

#[tokio::test]
async fn a_fight_is_backed_off_for_that_object_only_and_ends_when_the_fighter_stops() {
    // A 1 s window and max wait: without a backoff, the fighter's drift every second is
    // reverted about every 2 s.
    let within = 10;
    let s = setup(
        "policy-fight",
        json!({"debounceWindowSeconds": 1, "maxWaitSeconds": 1,
               "fightBackoff": {"reverts": 3, "withinSeconds": within, "maxDelaySeconds": 20}}),
    )
    .await;
    let sts: Api<StatefulSet> = Api::namespaced(s.admin.clone(), &s.ns);
    let services: Api<Service> = Api::namespaced(s.admin.clone(), &s.ns);
    let clusters: Api<StatefulCluster> = Api::namespaced(s.admin.clone(), &s.ns);
    let events: Api<Event> = Api::namespaced(s.admin.clone(), &s.ns);
    let started = tokio::time::Instant::now();
    let mut reverts = 0;
    let mut other_reverted_in = None;
    let mut fighting_condition = false;
    while started.elapsed() < FIGHT {
        if image(&sts).await.as_deref() == Some(DESIRED_IMAGE) {
            reverts += 1;
        }
        set_image(&sts, "fighter", "registry.k8s.io/pause:fight").await;
        tokio::time::sleep(FIGHTER_PERIOD).await;
        // Half way, another object of the same resource drifts: reverted at once.
        if other_reverted_in.is_none() && started.elapsed() > FIGHT / 2 {
            other_reverted_in = Some(drift_service_and_wait(&services).await);
        }
        let cr = clusters.get("db").await.expect("get");
        fighting_condition |= cr.status.iter().flat_map(|s| &s.conditions).any(|c| {
            c.type_ == "DriftFighting" && c.status == "True" && c.message.contains("fighter")
        });
    }
    eprintln!(
        "reverts in {FIGHT:?} of a fight: {reverts}; the other object's revert: {other_reverted_in:?}"
    );
    // Reverts at about 0, 2, 4 s, then held 2, 6, 18, 20, 20 s: about 8. Without a backoff
    // about 30.
    assert!((4..=12).contains(&reverts), "{reverts} reverts");
    let other = other_reverted_in.expect("the other drift ran");
    assert!(
        other < Duration::from_secs(10),
        "the Service waited {other:?}"
    );
    assert!(
        fighting_condition,
        "DriftFighting condition naming the fighter"
    );
    let event = eventually(WAIT, "a DriftFighting Event", || async {
        events_with_reason(&events, "DriftFighting").await.pop()
    })
    .await;
    assert_eq!(event.type_.as_deref(), Some("Warning"));
    assert!(
        event
            .note
            .as_deref()
            .unwrap_or_default()
            .contains("fighter"),
        "{:?}",
        event.note
    );
    // The fighter stopped: its last drift is reverted when the hold ends, and once the window
    // has passed the next drift is reverted at once again.
    image_reverted(&sts, "the last drift reverted after its hold").await;
    tokio::time::sleep(Duration::from_secs(within + 1)).await;
    let drifted = tokio::time::Instant::now();
    set_image(&sts, "fighter", "registry.k8s.io/pause:fight").await;
    image_reverted(&sts, "the next drift reverted").await;
    let took = drifted.elapsed();
    assert!(took < Duration::from_secs(10), "reverted after {took:?}");
}

/// Adds a label to Service `db` as another manager; how long until it is gone.
async fn drift_service_and_wait(services: &Api<Service>) -> Duration {
    let drifted = tokio::time::Instant::now();
    services
        .patch(
            "db",
            &as_manager("someone-else"),
            &Patch::Merge(json!({"metadata": {"labels": {"extra": "x"}}})),
        )
        .await
        .expect("service drift");
    eventually(WAIT, "the Service reverted", || async {
        let svc = services.get("db").await.ok()?;
        let labels = svc.metadata.labels.unwrap_or_default();
        (!labels.contains_key("extra")).then_some(())
    })
    .await;
    drifted.elapsed()
}

#[tokio::test]
async fn the_crd_refuses_malformed_drift_rules_with_readable_messages() {
    let cp = control_plane();
    let admin = cp.admin().await;
    let ns = cp.namespace("policy-crd").await;
    let resource = crate::support::install_crd(&admin).await;
    let clusters: Api<DynamicObject> = Api::namespaced_with(admin, &ns, &resource);
    // Built untyped: the typed spec could not even hold most of these.
    let cluster = |sentinel: &Value| -> DynamicObject {
        let mut cr = serde_json::to_value(running::cluster("db", json!({}))).expect("cluster");
        cr["spec"]["sentinel"] = sentinel.clone();
        serde_json::from_value(cr).expect("object")
    };
    let dry_run = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let rule = |paths: Value| json!({"ignore": [{"kind": "StatefulSet", "paths": paths}]});
    for (sentinel, expected) in [
        (rule(json!(["spec/replicas"])), "must be JSON Pointers"),
        (rule(json!(["/spec//replicas"])), "must be JSON Pointers"),
        (rule(json!(["/spec/a~2b"])), "must be JSON Pointers"),
        (rule(json!(["/metadata/labels"])), "must not cover the name"),
        (
            rule(json!(["/metadata/ownerReferences/0"])),
            "must not cover the name",
        ),
        (rule(json!(["/*"])), "must not cover the name"),
        (rule(json!([])), "should have at least 1 items"),
        (
            json!({"ignore": [{"kind": "Deployment", "paths": ["/spec/replicas"]}]}),
            "Unsupported value: \"Deployment\"",
        ),
        (json!({"action": "ignore"}), "Unsupported value: \"ignore\""),
        (
            json!({"fightBackoff": {"maxDelaySeconds": 1}}),
            "should be greater than or equal to 2",
        ),
    ] {
        let error = clusters
            .create(&dry_run, &cluster(&sentinel))
            .await
            .expect_err(&format!("{sentinel} is refused"));
        assert!(error.to_string().contains(expected), "{sentinel}: {error}");
    }
    let good = json!({"action": "warn", "ignore": [
        {"kind": "StatefulSet", "name": "db", "paths": ["/spec/replicas", "/spec/template/spec/containers/*/image"]},
        {"kind": "Service", "paths": ["/metadata/annotations/mesh.io~1status"]}],
        "fightBackoff": {"reverts": 3, "withinSeconds": 60, "maxDelaySeconds": 600}});
    clusters
        .create(&dry_run, &cluster(&good))
        .await
        .expect("well-formed rules are accepted");
}
