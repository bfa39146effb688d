//! Label and field selectors, as list and watch requests send them.
//!
//! A label selector is a comma-separated AND of requirements on
//! `metadata.labels`: `a=b`, `a==b`, `a!=b`, `a in (x,y)`, `a notin (x)`,
//! `a` (exists) and `!a` (does not exist). A field selector is the same
//! grammar restricted to `=`, `==` and `!=` on a few fields the server
//! indexes (`metadata.name`, `metadata.namespace`, and per-kind fields such
//! as a pod's `spec.nodeName` or `status.phase`).

use serde_json::Value;

use crate::error::{Error, Result};

#[derive(Debug, Clone, PartialEq)]
enum Op {
    Eq(String),
    NotEq(String),
    In(Vec<String>),
    NotIn(Vec<String>),
    Exists,
    DoesNotExist,
}

#[derive(Debug, Clone, PartialEq)]
struct Requirement {
    key: String,
    op: Op,
}

/// A parsed label selector; the empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LabelSelector(Vec<Requirement>);

/// Splits on commas that are not inside parentheses.
fn split_top(s: &str) -> Vec<&str> {
    let mut parts = vec![];
    let (mut depth, mut start) = (0, 0);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
        .into_iter()
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect()
}

fn parse_set(s: &str) -> Option<Vec<String>> {
    let inner = s.trim().strip_prefix('(')?.strip_suffix(')')?;
    Some(
        inner
            .split(',')
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .collect(),
    )
}

fn bad(sel: &str) -> Error {
    Error::bad_request(format!(
        "unable to parse requirement: found '{sel}', expected: in, notin, =, ==, !=, gt, lt"
    ))
}

impl LabelSelector {
    pub fn parse(s: &str) -> Result<LabelSelector> {
        let mut reqs = vec![];
        for part in split_top(s) {
            let req = if let Some(key) = part.strip_prefix('!') {
                Requirement {
                    key: key.trim().into(),
                    op: Op::DoesNotExist,
                }
            } else if let Some((k, v)) = part.split_once("!=") {
                Requirement {
                    key: k.trim().into(),
                    op: Op::NotEq(v.trim().into()),
                }
            } else if let Some((k, v)) = part.split_once("==") {
                Requirement {
                    key: k.trim().into(),
                    op: Op::Eq(v.trim().into()),
                }
            } else if let Some((k, v)) = part.split_once('=') {
                Requirement {
                    key: k.trim().into(),
                    op: Op::Eq(v.trim().into()),
                }
            } else if let Some((k, rest)) = part.split_once(" notin ") {
                Requirement {
                    key: k.trim().into(),
                    op: Op::NotIn(parse_set(rest).ok_or_else(|| bad(part))?),
                }
            } else if let Some((k, rest)) = part.split_once(" in ") {
                Requirement {
                    key: k.trim().into(),
                    op: Op::In(parse_set(rest).ok_or_else(|| bad(part))?),
                }
            } else if part
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
            {
                Requirement {
                    key: part.into(),
                    op: Op::Exists,
                }
            } else {
                return Err(bad(part));
            };
            if req.key.is_empty() {
                return Err(bad(part));
            }
            reqs.push(req);
        }
        Ok(LabelSelector(reqs))
    }

    /// The selector a `metav1.LabelSelector` (matchLabels + matchExpressions) means.
    pub fn from_label_selector(sel: &Value) -> LabelSelector {
        let mut reqs = vec![];
        if let Some(m) = sel.get("matchLabels").and_then(Value::as_object) {
            for (k, v) in m {
                reqs.push(Requirement {
                    key: k.clone(),
                    op: Op::Eq(v.as_str().unwrap_or_default().into()),
                });
            }
        }
        if let Some(exprs) = sel.get("matchExpressions").and_then(Value::as_array) {
            for e in exprs {
                let key = e["key"].as_str().unwrap_or_default().to_string();
                let values: Vec<String> = e["values"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|v| v.as_str().map(String::from))
                            .collect()
                    })
                    .unwrap_or_default();
                let op = match e["operator"].as_str().unwrap_or_default() {
                    "In" => Op::In(values),
                    "NotIn" => Op::NotIn(values),
                    "Exists" => Op::Exists,
                    _ => Op::DoesNotExist,
                };
                reqs.push(Requirement { key, op });
            }
        }
        LabelSelector(reqs)
    }

    /// The selector a plain `map[string]string` (a Service's selector) means.
    pub fn from_map(m: &serde_json::Map<String, Value>) -> LabelSelector {
        LabelSelector(
            m.iter()
                .map(|(k, v)| Requirement {
                    key: k.clone(),
                    op: Op::Eq(v.as_str().unwrap_or_default().into()),
                })
                .collect(),
        )
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The `key=value` pairs every match must carry (from `=`, `==` and a
    /// one-value `in`): what the store's label index can look up, leaving
    /// the rest of the selector to [`Self::matches`].
    pub fn equalities(&self) -> Vec<(&str, &str)> {
        self.0
            .iter()
            .filter_map(|r| match &r.op {
                Op::Eq(v) => Some((r.key.as_str(), v.as_str())),
                Op::In(vs) if vs.len() == 1 => Some((r.key.as_str(), vs[0].as_str())),
                _ => None,
            })
            .collect()
    }

    pub fn matches(&self, obj: &Value) -> bool {
        let labels = obj.pointer("/metadata/labels").and_then(Value::as_object);
        self.0.iter().all(|r| {
            let v = labels.and_then(|l| l.get(&r.key)).and_then(Value::as_str);
            match &r.op {
                Op::Eq(x) => v == Some(x.as_str()),
                Op::NotEq(x) => v != Some(x.as_str()),
                Op::In(xs) => v.is_some_and(|v| xs.iter().any(|x| x == v)),
                Op::NotIn(xs) => v.is_none_or(|v| !xs.iter().any(|x| x == v)),
                Op::Exists => v.is_some(),
                Op::DoesNotExist => v.is_none(),
            }
        })
    }

    /// The string form (`a=b,c in (d)`), as a Scale's `status.selector` shows it.
    pub fn render(&self) -> String {
        self.0
            .iter()
            .map(|r| match &r.op {
                Op::Eq(v) => format!("{}={}", r.key, v),
                Op::NotEq(v) => format!("{}!={}", r.key, v),
                Op::In(v) => format!("{} in ({})", r.key, v.join(",")),
                Op::NotIn(v) => format!("{} notin ({})", r.key, v.join(",")),
                Op::Exists => r.key.clone(),
                Op::DoesNotExist => format!("!{}", r.key),
            })
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// A parsed field selector.
#[derive(Debug, Clone, Default)]
pub struct FieldSelector(Vec<(String, bool, String)>);

impl FieldSelector {
    /// Parses and checks the fields against those the resource supports, as
    /// the real server does (`field label not supported: x`).
    pub fn parse(s: &str, plural: &str) -> Result<FieldSelector> {
        Self::parse_with(s, plural, &|f| f.to_string())
    }

    /// Parses a selector on `rt`, naming fields as stored (a view such as
    /// events.k8s.io renames some fields of the stored object).
    pub fn parse_for(s: &str, rt: &crate::registry::ResourceType) -> Result<FieldSelector> {
        Self::parse_with(s, &rt.plural, &|f| rt.storage_field(f))
    }

    fn parse_with(s: &str, plural: &str, rename: &dyn Fn(&str) -> String) -> Result<FieldSelector> {
        let mut reqs = vec![];
        for part in split_top(s) {
            let (field, eq, value) = if let Some((k, v)) = part.split_once("!=") {
                (k, false, v)
            } else if let Some((k, v)) = part.split_once("==") {
                (k, true, v)
            } else if let Some((k, v)) = part.split_once('=') {
                (k, true, v)
            } else {
                return Err(Error::bad_request(format!(
                    "invalid selector: '{s}'; can't understand '{part}'"
                )));
            };
            let field = rename(field.trim());
            let field = field.as_str();
            let supported = matches!(field, "metadata.name" | "metadata.namespace")
                || match plural {
                    "pods" => matches!(
                        field,
                        "spec.nodeName" | "status.phase" | "spec.restartPolicy" | "status.podIP"
                    ),
                    "events" => {
                        field.starts_with("involvedObject.")
                            || matches!(field, "reason" | "type" | "source")
                    }
                    "secrets" => field == "type",
                    "namespaces" => field == "status.phase",
                    _ => false,
                };
            if !supported {
                return Err(Error::bad_request(format!(
                    "field label not supported: {field}"
                )));
            }
            reqs.push((field.to_string(), eq, value.trim().to_string()));
        }
        Ok(FieldSelector(reqs))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn matches(&self, obj: &Value) -> bool {
        self.0.iter().all(|(field, eq, value)| {
            let pointer = format!("/{}", field.replace('.', "/"));
            let actual = obj
                .pointer(&pointer)
                .and_then(Value::as_str)
                .unwrap_or_default();
            (actual == value) == *eq
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn set_based_requirements_parse_and_match() {
        let pod = json!({"metadata": {"labels": {"app": "pg", "tier": "db"}}});
        for (sel, expected) in [
            ("app=pg", true),
            ("app==pg,tier=db", true),
            ("app!=pg", false),
            ("app in (pg, redis)", true),
            ("tier notin (db)", false),
            ("app", true),
            ("!app", false),
            ("!missing", true),
            ("app in (x),tier", false),
        ] {
            assert_eq!(
                LabelSelector::parse(sel).unwrap().matches(&pod),
                expected,
                "{sel}"
            );
        }
    }
}
