//! OpenAPI v3 documents, enough for `kubectl explain` on custom resources.
//!
//! kubectl fetches `/openapi/v3` (an index of group versions) and then the
//! document of one group version, where it looks for the schema whose
//! `x-kubernetes-group-version-kind` names the kind to explain. The sandbox
//! publishes the openAPIV3Schema of every CRD version; built-in kinds are
//! listed without schemas.

use serde_json::{Map, Value, json};

use crate::cluster::Cluster;
use crate::error::{Error, Result};

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

pub fn serve(cluster: &Cluster, segs: &[&str]) -> Result<Value> {
    let types = cluster.registry.all();
    match segs {
        ["openapi", "v3"] => {
            let mut paths = Map::new();
            for rt in &types {
                let p = gv_path(&rt.group, &rt.version);
                paths.insert(
                    p.clone(),
                    json!({"serverRelativeURL": format!("/openapi/v3/{p}")}),
                );
            }
            Ok(json!({"paths": paths}))
        }
        ["openapi", "v3", rest @ ..] => {
            let wanted = rest.join("/");
            let mut schemas = Map::new();
            for rt in types
                .iter()
                .filter(|rt| gv_path(&rt.group, &rt.version) == wanted)
            {
                let mut schema = rt
                    .schema
                    .as_deref()
                    .cloned()
                    .unwrap_or_else(|| json!({"type": "object"}));
                schema["x-kubernetes-group-version-kind"] =
                    json!([{"group": rt.group, "version": rt.version, "kind": rt.kind}]);
                let reversed: Vec<&str> = rt.group.split('.').rev().collect();
                let prefix = if rt.group.is_empty() {
                    "io.k8s.api.core".to_string()
                } else {
                    reversed.join(".")
                };
                schemas.insert(format!("{prefix}.{}.{}", rt.version, rt.kind), schema);
            }
            if schemas.is_empty() {
                return Err(Error::no_such_resource());
            }
            Ok(json!({
                "openapi": "3.0.0",
                "info": {"title": "Kubernetes", "version": format!("v1.{}.0", crate::server::KUBE_MINOR)},
                "paths": {},
                "components": {"schemas": schemas},
            }))
        }
        _ => Err(Error::no_such_resource()),
    }
}
