//! The Events the reconciler publishes on a StatefulCluster, and how they name changes.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::{
    Resource, ResourceExt,
    runtime::events::{Event, EventType},
};

use super::Context;
use crate::operator::{crd::StatefulCluster, managers::ObjectChange};

/// Longest `status.sentinel.lastError`, in bytes (Event notes are cut by `crate::events::note`).
pub(super) const MAX_LAST_ERROR: usize = 1000;

impl Context {
    /// Publishes an Event on `cr`.
    pub(super) async fn event(
        &self,
        cr: &StatefulCluster,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) {
        self.event_about(cr, type_, reason, action, note, None)
            .await;
    }

    /// Publishes an Event on `cr`; `related` names a second object (and keeps Events about
    /// different objects from folding into one series).
    pub(super) async fn event_about(
        &self,
        cr: &StatefulCluster,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
        related: Option<&ObjectChange>,
    ) {
        let secondary = related.map(|c| ObjectReference {
            api_version: Some(match c.kind.as_str() {
                "StatefulSet" => "apps/v1".into(),
                _ => "v1".into(),
            }),
            kind: Some(c.kind.clone()),
            name: Some(c.name.clone()),
            namespace: cr.namespace(),
            ..Default::default()
        });
        let event = Event {
            type_,
            reason: reason.into(),
            note: Some(crate::events::note(note)),
            action: action.into(),
            secondary,
        };
        if let Err(e) = self.recorder.publish(&event, &cr.object_ref(&())).await {
            tracing::warn!(error = %e, reason, "could not publish an Event");
        }
    }
}

/// The changes, for a note or a log line: `Service db (metadata.labels.x); ConfigMap db-config (Created)`.
pub(super) fn describe(changes: &[&ObjectChange]) -> String {
    changes
        .iter()
        .map(|c| {
            if c.changed.is_empty() {
                format!("{} {} ({:?})", c.kind, c.name, c.action)
            } else {
                format!("{} {} ({})", c.kind, c.name, c.changed.join(", "))
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

pub(super) fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}
