//! Properties of [`OwnerState::from_object`]: any spec and status are read without a panic,
//! and each field it reads is read on its own, as its documentation says: a field of the wrong
//! shape is absent, and does not take a well-formed neighbour with it.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::DynamicObject;
use proptest::prelude::*;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

use super::OwnerState;
use crate::{contract::SentinelSpec, proptest_json::any_json};

/// A field: absent, well-formed or of any shape.
fn field(valid: impl Strategy<Value = Value>) -> impl Strategy<Value = Option<Value>> {
    prop::option::of(prop_oneof![valid, any_json()])
}

/// `value` read as a `T` on its own.
fn alone<T: DeserializeOwned>(value: &Option<Value>) -> Option<T> {
    value.as_ref().and_then(|v| T::deserialize(v).ok())
}

fn put(into: &mut Map<String, Value>, name: &str, value: &Option<Value>) {
    if let Some(v) = value {
        into.insert(name.into(), v.clone());
    }
}

fn sentinel_spec() -> impl Strategy<Value = Value> {
    (prop::option::of(any::<bool>()), prop::option::of(1u32..=60)).prop_map(|(enabled, window)| {
        let spec = SentinelSpec {
            enabled,
            debounce_window_seconds: window,
            ..Default::default()
        };
        serde_json::to_value(&spec).expect("serializes")
    })
}

fn time() -> impl Strategy<Value = Value> {
    (0i64..4_000_000_000, 0i32..1_000_000)
        .prop_map(|(s, us)| json!(Timestamp::new(s, us * 1000).expect("in range").to_string()))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// `paused`, `sentinel`, `triggeredAt` and `lastHandledAt` are each read as written when
    /// well-formed and as absent otherwise, whatever their neighbours hold; other fields of
    /// any shape change nothing.
    #[test]
    fn each_field_is_read_on_its_own(
        paused in field(any::<bool>().prop_map(Value::from)),
        sentinel in field(sentinel_spec()),
        triggered in field(time()),
        handled in field(time()),
        noise in any_json(),
    ) {
        let mut spec = Map::new();
        put(&mut spec, "paused", &paused);
        put(&mut spec, "sentinel", &sentinel);
        spec.insert("replicas".into(), noise.clone());
        let mut status = Map::new();
        put(&mut status, "triggeredAt", &triggered);
        put(&mut status, "lastHandledAt", &handled);
        status.insert("triggerID".into(), noise);
        let object: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "kube-sentinel.dev/v1alpha1", "kind": "StatefulCluster",
            "metadata": {"name": "db", "namespace": "prod"},
            "spec": spec, "status": {"sentinel": status},
        }))
        .expect("an object");
        let state = OwnerState::from_object(&object);
        prop_assert_eq!(state.paused, alone::<bool>(&paused).unwrap_or(false));
        prop_assert_eq!(state.sentinel, alone::<SentinelSpec>(&sentinel).unwrap_or_default());
        let last = [alone::<MicroTime>(&triggered), alone::<MicroTime>(&handled)]
            .into_iter()
            .flatten()
            .map(|t| t.0)
            .max();
        prop_assert_eq!(state.last_trigger, last);
    }

    /// Any spec and status, or none: read without a panic.
    #[test]
    fn any_object_is_read_without_panic(spec in any_json(), status in any_json()) {
        let object: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "kube-sentinel.dev/v1alpha1", "kind": "StatefulCluster",
            "metadata": {"name": "db", "namespace": "prod"},
            "spec": spec, "status": status,
        }))
        .expect("an object");
        let state = OwnerState::from_object(&object);
        let _ = state.wants_triggers();
    }
}

fn owner(spec: Value, sentinel_status: Value) -> OwnerState {
    let object: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "kube-sentinel.dev/v1alpha1", "kind": "StatefulCluster",
        "metadata": {"name": "db", "namespace": "prod"},
        "spec": spec, "status": {"sentinel": sentinel_status},
    }))
    .expect("an object");
    OwnerState::from_object(&object)
}

/// Shrunk from `each_field_is_read_on_its_own`: an odd `lastHandledAt` lost a well-formed
/// `triggeredAt`, so a restart judged listed objects against no trigger at all.
#[test]
fn an_odd_last_handled_at_keeps_the_triggered_at() {
    let state = owner(
        json!({}),
        json!({"triggeredAt": "1970-01-01T00:00:00Z", "lastHandledAt": false}),
    );
    assert_eq!(state.last_trigger, Some(Timestamp::UNIX_EPOCH));
}

/// The same defect on the spec: an odd `paused` lost `spec.sentinel`, so a resource that
/// turned the sentinel off got triggers.
#[test]
fn an_odd_paused_keeps_the_sentinel_spec() {
    let state = owner(
        json!({"paused": "yes", "sentinel": {"enabled": false}}),
        json!({}),
    );
    assert_eq!(state.sentinel.enabled, Some(false));
    assert!(!state.paused && !state.wants_triggers());
}

/// The same defect one level down: an odd field of `spec.sentinel` lost its neighbours, so
/// `enabled: false` beside an odd window got triggers.
#[test]
fn an_odd_sentinel_field_keeps_its_neighbours() {
    let state = owner(
        json!({"sentinel": {"enabled": false, "debounceWindowSeconds": "five",
            "ignore": [{"kind": 7}], "maxWaitSeconds": 20}}),
        json!({}),
    );
    assert_eq!(state.sentinel.enabled, Some(false));
    assert_eq!(state.sentinel.max_wait_seconds, Some(20));
    assert_eq!(state.sentinel.debounce_window_seconds, None);
    assert!(state.sentinel.ignore.is_empty());
    assert!(!state.wants_triggers());
}
