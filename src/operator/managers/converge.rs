//! Converging one object to its desired state, including what other field managers added.
//!
//! A forced server-side apply takes back every field the operator specifies, but leaves fields
//! that only another manager set (an extra label, an annotation, a ConfigMap key, a sidecar
//! container): server-side apply removes a field only when *its own* manager stops applying it.
//! So after the apply, [`converge`] reads `metadata.managedFields`, and every field owned by
//! another manager that is absent from the desired object is removed with a JSON Patch guarded
//! by the `resourceVersion` it was computed from. Status (a subresource) is never touched.
//! Deleted objects are simply created by the apply. An existing object whose controller owner
//! reference is not the resource's is never written ([`super::Error::NameConflict`]).
//!
//! After a client wiped `managedFields`, the apply leaves the API server's
//! [`BEFORE_FIRST_APPLY`] entry owning everything the object held: the server's defaults and
//! allocated values, and whatever the wiping client added, which ownership can no longer tell
//! apart. That entry is judged against what the API server makes of the desired object on its
//! own (a dry-run create): what the server would set itself is left, what it would not is
//! removed. A default whose value a client changed cannot be told from the server's choice and
//! is left; when the dry run is refused, nothing of that entry is removed. The entry itself
//! stays (it is the API server's record, and it shares the operator's fields, which the
//! operator's Apply entry owns again), so every later pass over that object costs one dry run.

use std::borrow::Cow;

use serde_json::{Map, Value, json};

use kube::{
    Api,
    api::{DynamicObject, Patch, PatchParams, PostParams},
};

use super::{Error, Result};
use crate::{
    contract::OPERATOR_FIELD_MANAGER,
    operator::fights::FightStarted,
    watch::{actor::BEFORE_FIRST_APPLY, field_path::FieldPath},
};

/// What a pass did to one object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Already as desired.
    Unchanged,
    /// Did not exist; created.
    Created,
    /// Existed and differed; changed.
    Updated,
    /// Drifted, and left until the hold ends: every manager drifting it is in a fight (see
    /// [`crate::operator::fights`]).
    Held {
        /// When the hold ends.
        until: jiff::Timestamp,
    },
}

/// One object's outcome, with the JSON paths that changed (for logs and Events).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectChange {
    /// Kind, e.g. `StatefulSet`.
    pub kind: String,
    /// Name.
    pub name: String,
    /// What was done.
    pub action: Action,
    /// Paths that differ between before and after (`spec.replicas`, `metadata.labels.x`).
    pub changed: Vec<String>,
    /// Whether a read after the write found the object as desired (always checked after a
    /// change).
    pub verified: bool,
    /// The fights this revert recognised (a foreign manager undoing every revert).
    pub fights: Vec<FightStarted>,
}

impl ObjectChange {
    /// Whether the object was created or updated.
    pub fn is_change(&self) -> bool {
        matches!(self.action, Action::Created | Action::Updated)
    }

    /// An object left drifted until `until`.
    pub fn held(kind: &str, name: &str, until: jiff::Timestamp) -> Self {
        Self {
            kind: kind.to_string(),
            name: name.to_string(),
            action: Action::Held { until },
            changed: Vec::new(),
            verified: true,
            fights: Vec::new(),
        }
    }
}

/// How often a removal patch is retried when the object changed under it.
const ATTEMPTS: usize = 4;

/// Applies `desired` (a full object with apiVersion, kind and metadata.name) with force as the
/// operator's field manager, removes fields other managers added, and reports the difference
/// between the object before and after.
pub async fn converge(
    api: &Api<DynamicObject>,
    kind: &str,
    desired: &Value,
) -> Result<ObjectChange> {
    let before = current(api, kind, desired).await?;
    converge_from(api, kind, desired, before, &[]).await
}

/// The object `desired` names as it stands (`None`: absent); fails with
/// [`Error::NameConflict`] when it exists and is not controlled by `desired`'s owner.
pub async fn current(
    api: &Api<DynamicObject>,
    kind: &str,
    desired: &Value,
) -> Result<Option<DynamicObject>> {
    let name = desired["metadata"]["name"]
        .as_str()
        .ok_or(Error::Incomplete("name"))?;
    let before = api
        .get_opt(name)
        .await
        .map_err(Error::kube(format!("{kind} {name}")))?;
    if let (Some(before), Some(owner_uid)) = (&before, controller_uid(desired)) {
        super::check_controlled(&before.metadata, owner_uid, kind)?;
    }
    Ok(before)
}

/// [`converge`] from the object as [`current`] read it, leaving the fields under `ignore` as
/// they are: an existing object keeps its values there (the desired object takes them over,
/// and the operator removes nothing under them); a created object gets the desired values.
pub async fn converge_from(
    api: &Api<DynamicObject>,
    kind: &str,
    desired: &Value,
    before: Option<DynamicObject>,
    ignore: &[FieldPath],
) -> Result<ObjectChange> {
    let name = desired["metadata"]["name"]
        .as_str()
        .ok_or(Error::Incomplete("name"))?
        .to_string();
    let context = format!("{kind} {name}");
    let desired: Cow<'_, Value> = match &before {
        Some(before) if !ignore.is_empty() => {
            let live = serde_json::to_value(before).map_err(|e| Error::Json("object", e))?;
            Cow::Owned(keep_ignored(desired, &live, ignore))
        }
        _ => Cow::Borrowed(desired),
    };
    let desired = desired.as_ref();
    let baseline = match &before {
        Some(before) if ownership_wiped(before) => server_baseline(api, desired, &context).await,
        _ => None,
    };
    let baseline = baseline.as_ref();
    let after = apply_and_prune(api, kind, &name, desired, baseline, ignore, &context).await?;
    let (action, changed) = compare(before.as_ref(), &after)?;
    let verified = match action {
        Action::Created | Action::Updated => {
            reads_back(api, &name, desired, baseline, ignore, &context).await?
        }
        Action::Unchanged | Action::Held { .. } => true,
    };
    Ok(ObjectChange {
        kind: kind.to_string(),
        name,
        action,
        changed,
        verified,
        fights: Vec::new(),
    })
}

/// `desired` with the fields under `ignore` as `live` has them: a field `live` lacks is
/// dropped from it.
pub(crate) fn keep_ignored(desired: &Value, live: &Value, ignore: &[FieldPath]) -> Value {
    let mut kept = desired.clone();
    for path in ignore {
        // Last first: dropping a list item must not shift the ones still to visit.
        for pointer in path.pointers_in(desired).into_iter().rev() {
            match live.pointer(&pointer) {
                Some(value) => {
                    if let Some(slot) = kept.pointer_mut(&pointer) {
                        *slot = value.clone();
                    }
                }
                None => remove_pointer(&mut kept, &pointer),
            }
        }
    }
    kept
}

fn remove_pointer(value: &mut Value, pointer: &str) {
    let Some((parent, last)) = pointer.rsplit_once('/') else {
        return;
    };
    let last = last.replace("~1", "/").replace("~0", "~");
    match value.pointer_mut(parent) {
        Some(Value::Object(map)) => {
            map.remove(&last);
        }
        Some(Value::Array(items)) => {
            if let Ok(index) = last.parse::<usize>()
                && index < items.len()
            {
                items.remove(index);
            }
        }
        _ => {}
    }
}

/// The UID of the controller owner reference `desired` carries (every object the managers
/// build has one).
fn controller_uid(desired: &Value) -> Option<&str> {
    desired["metadata"]["ownerReferences"]
        .as_array()?
        .iter()
        .find(|o| o["controller"] == true)?["uid"]
        .as_str()
}

/// Whether a client wiped the object's managedFields: none left, or the API server's entry for
/// an apply that found none.
fn ownership_wiped(object: &DynamicObject) -> bool {
    let entries = object
        .metadata
        .managed_fields
        .as_deref()
        .unwrap_or_default();
    entries.is_empty()
        || entries
            .iter()
            .any(|e| e.manager.as_deref() == Some(BEFORE_FIRST_APPLY))
}

/// What the API server makes of `desired` on its own (defaults, allocated values, mutating
/// admission): a dry-run create under a generated name. `None` when refused (a quota, a
/// policy): then fields of unknown origin are left alone.
async fn server_baseline(
    api: &Api<DynamicObject>,
    desired: &Value,
    context: &str,
) -> Option<Value> {
    let mut object = desired.clone();
    let metadata = object["metadata"].as_object_mut()?;
    let name = metadata.remove("name")?;
    metadata.insert("generateName".into(), json!(format!("{}-", name.as_str()?)));
    let object: DynamicObject = serde_json::from_value(object).ok()?;
    let params = PostParams {
        dry_run: true,
        field_manager: Some(OPERATOR_FIELD_MANAGER.into()),
    };
    match api.create(&params, &object).await {
        Ok(created) => serde_json::to_value(created).ok(),
        Err(error) => {
            tracing::warn!(object = %context, %error, "dry-run create refused: fields of unknown origin left in place");
            None
        }
    }
}

/// The forced apply, then the removal of foreign fields (judged against `desired`, and
/// [`BEFORE_FIRST_APPLY`]'s against `baseline`), retried while the object changes between the
/// two; the object as it stands after.
async fn apply_and_prune(
    api: &Api<DynamicObject>,
    kind: &str,
    name: &str,
    desired: &Value,
    baseline: Option<&Value>,
    ignore: &[FieldPath],
    context: &str,
) -> Result<Value> {
    for _ in 0..ATTEMPTS {
        let applied = api
            .patch(
                name,
                &PatchParams::apply(OPERATOR_FIELD_MANAGER).force(),
                &Patch::Apply(desired),
            )
            .await
            .map_err(Error::kube(format!("applying {context}")))?;
        let live = serde_json::to_value(&applied).map_err(|e| Error::Json("object", e))?;
        let removals = removals_outside(&live, desired, baseline, ignore);
        if removals.is_empty() {
            return Ok(live);
        }
        let ops = removal_patch(&live, &removals, &jiff::Timestamp::now().to_string());
        let patch = Patch::Json::<()>(
            serde_json::from_value(Value::Array(ops)).map_err(|e| Error::Json("patch", e))?,
        );
        let params = PatchParams {
            field_manager: Some(OPERATOR_FIELD_MANAGER.into()),
            ..Default::default()
        };
        match api.patch(name, &params, &patch).await {
            Ok(patched) => {
                tracing::debug!(kind, %name, removed = ?removals, "removed fields set by other managers");
                return serde_json::to_value(&patched).map_err(|e| Error::Json("object", e));
            }
            // The object changed between the apply and the patch (the test op failed): again.
            Err(kube::Error::Api(s)) if s.code == 409 || s.code == 422 => continue,
            Err(e) => {
                return Err(Error::kube(format!("removing foreign fields of {context}"))(e));
            }
        }
    }
    Err(Error::Conflict(context.to_owned()))
}

/// What the pass did, from the object before (`None`: it did not exist) and after, with the
/// paths that differ.
fn compare(before: Option<&DynamicObject>, after: &Value) -> Result<(Action, Vec<String>)> {
    let Some(before) = before else {
        return Ok((Action::Created, Vec::new()));
    };
    let before = serde_json::to_value(before).map_err(|e| Error::Json("object", e))?;
    let mut changed = Vec::new();
    diff(&before, after, &mut String::new(), &mut changed);
    let action = if changed.is_empty() {
        Action::Unchanged
    } else {
        Action::Updated
    };
    Ok((action, changed))
}

/// Whether a fresh read finds the object as desired, with no foreign field left.
async fn reads_back(
    api: &Api<DynamicObject>,
    name: &str,
    desired: &Value,
    baseline: Option<&Value>,
    ignore: &[FieldPath],
    context: &str,
) -> Result<bool> {
    let live = api
        .get_opt(name)
        .await
        .map_err(Error::kube(format!("reading back {context}")))?;
    let Some(live) = live else {
        return Ok(false);
    };
    let live = serde_json::to_value(&live).map_err(|e| Error::Json("object", e))?;
    Ok(covers(&live, desired) && removals_outside(&live, desired, baseline, ignore).is_empty())
}

/// [`foreign_removals`] but those under `ignore`.
fn removals_outside(
    live: &Value,
    desired: &Value,
    baseline: Option<&Value>,
    ignore: &[FieldPath],
) -> Vec<String> {
    let mut removals = foreign_removals(live, desired, baseline);
    removals.retain(|r| !ignore.iter().any(|p| p.covers_pointer(live, r)));
    removals
}

/// An empty map or list is not stored by the API server.
fn is_empty(v: &Value) -> bool {
    match v {
        Value::Object(o) => o.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Null => true,
        _ => false,
    }
}

/// Whether `live` holds every value of `desired` (lists item by item; fields the API server
/// defaulted are allowed).
pub(crate) fn covers(live: &Value, desired: &Value) -> bool {
    match (live, desired) {
        (Value::Object(l), Value::Object(d)) => d
            .iter()
            .all(|(k, dv)| l.get(k).map_or_else(|| is_empty(dv), |lv| covers(lv, dv))),
        (Value::Array(l), Value::Array(d)) => {
            l.len() == d.len() && l.iter().zip(d).all(|(lv, dv)| covers(lv, dv))
        }
        (l, d) => l == d,
    }
}

/// Annotation the operator sets when it removes fields other managers added. A removal alone
/// leaves no trace in `managedFields` (nobody owns a deleted field, and the other manager's
/// entry just vanishes), which a managedFields-based observer such as the sentinel cannot tell
/// from an edit of `managedFields` itself; the annotation makes the operator's entry visible.
pub const PRUNED_AT_ANNOTATION: &str = "kube-sentinel.dev/pruned-at";

/// The JSON Patch that removes `removals` from `live` (guarded by its resourceVersion) and
/// stamps [`PRUNED_AT_ANNOTATION`] with `now`.
fn removal_patch(live: &Value, removals: &[String], now: &str) -> Vec<Value> {
    let mut ops = vec![json!({"op": "test", "path": "/metadata/resourceVersion",
                              "value": live["metadata"]["resourceVersion"]})];
    ops.extend(removals.iter().map(|p| json!({"op": "remove", "path": p})));
    let annotations_kept = live["metadata"]["annotations"].is_object()
        && !removals
            .iter()
            .any(|p| p == "/metadata/annotations" || p == "/metadata");
    if annotations_kept {
        let path = format!(
            "/metadata/annotations/{}",
            PRUNED_AT_ANNOTATION.replace('~', "~0").replace('/', "~1")
        );
        ops.push(json!({"op": "add", "path": path, "value": now}));
    } else {
        ops.push(json!({"op": "add", "path": "/metadata/annotations", "value": {PRUNED_AT_ANNOTATION: now}}));
    }
    ops
}

/// One step of a path into a JSON document.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Seg {
    Index(usize),
    Key(String),
}

/// JSON Pointers of the fields owned by managers other than the operator (status excluded)
/// that the desired object does not specify, ordered so that removing them one after the other
/// is valid (higher list indices first). [`BEFORE_FIRST_APPLY`]'s fields are judged against the
/// baseline instead, and left alone without one.
pub(crate) fn foreign_removals(
    live: &Value,
    desired: &Value,
    baseline: Option<&Value>,
) -> Vec<String> {
    let mut found: Vec<Vec<Seg>> = Vec::new();
    let entries = live["metadata"]["managedFields"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for entry in &entries {
        if entry["manager"] == OPERATOR_FIELD_MANAGER
            || entry["subresource"].as_str().is_some_and(|s| !s.is_empty())
        {
            continue;
        }
        let against = if entry["manager"] == BEFORE_FIRST_APPLY {
            baseline
        } else {
            Some(desired)
        };
        if let (Some(fields), Some(against)) = (entry["fieldsV1"].as_object(), against) {
            walk(fields, live, against, &mut Vec::new(), &mut found);
        }
    }
    found.sort();
    found.dedup();
    found.reverse();
    found.iter().map(|p| pointer(p)).collect()
}

fn walk(
    fields: &Map<String, Value>,
    live: &Value,
    desired: &Value,
    path: &mut Vec<Seg>,
    out: &mut Vec<Vec<Seg>>,
) {
    for (key, sub) in fields {
        let sub = sub.as_object();
        if let Some(field) = key.strip_prefix("f:") {
            if field == "status" && path.is_empty() {
                continue;
            }
            let Some(live_child) = live.get(field) else {
                continue;
            };
            path.push(Seg::Key(field.to_string()));
            match (desired.get(field), sub) {
                (Some(d), Some(sub)) => walk(sub, live_child, d, path, out),
                (Some(_), None) => {}
                // A map or list the operator does not specify: remove what this manager put in
                // it, item by item, not the container, which other managers may share (the
                // operator's own pruned-at annotation, for one).
                (None, Some(sub)) if sub.keys().any(|k| k != ".") => {
                    walk(sub, live_child, &Value::Null, path, out)
                }
                (None, Some(sub)) if sub.contains_key(".") => {}
                // Emptied already (the API server may keep an empty entry for it), or holding
                // only the operator's mark.
                (None, _) if only_operator_marks(live_child) => {}
                (None, _) => out.push(path.clone()),
            }
            path.pop();
        } else if let Some(keys) = key.strip_prefix("k:") {
            let (Ok(Value::Object(keys)), Some(items)) =
                (serde_json::from_str::<Value>(keys), live.as_array())
            else {
                continue;
            };
            let Some(index) = items
                .iter()
                .position(|item| keys.iter().all(|(k, v)| item.get(k) == Some(v)))
            else {
                continue;
            };
            // A desired item matches when every key it states agrees (keys it omits are
            // defaulted by the API server, e.g. a port's protocol).
            let matching = desired.as_array().and_then(|d| {
                d.iter().find(|item| {
                    keys.iter()
                        .all(|(k, v)| item.get(k).is_none_or(|dv| dv == v))
                })
            });
            path.push(Seg::Index(index));
            match matching {
                None => out.push(path.clone()),
                Some(d) => {
                    if let Some(sub) = sub {
                        walk(sub, &items[index], d, path, out);
                    }
                }
            }
            path.pop();
        } else if let Some(value) = key.strip_prefix("v:") {
            let (Ok(value), Some(items)) = (serde_json::from_str::<Value>(value), live.as_array())
            else {
                continue;
            };
            let wanted = desired.as_array().is_some_and(|d| d.contains(&value));
            if let (false, Some(index)) = (wanted, items.iter().position(|v| *v == value)) {
                path.push(Seg::Index(index));
                out.push(path.clone());
                path.pop();
            }
        }
    }
}

fn only_operator_marks(value: &Value) -> bool {
    match value {
        Value::Object(m) => m.keys().all(|k| k == PRUNED_AT_ANNOTATION),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

fn pointer(path: &[Seg]) -> String {
    let mut s = String::new();
    for seg in path {
        s.push('/');
        match seg {
            Seg::Index(i) => s.push_str(&i.to_string()),
            Seg::Key(k) => s.push_str(&k.replace('~', "~0").replace('/', "~1")),
        }
    }
    s
}

/// Fields that change on every write or belong to others; not a difference worth reporting.
fn ignored(path: &str) -> bool {
    matches!(
        path,
        "metadata.managedFields" | "metadata.resourceVersion" | "metadata.generation" | "status"
    ) || path.strip_prefix("metadata.annotations.") == Some(PRUNED_AT_ANNOTATION)
}

/// Appends to `out` the dotted paths where `a` and `b` differ (lists compared whole).
fn diff(a: &Value, b: &Value, prefix: &mut String, out: &mut Vec<String>) {
    if ignored(prefix) {
        return;
    }
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => {
            for key in a.keys().chain(b.keys().filter(|k| !a.contains_key(*k))) {
                let len = prefix.len();
                if !prefix.is_empty() {
                    prefix.push('.');
                }
                prefix.push_str(key);
                diff(
                    a.get(key).unwrap_or(&Value::Null),
                    b.get(key).unwrap_or(&Value::Null),
                    prefix,
                    out,
                );
                prefix.truncate(len);
            }
        }
        // A map that appears or goes is reported key by key (so ignored keys stay ignored).
        (Value::Null, Value::Object(_)) => diff(&json!({}), b, prefix, out),
        (Value::Object(_), Value::Null) => diff(a, &json!({}), prefix, out),
        (a, b) if a != b => out.push(prefix.clone()),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live() -> Value {
        json!({
            "metadata": {
                "name": "db",
                "labels": {"app": "db", "extra": "x"},
                "annotations": {"note": "hand"},
                "finalizers": ["example.com/keep"],
                "managedFields": [
                    {"manager": OPERATOR_FIELD_MANAGER, "operation": "Apply",
                     "fieldsV1": {"f:metadata": {"f:labels": {"f:app": {}}}, "f:data": {"f:a": {}}}},
                    {"manager": "kubectl-edit", "operation": "Update",
                     "fieldsV1": {"f:metadata": {"f:labels": {"f:extra": {}}, "f:annotations": {".": {}, "f:note": {}},
                                                  "f:finalizers": {"v:\"example.com/keep\"": {}}},
                                  "f:data": {"f:a": {}, "f:b": {}},
                                  "f:spec": {"f:ports": {"k:{\"port\":80,\"protocol\":\"TCP\"}": {".": {}, "f:name": {}},
                                                         "k:{\"port\":9,\"protocol\":\"TCP\"}": {".": {}, "f:port": {}}}}}},
                    {"manager": "kube-controller-manager", "operation": "Update", "subresource": "status",
                     "fieldsV1": {"f:status": {"f:replicas": {}}}}
                ]
            },
            "data": {"a": "1", "b": "2"},
            "spec": {"ports": [{"port": 9, "protocol": "TCP"}, {"port": 80, "protocol": "TCP", "name": "web"}]},
            "status": {"replicas": 1}
        })
    }

    #[test]
    fn removes_only_what_other_managers_added() {
        let desired = json!({
            "metadata": {"name": "db", "labels": {"app": "db"}},
            "data": {"a": "1"},
            "spec": {"ports": [{"port": 80, "name": "web"}]}
        });
        assert_eq!(
            foreign_removals(&live(), &desired, None),
            vec![
                "/spec/ports/0",
                "/metadata/labels/extra",
                "/metadata/finalizers/0",
                "/metadata/annotations/note",
                "/data/b",
            ]
        );
    }

    #[test]
    fn ignored_fields_keep_their_live_values_and_are_never_removed() {
        let desired = json!({
            "metadata": {"name": "db", "labels": {"app": "db"}, "annotations": {"owner": "me"}},
            "data": {"a": "9"},
            "spec": {"ports": [{"port": 80, "name": "web"}]}
        });
        let paths = |list: &[&str]| -> Vec<FieldPath> {
            list.iter()
                .map(|p| FieldPath::parse(p).expect("path"))
                .collect()
        };
        let ignore = paths(&[
            "/data/a",
            "/data/b",
            "/metadata/annotations/owner",
            "/metadata/labels/extra",
        ]);
        let kept = keep_ignored(&desired, &live(), &ignore);
        assert_eq!(
            kept["data"],
            json!({"a": "1"}),
            "the live value, no 'b' added"
        );
        assert_eq!(
            kept["metadata"]["annotations"],
            json!({}),
            "absent live: not applied"
        );
        assert_eq!(kept["spec"], desired["spec"]);
        let removals = removals_outside(&live(), &kept, None, &ignore);
        assert!(!removals.contains(&"/data/b".to_string()), "{removals:?}");
        assert!(!removals.contains(&"/metadata/labels/extra".to_string()));
        assert!(removals.contains(&"/metadata/annotations/note".to_string()));
        // Without rules, nothing changes.
        assert_eq!(keep_ignored(&desired, &live(), &[]), desired);
    }

    #[test]
    fn nothing_to_remove_when_desired_covers_everything() {
        let desired = json!({
            "metadata": {"name": "db", "labels": {"app": "db", "extra": "x"}, "annotations": {"note": "hand"},
                         "finalizers": ["example.com/keep"]},
            "data": {"a": "1", "b": "2"},
            "spec": {"ports": [{"port": 80, "name": "web"}, {"port": 9}]}
        });
        assert!(foreign_removals(&live(), &desired, None).is_empty());
    }

    #[test]
    fn after_a_wipe_only_what_the_server_would_not_set_itself_is_foreign() {
        // A wipe, a client's label and sidecar, then the operator's apply: the API server's
        // entry owns everything the object held.
        let live = json!({
            "metadata": {"name": "db", "labels": {"app": "db", "wiped-by": "x"}, "managedFields": [
                {"manager": OPERATOR_FIELD_MANAGER, "operation": "Apply",
                 "fieldsV1": {"f:metadata": {"f:labels": {"f:app": {}}},
                              "f:spec": {"f:replicas": {}, "f:containers": {"k:{\"name\":\"db\"}": {".": {}, "f:name": {}}}}}},
                {"manager": BEFORE_FIRST_APPLY, "operation": "Update",
                 "fieldsV1": {"f:metadata": {"f:labels": {".": {}, "f:app": {}, "f:wiped-by": {}}},
                              "f:spec": {"f:replicas": {}, "f:dnsPolicy": {}, "f:clusterIP": {},
                                         "f:containers": {"k:{\"name\":\"db\"}": {".": {}, "f:name": {}, "f:imagePullPolicy": {}},
                                                          "k:{\"name\":\"sidecar\"}": {".": {}, "f:name": {}}}}}}
            ]},
            "spec": {"replicas": 3, "dnsPolicy": "ClusterFirst", "clusterIP": "10.0.0.7",
                     "containers": [{"name": "db", "imagePullPolicy": "IfNotPresent"}, {"name": "sidecar"}]}
        });
        let desired = json!({
            "metadata": {"name": "db", "labels": {"app": "db"}},
            "spec": {"replicas": 3, "containers": [{"name": "db"}]}
        });
        // The server's own version of the desired object: defaults and its own allocation.
        let baseline = json!({
            "metadata": {"name": "db-x7k2p", "labels": {"app": "db"}},
            "spec": {"replicas": 3, "dnsPolicy": "ClusterFirst", "clusterIP": "10.0.0.9",
                     "containers": [{"name": "db", "imagePullPolicy": "IfNotPresent"}]}
        });
        assert_eq!(
            foreign_removals(&live, &desired, Some(&baseline)),
            vec!["/spec/containers/1", "/metadata/labels/wiped-by"]
        );
        // Without the server's version nothing of unknown origin is removed.
        assert!(foreign_removals(&live, &desired, None).is_empty());
    }

    #[test]
    fn covers_allows_defaults_but_not_changes() {
        let live = json!({"spec": {"replicas": 3, "ports": [{"port": 80, "protocol": "TCP"}]}});
        assert!(covers(&live, &json!({"spec": {"ports": [{"port": 80}]}})));
        assert!(!covers(&live, &json!({"spec": {"replicas": 2}})));
        assert!(!covers(
            &live,
            &json!({"spec": {"ports": [{"port": 80}, {"port": 81}]}})
        ));
        assert!(covers(&live, &json!({"data": {}})));
        assert!(!covers(&live, &json!({"metadata": {"name": "x"}})));
    }

    #[test]
    fn a_container_another_manager_only_created_is_left_to_its_other_owners() {
        let live = json!({
            "metadata": {"name": "db", "annotations": {PRUNED_AT_ANNOTATION: "T"}, "managedFields": [
                {"manager": "kubectl-edit", "operation": "Update", "fieldsV1": {"f:metadata": {"f:annotations": {".": {}}}}},
                {"manager": OPERATOR_FIELD_MANAGER, "operation": "Update",
                 "fieldsV1": {"f:metadata": {"f:annotations": {format!("f:{PRUNED_AT_ANNOTATION}"): {}}}}}
            ]}
        });
        assert!(foreign_removals(&live, &json!({"metadata": {"name": "db"}}), None).is_empty());
        let mut emptied = live.clone();
        emptied["metadata"]["managedFields"][0]["fieldsV1"] =
            json!({"f:metadata": {"f:annotations": {}}});
        assert!(foreign_removals(&emptied, &json!({"metadata": {"name": "db"}}), None).is_empty());
    }

    #[test]
    fn removal_patch_stamps_the_operator_on_the_object() {
        let live = live();
        let ops = removal_patch(&live, &["/metadata/labels/extra".into()], "T");
        assert_eq!(ops[0]["op"], "test");
        assert_eq!(
            ops[1],
            json!({"op": "remove", "path": "/metadata/labels/extra"})
        );
        assert_eq!(
            ops[2],
            json!({"op": "add", "path": "/metadata/annotations/kube-sentinel.dev~1pruned-at", "value": "T"})
        );
        // When every annotation goes, the stamp brings the map back with itself alone.
        let ops = removal_patch(&live, &["/metadata/annotations".into()], "T");
        assert_eq!(
            ops[2],
            json!({"op": "add", "path": "/metadata/annotations", "value": {"kube-sentinel.dev/pruned-at": "T"}})
        );
        let mut patched = live.clone();
        patched["metadata"]["annotations"] = json!({"kube-sentinel.dev/pruned-at": "T"});
        assert!(covers(&patched, &json!({"metadata": {"name": "db"}})));
    }

    #[test]
    fn pointers_escape_slashes_and_tildes() {
        assert_eq!(
            pointer(&[Seg::Key("metadata".into()), Seg::Key("a/b~c".into())]),
            "/metadata/a~1b~0c"
        );
    }

    #[test]
    fn diff_reports_changed_paths_and_skips_bookkeeping() {
        let a = json!({"metadata": {"resourceVersion": "1", "labels": {"x": "1"}}, "spec": {"replicas": 3}, "status": {"r": 1}});
        let b = json!({"metadata": {"resourceVersion": "2", "labels": {}, "annotations": {PRUNED_AT_ANNOTATION: "T"}},
                       "spec": {"replicas": 1}, "status": {"r": 2}});
        let mut out = Vec::new();
        diff(&a, &b, &mut String::new(), &mut out);
        assert_eq!(out, vec!["metadata.labels.x", "spec.replicas"]);
    }
}
