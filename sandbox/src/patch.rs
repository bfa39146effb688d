//! The three classic PATCH formats (server-side apply lives in `apply`).
//!
//! * JSON patch (RFC 6902, `application/json-patch+json`): a list of
//!   operations on JSON pointers; a failed `test` aborts the whole patch
//!   with 422.
//! * JSON merge patch (RFC 7386, `application/merge-patch+json`): a partial
//!   object; `null` deletes a field, lists are replaced whole.
//! * Strategic merge patch (`application/strategic-merge-patch+json`):
//!   Kubernetes' own variant of merge patch that knows which lists merge by
//!   key (`containers` by `name`, ...), so a patch can change one container
//!   without repeating the others. Only built-in kinds support it.

use serde_json::{Map, Value, json};

use crate::error::{Error, Result};
use crate::lists::{ListType, list_type};
use crate::registry::ResourceType;

/// RFC 6902.
pub fn json_patch(doc: &Value, patch: &[u8]) -> Result<Value> {
    let ops: json_patch::Patch =
        serde_json::from_slice(patch).map_err(|e| Error::bad_request(e.to_string()))?;
    let mut out = doc.clone();
    json_patch::patch(&mut out, &ops).map_err(|e| {
        // Upstream answers any failed operation, a `test` included, with a
        // generic 422 whose cause carries the patch library's message.
        let mut err = Error::unprocessable("the server rejected our request due to an error in our request".into());
        if let Error::Api(s) = &mut err {
            s.details = Some(json!({"causes": [{"reason": "UnexpectedServerResponse", "message": e.to_string()}]}));
        }
        err
    })?;
    Ok(out)
}

/// RFC 7386.
pub fn merge_patch(doc: &Value, patch: &[u8]) -> Result<Value> {
    let p: Value = serde_json::from_slice(patch)
        .map_err(|e| Error::bad_request(format!("error decoding patch: {e}")))?;
    if !p.is_object() {
        return Err(Error::bad_request(
            "error decoding patch: a merge patch must be a JSON object",
        ));
    }
    let mut out = doc.clone();
    json_patch::merge(&mut out, &p);
    Ok(out)
}

/// Strategic merge patch for built-in kinds.
pub fn strategic_merge_patch(rt: &ResourceType, doc: &Value, patch: &[u8]) -> Result<Value> {
    let p: Value = serde_json::from_slice(patch)
        .map_err(|e| Error::bad_request(format!("error decoding patch: {e}")))?;
    let Value::Object(p) = p else {
        return Err(Error::bad_request(
            "error decoding patch: a strategic merge patch must be a JSON object",
        ));
    };
    let mut out = doc.clone();
    smp_map(rt, &mut out, &p, &mut vec![]);
    Ok(out)
}

fn smp_map(
    rt: &ResourceType,
    target: &mut Value,
    patch: &Map<String, Value>,
    path: &mut Vec<String>,
) {
    if patch.get("$patch").and_then(Value::as_str) == Some("replace") {
        let mut p = patch.clone();
        p.remove("$patch");
        *target = Value::Object(p);
        return;
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Some(t) = target.as_object_mut() else {
        return;
    };
    // `$deleteFromPrimitiveList/<field>` removes values from a set-like list.
    for (k, v) in patch {
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/")
            && let (Some(list), Some(del)) =
                (t.get_mut(field).and_then(Value::as_array_mut), v.as_array())
        {
            list.retain(|x| !del.contains(x));
        }
    }
    for (k, v) in patch {
        // Other directives ($setElementOrder, $retainKeys) only affect order
        // and pruning of fields kubectl already lists; ignoring them keeps
        // the merged content right.
        if k.starts_with('$') {
            continue;
        }
        path.push(k.clone());
        match v {
            Value::Null => {
                t.remove(k);
            }
            Value::Object(pm) => {
                let entry = t.entry(k.clone()).or_insert(Value::Null);
                smp_map(rt, entry, pm, path);
            }
            Value::Array(items) => {
                let lt = list_type(rt, path);
                let entry = t.entry(k.clone()).or_insert(Value::Array(vec![]));
                smp_list(rt, entry, items, &lt, path);
            }
            other => {
                t.insert(k.clone(), other.clone());
            }
        }
        path.pop();
    }
}

fn item_matches(item: &Value, key: &str, probe: &Value) -> bool {
    item.get(key).is_some() && item.get(key) == probe.get(key)
}

fn smp_list(
    rt: &ResourceType,
    target: &mut Value,
    items: &[Value],
    lt: &ListType,
    path: &mut Vec<String>,
) {
    match lt {
        ListType::Atomic => *target = Value::Array(items.to_vec()),
        ListType::Set => {
            let Some(list) = target.as_array_mut() else {
                *target = Value::Array(items.to_vec());
                return;
            };
            for i in items {
                if !list.contains(i) {
                    list.push(i.clone());
                }
            }
        }
        ListType::Map(keys) => {
            // Strategic merge patch identifies items by the first key only
            // (its `patchMergeKey`); server-side apply uses all of them.
            let key = keys[0].as_str();
            if items
                .iter()
                .any(|i| i.get("$patch").and_then(Value::as_str) == Some("replace"))
            {
                *target = Value::Array(
                    items
                        .iter()
                        .filter(|i| i.get("$patch").is_none())
                        .cloned()
                        .collect(),
                );
                return;
            }
            if !target.is_array() {
                *target = Value::Array(vec![]);
            }
            let Some(list) = target.as_array_mut() else {
                return;
            };
            for item in items {
                let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
                let pos = list.iter().position(|x| item_matches(x, key, item));
                match (pos, delete) {
                    (Some(i), true) => {
                        list.remove(i);
                    }
                    (None, true) => {}
                    (Some(i), false) => {
                        if let Value::Object(pm) = item {
                            smp_map(rt, &mut list[i], pm, path);
                        }
                    }
                    (None, false) => {
                        let mut fresh = Value::Object(Map::new());
                        if let Value::Object(pm) = item {
                            smp_map(rt, &mut fresh, pm, path);
                        }
                        list.push(fresh);
                    }
                }
            }
        }
    }
}
