//! Field paths of ignore rules, matched against `managedFields` and against objects.
//!
//! A [`FieldPath`] is a JSON Pointer (`/spec/replicas`,
//! `/metadata/annotations/sidecar.istio.io~1status`) that covers everything under it. A segment
//! `*` matches any map key or list item; a list item is also matched by its `name`, or by its
//! index. The same path is matched two ways:
//!
//! * against a `managedFields` entry's `fieldsV1` ([`FieldPath::covers_fields`]): the sentinel
//!   asks whether everything a manager owns lies under ignored paths, in which case its write
//!   is not drift;
//! * against an object ([`FieldPath::pointers_in`]): the operator finds the concrete JSON
//!   Pointers a path names in the live and desired objects, to leave those fields as they are.

use std::fmt;

use serde_json::{Map, Value};

use crate::contract::IgnoreRule;

/// The paths of `rules` that apply to the object `kind` `name`. A path that does not parse is
/// skipped (the CRD refuses it; an older CRD may not have).
pub fn ignored_paths(rules: &[IgnoreRule], kind: &str, name: &str) -> Vec<FieldPath> {
    rules
        .iter()
        .filter(|r| r.kind.as_str() == kind && r.name.as_deref().is_none_or(|n| n == name))
        .flat_map(|r| &r.paths)
        .filter_map(|p| FieldPath::parse(p).ok())
        .collect()
}

/// One segment of a [`FieldPath`].
#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    /// `*`: any key or item.
    Any,
    /// A key, or a list item's `name` or index.
    Named(String),
}

/// An ignore rule's path; see the [module documentation](self).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldPath {
    segments: Vec<Segment>,
}

/// Why a path was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("{path:?} is not a field path: {reason}")]
pub struct InvalidPath {
    path: String,
    reason: &'static str,
}

impl FieldPath {
    /// Parses a JSON Pointer with `*` segments.
    pub fn parse(pointer: &str) -> Result<Self, InvalidPath> {
        let invalid = |reason| InvalidPath {
            path: pointer.to_string(),
            reason,
        };
        let rest = pointer
            .strip_prefix('/')
            .ok_or_else(|| invalid("it must start with '/'"))?;
        let segments = rest
            .split('/')
            .map(|raw| match raw {
                "" => Err(invalid("a segment is empty")),
                "*" => Ok(Segment::Any),
                raw => unescape(raw)
                    .map(Segment::Named)
                    .ok_or_else(|| invalid("'~' must be followed by 0 or 1")),
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { segments })
    }

    /// Whether every field `fields` (a `fieldsV1` tree) records lies under this path or one of
    /// `others`; an empty tree is covered.
    pub fn all_cover_fields(paths: &[FieldPath], fields: &Value) -> bool {
        let mut leaves = Vec::new();
        if let Some(fields) = fields.as_object() {
            leaves_of(fields, &mut Vec::new(), &mut leaves);
        }
        leaves
            .iter()
            .all(|leaf| paths.iter().any(|p| p.covers_leaf(leaf)))
    }

    /// Whether this path covers the `fieldsV1` leaf `leaf`.
    fn covers_leaf(&self, leaf: &[FieldsSegment]) -> bool {
        self.segments.len() <= leaf.len()
            && self.segments.iter().zip(leaf).all(|(s, l)| match (s, l) {
                (Segment::Any, _) => true,
                (Segment::Named(n), FieldsSegment::Field(f)) => n == f,
                (Segment::Named(n), FieldsSegment::Item(name)) => name.as_deref() == Some(n),
            })
    }

    /// The JSON Pointers of the fields of `object` this path names (escaped, in document
    /// order).
    pub fn pointers_in(&self, object: &Value) -> Vec<String> {
        let mut found = Vec::new();
        expand(&self.segments, object, &mut String::new(), &mut found);
        found
    }

    /// Whether the concrete JSON Pointer `pointer` lies under this path in `object` (a
    /// pointer found by [`Self::pointers_in`] or below one).
    pub fn covers_pointer(&self, object: &Value, pointer: &str) -> bool {
        self.pointers_in(object).iter().any(|p| {
            pointer == p
                || pointer
                    .strip_prefix(p.as_str())
                    .is_some_and(|rest| rest.starts_with('/'))
        })
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for segment in &self.segments {
            match segment {
                Segment::Any => f.write_str("/*")?,
                Segment::Named(n) => write!(f, "/{}", escape(n))?,
            }
        }
        Ok(())
    }
}

/// One step into a `fieldsV1` tree: a field (`f:`) or a list item (`k:` by its `name` key
/// when it has one, `v:` by its value when a string, `i:` by index).
#[derive(Clone, Debug, PartialEq, Eq)]
enum FieldsSegment {
    Field(String),
    Item(Option<String>),
}

/// The leaves of a `fieldsV1` tree: entries with no children but `.` (the field itself).
fn leaves_of(
    fields: &Map<String, Value>,
    path: &mut Vec<FieldsSegment>,
    out: &mut Vec<Vec<FieldsSegment>>,
) {
    for (key, sub) in fields {
        if key == "." {
            continue;
        }
        let segment = if let Some(field) = key.strip_prefix("f:") {
            FieldsSegment::Field(field.to_string())
        } else if let Some(keys) = key.strip_prefix("k:") {
            let keys = serde_json::from_str::<Value>(keys).ok();
            let name = keys
                .as_ref()
                .and_then(|k| k.get("name"))
                .and_then(Value::as_str);
            FieldsSegment::Item(name.map(str::to_string))
        } else if let Some(value) = key.strip_prefix("v:") {
            let value = serde_json::from_str::<Value>(value).ok();
            FieldsSegment::Item(value.as_ref().and_then(Value::as_str).map(str::to_string))
        } else if let Some(index) = key.strip_prefix("i:") {
            FieldsSegment::Item(Some(index.to_string()))
        } else {
            // A key no version of the format has: judged as a field of that name, so that an
            // ignore rule cannot be widened by an odd entry.
            FieldsSegment::Field(key.clone())
        };
        path.push(segment);
        match sub.as_object() {
            Some(children) if children.keys().any(|k| k != ".") => leaves_of(children, path, out),
            _ => out.push(path.clone()),
        }
        path.pop();
    }
}

fn expand(segments: &[Segment], value: &Value, at: &mut String, out: &mut Vec<String>) {
    let Some((first, rest)) = segments.split_first() else {
        out.push(at.clone());
        return;
    };
    let mut descend = |step: &str, child: &Value, at: &mut String| {
        let len = at.len();
        at.push('/');
        at.push_str(&escape(step));
        expand(rest, child, at, out);
        at.truncate(len);
    };
    match (value, first) {
        (Value::Object(map), Segment::Any) => {
            for (key, child) in map {
                descend(key, child, at);
            }
        }
        (Value::Object(map), Segment::Named(name)) => {
            if let Some(child) = map.get(name) {
                descend(name, child, at);
            }
        }
        (Value::Array(items), segment) => {
            for (index, item) in items.iter().enumerate() {
                let named = match segment {
                    Segment::Any => true,
                    Segment::Named(n) => {
                        item.get("name").and_then(Value::as_str) == Some(n.as_str())
                            || item.as_str() == Some(n.as_str())
                            || n.parse() == Ok(index)
                    }
                };
                if named {
                    descend(&index.to_string(), item, at);
                }
            }
        }
        _ => {}
    }
}

fn unescape(raw: &str) -> Option<String> {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        match c {
            '~' => match chars.next()? {
                '0' => out.push('~'),
                '1' => out.push('/'),
                _ => return None,
            },
            c => out.push(c),
        }
    }
    Some(out)
}

/// Escapes one JSON Pointer segment.
pub fn escape(segment: &str) -> String {
    segment.replace('~', "~0").replace('/', "~1")
}

#[cfg(test)]
#[path = "field_path_properties.rs"]
mod properties;

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    fn paths(list: &[&str]) -> Vec<FieldPath> {
        list.iter()
            .map(|p| FieldPath::parse(p).expect("path"))
            .collect()
    }

    #[test]
    fn malformed_paths_are_refused_with_the_reason() {
        for (bad, reason) in [
            ("spec/replicas", "it must start with '/'"),
            ("/spec//replicas", "a segment is empty"),
            ("/", "a segment is empty"),
            ("/a~2b", "'~' must be followed by 0 or 1"),
        ] {
            let error = FieldPath::parse(bad).expect_err(bad);
            assert!(error.to_string().contains(reason), "{bad}: {error}");
        }
        let path = FieldPath::parse("/metadata/annotations/a.io~1b~0c").expect("path");
        assert_eq!(path.to_string(), "/metadata/annotations/a.io~1b~0c");
    }

    #[test]
    fn a_manager_owning_only_ignored_fields_is_covered() {
        let scale = json!({"f:spec": {"f:replicas": {}}});
        let image = json!({"f:spec": {"f:template": {"f:spec": {"f:containers": {
            "k:{\"name\":\"member\"}": {".": {}, "f:image": {}}}}}}});
        let annotation = json!({"f:metadata": {"f:annotations": {
            ".": {}, "f:mesh.io/status": {}}}});
        let replicas = paths(&["/spec/replicas"]);
        assert!(FieldPath::all_cover_fields(&replicas, &scale));
        assert!(!FieldPath::all_cover_fields(&replicas, &image));
        for images in [
            "/spec/template/spec/containers/member/image",
            "/spec/template/spec/containers/*/image",
            "/spec/template",
        ] {
            assert!(
                FieldPath::all_cover_fields(&paths(&[images]), &image),
                "{images}"
            );
        }
        let other = paths(&["/spec/template/spec/containers/sidecar/image"]);
        assert!(!FieldPath::all_cover_fields(&other, &image));
        let mesh = paths(&["/metadata/annotations/mesh.io~1status"]);
        assert!(FieldPath::all_cover_fields(&mesh, &annotation));
        assert!(!FieldPath::all_cover_fields(
            &paths(&["/metadata/annotations/other"]),
            &annotation
        ));
        assert!(FieldPath::all_cover_fields(&replicas, &json!({})));
    }

    #[test]
    fn pointers_name_keys_items_by_name_and_wildcards() {
        let object = json!({"spec": {"replicas": 3, "template": {"spec": {"containers": [
            {"name": "member", "image": "db:1"}, {"name": "sidecar", "image": "proxy:1"}]}}},
            "metadata": {"annotations": {"a/b": "x", "c": "y"}}});
        let at = |p: &str| FieldPath::parse(p).expect("path").pointers_in(&object);
        assert_eq!(at("/spec/replicas"), vec!["/spec/replicas"]);
        assert_eq!(at("/spec/missing"), Vec::<String>::new());
        assert_eq!(
            at("/spec/template/spec/containers/sidecar/image"),
            vec!["/spec/template/spec/containers/1/image"]
        );
        assert_eq!(
            at("/spec/template/spec/containers/*/image"),
            vec![
                "/spec/template/spec/containers/0/image",
                "/spec/template/spec/containers/1/image"
            ]
        );
        assert_eq!(
            at("/metadata/annotations/a~1b"),
            vec!["/metadata/annotations/a~1b"]
        );
        assert_eq!(at("/metadata/annotations/*").len(), 2);
        let path = FieldPath::parse("/metadata/annotations/a~1b").expect("path");
        assert!(path.covers_pointer(&object, "/metadata/annotations/a~1b"));
        assert!(!path.covers_pointer(&object, "/metadata/annotations/c"));
        assert!(!path.covers_pointer(&object, "/metadata/annotations/a~1bc"));
    }

    fn fields_tree() -> impl Strategy<Value = Value> {
        let key = prop_oneof![
            "[a-z]{1,3}".prop_map(|k| format!("f:{k}")),
            "[a-z]{1,3}".prop_map(|n| format!("k:{{\"name\":\"{n}\"}}")),
            "[a-z]{1,3}".prop_map(|v| format!("v:\"{v}\"")),
            Just(".".to_string()),
            "[a-z:{}\"]{0,6}",
        ];
        let leaf = Just(json!({}));
        leaf.prop_recursive(4, 32, 4, move |inner| {
            prop::collection::btree_map(key.clone(), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect()))
        })
    }

    proptest! {
        /// No tree makes matching panic; a rule covering every top-level field covers all, and
        /// a rule that covers nothing covers only an empty tree.
        #[test]
        fn matching_any_fields_tree_is_total(tree in fields_tree()) {
            let everything = paths(&["/*"]);
            prop_assert!(FieldPath::all_cover_fields(&everything, &tree));
            let mut leaves = Vec::new();
            if let Some(map) = tree.as_object() {
                leaves_of(map, &mut Vec::new(), &mut leaves);
            }
            prop_assert_eq!(FieldPath::all_cover_fields(&[], &tree), leaves.is_empty());
            let _ = paths(&["/f/*/x"])[0].pointers_in(&tree);
        }

        /// Parsing never panics, and what parses prints back to a path that parses the same.
        #[test]
        fn parsing_any_string_is_total(raw in "[/a-z~01*]{0,12}") {
            if let Ok(path) = FieldPath::parse(&raw) {
                prop_assert_eq!(FieldPath::parse(&path.to_string()), Ok(path));
            }
        }
    }
}
