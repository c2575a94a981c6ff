//! Writing the status: the operator's fields only, as a merge patch with its field manager.

use kube::api::{Patch, PatchParams};
use serde_json::{Map, Value, json};

use super::{Context, Error};
use crate::{
    contract::OPERATOR_FIELD_MANAGER,
    operator::{crd::StatefulClusterStatus, managers::Names},
};

impl Context {
    /// Merge-patches `status` into the resource's status subresource.
    pub(super) async fn patch_status(&self, names: &Names, status: Value) -> Result<(), Error> {
        let params = PatchParams {
            field_manager: Some(OPERATOR_FIELD_MANAGER.into()),
            ..Default::default()
        };
        self.api(&names.namespace)
            .patch_status(
                &names.name,
                &params,
                &Patch::Merge(json!({ "status": status })),
            )
            .await
            .map_err(|e| Error::Kube("writing status", e))?;
        Ok(())
    }

    /// Writes the operator's part of the status (never the sentinel's fields) as a merge patch
    /// that turns `old` into `new`.
    pub(super) async fn write_status(
        &self,
        names: &Names,
        old: &StatefulClusterStatus,
        new: &StatefulClusterStatus,
    ) -> Result<(), Error> {
        let strip = |s: &StatefulClusterStatus| {
            let mut v = serde_json::to_value(s).unwrap_or_default();
            if let Some(o) = v.as_object_mut() {
                o.remove("sentinel");
            }
            v
        };
        let patch = merge_patch(&strip(old), &strip(new));
        if patch.as_object().is_some_and(Map::is_empty) {
            return Ok(());
        }
        self.patch_status(names, patch).await
    }
}

/// A JSON merge patch (RFC 7396) that turns `old` into `new`.
pub fn merge_patch(old: &Value, new: &Value) -> Value {
    match (old, new) {
        (Value::Object(o), Value::Object(n)) => {
            let mut patch = Map::new();
            for (k, nv) in n {
                match o.get(k) {
                    Some(ov) if ov == nv => {}
                    Some(ov @ Value::Object(_)) if nv.is_object() => {
                        patch.insert(k.clone(), merge_patch(ov, nv));
                    }
                    _ => {
                        patch.insert(k.clone(), nv.clone());
                    }
                }
            }
            for k in o.keys().filter(|k| !n.contains_key(*k)) {
                patch.insert(k.clone(), Value::Null);
            }
            Value::Object(patch)
        }
        (_, n) => n.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_patch_sets_changes_and_nulls_removals() {
        let old = json!({"upgrade": {"phase": "Rolling", "partition": 1}, "readyReplicas": 3, "backup": {"lastJob": "a"}});
        let new = json!({"upgrade": {"phase": "Idle"}, "readyReplicas": 3, "currentVersion": "2"});
        assert_eq!(
            merge_patch(&old, &new),
            json!({"upgrade": {"phase": "Idle", "partition": null}, "currentVersion": "2", "backup": null})
        );
        assert_eq!(merge_patch(&new, &new), json!({}));
    }
}
