//! Projected and downward API volumes: several sources' files in one
//! directory, as the kubelet's `projected` volume plugin writes them.
//!
//! A `projected` volume's `sources` are ConfigMaps and Secrets (their keys
//! or `items`, as a ConfigMap or Secret volume has them, see
//! [`super::projection`]), downward API items (pod fields as files) and
//! ServiceAccount tokens (a token the API server issues for the pod's
//! ServiceAccount, bound to the pod). That is the volume the ServiceAccount
//! admission gives every pod (`kube-api-access-*`: `token`, `ca.crt`,
//! `namespace`), mounted at `/var/run/secrets/kubernetes.io/serviceaccount`.
//! A `downwardAPI` volume is a projected volume of downward API items only.
//!
//! The files follow their objects while the pod runs, as ConfigMap and
//! Secret volumes do. The token is issued once, when the pod starts, for
//! its `expirationSeconds`; the kubelet renews it at 80% of its life, the
//! sandbox does not. The admission's 3607 seconds is issued, as
//! kube-apiserver extends it, for a year (see [`crate::auth::tokens`]), so
//! a long-running pod's client stays authenticated; a pod asking for
//! another duration gets 401s once it outlives its token. Field values are read from
//! the pod as the kubelet saw it when it started it: labels and annotations
//! changed later are not followed. `resourceFieldRef` items (limits and
//! requests as files) and `clusterTrustBundle` sources are not supported:
//! a volume naming one does not start, saying so.

use k8s_openapi::api::core::v1::{DownwardAPIVolumeFile, Pod, Volume};

use super::projection::Source;

/// The default mode of a projected or downward API volume's files.
const DEFAULT_MODE: i32 = 0o644;

/// One source of a projected volume.
#[derive(Debug, Clone)]
pub enum Part {
    /// A ConfigMap's or Secret's keys.
    Object(Source),
    /// Pod fields, one file each.
    Fields {
        items: Vec<DownwardAPIVolumeFile>,
        default_mode: i32,
    },
    /// A token for the pod's ServiceAccount.
    Token {
        path: String,
        expiration_seconds: i64,
        /// Who the token is for; the API server when absent.
        audience: Option<String>,
        mode: i32,
    },
    /// A source the sandbox does not project, named for the message.
    Unsupported(String),
}

/// A projected (or downward API) volume's sources, in order.
#[derive(Debug, Clone)]
pub struct Projected {
    pub parts: Vec<Part>,
}

impl Projected {
    /// The sources of a `projected` or `downwardAPI` volume; `None` for
    /// other volumes.
    pub fn of(v: &Volume) -> Option<Projected> {
        if let Some(d) = &v.downward_api {
            return Some(Projected {
                parts: vec![Part::Fields {
                    items: d.items.clone().unwrap_or_default(),
                    default_mode: d.default_mode.unwrap_or(DEFAULT_MODE),
                }],
            });
        }
        let p = v.projected.as_ref()?;
        let default_mode = p.default_mode.unwrap_or(DEFAULT_MODE);
        let parts = p
            .sources
            .iter()
            .flatten()
            .map(|s| {
                if let Some(cm) = &s.config_map {
                    Part::Object(Source {
                        plural: "configmaps",
                        kind: "configmap",
                        name: cm.name.clone(),
                        items: cm.items.clone(),
                        default_mode,
                        optional: cm.optional.unwrap_or(false),
                    })
                } else if let Some(secret) = &s.secret {
                    Part::Object(Source {
                        plural: "secrets",
                        kind: "secret",
                        name: secret.name.clone(),
                        items: secret.items.clone(),
                        default_mode,
                        optional: secret.optional.unwrap_or(false),
                    })
                } else if let Some(d) = &s.downward_api {
                    Part::Fields {
                        items: d.items.clone().unwrap_or_default(),
                        default_mode,
                    }
                } else if let Some(t) = &s.service_account_token {
                    Part::Token {
                        path: t.path.clone(),
                        // The API server's default, and its floor (ten minutes).
                        expiration_seconds: t.expiration_seconds.unwrap_or(3600).max(600),
                        audience: t.audience.clone().filter(|a| !a.is_empty()),
                        mode: default_mode,
                    }
                } else if s.cluster_trust_bundle.is_some() {
                    Part::Unsupported("clusterTrustBundle".into())
                } else {
                    Part::Unsupported("an empty source".into())
                }
            })
            .collect();
        Some(Projected { parts })
    }

    /// Whether a token is among the sources (tokens are issued once, at start).
    pub fn has_token(&self) -> bool {
        self.parts.iter().any(|p| matches!(p, Part::Token { .. }))
    }
}

/// The content of a downward API item, or why it has none.
pub fn field_file(pod: &Pod, item: &DownwardAPIVolumeFile) -> Result<String, String> {
    let Some(field) = &item.field_ref else {
        return Err(format!(
            "downward API item {:?}: only fieldRef items are supported (resourceFieldRef is not)",
            item.path
        ));
    };
    let meta = &pod.metadata;
    let text = match field.field_path.as_str() {
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "metadata.labels" => format_map(meta.labels.iter().flatten()),
        "metadata.annotations" => format_map(meta.annotations.iter().flatten()),
        path => {
            let key = path
                .strip_prefix("metadata.labels['")
                .map(|k| (k, &meta.labels))
                .or_else(|| {
                    path.strip_prefix("metadata.annotations['")
                        .map(|k| (k, &meta.annotations))
                });
            match key.and_then(|(k, map)| Some((k.strip_suffix("']")?, map))) {
                Some((k, map)) => map
                    .as_ref()
                    .and_then(|m| m.get(k))
                    .cloned()
                    .unwrap_or_default(),
                None => {
                    return Err(format!(
                        "downward API item {:?}: field {path:?} is not supported in volumes",
                        item.path
                    ));
                }
            }
        }
    };
    Ok(text)
}

/// Labels or annotations as the kubelet writes them: `key="value"` lines,
/// sorted by key, values quoted.
fn format_map<'a>(map: impl Iterator<Item = (&'a String, &'a String)>) -> String {
    let mut pairs: Vec<(&String, &String)> = map.collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={}", quote(v)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A double-quoted string with `"`, `\` and control characters escaped.
fn quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ObjectFieldSelector;

    fn item(path: &str, field: &str) -> DownwardAPIVolumeFile {
        DownwardAPIVolumeFile {
            path: path.into(),
            field_ref: Some(ObjectFieldSelector {
                api_version: Some("v1".into()),
                field_path: field.into(),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn the_admission_s_token_volume_projects_a_token_the_root_ca_and_the_namespace() {
        let volume: Volume = serde_json::from_value(serde_json::json!({
            "name": "kube-api-access-x7k2p",
            "projected": {"sources": [
                {"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace",
                    "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}}
            ], "defaultMode": 420}
        }))
        .expect("a volume");
        let projected = Projected::of(&volume).expect("a projected volume");
        assert!(projected.has_token());
        match &projected.parts[..] {
            [
                Part::Token {
                    path,
                    expiration_seconds: 3607,
                    audience: None,
                    mode: 0o644,
                },
                Part::Object(cm),
                Part::Fields { items, .. },
            ] => {
                assert_eq!(path, "token");
                assert_eq!(
                    (cm.plural, cm.name.as_str()),
                    ("configmaps", "kube-root-ca.crt")
                );
                assert_eq!(items[0].path, "namespace");
            }
            other => panic!("unexpected parts: {other:?}"),
        }
    }

    #[test]
    fn pod_fields_become_files_as_the_kubelet_writes_them() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "op-1", "namespace": "pgdb-system", "uid": "u-1",
                "labels": {"b": "2", "a": "say \"hi\""}}
        }))
        .expect("a pod");
        let f = |field: &str| field_file(&pod, &item("f", field));
        assert_eq!(f("metadata.namespace").as_deref(), Ok("pgdb-system"));
        assert_eq!(f("metadata.name").as_deref(), Ok("op-1"));
        assert_eq!(
            f("metadata.labels").as_deref(),
            Ok("a=\"say \\\"hi\\\"\"\nb=\"2\"")
        );
        assert_eq!(f("metadata.labels['b']").as_deref(), Ok("2"));
        let err = f("status.podIP").expect_err("not a volume field");
        assert!(err.contains("status.podIP"), "{err}");
    }
}
