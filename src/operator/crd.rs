//! The `StatefulCluster` custom resource and its CustomResourceDefinition.
//!
//! The `StatefulCluster` custom resource: a replicated stateful service that the operator runs
//! (StatefulSet, Services, ConfigMap, TLS Secrets, upgrades and backups) and the sentinel guards.
//!
//! Every bound a person can get wrong is checked at admission, by the OpenAPI schema (ranges,
//! patterns, sizes) or by CEL rules (`x-kubernetes-validations`) with a message that names the
//! field and says what to do; the reconciler never sees an invalid spec. `deploy/crd/` holds the
//! generated YAML ([`crd_yaml`], `kube-sentinel crd`); a unit test fails when it is stale.

use std::collections::BTreeMap;

use k8s_openapi::{
    apiextensions_apiserver::pkg::apis::apiextensions::v1::{
        CustomResourceDefinition, JSONSchemaProps, JSONSchemaPropsOrArray, ValidationRule,
    },
    apimachinery::pkg::apis::meta::v1::{Condition, MicroTime, Time},
};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::contract::{SentinelSpec, SentinelTrigger};

/// Longest `metadata.name` of a `StatefulCluster`: the operator derives object names from it
/// (`<name>-headless`, the blue/green `<name>-b` StatefulSet whose pods carry a
/// `controller-revision-hash` label of at most 63 characters).
pub const MAX_NAME_LEN: usize = 40;

/// What a version (an image tag) may be, in the spec and in the status alike.
pub const VERSION_PATTERN: &str = r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$";

/// What a StatefulSet name recorded in the status may be (a DNS label); the operator further
/// accepts only the two names it derives.
const SET_NAME_PATTERN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";

/// `spec` of a [`StatefulCluster`].
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "kube-sentinel.dev",
    version = "v1alpha1",
    kind = "StatefulCluster",
    plural = "statefulclusters",
    shortname = "stc",
    namespaced,
    status = "StatefulClusterStatus",
    printcolumn = r#"{"name":"Replicas","type":"integer","jsonPath":".spec.replicas"}"#,
    printcolumn = r#"{"name":"Version","type":"string","jsonPath":".status.currentVersion"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Paused","type":"boolean","jsonPath":".spec.paused"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct StatefulClusterSpec {
    /// Number of members, 1–15.
    #[schemars(range(min = 1, max = 15))]
    pub replicas: i32,
    /// Container image repository without tag or digest, e.g. `registry.example/db`.
    #[schemars(length(min = 1, max = 200))]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "!self.contains('@') && !self.matches(':[^/]*$')",
        "message": "spec.image must be a repository without tag or digest (e.g. 'registry.example/db'); put the tag in spec.version"
    }]))]
    pub image: String,
    /// Image tag to run, e.g. `1.4.2`; changing it starts an upgrade.
    #[schemars(length(min = 1, max = 128), regex(pattern = VERSION_PATTERN))]
    pub version: String,
    /// Settings rendered into the ConfigMap, one key each (at most 64).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 64, "x-kubernetes-validations" = [{
        "rule": "self.all(k, k.matches('^[-._a-zA-Z0-9]+$') && k.size() <= 253)",
        "message": "spec.config keys must be valid ConfigMap keys: letters, digits, '-', '_' or '.', at most 253 characters"
    }]))]
    pub config: BTreeMap<String, String>,
    /// Ports served by the client Service and the headless Service (1–8, unique names and
    /// numbers).
    #[schemars(length(min = 1, max = 8))]
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "self.all(p, self.exists_one(q, q.name == p.name))", "message": "spec.ports names must be unique"},
        {"rule": "self.all(p, self.exists_one(q, q.port == p.port))", "message": "spec.ports numbers must be unique"}
    ]))]
    pub ports: Vec<PortSpec>,
    /// Serving TLS; off when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSpec>,
    /// How a version change is rolled out (default Rolling).
    #[serde(default)]
    pub upgrade: UpgradeSpec,
    /// Periodic backups; none when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<BackupSpec>,
    /// How the sentinel guards this resource.
    #[serde(default)]
    pub sentinel: SentinelSpec,
    /// Maintenance switch: while true, drift is acknowledged but not reverted and nothing is
    /// changed, so people can work by hand.
    #[serde(default)]
    pub paused: bool,
}

/// One service port.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PortSpec {
    /// IANA-style port name (lower case, digits, '-'), e.g. `client`.
    #[schemars(
        length(min = 1, max = 15),
        regex(pattern = r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,
    /// Port number, 1–65535.
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
}

/// `spec.tls`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "self.rotateBeforeDays < self.validityDays",
    "message": "spec.tls.rotateBeforeDays must be less than spec.tls.validityDays, or the certificate would be rotated as soon as it is issued"
}]))]
pub struct TlsSpec {
    /// Whether a CA and a serving certificate are issued and mounted.
    pub enabled: bool,
    /// Lifetime of the serving certificate in days, 1–825 (default 90).
    #[serde(default = "TlsSpec::default_validity_days")]
    #[schemars(range(min = 1, max = 825))]
    pub validity_days: u32,
    /// Renew the serving certificate this many days before it expires (default 30).
    #[serde(default = "TlsSpec::default_rotate_before_days")]
    #[schemars(range(min = 0, max = 824))]
    pub rotate_before_days: u32,
}

impl TlsSpec {
    fn default_validity_days() -> u32 {
        90
    }
    fn default_rotate_before_days() -> u32 {
        30
    }
}

/// `spec.upgrade`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpgradeSpec {
    /// `Rolling` (default) or `BlueGreen`.
    #[serde(default)]
    pub strategy: UpgradeStrategy,
}

/// How a version change reaches the pods.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum UpgradeStrategy {
    /// One StatefulSet; its partition is stepped down one pod at a time, each waited for.
    #[default]
    Rolling,
    /// A second StatefulSet at the new version; the Services switch to it once every member is
    /// ready, then the old one is retired.
    BlueGreen,
}

/// `spec.backup`: a backup Job every `intervalMinutes`, the newest `retention` kept.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupSpec {
    /// Minutes between backups, 1–10080 (a week).
    #[schemars(range(min = 1, max = 10080))]
    pub interval_minutes: u32,
    /// Backup Jobs kept, 1–100 (older ones are deleted).
    #[schemars(range(min = 1, max = 100))]
    pub retention: u32,
    /// Image of the backup Job (default: the cluster's own image and version).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 300))]
    pub image: Option<String>,
    /// Command of the backup container (default: the image's entrypoint).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 32))]
    pub command: Option<Vec<String>>,
}

/// `status` of a [`StatefulCluster`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StatefulClusterStatus {
    /// `Ready`, `Progressing` and `Degraded`, each with a reason.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` the last full reconcile acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The version every member runs (after an upgrade completes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128), regex(pattern = VERSION_PATTERN))]
    pub current_version: Option<String>,
    /// Members reported ready by the serving StatefulSet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_replicas: Option<i32>,
    /// Upgrade state machine; survives operator restarts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upgrade: Option<UpgradeStatus>,
    /// Backup bookkeeping.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<BackupStatus>,
    /// The serving certificate in use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<CertificateStatus>,
    /// The sentinel's trigger and the operator's acknowledgement of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sentinel: Option<SentinelStatus>,
}

/// Phase of the upgrade state machine.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum UpgradePhase {
    /// No upgrade in flight.
    #[default]
    Idle,
    /// Rolling: the partition is being stepped down.
    Rolling,
    /// Blue/green: the candidate StatefulSet is starting.
    Deploying,
    /// Blue/green: the Services point at the candidate; the old StatefulSet is being retired.
    Retiring,
}

/// `status.upgrade`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpgradeStatus {
    /// Where the state machine is.
    pub phase: UpgradePhase,
    /// Version being left.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128), regex(pattern = VERSION_PATTERN))]
    pub from_version: Option<String>,
    /// Version being reached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128), regex(pattern = VERSION_PATTERN))]
    pub to_version: Option<String>,
    /// Rolling: the StatefulSet partition (pods with ordinal ≥ partition run the new version).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<i32>,
    /// Name of the StatefulSet the Services select (the resource's name, or it with `-b`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), regex(pattern = SET_NAME_PATTERN))]
    pub active_set: Option<String>,
    /// Blue/green: name of the StatefulSet being brought up or retired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), regex(pattern = SET_NAME_PATTERN))]
    pub candidate_set: Option<String>,
    /// Upgrades completed since the resource was created.
    #[serde(default)]
    pub completed: u32,
}

/// `status.backup`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupStatus {
    /// When the newest backup Job was created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scheduled_at: Option<Time>,
    /// Name of the newest backup Job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_job: Option<String>,
    /// When the newest successful backup Job completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success_at: Option<Time>,
    /// Name of the newest successful backup Job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success_job: Option<String>,
}

/// `status.certificate`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CertificateStatus {
    /// Expiry of the serving certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_after: Option<Time>,
    /// Serving certificates issued (first issue included).
    #[serde(default)]
    pub issued: u32,
}

/// Outcome of handling a trigger.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Outcome {
    /// Drift was found and reverted, and the revert verified.
    Corrected,
    /// Nothing needed changing (or the resource is paused).
    Noop,
    /// The revert kept failing (`lastError` says why); the full reconcile runs instead.
    Failed,
    /// Warn mode (`spec.sentinel.action: warn`): drift reported and left in place.
    Detected,
    /// Every drifted object is held back by a fight's backoff (see the `DriftFighting`
    /// condition); reverted when the hold ends.
    Deferred,
}

/// One object the operator reverted.
// Also the objects a trigger names and the Secrets the operator's watch saw changed: an object
// owned by the resource, by kind and name in its namespace. (Doc above is the CRD's description.)
#[derive(
    Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub struct OwnedObject {
    /// Kind, e.g. `Service`.
    pub kind: String,
    /// Name, in the resource's namespace.
    pub name: String,
}

/// `status.sentinel`: the sentinel's trigger fields and the operator's acknowledgement, side
/// by side; each side writes only its own fields (see [`crate::contract`]).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SentinelStatus {
    /// Written by the sentinel.
    #[serde(flatten)]
    pub trigger: SentinelTrigger,
    /// The last trigger the operator handled.
    #[serde(
        rename = "lastHandledTriggerID",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub last_handled_trigger_id: Option<String>,
    /// When it was handled (microseconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_at: Option<MicroTime>,
    /// When the operator's watch queued it (microseconds): from `triggeredAt`, the trigger's
    /// write and its delivery to the operator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_queued_at: Option<MicroTime>,
    /// When a worker took it from the queue (microseconds): from `lastQueuedAt`, the queue wait.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_started_at: Option<MicroTime>,
    /// When its revert was written and read back (microseconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_reverted_at: Option<MicroTime>,
    /// What handling it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_outcome: Option<Outcome>,
    /// Why the last handling failed (outcome `failed`), cut to 1000 bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub last_error: Option<String>,
    /// Objects the last handling reverted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reverted_objects: Vec<OwnedObject>,
    /// Objects reverted since the resource was created.
    #[serde(default)]
    pub corrections: u64,
}

impl StatefulCluster {
    /// The pending trigger ID, if the sentinel wrote one the operator has not handled.
    pub fn pending_trigger(&self) -> Option<&str> {
        let s = self.status.as_ref()?.sentinel.as_ref()?;
        let id = s.trigger.trigger_id.as_deref();
        crate::contract::is_pending(id, s.last_handled_trigger_id.as_deref())
            .then_some(id)
            .flatten()
    }
}

/// The CustomResourceDefinition, with the rules that need the whole object (the name length).
pub fn crd() -> CustomResourceDefinition {
    use kube::CustomResourceExt;
    let mut crd = StatefulCluster::crd();
    for version in &mut crd.spec.versions {
        let Some(schema) = version
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
        else {
            continue;
        };
        schema.x_kubernetes_validations = Some(vec![rule(
            format!("self.metadata.name.size() <= {MAX_NAME_LEN}"),
            format!(
                "metadata.name must be at most {MAX_NAME_LEN} characters: the operator derives StatefulSet, Service and Secret names from it"
            ),
        )]);
        if let Some(spec) = schema.properties.as_mut().and_then(|p| p.get_mut("spec")) {
            spec.x_kubernetes_validations = Some(vec![rule(
                "!self.paused || !oldSelf.paused || self.version == oldSelf.version".into(),
                "spec.version cannot change while spec.paused is true: unpause the cluster to upgrade it".into(),
            )]);
        }
        // Status is written by controllers only. A schema default there would be filled in by
        // the API server inside whatever status object a writer creates, so the sentinel's
        // first trigger would appear to set the operator's counters (and be refused by its
        // admission policy). Absent counters read as zero.
        if let Some(status) = schema.properties.as_mut().and_then(|p| p.get_mut("status")) {
            strip_defaults(status);
        }
        bound_integers(schema);
    }
    crd
}

/// Largest integer a JSON number carries exactly: the bound of the `u64` counters.
const MAX_JSON_INTEGER: f64 = 9_007_199_254_740_991.0;

/// Gives every 32-bit and unsigned integer a schema range the operator can decode, so no
/// writer (status included) can store a value that would fail to deserialize; replaces the
/// `uint32`/`uint64` formats, which the API server does not know (kubectl warns about them),
/// with `int64`.
fn bound_integers(schema: &mut JSONSchemaProps) {
    if schema.type_.as_deref() == Some("integer") {
        let (min, max) = match schema.format.as_deref() {
            Some("int32") => (f64::from(i32::MIN), f64::from(i32::MAX)),
            Some("uint32") => (0.0, f64::from(u32::MAX)),
            Some("uint64") => (0.0, MAX_JSON_INTEGER),
            _ => return,
        };
        if schema.format.as_deref() != Some("int32") {
            schema.format = Some("int64".into());
        }
        schema.minimum = Some(schema.minimum.map_or(min, |m| m.max(min)));
        schema.maximum = Some(schema.maximum.map_or(max, |m| m.min(max)));
        return;
    }
    for child in schema.properties.iter_mut().flat_map(|p| p.values_mut()) {
        bound_integers(child);
    }
    if let Some(JSONSchemaPropsOrArray::Schema(items)) = schema.items.as_mut() {
        bound_integers(items);
    }
    if let Some(k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSONSchemaPropsOrBool::Schema(extra)) =
        schema.additional_properties.as_mut()
    {
        bound_integers(extra);
    }
}

fn strip_defaults(schema: &mut JSONSchemaProps) {
    schema.default = None;
    for child in schema.properties.iter_mut().flat_map(|p| p.values_mut()) {
        strip_defaults(child);
    }
    if let Some(JSONSchemaPropsOrArray::Schema(items)) = schema.items.as_mut() {
        strip_defaults(items);
    }
}

fn rule(rule: String, message: String) -> ValidationRule {
    ValidationRule {
        rule,
        message: Some(message),
        ..Default::default()
    }
}

/// The CRD as YAML, as committed in `deploy/crd/statefulcluster.yaml`.
pub fn crd_yaml() -> String {
    let body = serde_saphyr::to_string(&crd()).unwrap_or_else(|e| format!("# error: {e}\n"));
    format!("# Generated by `kube-sentinel crd`; do not edit.\n---\n{body}")
}

#[cfg(test)]
#[path = "crd_trigger_properties.rs"]
mod trigger_properties;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const COMMITTED: &str = include_str!("../../deploy/crd/statefulcluster.yaml");

    /// Fails when `deploy/crd/statefulcluster.yaml` is stale; regenerate it with
    /// `KUBE_SENTINEL_REGENERATE=1 cargo test --lib operator::crd`.
    #[test]
    fn committed_crd_yaml_is_current() {
        let generated = crd_yaml();
        if std::env::var_os("KUBE_SENTINEL_REGENERATE").is_some() {
            let path = concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/deploy/crd/statefulcluster.yaml"
            );
            std::fs::write(path, &generated).expect("write CRD YAML");
            return;
        }
        assert!(
            COMMITTED == generated,
            "deploy/crd/statefulcluster.yaml is stale: run `KUBE_SENTINEL_REGENERATE=1 cargo test --lib operator::crd` (or `kube-sentinel crd > deploy/crd/statefulcluster.yaml`)"
        );
    }

    #[test]
    fn samples_deserialize_into_the_spec() {
        for text in [
            include_str!("../../deploy/samples/minimal.yaml"),
            include_str!("../../deploy/samples/full.yaml"),
        ] {
            let docs = crate::manifests::parse(text).expect("sample parses");
            let cr: StatefulCluster =
                serde_json::from_value(docs[0].clone()).expect("sample is a StatefulCluster");
            assert!(cr.spec.replicas >= 1);
        }
    }

    #[test]
    fn status_sentinel_flattens_the_trigger_and_the_acknowledgement() {
        let v = json!({"triggerID": "t2", "detectedAt": "2026-01-01T00:00:00Z",
                       "lastHandledTriggerID": "t1", "lastOutcome": "corrected", "corrections": 3});
        let s: SentinelStatus = serde_json::from_value(v).expect("parses");
        assert_eq!(s.trigger.trigger_id.as_deref(), Some("t2"));
        assert_eq!(s.last_handled_trigger_id.as_deref(), Some("t1"));
        assert_eq!(s.last_outcome, Some(Outcome::Corrected));
        let cr = StatefulCluster {
            metadata: Default::default(),
            spec: serde_json::from_value(json!({"replicas": 1, "image": "x", "version": "1",
                "ports": [{"name": "c", "port": 1}]}))
            .expect("spec"),
            status: Some(StatefulClusterStatus {
                sentinel: Some(s),
                ..Default::default()
            }),
        };
        assert_eq!(cr.pending_trigger(), Some("t2"));
    }
}
