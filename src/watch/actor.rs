//! Who made this change? Attribution of object changes to field managers.
//!
//! The API server records, per object, one `metadata.managedFields` entry per
//! (manager, operation, subresource) with the time of that manager's last write (to the
//! second) and the set of fields it owns. It sorts entries by operation and time, so "the last
//! entry" is not "the last writer". [`ActorFilter`] instead keeps a small record of the entries
//! it last saw on each object (manager, operation, subresource, time, a hash and a size of the
//! field set) and attributes a change to the entries that changed.
//!
//! # Rules
//!
//! An entry **was written** by its manager when it is new, or its time moved forward, or its
//! time is the same but its field set changed without shrinking (a second write by the same
//! manager within one second). An entry that only **shrank** lost fields to another manager's
//! apply (the operator taking fields back during a revert); that is not a write by its owner.
//!
//! A change is **drift** when an entry written by the change belongs to a manager outside the
//! ignore set and is not a `status` subresource entry (the `scale` subresource *is* drift:
//! `kubectl scale` goes through it). Corner cases, each tested below:
//!
//! * **Same-second rewrites** whose entry looks unchanged: when the resource version moved
//!   and no entry changed, the change is attributed to the entries with the newest time.
//! * **Entries wiped or removed by a client** (`managedFields: [{}]` strips them, and the
//!   request that does it is not recorded): drift by an unknown actor, reported as
//!   [`UNKNOWN_ACTOR`]. Conservative on purpose: a needless trigger costs a no-op reconcile,
//!   a missed one costs the drift.
//! * **`before-first-apply`** ([`BEFORE_FIRST_APPLY`]): the entry the API server makes, inside
//!   an apply to an object left with no entries (after a wipe), owning everything the object
//!   held. It records no writer of its own: the applier's Apply entry, written in the same
//!   change, is the writer and is judged as usual (the operator's revert after a wipe is not
//!   drift). Written in a change without any Apply entry, it can only be a client's own edit of
//!   `managedFields`: drift by [`UNKNOWN_ACTOR`].
//! * **Update vs Apply**: one manager can hold both kinds of entry; each is tracked on its own,
//!   and the ignore set matches the manager name whatever the operation.
//! * **Objects of one name in different kinds** are different objects ([`ObjectKey`] has the
//!   kind).
//! * **First sight**: an object created while the filter runs is attributed to its creators
//!   ([`FirstSight::Created`]); an object found by the initial list is drift only for foreign
//!   entries written in or after the second of a caller-given instant, the owner's last trigger
//!   ([`FirstSight::Listed`]), so a restart catches drift made while it was down and does not
//!   trigger twice for drift already handled.
//!
//! Deletions (and objects relabelled out of a label-selector watch, which look the same) are
//! decided by the caller, who knows whether the owner is being deleted; [`ActorFilter::forget`]
//! drops the record.

use std::{
    collections::{HashMap, HashSet},
    hash::{DefaultHasher, Hash, Hasher},
    sync::Arc,
};

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ManagedFieldsEntry, ObjectMeta};
use serde_json::Value;

use super::{NamespacedName, ObjectKey};

/// Manager name reported when the change cannot be attributed (managed fields were edited
/// or wiped by the request itself).
pub const UNKNOWN_ACTOR: &str = "<unknown: managedFields edited>";

/// The manager of the entry the API server makes when something applies to an object with no
/// managedFields entries: it owns every field the object held before that apply.
pub const BEFORE_FIRST_APPLY: &str = "before-first-apply";

/// Whether an entry written at `time` (whole seconds, as managedFields record it) may be
/// newer than the instant whose second is `after` (`None`: ever). A tie counts: within one
/// second the order is unknown, and a spurious trigger costs a no-op revert while a lost one
/// costs the drift.
fn written_since(time: Option<i64>, after: Option<i64>) -> bool {
    match (time, after) {
        (Some(t), Some(a)) => t >= a,
        (_, None) => true,
        (None, Some(_)) => false,
    }
}

/// How to judge an object the filter has no record of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FirstSight {
    /// Created (or entered the watch) while the filter ran: every entry is a write.
    Created,
    /// Found by an initial list: only entries written in or after this instant's second (the
    /// owner's last trigger or acknowledgement; `None`: ever) count as writes.
    Listed(Option<Timestamp>),
}

/// The verdict on one observed change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Changed by these managers, at least one outside the ignore set.
    Drift {
        /// The foreign managers whose entries were written (sorted, deduplicated).
        managers: Vec<String>,
    },
    /// Not drift.
    Ignored(IgnoreReason),
}

/// Why a change is not drift.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IgnoreReason {
    /// Same resource version and entries as last seen (a relist, a resync).
    Unchanged,
    /// Written only by ignored managers (the operator, the sentinel, system managers).
    IgnoredManager,
    /// Written only through the `status` subresource.
    StatusOnly,
    /// First seen in an initial list, with no foreign write newer than the owner's last
    /// trigger.
    Listed,
}

impl IgnoreReason {
    /// A short label for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unchanged => "unchanged",
            Self::IgnoredManager => "ignored_manager",
            Self::StatusOnly => "status_only",
            Self::Listed => "listed_unchanged",
        }
    }
}

/// What the filter remembers of one managedFields entry: 64 bytes, names shared.
#[derive(Clone, Debug, PartialEq, Eq)]
struct EntrySig {
    manager: Arc<str>,
    /// `None` for the main resource.
    subresource: Option<Arc<str>>,
    /// Seconds since the epoch (the API server keeps seconds only).
    time: Option<i64>,
    fields_hash: u64,
    fields_size: u32,
    operation: Operation,
    /// Every field it owns is under `spec`: a write of it that changes anything bumps the
    /// generation of a resource that tracks one.
    spec_only: bool,
}

/// A managedFields entry's operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Operation {
    Apply,
    Update,
    /// Anything else the API server may add: compared as one value.
    Other,
}

impl EntrySig {
    fn new(entry: &ManagedFieldsEntry, names: &mut Names) -> Self {
        let (fields_hash, fields_size) = match &entry.fields_v1 {
            Some(f) => {
                let mut hasher = DefaultHasher::new();
                let size = hash_fields(&f.0, &mut hasher);
                (hasher.finish(), size)
            }
            None => (0, 0),
        };
        let spec_only = entry
            .fields_v1
            .as_ref()
            .and_then(|f| f.0.as_object())
            .is_some_and(|top| !top.is_empty() && top.keys().all(|k| k == "f:spec"));
        Self {
            manager: names.get(entry.manager.as_deref().unwrap_or_default()),
            subresource: entry
                .subresource
                .as_deref()
                .filter(|s| !s.is_empty())
                .map(|s| names.get(s)),
            time: entry.time.as_ref().map(|t| t.0.as_second()),
            fields_hash,
            fields_size,
            operation: match entry.operation.as_deref() {
                Some("Apply") => Operation::Apply,
                Some("Update") => Operation::Update,
                _ => Operation::Other,
            },
            spec_only,
        }
    }

    fn same_slot(&self, other: &Self) -> bool {
        self.manager == other.manager
            && self.operation == other.operation
            && self.subresource == other.subresource
    }

    fn is_status(&self) -> bool {
        self.subresource.as_deref() == Some("status")
    }

    /// Whether this entry (the new one) records a write since `old` (same slot).
    fn written_since(&self, old: &Self) -> bool {
        match (self.time, old.time) {
            (Some(new), Some(old_t)) if new != old_t => new > old_t,
            (Some(_), None) => true,
            _ => self.fields_hash != old.fields_hash && self.fields_size >= old.fields_size,
        }
    }
}

/// Manager and subresource names, shared by every record that holds them: a few distinct
/// names serve thousands of objects. Bounded, so that a writer inventing a name per write
/// cannot grow it: past [`Names::MAX`] a name is allocated on its own.
#[derive(Debug, Default)]
struct Names(HashSet<Arc<str>>);

impl Names {
    const MAX: usize = 1024;

    fn get(&mut self, name: &str) -> Arc<str> {
        if let Some(shared) = self.0.get(name) {
            return shared.clone();
        }
        let name: Arc<str> = Arc::from(name);
        if self.0.len() < Self::MAX {
            self.0.insert(name.clone());
        }
        name
    }
}

/// Hashes a fieldsV1 tree and counts its leaves (one per owned field).
fn hash_fields(value: &Value, hasher: &mut DefaultHasher) -> u32 {
    match value {
        Value::Object(map) if !map.is_empty() => {
            let mut leaves = 0u32;
            for (k, v) in map {
                k.hash(hasher);
                leaves = leaves.saturating_add(hash_fields(v, hasher));
            }
            leaves
        }
        other => {
            // fieldsV1 leaves are `{}`; anything else is hashed by its text.
            other.to_string().hash(hasher);
            1
        }
    }
}

/// What the filter remembers of one object.
#[derive(Debug)]
struct Seen {
    /// A hash of the resource version: only compared for equality.
    version: u64,
    /// `metadata.generation` (0 for none).
    generation: i64,
    entries: Box<[EntrySig]>,
    /// The name of the object's owner (in the object's namespace), kept for the caller.
    owner: Option<Box<str>>,
}

fn version_hash(resource_version: Option<&str>) -> u64 {
    let mut hasher = DefaultHasher::new();
    resource_version.hash(&mut hasher);
    hasher.finish()
}

/// Who wrote a change that moved no entry: one of the entries of the newest second wrote
/// again within it (a tie is a write: see [`written_since`]). A status write keeps the
/// generation, a spec write bumps it: with a status entry among them and the generation
/// unchanged, the entries that own only `spec` are not the writer.
fn newest_writers<'a>(old: &Seen, current: &'a Seen) -> Vec<&'a EntrySig> {
    let newest = current.entries.iter().filter_map(|e| e.time).max();
    let mut candidates: Vec<&EntrySig> = current
        .entries
        .iter()
        .filter(|e| e.time.is_some() && e.time == newest)
        .collect();
    let same_generation = current.generation > 0 && current.generation == old.generation;
    if same_generation && candidates.iter().any(|e| e.is_status()) {
        candidates.retain(|e| !e.spec_only);
    }
    candidates
}

/// Per-object record of managedFields entries, and the attribution of each change.
///
/// ```
/// use k8s_openapi::apimachinery::pkg::apis::meta::v1::{FieldsV1, ManagedFieldsEntry, ObjectMeta, Time};
/// use kube_sentinel::watch::{ObjectKey, actor::{ActorFilter, FirstSight, Verdict}};
///
/// let entry = |manager: &str, second: i64| ManagedFieldsEntry {
///     manager: Some(manager.into()),
///     operation: Some("Update".into()),
///     time: Some(Time(jiff::Timestamp::from_second(second).unwrap())),
///     fields_v1: Some(FieldsV1(serde_json::json!({"f:spec": {"f:replicas": {}}}))),
///     ..Default::default()
/// };
/// let meta = |rv: &str, entries| ObjectMeta {
///     name: Some("db".into()), namespace: Some("prod".into()),
///     resource_version: Some(rv.into()), managed_fields: Some(entries), ..Default::default()
/// };
/// let mut filter = ActorFilter::new(["kube-sentinel-operator"]);
/// let key = ObjectKey { kind: "StatefulSet", namespace: "prod".into(), name: "db".into() };
/// let created = meta("1", vec![entry("kube-sentinel-operator", 100)]);
/// assert!(matches!(filter.observe(&key, &created, FirstSight::Created), Verdict::Ignored(_)));
/// let edited = meta("2", vec![entry("kube-sentinel-operator", 100), entry("kubectl-edit", 160)]);
/// assert_eq!(
///     filter.observe(&key, &edited, FirstSight::Created),
///     Verdict::Drift { managers: vec!["kubectl-edit".into()] }
/// );
/// ```
#[derive(Debug, Default)]
pub struct ActorFilter {
    ignored_managers: HashSet<String>,
    seen: HashMap<ObjectKey, Seen>,
    names: Names,
}

impl ActorFilter {
    /// A filter that treats writes by `ignored_managers` as not drift.
    pub fn new<I, S>(ignored_managers: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            ignored_managers: ignored_managers.into_iter().map(Into::into).collect(),
            seen: HashMap::new(),
            names: Names::default(),
        }
    }

    /// Records the object's current entries and judges the change since the last record.
    pub fn observe(&mut self, key: &ObjectKey, meta: &ObjectMeta, first: FirstSight) -> Verdict {
        let names = &mut self.names;
        let entries: Box<[EntrySig]> = meta
            .managed_fields
            .iter()
            .flatten()
            .map(|e| EntrySig::new(e, names))
            .collect();
        let version = version_hash(meta.resource_version.as_deref());
        let record = Seen {
            version,
            generation: meta.generation.unwrap_or(0),
            entries,
            owner: None,
        };
        let previous = match self.seen.get_mut(key) {
            Some(seen) => {
                let owner = seen.owner.take();
                Some(std::mem::replace(seen, Seen { owner, ..record }))
            }
            None => self.seen.insert(key.clone(), record),
        };
        let Some(current) = self.seen.get(key) else {
            return Verdict::Ignored(IgnoreReason::Unchanged);
        };
        let written: Vec<&EntrySig> = match (&previous, first) {
            (None, FirstSight::Created) => current.entries.iter().collect(),
            (None, FirstSight::Listed(after)) => {
                let after = after.map(|t| t.as_second());
                let newer: Vec<&EntrySig> = current
                    .entries
                    .iter()
                    .filter(|e| written_since(e.time, after))
                    .collect();
                if !newer.iter().any(|e| self.is_foreign(e)) {
                    return Verdict::Ignored(IgnoreReason::Listed);
                }
                newer
            }
            (Some(old), _) => {
                if old.version == version && old.entries == current.entries {
                    return Verdict::Ignored(IgnoreReason::Unchanged);
                }
                let written: Vec<&EntrySig> = current
                    .entries
                    .iter()
                    .filter(|new| match old.entries.iter().find(|o| o.same_slot(new)) {
                        Some(o) => new.written_since(o),
                        None => true,
                    })
                    .collect();
                if written.is_empty() {
                    let removed = old
                        .entries
                        .iter()
                        .any(|o| !current.entries.iter().any(|n| n.same_slot(o)));
                    if removed {
                        // Entries vanished and none was written: only an explicit edit of
                        // managedFields does that, and the API server does not record who.
                        return Verdict::Drift {
                            managers: vec![UNKNOWN_ACTOR.to_owned()],
                        };
                    }
                    newest_writers(old, current)
                } else {
                    written
                }
            }
        };
        self.judge(&written)
    }

    /// Foreign writers among the object's entries newer than `after` (`None`: any), without
    /// changing the record: used to catch up when a standby becomes leader.
    pub fn foreign_since(&self, key: &ObjectKey, after: Option<Timestamp>) -> Vec<String> {
        let after = after.map(|t| t.as_second());
        let mut managers: Vec<String> = self
            .seen
            .get(key)
            .into_iter()
            .flat_map(|s| s.entries.iter())
            .filter(|e| self.is_foreign(e))
            .filter(|e| written_since(e.time, after))
            .map(|e| e.manager.to_string())
            .collect();
        managers.sort();
        managers.dedup();
        managers
    }

    /// Remembers `owner` (a name in the object's namespace) as the owner of the recorded
    /// object `key`, for [`ActorFilter::owner`] and [`ActorFilter::forget`]; allocates only
    /// when it changed.
    pub fn set_owner(&mut self, key: &ObjectKey, owner: Option<&str>) {
        if let Some(seen) = self.seen.get_mut(key)
            && seen.owner.as_deref() != owner
        {
            seen.owner = owner.map(Box::from);
        }
    }

    /// The owner remembered for `key`.
    pub fn owner(&self, key: &ObjectKey) -> Option<NamespacedName> {
        let owner = self.seen.get(key)?.owner.as_deref()?;
        Some(NamespacedName::new(key.namespace.clone(), owner))
    }

    /// Drops the record of a deleted object; returns the owner it remembered, if any.
    pub fn forget(&mut self, key: &ObjectKey) -> Option<NamespacedName> {
        let owner = self.seen.remove(key)?.owner?;
        Some(NamespacedName::new(key.namespace.clone(), owner))
    }

    /// Whether the filter has a record of this object.
    pub fn knows(&self, key: &ObjectKey) -> bool {
        self.seen.contains_key(key)
    }

    /// Keys of every recorded object.
    pub fn keys(&self) -> impl Iterator<Item = &ObjectKey> {
        self.seen.keys()
    }

    /// Number of recorded objects.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// Whether no object is recorded.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    fn is_foreign(&self, entry: &EntrySig) -> bool {
        !entry.is_status()
            && &*entry.manager != BEFORE_FIRST_APPLY
            && !self.ignored_managers.contains(&*entry.manager)
    }

    fn judge(&self, written: &[&EntrySig]) -> Verdict {
        let by_the_server = written.iter().any(|e| &*e.manager == BEFORE_FIRST_APPLY);
        let applied = written
            .iter()
            .any(|e| e.operation == Operation::Apply && &*e.manager != BEFORE_FIRST_APPLY);
        if by_the_server && !applied {
            // The API server makes that entry only inside an apply; without one, a client wrote it.
            return Verdict::Drift {
                managers: vec![UNKNOWN_ACTOR.to_owned()],
            };
        }
        let mut managers: Vec<String> = written
            .iter()
            .filter(|e| self.is_foreign(e))
            .map(|e| e.manager.to_string())
            .collect();
        if managers.is_empty() {
            let all_status = !written.is_empty() && written.iter().all(|e| e.is_status());
            return Verdict::Ignored(if all_status {
                IgnoreReason::StatusOnly
            } else {
                IgnoreReason::IgnoredManager
            });
        }
        managers.sort();
        managers.dedup();
        Verdict::Drift { managers }
    }
}

#[cfg(test)]
#[path = "actor_properties.rs"]
mod properties;

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{FieldsV1, Time};
    use serde_json::json;

    use super::*;

    const OP: &str = "kube-sentinel-operator";

    fn entry(
        manager: &str,
        operation: &str,
        sub: Option<&str>,
        second: i64,
        fields: Value,
    ) -> ManagedFieldsEntry {
        ManagedFieldsEntry {
            manager: Some(manager.into()),
            operation: Some(operation.into()),
            subresource: sub.map(Into::into),
            time: Some(Time(Timestamp::from_second(second).expect("time"))),
            fields_v1: Some(FieldsV1(fields)),
            api_version: Some("apps/v1".into()),
            fields_type: Some("FieldsV1".into()),
        }
    }

    fn spec(fields: &[&str]) -> Value {
        let mut spec = serde_json::Map::new();
        for f in fields {
            spec.insert(format!("f:{f}"), json!({}));
        }
        json!({ "f:spec": spec })
    }

    fn meta(rv: &str, entries: Vec<ManagedFieldsEntry>) -> ObjectMeta {
        ObjectMeta {
            name: Some("db".into()),
            namespace: Some("prod".into()),
            resource_version: Some(rv.into()),
            managed_fields: Some(entries),
            ..Default::default()
        }
    }

    fn key(kind: &'static str) -> ObjectKey {
        ObjectKey {
            kind,
            namespace: "prod".into(),
            name: "db".into(),
        }
    }

    fn filter() -> ActorFilter {
        ActorFilter::new([OP, "kube-sentinel", "kube-controller-manager"])
    }

    fn drift(managers: &[&str]) -> Verdict {
        Verdict::Drift {
            managers: managers.iter().map(|m| m.to_string()).collect(),
        }
    }

    fn operator_created(f: &mut ActorFilter) -> ManagedFieldsEntry {
        let op = entry(OP, "Apply", None, 100, spec(&["replicas", "template"]));
        let v = f.observe(
            &key("StatefulSet"),
            &meta("1", vec![op.clone()]),
            FirstSight::Created,
        );
        assert_eq!(v, Verdict::Ignored(IgnoreReason::IgnoredManager));
        op
    }

    #[test]
    fn foreign_update_is_drift_and_operator_apply_is_not() {
        let mut f = filter();
        let op = operator_created(&mut f);
        let foreign = entry("kubectl-patch", "Update", None, 130, spec(&["replicas"]));
        let v = f.observe(
            &key("StatefulSet"),
            &meta("2", vec![op.clone(), foreign.clone()]),
            FirstSight::Created,
        );
        assert_eq!(v, drift(&["kubectl-patch"]));
        // The operator reverts: its entry is rewritten, the foreign entry loses its field.
        let op2 = entry(OP, "Apply", None, 131, spec(&["replicas", "template"]));
        let v = f.observe(
            &key("StatefulSet"),
            &meta("3", vec![op2]),
            FirstSight::Created,
        );
        assert_eq!(v, Verdict::Ignored(IgnoreReason::IgnoredManager));
    }

    #[test]
    fn a_shrunk_foreign_entry_is_not_a_write() {
        let mut f = filter();
        let op = operator_created(&mut f);
        let foreign = entry(
            "kubectl-patch",
            "Update",
            None,
            130,
            spec(&["replicas", "paused"]),
        );
        f.observe(
            &key("StatefulSet"),
            &meta("2", vec![op, foreign]),
            FirstSight::Created,
        );
        let op2 = entry(OP, "Apply", None, 131, spec(&["replicas", "template"]));
        let shrunk = entry("kubectl-patch", "Update", None, 130, spec(&["paused"]));
        let v = f.observe(
            &key("StatefulSet"),
            &meta("3", vec![op2, shrunk]),
            FirstSight::Created,
        );
        assert_eq!(v, Verdict::Ignored(IgnoreReason::IgnoredManager));
    }

    #[test]
    fn status_subresource_writes_are_ignored_but_scale_is_drift() {
        let mut f = filter();
        let op = operator_created(&mut f);
        let status = entry(
            "someone",
            "Update",
            Some("status"),
            140,
            json!({"f:status": {"f:replicas": {}}}),
        );
        let v = f.observe(
            &key("StatefulSet"),
            &meta("2", vec![op.clone(), status.clone()]),
            FirstSight::Created,
        );
        assert_eq!(v, Verdict::Ignored(IgnoreReason::StatusOnly));
        let scale = entry("kubectl", "Update", Some("scale"), 141, spec(&["replicas"]));
        let v = f.observe(
            &key("StatefulSet"),
            &meta("3", vec![op, status, scale]),
            FirstSight::Created,
        );
        assert_eq!(v, drift(&["kubectl"]));
    }

    #[test]
    fn same_second_rewrite_by_one_manager_is_caught() {
        let mut f = filter();
        let op = operator_created(&mut f);
        let first = entry("kubectl-edit", "Update", None, 150, spec(&["replicas"]));
        assert_eq!(
            f.observe(
                &key("StatefulSet"),
                &meta("2", vec![op.clone(), first.clone()]),
                FirstSight::Created
            ),
            drift(&["kubectl-edit"])
        );
        // Same second, more fields: a second write.
        let grown = entry(
            "kubectl-edit",
            "Update",
            None,
            150,
            spec(&["replicas", "paused"]),
        );
        assert_eq!(
            f.observe(
                &key("StatefulSet"),
                &meta("3", vec![op.clone(), grown.clone()]),
                FirstSight::Created
            ),
            drift(&["kubectl-edit"])
        );
        // Same second, same fields, new resource version: attributed to the newest entries.
        assert_eq!(
            f.observe(
                &key("StatefulSet"),
                &meta("4", vec![op, grown]),
                FirstSight::Created
            ),
            drift(&["kubectl-edit"])
        );
    }

    #[test]
    fn unchanged_object_is_ignored() {
        let mut f = filter();
        let op = operator_created(&mut f);
        let v = f.observe(
            &key("StatefulSet"),
            &meta("1", vec![op]),
            FirstSight::Created,
        );
        assert_eq!(v, Verdict::Ignored(IgnoreReason::Unchanged));
    }

    #[test]
    fn wiped_entries_are_drift_by_an_unknown_actor() {
        let mut f = filter();
        let op = operator_created(&mut f);
        let foreign = entry("kubectl-patch", "Update", None, 130, spec(&["replicas"]));
        f.observe(
            &key("StatefulSet"),
            &meta("2", vec![op.clone(), foreign]),
            FirstSight::Created,
        );
        // Every entry stripped.
        assert_eq!(
            f.observe(&key("StatefulSet"), &meta("3", vec![]), FirstSight::Created),
            drift(&[UNKNOWN_ACTOR])
        );
        // Some entries removed, none written.
        f.observe(
            &key("StatefulSet"),
            &meta(
                "4",
                vec![op.clone(), entry("x", "Update", None, 1, spec(&["a"]))],
            ),
            FirstSight::Created,
        );
        assert_eq!(
            f.observe(
                &key("StatefulSet"),
                &meta("5", vec![op]),
                FirstSight::Created
            ),
            drift(&[UNKNOWN_ACTOR])
        );
    }

    #[test]
    fn before_first_apply_is_judged_by_the_apply_that_made_it() {
        let mut f = filter();
        let op = operator_created(&mut f);
        let sts = key("StatefulSet");
        assert_eq!(
            f.observe(&sts, &meta("2", vec![]), FirstSight::Created),
            drift(&[UNKNOWN_ACTOR])
        );
        // The operator's revert: its Apply entry and the server's entry for what the object held.
        let server = entry(
            BEFORE_FIRST_APPLY,
            "Update",
            None,
            140,
            spec(&["replicas", "template", "revisionHistoryLimit"]),
        );
        let reverted = entry(OP, "Apply", None, 140, spec(&["replicas", "template"]));
        assert_eq!(
            f.observe(
                &sts,
                &meta("3", vec![reverted.clone(), server.clone()]),
                FirstSight::Created
            ),
            Verdict::Ignored(IgnoreReason::IgnoredManager)
        );
        assert!(f.foreign_since(&sts, None).is_empty());
        // A foreign apply to a wiped object is the applier's drift.
        f.observe(&sts, &meta("4", vec![]), FirstSight::Created);
        let gitops = entry("gitops", "Apply", None, 150, spec(&["replicas"]));
        assert_eq!(
            f.observe(
                &sts,
                &meta("5", vec![gitops.clone(), server.clone()]),
                FirstSight::Created
            ),
            drift(&["gitops"])
        );
        // The server's entry written with no apply: a client's own edit of managedFields.
        f.observe(&sts, &meta("6", vec![op.clone()]), FirstSight::Created);
        assert_eq!(
            f.observe(&sts, &meta("7", vec![op, server]), FirstSight::Created),
            drift(&[UNKNOWN_ACTOR])
        );
    }

    #[test]
    fn update_and_apply_entries_of_one_manager_are_tracked_apart() {
        let mut f = filter();
        let op = operator_created(&mut f);
        // The operator also holds an Update entry: still ignored.
        let op_update = entry(
            OP,
            "Update",
            None,
            120,
            json!({"f:metadata": {"f:labels": {}}}),
        );
        let v = f.observe(
            &key("StatefulSet"),
            &meta("2", vec![op.clone(), op_update.clone()]),
            FirstSight::Created,
        );
        assert_eq!(v, Verdict::Ignored(IgnoreReason::IgnoredManager));
        // A foreign manager with Apply and Update entries: only the written one is named.
        let apply = entry("gitops", "Apply", None, 125, spec(&["replicas"]));
        f.observe(
            &key("StatefulSet"),
            &meta("3", vec![op.clone(), op_update.clone(), apply.clone()]),
            FirstSight::Created,
        );
        let update = entry(
            "gitops",
            "Update",
            None,
            126,
            json!({"f:metadata": {"f:annotations": {}}}),
        );
        let v = f.observe(
            &key("StatefulSet"),
            &meta("4", vec![op, op_update, apply, update]),
            FirstSight::Created,
        );
        assert_eq!(v, drift(&["gitops"]));
    }

    #[test]
    fn same_name_in_different_kinds_are_separate_objects() {
        let mut f = filter();
        let op = entry(OP, "Apply", None, 100, spec(&["ports"]));
        f.observe(
            &key("Service"),
            &meta("1", vec![op.clone()]),
            FirstSight::Created,
        );
        operator_created(&mut f);
        let foreign = entry("kubectl-patch", "Update", None, 130, spec(&["ports"]));
        assert_eq!(
            f.observe(
                &key("Service"),
                &meta("7", vec![op, foreign]),
                FirstSight::Created
            ),
            drift(&["kubectl-patch"])
        );
        let sts = entry(OP, "Apply", None, 100, spec(&["replicas", "template"]));
        assert_eq!(
            f.observe(
                &key("StatefulSet"),
                &meta("1", vec![sts]),
                FirstSight::Created
            ),
            Verdict::Ignored(IgnoreReason::Unchanged)
        );
    }

    #[test]
    fn listed_objects_count_only_foreign_writes_after_the_last_trigger() {
        let mut f = filter();
        let op = entry(OP, "Apply", None, 100, spec(&["replicas"]));
        let foreign = entry("kubectl-edit", "Update", None, 200, spec(&["paused"]));
        let m = meta("9", vec![op, foreign]);
        let handled_after = Timestamp::from_second(250).ok();
        assert_eq!(
            f.observe(&key("StatefulSet"), &m, FirstSight::Listed(handled_after)),
            Verdict::Ignored(IgnoreReason::Listed)
        );
        f.forget(&key("StatefulSet"));
        let handled_before = Timestamp::from_second(150).ok();
        assert_eq!(
            f.observe(&key("StatefulSet"), &m, FirstSight::Listed(handled_before)),
            drift(&["kubectl-edit"])
        );
        // Seen again by a relist: unchanged.
        assert_eq!(
            f.observe(&key("StatefulSet"), &m, FirstSight::Listed(handled_before)),
            Verdict::Ignored(IgnoreReason::Unchanged)
        );
        assert_eq!(
            f.foreign_since(&key("StatefulSet"), handled_before),
            vec!["kubectl-edit".to_string()]
        );
        assert!(
            f.foreign_since(&key("StatefulSet"), handled_after)
                .is_empty()
        );
    }

    #[test]
    fn created_by_a_foreign_actor_is_drift() {
        let mut f = filter();
        let foreign = entry("kubectl-create", "Update", None, 100, spec(&["ports"]));
        assert_eq!(
            f.observe(
                &key("Service"),
                &meta("1", vec![foreign]),
                FirstSight::Created
            ),
            drift(&["kubectl-create"])
        );
    }

    #[test]
    fn odd_managed_fields_do_not_panic() {
        let mut f = filter();
        let odd = ManagedFieldsEntry::default();
        let weird = ManagedFieldsEntry {
            fields_v1: Some(FieldsV1(json!([1, "x", null]))),
            ..Default::default()
        };
        let v = f.observe(
            &key("ConfigMap"),
            &meta("1", vec![odd, weird]),
            FirstSight::Created,
        );
        // A nameless manager is not in the ignore set: conservative.
        assert_eq!(v, drift(&[""]));
        let none = ObjectMeta::default();
        let v = f.observe(
            &ObjectKey::new("ConfigMap", &none),
            &none,
            FirstSight::Listed(None),
        );
        assert_eq!(v, Verdict::Ignored(IgnoreReason::Listed));
    }

    #[test]
    fn forget_drops_the_record_and_returns_the_owner_it_kept() {
        let mut f = filter();
        operator_created(&mut f);
        let sts = key("StatefulSet");
        assert!(f.knows(&sts));
        assert_eq!(f.owner(&sts), None, "no owner set yet");
        f.set_owner(&sts, Some("db"));
        let owner = Some(NamespacedName::new(sts.namespace.clone(), "db"));
        assert_eq!(f.owner(&sts), owner);
        // A later observation keeps the owner.
        f.observe(&sts, &meta("9", vec![]), FirstSight::Created);
        assert_eq!(f.owner(&sts), owner);
        assert_eq!(f.forget(&sts), owner);
        assert_eq!(f.forget(&sts), None);
        assert!(f.is_empty());
    }

    #[test]
    fn a_status_write_in_the_second_of_a_foreign_spec_write_is_not_that_writers_again() {
        let mut f = filter();
        let op = operator_created(&mut f);
        let status = |second| {
            let fields = json!({"f:status": {"f:replicas": {}, "f:readyReplicas": {}}});
            entry(
                "kube-controller-manager",
                "Update",
                Some("status"),
                second,
                fields,
            )
        };
        let scaled = entry("kubectl-scale", "Update", None, 130, spec(&["replicas"]));
        let at = |rv: &str, generation: i64, entries: Vec<ManagedFieldsEntry>| ObjectMeta {
            generation: Some(generation),
            ..meta(rv, entries)
        };
        let k = key("StatefulSet");
        let first = at("2", 2, vec![op.clone(), status(100), scaled.clone()]);
        assert_eq!(
            f.observe(&k, &first, FirstSight::Created),
            drift(&["kubectl-scale"])
        );
        // The controller answers within the same second: its entry moves to 130.
        let answered = at("3", 2, vec![op.clone(), status(130), scaled.clone()]);
        assert_eq!(
            f.observe(&k, &answered, FirstSight::Created),
            Verdict::Ignored(IgnoreReason::StatusOnly)
        );
        // And again in that second: no entry moved, the generation did not either, so the
        // spec-only writer cannot have written.
        let again = at("4", 2, vec![op.clone(), status(130), scaled.clone()]);
        assert_eq!(
            f.observe(&k, &again, FirstSight::Created),
            Verdict::Ignored(IgnoreReason::StatusOnly)
        );
        // A second scale in that second bumps the generation: drift, as before.
        let rescaled = at("5", 3, vec![op.clone(), status(130), scaled.clone()]);
        assert_eq!(
            f.observe(&k, &rescaled, FirstSight::Created),
            drift(&["kubectl-scale"])
        );
    }

    #[test]
    fn a_record_stays_small() {
        // What each watched object costs (the sentinel's memory per object): bounded here so
        // that a field added to a record is a decision.
        assert!(std::mem::size_of::<EntrySig>() <= 64);
        assert!(std::mem::size_of::<Seen>() <= 48);
    }

    #[test]
    fn names_are_shared_and_bounded() {
        let mut names = Names::default();
        let a = names.get("kubectl-edit");
        assert!(
            Arc::ptr_eq(&a, &names.get("kubectl-edit")),
            "one allocation per name"
        );
        for i in 0..Names::MAX * 2 {
            names.get(&format!("manager-{i}"));
        }
        assert_eq!(names.0.len(), Names::MAX, "a name per write cannot grow it");
        assert_eq!(&*names.get("manager-999999"), "manager-999999");
    }
}
