//! The operator: the [`StatefulCluster`](crd::StatefulCluster) custom resource and its
//! reconciler.

pub mod crd;
pub mod managers;
pub mod metrics;
pub mod reconcile;
