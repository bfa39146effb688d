//! Server-side apply, and knowing when not to call it.
//!
//! Every child is written with server-side apply under the level's field
//! manager: the operator sends the fields it cares about and the API server
//! merges them, so fields other controllers own (a StatefulSet's status, a
//! Service's clusterIP) are never fought over. Before applying, the core
//! compares the desired object with the live one. It writes only when the
//! object is missing, when what the operator wants changed (a hash of the
//! desired object, kept in an annotation, differs), or when someone else
//! changed a field the operator sets (drift). At rest a reconcile therefore
//! makes no write at all.

use kube::api::{ApiResource, DynamicObject, Patch, PatchParams};
use kube::core::Resource;
use kube::{Api, Client};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::api::PostgresDB;
use crate::capability::{DesiredObject, Observed};
use crate::error::Error;
use crate::keys::APPLIED_HASH_ANNOTATION;
use crate::names::common_labels;
use crate::quantity;

/// Why an object is about to be written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// It does not exist.
    Create,
    /// What the operator wants differs from what it applied last.
    Update,
    /// Someone else changed a field the operator sets.
    Repair,
}

/// Adds what every child carries: namespace, the common labels, an owner
/// reference to the database (when owned) and the hash of the result.
pub fn decorate(object: &mut DesiredObject, db: &PostgresDB) -> Result<(), Error> {
    let db_name = db.metadata.name.clone().unwrap_or_default();
    let metadata = object
        .value
        .as_object_mut()
        .ok_or_else(|| Error::Desired {
            what: format!("{} {} is not an object", object.resource.kind, object.name),
        })?
        .entry("metadata")
        .or_insert_with(|| Value::Object(Default::default()));
    metadata["namespace"] = db.metadata.namespace.clone().into();
    let labels = metadata
        .as_object_mut()
        .ok_or_else(|| Error::Desired {
            what: format!("metadata of {} is not an object", object.name),
        })?
        .entry("labels")
        .or_insert_with(|| Value::Object(Default::default()));
    for (key, value) in common_labels(&db_name) {
        if labels.get(&key).is_none() {
            labels[key] = value.into();
        }
    }
    if object.owned {
        let owner = db.controller_owner_ref(&()).ok_or_else(|| Error::Desired {
            what: format!("an owner reference to {db_name}, which has no uid yet"),
        })?;
        metadata["ownerReferences"] =
            serde_json::to_value([owner]).map_err(|source| Error::Serialize {
                what: object.name.clone(),
                source,
            })?;
    }
    let hash = content_hash(&object.value);
    let metadata = object.value["metadata"]
        .as_object_mut()
        .ok_or_else(|| Error::Desired {
            what: format!("metadata of {} is not an object", object.name),
        })?;
    let annotations = metadata
        .entry("annotations")
        .or_insert_with(|| Value::Object(Default::default()));
    annotations[APPLIED_HASH_ANNOTATION] = hash.into();
    Ok(())
}

/// A short, stable hash of a JSON value (object keys are sorted by serde_json).
pub fn content_hash(value: &Value) -> String {
    let digest = Sha256::digest(value.to_string().as_bytes());
    hex::encode(&digest[..8])
}

/// Decides whether a desired object must be written, and why.
///
/// `None` when the live object already has every field the operator sets,
/// with the same values, and carries the hash of the same desired object.
pub fn change_needed(
    desired: &DesiredObject,
    live: Option<&DynamicObject>,
) -> Result<Option<Change>, Error> {
    let Some(live) = live else {
        return Ok(Some(Change::Create));
    };
    let wanted_hash = desired.value["metadata"]["annotations"][APPLIED_HASH_ANNOTATION].as_str();
    let live_hash = live
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(APPLIED_HASH_ANNOTATION));
    if wanted_hash.is_none() || wanted_hash != live_hash.map(String::as_str) {
        return Ok(Some(Change::Update));
    }
    let live = serde_json::to_value(live).map_err(|source| Error::Serialize {
        what: desired.name.clone(),
        source,
    })?;
    Ok((!is_subset(&desired.value, &live, false)).then_some(Change::Repair))
}

/// Whether every field of `desired` is present in `live` with an equal value.
///
/// Lists must have the same length, compared element by element. Values
/// under `requests`, `limits` and `capacity` are compared as quantities,
/// since the API server rewrites "1024Mi" as "1Gi".
pub fn is_subset(desired: &Value, live: &Value, in_quantities: bool) -> bool {
    match (desired, live) {
        (Value::Object(want), Value::Object(have)) => want.iter().all(|(key, value)| {
            // An empty map or list the operator sends is dropped by the API server.
            let empty = matches!(value, Value::Object(m) if m.is_empty())
                || matches!(value, Value::Array(a) if a.is_empty());
            match have.get(key) {
                Some(existing) => is_subset(
                    value,
                    existing,
                    in_quantities || matches!(key.as_str(), "requests" | "limits" | "capacity"),
                ),
                None => value.is_null() || empty,
            }
        }),
        (Value::Array(want), Value::Array(have)) => {
            want.len() == have.len()
                && want
                    .iter()
                    .zip(have)
                    .all(|(w, h)| is_subset(w, h, in_quantities))
        }
        (Value::String(want), Value::String(have)) if in_quantities => {
            want == have || quantity::compare(want, have) == Some(std::cmp::Ordering::Equal)
        }
        (want, have) => want == have,
    }
}

/// Applies one object with server-side apply under `field_manager`, taking
/// ownership of the fields it sets.
pub async fn apply(
    client: &Client,
    field_manager: &str,
    object: &DesiredObject,
) -> Result<DynamicObject, Error> {
    let namespace = object.value["metadata"]["namespace"]
        .as_str()
        .unwrap_or("default");
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &object.resource);
    let params = PatchParams::apply(field_manager).force();
    api.patch(&object.name, &params, &Patch::Apply(&object.value))
        .await
        .map_err(|source| Error::Kube {
            action: format!("apply {} {}", object.resource.kind, object.name),
            source: Box::new(source),
        })
}

/// The live version of a desired object, if the reconcile read it.
pub fn live<'a>(observed: &'a Observed, object: &DesiredObject) -> Option<&'a DynamicObject> {
    observed.raw(&object.resource, &object.name)
}

/// The resource of a typed kind, for building queries and desired objects.
pub fn resource_of<K: Resource<DynamicType = ()>>() -> ApiResource {
    ApiResource::erase::<K>(&())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;
    use serde_json::json;

    fn desired_config_map(data: Value) -> DesiredObject {
        let mut object = DesiredObject {
            resource: resource_of::<ConfigMap>(),
            name: "db-config".into(),
            value: json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "db-config"}, "data": data}),
            owned: true,
            record: false,
        };
        let hash = content_hash(&object.value);
        object.value["metadata"]["annotations"] = json!({ APPLIED_HASH_ANNOTATION: hash });
        object
    }

    fn live_from(desired: &DesiredObject, extra: Value) -> DynamicObject {
        let mut value = desired.value.clone();
        value["metadata"]["resourceVersion"] = "7".into();
        value["metadata"]["uid"] = "u-1".into();
        if let (Some(target), Value::Object(extra)) = (value.as_object_mut(), extra) {
            target.extend(extra);
        }
        serde_json::from_value(value).expect("a valid object")
    }

    #[test]
    fn a_missing_object_is_created() {
        let desired = desired_config_map(json!({"a": "1"}));
        assert_eq!(
            change_needed(&desired, None).expect("compares"),
            Some(Change::Create)
        );
    }

    #[test]
    fn an_object_as_applied_is_left_alone_even_with_fields_others_added() {
        let desired = desired_config_map(json!({"a": "1"}));
        let live = live_from(&desired, json!({"immutable": false}));
        assert_eq!(
            change_needed(&desired, Some(&live)).expect("compares"),
            None
        );
    }

    #[test]
    fn an_object_someone_edited_is_repaired() {
        let desired = desired_config_map(json!({"a": "1"}));
        let live = live_from(&desired, json!({"data": {"a": "edited"}}));
        assert_eq!(
            change_needed(&desired, Some(&live)).expect("compares"),
            Some(Change::Repair)
        );
    }

    #[test]
    fn a_changed_desired_object_is_updated() {
        let before = desired_config_map(json!({"a": "1"}));
        let live = live_from(&before, json!({}));
        let after = desired_config_map(json!({"a": "1", "b": "2"}));
        assert_eq!(
            change_needed(&after, Some(&live)).expect("compares"),
            Some(Change::Update)
        );
    }

    #[test]
    fn quantities_the_api_server_rewrote_compare_equal() {
        let want = json!({"resources": {"requests": {"storage": "1024Mi"}}});
        let have = json!({"resources": {"requests": {"storage": "1Gi"}}});
        assert!(is_subset(&want, &have, false));
        let other = json!({"resources": {"requests": {"storage": "2Gi"}}});
        assert!(!is_subset(&want, &other, false));
        // Outside resource maps, text is compared as text.
        assert!(!is_subset(
            &json!({"version": "16"}),
            &json!({"version": "16.0"}),
            false
        ));
    }

    #[test]
    fn lists_compare_element_by_element_and_must_keep_their_length() {
        let want = json!({"ports": [{"port": 5432}]});
        assert!(is_subset(
            &want,
            &json!({"ports": [{"port": 5432, "protocol": "TCP"}]}),
            false
        ));
        assert!(!is_subset(
            &want,
            &json!({"ports": [{"port": 5432}, {"port": 8008}]}),
            false
        ));
    }

    #[test]
    fn empty_maps_and_nulls_the_server_drops_count_as_present() {
        assert!(is_subset(
            &json!({"a": {}, "b": null, "c": []}),
            &json!({}),
            false
        ));
    }
}
