//! The ServiceAccount admission plugin, and what every namespace is given
//! for it.
//!
//! Upstream's plugin (plugin/pkg/admission/serviceaccount) runs on every
//! pod create: it defaults `spec.serviceAccountName` to `default`, refuses
//! a pod whose ServiceAccount does not exist, and, unless
//! `automountServiceAccountToken` is false on the pod (or, when the pod
//! does not say, on its ServiceAccount), adds the projected
//! `kube-api-access-<random>` volume (a bound token, the cluster CA, the
//! namespace) mounted read-only at
//! `/var/run/secrets/kubernetes.io/serviceaccount` in every container that
//! does not already mount something there.
//!
//! The `default` ServiceAccount and the `kube-root-ca.crt` ConfigMap come,
//! upstream, from the ServiceAccount and root-CA-publisher controllers a
//! moment after a namespace is created, so a pod created at once may be
//! refused until they catch up. The sandbox creates both in the namespace's
//! own create, so no client ever sees that gap.

use serde_json::{Map, Value, json};

use super::{POD_TOKEN_EXPIRATION_SECONDS, ROOT_CA_CONFIGMAP, SERVICE_ACCOUNT_MOUNT_PATH};
use crate::cluster::{Cluster, WriteOptions};
use crate::error::{Error, Result};
use crate::meta::name_of;

/// The ServiceAccount a pod names when it names none.
pub const DEFAULT_SERVICE_ACCOUNT: &str = "default";
/// How the token volume's name starts (a random suffix follows).
pub const TOKEN_VOLUME_PREFIX: &str = "kube-api-access-";
const ROOT_CA_DESCRIPTION: &str = "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters.";

/// Whether a pod gets the token volume, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Automount {
    Mount,
    /// `automountServiceAccountToken: false` on the pod or its ServiceAccount.
    Disabled,
}

fn automount(pod: &Value, service_account: &Value) -> Automount {
    // An explicit null is no setting: the ServiceAccount's then applies.
    let flag = pod
        .pointer("/spec/automountServiceAccountToken")
        .and_then(Value::as_bool)
        .or_else(|| {
            service_account
                .get("automountServiceAccountToken")
                .and_then(Value::as_bool)
        });
    match flag {
        Some(false) => Automount::Disabled,
        _ => Automount::Mount,
    }
}

/// Admits a pod being created in `ns`: its ServiceAccount (defaulted,
/// required to exist) and the token volume.
pub fn admit_pod(cluster: &Cluster, ns: &str, pod: &mut Value) -> Result<()> {
    let name = name_of(pod).to_string();
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else {
        return Ok(());
    };
    let text = |spec: &Map<String, Value>, k: &str| {
        spec.get(k)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(String::from)
    };
    let sa_name = text(spec, "serviceAccountName")
        .or_else(|| text(spec, "serviceAccount"))
        .unwrap_or_else(|| DEFAULT_SERVICE_ACCOUNT.into());
    spec.insert("serviceAccountName".into(), json!(sa_name));
    spec.insert("serviceAccount".into(), json!(sa_name));
    let sa = super::live_object(cluster, "serviceaccounts", ns, &sa_name).ok_or_else(|| {
        Error::forbidden(
            "",
            "pods",
            &name,
            &format!(
                "error looking up service account {ns}/{sa_name}: serviceaccount {sa_name:?} not found"
            ),
        )
    })?;
    if automount(pod, &sa) == Automount::Mount {
        mount_token(pod);
    }
    Ok(())
}

/// Adds the token volume and its mounts, as upstream's
/// `mountServiceAccountToken`: an existing `kube-api-access-*` volume is
/// reused, a container that already mounts the path is left alone.
fn mount_token(pod: &mut Value) {
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    let existing = spec
        .get("volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|v| v.get("name").and_then(Value::as_str))
        .find(|n| n.starts_with(TOKEN_VOLUME_PREFIX))
        .map(String::from);
    let volume_name = existing
        .clone()
        .unwrap_or_else(|| format!("{TOKEN_VOLUME_PREFIX}{}", crate::meta::random_suffix()));
    let mut needed = false;
    for list in ["initContainers", "containers"] {
        let Some(containers) = spec.get_mut(list).and_then(Value::as_array_mut) else {
            continue;
        };
        for c in containers.iter_mut().filter_map(Value::as_object_mut) {
            let mounts = c.entry("volumeMounts").or_insert_with(|| json!([]));
            let Some(mounts) = mounts.as_array_mut() else {
                continue;
            };
            let taken = mounts.iter().any(|m| {
                m.get("mountPath").and_then(Value::as_str) == Some(SERVICE_ACCOUNT_MOUNT_PATH)
            });
            if !taken {
                mounts.push(json!({"name": volume_name, "readOnly": true, "mountPath": SERVICE_ACCOUNT_MOUNT_PATH}));
                needed = true;
            }
        }
    }
    if needed && existing.is_none() {
        let volumes = spec.entry("volumes").or_insert_with(|| json!([]));
        if let Some(v) = volumes.as_array_mut() {
            v.push(token_volume(&volume_name));
        }
    }
}

/// Upstream's projected token volume, as stored after defaulting.
pub fn token_volume(name: &str) -> Value {
    json!({
        "name": name,
        "projected": {
            "sources": [
                {"serviceAccountToken": {"expirationSeconds": POD_TOKEN_EXPIRATION_SECONDS, "path": "token"}},
                {"configMap": {"name": ROOT_CA_CONFIGMAP, "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
            ],
            "defaultMode": 420,
        },
    })
}

/// What a new namespace is given at once: the `default` ServiceAccount
/// and the `kube-root-ca.crt` ConfigMap (written as the controllers that
/// create them upstream would).
pub fn namespace_created(cluster: &Cluster, namespace: &str) {
    let objects = [
        (
            "serviceaccounts",
            "kube-controller-manager",
            json!({"metadata": {"name": DEFAULT_SERVICE_ACCOUNT}}),
        ),
        (
            "configmaps",
            "kube-controller-manager",
            json!({
                "metadata": {"name": ROOT_CA_CONFIGMAP, "annotations": {"kubernetes.io/description": ROOT_CA_DESCRIPTION}},
                "data": {"ca.crt": cluster.auth.ca_pem()},
            }),
        ),
    ];
    for (plural, manager, obj) in objects {
        let Some(rt) = cluster.registry.by_key("", plural) else {
            continue;
        };
        match cluster.create(&rt, namespace, obj, &WriteOptions::manager(manager)) {
            Ok(_) => {}
            Err(Error::Api(s)) if s.reason == "AlreadyExists" => {}
            Err(e) => {
                tracing::warn!(namespace, plural, error = %e, "failed to create a namespace's default object")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(spec: Value) -> Value {
        json!({"metadata": {"name": "p"}, "spec": spec})
    }

    #[test]
    fn every_container_without_a_mount_at_the_path_gets_the_token_volume() {
        let mut p = pod(json!({
            "initContainers": [{"name": "i"}],
            "containers": [{"name": "a"}, {"name": "b", "volumeMounts": [{"name": "mine", "mountPath": SERVICE_ACCOUNT_MOUNT_PATH}]}],
        }));
        mount_token(&mut p);
        let volume = p["spec"]["volumes"][0]["name"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(
            volume.starts_with(TOKEN_VOLUME_PREFIX)
                && volume.len() == TOKEN_VOLUME_PREFIX.len() + 5
        );
        assert_eq!(p["spec"]["volumes"][0], token_volume(&volume));
        assert_eq!(
            p["spec"]["initContainers"][0]["volumeMounts"][0]["name"],
            volume.as_str()
        );
        assert_eq!(
            p["spec"]["containers"][0]["volumeMounts"][0]["readOnly"],
            true
        );
        assert_eq!(
            p["spec"]["containers"][1]["volumeMounts"]
                .as_array()
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn the_pods_automount_setting_wins_over_its_service_accounts() {
        let off = json!({"automountServiceAccountToken": false});
        let on = json!({"automountServiceAccountToken": true});
        assert_eq!(automount(&pod(json!({})), &off), Automount::Disabled);
        assert_eq!(automount(&pod(on.clone()), &off), Automount::Mount);
        assert_eq!(automount(&pod(off.clone()), &on), Automount::Disabled);
        assert_eq!(automount(&pod(json!({})), &json!({})), Automount::Mount);
    }

    #[test]
    fn a_null_automount_on_the_pod_falls_back_to_the_service_accounts() {
        let null = json!({"automountServiceAccountToken": null});
        let off = json!({"automountServiceAccountToken": false});
        assert_eq!(automount(&pod(null.clone()), &off), Automount::Disabled);
        assert_eq!(automount(&pod(null), &json!({})), Automount::Mount);
    }
}
