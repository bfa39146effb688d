//! CustomResourceDefinitions: from a CRD object to a served resource, and
//! the openAPIV3Schema rules every custom object goes through.
//!
//! The API server requires CRD schemas to be *structural*: every node states
//! its `type` (except where `x-kubernetes-int-or-string` or
//! `x-kubernetes-preserve-unknown-fields` say otherwise), so that it can do
//! three things with each incoming object, in this order:
//!
//! 1. **prune** fields the schema does not declare (unless a node preserves
//!    unknown fields),
//! 2. **default** missing fields that declare a `default`,
//! 3. **validate** types, `required`, `enum`, bounds, lengths and patterns,
//!    answering 422 Invalid with one cause per offending field path.

use std::sync::Arc;

use serde_json::{Map, Value, json};

use crate::error::{Cause, Error, Result};
use crate::registry::{ResourceType, ScaleSpec};
// List semantics from a schema moved to their own module; kept here for existing paths.
pub use crate::lists::list_type_at;

fn node_path(base: &str, seg: &str) -> String {
    format!("{base}.{seg}")
}

/// Finds nodes that make a schema non-structural.
pub fn structural_errors(schema: &Value, at: &str, out: &mut Vec<Cause>) {
    let Some(s) = schema.as_object() else { return };
    let has_type = s
        .get("type")
        .and_then(Value::as_str)
        .is_some_and(|t| !t.is_empty());
    let int_or_string = s.get("x-kubernetes-int-or-string").and_then(Value::as_bool) == Some(true);
    let preserve = s
        .get("x-kubernetes-preserve-unknown-fields")
        .and_then(Value::as_bool)
        == Some(true);
    if !has_type && !int_or_string && !preserve {
        out.push(Cause::required(
            node_path(at, "type"),
            "must not be empty for specified object fields",
        ));
    }
    if let Some(props) = s.get("properties").and_then(Value::as_object) {
        for (k, v) in props {
            structural_errors(v, &format!("{at}.properties[{k}]"), out);
        }
    }
    if let Some(items) = s.get("items") {
        structural_errors(items, &node_path(at, "items"), out);
    }
    if let Some(ap) = s.get("additionalProperties")
        && ap.is_object()
    {
        structural_errors(ap, &node_path(at, "additionalProperties"), out);
    }
}

fn names(crd: &Value) -> (String, String, String, String) {
    let spec = &crd["spec"];
    let s = |p: &str| {
        spec.pointer(p)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    (
        s("/group"),
        s("/names/plural"),
        s("/names/kind"),
        s("/names/singular"),
    )
}

/// Checks a CRD the way the apiextensions server's validation does (the
/// subset that matters: naming, versions, structural schemas).
pub fn validate_crd(crd: &Value) -> Result<()> {
    let (group, plural, kind, _) = names(crd);
    let name = crate::meta::name_of(crd).to_string();
    let mut causes = vec![];
    if group.is_empty() {
        causes.push(Cause::required("spec.group", ""));
    }
    if plural.is_empty() {
        causes.push(Cause::required("spec.names.plural", ""));
    }
    if kind.is_empty() {
        causes.push(Cause::required("spec.names.kind", ""));
    }
    if name != format!("{plural}.{group}") {
        causes.push(Cause::invalid(
            "metadata.name",
            &json!(name),
            "must be spec.names.plural+\".\"+spec.group",
        ));
    }
    let scope = crd
        .pointer("/spec/scope")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if scope != "Namespaced" && scope != "Cluster" {
        causes.push(Cause::not_supported(
            "spec.scope",
            &json!(scope),
            &[json!("Cluster"), json!("Namespaced")],
        ));
    }
    let versions = crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if versions.is_empty() {
        causes.push(Cause::required(
            "spec.versions",
            "must have exactly one version marked as storage version",
        ));
    }
    let storage = versions
        .iter()
        .filter(|v| v["storage"].as_bool() == Some(true))
        .count();
    if !versions.is_empty() && storage != 1 {
        causes.push(Cause::invalid(
            "spec.versions",
            &json!(format!("{}", versions.len())),
            "must have exactly one version marked as storage version",
        ));
    }
    for (i, v) in versions.iter().enumerate() {
        let at = format!("spec.versions[{i}].schema.openAPIV3Schema");
        match v.pointer("/schema/openAPIV3Schema") {
            None => causes.push(Cause::required(at, "schemas are required")),
            Some(schema) => {
                if schema.get("type").and_then(Value::as_str) != Some("object") {
                    causes.push(Cause::invalid(
                        format!("{at}.type"),
                        &schema.get("type").cloned().unwrap_or(json!("")),
                        "must be object at the root",
                    ));
                }
                structural_errors(schema, &at, &mut causes);
            }
        }
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(Error::invalid(
            "apiextensions.k8s.io",
            "CustomResourceDefinition",
            &name,
            causes,
        ))
    }
}

/// The resource types a CRD serves: one per served version.
pub fn crd_types(crd: &Value) -> Vec<ResourceType> {
    let (group, plural, kind, singular) = names(crd);
    let namespaced = crd.pointer("/spec/scope").and_then(Value::as_str) == Some("Namespaced");
    let strs = |p: &str| -> Vec<String> {
        crd.pointer(p)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    let versions = crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    versions
        .iter()
        .filter(|v| v["served"].as_bool() != Some(false))
        .map(|v| {
            let scale = v.pointer("/subresources/scale").map(|s| ScaleSpec {
                spec_replicas_path: s["specReplicasPath"]
                    .as_str()
                    .unwrap_or(".spec.replicas")
                    .into(),
                status_replicas_path: s["statusReplicasPath"]
                    .as_str()
                    .unwrap_or(".status.replicas")
                    .into(),
                label_selector_path: s["labelSelectorPath"].as_str().map(String::from),
            });
            ResourceType {
                group: group.clone(),
                version: v["name"].as_str().unwrap_or_default().into(),
                plural: plural.clone(),
                singular: if singular.is_empty() {
                    kind.to_lowercase()
                } else {
                    singular.clone()
                },
                kind: kind.clone(),
                namespaced,
                short_names: strs("/spec/names/shortNames"),
                status: v.pointer("/subresources/status").is_some(),
                scale,
                log: false,
                schema: v.pointer("/schema/openAPIV3Schema").cloned().map(Arc::new),
                crd: true,
                categories: strs("/spec/names/categories"),
                printer_columns: v
                    .get("additionalPrinterColumns")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default(),
                view: crate::registry::View::Stored,
            }
        })
        .collect()
}

/// The status the apiextensions controllers give an accepted CRD.
pub fn crd_status(crd: &Value) -> Value {
    let now = crate::meta::now();
    let storage: Vec<Value> = crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .map(|vs| {
            vs.iter()
                .filter(|v| v["storage"].as_bool() == Some(true))
                .map(|v| v["name"].clone())
                .collect()
        })
        .unwrap_or_default();
    let mut accepted = crd.pointer("/spec/names").cloned().unwrap_or(json!({}));
    if accepted.get("listKind").is_none() {
        let kind = accepted["kind"].as_str().unwrap_or_default().to_string();
        accepted["listKind"] = json!(format!("{kind}List"));
    }
    if accepted.get("singular").is_none() {
        let kind = accepted["kind"].as_str().unwrap_or_default().to_lowercase();
        accepted["singular"] = json!(kind);
    }
    json!({
        "acceptedNames": accepted,
        "storedVersions": storage,
        "conditions": [
            {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts", "message": "no conflicts found", "lastTransitionTime": now},
            {"type": "Established", "status": "True", "reason": "InitialNamesAccepted", "message": "the initial names have been accepted", "lastTransitionTime": now},
        ]
    })
}

fn preserves(s: &Map<String, Value>) -> bool {
    s.get("x-kubernetes-preserve-unknown-fields")
        .and_then(Value::as_bool)
        == Some(true)
}

/// Drops fields the schema does not know.
pub fn prune(schema: &Value, v: &mut Value, root: bool) {
    let Some(s) = schema.as_object() else { return };
    match v {
        Value::Object(m) => {
            let props = s.get("properties").and_then(Value::as_object);
            let additional = s.get("additionalProperties").filter(|a| a.is_object());
            if root {
                // apiVersion, kind and metadata are the server's business.
                for (k, child) in m.iter_mut() {
                    if matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
                        continue;
                    }
                    if let Some(cs) = props.and_then(|p| p.get(k)) {
                        prune(cs, child, false);
                    }
                }
                if !preserves(s) {
                    m.retain(|k, _| {
                        matches!(k.as_str(), "apiVersion" | "kind" | "metadata")
                            || props.is_some_and(|p| p.contains_key(k))
                    });
                }
                return;
            }
            if let Some(a) = additional {
                for child in m.values_mut() {
                    prune(a, child, false);
                }
                return;
            }
            if !preserves(s) {
                m.retain(|k, _| props.is_some_and(|p| p.contains_key(k)));
            }
            if let Some(p) = props {
                for (k, child) in m.iter_mut() {
                    if let Some(cs) = p.get(k) {
                        prune(cs, child, false);
                    }
                }
            }
        }
        Value::Array(items) => {
            if let Some(is) = s.get("items") {
                for i in items {
                    prune(is, i, false);
                }
            }
        }
        _ => {}
    }
}

/// Fills in `default`s of missing fields whose parent object exists.
pub fn default(schema: &Value, v: &mut Value) {
    let Some(s) = schema.as_object() else { return };
    match v {
        Value::Object(m) => {
            if let Some(props) = s.get("properties").and_then(Value::as_object) {
                for (k, ps) in props {
                    if !m.contains_key(k)
                        && let Some(d) = ps.get("default")
                    {
                        m.insert(k.clone(), d.clone());
                    }
                    if let Some(child) = m.get_mut(k) {
                        default(ps, child);
                    }
                }
            }
            if let Some(a) = s.get("additionalProperties").filter(|a| a.is_object()) {
                for child in m.values_mut() {
                    default(a, child);
                }
            }
        }
        Value::Array(items) => {
            if let Some(is) = s.get("items") {
                for i in items {
                    default(is, i);
                }
            }
        }
        _ => {}
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Validates a value against a schema node; causes use the real server's
/// wording (`spec.replicas in body must be of type integer: "string"`).
pub fn validate(schema: &Value, v: &Value, at: &str, out: &mut Vec<Cause>) {
    let Some(s) = schema.as_object() else { return };
    if v.is_null() {
        if s.get("nullable").and_then(Value::as_bool) != Some(true) && s.get("type").is_some() {
            let expected = s["type"].as_str().unwrap_or_default();
            out.push(Cause::invalid(
                at,
                &json!("null"),
                format!("{at} in body must be of type {expected}: \"null\""),
            ));
        }
        return;
    }
    let int_or_string = s.get("x-kubernetes-int-or-string").and_then(Value::as_bool) == Some(true);
    if int_or_string {
        if !(v.is_string() || type_name(v) == "integer") {
            out.push(Cause::invalid(
                at,
                &json!(type_name(v)),
                format!(
                    "{at} in body must be of type integer,string: {:?}",
                    type_name(v)
                ),
            ));
        }
    } else if let Some(expected) = s.get("type").and_then(Value::as_str) {
        let actual = type_name(v);
        let ok = actual == expected || (expected == "number" && actual == "integer");
        if !ok {
            out.push(Cause::invalid(
                at,
                &json!(actual),
                format!("{at} in body must be of type {expected}: {actual:?}"),
            ));
            return;
        }
    }
    if let Some(allowed) = s.get("enum").and_then(Value::as_array)
        && !allowed.contains(v)
    {
        out.push(Cause::not_supported(at, v, allowed));
    }
    if let Some(n) = v.as_f64() {
        if let Some(min) = s.get("minimum").and_then(Value::as_f64) {
            let exclusive = s.get("exclusiveMinimum").and_then(Value::as_bool) == Some(true);
            if n < min || (exclusive && n == min) {
                let cmp = if exclusive {
                    "greater than"
                } else {
                    "greater than or equal to"
                };
                out.push(Cause::invalid(
                    at,
                    v,
                    format!("{at} in body should be {cmp} {}", s["minimum"]),
                ));
            }
        }
        if let Some(max) = s.get("maximum").and_then(Value::as_f64) {
            let exclusive = s.get("exclusiveMaximum").and_then(Value::as_bool) == Some(true);
            if n > max || (exclusive && n == max) {
                let cmp = if exclusive {
                    "less than"
                } else {
                    "less than or equal to"
                };
                out.push(Cause::invalid(
                    at,
                    v,
                    format!("{at} in body should be {cmp} {}", s["maximum"]),
                ));
            }
        }
    }
    if let Some(text) = v.as_str() {
        let len = text.chars().count() as u64;
        if let Some(min) = s.get("minLength").and_then(Value::as_u64)
            && len < min
        {
            out.push(Cause::invalid(
                at,
                v,
                format!("{at} in body should be at least {min} chars long"),
            ));
        }
        if let Some(max) = s.get("maxLength").and_then(Value::as_u64)
            && len > max
        {
            out.push(Cause {
                reason: "FieldValueTooLong",
                field: at.into(),
                message: format!("Too long: may not be more than {max} bytes"),
            });
        }
        if let Some(p) = s.get("pattern").and_then(Value::as_str)
            && let Ok(re) = regex::Regex::new(p)
            && !re.is_match(text)
        {
            out.push(Cause::invalid(
                at,
                v,
                format!("{at} in body should match '{p}'"),
            ));
        }
        if let Some(f) = s.get("format").and_then(Value::as_str)
            && !format_ok(f, text)
        {
            out.push(Cause::invalid(
                at,
                v,
                format!("{at} in body must be of type {f}: {text:?}"),
            ));
        }
    }
    if let Some(items) = v.as_array() {
        if let Some(min) = s.get("minItems").and_then(Value::as_u64)
            && (items.len() as u64) < min
        {
            out.push(Cause::invalid(
                at,
                &json!(items.len()),
                format!("{at} in body should have at least {min} items"),
            ));
        }
        if let Some(max) = s.get("maxItems").and_then(Value::as_u64)
            && items.len() as u64 > max
        {
            out.push(Cause {
                reason: "FieldValueTooMany",
                field: at.into(),
                message: format!("Too many: {}: must have at most {max} items", items.len()),
            });
        }
        if let Some(is) = s.get("items") {
            for (i, item) in items.iter().enumerate() {
                validate(is, item, &format!("{at}[{i}]"), out);
            }
        }
    }
    if let Some(m) = v.as_object() {
        if let Some(req) = s.get("required").and_then(Value::as_array) {
            for r in req.iter().filter_map(Value::as_str) {
                if !m.contains_key(r) {
                    out.push(Cause::required(child_path(at, r), ""));
                }
            }
        }
        let props = s.get("properties").and_then(Value::as_object);
        for (k, child) in m {
            if at.is_empty() && matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
                continue;
            }
            if let Some(cs) = props.and_then(|p| p.get(k)) {
                validate(cs, child, &child_path(at, k), out);
            } else if let Some(a) = s.get("additionalProperties").filter(|a| a.is_object()) {
                validate(a, child, &child_path(at, k), out);
            }
        }
    }
}

fn child_path(at: &str, k: &str) -> String {
    if at.is_empty() {
        k.to_string()
    } else {
        format!("{at}.{k}")
    }
}

fn format_ok(format: &str, s: &str) -> bool {
    match format {
        "date-time" => s.parse::<jiff::Timestamp>().is_ok(),
        "int32" | "int64" | "byte" | "password" | "" => true,
        "hostname" => s.len() <= 253 && s.split('.').all(|l| !l.is_empty() && l.len() <= 63),
        "ipv4" => s.parse::<std::net::Ipv4Addr>().is_ok(),
        "ipv6" => s.parse::<std::net::Ipv6Addr>().is_ok(),
        "uuid" => s.len() == 36 && s.chars().all(|c| c.is_ascii_hexdigit() || c == '-'),
        // Unknown formats are not enforced, as upstream.
        _ => true,
    }
}

/// Prunes, defaults and validates a custom object.
pub fn admit(rt: &ResourceType, obj: &mut Value) -> Result<()> {
    let Some(schema) = &rt.schema else {
        return Ok(());
    };
    prune(schema, obj, true);
    default(schema, obj);
    let mut causes = vec![];
    validate(schema, obj, "", &mut causes);
    if causes.is_empty() {
        Ok(())
    } else {
        Err(Error::invalid(
            &rt.group,
            &rt.kind,
            crate::meta::name_of(obj),
            causes,
        ))
    }
}
