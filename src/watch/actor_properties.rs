//! Properties of [`ActorFilter`]: arbitrary managedFields never panic it, a foreign write is
//! never judged ours, and our own write is judged drift only where the module documents the
//! ambiguity.
//!
//! The two attribution properties model what the API server does on one write by manager `W`
//! at second `T` (no earlier than any recorded entry's time: one clock):
//!
//! * entries are unique per (manager, operation, subresource): the server keys them so (and
//!   by apiVersion for Update; the watched kinds serve one);
//! * `W`'s entry gets time `T` and its new field set (an Update adds to its old set, an Apply
//!   sets any set); any other entry may lose fields `W` now owns, and one left empty is
//!   removed; an Apply to an object with no entries adds [`BEFORE_FIRST_APPLY`] at `T`;
//! * the resource version moves; a StatefulSet's generation moves when `W` changed `spec`,
//!   always so when every field `W` owns is under `spec`.

use std::collections::BTreeSet;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    FieldsV1, ManagedFieldsEntry, ObjectMeta, Time,
};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

use super::{ActorFilter, BEFORE_FIRST_APPLY, FirstSight, UNKNOWN_ACTOR, Verdict};
use crate::{proptest_json::any_json, watch::ObjectKey};

const OPERATOR: &str = "kube-sentinel-operator";
const IGNORED: [&str; 3] = [OPERATOR, "kube-sentinel", "kube-controller-manager"];

/// Leaves a field set is drawn from: spec, metadata, status and ConfigMap data.
const LEAVES: [&[&str]; 7] = [
    &["f:spec", "f:replicas"],
    &["f:spec", "f:template", "f:spec", "f:image"],
    &["f:spec", "f:paused"],
    &["f:metadata", "f:labels", "f:tier"],
    &["f:metadata", "f:annotations", "f:mesh.io/status"],
    &["f:status", "f:readyReplicas"],
    &["f:data", "f:settings"],
];

fn filter() -> ActorFilter {
    ActorFilter::new(IGNORED)
}

fn key() -> ObjectKey {
    ObjectKey {
        kind: "StatefulSet",
        namespace: "prod".into(),
        name: "db".into(),
    }
}

/// One entry as the model sees it: the slot, a time and a set of leaves (indices into
/// [`LEAVES`]).
#[derive(Clone, Debug, PartialEq)]
struct Model {
    manager: String,
    operation: &'static str,
    subresource: Option<&'static str>,
    second: Option<i64>,
    leaves: BTreeSet<usize>,
}

impl Model {
    /// The slot as the filter compares it (an empty subresource is the main resource; every
    /// operation but Apply and Update is one).
    fn slot(&self) -> (&str, &'static str, Option<&'static str>) {
        let operation = match self.operation {
            op @ ("Apply" | "Update") => op,
            _ => "other",
        };
        (
            &self.manager,
            operation,
            self.subresource.filter(|s| !s.is_empty()),
        )
    }

    fn spec_only(&self) -> bool {
        !self.leaves.is_empty() && self.leaves.iter().all(|&l| LEAVES[l][0] == "f:spec")
    }

    fn entry(&self) -> ManagedFieldsEntry {
        ManagedFieldsEntry {
            manager: Some(self.manager.clone()),
            operation: Some(self.operation.into()),
            subresource: self.subresource.map(Into::into),
            time: self
                .second
                .map(|s| Time(Timestamp::from_second(s).expect("second in range"))),
            fields_v1: Some(FieldsV1(fields_tree(&self.leaves))),
            api_version: Some("apps/v1".into()),
            fields_type: Some("FieldsV1".into()),
        }
    }
}

/// The fieldsV1 tree of a set of leaves.
fn fields_tree(leaves: &BTreeSet<usize>) -> Value {
    let mut root = Map::new();
    for &leaf in leaves {
        let mut node = &mut root;
        for step in LEAVES[leaf] {
            node = node
                .entry(step.to_string())
                .or_insert_with(|| json!({}))
                .as_object_mut()
                .expect("fieldsV1 nodes are objects");
        }
    }
    Value::Object(root)
}

fn meta(version: u32, generation: Option<i64>, entries: &[Model]) -> ObjectMeta {
    ObjectMeta {
        name: Some("db".into()),
        namespace: Some("prod".into()),
        resource_version: Some(version.to_string()),
        generation,
        managed_fields: Some(entries.iter().map(Model::entry).collect()),
        ..Default::default()
    }
}

fn any_manager() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            OPERATOR,
            "kube-sentinel",
            "kube-controller-manager",
            BEFORE_FIRST_APPLY,
            "kubectl-edit",
            "helm",
            "",
        ])
        .prop_map(String::from),
        "[a-z-]{0,12}",
    ]
}

fn foreign_manager() -> impl Strategy<Value = String> {
    any_manager().prop_filter("foreign", |m| {
        !IGNORED.contains(&m.as_str()) && m != BEFORE_FIRST_APPLY
    })
}

fn any_operation() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec!["Apply", "Update", "Patch", ""])
}

fn any_subresource() -> impl Strategy<Value = Option<&'static str>> {
    prop::sample::select(vec![None, Some(""), Some("status"), Some("scale")])
}

fn leaf_set(min: usize) -> impl Strategy<Value = BTreeSet<usize>> {
    prop::collection::btree_set(0..LEAVES.len(), min..=LEAVES.len())
}

/// Entries as the API server keeps them: one per slot, times within a few seconds.
fn recorded_entries() -> impl Strategy<Value = Vec<Model>> {
    let entry = (
        any_manager(),
        any_operation(),
        any_subresource(),
        prop::option::weighted(0.9, 100i64..104),
        leaf_set(1),
    )
        .prop_map(|(manager, operation, subresource, second, leaves)| Model {
            manager,
            operation,
            subresource,
            second,
            leaves,
        });
    prop::collection::vec(entry, 0..6).prop_map(|mut entries| {
        let mut slots = BTreeSet::new();
        entries.retain(|e| {
            let (m, o, s) = e.slot();
            slots.insert((m.to_string(), o, s))
        });
        entries
    })
}

/// One write: who, how, and what the API server makes of the entries.
#[derive(Clone, Debug)]
struct Write {
    manager: String,
    operation: &'static str,
    subresource: Option<&'static str>,
    /// Seconds after the newest recorded entry (0: the same second).
    later_by: i64,
    /// The fields it sets.
    leaves: BTreeSet<usize>,
    /// Per other entry, the leaves it gives up when `W` owns them (a mask on `leaves`).
    taken: Vec<BTreeSet<usize>>,
    /// Whether the write changed `spec` (where the entry alone does not force it).
    spec_changed: bool,
    /// Whether an Apply to an object with no entries makes the server's entry.
    server_entry: bool,
    /// Whether it rewrites the newest entry of its kind of manager (see [`aim`]), with the
    /// same fields: the same-second corners.
    rewrite: bool,
    same_fields: bool,
}

/// `write` made by the newest of `old`'s entries that `eligible` allows, when it rewrites one.
fn aim(mut write: Write, old: &[Model], eligible: impl Fn(&Model) -> bool) -> Write {
    let newest = old
        .iter()
        .filter(|e| eligible(e) && matches!(e.operation, "Apply" | "Update"))
        .max_by_key(|e| e.second);
    if let Some(e) = newest.filter(|_| write.rewrite) {
        write.manager = e.manager.clone();
        write.operation = e.operation;
        write.subresource = e.subresource.filter(|s| !s.is_empty());
        if write.same_fields {
            write.leaves = e.leaves.clone();
        }
    }
    write
}

fn write_by(
    manager: impl Strategy<Value = String>,
    subresources: Vec<Option<&'static str>>,
) -> impl Strategy<Value = Write> {
    (
        manager,
        prop::sample::select(vec!["Apply", "Update"]),
        prop::sample::select(subresources),
        prop_oneof![2 => Just(0i64), 1 => 1i64..3],
        leaf_set(1),
        prop::collection::vec(leaf_set(0), 6),
        any::<[bool; 4]>(),
    )
        .prop_map(
            |(manager, operation, subresource, later_by, leaves, taken, flags)| {
                let [spec_changed, server_entry, rewrite, same_fields] = flags;
                Write {
                    manager,
                    operation,
                    subresource,
                    later_by,
                    leaves,
                    taken,
                    spec_changed,
                    server_entry,
                    rewrite,
                    same_fields,
                }
            },
        )
}

/// What the entries look like after `write`, and whether its own entry records it.
fn apply_write(old: &[Model], write: &Write) -> (Vec<Model>, bool) {
    let newest = old.iter().filter_map(|e| e.second).max().unwrap_or(100);
    let second = newest + write.later_by;
    let mine = Model {
        manager: write.manager.clone(),
        operation: write.operation,
        subresource: write.subresource,
        second: Some(second),
        leaves: write.leaves.clone(),
    };
    let previous = old.iter().find(|e| e.slot() == mine.slot());
    let mine = match previous {
        Some(p) if write.operation == "Update" => Model {
            leaves: p.leaves.union(&mine.leaves).copied().collect(),
            ..mine
        },
        _ => mine,
    };
    let recorded = match previous {
        None => true,
        Some(p) => match p.second {
            Some(s) if s == second => {
                p.leaves != mine.leaves && mine.leaves.len() >= p.leaves.len()
            }
            _ => true,
        },
    };
    let mut new: Vec<Model> = old
        .iter()
        .zip(&write.taken)
        .filter(|(e, _)| e.slot() != mine.slot())
        .filter_map(|(e, taken)| {
            let lost: BTreeSet<usize> = taken.intersection(&mine.leaves).copied().collect();
            let leaves: BTreeSet<usize> = e.leaves.difference(&lost).copied().collect();
            (!leaves.is_empty()).then(|| Model {
                leaves,
                ..e.clone()
            })
        })
        .collect();
    if old.is_empty() && write.operation == "Apply" && write.server_entry {
        new.push(Model {
            manager: BEFORE_FIRST_APPLY.into(),
            operation: "Update",
            subresource: None,
            second: Some(second),
            leaves: write.leaves.clone(),
        });
    }
    new.push(mine);
    (new, recorded)
}

fn next_generation(generation: Option<i64>, write: &Write, mine: &Model) -> Option<i64> {
    let changed = mine.spec_only() || write.spec_changed;
    generation.map(|g| if changed { g + 1 } else { g })
}

/// A managedFields entry as a client may send it: any field missing or of an odd shape, times
/// whole, fractional, malformed or far out, fieldsV1 any JSON.
fn raw_entry() -> impl Strategy<Value = Value> {
    let time = prop_oneof![
        Just(Value::Null),
        (0i64..4_000_000_000)
            .prop_map(|s| json!(Timestamp::from_second(s).expect("in range").to_string())),
        (0i64..4_000_000_000, 0u32..1_000_000).prop_map(|(s, us)| json!(format!(
            "{}",
            Timestamp::new(s, (us * 1000) as i32).expect("in range")
        ))),
        Just(json!("2026-13-40T99:99:99Z")),
        Just(json!("yesterday")),
        Just(json!(17)),
    ];
    let fields = prop_oneof![
        Just(Value::Null),
        leaf_set(0).prop_map(|l| fields_tree(&l)),
        any_json(),
    ];
    (
        prop::option::of(any_manager()),
        prop::option::of(any_operation()),
        prop::option::of(any_subresource()),
        time,
        fields,
    )
        .prop_map(|(manager, operation, subresource, time, fields)| {
            let mut entry = Map::new();
            let mut put = |k: &str, v: Option<Value>| {
                if let Some(v) = v.filter(|v| !v.is_null()) {
                    entry.insert(k.into(), v);
                }
            };
            put("manager", manager.map(Value::from));
            put("operation", operation.map(Value::from));
            put("subresource", subresource.flatten().map(Value::from));
            put("time", Some(time));
            put("fieldsV1", Some(fields));
            Value::Object(entry)
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    /// A write by a manager outside the ignore set, not through `status`, is drift: the
    /// verdict names the writer, or [`UNKNOWN_ACTOR`]; never "ignored".
    #[test]
    fn a_foreign_write_is_never_judged_ours(
        old in recorded_entries(),
        write in write_by(foreign_manager(), vec![None, Some("scale")]),
        generation in prop::option::of(1i64..5),
    ) {
        let write = aim(write, &old, |e| {
            !IGNORED.contains(&e.manager.as_str())
                && e.manager != BEFORE_FIRST_APPLY
                && e.subresource != Some("status")
        });
        let mut f = filter();
        f.observe(&key(), &meta(1, generation, &old), FirstSight::Created);
        let (new, _) = apply_write(&old, &write);
        let mine = new.last().expect("the write's entry");
        let generation = next_generation(generation, &write, mine);
        let verdict = f.observe(&key(), &meta(2, generation, &new), FirstSight::Created);
        let Verdict::Drift { managers } = &verdict else {
            return Err(TestCaseError::fail(format!("judged ours: {verdict:?}")));
        };
        prop_assert!(
            managers.contains(&write.manager) || managers == &[UNKNOWN_ACTOR.to_string()],
            "{managers:?}"
        );
    }

    /// A write by an ignored manager (the operator, the sentinel, a system manager) is not
    /// drift when its entry records it (new, time moved on, or a changed set not smaller in
    /// the same second). A same-second rewrite that leaves its entry looking unchanged cannot
    /// be told from a foreign one (module docs): it may be drift only as the docs say, by
    /// [`UNKNOWN_ACTOR`] when an entry vanished or the server's entry shares the newest second
    /// with no Apply there, or naming managers that all have an entry in the newest second.
    #[test]
    fn our_own_write_is_not_drift(
        old in recorded_entries(),
        write in write_by(
            prop::sample::select(IGNORED.to_vec()).prop_map(String::from),
            vec![None, Some("status"), Some("scale")],
        ),
        generation in prop::option::of(1i64..5),
    ) {
        let write = aim(write, &old, |e| IGNORED.contains(&e.manager.as_str()));
        let mut f = filter();
        f.observe(&key(), &meta(1, generation, &old), FirstSight::Created);
        let (new, recorded) = apply_write(&old, &write);
        let mine = new.last().expect("the write's entry");
        let generation = next_generation(generation, &write, mine);
        let verdict = f.observe(&key(), &meta(2, generation, &new), FirstSight::Created);
        if recorded {
            prop_assert!(matches!(verdict, Verdict::Ignored(_)), "{verdict:?}");
        } else if let Verdict::Drift { managers } = &verdict {
            let vanished = old.iter().any(|o| !new.iter().any(|n| n.slot() == o.slot()));
            let newest = new.iter().filter_map(|e| e.second).max();
            let at_newest: Vec<&Model> = new.iter().filter(|e| e.second == newest).collect();
            let server_alone = at_newest.iter().any(|e| e.manager == BEFORE_FIRST_APPLY)
                && !at_newest
                    .iter()
                    .any(|e| e.operation == "Apply" && e.manager != BEFORE_FIRST_APPLY);
            let unknown = managers == &[UNKNOWN_ACTOR.to_string()];
            let all_newest = managers
                .iter()
                .all(|m| at_newest.iter().any(|e| &e.manager == m));
            prop_assert!(
                unknown && (vanished || server_alone) || all_newest,
                "{verdict:?}"
            );
        }
    }

    /// First sight: an object created while the filter runs is drift exactly when a foreign
    /// entry is among its entries (or the server's entry without an Apply); one found by a list
    /// is drift when a foreign entry is no older than the last trigger's second.
    #[test]
    fn first_sight_judges_every_foreign_entry(
        entries in recorded_entries(),
        after in prop::option::of(99i64..105),
    ) {
        let foreign = |e: &Model| {
            e.subresource != Some("status")
                && e.manager != BEFORE_FIRST_APPLY
                && !IGNORED.contains(&e.manager.as_str())
        };
        let server_alone = entries.iter().any(|e| e.manager == BEFORE_FIRST_APPLY)
            && !entries.iter().any(|e| e.operation == "Apply" && e.manager != BEFORE_FIRST_APPLY);
        let created = filter().observe(&key(), &meta(1, None, &entries), FirstSight::Created);
        prop_assert_eq!(
            matches!(created, Verdict::Drift { .. }),
            entries.iter().any(foreign) || server_alone
        );
        let since = after.map(|s| Timestamp::from_second(s).expect("in range"));
        let listed = filter().observe(&key(), &meta(1, None, &entries), FirstSight::Listed(since));
        let newer_foreign = entries
            .iter()
            .any(|e| foreign(e) && after.is_none_or(|a| e.second.is_some_and(|s| s >= a)));
        if newer_foreign {
            prop_assert!(matches!(listed, Verdict::Drift { .. }), "{listed:?}");
        }
    }

    /// Any managedFields a client can send (entries `{}`, odd times, any fieldsV1) never
    /// panics the filter, over a sequence of observations; an observation repeated as is
    /// (a relist) is never drift.
    #[test]
    fn any_managed_fields_are_judged_without_panic(
        lists in prop::collection::vec(prop::collection::vec(raw_entry(), 0..5), 1..4),
        listed in any::<bool>(),
    ) {
        let mut f = filter();
        let first = if listed { FirstSight::Listed(None) } else { FirstSight::Created };
        for (version, entries) in lists.into_iter().enumerate() {
            let raw = json!({"name": "db", "namespace": "prod",
                "resourceVersion": version.to_string(), "managedFields": entries});
            // A malformed time fails decoding in the watch, before the filter sees it.
            let Ok(meta) = serde_json::from_value::<ObjectMeta>(raw) else { continue };
            f.observe(&key(), &meta, first);
            let again = f.observe(&key(), &meta, first);
            prop_assert!(matches!(again, Verdict::Ignored(_)), "{again:?}");
            let _ = f.foreign_since(&key(), Timestamp::from_second(100).ok());
        }
        prop_assert!(f.forget(&key()).is_none());
    }
}
