//! Server-side printing: the `Table` answers `kubectl get` asks for.
//!
//! kubectl does not know how to print most kinds; it sends
//! `Accept: application/json;as=Table;v=v1;g=meta.k8s.io` and the API server
//! answers with a `meta.k8s.io/v1` `Table`: column definitions (name, type,
//! priority; priority > 0 columns only show with `-o wide`) and one row of
//! cells per object, each row carrying the object's metadata as a
//! `PartialObjectMetadata` (or the whole object, or nothing, as the
//! `includeObject` parameter asks). Custom resources get their columns from
//! the CRD's `additionalPrinterColumns` (JSONPath expressions); built-in kinds
//! get the columns kube-apiserver's printers produce. Watches with the same
//! Accept header send one-row Tables as event objects. The same negotiation
//! also serves `as=PartialObjectMetadata[List]` (metadata-only clients).
//!
//! The Table's columns and cells are computed per kind in `columns`
//! (built-in kinds, with the cell values in `cells`) and `crd` (custom
//! resources, through the [`crate::jsonpath`] engine); `format` holds
//! the value formatting they share.

mod cells;
mod columns;
mod crd;
mod format;

use serde_json::{Value, json};

pub use crate::jsonpath::jsonpath;
use crate::registry::ResourceType;
pub use format::human_duration;

/// How a read is rendered, from the request's Accept header and
/// `includeObject` parameter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Render {
    /// The objects themselves (the default).
    #[default]
    Object,
    /// `meta.k8s.io/{version}` Tables.
    Table { version: String, include: Include },
    /// `meta.k8s.io/{version}` PartialObjectMetadata(List).
    Metadata { version: String },
}

/// What each Table row carries besides its cells.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Include {
    None,
    #[default]
    Metadata,
    Object,
}

impl Render {
    /// Picks the first media range of `accept` the server can produce, as
    /// the real content negotiation does; unknown `as=` kinds fall through
    /// to the next range.
    pub fn negotiate(accept: Option<&str>, include_object: Option<&str>) -> Render {
        let Some(accept) = accept else {
            return Render::Object;
        };
        for range in accept.split(',') {
            let mut parts = range.split(';').map(str::trim);
            let mime = parts.next().unwrap_or_default();
            let params: Vec<(&str, &str)> = parts.filter_map(|p| p.split_once('=')).collect();
            let get = |k: &str| params.iter().find(|(pk, _)| *pk == k).map(|(_, v)| *v);
            let Some(as_kind) = get("as") else {
                if matches!(mime, "application/json" | "*/*" | "application/*") {
                    return Render::Object;
                }
                continue;
            };
            if get("g") != Some("meta.k8s.io") {
                continue;
            }
            let version = match get("v") {
                Some(v @ ("v1" | "v1beta1")) => v.to_string(),
                _ => continue,
            };
            match as_kind {
                "Table" => {
                    let include = match include_object {
                        Some("None") => Include::None,
                        Some("Object") => Include::Object,
                        _ => Include::Metadata,
                    };
                    return Render::Table { version, include };
                }
                "PartialObjectMetadata" | "PartialObjectMetadataList" => {
                    return Render::Metadata { version };
                }
                _ => continue,
            }
        }
        Render::Object
    }

    /// Renders a list answer (a `<Kind>List`).
    pub fn list(&self, rt: &ResourceType, list: Value) -> Value {
        let items = list["items"].as_array().cloned().unwrap_or_default();
        let mut meta = list.get("metadata").cloned().unwrap_or(json!({}));
        match self {
            Render::Object => list,
            Render::Table { version, include } => table(rt, &items, version, *include, meta),
            Render::Metadata { version } => {
                if let Some(m) = meta.as_object_mut() {
                    m.remove("selfLink");
                }
                json!({
                    "kind": "PartialObjectMetadataList",
                    "apiVersion": format!("meta.k8s.io/{version}"),
                    "metadata": meta,
                    "items": items.iter().map(|o| partial(o, version)).collect::<Vec<_>>(),
                })
            }
        }
    }

    /// Renders one object (a get, or a watch event's object).
    pub fn object(&self, rt: &ResourceType, obj: Value) -> Value {
        match self {
            Render::Object => obj,
            Render::Table { version, include } => {
                let rv = obj
                    .pointer("/metadata/resourceVersion")
                    .cloned()
                    .unwrap_or(json!(""));
                table(
                    rt,
                    std::slice::from_ref(&obj),
                    version,
                    *include,
                    json!({"resourceVersion": rv}),
                )
            }
            Render::Metadata { version } => partial(&obj, version),
        }
    }
}

fn partial(obj: &Value, version: &str) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": format!("meta.k8s.io/{version}"),
        "metadata": obj.get("metadata").cloned().unwrap_or(json!({})),
    })
}

/// One column: name, type, priority (0 always shown, 1 with `-o wide`).
struct Col {
    name: String,
    ty: &'static str,
    format: &'static str,
    priority: i64,
    description: String,
}

fn col(name: &str, ty: &'static str, priority: i64) -> Col {
    Col {
        name: name.into(),
        ty,
        format: if name == "Name" { "name" } else { "" },
        priority,
        description: String::new(),
    }
}

fn table(
    rt: &ResourceType,
    items: &[Value],
    version: &str,
    include: Include,
    meta: Value,
) -> Value {
    let now = jiff::Timestamp::now();
    let (cols, cells) = if rt.crd {
        crd::printer(rt)
    } else {
        columns::printer(rt)
    };
    let columns: Vec<Value> = cols
        .iter()
        .map(|c| {
            json!({
                "name": c.name,
                "type": c.ty,
                "format": c.format,
                "description": if c.description.is_empty() { column_description(&c.name) } else { c.description.clone() },
                "priority": c.priority,
            })
        })
        .collect();
    let rows: Vec<Value> = items
        .iter()
        .map(|o| {
            let mut row = json!({"cells": cells(o, now)});
            match include {
                Include::None => {}
                Include::Metadata => row["object"] = partial(o, version),
                Include::Object => row["object"] = o.clone(),
            }
            row
        })
        .collect();
    let mut meta = meta;
    if let Some(m) = meta.as_object_mut() {
        m.remove("selfLink");
    }
    json!({
        "kind": "Table",
        "apiVersion": format!("meta.k8s.io/{version}"),
        "metadata": meta,
        "columnDefinitions": columns,
        "rows": rows,
    })
}

fn column_description(name: &str) -> String {
    match name {
        "Name" => "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated.".into(),
        "Age" => "CreationTimestamp is a timestamp representing the server time when this object was created.".into(),
        _ => String::new(),
    }
}

type Cells = Box<dyn Fn(&Value, jiff::Timestamp) -> Vec<Value>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_accept_header_is_negotiated() {
        let kubectl = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
        assert_eq!(
            Render::negotiate(Some(kubectl), None),
            Render::Table {
                version: "v1".into(),
                include: Include::Metadata
            }
        );
        assert_eq!(
            Render::negotiate(Some("application/json"), None),
            Render::Object
        );
        assert_eq!(
            Render::negotiate(
                Some("application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"),
                None
            ),
            Render::Metadata {
                version: "v1".into()
            }
        );
    }
}
