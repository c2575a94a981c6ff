//! The operator's own watch of the Secrets it owns.
//!
//! Secrets are out of the sentinel's reach by design (it may not read them), so the operator
//! watches its Secrets itself, metadata only, through the same stages as the sentinel: the
//! [`ActorFilter`] attributes each change to a field manager (the operator's own writes are
//! not drift), a keyed debounce window folds a burst per owning resource, and the owner goes
//! straight on the fast lane with the Secrets named ([`SecretDrift`]).

use std::time::Duration;

use futures::{Stream, StreamExt, stream};
use k8s_openapi::{api::core::v1::Secret, apimachinery::pkg::apis::meta::v1::ObjectMeta};
use kube::{Client, runtime::watcher};
use prometheus_client::metrics::counter::Counter;

use crate::{
    contract::{MANAGED_BY_LABEL, MANAGED_BY_VALUE, OPERATOR_FIELD_MANAGER},
    operator::crd::OwnedObject,
    stream::{ControllerStreamExt, DebounceConfig, Debounced},
    watch::{
        NamespacedName, ObjectKey, OwnerKind,
        actor::{ActorFilter, FirstSight, Verdict},
        metadata::metadata_events,
    },
};

/// A debounced foreign change to one or more Secrets of one resource.
pub type SecretDrift = Debounced<NamespacedName, Vec<OwnedObject>>;

/// Judges Secret metadata events: which owner, which Secret, drift or not.
pub struct SecretJudge {
    filter: ActorFilter,
}

impl Default for SecretJudge {
    fn default() -> Self {
        Self::new()
    }
}

impl SecretJudge {
    /// A judge that ignores the operator's own writes.
    pub fn new() -> Self {
        Self {
            filter: ActorFilter::new([OPERATOR_FIELD_MANAGER]),
        }
    }

    /// The drifted Secrets one watch event reveals, with their owners. The initial list only
    /// records what it sees: the full reconcile of every resource at start-up checks the
    /// Secrets anyway.
    pub fn judge(
        &mut self,
        event: watcher::Event<ObjectMeta>,
    ) -> Vec<(NamespacedName, OwnedObject)> {
        let (meta, first) = match event {
            watcher::Event::Init | watcher::Event::InitDone => return Vec::new(),
            watcher::Event::InitApply(m) => (m, FirstSight::Listed(Some(jiff::Timestamp::now()))),
            watcher::Event::Apply(m) => (m, FirstSight::Created),
            watcher::Event::Delete(m) => {
                self.filter.forget(&ObjectKey::new("Secret", &m));
                return owned(&m).into_iter().collect();
            }
        };
        let key = ObjectKey::new("Secret", &meta);
        match self.filter.observe(&key, &meta, first) {
            Verdict::Drift { managers } => {
                tracing::debug!(secret = %key.name, ?managers, "foreign change to an owned Secret");
                owned(&meta).into_iter().collect()
            }
            Verdict::Ignored(_) => Vec::new(),
        }
    }
}

/// The resource that owns this Secret: its controller reference, or the instance label.
fn owned(meta: &ObjectMeta) -> Option<(NamespacedName, OwnedObject)> {
    let owner = OwnerKind::default().owner_of(meta)?;
    Some((
        owner,
        OwnedObject {
            kind: "Secret".into(),
            name: meta.name.clone()?,
        },
    ))
}

/// Watches the operator's Secrets (in `namespace`, or everywhere) and yields debounced drift
/// per owner: `window` of quiet, at most `4 × window` from the first change.
pub fn secret_drifts(
    client: Client,
    namespace: Option<&str>,
    window: Duration,
    watch: watcher::Config,
    errors: Counter,
) -> impl Stream<Item = SecretDrift> + Send + use<> {
    let config = watch.labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}"));
    let mut judge = SecretJudge::new();
    metadata_events::<Secret>(client, namespace, config)
        .filter_map(move |event| {
            let event = event
                .map_err(|e| {
                    errors.inc();
                    tracing::warn!(error = %e, "Secret watch error; retrying");
                })
                .ok();
            futures::future::ready(event)
        })
        .flat_map(move |event| stream::iter(judge.judge(event)))
        .debounce_keyed(
            DebounceConfig::trailing(window).max_wait(window * 4),
            |(owner, _): &(NamespacedName, OwnedObject)| owner.clone(),
            |acc: Option<Vec<OwnedObject>>, (_, secret)| {
                let mut secrets = acc.unwrap_or_default();
                if !secrets.contains(&secret) {
                    secrets.push(secret);
                }
                secrets
            },
        )
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
        ManagedFieldsEntry, OwnerReference, Time,
    };

    fn secret(rv: &str, entries: &[(&str, i64)]) -> ObjectMeta {
        let managed_fields = entries
            .iter()
            .map(|(manager, at)| ManagedFieldsEntry {
                manager: Some((*manager).into()),
                operation: Some("Update".into()),
                time: jiff::Timestamp::from_second(*at).ok().map(Time),
                fields_v1: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::FieldsV1(
                    serde_json::json!({"f:data": {"f:tls.crt": {}}}),
                )),
                ..Default::default()
            })
            .collect();
        ObjectMeta {
            name: Some("db-tls".into()),
            namespace: Some("ns".into()),
            resource_version: Some(rv.into()),
            owner_references: Some(vec![OwnerReference {
                api_version: "kube-sentinel.dev/v1alpha1".into(),
                kind: "StatefulCluster".into(),
                name: "db".into(),
                uid: "u".into(),
                controller: Some(true),
                block_owner_deletion: None,
            }]),
            managed_fields: Some(managed_fields),
            ..Default::default()
        }
    }

    #[test]
    fn foreign_edits_and_deletions_are_drift_the_operators_writes_are_not() {
        let mut judge = SecretJudge::new();
        let listed = secret("1", &[(OPERATOR_FIELD_MANAGER, 100)]);
        assert!(judge.judge(watcher::Event::InitApply(listed)).is_empty());
        let own = secret("2", &[(OPERATOR_FIELD_MANAGER, 200)]);
        assert!(judge.judge(watcher::Event::Apply(own)).is_empty());
        let edited = secret("3", &[(OPERATOR_FIELD_MANAGER, 200), ("kubectl-edit", 300)]);
        let owner = NamespacedName::new("ns", "db");
        let tls = OwnedObject {
            kind: "Secret".into(),
            name: "db-tls".into(),
        };
        assert_eq!(
            judge.judge(watcher::Event::Apply(edited)),
            vec![(owner.clone(), tls.clone())]
        );
        let deleted = secret("4", &[(OPERATOR_FIELD_MANAGER, 200)]);
        assert_eq!(
            judge.judge(watcher::Event::Delete(deleted)),
            vec![(owner, tls)]
        );
    }
}
