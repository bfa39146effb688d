//! Lists: a `<Kind>List` with label and field selectors applied, paged
//! with `limit` and `continue` (an opaque token naming the last key
//! served, as the real server's is opaque).

use base64::Engine;
use serde_json::{Value, json};

use super::{Cluster, ListOptions};
use crate::error::{Error, Result};
use crate::registry::ResourceType;
use crate::store::ObjectKey;

impl Cluster {
    /// A `<Kind>List` with selectors and paging applied.
    pub fn list(&self, rt: &ResourceType, ns: Option<&str>, opts: &ListOptions) -> Result<Value> {
        let after = opts
            .continue_token
            .as_deref()
            .map(decode_continue)
            .transpose()?;
        let keep = |o: &Value| opts.labels.matches(o) && opts.fields.matches(o);
        let page = self.store.list_labelled(
            &rt.key(),
            ns,
            &opts.labels.equalities(),
            after.as_ref(),
            opts.limit.filter(|l| *l > 0),
            &keep,
        );
        let mut metadata = json!({"resourceVersion": page.rv.to_string()});
        if let Some(next) = &page.next {
            metadata["continue"] = json!(encode_continue(next));
        }
        Ok(json!({
            "apiVersion": rt.api_version(),
            "kind": rt.list_kind(),
            "metadata": metadata,
            "items": page.items.into_iter().map(|o| rt.to_view(o)).collect::<Vec<_>>(),
        }))
    }
}

fn encode_continue(k: &ObjectKey) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json!([k.0, k.1]).to_string())
}

fn decode_continue(s: &str) -> Result<ObjectKey> {
    let bad = || Error::bad_request(format!("continue key is not valid: {s}"));
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&bytes).map_err(|_| bad())?;
    match (
        v.get(0).and_then(Value::as_str),
        v.get(1).and_then(Value::as_str),
    ) {
        (Some(a), Some(b)) => Ok((a.to_string(), b.to_string())),
        _ => Err(bad()),
    }
}
