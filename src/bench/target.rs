//! Where the bench runs: a local control plane it starts, or a cluster the user names.
//!
//! On a cluster of the user's the bench installs kube-sentinel as the demo does and runs its
//! own operator and sentinel (as processes on this machine, under their ServiceAccounts,
//! watching every namespace), so it refuses a cluster where they would act on anything but
//! its own resources: StatefulClusters outside the bench's namespaces, or a kube-sentinel
//! already deployed. At the end it deletes the namespaces it created and leaves the CRD and
//! the RBAC installed.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{Namespace, Node},
};
use kube::{
    Api, Client,
    api::{DeleteParams, DynamicObject, ListParams},
    config::Kubeconfig,
    core::ApiResource,
};

use super::{
    BENCH_NAMESPACE, churn::CHURN_NAMESPACE, scale::SCALE_NAMESPACE, soak::SOAK_NAMESPACE,
};
use crate::{
    demo::SYSTEM_NAMESPACE,
    operator::crd::StatefulCluster,
    testenv::{ControlPlane, ControlPlaneConfig, client_from_kubeconfig},
};

/// Where `kube-sentinel bench` runs.
#[derive(Clone, Debug)]
pub enum Target {
    /// A local control plane, started for the run and stopped after it (the default).
    Local(ControlPlaneConfig),
    /// The cluster of this kubeconfig's current context, as it is.
    Cluster(PathBuf),
}

/// A target while the bench runs.
pub(crate) struct Running {
    /// Admin credentials: the bench installs, creates and asks for the programs' tokens.
    pub admin: Kubeconfig,
    /// The local control plane, if the bench started one.
    pub plane: Option<ControlPlane>,
}

impl Target {
    /// Starts the local control plane, or reads the kubeconfig and checks that the cluster
    /// is one the bench may run on.
    pub(crate) async fn start(self) -> Result<Running> {
        match self {
            Target::Local(config) => {
                println!("starting the local control plane");
                let plane = ControlPlane::start(config).await?;
                Ok(Running {
                    admin: plane.admin_kubeconfig().clone(),
                    plane: Some(plane),
                })
            }
            Target::Cluster(path) => {
                let admin = Kubeconfig::read_from(&path)
                    .with_context(|| format!("reading --kubeconfig {}", path.display()))?;
                let client = client_from_kubeconfig(admin.clone()).await?;
                check_cluster(&client, &path).await?;
                println!("running on the cluster of {}", path.display());
                Ok(Running { admin, plane: None })
            }
        }
    }
}

impl Running {
    /// Stops the local control plane, or deletes the bench's namespaces from the user's
    /// cluster (what cannot be deleted is said, not failed).
    pub(crate) async fn stop(self) {
        if let Some(plane) = self.plane {
            plane.stop().await;
            return;
        }
        let Ok(client) = client_from_kubeconfig(self.admin).await else {
            eprintln!("bench: could not reach the cluster to delete the bench's namespaces");
            return;
        };
        let namespaces: Api<Namespace> = Api::all(client);
        for name in [BENCH_NAMESPACE, CHURN_NAMESPACE, SOAK_NAMESPACE] {
            match namespaces.delete(name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => eprintln!("bench: could not delete namespace {name}: {e}"),
            }
        }
        println!(
            "deleted the bench's namespaces; the CRD and namespace {SYSTEM_NAMESPACE} stay installed"
        );
    }
}

/// True when the cluster has no Node: no kubelet will run the fleet's pods (a bare control
/// plane, as the local one).
pub(crate) async fn has_no_nodes(client: &Client) -> Result<bool> {
    let nodes: Api<Node> = Api::all(client.clone());
    let listed = nodes
        .list_metadata(&ListParams::default().limit(1))
        .await
        .context("listing Nodes")?;
    Ok(listed.items.is_empty())
}

/// Refuses a cluster where the bench's programs would act on more than the bench's own
/// resources.
async fn check_cluster(client: &Client, path: &Path) -> Result<()> {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), SYSTEM_NAMESPACE);
    let deployed = deployments
        .list(&ListParams::default().limit(1))
        .await
        .with_context(|| format!("reaching the cluster of {}", path.display()))?;
    if let Some(deployment) = deployed.items.first() {
        bail!(
            "the cluster of {} runs Deployment {SYSTEM_NAMESPACE}/{}: an installed kube-sentinel would reconcile the bench's resources too; run the bench on a cluster of its own",
            path.display(),
            deployment.metadata.name.as_deref().unwrap_or_default()
        );
    }
    let resource = ApiResource::erase::<StatefulCluster>(&());
    let clusters: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
    let existing = match clusters.list_metadata(&ListParams::default()).await {
        Ok(list) => list.items,
        // No CRD yet: nothing the bench's operator could touch.
        Err(kube::Error::Api(e)) if e.code == 404 => Vec::new(),
        Err(e) => return Err(e).context("listing StatefulClusters"),
    };
    let bench_namespaces = [BENCH_NAMESPACE, CHURN_NAMESPACE, SOAK_NAMESPACE];
    let foreign = existing.iter().find(|c| {
        let namespace = c.metadata.namespace.as_deref().unwrap_or_default();
        !bench_namespaces.contains(&namespace) && !namespace.starts_with(SCALE_NAMESPACE)
    });
    if let Some(cluster) = foreign {
        bail!(
            "the cluster of {} holds StatefulCluster {}/{}: the bench's operator would reconcile it; run the bench on a cluster of its own",
            path.display(),
            cluster.metadata.namespace.as_deref().unwrap_or_default(),
            cluster.metadata.name.as_deref().unwrap_or_default()
        );
    }
    Ok(())
}
