//! OpenAPI v3 documents, as kube-apiserver publishes them for clients.
//!
//! `/openapi/v3` is an index of group versions; `/openapi/v3/apis/{g}/{v}`
//! (or `/openapi/v3/api/v1`) is one OpenAPI 3.0 document with the REST
//! paths of that group version and the schemas of its kinds. kubectl reads
//! them for two things:
//!
//! * `kubectl explain` finds the resource's path, takes the
//!   `x-kubernetes-group-version-kind` of one of its operations and prints
//!   the schema carrying the same GVK in `components.schemas`;
//! * before `apply`/`create`, kubectl checks whether the PATCH operation of
//!   the kind lists a `fieldValidation` parameter; if so it leaves schema
//!   validation to the server (`?fieldValidation=Strict`) instead of
//!   downloading the OpenAPI v2 document for client-side validation.
//!
//! Custom resources get their CRD's openAPIV3Schema (plus `apiVersion`,
//! `kind` and a `metadata` reference, as the apiextensions server adds);
//! built-in kinds get the schemas k8s-openapi generates through schemars,
//! which follow the upstream OpenAPI definitions field for field.

use std::sync::OnceLock;

use k8s_openapi::api;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1 as apiext;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use schemars::generate::{SchemaGenerator, SchemaSettings};
use serde_json::{Map, Value, json};

use crate::cluster::Cluster;
use crate::error::{Error, Result};
use crate::registry::ResourceType;

/// Something to do with the Rust type of a built-in kind.
pub trait KindVisitor {
    type Out;
    fn visit<T>(self) -> Self::Out
    where
        T: schemars::JsonSchema + serde::de::DeserializeOwned + serde::Serialize;
}

/// Calls `v` with the k8s-openapi type of a built-in resource.
pub fn visit_builtin<V: KindVisitor>(group: &str, plural: &str, v: V) -> Option<V::Out> {
    use api::{apps, batch, coordination, core, discovery, events, policy, rbac};
    Some(match (group, plural) {
        ("", "namespaces") => v.visit::<core::v1::Namespace>(),
        ("", "pods") => v.visit::<core::v1::Pod>(),
        ("", "services") => v.visit::<core::v1::Service>(),
        ("", "endpoints") => v.visit::<core::v1::Endpoints>(),
        ("", "configmaps") => v.visit::<core::v1::ConfigMap>(),
        ("", "secrets") => v.visit::<core::v1::Secret>(),
        ("", "persistentvolumeclaims") => v.visit::<core::v1::PersistentVolumeClaim>(),
        ("", "persistentvolumes") => v.visit::<core::v1::PersistentVolume>(),
        ("", "events") => v.visit::<core::v1::Event>(),
        ("", "serviceaccounts") => v.visit::<core::v1::ServiceAccount>(),
        ("", "nodes") => v.visit::<core::v1::Node>(),
        ("apps", "statefulsets") => v.visit::<apps::v1::StatefulSet>(),
        ("apps", "deployments") => v.visit::<apps::v1::Deployment>(),
        ("apps", "replicasets") => v.visit::<apps::v1::ReplicaSet>(),
        ("apps", "controllerrevisions") => v.visit::<apps::v1::ControllerRevision>(),
        ("batch", "jobs") => v.visit::<batch::v1::Job>(),
        ("batch", "cronjobs") => v.visit::<batch::v1::CronJob>(),
        ("coordination.k8s.io", "leases") => v.visit::<coordination::v1::Lease>(),
        ("events.k8s.io", "events") => v.visit::<events::v1::Event>(),
        ("policy", "poddisruptionbudgets") => v.visit::<policy::v1::PodDisruptionBudget>(),
        ("rbac.authorization.k8s.io", "roles") => v.visit::<rbac::v1::Role>(),
        ("rbac.authorization.k8s.io", "rolebindings") => v.visit::<rbac::v1::RoleBinding>(),
        ("rbac.authorization.k8s.io", "clusterroles") => v.visit::<rbac::v1::ClusterRole>(),
        ("rbac.authorization.k8s.io", "clusterrolebindings") => {
            v.visit::<rbac::v1::ClusterRoleBinding>()
        }
        ("discovery.k8s.io", "endpointslices") => v.visit::<discovery::v1::EndpointSlice>(),
        ("apiextensions.k8s.io", "customresourcedefinitions") => {
            v.visit::<apiext::CustomResourceDefinition>()
        }
        _ => return None,
    })
}

/// Registers a type's schema with a generator; returns its schema name.
struct Register<'a>(&'a mut SchemaGenerator);

impl KindVisitor for Register<'_> {
    type Out = String;
    fn visit<T>(self) -> String
    where
        T: schemars::JsonSchema + serde::de::DeserializeOwned + serde::Serialize,
    {
        let _ = self.0.subschema_for::<T>();
        T::schema_name().into_owned()
    }
}

/// Every schema the built-in kinds need (generated once; it is static).
struct Builtins {
    definitions: Map<String, Value>,
    /// (group, plural) → schema name.
    names: Vec<((String, String), String)>,
}

fn builtins(cluster: &Cluster) -> &'static Builtins {
    static CELL: OnceLock<Builtins> = OnceLock::new();
    CELL.get_or_init(|| {
        let mut generator = SchemaSettings::openapi3().into_generator();
        let _ = generator.subschema_for::<ObjectMeta>();
        let mut names = vec![];
        for rt in cluster.registry.all().iter().filter(|rt| !rt.crd) {
            if let Some(n) = visit_builtin(&rt.group, &rt.plural, Register(&mut generator)) {
                names.push(((rt.group.clone(), rt.plural.clone()), n));
            }
        }
        Builtins {
            definitions: generator.take_definitions(true),
            names,
        }
    })
}

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

const OBJECT_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta";

/// The schema name kube-apiserver gives a custom kind: the reversed group,
/// the version and the kind (`com.example.pgdb.v1.PostgresDB`).
fn crd_schema_name(rt: &ResourceType) -> String {
    let reversed: Vec<&str> = rt.group.split('.').rev().collect();
    format!("{}.{}.{}", reversed.join("."), rt.version, rt.kind)
}

/// A CRD version's schema as published: the openAPIV3Schema plus the
/// standard `apiVersion`, `kind` and `metadata` fields.
fn crd_schema(rt: &ResourceType) -> Value {
    let mut schema =
        rt.schema.as_deref().cloned().unwrap_or_else(
            || json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}),
        );
    if let Some(o) = schema.as_object_mut() {
        let props = o
            .entry("properties")
            .or_insert_with(|| json!({}))
            .as_object_mut();
        if let Some(p) = props {
            p.insert("apiVersion".into(), json!({"type": "string", "description": "APIVersion defines the versioned schema of this representation of an object. Servers should convert recognized schemas to the latest internal value, and may reject unrecognized values. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#resources"}));
            p.insert("kind".into(), json!({"type": "string", "description": "Kind is a string value representing the REST resource this object represents. Servers may infer this from the endpoint the client submits requests to. Cannot be updated. In CamelCase. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds"}));
            p.insert("metadata".into(), json!({"allOf": [{"$ref": format!("#/components/schemas/{OBJECT_META}")}], "description": "Standard object's metadata. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata"}));
        }
        o.entry("type").or_insert_with(|| json!("object"));
    }
    schema
}

fn gvk(rt: &ResourceType) -> Value {
    json!({"group": rt.group, "version": rt.version, "kind": rt.kind})
}

fn query(name: &str, ty: &str, description: &str) -> Value {
    json!({"name": name, "in": "query", "description": description, "schema": {"type": ty, "uniqueItems": true}})
}

fn path_param(name: &str) -> Value {
    json!({"name": name, "in": "path", "required": true, "description": format!("{name} of the resource"), "schema": {"type": "string", "uniqueItems": true}})
}

/// The write parameters kubectl looks for (`fieldValidation` in particular).
fn write_params(patch: bool) -> Vec<Value> {
    let mut p = vec![
        query(
            "dryRun",
            "string",
            "When present, indicates that modifications should not be persisted.",
        ),
        query(
            "fieldManager",
            "string",
            "fieldManager is a name associated with the actor or entity that is making these changes.",
        ),
        query(
            "fieldValidation",
            "string",
            "fieldValidation instructs the server on how to handle objects in the request (POST/PUT/PATCH) containing unknown or duplicate fields. Valid values are: - Ignore - Warn (the default) - Strict",
        ),
    ];
    if patch {
        p.push(query(
            "force",
            "boolean",
            "Force is going to \"force\" Apply requests.",
        ));
    }
    p
}

fn op(action: &str, verb: &str, rt: &ResourceType, params: Vec<Value>, schema: &str) -> Value {
    let scope = if rt.namespaced { "Namespaced" } else { "" };
    let group = rt
        .group
        .split('.')
        .next()
        .map(|g| {
            let mut c = g.chars();
            c.next()
                .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
                .unwrap_or_default()
        })
        .unwrap_or_else(|| "Core".into());
    let group = if group.is_empty() {
        "Core".into()
    } else {
        group
    };
    let version = {
        let mut c = rt.version.chars();
        c.next()
            .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
            .unwrap_or_default()
    };
    let mut o = json!({
        "operationId": format!("{verb}{group}{version}{scope}{}", rt.kind),
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": gvk(rt),
        "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}}},
    });
    if !params.is_empty() {
        o["parameters"] = json!(params);
    }
    o
}

/// The REST paths of one resource, with the operations kubectl inspects.
fn resource_paths(rt: &ResourceType, schema: &str, paths: &mut Map<String, Value>) {
    let base = format!("/{}", gv_path(&rt.group, &rt.version));
    let (collection, item) = if rt.namespaced {
        (
            format!("{base}/namespaces/{{namespace}}/{}", rt.plural),
            format!("{base}/namespaces/{{namespace}}/{}/{{name}}", rt.plural),
        )
    } else {
        (
            format!("{base}/{}", rt.plural),
            format!("{base}/{}/{{name}}", rt.plural),
        )
    };
    let ns_params: Vec<Value> = if rt.namespaced {
        vec![path_param("namespace")]
    } else {
        vec![]
    };
    let mut item_params = vec![path_param("name")];
    item_params.extend(ns_params.clone());
    paths.insert(
        collection,
        json!({
            "get": op("list", "list", rt, vec![], schema),
            "post": op("post", "create", rt, write_params(false), schema),
            "delete": op("deletecollection", "deleteCollection", rt, vec![], schema),
            "parameters": ns_params,
        }),
    );
    paths.insert(
        item,
        json!({
            "get": op("get", "read", rt, vec![], schema),
            "put": op("put", "replace", rt, write_params(false), schema),
            "patch": op("patch", "patch", rt, write_params(true), schema),
            "delete": op("delete", "delete", rt, vec![], schema),
            "parameters": item_params,
        }),
    );
    if rt.namespaced {
        paths.insert(
            format!("{base}/{}", rt.plural),
            json!({"get": op("list", "listForAllNamespaces", rt, vec![], schema)}),
        );
    }
}

/// Adds the definitions `roots` reference, transitively, from `all`.
fn reachable(all: &Map<String, Value>, roots: &mut Vec<String>, out: &mut Map<String, Value>) {
    while let Some(name) = roots.pop() {
        if out.contains_key(&name) {
            continue;
        }
        let Some(def) = all.get(&name) else { continue };
        collect_refs(def, roots);
        out.insert(name, def.clone());
    }
}

fn collect_refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            if let Some(r) = m
                .get("$ref")
                .and_then(Value::as_str)
                .and_then(|r| r.strip_prefix("#/components/schemas/"))
            {
                out.push(r.to_string());
            }
            m.values().for_each(|c| collect_refs(c, out));
        }
        Value::Array(a) => a.iter().for_each(|c| collect_refs(c, out)),
        _ => {}
    }
}

/// The OpenAPI v3 document of one group version.
fn group_version_doc(cluster: &Cluster, wanted: &str) -> Option<Value> {
    let b = builtins(cluster);
    let types: Vec<_> = cluster
        .registry
        .all()
        .into_iter()
        .filter(|rt| gv_path(&rt.group, &rt.version) == wanted)
        .collect();
    if types.is_empty() {
        return None;
    }
    let mut schemas = Map::new();
    let mut paths = Map::new();
    let mut roots = vec![];
    for rt in &types {
        let name = if rt.crd {
            let name = crd_schema_name(rt);
            let mut s = crd_schema(rt);
            s["x-kubernetes-group-version-kind"] = json!([gvk(rt)]);
            schemas.insert(name.clone(), s);
            roots.push(OBJECT_META.to_string());
            name
        } else {
            let Some((_, name)) = b
                .names
                .iter()
                .find(|((g, p), _)| *g == rt.group && *p == rt.plural)
            else {
                continue;
            };
            let mut s = b.definitions.get(name).cloned().unwrap_or(json!({}));
            s["x-kubernetes-group-version-kind"] = json!([gvk(rt)]);
            collect_refs(&s, &mut roots);
            schemas.insert(name.clone(), s);
            name.clone()
        };
        resource_paths(rt, &name, &mut paths);
    }
    reachable(&b.definitions, &mut roots, &mut schemas);
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": format!("v1.{}.0", crate::registry::KUBE_MINOR)},
        "paths": paths,
        "components": {"schemas": schemas},
    }))
}

pub fn serve(cluster: &Cluster, segs: &[&str]) -> Result<Value> {
    match segs {
        ["openapi", "v3"] => {
            let mut paths = Map::new();
            for rt in &cluster.registry.all() {
                let p = gv_path(&rt.group, &rt.version);
                paths.insert(
                    p.clone(),
                    json!({"serverRelativeURL": format!("/openapi/v3/{p}")}),
                );
            }
            Ok(json!({"paths": paths}))
        }
        ["openapi", "v3", rest @ ..] => {
            group_version_doc(cluster, &rest.join("/")).ok_or_else(Error::no_such_resource)
        }
        _ => Err(Error::no_such_resource()),
    }
}
