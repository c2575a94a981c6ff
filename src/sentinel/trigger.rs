//! The trigger: one burst of drift on one custom resource, written to its `status.sentinel`.
//!
//! The write is a JSON merge patch of the `status` subresource with the sentinel's own field
//! manager, touching only the trigger fields of the [contract](crate::contract). Nothing else
//! is sent, so the admission policy in `deploy/sentinel/` can allow exactly these fields.

use std::collections::{BTreeSet, HashSet};

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::{
    Api,
    api::{DynamicObject, Patch, PatchParams},
};
use serde_json::json;

use crate::contract::{
    DriftChange, DriftedObject, MAX_DRIFTED_OBJECTS, SENTINEL_FIELD_MANAGER, SentinelTrigger,
};

/// Every drifted object of one burst on one resource, as the debounce folds it.
///
/// Objects are named once each (a deletion after a modification wins); at most
/// [`MAX_DRIFTED_OBJECTS`] are listed, all are counted.
#[derive(Clone, Debug, PartialEq)]
pub struct DriftBurst {
    /// Listed objects, in order of first drift.
    pub objects: Vec<DriftedObject>,
    /// Objects beyond the list, by (kind, name), so that the total counts each once.
    overflow: HashSet<(String, String)>,
    /// Foreign managers seen in the burst.
    pub managers: BTreeSet<String>,
    /// Wall-clock time the burst's first drift event was received.
    pub first_received: Timestamp,
}

impl DriftBurst {
    /// A burst that starts with one drifted object.
    pub fn new(object: DriftedObject, managers: &[String], received: Timestamp) -> Self {
        let mut burst = Self {
            objects: Vec::with_capacity(1),
            overflow: HashSet::new(),
            managers: BTreeSet::new(),
            first_received: received,
        };
        burst.add(object, managers);
        burst
    }

    /// Adds one drifted object to the burst.
    pub fn add(&mut self, object: DriftedObject, managers: &[String]) {
        for m in managers {
            if !self.managers.contains(m) {
                self.managers.insert(m.clone());
            }
        }
        if let Some(listed) = self
            .objects
            .iter_mut()
            .find(|o| o.kind == object.kind && o.name == object.name)
        {
            if object.change == DriftChange::Deleted {
                listed.change = DriftChange::Deleted;
            }
        } else if self.objects.len() < MAX_DRIFTED_OBJECTS {
            self.objects.push(object);
        } else {
            self.overflow.insert((object.kind, object.name));
        }
    }

    /// Folds an older burst of the same resource into this one (a trigger that was replaced
    /// before it could be written): nothing it named is lost.
    pub fn absorb(&mut self, older: DriftBurst) {
        let managers: Vec<String> = older.managers.into_iter().collect();
        for object in older.objects {
            self.add(object, &managers);
        }
        for (kind, name) in older.overflow {
            self.add(
                DriftedObject {
                    kind,
                    name,
                    change: DriftChange::Modified,
                },
                &[],
            );
        }
        self.first_received = self.first_received.min(older.first_received);
    }

    /// How many distinct objects drifted.
    pub fn total(&self) -> usize {
        self.objects.len() + self.overflow.len()
    }

    /// The trigger for this burst, with a new UUID v4, written at `now`.
    pub fn to_trigger(&self, now: Timestamp) -> SentinelTrigger {
        SentinelTrigger {
            trigger_id: Some(uuid::Uuid::new_v4().to_string()),
            triggered_at: Some(MicroTime(now)),
            detected_at: Some(MicroTime(self.first_received)),
            drifted_objects: self.objects.clone(),
            drifted_total: Some(u32::try_from(self.total()).unwrap_or(u32::MAX)),
        }
    }
}

/// The merge patch that writes a trigger, and only the trigger.
pub fn status_patch(trigger: &SentinelTrigger) -> serde_json::Value {
    json!({ "status": { "sentinel": trigger } })
}

/// Writes `trigger` on the resource `name` through its status subresource.
pub async fn write(
    api: &Api<DynamicObject>,
    name: &str,
    trigger: &SentinelTrigger,
) -> Result<(), kube::Error> {
    let params = PatchParams {
        field_manager: Some(SENTINEL_FIELD_MANAGER.to_owned()),
        ..PatchParams::default()
    };
    api.patch_status(name, &params, &Patch::Merge(status_patch(trigger)))
        .await
        .map(drop)
}

/// Whether a failed write is worth retrying: conflicts, throttling, server errors,
/// connection trouble and authorization denials are; a missing resource, an invalid write or
/// an admission policy's refusal is not.
///
/// An authorization denial (RBAC's "cannot patch resource") is retried because a trigger is
/// the only record of a drift: an API server that has just restarted denies until its
/// authorizer has synced (seen by `kube-sentinel faults`), and RBAC being re-applied denies for
/// a moment too. A lasting one costs a WARN line and `triggers_retried` per retry, at most one
/// every 30 s per resource.
pub fn is_transient(error: &kube::Error) -> bool {
    match error {
        kube::Error::Api(status) if status.code == 403 => {
            status.reason == "Forbidden" && status.message.contains(" cannot ")
        }
        kube::Error::Api(status) => {
            matches!(status.code, 409 | 429 | 500..=599) || status.code == 0
        }
        kube::Error::HyperError(_)
        | kube::Error::Service(_)
        | kube::Error::ReadEvents(_)
        | kube::Error::HttpError(_) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(kind: &str, name: &str, change: DriftChange) -> DriftedObject {
        DriftedObject {
            kind: kind.into(),
            name: name.into(),
            change,
        }
    }

    #[test]
    fn burst_names_each_object_once_and_counts_all() {
        let t0 = Timestamp::from_second(1000).expect("time");
        let mut b = DriftBurst::new(
            obj("StatefulSet", "db", DriftChange::Modified),
            &["kubectl".into()],
            t0,
        );
        b.add(
            obj("StatefulSet", "db", DriftChange::Modified),
            &["kubectl".into()],
        );
        b.add(
            obj("Service", "db", DriftChange::Modified),
            &["helm".into()],
        );
        b.add(obj("StatefulSet", "db", DriftChange::Deleted), &[]);
        assert_eq!(b.objects.len(), 2);
        assert_eq!(b.objects[0].change, DriftChange::Deleted);
        assert_eq!(b.managers.iter().collect::<Vec<_>>(), ["helm", "kubectl"]);
        for i in 0..40 {
            b.add(
                obj("ConfigMap", &format!("c{i}"), DriftChange::Modified),
                &[],
            );
            b.add(
                obj("ConfigMap", &format!("c{i}"), DriftChange::Modified),
                &[],
            );
        }
        assert_eq!(b.objects.len(), MAX_DRIFTED_OBJECTS);
        assert_eq!(b.total(), 42);
        let now = Timestamp::from_second(1002).expect("time");
        let t = b.to_trigger(now);
        assert_eq!(t.drifted_total, Some(42));
        assert_eq!(t.detected_at, Some(MicroTime(t0)));
        let id = t.trigger_id.expect("id");
        assert_eq!(
            uuid::Uuid::parse_str(&id).expect("uuid").get_version_num(),
            4
        );
    }

    #[test]
    fn absorbing_an_older_burst_keeps_its_objects_and_start() {
        let t = |s| Timestamp::from_second(s).expect("time");
        let mut newer = DriftBurst::new(
            obj("Service", "db", DriftChange::Deleted),
            &["b".into()],
            t(20),
        );
        let older = DriftBurst::new(
            obj("StatefulSet", "db", DriftChange::Modified),
            &["a".into()],
            t(10),
        );
        newer.absorb(older);
        assert_eq!(newer.total(), 2);
        assert_eq!(newer.first_received, t(10));
        assert_eq!(newer.managers.len(), 2);
    }

    #[test]
    fn patch_touches_only_the_trigger_fields() {
        let b = DriftBurst::new(
            obj("Service", "db", DriftChange::Deleted),
            &[],
            Timestamp::UNIX_EPOCH,
        );
        let patch = status_patch(&b.to_trigger(Timestamp::UNIX_EPOCH));
        let status = patch.as_object().expect("object");
        assert_eq!(status.keys().collect::<Vec<_>>(), ["status"]);
        let sentinel = patch["status"].as_object().expect("status");
        assert_eq!(sentinel.keys().collect::<Vec<_>>(), ["sentinel"]);
        let mut fields: Vec<_> = patch["status"]["sentinel"]
            .as_object()
            .expect("s")
            .keys()
            .cloned()
            .collect();
        fields.sort();
        assert_eq!(
            fields,
            [
                "detectedAt",
                "driftedObjects",
                "driftedTotal",
                "triggerID",
                "triggeredAt"
            ]
        );
    }

    #[test]
    fn classifies_errors() {
        let api = |code: u16| {
            kube::Error::Api(Box::new(kube::core::Status {
                code,
                ..Default::default()
            }))
        };
        for code in [409, 429, 500, 503] {
            assert!(is_transient(&api(code)), "{code}");
        }
        let denied = |message: &str| {
            kube::Error::Api(Box::new(kube::core::Status {
                code: 403,
                reason: "Forbidden".into(),
                message: message.into(),
                ..Default::default()
            }))
        };
        let unauthorized = r#"statefulclusters.kube-sentinel.dev "db" is forbidden: User "system:serviceaccount:kube-sentinel:sentinel" cannot patch resource "statefulclusters/status""#;
        assert!(is_transient(&denied(unauthorized)));
        let refused = r#"statefulclusters.kube-sentinel.dev "db" is forbidden: ValidatingAdmissionPolicy 'p' with binding 'p' denied request: no"#;
        assert!(!is_transient(&denied(refused)));
        for code in [400, 403, 404, 422] {
            assert!(!is_transient(&api(code)), "{code}");
        }
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        assert!(is_transient(&kube::Error::ReadEvents(io)));
    }
}
