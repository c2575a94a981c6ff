//! Leader election on a real Lease: one leader at a time, and a released Lease passes over.

use std::time::Duration;

use kube_sentinel::leader::{Leadership, LeaseConfig};

use crate::support::control_plane;

#[tokio::test]
async fn one_leader_and_release_hands_over() {
    let cp = control_plane();
    let ns = cp.namespace("leader").await;
    let config = |identity: &str| LeaseConfig {
        namespace: ns.clone(),
        name: "kube-sentinel-test".into(),
        identity: identity.into(),
        duration: Duration::from_secs(6),
        grace: Duration::from_secs(2),
    };
    let mut first = Leadership::elect(cp.admin().await, config("first"))
        .await
        .expect("elect");
    tokio::time::timeout(Duration::from_secs(20), first.until_leader())
        .await
        .expect("the first instance leads");
    let mut second = Leadership::elect(cp.admin().await, config("second"))
        .await
        .expect("elect");
    // Longer than a lease duration: the first keeps renewing, the second keeps waiting.
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert!(
        first.is_leader() && !second.is_leader(),
        "exactly one leader"
    );
    first.release().await;
    // A standby looks again when the lease it saw would expire: within one duration.
    tokio::time::timeout(Duration::from_secs(10), second.until_leader())
        .await
        .expect("the standby leads after a release");
}
