//! The resources under load: N StatefulClusters made from `deploy/samples/minimal.yaml`.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use kube::{Api, Client, api::ListParams};
use tokio::time::Instant;

use crate::{
    demo::{
        drift::{Cluster, is_settled},
        install,
        programs::Programs,
    },
    manifests,
    operator::crd::StatefulCluster,
};

/// Namespace of the benchmark's StatefulClusters.
pub const BENCH_NAMESPACE: &str = "bench";
/// Field manager of the fleet's creation.
const CREATOR: &str = "kube-sentinel-bench";

/// The StatefulClusters under load, by index.
pub(crate) struct Fleet {
    clusters: Vec<Cluster>,
    crs: Api<StatefulCluster>,
}

impl Fleet {
    /// Creates `count` StatefulClusters `bench-0000`, … in [`BENCH_NAMESPACE`] (the namespace
    /// too), without waiting for them.
    pub(crate) async fn create(admin: &Client, count: usize) -> Result<Self> {
        install::install_sample(admin, BENCH_NAMESPACE).await?;
        let sample = manifests::parse(install::SAMPLE)?
            .into_iter()
            .next()
            .context("the sample has a document")?;
        let mut clusters = Vec::with_capacity(count);
        for index in 0..count {
            let name = name_of(index);
            let mut cr = sample.clone();
            cr["metadata"]["name"] = name.clone().into();
            // Serving TLS on, so that the TLS Secret can be drifted too.
            cr["spec"]["tls"] = serde_json::json!({"enabled": true});
            manifests::apply(admin, &cr.to_string(), CREATOR, BENCH_NAMESPACE)
                .await
                .with_context(|| format!("creating StatefulCluster {name}"))?;
            clusters.push(Cluster::new(admin, BENCH_NAMESPACE, &name));
        }
        Ok(Self {
            clusters,
            crs: Api::namespaced(admin.clone(), BENCH_NAMESPACE),
        })
    }

    /// The resources, by index.
    pub(crate) fn clusters(&self) -> &[Cluster] {
        &self.clusters
    }

    /// Turns the operator's fight backoff off for every resource. A load that drifts each
    /// resource every few seconds under the same field managers is rightly taken for a fight
    /// and its reverts held (up to minutes), which would read as drift lost; fights are tested
    /// on their own (`tests/e2e/drift_policy.rs`).
    pub(crate) async fn without_fight_backoff(&self) -> Result<()> {
        let patch = serde_json::json!({"spec": {"sentinel": {"fightBackoff": {"reverts": 0}}}});
        for cluster in &self.clusters {
            self.crs
                .patch(
                    cluster.name(),
                    &kube::api::PatchParams::default(),
                    &kube::api::Patch::Merge(&patch),
                )
                .await
                .with_context(|| format!("turning fight backoff off for {}", cluster.name()))?;
        }
        Ok(())
    }

    /// Waits until every resource reads Ready and not Progressing for its generation; fails
    /// after `timeout` or if one of `programs` exits.
    pub(crate) async fn wait_settled(
        &self,
        programs: &mut Programs,
        timeout: Duration,
    ) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let list = self.crs.list(&ListParams::default()).await?;
            let unsettled = list.items.iter().filter(|cr| !is_settled(cr)).count();
            let missing = self.clusters.len().saturating_sub(list.items.len());
            if unsettled + missing == 0 {
                return Ok(());
            }
            programs.check_running()?;
            if Instant::now() > deadline {
                bail!(
                    "{} of {} StatefulClusters not Ready within {timeout:?}",
                    unsettled + missing,
                    list.items.len().max(self.clusters.len())
                );
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

/// The name of resource `index`.
pub(crate) fn name_of(index: usize) -> String {
    format!("bench-{index:04}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_sort_in_index_order() {
        assert_eq!(super::name_of(7), "bench-0007");
        assert!(super::name_of(9) < super::name_of(10));
    }
}
