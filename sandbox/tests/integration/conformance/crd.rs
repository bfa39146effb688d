use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams,
};
use serde_json::json;

use crate::common::{api_err, eventually, sandbox};

fn crd(schema: serde_json::Value) -> CustomResourceDefinition {
    serde_json::from_value(json!({
        "metadata": {"name": "postgresdbs.example.com"},
        "spec": {
            "group": "example.com",
            "scope": "Namespaced",
            "names": {"plural": "postgresdbs", "singular": "postgresdb", "kind": "PostgresDB", "shortNames": ["pgdb"]},
            "versions": [{"name": "v1", "served": true, "storage": true, "schema": {"openAPIV3Schema": schema},
                          "subresources": {"status": {}, "scale": {"specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas"}}}],
        }
    }))
    .unwrap()
}

fn good_schema() -> serde_json::Value {
    json!({"type": "object", "properties": {
        "spec": {"type": "object", "required": ["version"], "properties": {
            "version": {"type": "string", "enum": ["15", "16"]},
            "replicas": {"type": "integer", "minimum": 1, "maximum": 5, "default": 1},
            "name": {"type": "string", "pattern": "^[a-z]+$", "maxLength": 8},
            "extra": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
        }},
        "status": {"type": "object", "properties": {"replicas": {"type": "integer"}, "phase": {"type": "string"}}},
    }})
}

async fn install(sb: &sandbox::Sandbox) -> Api<DynamicObject> {
    let crds: Api<CustomResourceDefinition> = Api::all(sb.client());
    crds.create(&PostParams::default(), &crd(good_schema()))
        .await
        .unwrap();
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("example.com", "v1", "PostgresDB"),
        "postgresdbs",
    );
    Api::namespaced_with(sb.client(), "default", &ar)
}

fn pg(spec: serde_json::Value) -> DynamicObject {
    serde_json::from_value(json!({"apiVersion": "example.com/v1", "kind": "PostgresDB", "metadata": {"name": "db"}, "spec": spec})).unwrap()
}

/// Upstream: an accepted CRD gets NamesAccepted and Established conditions
/// and its resource appears in discovery.
#[tokio::test]
async fn a_created_crd_is_established_and_its_resource_served() {
    let sb = sandbox().await;
    install(&sb).await;
    let crds: Api<CustomResourceDefinition> = Api::all(sb.client());
    let got = crds.get("postgresdbs.example.com").await.unwrap();
    let conds = got.status.unwrap().conditions.unwrap();
    for t in ["Established", "NamesAccepted"] {
        assert!(
            conds.iter().any(|c| c.type_ == t && c.status == "True"),
            "{t}"
        );
    }
    let d = kube::discovery::Discovery::new(sb.client())
        .run()
        .await
        .unwrap();
    assert!(d.get("example.com").is_some_and(|g| {
        g.recommended_resources()
            .iter()
            .any(|(r, _)| r.kind == "PostgresDB")
    }));
}

/// Upstream: structural schemas prune unknown fields (unless preserved) and
/// apply defaults.
#[tokio::test]
async fn custom_objects_are_defaulted_and_pruned() {
    let sb = sandbox().await;
    let api = install(&sb).await;
    let o = api
        .create(
            &PostParams::default(),
            &pg(json!({"version": "16", "bogus": 1, "extra": {"kept": true}})),
        )
        .await
        .unwrap();
    assert_eq!(o.data["spec"]["replicas"], 1);
    assert!(o.data["spec"].get("bogus").is_none());
    assert_eq!(o.data["spec"]["extra"]["kept"], true);
}

/// Upstream: schema violations are 422 Invalid with one cause per field
/// path, worded like the real server.
#[tokio::test]
async fn custom_objects_violating_the_schema_get_422_with_field_paths() {
    let sb = sandbox().await;
    let api = install(&sb).await;
    let e = api_err(
        api.create(
            &PostParams::default(),
            &pg(json!({"replicas": "three", "name": "UPPER"})),
        )
        .await,
    );
    assert_eq!((e.code, e.reason.as_str()), (422, "Invalid"));
    let fields: Vec<String> = e
        .details
        .unwrap()
        .causes
        .into_iter()
        .map(|c| c.field)
        .collect();
    for f in ["spec.version", "spec.replicas", "spec.name"] {
        assert!(fields.contains(&f.to_string()), "{f} in {fields:?}");
    }
    assert!(
        e.message
            .starts_with("PostgresDB.example.com \"db\" is invalid: ["),
        "{}",
        e.message
    );
    assert!(e.message.contains("spec.replicas: Invalid value: \"string\": spec.replicas in body must be of type integer: \"string\""), "{}", e.message);
    let e = api_err(
        api.create(
            &PostParams::default(),
            &pg(json!({"version": "9", "replicas": 9})),
        )
        .await,
    );
    assert!(
        e.message.contains("spec.version: Unsupported value: \"9\""),
        "{}",
        e.message
    );
    assert!(
        e.message.contains("should be less than or equal to 5"),
        "{}",
        e.message
    );
}

/// Upstream: a non-structural schema (a property without `type`) is
/// rejected with 422 naming the node.
#[tokio::test]
async fn a_non_structural_schema_is_rejected_with_422() {
    let sb = sandbox().await;
    let crds: Api<CustomResourceDefinition> = Api::all(sb.client());
    let schema = json!({"type": "object", "properties": {"spec": {"properties": {"x": {"type": "string"}}}}});
    let e = api_err(crds.create(&PostParams::default(), &crd(schema)).await);
    assert_eq!(e.code, 422);
    assert!(
        e.message.contains(
            "spec.versions[0].schema.openAPIV3Schema.properties[spec].type: Required value"
        ),
        "{}",
        e.message
    );
}

/// Upstream: with the status subresource, the main resource ignores status
/// and /status ignores everything else; scale reads spec.replicas.
#[tokio::test]
async fn crd_status_and_scale_subresources_work() {
    let sb = sandbox().await;
    let api = install(&sb).await;
    api.create(&PostParams::default(), &pg(json!({"version": "16"})))
        .await
        .unwrap();
    let o = api
        .patch(
            "db",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "x"}})),
        )
        .await
        .unwrap();
    assert!(o.data.get("status").is_none());
    let o = api
        .patch_status(
            "db",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"version": "15"}, "status": {"phase": "Ready"}})),
        )
        .await
        .unwrap();
    assert_eq!(o.data["status"]["phase"], "Ready");
    assert_eq!(o.data["spec"]["version"], "16");
    let scale = api.get_scale("db").await.unwrap();
    assert_eq!(scale.spec.unwrap().replicas, Some(1));
    let e = api_err(
        api.patch(
            "db",
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"version": "15"}})),
        )
        .await,
    );
    assert_eq!(
        e.code, 415,
        "strategic merge patch is not supported for custom resources"
    );
}

/// Upstream: deleting a CRD deletes its objects and stops serving them.
#[tokio::test]
async fn deleting_a_crd_deletes_its_objects() {
    let sb = sandbox().await;
    let api = install(&sb).await;
    api.create(&PostParams::default(), &pg(json!({"version": "16"})))
        .await
        .unwrap();
    let crds: Api<CustomResourceDefinition> = Api::all(sb.client());
    crds.delete("postgresdbs.example.com", &Default::default())
        .await
        .unwrap();
    eventually("the custom resource stops being served", || {
        let api = api.clone();
        async move {
            (api.list(&Default::default())
                .await
                .err()?
                .to_string()
                .contains("404"))
            .then_some(())
        }
    })
    .await;
    install(&sb).await;
    assert!(
        api.list(&Default::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
}

/// Upstream: server-side apply on a custom resource uses the CRD's
/// x-kubernetes-list-type=map keys.
#[tokio::test]
async fn apply_honours_crd_list_map_keys() {
    let sb = sandbox().await;
    let crds: Api<CustomResourceDefinition> = Api::all(sb.client());
    let schema = json!({"type": "object", "properties": {"spec": {"type": "object", "properties": {
        "version": {"type": "string"},
        "users": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"],
                  "items": {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}, "role": {"type": "string"}}}}}}}});
    crds.create(&PostParams::default(), &crd(schema))
        .await
        .unwrap();
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("example.com", "v1", "PostgresDB"),
        "postgresdbs",
    );
    let api: Api<DynamicObject> = Api::namespaced_with(sb.client(), "default", &ar);
    let obj = |user: &str| json!({"apiVersion": "example.com/v1", "kind": "PostgresDB", "metadata": {"name": "db"}, "spec": {"users": [{"name": user, "role": "r"}]}});
    api.patch("db", &PatchParams::apply("a"), &Patch::Apply(obj("alice")))
        .await
        .unwrap();
    let o = api
        .patch("db", &PatchParams::apply("b"), &Patch::Apply(obj("bob")))
        .await
        .unwrap();
    assert_eq!(o.data["spec"]["users"].as_array().unwrap().len(), 2);
}

/// Upstream: server-side apply to the status subresource records the
/// manager's fields (subresource "status"), so a status field it stops
/// applying is removed.
#[tokio::test]
async fn a_status_field_a_manager_stops_applying_is_removed() {
    let sb = sandbox().await;
    let api = install(&sb).await;
    api.create(&PostParams::default(), &pg(json!({"version": "16"})))
        .await
        .unwrap();
    let status = |status: serde_json::Value| json!({"apiVersion": "example.com/v1", "kind": "PostgresDB", "metadata": {"name": "db"}, "status": status});
    let params = PatchParams::apply("op").force();
    api.patch_status(
        "db",
        &params,
        &Patch::Apply(status(json!({"replicas": 1, "phase": "Upgrading"}))),
    )
    .await
    .unwrap();
    let o = api
        .patch_status("db", &params, &Patch::Apply(status(json!({"replicas": 1}))))
        .await
        .unwrap();
    assert_eq!(o.data["status"], json!({"replicas": 1}));
    let managers: Vec<(Option<String>, Option<String>)> = o
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .map(|m| (m.manager, m.subresource))
        .collect();
    assert!(
        managers.contains(&(Some("op".into()), Some("status".into()))),
        "{managers:?}"
    );
}
