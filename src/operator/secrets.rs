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

use crate::{
    contract::{MANAGED_BY_LABEL, MANAGED_BY_VALUE, OPERATOR_FIELD_MANAGER},
    operator::crd::OwnedObject,
    stream::{ControllerStreamExt, DebounceConfig, Debounced},
    watch::{
        NamespacedName, ObjectKey, OwnerKind,
        actor::{ActorFilter, FirstSight, Verdict},
        errors::WatchErrors,
        metadata::metadata_events,
        relist::Relist,
    },
};

/// A debounced foreign change to one or more Secrets of one resource.
pub type SecretDrift = Debounced<NamespacedName, Vec<OwnedObject>>;

/// Judges Secret metadata events: which owner, which Secret, drift or not.
///
/// It remembers every Secret it knows (forgotten with its deletion): a relist after the watch
/// expired sends no `Delete` for a Secret deleted meanwhile, so a known Secret missing from
/// the relist is a deletion, and one new in it was created meanwhile (as the sentinel's
/// detector judges its relists).
pub struct SecretJudge {
    /// Also keeps the owner of every known Secret, for the deletions a relist reveals.
    filter: ActorFilter,
    relist: Relist<ObjectKey>,
    /// Whether the first list is complete.
    synced: bool,
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
            relist: Relist::default(),
            synced: false,
        }
    }

    /// The drifted Secrets one watch event reveals, with their owners. The first list only
    /// records what it sees: the full reconcile of every resource at start-up checks the
    /// Secrets anyway.
    pub fn judge(
        &mut self,
        event: watcher::Event<ObjectMeta>,
    ) -> Vec<(NamespacedName, OwnedObject)> {
        let (meta, first) = match event {
            watcher::Event::Init => {
                self.relist.start();
                return Vec::new();
            }
            watcher::Event::InitDone => return self.list_done(),
            watcher::Event::InitApply(m) => {
                self.relist.saw(ObjectKey::new("Secret", &m));
                let first = if self.synced {
                    FirstSight::Created
                } else {
                    FirstSight::Listed(Some(jiff::Timestamp::now()))
                };
                (m, first)
            }
            watcher::Event::Apply(m) => (m, FirstSight::Created),
            watcher::Event::Delete(m) => {
                let key = ObjectKey::new("Secret", &m);
                let known = self
                    .forget(&key)
                    .map(|owner| (owner, owned_secret(key.name)));
                return owned(&m).or(known).into_iter().collect();
            }
        };
        let key = ObjectKey::new("Secret", &meta);
        let owner = owned(&meta);
        let verdict = self.filter.observe(&key, &meta, first);
        let owner_name = owner.as_ref().map(|(resource, _)| resource.name.as_str());
        self.filter.set_owner(&key, owner_name);
        match verdict {
            Verdict::Drift { managers } => {
                tracing::debug!(secret = %key.name, ?managers, "foreign change to an owned Secret");
                owner.into_iter().collect()
            }
            Verdict::Ignored(_) => Vec::new(),
        }
    }

    /// The end of a list: known Secrets it missed were deleted while the watch was down.
    fn list_done(&mut self) -> Vec<(NamespacedName, OwnedObject)> {
        self.synced = true;
        let Some(listed) = self.relist.done() else {
            return Vec::new();
        };
        listed
            .missing(self.filter.keys())
            .into_iter()
            .filter_map(|key| {
                let owner = self.forget(&key)?;
                tracing::debug!(secret = %key.name, "owned Secret deleted while the watch was down");
                Some((owner, owned_secret(key.name)))
            })
            .collect()
    }

    /// Drops what is known of a deleted Secret; returns its owner.
    fn forget(&mut self, key: &ObjectKey) -> Option<NamespacedName> {
        self.filter.forget(key)
    }
}

#[cfg(test)]
impl SecretJudge {
    /// How many Secrets the judge remembers.
    fn known(&self) -> usize {
        self.filter.len()
    }
}

/// The resource that owns this Secret: its controller reference, or the instance label.
fn owned(meta: &ObjectMeta) -> Option<(NamespacedName, OwnedObject)> {
    let owner = OwnerKind::default().owner_of(meta)?;
    Some((owner, owned_secret(meta.name.clone()?)))
}

fn owned_secret(name: String) -> OwnedObject {
    OwnedObject {
        kind: "Secret".into(),
        name,
    }
}

/// Watches the operator's Secrets (in `namespace`, or everywhere) and yields debounced drift
/// per owner: `window` of quiet, at most `4 × window` from the first change.
pub fn secret_drifts(
    client: Client,
    namespace: Option<&str>,
    window: Duration,
    watch: watcher::Config,
    errors: WatchErrors,
) -> impl Stream<Item = SecretDrift> + Send + use<> {
    let config = watch.labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}"));
    let mut judge = SecretJudge::new();
    metadata_events::<Secret>(client, namespace, config)
        .filter_map(move |event| {
            let event = event
                .map_err(|e| {
                    let reason = errors.record(&e).as_str();
                    tracing::warn!(error = %e, reason, "Secret watch error; retrying");
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

    fn named(name: &str, rv: &str, entries: &[(&str, i64)]) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.into()),
            ..secret(rv, entries)
        }
    }

    fn relist(
        judge: &mut SecretJudge,
        metas: Vec<ObjectMeta>,
    ) -> Vec<(NamespacedName, OwnedObject)> {
        let mut out = judge.judge(watcher::Event::Init);
        for meta in metas {
            out.extend(judge.judge(watcher::Event::InitApply(meta)));
        }
        out.extend(judge.judge(watcher::Event::InitDone));
        out
    }

    fn drifted(name: &str) -> (NamespacedName, OwnedObject) {
        (
            NamespacedName::new("ns", "db"),
            OwnedObject {
                kind: "Secret".into(),
                name: name.into(),
            },
        )
    }

    #[test]
    fn a_relist_reveals_secrets_deleted_while_the_watch_was_down_once() {
        let mut judge = SecretJudge::new();
        let ca = named("db-ca", "1", &[(OPERATOR_FIELD_MANAGER, 100)]);
        let tls = named("db-tls", "2", &[(OPERATOR_FIELD_MANAGER, 100)]);
        assert!(relist(&mut judge, vec![ca.clone(), tls]).is_empty());
        // The watch expired (410 Gone); db-tls was deleted meanwhile: no Delete event.
        assert_eq!(
            relist(&mut judge, vec![ca.clone()]),
            vec![drifted("db-tls")]
        );
        // Forgotten with its deletion: the next relist does not report it again.
        assert!(relist(&mut judge, vec![ca]).is_empty());
        assert_eq!(judge.known(), 1, "memory follows the Secrets that exist");
    }

    #[test]
    fn a_relist_reveals_foreign_writes_made_while_the_watch_was_down() {
        let mut judge = SecretJudge::new();
        let ca = named("db-ca", "1", &[(OPERATOR_FIELD_MANAGER, 100)]);
        let own = named("db-own", "2", &[(OPERATOR_FIELD_MANAGER, 100)]);
        assert!(relist(&mut judge, vec![ca, own]).is_empty());
        // During the gap db-ca was edited by hand, db-tls created by hand and db-own deleted
        // and re-created by the operator.
        let own = named("db-own", "7", &[(OPERATOR_FIELD_MANAGER, 210)]);
        let ca = named(
            "db-ca",
            "5",
            &[(OPERATOR_FIELD_MANAGER, 100), ("kubectl-edit", 200)],
        );
        let tls = named("db-tls", "6", &[("kubectl-create", 150)]);
        let mut out = relist(&mut judge, vec![ca, tls.clone(), own.clone()]);
        out.sort_by(|a, b| a.1.name.cmp(&b.1.name));
        assert_eq!(out, vec![drifted("db-ca"), drifted("db-tls")]);
        // Delivered again unchanged: nothing new.
        let ca = named(
            "db-ca",
            "5",
            &[(OPERATOR_FIELD_MANAGER, 100), ("kubectl-edit", 200)],
        );
        assert!(relist(&mut judge, vec![ca, tls, own]).is_empty());
    }
}
