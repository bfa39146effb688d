//! A container's environment as the kubelet builds it: `env` and `envFrom`
//! read from Secrets and ConfigMaps, the downward API's pod fields, and
//! `$(VAR)` expansion. Also reads the data of a Secret or ConfigMap, which
//! the pod's volumes (`pod_volumes`) need too. Paths and host
//! names in the values are translated later, when the container is
//! launched (`launch`).

use std::collections::BTreeMap;

use base64::Engine;
use k8s_openapi::api::core::v1::Container;
use serde_json::Value;

use super::state::{PodCtx, Wait, wait};
use crate::cluster::Cluster;

/// Reads one key of a Secret (base64 `data`) or ConfigMap (`data`).
pub(super) fn object_key(
    c: &Cluster,
    kind: &str,
    ns: &str,
    name: &str,
    key: &str,
) -> Option<String> {
    let obj = c.store.get(&format!("/{kind}"), ns, name)?;
    if kind == "secrets" {
        let b64 = obj.pointer(&format!("/data/{key}"))?.as_str()?;
        let bytes = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
        String::from_utf8(bytes).ok()
    } else {
        obj.get("data")?.get(key)?.as_str().map(str::to_string)
    }
}

/// Every key of a Secret or ConfigMap as bytes.
pub(super) fn object_data(
    c: &Cluster,
    kind: &str,
    ns: &str,
    name: &str,
) -> Option<BTreeMap<String, Vec<u8>>> {
    let obj = c.store.get(&format!("/{kind}"), ns, name)?;
    let mut out = BTreeMap::new();
    for (k, v) in obj
        .get("data")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        let s = v.as_str().unwrap_or_default();
        let bytes = if kind == "secrets" {
            base64::engine::general_purpose::STANDARD.decode(s).ok()?
        } else {
            s.as_bytes().to_vec()
        };
        out.insert(k.clone(), bytes);
    }
    if kind == "configmaps" {
        for (k, v) in obj
            .get("binaryData")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(v.as_str().unwrap_or_default())
                .ok()?;
            out.insert(k.clone(), bytes);
        }
    }
    Some(out)
}

/// Expands `$(VAR)` references as the kubelet does (`$$` escapes).
pub(super) fn expand(text: &str, env: &[(String, String)]) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
        } else if let Some(body) = after.strip_prefix('(')
            && let Some(end) = body.find(')')
            && let Some((_, v)) = env.iter().rev().find(|(k, _)| k == &body[..end])
        {
            out.push_str(v);
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// The variables the kubelet gives every container for the API server's
/// Service (`kubernetes` in `default`), here its HTTPS listener in host
/// terms: `KUBERNETES_SERVICE_HOST`/`_PORT`/`_PORT_HTTPS` and the
/// Docker-link style `KUBERNETES_PORT*`.
pub(super) fn kubernetes_service_env(addr: std::net::SocketAddr) -> Vec<(String, String)> {
    let (ip, port) = (addr.ip().to_string(), addr.port());
    let url = format!("tcp://{addr}");
    let prefix = format!("KUBERNETES_PORT_{port}_TCP");
    vec![
        ("KUBERNETES_SERVICE_HOST".into(), ip.clone()),
        ("KUBERNETES_SERVICE_PORT".into(), port.to_string()),
        ("KUBERNETES_SERVICE_PORT_HTTPS".into(), port.to_string()),
        ("KUBERNETES_PORT".into(), url.clone()),
        (prefix.clone(), url),
        (format!("{prefix}_PROTO"), "tcp".into()),
        (format!("{prefix}_PORT"), port.to_string()),
        (format!("{prefix}_ADDR"), ip),
    ]
}

/// The container's environment, with Secret and ConfigMap references read.
pub(super) fn resolve_env(
    c: &Cluster,
    ctx: &PodCtx,
    spec: &Container,
) -> std::result::Result<Vec<(String, String)>, Wait> {
    let ns = &ctx.ns;
    let mut env: Vec<(String, String)> = vec![];
    for from in spec.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        let (kind, name, optional) = if let Some(s) = &from.secret_ref {
            ("secrets", s.name.clone(), s.optional.unwrap_or(false))
        } else if let Some(m) = &from.config_map_ref {
            ("configmaps", m.name.clone(), m.optional.unwrap_or(false))
        } else {
            continue;
        };
        match object_data(c, kind, ns, &name) {
            Some(data) => {
                for (k, v) in data {
                    env.push((
                        format!("{prefix}{k}"),
                        String::from_utf8_lossy(&v).into_owned(),
                    ));
                }
            }
            None if optional => {}
            None => {
                let what = if kind == "secrets" {
                    "secret"
                } else {
                    "configmap"
                };
                return Err(wait(
                    "CreateContainerConfigError",
                    format!("{what} \"{name}\" not found"),
                ));
            }
        }
    }
    for e in spec.env.iter().flatten() {
        let value = if let Some(v) = &e.value {
            expand(v, &env)
        } else if let Some(from) = &e.value_from {
            let found = if let Some(s) = &from.secret_key_ref {
                let v = object_key(c, "secrets", ns, &s.name, &s.key);
                if v.is_none() && !s.optional.unwrap_or(false) {
                    return Err(wait(
                        "CreateContainerConfigError",
                        format!("couldn't find key {} in Secret {ns}/{}", s.key, s.name),
                    ));
                }
                v
            } else if let Some(m) = &from.config_map_key_ref {
                let v = object_key(c, "configmaps", ns, &m.name, &m.key);
                if v.is_none() && !m.optional.unwrap_or(false) {
                    return Err(wait(
                        "CreateContainerConfigError",
                        format!("couldn't find key {} in ConfigMap {ns}/{}", m.key, m.name),
                    ));
                }
                v
            } else if let Some(f) = &from.field_ref {
                match f.field_path.as_str() {
                    "metadata.name" => Some(ctx.name.clone()),
                    "metadata.namespace" => Some(ctx.ns.clone()),
                    "metadata.uid" => Some(ctx.uid.clone()),
                    "status.podIP" => Some(ctx.ip.to_string()),
                    "spec.nodeName" => Some(crate::cluster::NODE_NAME.to_string()),
                    "status.hostIP" => Some("127.0.0.1".to_string()),
                    _ => None,
                }
            } else {
                None
            };
            match found {
                Some(v) => v,
                None => continue,
            }
        } else {
            String::new()
        };
        env.push((e.name.clone(), value));
    }
    Ok(env)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_api_server_s_service_variables_name_its_https_listener() {
        let env = kubernetes_service_env("127.0.0.1:40123".parse().expect("an address"));
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("KUBERNETES_SERVICE_HOST"), Some("127.0.0.1"));
        assert_eq!(get("KUBERNETES_SERVICE_PORT"), Some("40123"));
        assert_eq!(get("KUBERNETES_PORT"), Some("tcp://127.0.0.1:40123"));
        assert_eq!(get("KUBERNETES_PORT_40123_TCP_ADDR"), Some("127.0.0.1"));
    }

    #[test]
    fn kubelet_style_references_are_expanded() {
        let env = vec![("A".to_string(), "x".to_string())];
        assert_eq!(expand("$(A)/y", &env), "x/y");
        assert_eq!(expand("$$(A)", &env), "$(A)");
        assert_eq!(expand("$(B) $A", &env), "$(B) $A");
    }
}
