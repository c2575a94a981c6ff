//! Properties of the detect stage: a resource's debounce timing stays in the schema's bounds
//! whatever its `spec.sentinel` holds, and any sequence of watch events yields drift only for
//! owners that want triggers, naming foreign managers only.

use std::{collections::HashMap, time::Duration};

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    FieldsV1, ManagedFieldsEntry, ObjectMeta, OwnerReference, Time,
};
use kube::runtime::watcher;
use prometheus_client::registry::Registry;
use proptest::prelude::*;
use serde_json::json;

use super::{Detector, Input, TimingDefaults};
use crate::{
    contract::{
        DebounceModeSpec, DriftChange, INSTANCE_LABEL, OPERATOR_FIELD_MANAGER, SentinelSpec,
    },
    sentinel::{inputs::WATCHED_KINDS, metrics::SentinelMetrics, owner_state::OwnerState},
    stream::DebounceMode,
    watch::{NamespacedName, OwnerKind, actor::ActorFilter},
};

const IGNORED: [&str; 3] = [
    OPERATOR_FIELD_MANAGER,
    "kube-sentinel",
    "kube-controller-manager",
];
const OWNERS: [&str; 4] = ["a", "b", "c", "gone"];

fn defaults() -> TimingDefaults {
    TimingDefaults {
        window: Duration::from_secs(2),
        max_wait: Duration::from_secs(10),
        mode: DebounceMode::Trailing,
    }
}

fn owner_state() -> impl Strategy<Value = OwnerState> {
    (
        any::<bool>(),
        prop::option::of(any::<bool>()),
        any::<bool>(),
        prop::option::of(95i64..110),
    )
        .prop_map(|(paused, enabled, deleting, last)| OwnerState {
            paused,
            sentinel: SentinelSpec {
                enabled,
                ..Default::default()
            },
            deleting,
            last_trigger: last.and_then(|s| Timestamp::from_second(s).ok()),
        })
}

fn entry() -> impl Strategy<Value = ManagedFieldsEntry> {
    (
        prop::sample::select(vec![
            IGNORED[0], IGNORED[1], IGNORED[2], "kubectl", "helm", "",
        ]),
        prop::sample::select(vec!["Apply", "Update"]),
        prop::sample::select(vec![None, Some("status"), Some("scale")]),
        prop::option::weighted(0.9, 95i64..110),
        prop::sample::select(vec!["f:spec", "f:metadata", "f:status", "f:data"]),
    )
        .prop_map(
            |(manager, operation, sub, second, top)| ManagedFieldsEntry {
                manager: Some(manager.into()),
                operation: Some(operation.into()),
                subresource: sub.map(Into::into),
                time: second
                    .and_then(|s| Timestamp::from_second(s).ok())
                    .map(Time),
                fields_v1: Some(FieldsV1(json!({ top: {"f:x": {}} }))),
                ..Default::default()
            },
        )
}

fn meta() -> impl Strategy<Value = ObjectMeta> {
    (
        prop::sample::select(vec!["db", "db-headless", "cfg"]),
        prop::sample::select(vec!["prod", ""]),
        prop::option::of(prop::sample::select(OWNERS.to_vec())),
        prop::option::of((prop::sample::select(OWNERS.to_vec()), any::<bool>())),
        0u8..4,
        prop::collection::vec(entry(), 0..4),
    )
        .prop_map(
            |(name, namespace, instance, reference, version, entries)| ObjectMeta {
                name: Some(name.into()),
                namespace: Some(namespace.into()),
                resource_version: Some(version.to_string()),
                labels: instance.map(|o| [(INSTANCE_LABEL.to_owned(), o.to_owned())].into()),
                owner_references: reference.map(|(o, controller)| {
                    vec![OwnerReference {
                        api_version: "kube-sentinel.dev/v1alpha1".into(),
                        kind: "StatefulCluster".into(),
                        name: o.into(),
                        controller: Some(controller),
                        ..Default::default()
                    }]
                }),
                managed_fields: Some(entries),
                ..Default::default()
            },
        )
}

/// An [`Input`], as a value proptest can clone.
#[derive(Clone, Debug)]
enum Step {
    CatchUp,
    Beat,
    Init(&'static str),
    InitApply(&'static str, ObjectMeta),
    InitDone(&'static str),
    Apply(&'static str, ObjectMeta),
    Delete(&'static str, ObjectMeta),
}

impl Step {
    fn input(self) -> Input {
        match self {
            Step::CatchUp => Input::CatchUp,
            Step::Beat => Input::Beat,
            Step::Init(k) => Input::Watch(k, watcher::Event::Init),
            Step::InitApply(k, m) => Input::Watch(k, watcher::Event::InitApply(m)),
            Step::InitDone(k) => Input::Watch(k, watcher::Event::InitDone),
            Step::Apply(k, m) => Input::Watch(k, watcher::Event::Apply(m)),
            Step::Delete(k, m) => Input::Watch(k, watcher::Event::Delete(m)),
        }
    }
}

fn step() -> impl Strategy<Value = Step> {
    let kind = prop::sample::select(WATCHED_KINDS.to_vec());
    prop_oneof![
        1 => Just(Step::CatchUp),
        1 => Just(Step::Beat),
        1 => kind.clone().prop_map(Step::Init),
        1 => kind.clone().prop_map(Step::InitDone),
        3 => (kind.clone(), meta()).prop_map(|(k, m)| Step::InitApply(k, m)),
        6 => (kind.clone(), meta()).prop_map(|(k, m)| Step::Apply(k, m)),
        2 => (kind, meta()).prop_map(|(k, m)| Step::Delete(k, m)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Whatever `spec.sentinel` sets, the window is 1–60 s, the max wait between the window
    /// and 300 s, and an unset value takes the default.
    #[test]
    fn timing_stays_in_the_schemas_bounds(
        window in prop::option::of(any::<u32>()),
        max_wait in prop::option::of(any::<u32>()),
        leading in prop::option::of(any::<bool>()),
    ) {
        let spec = SentinelSpec {
            debounce_window_seconds: window,
            max_wait_seconds: max_wait,
            mode: leading.map(|l| if l { DebounceModeSpec::Leading } else { DebounceModeSpec::Trailing }),
            ..Default::default()
        };
        let timing = defaults().for_spec(&spec);
        let max = timing.max_wait.expect("always bounded");
        prop_assert!((1..=60).contains(&timing.window.as_secs()), "{timing:?}");
        prop_assert!(timing.window <= max && max <= Duration::from_secs(300), "{timing:?}");
        if window.is_none() {
            prop_assert_eq!(timing.window, defaults().window);
        }
        let mode = match leading {
            Some(true) => DebounceMode::LeadingTrailing,
            Some(false) => DebounceMode::Trailing,
            None => defaults().mode,
        };
        prop_assert_eq!(timing.mode, mode);
    }

    /// Any sequence of watch events (lists, relists, deletions, catch-ups, any owner
    /// references and managedFields) is handled without a panic; every drift event is for an
    /// owner that exists and wants triggers, and a modification names foreign managers only.
    #[test]
    fn any_events_yield_drift_only_for_willing_owners_and_foreign_managers(
        states in prop::collection::vec(owner_state(), 3),
        steps in prop::collection::vec(step(), 1..30),
    ) {
        let owners: HashMap<NamespacedName, OwnerState> = OWNERS[..3]
            .iter()
            .zip(states)
            .map(|(o, s)| (NamespacedName::new("prod", *o), s))
            .collect();
        let mut detector = Detector::new(
            ActorFilter::new(IGNORED),
            OwnerKind::default(),
            owners.clone(),
            defaults(),
            SentinelMetrics::register(&mut Registry::default()),
        );
        for step in steps {
            for event in detector.handle(step.input()) {
                let state = owners.get(&event.owner);
                prop_assert!(state.is_some_and(OwnerState::wants_triggers), "{event:?}");
                prop_assert!(WATCHED_KINDS.contains(&event.object.kind.as_str()));
                if event.object.change == DriftChange::Modified {
                    prop_assert!(!event.managers.is_empty(), "{event:?}");
                    prop_assert!(
                        event.managers.iter().all(|m| !IGNORED.contains(&m.as_str())),
                        "{event:?}"
                    );
                }
            }
        }
    }
}
