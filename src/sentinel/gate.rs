//! The gate between the debounce and the trigger sink.
//!
//! The gate between the debounce and the trigger sink: only the leader writes, and only for
//! owners the [refusal policy](super::refusal) lets through.

use std::{convert::Infallible, sync::Arc};

use futures::{Stream, StreamExt, future};
use tokio::{sync::watch, time::Instant};

use super::{
    detect::OwnerLookup,
    metrics::{STANDBY, SentinelMetrics},
    refusal::Refusal,
    trigger::DriftBurst,
};
use crate::{stream::Debounced, watch::NamespacedName};

/// A burst ready to be written, with the instant its first event arrived.
#[derive(Clone, Debug)]
pub struct Pending {
    /// The burst (shared by the retries of its write).
    pub burst: Arc<DriftBurst>,
    /// When its first drift event arrived.
    pub first_seen: Instant,
}

/// Why a closed burst is not written, if it is not: `standby` when this instance does not
/// lead, else the owner's [`Refusal`].
pub fn refusal<O: OwnerLookup>(
    leads: bool,
    owners: &O,
    owner: &NamespacedName,
) -> Option<&'static str> {
    if !leads {
        return Some(STANDBY);
    }
    Refusal::check(owners.owner_state(owner).as_ref())
        .err()
        .map(Refusal::as_str)
}

/// The gate stage: counts every closed burst, drops (and counts, by reason) those [`refusal`]
/// stops, and passes the rest on to the trigger sink.
pub fn gate<O: OwnerLookup>(
    bursts: impl Stream<Item = Debounced<NamespacedName, DriftBurst>>,
    leader: watch::Receiver<bool>,
    owners: O,
    metrics: SentinelMetrics,
) -> impl Stream<Item = Result<(NamespacedName, Pending), Infallible>> {
    bursts.filter_map(move |d| {
        metrics.pending_keys.dec();
        metrics.triggers_coalesced.inc_by(d.absorbed.saturating_sub(1));
        let item = match refusal(*leader.borrow(), &owners, &d.key) {
            Some(reason) => {
                metrics.triggers_dropped.get_or_create(&[("reason", reason)]).inc();
                tracing::info!(owner = %d.key, reason, objects = d.value.total(), "drift not triggered");
                None
            }
            None => Some(Ok((
                d.key,
                Pending {
                    burst: Arc::new(d.value),
                    first_seen: d.first_seen,
                },
            ))),
        };
        future::ready(item)
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::sentinel::owner_state::OwnerState;

    #[test]
    fn a_standby_writes_nothing_and_a_leader_follows_the_refusal_policy() {
        let key = |name: &str| NamespacedName::new("prod", name);
        let owners: HashMap<NamespacedName, OwnerState> = [
            (key("ok"), OwnerState::default()),
            (
                key("paused"),
                OwnerState {
                    paused: true,
                    ..Default::default()
                },
            ),
            (
                key("paused-and-deleting"),
                OwnerState {
                    paused: true,
                    deleting: true,
                    ..Default::default()
                },
            ),
        ]
        .into();
        assert_eq!(refusal(false, &owners, &key("ok")), Some("standby"));
        assert_eq!(refusal(true, &owners, &key("ok")), None);
        assert_eq!(refusal(true, &owners, &key("paused")), Some("owner_paused"));
        assert_eq!(
            refusal(true, &owners, &key("paused-and-deleting")),
            Some("owner_deleting")
        );
        assert_eq!(
            refusal(true, &owners, &key("gone")),
            Some("owner_not_found")
        );
    }
}
