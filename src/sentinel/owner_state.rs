//! What the sentinel reads from an owning custom resource.
//!
//! What the sentinel reads from an owning custom resource: pause flag, `spec.sentinel`,
//! deletion and last trigger ([`OwnerState`]).

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::DynamicObject;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::refusal::Refusal;
use crate::contract::SentinelSpec;

/// What the sentinel reads from a custom resource.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OwnerState {
    /// `spec.paused`: people are working by hand; no triggers.
    pub paused: bool,
    /// `spec.sentinel`.
    pub sentinel: SentinelSpec,
    /// Being deleted: deletions of its objects are garbage collection, not drift.
    pub deleting: bool,
    /// The later of `status.sentinel.triggeredAt` and `lastHandledAt`: drift older than this
    /// was already triggered.
    pub last_trigger: Option<Timestamp>,
}

/// The field `name` of `object` as a `T`; `None` when absent or of another shape.
fn field<T: DeserializeOwned>(object: Option<&Value>, name: &str) -> Option<T> {
    T::deserialize(object?.get(name)?).ok()
}

/// The field `name` of `object` as a `T` built from its sub-fields of the right shape (the
/// others treated as absent); the default when absent or not an object.
fn field_by_field<T: DeserializeOwned + Default>(object: Option<&Value>, name: &str) -> T {
    let Some(value) = object.and_then(|o| o.get(name)) else {
        return T::default();
    };
    if let Ok(whole) = T::deserialize(value) {
        return whole;
    }
    // Only a malformed object pays for the copies.
    let Value::Object(fields) = value else {
        return T::default();
    };
    let well_formed: serde_json::Map<String, Value> = fields
        .iter()
        .filter(|(key, v)| {
            let alone = Value::Object([((*key).clone(), (*v).clone())].into_iter().collect());
            T::deserialize(alone).is_ok()
        })
        .map(|(key, v)| (key.clone(), v.clone()))
        .collect();
    T::deserialize(Value::Object(well_formed)).unwrap_or_default()
}

impl OwnerState {
    /// Reads a custom resource leniently: a field of the wrong shape is treated as absent
    /// (the CRD's schema is what rejects bad specs; the sentinel must not stop on one).
    pub fn from_object(obj: &DynamicObject) -> Self {
        // Field by field: one of the wrong shape must not take its neighbours with it.
        let spec = obj.data.get("spec");
        let status = obj.data.get("status").and_then(|s| s.get("sentinel"));
        let last_trigger = [
            field::<MicroTime>(status, "triggeredAt"),
            field::<MicroTime>(status, "lastHandledAt"),
        ]
        .into_iter()
        .flatten()
        .map(|t| t.0)
        .max();
        Self {
            paused: field(spec, "paused").unwrap_or(false),
            sentinel: field_by_field(spec, "sentinel"),
            deleting: obj.metadata.deletion_timestamp.is_some(),
            last_trigger,
        }
    }

    /// Whether drift on this resource's objects should trigger it.
    pub fn wants_triggers(&self) -> bool {
        Refusal::check(Some(self)).is_ok()
    }
}

#[cfg(test)]
#[path = "owner_state_properties.rs"]
mod properties;

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn reads_owner_state_leniently() {
        let obj: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "kube-sentinel.dev/v1alpha1", "kind": "StatefulCluster",
            "metadata": {"name": "a", "namespace": "prod"},
            "spec": {"paused": true, "sentinel": {"debounceWindowSeconds": 5}},
            "status": {"sentinel": {"triggeredAt": "2026-01-01T00:00:10Z", "lastHandledAt": "2026-01-01T00:00:20Z"}}
        }))
        .expect("object");
        let s = OwnerState::from_object(&obj);
        assert!(s.paused && !s.wants_triggers());
        assert_eq!(s.sentinel.debounce_window_seconds, Some(5));
        assert_eq!(s.last_trigger.map(|t| t.as_second()), Some(1_767_225_620));

        let odd: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "kube-sentinel.dev/v1alpha1", "kind": "StatefulCluster",
            "metadata": {"name": "a"},
            "spec": {"paused": "yes", "sentinel": 7},
            "status": {"sentinel": {"triggeredAt": 12}}
        }))
        .expect("object");
        let s = OwnerState::from_object(&odd);
        assert_eq!(s, OwnerState::default());
        assert!(s.wants_triggers());
    }
}
