//! Properties of the operator's reading of the trigger: any `status` JSON decodes or fails
//! cleanly, a pending trigger is read back exactly as written, and the fast path's gate (a
//! UUID, `fast.rs`) acts on every ID the sentinel's admission policy lets through and on
//! nothing that could forge a log line.

use jiff::Timestamp;
use proptest::prelude::*;
use serde_json::{Map, Value, json};

use super::{StatefulCluster, StatefulClusterStatus};
use crate::{
    contract::{DriftChange, DriftedObject},
    proptest_json::any_json,
    sentinel::trigger::{DriftBurst, status_patch},
};

/// The sentinel's admission policy on `triggerID` (`deploy/sentinel/admission-policy.yaml`).
fn allowed_by_policy(id: &str) -> bool {
    let groups: Vec<&str> = id.split('-').collect();
    let lower_hex = |s: &str| s.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f'));
    groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
        && groups.iter().all(|g| lower_hex(g))
        && groups[2].starts_with('4')
        && groups[3].starts_with(['8', '9', 'a', 'b'])
}

/// What the fast path acts on; anything else it refuses (`refuse_invalid_trigger`).
fn acted_on(id: &str) -> bool {
    crate::contract::is_trigger_id(id)
}

fn cluster(status: StatefulClusterStatus) -> StatefulCluster {
    let spec = serde_json::from_value(json!({"replicas": 1, "image": "db", "version": "1",
        "ports": [{"name": "client", "port": 5432}]}))
    .expect("spec");
    StatefulCluster {
        metadata: Default::default(),
        spec,
        status: Some(status),
    }
}

fn uuid_v4() -> impl Strategy<Value = String> {
    any::<[u8; 16]>().prop_map(|b| uuid::Builder::from_random_bytes(b).into_uuid().to_string())
}

/// IDs a writer may put in `triggerID`: the sentinel's, other UUID notations, near misses,
/// anything printable or not, and huge ones.
fn any_trigger_id() -> impl Strategy<Value = String> {
    prop_oneof![
        uuid_v4(),
        uuid_v4().prop_map(|u| u.to_uppercase()),
        uuid_v4().prop_map(|u| format!("{{{u}}}")),
        uuid_v4().prop_map(|u| format!("urn:uuid:{u}")),
        uuid_v4().prop_map(|u| u.replace('-', "")),
        uuid_v4().prop_map(|u| format!("{u}\nlevel=INFO msg=forged")),
        uuid_v4().prop_map(|u| u[..35].to_string()),
        any::<String>(),
        "[0-9a-f-]{30,40}",
        (".{1,4}", 1usize..100_000).prop_map(|(s, n)| s.repeat(n).chars().take(n).collect()),
        Just(String::new()),
    ]
}

/// A `status.sentinel` whose every field is absent, well-formed or garbage.
fn any_sentinel_status() -> impl Strategy<Value = Value> {
    let id = prop_oneof![
        3 => any_trigger_id().prop_map(Value::from),
        1 => any_json(),
    ];
    let time = prop_oneof![
        Just(json!("2026-01-01T00:00:00.123456Z")),
        Just(json!("2026-01-01T00:00:00Z")),
        any_json(),
    ];
    let fields = (
        prop::option::of(id.clone()),
        prop::option::of(prop_oneof![id, Just(Value::Null)]),
        prop::option::of(time.clone()),
        prop::option::of(time),
        prop::option::of(any_json()),
        prop::option::of(prop_oneof![any::<u32>().prop_map(Value::from), any_json()]),
        prop::option::of(prop_oneof![Just(json!("corrected")), any_json()]),
        prop::option::of(prop_oneof![any::<u64>().prop_map(Value::from), any_json()]),
        any::<bool>(),
    );
    fields.prop_map(
        |(trigger, handled, at, detected, objects, total, outcome, corrections, same)| {
            let mut s = Map::new();
            let mut put = |k: &str, v: Option<Value>| {
                if let Some(v) = v {
                    s.insert(k.into(), v);
                }
            };
            let handled = if same { trigger.clone() } else { handled };
            put("triggerID", trigger);
            put("lastHandledTriggerID", handled);
            put("triggeredAt", at);
            put("detectedAt", detected);
            put("driftedObjects", objects);
            put("driftedTotal", total);
            put("lastOutcome", outcome);
            put("corrections", corrections);
            Value::Object(s)
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Any `status.sentinel` decodes or fails with an error, never a panic; when it decodes,
    /// the pending trigger is exactly its `triggerID` string, when that is non-empty and not
    /// `lastHandledTriggerID`.
    #[test]
    fn any_sentinel_status_is_read_without_panic(sentinel in any_sentinel_status()) {
        let raw = json!({ "sentinel": sentinel });
        let Ok(status) = serde_json::from_value::<StatefulClusterStatus>(raw) else {
            return Ok(());
        };
        let trigger = sentinel.get("triggerID").and_then(Value::as_str);
        let handled = sentinel.get("lastHandledTriggerID").and_then(Value::as_str);
        let expected = trigger.filter(|t| !t.is_empty() && handled != Some(*t));
        let cr = cluster(status);
        prop_assert_eq!(cr.pending_trigger(), expected);
    }

    /// A trigger ID of any content, in an otherwise well-formed status, is read back exactly;
    /// the fast path acts on it when the sentinel's policy allows it, and only when it is a
    /// UUID as the sentinel writes it: 36 characters, lowercase hex digits and `-` (so no
    /// newline or quote reaches a log line as an ID acted on, and one UUID has one spelling).
    #[test]
    fn a_trigger_id_is_read_back_exactly_and_gated(id in any_trigger_id()) {
        let raw = json!({"sentinel": {"triggerID": id, "lastHandledTriggerID": "earlier",
            "corrections": 2}});
        let status: StatefulClusterStatus = serde_json::from_value(raw).expect("well-formed");
        let pending = cluster(status).pending_trigger().map(str::to_string);
        prop_assert_eq!(pending.as_deref(), (!id.is_empty()).then_some(id.as_str()));
        if allowed_by_policy(&id) {
            prop_assert!(acted_on(&id), "{id:?}");
        }
        if acted_on(&id) {
            prop_assert_eq!(id.len(), 36, "{:?}", id);
            prop_assert!(
                id.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f' | '-')),
                "{id:?}"
            );
        }
    }

    /// What the sentinel writes is what the operator reads: the trigger patch, decoded as the
    /// operator's status, gives back the same trigger, pending and acted on.
    #[test]
    fn the_sentinels_trigger_round_trips_to_the_operator(
        objects in prop::collection::vec(("[A-Za-z]{1,12}", "[a-z0-9-]{1,40}", any::<bool>()), 1..40),
        second in 0i64..4_000_000_000,
        micros in 0i32..1_000_000,
    ) {
        let at = Timestamp::new(second, micros * 1000).expect("in range");
        let drifted = |(kind, name, deleted): &(String, String, bool)| DriftedObject {
            kind: kind.clone(),
            name: name.clone(),
            change: if *deleted { DriftChange::Deleted } else { DriftChange::Modified },
        };
        let mut burst = DriftBurst::new(drifted(&objects[0]), &[], at);
        for o in &objects[1..] {
            burst.add(drifted(o), &[]);
        }
        let trigger = burst.to_trigger(at);
        let patch = status_patch(&trigger);
        let status: StatefulClusterStatus =
            serde_json::from_value(patch["status"].clone()).expect("the operator reads it");
        let read = status.sentinel.as_ref().map(|s| s.trigger.clone());
        prop_assert_eq!(read.as_ref(), Some(&trigger));
        let id = trigger.trigger_id.as_deref().expect("an ID");
        let cr = cluster(status);
        prop_assert_eq!(cr.pending_trigger(), Some(id));
        prop_assert!(allowed_by_policy(id) && acted_on(id), "{id}");
    }
}
