//! From watch events to drift events: the actor filter, owner resolution and the owner's wishes.
//!
//! [`Detector::handle`] takes the metadata watch events of the three infrastructure kinds (and a
//! [`Input::CatchUp`] when this instance becomes the leader) and returns the drift events to
//! debounce, one per drifted object, each carrying its owner's debounce [`Timing`].
//!
//! * **Initial list**: objects found by a kind's first list are judged against their owner's
//!   last trigger ([`FirstSight::Listed`]): drift made while the sentinel was down is caught once.
//! * **Relist** (a watch that expired): objects known before and missing from the relist were
//!   deleted during the gap; objects new in it were created during the gap.
//! * **Deletion**, including an object relabelled out of the selector (a label-selector watch
//!   cannot tell the two apart; either way the operator must restore it), is drift unless its
//!   owner is being deleted or gone.
//! * **Catch-up**: a standby keeps its records warm; when it becomes the leader it re-judges
//!   every record against its owner's last trigger, so drift the previous leader saw but did not
//!   trigger is not lost, and drift it did trigger is not triggered again. Deletions are kept
//!   for [`DELETIONS_KEPT`] (at most [`MAX_DELETIONS_KEPT`]) so that an object deleted while the
//!   Lease moved, whose burst a standby dropped, is re-judged too.

use std::{
    collections::{HashMap, HashSet},
    time::Duration,
};

use futures::{Stream, StreamExt, stream};
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{
    api::DynamicObject,
    runtime::{
        reflector::{ObjectRef, Store},
        watcher,
    },
};

use super::{
    inputs::WATCHED_KINDS, metrics::SentinelMetrics, owner_state::OwnerState, refusal::Refusal,
};
use crate::{
    contract::{DebounceModeSpec, DriftChange, DriftedObject, SentinelSpec},
    stream::{DebounceMode, Timing},
    telemetry::{Gate, Heartbeat},
    watch::{
        NamespacedName, ObjectKey, OwnerKind,
        actor::{ActorFilter, FirstSight, Verdict},
        field_path::{FieldPath, ignored_paths},
        relist::Relist,
    },
};

/// How long a deletion is kept for catch-up: far beyond a Lease handover (lease duration plus
/// a renew period, seconds), and bounded; older deletions are left to the operator's resync.
pub const DELETIONS_KEPT: Duration = Duration::from_secs(10 * 60);
/// Most deletions kept for catch-up (a mass deletion must not grow memory without bound).
pub const MAX_DELETIONS_KEPT: usize = 10_000;

/// Input of the detector.
#[derive(Debug)]
// Events are moved through once, never stored: boxing them would cost an allocation each.
#[allow(clippy::large_enum_variant)]
pub enum Input {
    /// A metadata watch event of one kind.
    Watch(&'static str, watcher::Event<ObjectMeta>),
    /// This instance just became the leader: re-judge every record.
    CatchUp,
    /// A tick for liveness: the pipeline pulled this far (see [`detect`]).
    Beat,
}

/// One drifted object, on its way to the debounce.
#[derive(Clone, Debug, PartialEq)]
pub struct DriftEvent {
    /// The owning custom resource: the debounce key.
    pub owner: NamespacedName,
    /// What drifted.
    pub object: DriftedObject,
    /// The foreign managers that changed it.
    pub managers: Vec<String>,
    /// When the sentinel received the event (wall clock).
    pub received: Timestamp,
    /// The owner's debounce timing.
    pub timing: Timing,
}

/// Reads the owning custom resources' state.
pub trait OwnerLookup {
    /// The state of `owner`, or `None` if it does not exist (as far as the cache knows).
    fn owner_state(&self, owner: &NamespacedName) -> Option<OwnerState>;
}

/// The owners from a reflector store of the custom resources.
#[derive(Clone)]
pub struct StoreOwners {
    /// The store.
    pub store: Store<DynamicObject>,
    /// The custom resource kind.
    pub kind: OwnerKind,
}

impl OwnerLookup for StoreOwners {
    fn owner_state(&self, owner: &NamespacedName) -> Option<OwnerState> {
        let reference =
            ObjectRef::new_with(&owner.name, self.kind.resource.clone()).within(&owner.namespace);
        self.store
            .get(&reference)
            .map(|o| OwnerState::from_object(&o))
    }
}

impl<S: std::hash::BuildHasher> OwnerLookup for HashMap<NamespacedName, OwnerState, S> {
    fn owner_state(&self, owner: &NamespacedName) -> Option<OwnerState> {
        self.get(owner).cloned()
    }
}

/// Debounce timing used when a resource's `spec.sentinel` does not set its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimingDefaults {
    /// Quiet window.
    pub window: Duration,
    /// Longest a burst may delay its trigger.
    pub max_wait: Duration,
    /// Trailing or leading+trailing.
    pub mode: DebounceMode,
}

impl TimingDefaults {
    /// The timing for a resource with this `spec.sentinel`.
    pub fn for_spec(&self, spec: &SentinelSpec) -> Timing {
        let window = spec.debounce_window_seconds.map_or(self.window, |s| {
            Duration::from_secs(u64::from(s.clamp(1, 60)))
        });
        let max_wait = spec.max_wait_seconds.map_or(self.max_wait, |s| {
            Duration::from_secs(u64::from(s.clamp(1, 300)))
        });
        let mode = match spec.mode {
            Some(DebounceModeSpec::Leading) => DebounceMode::LeadingTrailing,
            Some(DebounceModeSpec::Trailing) => DebounceMode::Trailing,
            None => self.mode,
        };
        Timing {
            window,
            max_wait: Some(max_wait.max(window)),
            mode,
        }
    }
}

/// The detect stage: every input through `detector`, its drift events out; `synced` opens once
/// the first list of every watched kind is complete. Each [`Input::Beat`] beats `heartbeat`:
/// the stage is pulled only while every stage after it, down to the trigger writes, takes
/// items, so a beat says the whole pipeline moves.
pub fn detect<O: OwnerLookup>(
    inputs: impl Stream<Item = Input>,
    mut detector: Detector<O>,
    synced: Gate,
    heartbeat: Heartbeat,
) -> impl Stream<Item = DriftEvent> {
    inputs.flat_map(move |input| {
        if let Input::Beat = input {
            heartbeat.beat();
        }
        let events = detector.handle(input);
        if WATCHED_KINDS.iter().all(|k| detector.is_synced(k)) {
            synced.set(true);
        }
        stream::iter(events)
    })
}

/// Watch events in, drift events out. See the [module documentation](self).
pub struct Detector<O> {
    filter: ActorFilter,
    owner_kind: OwnerKind,
    owners: O,
    defaults: TimingDefaults,
    metrics: SentinelMetrics,
    /// Kinds whose first list is complete.
    synced: HashSet<&'static str>,
    /// Objects seen by a list in progress, per kind.
    relisting: HashMap<&'static str, Relist<ObjectKey>>,
    /// Recent deletions, for catch-up: the owner and when the deletion was seen.
    deleted: HashMap<ObjectKey, (NamespacedName, Timestamp)>,
}

impl<O: OwnerLookup> Detector<O> {
    /// A detector attributing changes with `filter` and resolving owners of `owner_kind`.
    pub fn new(
        filter: ActorFilter,
        owner_kind: OwnerKind,
        owners: O,
        defaults: TimingDefaults,
        metrics: SentinelMetrics,
    ) -> Self {
        Self {
            filter,
            owner_kind,
            owners,
            defaults,
            metrics,
            synced: HashSet::new(),
            relisting: HashMap::new(),
            deleted: HashMap::new(),
        }
    }

    /// Whether the first list of `kind` is complete.
    pub fn is_synced(&self, kind: &str) -> bool {
        self.synced.contains(kind)
    }

    /// Handles one input; returns the drift events it reveals.
    pub fn handle(&mut self, input: Input) -> Vec<DriftEvent> {
        match input {
            Input::CatchUp => self.catch_up(),
            Input::Beat => Vec::new(),
            Input::Watch(kind, event) => {
                self.metrics
                    .events_seen
                    .get_or_create(&[("kind", kind)])
                    .inc();
                match event {
                    watcher::Event::Init => {
                        self.relisting.entry(kind).or_default().start();
                        Vec::new()
                    }
                    watcher::Event::InitApply(meta) => {
                        let key = ObjectKey::new(kind, &meta);
                        self.relisting.entry(kind).or_default().saw(key.clone());
                        let first_list = !self.synced.contains(kind);
                        self.applied(key, &meta, first_list).into_iter().collect()
                    }
                    watcher::Event::InitDone => self.list_done(kind),
                    watcher::Event::Apply(meta) => {
                        let key = ObjectKey::new(kind, &meta);
                        self.applied(key, &meta, false).into_iter().collect()
                    }
                    watcher::Event::Delete(meta) => {
                        let key = ObjectKey::new(kind, &meta);
                        let remembered = self.filter.forget(&key);
                        let owner = self.owner_kind.owner_of(&meta).or(remembered);
                        self.deleted(key, owner).into_iter().collect()
                    }
                }
            }
        }
    }

    fn applied(
        &mut self,
        key: ObjectKey,
        meta: &ObjectMeta,
        first_list: bool,
    ) -> Option<DriftEvent> {
        let Some(owner) = self.owner_kind.owner_of(meta) else {
            self.ignored("no_owner");
            return None;
        };
        let state = self.owners.owner_state(&owner);
        let first = if first_list {
            FirstSight::Listed(state.as_ref().and_then(|s| s.last_trigger))
        } else {
            FirstSight::Created
        };
        let verdict = self.filter.observe(&key, meta, first);
        // The filter keeps the owner with its record, for deletions and catch-up.
        self.filter.set_owner(&key, Some(&owner.name));
        self.deleted.remove(&key);
        match verdict {
            Verdict::Ignored(reason) => {
                self.ignored(reason.as_str());
                None
            }
            Verdict::Drift { managers } => {
                if writes_only_ignored_fields(&key, meta, &managers, state.as_ref()) {
                    self.ignored("ignore_rule");
                    return None;
                }
                self.drift(key, owner, state, DriftChange::Modified, managers)
            }
        }
    }

    fn deleted(&mut self, key: ObjectKey, owner: Option<NamespacedName>) -> Option<DriftEvent> {
        let Some(owner) = owner else {
            self.ignored("no_owner");
            return None;
        };
        self.keep_deletion(&key, &owner);
        let state = self.owners.owner_state(&owner);
        self.drift(key, owner, state, DriftChange::Deleted, Vec::new())
    }

    /// Records a deletion for catch-up, dropping those older than [`DELETIONS_KEPT`] and, past
    /// [`MAX_DELETIONS_KEPT`], the oldest.
    fn keep_deletion(&mut self, key: &ObjectKey, owner: &NamespacedName) {
        let now = Timestamp::now();
        let horizon = now - DELETIONS_KEPT;
        self.deleted.retain(|_, (_, at)| *at >= horizon);
        if self.deleted.len() >= MAX_DELETIONS_KEPT {
            let oldest = self
                .deleted
                .iter()
                .min_by_key(|(_, (_, at))| *at)
                .map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                self.deleted.remove(&oldest);
            }
        }
        self.deleted.insert(key.clone(), (owner.clone(), now));
    }

    /// Recent deletions not covered by their owner's last trigger or acknowledgement.
    fn deletions_to_catch_up(&mut self) -> Vec<DriftEvent> {
        let horizon = Timestamp::now() - DELETIONS_KEPT;
        let deletions: Vec<(ObjectKey, NamespacedName, Timestamp)> = self
            .deleted
            .iter()
            .filter(|(_, (_, at))| *at >= horizon)
            .map(|(k, (o, at))| (k.clone(), o.clone(), *at))
            .collect();
        deletions
            .into_iter()
            .filter_map(|(key, owner, at)| {
                let state = self.owners.owner_state(&owner);
                let handled = state.as_ref().and_then(|s| s.last_trigger);
                if handled.is_some_and(|h| h > at) {
                    return None;
                }
                self.drift(key, owner, state, DriftChange::Deleted, Vec::new())
            })
            .collect()
    }

    fn list_done(&mut self, kind: &'static str) -> Vec<DriftEvent> {
        self.synced.insert(kind);
        let Some(listed) = self.relisting.get_mut(kind).and_then(Relist::done) else {
            return Vec::new();
        };
        listed
            .missing(self.filter.keys().filter(|k| k.kind == kind))
            .into_iter()
            .filter_map(|key| {
                let owner = self.filter.forget(&key);
                self.deleted(key, owner)
            })
            .collect()
    }

    fn catch_up(&mut self) -> Vec<DriftEvent> {
        let candidates: Vec<(ObjectKey, NamespacedName)> = self
            .filter
            .keys()
            .filter_map(|k| Some((k.clone(), self.filter.owner(k)?)))
            .collect();
        let mut events: Vec<DriftEvent> = candidates
            .into_iter()
            .filter_map(|(key, owner)| {
                let state = self.owners.owner_state(&owner);
                let after = state.as_ref().and_then(|s| s.last_trigger);
                let managers = self.filter.foreign_since(&key, after);
                if managers.is_empty() {
                    return None;
                }
                self.drift(key, owner, state, DriftChange::Modified, managers)
            })
            .collect();
        events.extend(self.deletions_to_catch_up());
        events
    }

    fn drift(
        &mut self,
        key: ObjectKey,
        owner: NamespacedName,
        state: Option<OwnerState>,
        change: DriftChange,
        managers: Vec<String>,
    ) -> Option<DriftEvent> {
        let state = match Refusal::check(state.as_ref()) {
            Ok(state) => state,
            Err(refusal) => {
                self.ignored(refusal.as_str());
                return None;
            }
        };
        self.metrics
            .drifts_detected
            .get_or_create(&[("kind", key.kind)])
            .inc();
        tracing::debug!(
            kind = key.kind, namespace = %key.namespace, name = %key.name, owner = %owner,
            ?change, managers = ?managers, "drift detected"
        );
        Some(DriftEvent {
            timing: self.defaults.for_spec(&state.sentinel),
            owner,
            object: DriftedObject {
                kind: key.kind.to_owned(),
                name: key.name,
                change,
            },
            managers,
            received: Timestamp::now(),
        })
    }

    fn ignored(&self, reason: &'static str) {
        self.metrics
            .events_ignored
            .get_or_create(&[("reason", reason)])
            .inc();
    }
}

/// Whether everything `managers` own on the object lies under its owner's ignore rules
/// (`spec.sentinel.ignore`): then their write is not drift. Status entries are not theirs to
/// judge (the actor filter already set them aside).
fn writes_only_ignored_fields(
    key: &ObjectKey,
    meta: &ObjectMeta,
    managers: &[String],
    owner: Option<&OwnerState>,
) -> bool {
    let Some(owner) = owner else { return false };
    let paths = ignored_paths(&owner.sentinel.ignore, key.kind, &key.name);
    if paths.is_empty() || managers.is_empty() {
        return false;
    }
    let entries = meta.managed_fields.as_deref().unwrap_or_default();
    managers.iter().all(|manager| {
        entries
            .iter()
            .filter(|e| e.manager.as_deref() == Some(manager.as_str()))
            .filter(|e| e.subresource.as_deref() != Some("status"))
            .all(|e| {
                e.fields_v1
                    .as_ref()
                    .is_none_or(|f| FieldPath::all_cover_fields(&paths, &f.0))
            })
    })
}

#[cfg(test)]
#[path = "detect_properties.rs"]
mod properties;

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{FieldsV1, ManagedFieldsEntry, Time};
    use prometheus_client::registry::Registry;
    use serde_json::json;

    use super::*;
    use crate::contract::{INSTANCE_LABEL, OPERATOR_FIELD_MANAGER};

    const OP: &str = OPERATOR_FIELD_MANAGER;

    fn entry(manager: &str, second: i64) -> ManagedFieldsEntry {
        ManagedFieldsEntry {
            manager: Some(manager.into()),
            operation: Some("Update".into()),
            time: Some(Time(Timestamp::from_second(second).expect("time"))),
            fields_v1: Some(FieldsV1(json!({"f:spec": {}}))),
            ..Default::default()
        }
    }

    fn meta(name: &str, owner: &str, rv: &str, entries: Vec<ManagedFieldsEntry>) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.into()),
            namespace: Some("prod".into()),
            resource_version: Some(rv.into()),
            labels: Some([(INSTANCE_LABEL.to_owned(), owner.to_owned())].into()),
            managed_fields: Some(entries),
            ..Default::default()
        }
    }

    fn owner(name: &str) -> NamespacedName {
        NamespacedName {
            namespace: "prod".into(),
            name: name.into(),
        }
    }

    fn detector(
        owners: HashMap<NamespacedName, OwnerState>,
    ) -> Detector<HashMap<NamespacedName, OwnerState>> {
        Detector::new(
            ActorFilter::new([OP]),
            OwnerKind::default(),
            owners,
            TimingDefaults {
                window: Duration::from_secs(2),
                max_wait: Duration::from_secs(10),
                mode: DebounceMode::Trailing,
            },
            SentinelMetrics::register(&mut Registry::default()),
        )
    }

    fn listed(
        d: &mut Detector<HashMap<NamespacedName, OwnerState>>,
        kind: &'static str,
        metas: Vec<ObjectMeta>,
    ) -> Vec<DriftEvent> {
        let mut out = d.handle(Input::Watch(kind, watcher::Event::Init));
        for m in metas {
            out.extend(d.handle(Input::Watch(kind, watcher::Event::InitApply(m))));
        }
        out.extend(d.handle(Input::Watch(kind, watcher::Event::InitDone)));
        out
    }

    fn names(events: &[DriftEvent]) -> Vec<(String, DriftChange)> {
        events
            .iter()
            .map(|e| (e.object.name.clone(), e.object.change))
            .collect()
    }

    #[test]
    fn restart_catches_drift_newer_than_the_last_trigger_only() {
        let handled = OwnerState {
            last_trigger: Timestamp::from_second(500).ok(),
            ..Default::default()
        };
        let mut d = detector([(owner("a"), handled)].into());
        let old_drift = meta("old", "a", "1", vec![entry(OP, 100), entry("kubectl", 400)]);
        let new_drift = meta("new", "a", "1", vec![entry(OP, 100), entry("kubectl", 600)]);
        let clean = meta("clean", "a", "1", vec![entry(OP, 100)]);
        let out = listed(
            &mut d,
            "StatefulSet",
            vec![old_drift, new_drift, clean.clone()],
        );
        assert_eq!(names(&out), [("new".into(), DriftChange::Modified)]);
        assert!(d.is_synced("StatefulSet"));
        // Unchanged objects delivered again by a relist are not drift.
        let out = listed(&mut d, "StatefulSet", vec![clean]);
        // ...but the two missing from it were deleted during the gap.
        let mut gone = names(&out);
        gone.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            gone,
            [
                ("new".into(), DriftChange::Deleted),
                ("old".into(), DriftChange::Deleted)
            ]
        );
    }

    #[test]
    fn deletion_is_drift_unless_the_owner_is_deleting_or_gone() {
        let mut d = detector(
            [
                (owner("a"), OwnerState::default()),
                (
                    owner("b"),
                    OwnerState {
                        deleting: true,
                        ..Default::default()
                    },
                ),
            ]
            .into(),
        );
        listed(&mut d, "Service", vec![]);
        for o in ["a", "b", "c"] {
            let m = meta(o, o, "1", vec![entry(OP, 1)]);
            assert!(
                d.handle(Input::Watch("Service", watcher::Event::Apply(m)))
                    .is_empty()
            );
        }
        let del = |o: &str| {
            Input::Watch(
                "Service",
                watcher::Event::Delete(meta(o, o, "2", vec![entry(OP, 1)])),
            )
        };
        assert_eq!(
            names(&d.handle(del("a"))),
            [("a".into(), DriftChange::Deleted)]
        );
        assert!(d.handle(del("b")).is_empty());
        assert!(d.handle(del("c")).is_empty());
    }

    #[test]
    fn paused_and_disabled_owners_get_nothing_and_timing_follows_the_spec() {
        let spec = SentinelSpec {
            debounce_window_seconds: Some(5),
            mode: Some(DebounceModeSpec::Leading),
            max_wait_seconds: Some(3),
            ..Default::default()
        };
        let mut d = detector(
            [
                (
                    owner("paused"),
                    OwnerState {
                        paused: true,
                        ..Default::default()
                    },
                ),
                (
                    owner("off"),
                    OwnerState {
                        sentinel: SentinelSpec {
                            enabled: Some(false),
                            ..Default::default()
                        },
                        ..Default::default()
                    },
                ),
                (
                    owner("tuned"),
                    OwnerState {
                        sentinel: spec,
                        ..Default::default()
                    },
                ),
            ]
            .into(),
        );
        listed(&mut d, "ConfigMap", vec![]);
        let foreign = |o: &str| {
            Input::Watch(
                "ConfigMap",
                watcher::Event::Apply(meta(o, o, "1", vec![entry("kubectl", 9)])),
            )
        };
        assert!(d.handle(foreign("paused")).is_empty());
        assert!(d.handle(foreign("off")).is_empty());
        let out = d.handle(foreign("tuned"));
        assert_eq!(
            out[0].timing,
            Timing {
                window: Duration::from_secs(5),
                max_wait: Some(Duration::from_secs(5)),
                mode: DebounceMode::LeadingTrailing
            }
        );
        assert_eq!(out[0].managers, ["kubectl"]);
    }

    #[test]
    fn a_write_of_ignored_fields_only_is_not_drift_and_one_beyond_them_is() {
        let rule: crate::contract::IgnoreRule = serde_json::from_value(json!(
            {"kind": "StatefulSet", "paths": ["/spec/replicas"]}))
        .expect("rule");
        let state = OwnerState {
            sentinel: SentinelSpec {
                ignore: vec![rule],
                ..Default::default()
            },
            ..Default::default()
        };
        let mut d = detector([(owner("a"), state)].into());
        listed(&mut d, "StatefulSet", vec![]);
        listed(&mut d, "Service", vec![]);
        let write = |manager: &str, second, fields| ManagedFieldsEntry {
            fields_v1: Some(FieldsV1(fields)),
            subresource: (manager == "kubectl").then(|| "scale".to_string()),
            ..entry(manager, second)
        };
        let scale = write("kubectl", 10, json!({"f:spec": {"f:replicas": {}}}));
        let image = write("kubectl-patch", 10, json!({"f:spec": {"f:template": {}}}));
        let event = |kind, rv: &str, entries| {
            Input::Watch(kind, watcher::Event::Apply(meta("a", "a", rv, entries)))
        };
        let ours = entry(OP, 1);
        d.handle(event("StatefulSet", "1", vec![ours.clone()]));
        assert!(
            d.handle(event("StatefulSet", "2", vec![ours.clone(), scale.clone()]))
                .is_empty(),
            "a scale is ignored"
        );
        let out = d.handle(event("StatefulSet", "3", vec![ours.clone(), scale, image]));
        assert_eq!(out[0].managers, ["kubectl-patch"], "an image change is not");
        // The rule names StatefulSets: the same write to a Service is drift.
        d.handle(event("Service", "1", vec![ours.clone()]));
        let scaled = write("kubectl", 11, json!({"f:spec": {"f:replicas": {}}}));
        assert_eq!(d.handle(event("Service", "2", vec![ours, scaled])).len(), 1);
    }

    #[test]
    fn catch_up_replays_deletions_newer_than_the_last_trigger_until_recreated() {
        let mut d = detector([(owner("a"), OwnerState::default())].into());
        listed(&mut d, "Service", vec![]);
        let svc = |rv: &str| meta("a", "a", rv, vec![entry(OP, 1)]);
        d.handle(Input::Watch("Service", watcher::Event::Apply(svc("1"))));
        d.handle(Input::Watch("Service", watcher::Event::Delete(svc("2"))));
        assert_eq!(
            names(&d.handle(Input::CatchUp)),
            [("a".into(), DriftChange::Deleted)]
        );
        // Re-created by the operator: nothing left to catch up.
        d.handle(Input::Watch("Service", watcher::Event::Apply(svc("3"))));
        assert!(d.handle(Input::CatchUp).is_empty());
    }

    #[test]
    fn catch_up_re_judges_records_against_the_last_trigger() {
        let mut owners: HashMap<NamespacedName, OwnerState> =
            [(owner("a"), OwnerState::default())].into();
        owners.insert(
            owner("b"),
            OwnerState {
                last_trigger: Timestamp::from_second(50).ok(),
                ..Default::default()
            },
        );
        let mut d = detector(owners);
        listed(&mut d, "StatefulSet", vec![]);
        d.handle(Input::Watch(
            "StatefulSet",
            watcher::Event::Apply(meta("a", "a", "1", vec![entry("kubectl", 40)])),
        ));
        d.handle(Input::Watch(
            "StatefulSet",
            watcher::Event::Apply(meta("b", "b", "1", vec![entry("kubectl", 40)])),
        ));
        assert_eq!(
            names(&d.handle(Input::CatchUp)),
            [("a".into(), DriftChange::Modified)]
        );
    }
}
