//! The operator on a real control plane: the StatefulCluster CRD and its admission rules.

use kube::{
    Api,
    api::{DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams},
    discovery,
};
use kube_sentinel::{manifests, operator::crd};
use serde_json::{Value, json};

use crate::support::control_plane;

const SAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/samples");

/// Installs the committed CRD (idempotent; every test calls it).
async fn install_crd(client: &kube::Client) {
    let yaml = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/crd/statefulcluster.yaml"
    ))
    .expect("read CRD");
    manifests::apply(client, &yaml, "e2e", "default")
        .await
        .expect("apply CRD");
}

async fn clusters(client: &kube::Client, ns: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("kube-sentinel.dev", "v1alpha1", "StatefulCluster");
    let (resource, _) = discovery::pinned_kind(client, &gvk)
        .await
        .expect("StatefulCluster served");
    Api::namespaced_with(client.clone(), ns, &resource)
}

/// One way to break a valid object.
type Mutation = Box<dyn Fn(&mut Value)>;

fn sample(name: &str) -> Value {
    let text = std::fs::read_to_string(format!("{SAMPLES}/{name}.yaml")).expect("read sample");
    manifests::parse(&text).expect("parse sample").remove(0)
}

#[tokio::test]
async fn crd_accepts_both_samples_and_rejects_invalid_specs_with_their_messages() {
    let cp = control_plane();
    let client = cp.admin().await;
    let ns = cp.namespace("crd").await;
    install_crd(&client).await;
    let applied = manifests::apply_dir(&client, SAMPLES.as_ref(), "e2e", &ns)
        .await
        .expect("both samples are accepted");
    assert_eq!(applied.len(), 2);
    let api = clusters(&client, &ns).await;
    let full = api.get("full").await.expect("full sample stored");
    let typed: crd::StatefulCluster =
        serde_json::from_value(serde_json::to_value(&full).expect("json")).expect("typed");
    assert_eq!(typed.spec.upgrade.strategy, crd::UpgradeStrategy::BlueGreen);
    let minimal = api.get("minimal").await.expect("minimal sample stored");
    assert_eq!(
        minimal.data["spec"]["upgrade"]["strategy"], "Rolling",
        "defaults are filled in at admission"
    );

    let base = sample("full");
    let cases: Vec<(&str, Mutation, &str)> = vec![
        (
            "zero replicas",
            Box::new(|v| v["spec"]["replicas"] = json!(0)),
            "spec.replicas: Invalid value",
        ),
        (
            "image with a tag",
            Box::new(|v| v["spec"]["image"] = json!("registry.example/db:1.2")),
            "spec.image must be a repository without tag or digest",
        ),
        (
            "rotate before validity",
            Box::new(|v| v["spec"]["tls"]["rotateBeforeDays"] = json!(90)),
            "spec.tls.rotateBeforeDays must be less than spec.tls.validityDays",
        ),
        (
            "duplicate port names",
            Box::new(|v| v["spec"]["ports"][1]["name"] = json!("client")),
            "spec.ports names must be unique",
        ),
        (
            "duplicate port numbers",
            Box::new(|v| v["spec"]["ports"][1]["port"] = json!(7000)),
            "spec.ports numbers must be unique",
        ),
        (
            "bad config key",
            Box::new(|v| v["spec"]["config"]["bad key"] = json!("x")),
            "spec.config keys must be valid ConfigMap keys",
        ),
        (
            "unknown strategy",
            Box::new(|v| v["spec"]["upgrade"]["strategy"] = json!("Canary")),
            "Unsupported value: \"Canary\"",
        ),
        (
            "debounce window out of range",
            Box::new(|v| v["spec"]["sentinel"]["debounceWindowSeconds"] = json!(61)),
            "spec.sentinel.debounceWindowSeconds",
        ),
        (
            "backup retention zero",
            Box::new(|v| v["spec"]["backup"]["retention"] = json!(0)),
            "spec.backup.retention",
        ),
        (
            "name too long",
            Box::new(|v| v["metadata"]["name"] = json!("a".repeat(41))),
            "metadata.name must be at most 40 characters",
        ),
    ];
    for (what, mutate, message) in cases {
        let mut obj = base.clone();
        obj["metadata"]["name"] = json!("invalid");
        mutate(&mut obj);
        let obj: DynamicObject = serde_json::from_value(obj).expect("object");
        let err = api
            .create(&PostParams::default(), &obj)
            .await
            .expect_err(what);
        let text = err.to_string();
        assert!(
            text.contains(message),
            "{what}: expected {message:?} in {text}"
        );
    }

    // A transition rule: no upgrade while paused.
    api.patch(
        "minimal",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"paused": true}})),
    )
    .await
    .expect("pause");
    let err = api
        .patch(
            "minimal",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"version": "3.11"}})),
        )
        .await
        .expect_err("no upgrade while paused");
    assert!(
        err.to_string()
            .contains("spec.version cannot change while spec.paused is true"),
        "{err}"
    );
}
