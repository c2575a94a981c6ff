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

/// The sentinel's join (`Leadership::elect_deferring`): an instance that starts while another
/// holds the Lease waits one duration before competing, so that a standby which was already
/// watching (and knows the deletions in the dead leader's windows) takes over; with the Lease
/// free it competes at once. Found by `kube-sentinel faults`: a replacement sentinel that won
/// the handover had never seen a Service deleted in the dead leader's window.
#[tokio::test]
async fn a_new_instance_defers_to_the_standbys_of_a_held_lease_and_not_to_a_free_one() {
    use k8s_openapi::{
        api::coordination::v1::{Lease, LeaseSpec},
        apimachinery::pkg::apis::meta::v1::MicroTime,
    };
    use kube::api::{Api, ObjectMeta, PostParams};

    let cp = control_plane();
    let ns = cp.namespace("leader-defer").await;
    let config = |lease: &str, identity: &str| LeaseConfig {
        namespace: ns.clone(),
        name: lease.into(),
        identity: identity.into(),
        duration: Duration::from_secs(6),
        grace: Duration::from_secs(2),
    };
    // A leader that died 3 s after its last renewal: its Lease expires 3 s from now.
    let renewed = jiff::Timestamp::now() - jiff::SignedDuration::from_secs(3);
    let dead = Lease {
        metadata: ObjectMeta {
            name: Some("held".into()),
            ..Default::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some("dead".into()),
            lease_duration_seconds: Some(6),
            acquire_time: Some(MicroTime(renewed)),
            renew_time: Some(MicroTime(renewed)),
            ..Default::default()
        }),
    };
    Api::<Lease>::namespaced(cp.admin().await, &ns)
        .create(&PostParams::default(), &dead)
        .await
        .expect("the dead leader's Lease");
    let started = tokio::time::Instant::now();
    let mut fresh = Leadership::elect_deferring(cp.admin().await, config("held", "fresh"))
        .await
        .expect("elect");
    // Past the expiry, before a duration from the start: still deferring.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        !fresh.is_leader(),
        "a new instance took a held Lease at once"
    );
    tokio::time::timeout(Duration::from_secs(15), fresh.until_leader())
        .await
        .expect("alone, it leads after one duration");
    assert!(started.elapsed() >= Duration::from_secs(6));

    let mut free = Leadership::elect_deferring(cp.admin().await, config("free", "first"))
        .await
        .expect("elect");
    tokio::time::timeout(Duration::from_secs(4), free.until_leader())
        .await
        .expect("a free Lease is taken at once");
}
