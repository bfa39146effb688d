//! The JSONPath subset Kubernetes printer columns use (a CRD's
//! `additionalPrinterColumns[].jsonPath`): `.field`, `['field']`, `[n]`,
//! `[*]`, `.*` and simple filters. It evaluates a path against a JSON
//! value and returns every match; it is not kubectl's full template
//! language (no ranges, no functions, no output formatting).

use serde_json::{Value, json};

/// Evaluates the JSONPath subset printer columns use: `.field`,
/// `['field']`, `[n]`, `[*]`, `.*` and filters `[?(@.a.b=="x")]`,
/// `[?(@.a!="x")]`, `[?(@.a)]`. Returns every match, in document order.
pub fn jsonpath(root: &Value, path: &str) -> Vec<Value> {
    let path = path.trim();
    let path = path
        .strip_prefix('{')
        .and_then(|p| p.strip_suffix('}'))
        .unwrap_or(path);
    let path = path.strip_prefix('$').unwrap_or(path);
    let mut current = vec![root.clone()];
    let mut rest = path;
    while !rest.is_empty() {
        let (step, next) = match next_step(rest) {
            Some(s) => s,
            None => return vec![],
        };
        rest = next;
        current = current.iter().flat_map(|v| apply_step(v, &step)).collect();
        if current.is_empty() {
            break;
        }
    }
    current
}

enum Step {
    Field(String),
    Index(i64),
    All,
    Filter {
        path: Vec<String>,
        op: Option<(bool, Value)>,
    },
}

fn next_step(s: &str) -> Option<(Step, &str)> {
    if let Some(r) = s.strip_prefix('.') {
        if let Some(r2) = r.strip_prefix('*') {
            return Some((Step::All, r2));
        }
        let end = r.find(['.', '[']).unwrap_or(r.len());
        if end == 0 {
            return None;
        }
        return Some((Step::Field(r[..end].to_string()), &r[end..]));
    }
    let r = s.strip_prefix('[')?;
    if let Some(r2) = r.strip_prefix("?(") {
        let close = r2.find(")]")?;
        let expr = r2[..close].trim();
        let rest = &r2[close + 2..];
        let expr = expr.strip_prefix('@')?;
        let (lhs, op) = if let Some((l, v)) = expr.split_once("==") {
            (l, Some((true, literal(v.trim()))))
        } else if let Some((l, v)) = expr.split_once("!=") {
            (l, Some((false, literal(v.trim()))))
        } else {
            (expr, None)
        };
        let path = lhs
            .trim()
            .split('.')
            .filter(|p| !p.is_empty())
            .map(String::from)
            .collect();
        return Some((Step::Filter { path, op }, rest));
    }
    let close = r.find(']')?;
    let inner = r[..close].trim();
    let rest = &r[close + 1..];
    if inner == "*" {
        return Some((Step::All, rest));
    }
    if let Some(q) = inner
        .strip_prefix('\'')
        .and_then(|i| i.strip_suffix('\''))
        .or_else(|| inner.strip_prefix('"').and_then(|i| i.strip_suffix('"')))
    {
        return Some((Step::Field(q.to_string()), rest));
    }
    inner.parse().ok().map(|n| (Step::Index(n), rest))
}

fn literal(s: &str) -> Value {
    if let Some(q) = s
        .strip_prefix('"')
        .and_then(|i| i.strip_suffix('"'))
        .or_else(|| s.strip_prefix('\'').and_then(|i| i.strip_suffix('\'')))
    {
        return json!(q);
    }
    serde_json::from_str(s).unwrap_or_else(|_| json!(s))
}

fn apply_step(v: &Value, step: &Step) -> Vec<Value> {
    match step {
        Step::Field(f) => v.get(f).cloned().into_iter().collect(),
        Step::Index(i) => {
            let Some(a) = v.as_array() else { return vec![] };
            let idx = if *i < 0 { a.len() as i64 + i } else { *i };
            usize::try_from(idx)
                .ok()
                .and_then(|i| a.get(i))
                .cloned()
                .into_iter()
                .collect()
        }
        Step::All => match v {
            Value::Array(a) => a.clone(),
            Value::Object(m) => m.values().cloned().collect(),
            _ => vec![],
        },
        Step::Filter { path, op } => {
            let Some(a) = v.as_array() else { return vec![] };
            a.iter()
                .filter(|item| {
                    let mut cur = Some(*item);
                    for p in path {
                        cur = cur.and_then(|c| c.get(p));
                    }
                    match (cur, op) {
                        (None, _) => false,
                        (Some(_), None) => true,
                        (Some(x), Some((eq, want))) => (x == want) == *eq,
                    }
                })
                .cloned()
                .collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jsonpath_follows_fields_indices_and_filters() {
        let o = json!({"spec": {"version": "16"}, "status": {"conditions": [
            {"type": "Progressing", "status": "False"},
            {"type": "Ready", "status": "True"},
        ]}, "metadata": {"labels": {"a.b/c": "x"}}});
        assert_eq!(jsonpath(&o, ".spec.version"), vec![json!("16")]);
        assert_eq!(
            jsonpath(&o, r#".status.conditions[?(@.type=="Ready")].status"#),
            vec![json!("True")]
        );
        assert_eq!(
            jsonpath(&o, ".status.conditions[0].type"),
            vec![json!("Progressing")]
        );
        assert_eq!(jsonpath(&o, ".status.conditions[*].status").len(), 2);
        assert_eq!(jsonpath(&o, ".metadata.labels['a.b/c']"), vec![json!("x")]);
        assert!(jsonpath(&o, ".status.phase").is_empty());
    }
}
