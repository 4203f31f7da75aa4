//! JSON Patch between the original and the injected pod, derived by diff.
//!
//! Why not `json_patch::diff`: it compares arrays index by index, so inserting `gembok-proxy` at
//! index 0 of `initContainers` turns into "replace" operations on every existing init container
//! plus an "add" of the last one at the end. Those values come from the typed (k8s-openapi) copy of
//! the pod, which has lost every field k8s-openapi does not know (a field from a newer Kubernetes,
//! another webhook's extension), so the API server would silently drop them. This diff matches
//! array elements first (by `name` where elements have one, by value otherwise): when the original
//! array is an ordered subsequence of the new one, it emits one "add" per inserted element and
//! recurses into the matched pairs, so existing elements are never rewritten. Otherwise it falls
//! back to index-by-index comparison. The operation types are `json_patch`'s.

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, Patch, PatchOperation, RemoveOperation, ReplaceOperation};
use serde_json::{Map, Value};

/// Operations that turn `original` into `changed`, safe to apply to a richer copy of `original`.
pub fn diff(original: &Value, changed: &Value) -> Patch {
    let mut ops = Vec::new();
    diff_value(original, changed, &mut PointerBuf::new(), &mut ops);
    Patch(ops)
}

fn diff_value(left: &Value, right: &Value, path: &mut PointerBuf, ops: &mut Vec<PatchOperation>) {
    match (left, right) {
        (Value::Object(l), Value::Object(r)) => diff_object(l, r, path, ops),
        (Value::Array(l), Value::Array(r)) => diff_array(l, r, path, ops),
        _ if left == right => {}
        _ => ops.push(PatchOperation::Replace(ReplaceOperation {
            path: path.clone(),
            value: right.clone(),
        })),
    }
}

fn diff_object(
    left: &Map<String, Value>,
    right: &Map<String, Value>,
    path: &mut PointerBuf,
    ops: &mut Vec<PatchOperation>,
) {
    for (key, right_value) in right {
        path.push_back(key);
        match left.get(key) {
            Some(left_value) => diff_value(left_value, right_value, path, ops),
            None => ops.push(PatchOperation::Add(AddOperation {
                path: path.clone(),
                value: right_value.clone(),
            })),
        }
        path.pop_back();
    }
    for key in left.keys().filter(|k| !right.contains_key(*k)) {
        path.push_back(key);
        ops.push(PatchOperation::Remove(RemoveOperation {
            path: path.clone(),
        }));
        path.pop_back();
    }
}

fn diff_array(
    left: &[Value],
    right: &[Value],
    path: &mut PointerBuf,
    ops: &mut Vec<PatchOperation>,
) {
    match match_subsequence(left, right) {
        Some(matched) => {
            // Insert first, in ascending order: each "add" lands at its final index because every
            // element before it is already in place. Matched pairs are then addressed by their
            // final index.
            for (index, value) in right.iter().enumerate() {
                if !matched.iter().any(|&(_, r)| r == index) {
                    path.push_back(index);
                    ops.push(PatchOperation::Add(AddOperation {
                        path: path.clone(),
                        value: value.clone(),
                    }));
                    path.pop_back();
                }
            }
            for &(l, r) in &matched {
                path.push_back(r);
                diff_value(&left[l], &right[r], path, ops);
                path.pop_back();
            }
        }
        None => diff_by_index(left, right, path, ops),
    }
}

/// Pairs `(left index, right index)` when every left element appears in `right` in the same
/// order, matched greedily by identity; `None` when elements were removed or reordered.
fn match_subsequence(left: &[Value], right: &[Value]) -> Option<Vec<(usize, usize)>> {
    if left.len() > right.len() {
        return None;
    }
    let mut pairs = Vec::with_capacity(left.len());
    let mut next = 0;
    for (r, value) in right.iter().enumerate() {
        if next < left.len() && same_element(&left[next], value) {
            pairs.push((next, r));
            next += 1;
        }
    }
    (next == left.len()).then_some(pairs)
}

/// Elements with a `name` (containers, volumes, env, ports...) are the same element when the
/// names match, whatever else changed; other elements only when equal.
fn same_element(left: &Value, right: &Value) -> bool {
    match (name_of(left), name_of(right)) {
        (Some(l), Some(r)) => l == r,
        _ => left == right,
    }
}

fn name_of(value: &Value) -> Option<&str> {
    value.as_object()?.get("name")?.as_str()
}

fn diff_by_index(
    left: &[Value],
    right: &[Value],
    path: &mut PointerBuf,
    ops: &mut Vec<PatchOperation>,
) {
    for (index, (l, r)) in left.iter().zip(right).enumerate() {
        path.push_back(index);
        diff_value(l, r, path, ops);
        path.pop_back();
    }
    for (index, value) in right.iter().enumerate().skip(left.len()) {
        path.push_back(index);
        ops.push(PatchOperation::Add(AddOperation {
            path: path.clone(),
            value: value.clone(),
        }));
        path.pop_back();
    }
    // Remove from the end so earlier indices stay valid.
    for index in (right.len()..left.len()).rev() {
        path.push_back(index);
        ops.push(PatchOperation::Remove(RemoveOperation {
            path: path.clone(),
        }));
        path.pop_back();
    }
}

#[cfg(test)]
mod tests {
    use super::diff;
    use serde_json::{Value, json};

    fn apply(doc: &Value, patch: &json_patch::Patch) -> Value {
        let mut doc = doc.clone();
        json_patch::patch(&mut doc, patch).expect("patch applies");
        doc
    }

    #[test]
    fn inserting_at_the_front_adds_one_element_and_keeps_unknown_fields_of_the_others() {
        let typed_before = json!({"initContainers": [{"name": "a", "image": "x"}]});
        let typed_after =
            json!({"initContainers": [{"name": "gembok-proxy"}, {"name": "a", "image": "x"}]});
        let patch = diff(&typed_before, &typed_after);
        assert_eq!(patch.0.len(), 1, "{patch:?}");
        let raw = json!({"initContainers": [{"name": "a", "image": "x", "futureField": 1}]});
        assert_eq!(
            apply(&raw, &patch),
            json!({"initContainers": [{"name": "gembok-proxy"}, {"name": "a", "image": "x", "futureField": 1}]})
        );
    }

    #[test]
    fn inserts_in_the_middle_and_edits_matched_elements() {
        let before = json!({"l": [{"name": "a", "v": 1}, {"name": "b"}]});
        let after =
            json!({"l": [{"name": "a", "v": 2}, {"name": "new"}, {"name": "b"}, {"name": "z"}]});
        assert_eq!(apply(&before, &diff(&before, &after)), after);
    }

    #[test]
    fn falls_back_to_index_diff_for_removals_and_reorders() {
        for (before, after) in [
            (json!([1, 2, 3]), json!([3, 1])),
            (
                json!([{"name": "a"}, {"name": "b"}]),
                json!([{"name": "b"}, {"name": "a"}]),
            ),
            (json!({"a": [1], "b": 2}), json!({"a": [], "c": 3})),
            (json!("x"), json!({"y": null})),
        ] {
            assert_eq!(
                apply(&before, &diff(&before, &after)),
                after,
                "{before} -> {after}"
            );
        }
    }

    #[test]
    fn equal_documents_need_no_operation() {
        let doc = json!({"a": [{"name": "x"}], "b": {"c": "d"}});
        assert!(diff(&doc, &doc).0.is_empty());
    }
}
