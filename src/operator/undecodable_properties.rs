//! Properties of decoding a StatefulCluster: any spec or status JSON decodes or is refused with
//! an error naming the part, never a panic; every integer the CRD's schema admits decodes, and
//! one beyond its Rust type is refused.

use std::sync::OnceLock;

use proptest::prelude::*;
use serde_json::{Value, json};

use super::decoded;
use crate::operator::crd::crd;

fn object(spec: Value, status: Value) -> Value {
    json!({"apiVersion": "kube-sentinel.dev/v1alpha1", "kind": "StatefulCluster",
        "metadata": {"name": "db", "namespace": "prod", "resourceVersion": "1"},
        "spec": spec, "status": status})
}

/// A spec and a status with every integer field set to a valid value.
fn full_object() -> Value {
    object(
        json!({"replicas": 3, "image": "db", "version": "1", "ports": [{"name": "c", "port": 1}],
            "tls": {"enabled": true, "validityDays": 90, "rotateBeforeDays": 30},
            "backup": {"intervalMinutes": 60, "retention": 3},
            "sentinel": {"debounceWindowSeconds": 2, "maxWaitSeconds": 10,
                "fightBackoff": {"reverts": 3, "withinSeconds": 30, "maxDelaySeconds": 300}}}),
        json!({"observedGeneration": 1, "readyReplicas": 1,
            "upgrade": {"phase": "Idle", "partition": 0, "completed": 0},
            "certificate": {"issued": 1}, "sentinel": {"driftedTotal": 1, "corrections": 0}}),
    )
}

const I32: (i128, i128) = (i32::MIN as i128, i32::MAX as i128);
const U32: (i128, i128) = (0, u32::MAX as i128);

/// Every integer field: where it is in the object, and the range of its Rust type.
const INTEGERS: [(&str, (i128, i128)); 17] = [
    ("/spec/replicas", I32),
    ("/spec/ports/0/port", I32),
    ("/spec/tls/validityDays", U32),
    ("/spec/tls/rotateBeforeDays", U32),
    ("/spec/backup/intervalMinutes", U32),
    ("/spec/backup/retention", U32),
    ("/spec/sentinel/debounceWindowSeconds", U32),
    ("/spec/sentinel/maxWaitSeconds", U32),
    ("/spec/sentinel/fightBackoff/reverts", U32),
    ("/spec/sentinel/fightBackoff/withinSeconds", U32),
    ("/spec/sentinel/fightBackoff/maxDelaySeconds", U32),
    (
        "/status/observedGeneration",
        (i64::MIN as i128, i64::MAX as i128),
    ),
    ("/status/readyReplicas", I32),
    ("/status/upgrade/partition", I32),
    ("/status/upgrade/completed", U32),
    ("/status/certificate/issued", U32),
    ("/status/sentinel/corrections", (0, u64::MAX as i128)),
];

/// The CRD schema's bounds of the field at `pointer` (an object's JSON Pointer); the API
/// server's int64 where the schema sets none.
fn schema_bounds(pointer: &str) -> (i128, i128) {
    static SCHEMA: OnceLock<Value> = OnceLock::new();
    let schema = SCHEMA.get_or_init(|| serde_json::to_value(crd()).expect("CRD serializes"));
    let mut at = "/spec/versions/0/schema/openAPIV3Schema".to_string();
    for segment in pointer.split('/').skip(1) {
        if segment.parse::<usize>().is_ok() {
            at.push_str("/items");
        } else {
            at.push_str("/properties/");
            at.push_str(segment);
        }
    }
    let field = schema.pointer(&at).expect("the field is in the schema");
    let bound = |name: &str, default: i64| {
        field
            .get(name)
            .and_then(Value::as_f64)
            .map_or(i128::from(default), |b| b as i128)
    };
    (bound("minimum", i64::MIN), bound("maximum", i64::MAX))
}

/// An integer as JSON: exact within i64 and u64, a float beyond.
fn number(n: i128) -> Value {
    i64::try_from(n)
        .map(Value::from)
        .or_else(|_| u64::try_from(n).map(Value::from))
        .unwrap_or_else(|_| json!(n as f64))
}

/// Integers near every bound that matters, and anywhere.
fn any_integer() -> impl Strategy<Value = i128> {
    let edges: Vec<i128> = [
        0,
        1,
        15,
        16,
        65_535,
        65_536,
        i128::from(i32::MAX),
        i128::from(u32::MAX),
        9_007_199_254_740_991,
        i128::from(i64::MAX),
        i128::from(u64::MAX),
    ]
    .into_iter()
    .flat_map(|e| [e - 1, e, e + 1, -e - 1, -e])
    .collect();
    prop_oneof![
        prop::sample::select(edges),
        any::<i64>().prop_map(i128::from),
        any::<u64>().prop_map(i128::from),
        (-100i128..100_000),
    ]
}

/// Any JSON value, nested a few levels, with the keys the spec and status have.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any_integer().prop_map(number),
        any::<f64>().prop_map(|f| json!(f)),
        ".{0,12}".prop_map(Value::from),
        prop::sample::select(vec!["Rolling", "BlueGreen", "Idle", "corrected", "1.4.2"])
            .prop_map(Value::from),
    ];
    let key = prop::sample::select(vec![
        "replicas",
        "image",
        "version",
        "config",
        "ports",
        "name",
        "port",
        "tls",
        "enabled",
        "upgrade",
        "strategy",
        "backup",
        "sentinel",
        "paused",
        "conditions",
        "phase",
        "triggerID",
        "ignore",
        "kind",
        "paths",
        "certificate",
        "issued",
        "x",
    ]);
    leaf.prop_recursive(4, 32, 5, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(key.clone(), inner, 0..5).prop_map(|m| {
                Value::Object(m.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
            }),
        ]
    })
}

fn decode(raw: Value) -> Result<(), String> {
    let object = serde_json::from_value(raw).expect("a DynamicObject");
    decoded(&object).map(drop)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Any spec and status, or either one well-formed beside garbage: a StatefulCluster or an
    /// error naming the part that does not decode.
    #[test]
    fn any_spec_and_status_decode_or_name_the_part(
        spec in any_json(),
        status in any_json(),
        keep in 0u8..3,
    ) {
        let full = full_object();
        let (spec, status) = match keep {
            0 => (full["spec"].clone(), status),
            1 => (spec, full["status"].clone()),
            _ => (spec, status),
        };
        if let Err(error) = decode(object(spec, status)) {
            let named = error.starts_with("spec: ") || error.starts_with("status: ");
            prop_assert!(named, "{error}");
            if keep == 0 {
                prop_assert!(error.starts_with("status: "), "{error}");
            }
            if keep == 1 {
                prop_assert!(error.starts_with("spec: "), "{error}");
            }
        }
    }

    /// An integer field: a value the CRD's schema admits always decodes (no stored object the
    /// API server accepts can be undecodable), and one beyond the field's Rust type is refused
    /// with the part named.
    #[test]
    fn integers_in_the_schema_decode_and_beyond_the_type_are_refused(
        field in prop::sample::select(INTEGERS.to_vec()),
        n in any_integer(),
    ) {
        let (pointer, (type_min, type_max)) = field;
        let (schema_min, schema_max) = schema_bounds(pointer);
        let mut raw = full_object();
        *raw.pointer_mut(pointer).expect("the field") = number(n);
        let result = decode(raw);
        if (schema_min..=schema_max).contains(&n) {
            prop_assert!(result.is_ok(), "{pointer} = {n}: {result:?}");
        }
        if !(type_min..=type_max).contains(&n) {
            let part = if pointer.starts_with("/spec") { "spec: " } else { "status: " };
            let error = result.expect_err("beyond the type");
            prop_assert!(error.starts_with(part), "{pointer} = {n}: {error}");
        }
    }
}
