//! Status is not a command channel: set names and versions forged into a StatefulCluster's
//! status are refused, and nothing outside the resource's own objects is written or deleted.

use std::time::Duration;

use k8s_openapi::api::{apps::v1::StatefulSet, batch::v1::Job};
use kube::{
    Api, Client,
    api::{Patch, PatchParams, PostParams},
};
use kube_sentinel::operator::crd::StatefulCluster;
use serde_json::{Value, json};

use crate::{
    operator::running::{cluster, create, start_operator},
    ownership::{foreign_labels, foreign_stateful_set, stored, warning_event},
    support::{control_plane, eventually},
};

const WAIT: Duration = Duration::from_secs(60);

/// A suspended Job carrying the labels the operator's backup Jobs carry, created by someone else.
async fn foreign_backup_job(client: &Client, ns: &str, instance: &str) -> Job {
    let api: Api<Job> = Api::namespaced(client.clone(), ns);
    let mut labels = foreign_labels();
    labels["app.kubernetes.io/instance"] = json!(instance);
    labels["app.kubernetes.io/component"] = json!("backup");
    let job: Job = serde_json::from_value(json!({
        "metadata": {"name": "someone-elses-backup", "labels": labels},
        "spec": {
            "suspend": true,
            "template": {"spec": {
                "restartPolicy": "Never",
                "containers": [{"name": "backup", "image": "registry.k8s.io/pause:3.9"}],
            }},
        },
    }))
    .expect("job");
    api.create(&PostParams::default(), &job)
        .await
        .expect("create foreign Job")
}

async fn forge(api: &Api<StatefulCluster>, name: &str, status: Value) -> kube::Result<()> {
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": status})),
    )
    .await
    .map(|_| ())
}

#[tokio::test]
async fn forged_set_names_and_versions_are_refused_and_foreign_objects_survive() {
    let cp = control_plane();
    let ns = cp.namespace("forged-status").await;
    let client = cp.admin().await;
    let victim_before = foreign_stateful_set(&client, &ns, "victim").await;
    let foreign_job = foreign_backup_job(&client, &ns, "db").await;
    let _op = start_operator(&ns, &[]).await;
    let spec = json!({"replicas": 1, "tls": null,
                      "backup": {"intervalMinutes": 60, "retention": 1}});
    create(&client, &ns, &cluster("db", spec)).await;
    let clusters: Api<StatefulCluster> = Api::namespaced(client.clone(), &ns);
    eventually(WAIT, "the first backup Job recorded", || async {
        let cr = clusters.get("db").await.ok()?;
        cr.status?.backup?.last_job.map(|_| ())
    })
    .await;

    // A status writer names the foreign set as the blue/green set to retire, then as the one
    // the Services select.
    let forged =
        json!({"upgrade": {"phase": "Retiring", "activeSet": "db", "candidateSet": "victim"}});
    forge(&clusters, "db", forged)
        .await
        .expect("the schema admits a well-formed name");
    warning_event(&client, &ns, "InvalidStatus", "victim").await;
    let forged = json!({"upgrade": {"phase": "Idle", "activeSet": "victim"}});
    forge(&clusters, "db", forged)
        .await
        .expect("the schema admits a well-formed name");
    // The Event of the first refusal counts this one (same reason); the condition names it.
    eventually(WAIT, "Degraded/InvalidStatus naming activeSet", || async {
        let cr = clusters.get("db").await.ok()?;
        cr.status?
            .conditions
            .into_iter()
            .any(|c| {
                c.type_ == "Degraded"
                    && c.reason == "InvalidStatus"
                    && c.message.contains("upgrade.activeSet \"victim\"")
            })
            .then_some(())
    })
    .await;

    // A version that is no image tag is refused by the schema, as in the spec.
    for (field, status) in [
        (
            "currentVersion",
            json!({"currentVersion": "3.9 --privileged"}),
        ),
        (
            "toVersion",
            json!({"upgrade": {"phase": "Rolling", "toVersion": "../../x"}}),
        ),
        (
            "fromVersion",
            json!({"upgrade": {"phase": "Idle", "fromVersion": ""}}),
        ),
    ] {
        let refused = forge(&clusters, "db", status).await;
        let message = format!("{refused:?}");
        assert!(
            refused.is_err() && message.contains(field),
            "a forged {field} must be refused: {message}"
        );
    }

    // Give further passes the chance to act, then compare.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), &ns);
    assert_eq!(
        stored(&sets, "victim").await,
        victim_before,
        "the foreign StatefulSet is untouched"
    );
    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns);
    let job = jobs
        .get_opt("someone-elses-backup")
        .await
        .expect("get Job")
        .expect("backup retention leaves a Job it does not own alone");
    assert_eq!(
        (job.metadata.uid, job.metadata.deletion_timestamp, job.spec),
        (foreign_job.metadata.uid, None, foreign_job.spec),
        "the foreign Job is untouched"
    );
}
