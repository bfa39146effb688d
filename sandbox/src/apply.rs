//! Server-side apply and field ownership (`metadata.managedFields`).
//!
//! Every write records *who* set *which* fields. An apply request
//! (`PATCH` with `application/apply-patch+yaml` and a `fieldManager`) sends
//! the fields its manager wants to own with the values it wants them to
//! have. The server:
//!
//! 1. refuses (409 Conflict) if another manager owns one of those fields
//!    with a different value, unless `force=true`, which takes ownership;
//! 2. merges the configuration in, list items by their keys;
//! 3. removes fields this manager applied last time but no longer applies,
//!    when no other manager owns them;
//! 4. records the manager's new field set in `managedFields` (FieldsV1
//!    format: a trie of `f:<field>`, `k:<item keys>`, `v:<value>` with `.`
//!    marking an owned node that also has owned children).
//!
//! Plain updates and patches record their changed fields under an `Update`
//! entry and take them away from other managers, which is how a later apply
//! finds out someone else changed its field.

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

use crate::error::{Error, Result};
use crate::lists::{ListType, list_type};
use crate::registry::ResourceType;

/// A path in FieldsV1 notation: `["f:spec", "f:containers", "k:{\"name\":\"db\"}", "f:image"]`.
pub type FieldPath = Vec<String>;
pub type FieldSet = BTreeSet<FieldPath>;

/// One `managedFields` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct ManagedEntry {
    pub manager: String,
    pub operation: String,
    pub api_version: String,
    pub time: String,
    pub subresource: String,
    pub fields: FieldSet,
}

/// Which part of an object a request may write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Everything (kinds without a status subresource).
    All,
    /// Everything but `status`.
    Main,
    /// Only `status`.
    Status,
}

const SERVER_OWNED_META: &[&str] = &[
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
];

/// The fields set in `obj`, as server-side apply counts them.
pub fn fields_of(rt: &ResourceType, obj: &Value, scope: Scope) -> FieldSet {
    let mut out = FieldSet::new();
    let Some(o) = obj.as_object() else { return out };
    for (k, v) in o {
        if k == "apiVersion" || k == "kind" {
            continue;
        }
        let in_scope = match scope {
            Scope::All => true,
            Scope::Main => k != "status",
            Scope::Status => k == "status",
        };
        if !in_scope {
            continue;
        }
        if k == "metadata" {
            if let Some(m) = v.as_object() {
                for (mk, mv) in m {
                    if SERVER_OWNED_META.contains(&mk.as_str()) {
                        continue;
                    }
                    let mut names = vec!["metadata".to_string(), mk.clone()];
                    walk(
                        rt,
                        mv,
                        &mut vec!["f:metadata".into(), format!("f:{mk}")],
                        &mut names,
                        &mut out,
                    );
                }
            }
            continue;
        }
        walk(
            rt,
            v,
            &mut vec![format!("f:{k}")],
            &mut vec![k.clone()],
            &mut out,
        );
    }
    out
}

/// A list item's key field, with the schema default filled in for key
/// fields that have one (a port's `protocol` is TCP), as structured merge
/// does: otherwise an applied port without `protocol` would not match the
/// stored, defaulted one.
fn key_field(item: &Value, k: &str) -> Option<Value> {
    match item.get(k) {
        Some(v) => Some(v.clone()),
        None if k == "protocol" => Some(json!("TCP")),
        None => None,
    }
}

fn item_key(item: &Value, keys: &[String]) -> String {
    let mut m = Map::new();
    for k in keys {
        if let Some(v) = key_field(item, k) {
            m.insert(k.clone(), v);
        }
    }
    format!("k:{}", Value::Object(m))
}

fn walk(
    rt: &ResourceType,
    v: &Value,
    path: &mut FieldPath,
    names: &mut Vec<String>,
    out: &mut FieldSet,
) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, child) in m {
                path.push(format!("f:{k}"));
                names.push(k.clone());
                walk(rt, child, path, names, out);
                names.pop();
                path.pop();
            }
        }
        Value::Array(items) => match list_type(rt, names) {
            ListType::Atomic => {
                out.insert(path.clone());
            }
            ListType::Set => {
                for i in items {
                    let mut p = path.clone();
                    p.push(format!("v:{i}"));
                    out.insert(p);
                }
            }
            ListType::Map(keys) => {
                for i in items {
                    path.push(item_key(i, &keys));
                    out.insert(path.clone());
                    if let Value::Object(m) = i {
                        for (k, child) in m {
                            path.push(format!("f:{k}"));
                            names.push(k.clone());
                            walk(rt, child, path, names, out);
                            names.pop();
                            path.pop();
                        }
                    }
                    path.pop();
                }
            }
        },
        _ => {
            out.insert(path.clone());
        }
    }
}

/// The value at a field path, if the object has it.
pub fn get_at<'a>(obj: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut cur = obj;
    for el in path {
        cur = step(cur, el)?;
    }
    Some(cur)
}

fn step<'a>(cur: &'a Value, el: &str) -> Option<&'a Value> {
    if let Some(f) = el.strip_prefix("f:") {
        cur.get(f)
    } else if let Some(k) = el.strip_prefix("k:") {
        let keys: Value = serde_json::from_str(k).ok()?;
        let keys = keys.as_object()?;
        cur.as_array()?.iter().find(|i| {
            keys.iter()
                .all(|(kk, kv)| key_field(i, kk).as_ref() == Some(kv))
        })
    } else if let Some(v) = el.strip_prefix("v:") {
        let v: Value = serde_json::from_str(v).ok()?;
        cur.as_array()?.iter().find(|i| **i == v)
    } else if let Some(i) = el.strip_prefix("i:") {
        cur.as_array()?.get(i.parse::<usize>().ok()?)
    } else {
        None
    }
}

/// Removes the field (or list item, or set value) at `path`.
pub fn remove_at(obj: &mut Value, path: &[String]) {
    let Some((last, parent_path)) = path.split_last() else {
        return;
    };
    let mut cur = obj;
    for el in parent_path {
        let next = if let Some(f) = el.strip_prefix("f:") {
            cur.get_mut(f)
        } else if el.starts_with("k:") || el.starts_with("v:") || el.starts_with("i:") {
            let target = step(cur, el).cloned();
            match (target, cur.as_array_mut()) {
                (Some(t), Some(arr)) => arr.iter_mut().find(|i| **i == t),
                _ => None,
            }
        } else {
            None
        };
        match next {
            Some(n) => cur = n,
            None => return,
        }
    }
    if let Some(f) = last.strip_prefix("f:") {
        if let Some(m) = cur.as_object_mut() {
            m.remove(f);
        }
    } else if let Some(target) = step(cur, last).cloned()
        && let Some(arr) = cur.as_array_mut()
    {
        arr.retain(|i| *i != target);
    }
}

/// `.spec.containers[name="db"].image`, as conflict messages print paths.
pub fn render_path(path: &[String]) -> String {
    let mut s = String::new();
    for el in path {
        if let Some(f) = el.strip_prefix("f:") {
            s.push('.');
            s.push_str(f);
        } else if let Some(k) = el.strip_prefix("k:") {
            let keys: Value = serde_json::from_str(k).unwrap_or(Value::Null);
            let parts: Vec<String> = keys
                .as_object()
                .map(|m| m.iter().map(|(k, v)| format!("{k}={v}")).collect())
                .unwrap_or_default();
            s.push_str(&format!("[{}]", parts.join(",")));
        } else if let Some(v) = el.strip_prefix("v:") {
            s.push_str(&format!("[={v}]"));
        } else if let Some(i) = el.strip_prefix("i:") {
            s.push_str(&format!("[{i}]"));
        }
    }
    s
}

/// FieldsV1 JSON for a set of paths.
pub fn to_fields_v1(set: &FieldSet) -> Value {
    fn insert(m: &mut Map<String, Value>, path: &[String]) {
        if let Some((first, rest)) = path.split_first()
            && let Value::Object(child) = m.entry(first.clone()).or_insert_with(|| json!({}))
        {
            insert(child, rest);
        }
    }
    let mut root = Map::new();
    for path in set {
        // Sorted order puts a path's descendants right after it.
        let has_children = set
            .range(path.clone()..)
            .nth(1)
            .is_some_and(|next| next.starts_with(path));
        let mut full = path.clone();
        if has_children {
            // An owned node that also has owned children is marked with ".".
            full.push(".".into());
        }
        insert(&mut root, &full);
    }
    Value::Object(root)
}

pub fn from_fields_v1(v: &Value) -> FieldSet {
    fn rec(v: &Value, path: &mut FieldPath, out: &mut FieldSet) {
        let Some(m) = v.as_object() else { return };
        for (k, child) in m {
            if k == "." {
                out.insert(path.clone());
                continue;
            }
            path.push(k.clone());
            if child.as_object().is_some_and(Map::is_empty) {
                out.insert(path.clone());
            } else {
                rec(child, path, out);
            }
            path.pop();
        }
    }
    let mut out = FieldSet::new();
    rec(v, &mut vec![], &mut out);
    out
}

pub fn read_managed(obj: &Value) -> Vec<ManagedEntry> {
    let Some(list) = obj
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
    else {
        return vec![];
    };
    list.iter()
        .map(|e| ManagedEntry {
            manager: e["manager"].as_str().unwrap_or_default().into(),
            operation: e["operation"].as_str().unwrap_or_default().into(),
            api_version: e["apiVersion"].as_str().unwrap_or_default().into(),
            time: e["time"].as_str().unwrap_or_default().into(),
            subresource: e["subresource"].as_str().unwrap_or_default().into(),
            fields: from_fields_v1(&e["fieldsV1"]),
        })
        .collect()
}

pub fn write_managed(obj: &mut Value, entries: &[ManagedEntry]) {
    let list: Vec<Value> = entries
        .iter()
        .filter(|e| !e.fields.is_empty())
        .map(|e| {
            let mut v = json!({
                "manager": e.manager,
                "operation": e.operation,
                "apiVersion": e.api_version,
                "time": e.time,
                "fieldsType": "FieldsV1",
                "fieldsV1": to_fields_v1(&e.fields),
            });
            if !e.subresource.is_empty() {
                v["subresource"] = json!(e.subresource);
            }
            v
        })
        .collect();
    let meta = crate::meta::meta_mut(obj);
    if list.is_empty() {
        meta.remove("managedFields");
    } else {
        meta.insert("managedFields".into(), Value::Array(list));
    }
}

fn is_item(path: &FieldPath) -> bool {
    path.last().is_some_and(|l| l.starts_with("k:"))
}

/// Merges an applied configuration into the live object: maps field by
/// field, keyed lists item by item, sets by value, everything else replaced.
fn merge_applied(rt: &ResourceType, live: &mut Value, applied: &Value, names: &mut Vec<String>) {
    match applied {
        Value::Object(am) => {
            if !live.is_object() {
                *live = Value::Object(Map::new());
            }
            let Some(lm) = live.as_object_mut() else {
                return;
            };
            for (k, av) in am {
                if av.is_null() {
                    lm.remove(k);
                    continue;
                }
                names.push(k.clone());
                let entry = lm.entry(k.clone()).or_insert(Value::Null);
                merge_applied(rt, entry, av, names);
                names.pop();
            }
        }
        Value::Array(items) => match list_type(rt, names) {
            ListType::Atomic => *live = applied.clone(),
            ListType::Set => {
                if !live.is_array() {
                    *live = Value::Array(vec![]);
                }
                if let Some(l) = live.as_array_mut() {
                    for i in items {
                        if !l.contains(i) {
                            l.push(i.clone());
                        }
                    }
                }
            }
            ListType::Map(keys) => {
                if !live.is_array() {
                    *live = Value::Array(vec![]);
                }
                let Some(l) = live.as_array_mut() else { return };
                for item in items {
                    let pos = l
                        .iter()
                        .position(|x| keys.iter().all(|k| key_field(x, k) == key_field(item, k)));
                    match pos {
                        Some(i) => merge_applied(rt, &mut l[i], item, names),
                        None => l.push(item.clone()),
                    }
                }
            }
        },
        other => *live = other.clone(),
    }
}

/// What an apply request asks for.
pub struct ApplyRequest<'a> {
    pub manager: &'a str,
    pub force: bool,
    pub scope: Scope,
    pub subresource: &'a str,
    pub api_version: &'a str,
}

/// Applies `config` to `live` (the current object, or a skeleton when the
/// apply creates it) and returns the new object with updated managedFields.
pub fn apply(rt: &ResourceType, live: &Value, config: &Value, req: &ApplyRequest) -> Result<Value> {
    let applied = fields_of(rt, config, req.scope);
    let mut entries = read_managed(live);
    let is_me = |e: &ManagedEntry| {
        e.manager == req.manager && e.operation == "Apply" && e.subresource == req.subresource
    };

    let mut conflicts = vec![];
    for e in entries.iter_mut().filter(|e| e.manager != req.manager) {
        let clashing: Vec<FieldPath> = e
            .fields
            .intersection(&applied)
            .filter(|p| !is_item(p))
            .filter(|p| get_at(live, p).is_some_and(|lv| Some(lv) != get_at(config, p)))
            .cloned()
            .collect();
        for p in clashing {
            if req.force {
                e.fields.remove(&p);
            } else {
                conflicts.push((e.manager.clone(), render_path(&p)));
            }
        }
    }
    if !conflicts.is_empty() {
        return Err(Error::apply_conflicts(&conflicts, req.api_version));
    }

    let previous = entries
        .iter()
        .find(|e| is_me(e))
        .map(|e| e.fields.clone())
        .unwrap_or_default();
    let mut merged = live.clone();
    let mut stripped = config.clone();
    if let Some(o) = stripped.as_object_mut() {
        match req.scope {
            Scope::Main => {
                o.remove("status");
            }
            Scope::Status => o.retain(|k, _| k == "status" || k == "apiVersion" || k == "kind"),
            Scope::All => {}
        }
        if let Some(m) = o.get_mut("metadata").and_then(Value::as_object_mut) {
            m.retain(|k, _| !SERVER_OWNED_META.contains(&k.as_str()));
        }
    }
    merge_applied(rt, &mut merged, &stripped, &mut vec![]);

    let others: FieldSet = entries
        .iter()
        .filter(|e| !is_me(e))
        .flat_map(|e| e.fields.iter().cloned())
        .collect();
    let mut dropped: Vec<&FieldPath> = previous
        .iter()
        .filter(|p| !applied.contains(*p))
        .filter(|p| !others.iter().any(|o| o.starts_with(p)))
        .collect();
    // Fields of a dropped list item go with the item, as upstream: removing
    // them one by one would remove its key fields first, and the item could
    // then no longer be found (it stayed behind, emptied).
    let dropped_items: Vec<FieldPath> = dropped
        .iter()
        .filter(|p| is_item(p))
        .map(|p| (*p).clone())
        .collect();
    dropped.retain(|p| {
        !dropped_items
            .iter()
            .any(|item| p.len() > item.len() && p.starts_with(item))
    });
    // Deepest first, so removing an item never hides a field still to remove.
    dropped.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in dropped {
        remove_at(&mut merged, p);
        // A map the removal left empty goes too, unless a field under it is
        // still owned: upstream leaves it null, and null is then pruned.
        for end in (1..p.len()).rev() {
            let parent = &p[..end];
            let emptied = parent.last().is_some_and(|e| e.starts_with("f:"))
                && get_at(&merged, parent)
                    .is_some_and(|v| v.as_object().is_some_and(Map::is_empty))
                && !others
                    .iter()
                    .chain(applied.iter())
                    .any(|o| o.starts_with(parent));
            if !emptied {
                break;
            }
            remove_at(&mut merged, parent);
        }
    }

    let time = crate::meta::now();
    match entries.iter_mut().find(|e| is_me(e)) {
        Some(e) => {
            if e.fields != applied {
                e.fields = applied;
                e.time = time;
            }
            e.api_version = req.api_version.to_string();
        }
        None => entries.push(ManagedEntry {
            manager: req.manager.into(),
            operation: "Apply".into(),
            api_version: req.api_version.into(),
            time,
            subresource: req.subresource.into(),
            fields: applied,
        }),
    }
    write_managed(&mut merged, &entries);
    Ok(merged)
}

/// Records a non-apply write: the fields it changed now belong to
/// `manager` (operation `Update`) and no longer to anyone else.
pub fn track_update(
    rt: &ResourceType,
    old: Option<&Value>,
    new: &mut Value,
    manager: &str,
    scope: Scope,
    subresource: &str,
    api_version: &str,
) {
    let mut entries = old.map(read_managed).unwrap_or_default();
    let new_scoped = fields_of(rt, new, scope);
    let new_all = fields_of(rt, new, Scope::All);
    let changed: FieldSet = new_scoped
        .into_iter()
        .filter(|p| match old {
            None => true,
            Some(o) => {
                if is_item(p) {
                    get_at(o, p).is_none()
                } else {
                    get_at(o, p) != get_at(new, p)
                }
            }
        })
        .collect();
    let time = crate::meta::now();
    for e in entries.iter_mut() {
        let before = e.fields.len();
        e.fields.retain(|p| new_all.contains(p));
        if !(e.manager == manager && e.operation == "Update" && e.subresource == subresource) {
            e.fields.retain(|p| !changed.contains(p));
        }
        if e.fields.len() != before {
            e.time = time.clone();
        }
    }
    if !changed.is_empty() {
        match entries.iter_mut().find(|e| {
            e.manager == manager && e.operation == "Update" && e.subresource == subresource
        }) {
            Some(e) => {
                let before = e.fields.len();
                e.fields.extend(changed);
                if e.fields.len() != before {
                    e.time = time;
                }
            }
            None => entries.push(ManagedEntry {
                manager: manager.into(),
                operation: "Update".into(),
                api_version: api_version.into(),
                time,
                subresource: subresource.into(),
                fields: changed,
            }),
        }
    }
    write_managed(new, &entries);
}

/// An apply patch's body as a value. Clients send YAML or, as kube-rs and
/// client-go do, JSON; JSON is YAML, and read by the JSON parser first,
/// which is several times faster than the YAML one on the same text.
pub fn parse_body(body: &[u8]) -> Result<Value, serde_yaml::Error> {
    serde_json::from_slice(body).or_else(|_| serde_yaml::from_slice(body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Registry;

    #[test]
    fn an_apply_body_reads_the_same_as_json_or_yaml_and_bad_text_is_an_error() {
        let json = br#"{"apiVersion":"v1","kind":"ConfigMap","data":{"a":"1: x"}}"#;
        let yaml = b"apiVersion: v1\nkind: ConfigMap\ndata:\n  a: '1: x'\n";
        assert_eq!(parse_body(json).unwrap(), parse_body(yaml).unwrap());
        assert!(parse_body(b"a: [unclosed").is_err());
    }

    #[test]
    fn fields_v1_round_trips_through_the_trie_format() {
        let reg = Registry::new();
        let rt = reg.lookup("", "v1", "pods").unwrap();
        let pod = json!({"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "db", "image": "pg"}]}});
        let set = fields_of(&rt, &pod, Scope::All);
        let v1 = to_fields_v1(&set);
        assert_eq!(
            v1,
            json!({"f:metadata": {"f:labels": {"f:a": {}}}, "f:spec": {"f:containers": {"k:{\"name\":\"db\"}": {".": {}, "f:image": {}, "f:name": {}}}}})
        );
        assert_eq!(from_fields_v1(&v1), set);
    }

    #[test]
    fn a_map_whose_fields_a_manager_stops_applying_is_removed_with_them() {
        let reg = Registry::new();
        let rt = reg.lookup("", "v1", "configmaps").unwrap();
        let request = ApplyRequest {
            manager: "op",
            force: true,
            scope: Scope::Main,
            subresource: "",
            api_version: "v1",
        };
        let object = |labels: Option<Value>| {
            let mut o = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"k": "v"}});
            if let Some(labels) = labels {
                o["metadata"]["labels"] = labels;
            }
            o
        };
        let first = apply(&rt, &json!({}), &object(Some(json!({"a": "1"}))), &request).unwrap();
        let second = apply(&rt, &first, &object(None), &request).unwrap();
        assert_eq!(second["metadata"].get("labels"), None);
        assert_eq!(second["data"], json!({"k": "v"}));
        // A map someone else still has fields in stays.
        let other = ApplyRequest {
            manager: "other",
            ..request
        };
        let shared = apply(&rt, &first, &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "labels": {"b": "2"}}}), &other).unwrap();
        let third = apply(&rt, &shared, &object(None), &request).unwrap();
        assert_eq!(third["metadata"]["labels"], json!({"b": "2"}));
    }

    #[test]
    fn a_keyed_list_item_a_manager_stops_applying_is_removed_whole() {
        let reg = Registry::new();
        let rt = reg.lookup("apps", "v1", "statefulsets").unwrap();
        let request = ApplyRequest {
            manager: "op",
            force: true,
            scope: Scope::Main,
            subresource: "",
            api_version: "apps/v1",
        };
        let volumes = |extra: bool| {
            let mut list = vec![json!({"name": "config", "configMap": {"name": "c"}})];
            if extra {
                list.push(json!({"name": "data-17", "persistentVolumeClaim": {"claimName": "db-data-17"}}));
            }
            json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db"},
                   "spec": {"template": {"spec": {"volumes": list}}}})
        };
        let first = apply(&rt, &json!({}), &volumes(true), &request).unwrap();
        let second = apply(&rt, &first, &volumes(false), &request).unwrap();
        assert_eq!(
            second["spec"]["template"]["spec"]["volumes"],
            json!([{"name": "config", "configMap": {"name": "c"}}])
        );
    }
}
