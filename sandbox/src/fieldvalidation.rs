//! Server-side field validation: what happens to fields no schema declares.
//!
//! Writes (POST, PUT, PATCH) take `?fieldValidation=Ignore|Warn|Strict`.
//! `Ignore` drops unknown fields silently; `Warn` (the default) drops them
//! and says so in a `Warning: 299 - "unknown field \"spec.x\""` response
//! header, which kubectl and kube-rs print; `Strict` refuses the request
//! with 400 BadRequest naming every unknown field. kubectl sends `Strict`
//! by default once the OpenAPI document shows the server supports it.
//!
//! Unknown fields of a custom resource are the ones pruning would remove;
//! for built-in kinds they are the ones the k8s-openapi type (generated from
//! the upstream OpenAPI definitions) does not have, found by decoding the
//! object into that type and seeing which fields did not survive.

use std::collections::HashMap;

use serde_json::Value;

use crate::error::{Error, Result};
use crate::openapi::{KindVisitor, visit_builtin};
use crate::registry::ResourceType;

/// The `fieldValidation` directive of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Directive {
    Ignore,
    Warn,
    Strict,
}

impl Directive {
    pub fn from_query(q: &HashMap<String, String>) -> Result<Directive> {
        match q.get("fieldValidation").map(String::as_str) {
            None | Some("") | Some("Warn") => Ok(Directive::Warn),
            Some("Ignore") => Ok(Directive::Ignore),
            Some("Strict") => Ok(Directive::Strict),
            Some(other) => Err(Error::bad_request(format!(
                "fieldValidation parameter unsupported: {other}; valid values are: Ignore, Warn, Strict"
            ))),
        }
    }
}

/// Decodes into the typed form and back.
struct RoundTrip<'a>(&'a Value);

impl KindVisitor for RoundTrip<'_> {
    type Out = Option<Value>;
    fn visit<T>(self) -> Option<Value>
    where
        T: schemars::JsonSchema + serde::de::DeserializeOwned + serde::Serialize,
    {
        // An object that does not decode at all has worse problems than
        // unknown fields; validation reports those.
        let typed: T = serde_json::from_value(self.0.clone()).ok()?;
        serde_json::to_value(typed).ok()
    }
}

/// Fields of `before` missing from `after` (nulls and `$patch`-style
/// directives aside), as dotted paths with list indices.
fn dropped(before: &Value, after: &Value, path: &str, out: &mut Vec<String>) {
    match (before, after) {
        (Value::Object(b), Value::Object(a)) => {
            for (k, v) in b {
                if v.is_null() || k.starts_with('$') {
                    continue;
                }
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match a.get(k) {
                    None => out.push(p),
                    Some(av) => dropped(v, av, &p, out),
                }
            }
        }
        (Value::Array(b), Value::Array(a)) => {
            for (i, (bv, av)) in b.iter().zip(a).enumerate() {
                dropped(bv, av, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

/// The fields of `obj` (a whole or partial object of `rt`) that its schema
/// does not declare.
pub fn unknown_fields(rt: &ResourceType, obj: &Value) -> Vec<String> {
    let mut out = vec![];
    if rt.crd {
        if let Some(schema) = &rt.schema {
            let mut pruned = obj.clone();
            crate::schema::prune(schema, &mut pruned, true);
            dropped(obj, &pruned, "", &mut out);
        }
        if let Some(meta) = obj.get("metadata") {
            let typed = serde_json::from_value::<
                k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
            >(meta.clone())
            .ok()
            .and_then(|m| serde_json::to_value(m).ok());
            if let Some(typed) = typed {
                dropped(meta, &typed, "metadata", &mut out);
            }
        }
    } else if let Some(Some(typed)) = visit_builtin(&rt.group, &rt.plural, RoundTrip(obj)) {
        dropped(obj, &typed, "", &mut out);
    }
    out
}

/// Applies the directive: `Err` for Strict with unknown fields, otherwise
/// the warnings to send (none for Ignore).
pub fn check(
    rt: &ResourceType,
    obj: &Value,
    directive: Directive,
    apply: bool,
) -> Result<Vec<String>> {
    if directive == Directive::Ignore {
        return Ok(vec![]);
    }
    let unknown = unknown_fields(rt, obj);
    if unknown.is_empty() {
        return Ok(vec![]);
    }
    if directive == Directive::Strict {
        let message = if apply {
            let name = obj
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let ns = obj
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let fields: Vec<String> = unknown
                .iter()
                .map(|f| format!(".{f}: field not declared in schema"))
                .collect();
            format!(
                "failed to create typed patch object ({ns}/{name}; {}, Kind={}): {}",
                rt.api_version(),
                rt.kind,
                fields.join(", ")
            )
        } else {
            let fields: Vec<String> = unknown
                .iter()
                .map(|f| format!("unknown field \"{f}\""))
                .collect();
            format!(
                "{kind} in version \"{v}\" cannot be handled as a {kind}: strict decoding error: {}",
                fields.join(", "),
                kind = rt.kind,
                v = rt.version,
            )
        };
        return Err(Error::bad_request(message));
    }
    Ok(unknown
        .into_iter()
        .map(|f| format!("unknown field \"{f}\""))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unknown_fields_of_builtin_kinds_are_found_by_round_trip() {
        let reg = crate::registry::Registry::new();
        let cm = reg
            .lookup("", "v1", "configmaps")
            .expect("configmaps served");
        let obj = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "x", "bogus": 1}, "data": {"a": "b"}, "extra": true});
        let mut u = unknown_fields(&cm, &obj);
        u.sort();
        assert_eq!(u, vec!["extra".to_string(), "metadata.bogus".to_string()]);
        let pod = reg.lookup("", "v1", "pods").expect("pods served");
        let obj = json!({"metadata": {"name": "p"}, "spec": {"containers": [
            {"name": "c", "image": "i", "imagePullPolicy": "Always", "colour": "red"}]}});
        assert_eq!(
            unknown_fields(&pod, &obj),
            vec!["spec.containers[0].colour"]
        );
    }
}
