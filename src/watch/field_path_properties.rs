//! Properties of ignore rules beyond those in the module's tests: any path prints and parses
//! back, every pointer a path finds in any object is one that resolves there, the paths of a
//! fieldsV1 tree's own leaves cover it, and rules are selected by kind and name only.

use proptest::prelude::*;
use serde_json::{Value, json};

use super::{FieldPath, FieldsSegment, Segment, ignored_paths, leaves_of};
use crate::contract::{IgnoreRule, IgnoredKind};

/// Keys as objects have them, `/` and `~` included, and list indices.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec!["name", "spec", "a/b", "c~d", "~1", "0", "1", "*x"])
            .prop_map(String::from),
        "\\PC{1,6}",
    ]
}

fn any_object() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<i64>().prop_map(Value::from),
        key().prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(key(), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn any_path() -> impl Strategy<Value = FieldPath> {
    let segment = prop_oneof![
        1 => Just(Segment::Any),
        4 => key().prop_filter("'*' is the wildcard", |k| k != "*").prop_map(Segment::Named),
    ];
    prop::collection::vec(segment, 1..5).prop_map(|segments| FieldPath { segments })
}

fn fields_tree() -> impl Strategy<Value = Value> {
    let field = prop_oneof![
        key().prop_map(|k| format!("f:{k}")),
        key().prop_map(|n| format!("k:{}", json!({ "name": n }))),
        key().prop_map(|v| format!("v:{}", json!(v))),
        (0u8..4).prop_map(|i| format!("i:{i}")),
        Just("k:{\"port\":80}".to_string()),
        Just(".".to_string()),
        "\\PC{0,6}",
    ];
    Just(json!({})).prop_recursive(4, 32, 4, move |inner| {
        prop::collection::btree_map(field.clone(), inner, 0..4)
            .prop_map(|m| Value::Object(m.into_iter().collect()))
    })
}

fn kind() -> impl Strategy<Value = IgnoredKind> {
    prop::sample::select(vec![
        IgnoredKind::StatefulSet,
        IgnoredKind::Service,
        IgnoredKind::ConfigMap,
    ])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Any path, keys with `/`, `~` and any character included, prints to a pointer that
    /// parses back to it.
    #[test]
    fn any_path_prints_and_parses_back(path in any_path()) {
        prop_assert_eq!(FieldPath::parse(&path.to_string()), Ok(path));
    }

    /// Every pointer a path finds in an object resolves in it (RFC 6901), is found once, and
    /// is covered by the path.
    #[test]
    fn pointers_found_resolve_in_the_object(path in any_path(), object in any_object()) {
        let found = path.pointers_in(&object);
        for (i, pointer) in found.iter().enumerate() {
            prop_assert!(object.pointer(pointer).is_some(), "{pointer} in {object}");
            prop_assert!(!found[..i].contains(pointer), "{pointer} twice");
            prop_assert!(path.covers_pointer(&object, pointer), "{pointer}");
        }
    }

    /// The paths of a fieldsV1 tree's own leaves (an item without a name as `*`) cover it.
    #[test]
    fn a_trees_own_leaves_cover_it(tree in fields_tree()) {
        let mut leaves = Vec::new();
        if let Some(map) = tree.as_object() {
            leaves_of(map, &mut Vec::new(), &mut leaves);
        }
        let paths: Vec<FieldPath> = leaves
            .iter()
            .map(|leaf| FieldPath {
                segments: leaf
                    .iter()
                    .map(|s| match s {
                        FieldsSegment::Field(f) => Segment::Named(f.clone()),
                        FieldsSegment::Item(Some(n)) => Segment::Named(n.clone()),
                        FieldsSegment::Item(None) => Segment::Any,
                    })
                    .collect(),
            })
            .collect();
        prop_assert!(FieldPath::all_cover_fields(&paths, &tree));
    }

    /// The paths that apply to an object are exactly the parseable paths of the rules of its
    /// kind that name it or no object; any other rule, or path, changes nothing.
    #[test]
    fn rules_apply_by_kind_and_name(
        rules in prop::collection::vec(
            (kind(), prop::option::of("db|cfg|\\PC{0,4}"), prop::collection::vec("[/a-z~*]{0,6}", 0..4)),
            0..6,
        ),
        object_kind in kind(),
        name in "db|cfg",
    ) {
        let rules: Vec<IgnoreRule> = rules
            .into_iter()
            .map(|(kind, name, paths)| IgnoreRule { kind, name, paths })
            .collect();
        let expected: Vec<FieldPath> = rules
            .iter()
            .filter(|r| r.kind == object_kind && r.name.as_ref().is_none_or(|n| *n == name))
            .flat_map(|r| r.paths.iter().filter_map(|p| FieldPath::parse(p).ok()))
            .collect();
        prop_assert_eq!(ignored_paths(&rules, object_kind.as_str(), &name), expected);
    }
}
