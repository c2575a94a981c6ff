//! The `status.sentinel` contract between the sentinel and an operator.
//!
//! The sentinel serves any custom resource whose status follows this contract; this crate's
//! operator and its [`StatefulCluster`](crate::operator::crd::StatefulCluster) are the
//! default. The two programs meet only here (and share the Kubernetes layer in
//! [`watch`](crate::watch)). Field names are the JSON names on the wire.
//!
//! * `spec.sentinel` ([`SentinelSpec`]) and `spec.paused` are read by the sentinel to decide
//!   whether and how fast to trigger.
//! * `status.sentinel.{triggerID, triggeredAt, detectedAt, driftedObjects, driftedTotal}`
//!   ([`SentinelTrigger`]) are written by the sentinel only, with its own field manager.
//! * `status.sentinel.{lastHandledTriggerID, lastHandledAt, lastOutcome, revertedObjects,
//!   corrections}` are written by the operator only.
//!
//! A resource needs the operator's attention when `triggerID` is set and differs from
//! `lastHandledTriggerID` ([`is_pending`]).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// API group of the operator's custom resource.
pub const DEFAULT_GROUP: &str = "kube-sentinel.dev";
/// API version of the operator's custom resource.
pub const DEFAULT_VERSION: &str = "v1alpha1";
/// Kind of the operator's custom resource.
pub const DEFAULT_KIND: &str = "StatefulCluster";
/// Plural resource name of the operator's custom resource.
pub const DEFAULT_PLURAL: &str = "statefulclusters";

/// Label that marks the objects an operator manages; the sentinel's default watch selector
/// is `app.kubernetes.io/managed-by=kube-sentinel-operator`.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// Value of [`MANAGED_BY_LABEL`] on objects managed by this crate's operator.
pub const MANAGED_BY_VALUE: &str = "kube-sentinel-operator";
/// Label naming the owning custom resource; the fallback when an object has no controller
/// `ownerReference`.
pub const INSTANCE_LABEL: &str = "app.kubernetes.io/instance";
/// Field manager of every write the operator makes.
pub const OPERATOR_FIELD_MANAGER: &str = "kube-sentinel-operator";
/// Field manager of the sentinel's only write, the trigger.
pub const SENTINEL_FIELD_MANAGER: &str = "kube-sentinel";
/// Most drifted objects named in one trigger; [`SentinelTrigger::drifted_total`] counts all.
pub const MAX_DRIFTED_OBJECTS: usize = 16;

/// `spec.sentinel`: how the sentinel treats one custom resource.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SentinelSpec {
    /// Whether drift on this resource's objects triggers the operator (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Quiet period after the last drift event before the trigger is written, 1–60 s
    /// (default 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 60))]
    pub debounce_window_seconds: Option<u32>,
    /// `trailing` (default): trigger after the window is quiet. `leading`: trigger at once on
    /// the first drift, then at most once more if drift continued within the window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<DebounceModeSpec>,
    /// Longest a burst of drift can delay its trigger, 1–300 s (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 300))]
    pub max_wait_seconds: Option<u32>,
    /// `revert` (the operator's `--drift-action`, itself `revert` by default): drift is
    /// reverted. `warn`: drift is reported (a Warning Event naming the objects and the foreign
    /// managers, the trigger acknowledged `detected`) and left in place.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<DriftAction>,
    /// Fields left alone: a change whose written fields all fall under these rules is not
    /// drift, and a revert does not take them back (at most 16 rules).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub ignore: Vec<IgnoreRule>,
    /// How reverts of one object back off while one foreign manager keeps re-drifting it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fight_backoff: Option<FightBackoffSpec>,
}

/// `spec.sentinel.action`: what drift leads to.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema, clap::ValueEnum,
)]
#[serde(rename_all = "camelCase")]
pub enum DriftAction {
    /// Revert it.
    Revert,
    /// Report it and leave it in place.
    Warn,
}

/// Kinds an ignore rule applies to: those the sentinel watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum IgnoredKind {
    /// `apps/v1` StatefulSet.
    StatefulSet,
    /// `v1` Service.
    Service,
    /// `v1` ConfigMap.
    ConfigMap,
}

impl IgnoredKind {
    /// The kind's name, as in `kind:` of an object.
    pub fn as_str(self) -> &'static str {
        match self {
            IgnoredKind::StatefulSet => "StatefulSet",
            IgnoredKind::Service => "Service",
            IgnoredKind::ConfigMap => "ConfigMap",
        }
    }
}

/// One rule of `spec.sentinel.ignore`: fields of objects of one kind (and name) left alone.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IgnoreRule {
    /// Kind of the objects.
    pub kind: IgnoredKind,
    /// Name of the object; every object of the kind when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub name: Option<String>,
    /// JSON Pointers to the fields, each covering what is under it (`/spec/replicas`,
    /// `/metadata/annotations/sidecar.istio.io~1status`); a segment `*` matches any key or
    /// list item, and a list item may also be named by its `name` (`/spec/template/spec/
    /// containers/member/image`). 1–16 paths.
    #[schemars(length(min = 1, max = 16), inner(length(min = 2, max = 256)))]
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "self.all(p, p.matches('^(/([^/~]|~[01])+)+$'))",
         "message": "spec.sentinel.ignore paths must be JSON Pointers such as '/spec/replicas': each segment non-empty, '~' only as '~0' or '~1'"},
        {"rule": "!self.exists(p, p == '/metadata' || p == '/metadata/labels' || p.startsWith('/metadata/ownerReferences') || p.startsWith('/metadata/name') || p.startsWith('/metadata/namespace') || p.startsWith('/metadata/labels/app.kubernetes.io~1managed-by') || p.startsWith('/metadata/labels/app.kubernetes.io~1instance') || p == '/metadata/*' || p == '/metadata/labels/*' || p.startsWith('/*'))",
         "message": "spec.sentinel.ignore paths must not cover the name, namespace, owner references or the managed-by and instance labels: the sentinel and the operator find their objects by them"}
    ]))]
    pub paths: Vec<String>,
}

/// `spec.sentinel.fightBackoff`: a fight is one foreign manager re-drifting an object within
/// `withinSeconds` of each revert; after `reverts` such reverts in a row, the next waits 2 s,
/// then 3 times longer each time, at most `maxDelaySeconds`. Other objects, and other
/// managers, are still reverted at once.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FightBackoffSpec {
    /// Reverts in a row, each re-drifted by the same manager, before backing off (default 3);
    /// 0 never backs off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub reverts: Option<u32>,
    /// How soon after a revert a re-drift counts towards a fight, in seconds (default 30).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 3600))]
    pub within_seconds: Option<u32>,
    /// Longest a revert is held back, in seconds (default 300).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 2, max = 3600))]
    pub max_delay_seconds: Option<u32>,
}

impl FightBackoffSpec {
    /// Default reverts before backing off.
    pub const DEFAULT_REVERTS: u32 = 3;
    /// Default re-drift window in seconds.
    pub const DEFAULT_WITHIN_SECONDS: u32 = 30;
    /// Default longest delay in seconds (Argo CD's self-heal cap).
    pub const DEFAULT_MAX_DELAY_SECONDS: u32 = 300;
}

impl SentinelSpec {
    /// Default debounce window in seconds.
    pub const DEFAULT_WINDOW_SECONDS: u32 = 2;
    /// Default max wait in seconds.
    pub const DEFAULT_MAX_WAIT_SECONDS: u32 = 10;

    /// Whether the sentinel should trigger for this resource.
    pub fn is_enabled(&self) -> bool {
        self.enabled.unwrap_or(true)
    }
}

/// `spec.sentinel.mode`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum DebounceModeSpec {
    /// Trigger once the debounce window has been quiet.
    #[default]
    Trailing,
    /// Trigger on the first drift, then at most once more per window.
    Leading,
}

/// What happened to a drifted object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum DriftChange {
    /// Changed by an actor outside the ignore set.
    Modified,
    /// Deleted while its owner was not being deleted.
    Deleted,
}

/// One object named by a trigger.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DriftedObject {
    /// Kind, e.g. `StatefulSet`.
    pub kind: String,
    /// Name, in the custom resource's namespace.
    pub name: String,
    /// Modified or deleted.
    pub change: DriftChange,
}

/// The sentinel's fields of `status.sentinel`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SentinelTrigger {
    /// A UUID v4, new for every trigger.
    #[serde(rename = "triggerID", default, skip_serializing_if = "Option::is_none")]
    pub trigger_id: Option<String>,
    /// When the sentinel wrote the trigger (RFC 3339 with microseconds; whole seconds read too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub triggered_at: Option<MicroTime>,
    /// When the sentinel received the first drift event of the burst (microseconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detected_at: Option<MicroTime>,
    /// The drifted objects, at most [`MAX_DRIFTED_OBJECTS`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drifted_objects: Vec<DriftedObject>,
    /// How many objects drifted in the burst (may exceed the list's length).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drifted_total: Option<u32>,
}

/// Whether a trigger is waiting for the operator: set and not yet acknowledged.
pub fn is_pending(trigger_id: Option<&str>, last_handled_trigger_id: Option<&str>) -> bool {
    match trigger_id {
        Some(t) if !t.is_empty() => last_handled_trigger_id != Some(t),
        _ => false,
    }
}

/// Whether `id` is a trigger ID as the sentinel writes it: a UUID, hyphenated and lowercase.
/// The operator acts on nothing else (an admin's typo, a forged line), and one trigger has
/// one spelling, so `lastHandledTriggerID` compares equal to the trigger it acknowledges.
pub fn is_trigger_id(id: &str) -> bool {
    // 36 characters is the hyphenated form only (braced, URN and simple differ in length).
    id.len() == 36
        && !id.bytes().any(|b| b.is_ascii_uppercase())
        && uuid::Uuid::try_parse(id).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trigger_id_is_a_uuid_spelled_as_the_sentinel_spells_it() {
        let id = "0b6f8a52-3c1e-4d2a-9f3b-7e5c4a1d2b90";
        assert!(is_trigger_id(id));
        for other in [
            id.to_uppercase(),
            format!("{{{id}}}"),
            format!("urn:uuid:{id}"),
            id.replace('-', ""),
            format!("{id}\n"),
            "not-a-uuid".to_string(),
        ] {
            assert!(!is_trigger_id(&other), "{other:?}");
        }
    }

    #[test]
    fn pending_only_when_set_and_unacknowledged() {
        assert!(!is_pending(None, None));
        assert!(!is_pending(Some(""), None));
        assert!(is_pending(Some("a"), None));
        assert!(is_pending(Some("b"), Some("a")));
        assert!(!is_pending(Some("a"), Some("a")));
    }

    #[test]
    fn trigger_uses_wire_names() {
        let t = SentinelTrigger {
            trigger_id: Some("x".into()),
            drifted_objects: vec![DriftedObject {
                kind: "Service".into(),
                name: "db".into(),
                change: DriftChange::Deleted,
            }],
            drifted_total: Some(1),
            ..Default::default()
        };
        let v = serde_json::to_value(&t).expect("serializes");
        assert_eq!(v["triggerID"], "x");
        assert_eq!(v["driftedObjects"][0]["change"], "deleted");
        assert_eq!(v["driftedTotal"], 1);
    }
}
