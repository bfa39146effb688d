//! List semantics: how a list in an object is merged by strategic merge
//! patch and owned by server-side apply. A list is atomic (replaced whole),
//! a set of scalars, or a map whose items are identified by key fields.
//! Built-in kinds' lists follow the merge keys of their Go types (a table
//! here, not the full upstream OpenAPI); custom resources' follow the
//! `x-kubernetes-list-type` markers of their CRD's schema. Merging and
//! ownership themselves are the patch and apply modules'.

use serde_json::Value;

use crate::registry::ResourceType;

/// How a list is merged by patches and owned by server-side apply.
#[derive(Debug, Clone, PartialEq)]
pub enum ListType {
    /// Replaced as a whole; owned as one field.
    Atomic,
    /// A set of scalars; each value owned separately.
    Set,
    /// Items identified by these keys; each item merged and owned separately.
    Map(Vec<String>),
}

fn keys(k: &[&str]) -> ListType {
    ListType::Map(k.iter().map(|s| s.to_string()).collect())
}

/// The list semantics of the list at `path` (field names from the root).
pub fn list_type(rt: &ResourceType, path: &[String]) -> ListType {
    if path.first().map(String::as_str) != Some("metadata")
        && let Some(schema) = &rt.schema
    {
        return list_type_at(schema, path);
    }
    let last = path.last().map(String::as_str).unwrap_or_default();
    let parent = if path.len() >= 2 {
        path[path.len() - 2].as_str()
    } else {
        ""
    };
    match last {
        "finalizers" if parent == "metadata" => ListType::Set,
        "ownerReferences" => keys(&["uid"]),
        "containers" | "initContainers" | "ephemeralContainers" => keys(&["name"]),
        "env" | "volumes" | "imagePullSecrets" => keys(&["name"]),
        "volumeMounts" => keys(&["mountPath"]),
        "volumeDevices" => keys(&["devicePath"]),
        "conditions" => keys(&["type"]),
        "hostAliases" => keys(&["ip"]),
        "topologySpreadConstraints" => keys(&["topologyKey", "whenUnsatisfiable"]),
        "ports"
            if matches!(
                parent,
                "containers" | "initContainers" | "ephemeralContainers"
            ) =>
        {
            keys(&["containerPort", "protocol"])
        }
        "ports" if rt.kind == "Service" && path.len() == 2 => keys(&["port", "protocol"]),
        _ => ListType::Atomic,
    }
}

/// List semantics from `x-kubernetes-list-type` along a field path.
pub fn list_type_at(schema: &Value, path: &[String]) -> ListType {
    let mut cur = schema;
    for (i, name) in path.iter().enumerate() {
        // Descend through list items transparently: `path` holds field names only.
        while cur.get("type").and_then(Value::as_str) == Some("array") && i > 0 {
            match cur.get("items") {
                Some(items) => cur = items,
                None => return ListType::Atomic,
            }
        }
        let next = cur
            .get("properties")
            .and_then(|p| p.get(name))
            .or_else(|| cur.get("additionalProperties").filter(|a| a.is_object()));
        match next {
            Some(n) => cur = n,
            None => return ListType::Atomic,
        }
    }
    match cur.get("x-kubernetes-list-type").and_then(Value::as_str) {
        Some("set") => ListType::Set,
        Some("map") => {
            let keys: Vec<String> = cur
                .get("x-kubernetes-list-map-keys")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default();
            if keys.is_empty() {
                ListType::Atomic
            } else {
                ListType::Map(keys)
            }
        }
        _ => ListType::Atomic,
    }
}
