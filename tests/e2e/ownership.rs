//! The operator never takes over an object it did not create, and never takes orders from
//! forged status.

use std::time::Duration;

use k8s_openapi::{
    ByteString,
    api::{
        apps::v1::StatefulSet,
        core::v1::{Secret, Service},
        events::v1::Event,
    },
};
use kube::{
    Api, Client,
    api::{ListParams, PostParams},
};
use kube_sentinel::operator::crd::StatefulCluster;
use serde_json::{Value, json};

use crate::{
    operator::running::{cluster, create, start_operator},
    support::{control_plane, eventually},
};

const WAIT: Duration = Duration::from_secs(60);

/// The whole stored object, for a byte-for-byte comparison.
pub(crate) async fn stored<K>(api: &Api<K>, name: &str) -> Value
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + serde::Serialize,
{
    serde_json::to_value(api.get(name).await.expect("object exists")).expect("json")
}

/// Waits until `name` reports `Degraded` with `reason`; returns its message.
pub(crate) async fn degraded(client: &Client, ns: &str, name: &str, reason: &str) -> String {
    let api: Api<StatefulCluster> = Api::namespaced(client.clone(), ns);
    eventually(WAIT, &format!("{name} Degraded/{reason}"), || async {
        let cr = api.get(name).await.ok()?;
        cr.status?
            .conditions
            .into_iter()
            .find(|c| c.type_ == "Degraded" && c.status == "True" && c.reason == reason)
            .map(|c| c.message)
    })
    .await
}

/// Waits for a Warning Event with `reason` whose note contains `text`.
pub(crate) async fn warning_event(client: &Client, ns: &str, reason: &str, text: &str) {
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    eventually(WAIT, &format!("a {reason} Event naming {text}"), || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        list.items
            .iter()
            .any(|e| {
                e.type_.as_deref() == Some("Warning")
                    && e.reason.as_deref() == Some(reason)
                    && e.note.as_deref().is_some_and(|n| n.contains(text))
            })
            .then_some(())
    })
    .await;
}

pub(crate) fn foreign_labels() -> Value {
    json!({"app": "someone-else", "team": "payments"})
}

async fn foreign_service(client: &Client, ns: &str, name: &str) -> Value {
    let api: Api<Service> = Api::namespaced(client.clone(), ns);
    let svc: Service = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": foreign_labels()},
        "spec": {"selector": {"app": "someone-else"}, "ports": [{"name": "http", "port": 8080}]},
    }))
    .expect("service");
    api.create(&PostParams::default(), &svc)
        .await
        .expect("create foreign Service");
    stored(&api, name).await
}

pub(crate) async fn foreign_stateful_set(client: &Client, ns: &str, name: &str) -> Value {
    let api: Api<StatefulSet> = Api::namespaced(client.clone(), ns);
    let sts: StatefulSet = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": foreign_labels()},
        "spec": {
            "replicas": 0,
            "serviceName": "someone-else",
            "selector": {"matchLabels": {"app": "someone-else"}},
            "template": {
                "metadata": {"labels": {"app": "someone-else"}},
                "spec": {"containers": [{"name": "app", "image": "registry.k8s.io/pause:3.9"}]},
            },
        },
    }))
    .expect("statefulset");
    api.create(&PostParams::default(), &sts)
        .await
        .expect("create foreign StatefulSet");
    // The controller manager writes the status once; compare from when it has.
    eventually(WAIT, "the foreign StatefulSet observed", || async {
        let s = api.get(name).await.ok()?;
        let observed = s.status.as_ref()?.observed_generation;
        (observed.is_some() && observed == s.metadata.generation).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    stored(&api, name).await
}

/// A valid CA (the test PKI's own) in a Secret someone else created.
async fn foreign_ca(client: &Client, ns: &str, name: &str) -> Value {
    let pki = kube_sentinel::testenv::Pki::generate().expect("pki");
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    let secret = Secret {
        metadata: serde_json::from_value(json!({"name": name, "labels": foreign_labels()}))
            .expect("meta"),
        type_: Some("kubernetes.io/tls".into()),
        data: Some(
            [
                ("tls.crt", pki.ca.cert_pem.clone()),
                ("tls.key", pki.ca.key_pem.clone()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), ByteString(v.into_bytes())))
            .collect(),
        ),
        ..Default::default()
    };
    api.create(&PostParams::default(), &secret)
        .await
        .expect("create foreign CA Secret");
    stored(&api, name).await
}

#[tokio::test]
async fn foreign_objects_with_derived_names_survive_byte_for_byte_and_are_reported() {
    let cp = control_plane();
    let ns = cp.namespace("own-conflict").await;
    let client = cp.admin().await;
    let svc_before = foreign_service(&client, &ns, "svc").await;
    let sts_before = foreign_stateful_set(&client, &ns, "sts").await;
    let ca_before = foreign_ca(&client, &ns, "ca-ca").await;
    let _op = start_operator(&ns, &[]).await;
    for name in ["svc", "sts", "ca"] {
        create(&client, &ns, &cluster(name, json!({"replicas": 1}))).await;
    }

    for (cr, kind, object) in [
        ("svc", "Service", "svc"),
        ("sts", "StatefulSet", "sts"),
        ("ca", "Secret", "ca-ca"),
    ] {
        let message = degraded(&client, &ns, cr, "NameConflict").await;
        assert!(
            message.contains(&format!("{kind} {object}")),
            "{cr}: {message}"
        );
        warning_event(&client, &ns, "NameConflict", &format!("{kind} {object}")).await;
    }
    // Give a further pass the chance to write, then compare.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let services: Api<Service> = Api::namespaced(client.clone(), &ns);
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), &ns);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    assert_eq!(stored(&services, "svc").await, svc_before);
    assert_eq!(stored(&sets, "sts").await, sts_before);
    assert_eq!(stored(&secrets, "ca-ca").await, ca_before);
    assert!(
        secrets.get_opt("ca-tls").await.expect("get").is_none(),
        "no serving certificate signed with a CA the operator did not create"
    );
    // What the operator does own of the same resources it still creates.
    assert!(
        services
            .get_opt("svc-headless")
            .await
            .expect("get")
            .is_some()
    );
}
