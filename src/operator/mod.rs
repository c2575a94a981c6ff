//! The operator: the [`StatefulCluster`](crd::StatefulCluster) custom resource and its
//! reconciler.

pub mod crd;
pub mod managers;
