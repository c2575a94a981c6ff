//! A stand-in for the kubelet's pod status reporting: the local control plane has no kubelet
//! (and no scheduler), so pods never start. [`PodReadiness`] marks the pods of one namespace
//! `Running` and `Ready`, as a kubelet would once their containers pass their readiness
//! probes, so that StatefulSets report ready replicas and the operator sees a healthy cluster.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api, Client, ResourceExt,
    api::{ListParams, Patch, PatchParams},
};
use serde_json::json;

/// How often the namespace's pods are listed.
const POLL: Duration = Duration::from_millis(200);

/// Marks every pod of a namespace `Running` and `Ready` (conditions `Ready`, `ContainersReady`
/// and `PodScheduled`), as a kubelet would, until dropped. Pods being deleted are left alone.
///
/// For the local control plane only (tests and the demo): nothing runs in those pods.
///
/// ```no_run
/// # async fn demo(client: kube::Client) {
/// use kube_sentinel::testenv::PodReadiness;
/// let _kubelet = PodReadiness::start(client, "demo");
/// // ... pods created in `demo` become Ready within a fraction of a second ...
/// # }
/// ```
#[derive(Debug)]
pub struct PodReadiness(tokio::task::JoinHandle<()>);

impl PodReadiness {
    /// Starts marking the pods of `namespace` on the current tokio runtime.
    pub fn start(client: Client, namespace: &str) -> Self {
        let pods: Api<Pod> = Api::namespaced(client, namespace);
        Self(tokio::spawn(async move {
            loop {
                mark_ready(&pods).await;
                tokio::time::sleep(POLL).await;
            }
        }))
    }
}

impl Drop for PodReadiness {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One pass: every pod not yet Ready and not being deleted gets a Ready status. Errors are
/// left for the next pass, as a kubelet retries its status updates.
async fn mark_ready(pods: &Api<Pod>) {
    let list = match pods.list(&ListParams::default()).await {
        Ok(list) => list,
        Err(e) => {
            tracing::debug!(error = %e, "listing pods to mark Ready");
            return;
        }
    };
    for pod in list.items {
        let ready = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        if ready || pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let now = jiff::Timestamp::now().to_string();
        let status = json!({"status": {"phase": "Running", "conditions": [
            {"type": "Ready", "status": "True", "lastTransitionTime": now},
            {"type": "ContainersReady", "status": "True", "lastTransitionTime": now},
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
        ]}});
        if let Err(e) = pods
            .patch_status(
                &pod.name_any(),
                &PatchParams::default(),
                &Patch::Merge(status),
            )
            .await
        {
            tracing::debug!(pod = %pod.name_any(), error = %e, "marking a pod Ready");
        }
    }
}
