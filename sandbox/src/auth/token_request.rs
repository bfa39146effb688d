//! The TokenRequest API: `POST .../serviceaccounts/<name>/token`, what
//! `kubectl create token` and the kubelet call.
//!
//! As upstream: `spec.expirationSeconds` defaults to one hour and must be
//! at least ten minutes (and at most 2^32 seconds); `spec.boundObjectRef`
//! may bind the token to a Pod, whose deletion then invalidates it;
//! `spec.audiences` (default: the API server's) are the token's `aud`; the
//! answer is the TokenRequest with `status.token` and
//! `status.expirationTimestamp`. Nothing is stored.

use serde_json::{Value, json};

use crate::cluster::Cluster;
use crate::error::{Cause, Error, Result};

const GROUP: &str = "authentication.k8s.io";
const DEFAULT_EXPIRATION_SECONDS: i64 = 3600;
const MIN_EXPIRATION_SECONDS: i64 = 600;
const MAX_EXPIRATION_SECONDS: i64 = 1 << 32;

/// Issues a token for ServiceAccount `ns/name` as `request` asks.
pub fn create(cluster: &Cluster, ns: &str, name: &str, mut request: Value) -> Result<Value> {
    let invalid = |cause: Cause| Error::invalid(GROUP, "TokenRequest", name, vec![cause]);
    let expiration = match request.pointer("/spec/expirationSeconds") {
        None | Some(Value::Null) => DEFAULT_EXPIRATION_SECONDS,
        Some(v) => v.as_i64().ok_or_else(|| {
            invalid(Cause::invalid(
                "spec.expirationSeconds",
                v,
                "must be an integer",
            ))
        })?,
    };
    if expiration < MIN_EXPIRATION_SECONDS {
        return Err(invalid(Cause::invalid(
            "spec.expirationSeconds",
            &json!(expiration),
            "may not specify a duration less than 10 minutes",
        )));
    }
    if expiration > MAX_EXPIRATION_SECONDS {
        return Err(invalid(Cause::invalid(
            "spec.expirationSeconds",
            &json!(expiration),
            "may not specify a duration larger than 2^32 seconds",
        )));
    }
    let audiences: Vec<String> = match request.pointer("/spec/audiences") {
        None | Some(Value::Null) => vec![],
        Some(Value::Array(list)) => list
            .iter()
            .enumerate()
            .map(|(i, a)| {
                a.as_str().map(String::from).ok_or_else(|| {
                    invalid(Cause::invalid(
                        format!("spec.audiences[{i}]"),
                        a,
                        "must be a string",
                    ))
                })
            })
            .collect::<Result<_>>()?,
        Some(v) => {
            return Err(invalid(Cause::invalid(
                "spec.audiences",
                v,
                "must be a list of strings",
            )));
        }
    };
    let bound = request.pointer("/spec/boundObjectRef").cloned();
    let pod = match &bound {
        None | Some(Value::Null) => None,
        Some(r) => {
            let text = |k: &str| r.get(k).and_then(Value::as_str).unwrap_or_default();
            if text("kind") != "Pod" {
                return Err(invalid(Cause::not_supported(
                    "spec.boundObjectRef.kind",
                    &json!(text("kind")),
                    &[json!("Pod")],
                )));
            }
            let pod = text("name").to_string();
            // `uID` is the field's name in the protobuf form kubectl sends.
            let uid = match [text("uid"), text("uID")]
                .into_iter()
                .find(|u| !u.is_empty())
                .unwrap_or_default()
            {
                "" => {
                    let rt = cluster.rt("", "pods")?;
                    crate::meta::uid_of(&cluster.get(&rt, ns, &pod)?).to_string()
                }
                uid => uid.to_string(),
            };
            Some((pod, uid))
        }
    };
    let token = super::service_account_token(
        cluster,
        ns,
        name,
        pod.as_ref().map(|(p, u)| (p.as_str(), u.as_str())),
        expiration,
        &audiences,
    )?;
    let expires = jiff::Timestamp::from_second(jiff::Timestamp::now().as_second() + expiration)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default();
    let Some(o) = request.as_object_mut() else {
        return Err(Error::bad_request(
            "the object provided is not a JSON object",
        ));
    };
    o.insert("apiVersion".into(), json!(format!("{GROUP}/v1")));
    o.insert("kind".into(), json!("TokenRequest"));
    o.insert(
        "metadata".into(),
        json!({"name": name, "namespace": ns, "creationTimestamp": crate::meta::now()}),
    );
    let spec = o.entry("spec").or_insert_with(|| json!({}));
    spec["expirationSeconds"] = json!(expiration);
    if audiences.is_empty() {
        spec["audiences"] = json!([super::tokens::API_AUDIENCE]);
    }
    o.insert(
        "status".into(),
        json!({"token": token, "expirationTimestamp": expires}),
    );
    Ok(request)
}
