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

use serde_json::{Map, Value, json};

use crate::registry::ResourceType;

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
    let (cols, cells) = printer(rt);
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

/// The columns of a kind and the function computing a row's cells.
fn printer(rt: &ResourceType) -> (Vec<Col>, Cells) {
    if rt.crd {
        return crd_printer(rt);
    }
    let name = |o: &Value| json!(str_at(o, "/metadata/name"));
    let age_of =
        |o: &Value, now: jiff::Timestamp| json!(age(str_at(o, "/metadata/creationTimestamp"), now));
    macro_rules! printer {
        ([$($c:expr),* $(,)?], |$o:ident, $now:ident| $cells:expr) => {
            (
                vec![$($c),*],
                Box::new(move |$o: &Value, $now: jiff::Timestamp| {
                    let _ = $now;
                    Vec::from($cells)
                }),
            )
        };
    }
    match (rt.group.as_str(), rt.plural.as_str()) {
        ("", "pods") => printer!(
            [
                col("Name", "string", 0),
                col("Ready", "string", 0),
                col("Status", "string", 0),
                col("Restarts", "string", 0),
                col("Age", "string", 0),
                col("IP", "string", 1),
                col("Node", "string", 1),
                col("Nominated Node", "string", 1),
                col("Readiness Gates", "string", 1),
            ],
            |o, now| [
                name(o),
                json!(pod_ready(o)),
                json!(pod_status(o)),
                json!(pod_restarts(o, now)),
                age_of(o, now),
                json!(or_none(str_at(o, "/status/podIP"))),
                json!(or_none(str_at(o, "/spec/nodeName"))),
                json!(or_none(str_at(o, "/status/nominatedNodeName"))),
                json!(readiness_gates(o)),
            ]
        ),
        ("apps", "statefulsets") => printer!(
            [
                col("Name", "string", 0),
                col("Ready", "string", 0),
                col("Age", "string", 0),
                col("Containers", "string", 1),
                col("Images", "string", 1),
            ],
            |o, now| [
                name(o),
                json!(format!(
                    "{}/{}",
                    int_at(o, "/status/readyReplicas"),
                    o.pointer("/spec/replicas")
                        .and_then(Value::as_i64)
                        .unwrap_or(1)
                )),
                age_of(o, now),
                json!(containers(o, "/spec/template/spec/containers", "name")),
                json!(containers(o, "/spec/template/spec/containers", "image")),
            ]
        ),
        ("apps", "deployments") => printer!(
            [
                col("Name", "string", 0),
                col("Ready", "string", 0),
                col("Up-to-date", "string", 0),
                col("Available", "string", 0),
                col("Age", "string", 0),
                col("Containers", "string", 1),
                col("Images", "string", 1),
                col("Selector", "string", 1),
            ],
            |o, now| [
                name(o),
                json!(format!(
                    "{}/{}",
                    int_at(o, "/status/readyReplicas"),
                    o.pointer("/spec/replicas")
                        .and_then(Value::as_i64)
                        .unwrap_or(1)
                )),
                json!(int_at(o, "/status/updatedReplicas")),
                json!(int_at(o, "/status/availableReplicas")),
                age_of(o, now),
                json!(containers(o, "/spec/template/spec/containers", "name")),
                json!(containers(o, "/spec/template/spec/containers", "image")),
                json!(selector(o.pointer("/spec/selector"))),
            ]
        ),
        ("apps", "controllerrevisions") => printer!(
            [
                col("Name", "string", 0),
                col("Controller", "string", 0),
                col("Revision", "integer", 0),
                col("Age", "string", 0),
            ],
            |o, now| [
                name(o),
                json!(controller(o)),
                json!(int_at(o, "/revision")),
                age_of(o, now)
            ]
        ),
        ("", "services") => printer!(
            [
                col("Name", "string", 0),
                col("Type", "string", 0),
                col("Cluster-IP", "string", 0),
                col("External-IP", "string", 0),
                col("Port(s)", "string", 0),
                col("Age", "string", 0),
                col("Selector", "string", 1),
            ],
            |o, now| [
                name(o),
                json!(service_type(o)),
                json!(or_none(str_at(o, "/spec/clusterIP"))),
                json!(external_ip(o)),
                json!(service_ports(o)),
                age_of(o, now),
                json!(map_selector(o.pointer("/spec/selector"))),
            ]
        ),
        ("", "endpoints") => printer!(
            [
                col("Name", "string", 0),
                col("Endpoints", "string", 0),
                col("Age", "string", 0)
            ],
            |o, now| [name(o), json!(endpoints(o)), age_of(o, now)]
        ),
        ("discovery.k8s.io", "endpointslices") => printer!(
            [
                col("Name", "string", 0),
                col("AddressType", "string", 0),
                col("Ports", "string", 0),
                col("Endpoints", "string", 0),
                col("Age", "string", 0),
            ],
            |o, now| [
                name(o),
                json!(str_at(o, "/addressType")),
                json!(slice_ports(o)),
                json!(slice_endpoints(o)),
                age_of(o, now),
            ]
        ),
        ("", "persistentvolumeclaims") => printer!(
            [
                col("Name", "string", 0),
                col("Status", "string", 0),
                col("Volume", "string", 0),
                col("Capacity", "string", 0),
                col("Access Modes", "string", 0),
                col("StorageClass", "string", 0),
                col("VolumeAttributesClass", "string", 0),
                col("Age", "string", 0),
                col("VolumeMode", "string", 1),
            ],
            |o, now| {
                let bound = !str_at(o, "/spec/volumeName").is_empty();
                [
                    name(o),
                    json!(if o.pointer("/metadata/deletionTimestamp").is_some() {
                        "Terminating"
                    } else {
                        str_at(o, "/status/phase")
                    }),
                    json!(str_at(o, "/spec/volumeName")),
                    json!(if bound {
                        str_at(o, "/status/capacity/storage")
                    } else {
                        ""
                    }),
                    json!(if bound {
                        access_modes(o.pointer("/status/accessModes"))
                    } else {
                        String::new()
                    }),
                    json!(str_at(o, "/spec/storageClassName")),
                    json!(unset(str_at(o, "/spec/volumeAttributesClassName"))),
                    age_of(o, now),
                    json!(or_default(str_at(o, "/spec/volumeMode"), "Filesystem")),
                ]
            }
        ),
        ("", "persistentvolumes") => printer!(
            [
                col("Name", "string", 0),
                col("Capacity", "string", 0),
                col("Access Modes", "string", 0),
                col("Reclaim Policy", "string", 0),
                col("Status", "string", 0),
                col("Claim", "string", 0),
                col("StorageClass", "string", 0),
                col("VolumeAttributesClass", "string", 0),
                col("Reason", "string", 0),
                col("Age", "string", 0),
                col("VolumeMode", "string", 1),
            ],
            |o, now| [
                name(o),
                json!(str_at(o, "/spec/capacity/storage")),
                json!(access_modes(o.pointer("/spec/accessModes"))),
                json!(str_at(o, "/spec/persistentVolumeReclaimPolicy")),
                json!(if o.pointer("/metadata/deletionTimestamp").is_some() {
                    "Terminating"
                } else {
                    str_at(o, "/status/phase")
                }),
                json!(match str_at(o, "/spec/claimRef/name") {
                    "" => String::new(),
                    n => format!("{}/{n}", str_at(o, "/spec/claimRef/namespace")),
                }),
                json!(str_at(o, "/spec/storageClassName")),
                json!(unset(str_at(o, "/spec/volumeAttributesClassName"))),
                json!(str_at(o, "/status/reason")),
                age_of(o, now),
                json!(or_default(str_at(o, "/spec/volumeMode"), "Filesystem")),
            ]
        ),
        ("batch", "jobs") => printer!(
            [
                col("Name", "string", 0),
                col("Status", "string", 0),
                col("Completions", "string", 0),
                col("Duration", "string", 0),
                col("Age", "string", 0),
                col("Containers", "string", 1),
                col("Images", "string", 1),
                col("Selector", "string", 1),
            ],
            |o, now| [
                name(o),
                json!(job_status(o)),
                json!(job_completions(o)),
                json!(job_duration(o, now)),
                age_of(o, now),
                json!(containers(o, "/spec/template/spec/containers", "name")),
                json!(containers(o, "/spec/template/spec/containers", "image")),
                json!(selector(o.pointer("/spec/selector"))),
            ]
        ),
        ("batch", "cronjobs") => printer!(
            [
                col("Name", "string", 0),
                col("Schedule", "string", 0),
                col("Timezone", "string", 0),
                col("Suspend", "boolean", 0),
                col("Active", "integer", 0),
                col("Last Schedule", "string", 0),
                col("Age", "string", 0),
                col("Containers", "string", 1),
                col("Images", "string", 1),
                col("Selector", "string", 1),
            ],
            |o, now| [
                name(o),
                json!(str_at(o, "/spec/schedule")),
                json!(or_none(str_at(o, "/spec/timeZone"))),
                json!(
                    o.pointer("/spec/suspend")
                        .and_then(Value::as_bool)
                        .unwrap_or(false)
                ),
                json!(
                    o.pointer("/status/active")
                        .and_then(Value::as_array)
                        .map_or(0, Vec::len)
                ),
                json!(match str_at(o, "/status/lastScheduleTime") {
                    "" => "<none>".to_string(),
                    t => age(t, now),
                }),
                age_of(o, now),
                json!(containers(
                    o,
                    "/spec/jobTemplate/spec/template/spec/containers",
                    "name"
                )),
                json!(containers(
                    o,
                    "/spec/jobTemplate/spec/template/spec/containers",
                    "image"
                )),
                json!(selector(o.pointer("/spec/jobTemplate/spec/selector"))),
            ]
        ),
        ("", "secrets") => printer!(
            [
                col("Name", "string", 0),
                col("Type", "string", 0),
                col("Data", "string", 0),
                col("Age", "string", 0),
            ],
            |o, now| [
                name(o),
                json!(str_at(o, "/type")),
                json!(map_len(o, "/data")),
                age_of(o, now),
            ]
        ),
        ("", "configmaps") => printer!(
            [
                col("Name", "string", 0),
                col("Data", "string", 0),
                col("Age", "string", 0)
            ],
            |o, now| [
                name(o),
                json!(map_len(o, "/data") + map_len(o, "/binaryData")),
                age_of(o, now)
            ]
        ),
        ("", "serviceaccounts") => printer!(
            [
                col("Name", "string", 0),
                col("Secrets", "string", 0),
                col("Age", "string", 0)
            ],
            |o, now| [
                name(o),
                json!(
                    o.pointer("/secrets")
                        .and_then(Value::as_array)
                        .map_or(0, Vec::len)
                ),
                age_of(o, now),
            ]
        ),
        ("", "namespaces") => printer!(
            [
                col("Name", "string", 0),
                col("Status", "string", 0),
                col("Age", "string", 0)
            ],
            |o, now| [name(o), json!(str_at(o, "/status/phase")), age_of(o, now)]
        ),
        ("", "nodes") => printer!(
            [
                col("Name", "string", 0),
                col("Status", "string", 0),
                col("Roles", "string", 0),
                col("Age", "string", 0),
                col("Version", "string", 0),
                col("Internal-IP", "string", 1),
                col("External-IP", "string", 1),
                col("OS-Image", "string", 1),
                col("Kernel-Version", "string", 1),
                col("Container-Runtime", "string", 1),
            ],
            |o, now| [
                name(o),
                json!(node_status(o)),
                json!("<none>"),
                age_of(o, now),
                json!(str_at(o, "/status/nodeInfo/kubeletVersion")),
                json!(node_address(o, "InternalIP")),
                json!(node_address(o, "ExternalIP")),
                json!(or_default(
                    str_at(o, "/status/nodeInfo/osImage"),
                    "<unknown>"
                )),
                json!(or_default(
                    str_at(o, "/status/nodeInfo/kernelVersion"),
                    "<unknown>"
                )),
                json!(or_default(
                    str_at(o, "/status/nodeInfo/containerRuntimeVersion"),
                    "<unknown>"
                )),
            ]
        ),
        ("", "events") | ("events.k8s.io", "events") => printer!(
            [
                col("Last Seen", "string", 0),
                col("Type", "string", 0),
                col("Reason", "string", 0),
                col("Object", "string", 0),
                col("Subobject", "string", 1),
                col("Source", "string", 1),
                col("Message", "string", 0),
                col("First Seen", "string", 1),
                col("Count", "integer", 1),
                col("Name", "string", 1),
            ],
            |o, now| {
                // Both views print the storage (core v1) form, as upstream
                // prints the internal type for both.
                let core = crate::convert::event_to_core(o.clone());
                event_cells(&core, now)
            }
        ),
        ("coordination.k8s.io", "leases") => printer!(
            [
                col("Name", "string", 0),
                col("Holder", "string", 0),
                col("Age", "string", 0)
            ],
            |o, now| [
                name(o),
                json!(str_at(o, "/spec/holderIdentity")),
                age_of(o, now)
            ]
        ),
        ("policy", "poddisruptionbudgets") => printer!(
            [
                col("Name", "string", 0),
                col("Min Available", "string", 0),
                col("Max Unavailable", "string", 0),
                col("Allowed Disruptions", "integer", 0),
                col("Age", "string", 0),
            ],
            |o, now| [
                name(o),
                json!(int_or_string(o.pointer("/spec/minAvailable"))),
                json!(int_or_string(o.pointer("/spec/maxUnavailable"))),
                json!(int_at(o, "/status/disruptionsAllowed")),
                age_of(o, now),
            ]
        ),
        ("rbac.authorization.k8s.io", "rolebindings" | "clusterrolebindings") => printer!(
            [
                col("Name", "string", 0),
                col("Role", "string", 0),
                col("Age", "string", 0),
                col("Users", "string", 1),
                col("Groups", "string", 1),
                col("ServiceAccounts", "string", 1),
            ],
            |o, now| [
                name(o),
                json!(format!(
                    "{}/{}",
                    str_at(o, "/roleRef/kind"),
                    str_at(o, "/roleRef/name")
                )),
                age_of(o, now),
                json!(subjects(o, "User")),
                json!(subjects(o, "Group")),
                json!(subjects(o, "ServiceAccount")),
            ]
        ),
        ("rbac.authorization.k8s.io", _) | ("apiextensions.k8s.io", _) => printer!(
            [col("Name", "string", 0), col("Created At", "date", 0)],
            |o, now| [name(o), json!(str_at(o, "/metadata/creationTimestamp"))]
        ),
        _ => printer!(
            [col("Name", "string", 0), col("Age", "string", 0)],
            |o, now| [name(o), age_of(o, now)]
        ),
    }
}

/// Columns from `additionalPrinterColumns`; without any, Name and Age, as
/// the apiextensions server's table convertor does.
fn crd_printer(rt: &ResourceType) -> (Vec<Col>, Cells) {
    let mut cols = vec![col("Name", "string", 0)];
    let mut specs: Vec<(String, String)> = vec![];
    if rt.printer_columns.is_empty() {
        cols.push(col("Age", "date", 0));
        specs.push((".metadata.creationTimestamp".into(), "date".into()));
    }
    for c in &rt.printer_columns {
        let ty = match c["type"].as_str().unwrap_or("string") {
            "integer" => "integer",
            "number" => "number",
            "boolean" => "boolean",
            "date" => "date",
            _ => "string",
        };
        cols.push(Col {
            name: c["name"].as_str().unwrap_or_default().to_string(),
            ty,
            format: match c["format"].as_str() {
                Some("name") => "name",
                _ => "",
            },
            priority: c["priority"].as_i64().unwrap_or(0),
            description: c["description"].as_str().unwrap_or_default().to_string(),
        });
        specs.push((
            c["jsonPath"].as_str().unwrap_or_default().to_string(),
            ty.to_string(),
        ));
    }
    let cells: Cells = Box::new(move |o: &Value, now| {
        let mut cells = vec![json!(str_at(o, "/metadata/name"))];
        for (path, ty) in &specs {
            let first = jsonpath(o, path).into_iter().next();
            cells.push(match first {
                None => Value::Null,
                Some(v) => crd_cell(ty, &v, now),
            });
        }
        cells
    });
    (cols, cells)
}

/// A custom column's cell: strings print whatever the path found, other
/// types must match or the cell is empty (upstream's cellForJSONValue).
fn crd_cell(ty: &str, v: &Value, now: jiff::Timestamp) -> Value {
    match ty {
        "integer" => v.as_i64().map(Value::from).unwrap_or(Value::Null),
        "number" => {
            if v.is_number() {
                v.clone()
            } else {
                Value::Null
            }
        }
        "boolean" => v.as_bool().map(Value::from).unwrap_or(Value::Null),
        "date" => match v.as_str() {
            Some(t) => json!(age(t, now)),
            None => Value::Null,
        },
        _ => match v {
            Value::String(s) => json!(s),
            Value::Null => Value::Null,
            other => json!(other.to_string()),
        },
    }
}

/// Evaluates the JSONPath subset printer columns use: `.field`,
/// `['field']`, `[n]`, `[*]`, `.*` and filters `[?(@.a.b=="x")]`,
/// `[?(@.a!="x")]`, `[?(@.a)]`. Returns every match, in document order.
pub fn jsonpath(root: &Value, path: &str) -> Vec<Value> {
    let path = path.trim();
    let path = path
        .strip_prefix('{')
        .and_then(|p| p.strip_suffix('}'))
        .unwrap_or(path);
    let path = path.strip_prefix('$').unwrap_or(path);
    let mut current = vec![root.clone()];
    let mut rest = path;
    while !rest.is_empty() {
        let (step, next) = match next_step(rest) {
            Some(s) => s,
            None => return vec![],
        };
        rest = next;
        current = current.iter().flat_map(|v| apply_step(v, &step)).collect();
        if current.is_empty() {
            break;
        }
    }
    current
}

enum Step {
    Field(String),
    Index(i64),
    All,
    Filter {
        path: Vec<String>,
        op: Option<(bool, Value)>,
    },
}

fn next_step(s: &str) -> Option<(Step, &str)> {
    if let Some(r) = s.strip_prefix('.') {
        if let Some(r2) = r.strip_prefix('*') {
            return Some((Step::All, r2));
        }
        let end = r.find(['.', '[']).unwrap_or(r.len());
        if end == 0 {
            return None;
        }
        return Some((Step::Field(r[..end].to_string()), &r[end..]));
    }
    let r = s.strip_prefix('[')?;
    if let Some(r2) = r.strip_prefix("?(") {
        let close = r2.find(")]")?;
        let expr = r2[..close].trim();
        let rest = &r2[close + 2..];
        let expr = expr.strip_prefix('@')?;
        let (lhs, op) = if let Some((l, v)) = expr.split_once("==") {
            (l, Some((true, literal(v.trim()))))
        } else if let Some((l, v)) = expr.split_once("!=") {
            (l, Some((false, literal(v.trim()))))
        } else {
            (expr, None)
        };
        let path = lhs
            .trim()
            .split('.')
            .filter(|p| !p.is_empty())
            .map(String::from)
            .collect();
        return Some((Step::Filter { path, op }, rest));
    }
    let close = r.find(']')?;
    let inner = r[..close].trim();
    let rest = &r[close + 1..];
    if inner == "*" {
        return Some((Step::All, rest));
    }
    if let Some(q) = inner
        .strip_prefix('\'')
        .and_then(|i| i.strip_suffix('\''))
        .or_else(|| inner.strip_prefix('"').and_then(|i| i.strip_suffix('"')))
    {
        return Some((Step::Field(q.to_string()), rest));
    }
    inner.parse().ok().map(|n| (Step::Index(n), rest))
}

fn literal(s: &str) -> Value {
    if let Some(q) = s
        .strip_prefix('"')
        .and_then(|i| i.strip_suffix('"'))
        .or_else(|| s.strip_prefix('\'').and_then(|i| i.strip_suffix('\'')))
    {
        return json!(q);
    }
    serde_json::from_str(s).unwrap_or_else(|_| json!(s))
}

fn apply_step(v: &Value, step: &Step) -> Vec<Value> {
    match step {
        Step::Field(f) => v.get(f).cloned().into_iter().collect(),
        Step::Index(i) => {
            let Some(a) = v.as_array() else { return vec![] };
            let idx = if *i < 0 { a.len() as i64 + i } else { *i };
            usize::try_from(idx)
                .ok()
                .and_then(|i| a.get(i))
                .cloned()
                .into_iter()
                .collect()
        }
        Step::All => match v {
            Value::Array(a) => a.clone(),
            Value::Object(m) => m.values().cloned().collect(),
            _ => vec![],
        },
        Step::Filter { path, op } => {
            let Some(a) = v.as_array() else { return vec![] };
            a.iter()
                .filter(|item| {
                    let mut cur = Some(*item);
                    for p in path {
                        cur = cur.and_then(|c| c.get(p));
                    }
                    match (cur, op) {
                        (None, _) => false,
                        (Some(_), None) => true,
                        (Some(x), Some((eq, want))) => (x == want) == *eq,
                    }
                })
                .cloned()
                .collect()
        }
    }
}

fn str_at<'a>(o: &'a Value, p: &str) -> &'a str {
    o.pointer(p).and_then(Value::as_str).unwrap_or_default()
}

fn int_at(o: &Value, p: &str) -> i64 {
    o.pointer(p).and_then(Value::as_i64).unwrap_or(0)
}

fn or_none(s: &str) -> String {
    or_default(s, "<none>")
}

fn unset(s: &str) -> String {
    or_default(s, "<unset>")
}

fn or_default(s: &str, d: &str) -> String {
    if s.is_empty() { d.into() } else { s.into() }
}

fn map_len(o: &Value, p: &str) -> usize {
    o.pointer(p).and_then(Value::as_object).map_or(0, Map::len)
}

/// Time since an RFC 3339 timestamp, as `kubectl` prints ages.
fn age(ts: &str, now: jiff::Timestamp) -> String {
    match ts.parse::<jiff::Timestamp>() {
        Ok(t) => human_duration((now.as_second() - t.as_second()).max(-2)),
        Err(_) => "<unknown>".into(),
    }
}

/// apimachinery's `duration.HumanDuration`: two significant units at most,
/// coarser as the duration grows.
pub fn human_duration(seconds: i64) -> String {
    if seconds < -1 {
        return "<invalid>".into();
    }
    if seconds < 0 {
        return "0s".into();
    }
    if seconds < 120 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        let s = seconds % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 180 {
        return format!("{minutes}m");
    }
    let hours = seconds / 3600;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{h}h", hours / 24)
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let d = (hours / 24) % 365;
        return if d == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{d}d", hours / 24 / 365)
        };
    }
    format!("{}y", hours / 24 / 365)
}

fn statuses(o: &Value) -> Vec<Value> {
    o.pointer("/status/containerStatuses")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

fn pod_ready(o: &Value) -> String {
    let total = o
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    let ready = statuses(o)
        .iter()
        .filter(|s| s["ready"].as_bool() == Some(true))
        .count();
    format!("{ready}/{total}")
}

/// kubectl's pod STATUS: the pod phase, overridden by the reason of a
/// waiting or terminated container, and by Terminating while deleting.
fn pod_status(o: &Value) -> String {
    let mut reason = match str_at(o, "/status/reason") {
        "" => str_at(o, "/status/phase").to_string(),
        r => r.to_string(),
    };
    let mut has_running = false;
    for s in statuses(o).iter().rev() {
        let waiting = s.pointer("/state/waiting/reason").and_then(Value::as_str);
        let terminated = s.pointer("/state/terminated");
        if let Some(w) = waiting.filter(|w| !w.is_empty()) {
            reason = w.to_string();
        } else if let Some(t) = terminated {
            reason = match t["reason"].as_str().filter(|r| !r.is_empty()) {
                Some(r) => r.to_string(),
                None => match t["signal"].as_i64().filter(|s| *s != 0) {
                    Some(sig) => format!("Signal:{sig}"),
                    None => format!("ExitCode:{}", t["exitCode"].as_i64().unwrap_or(0)),
                },
            };
        } else if s["ready"].as_bool() == Some(true) && s.pointer("/state/running").is_some() {
            has_running = true;
        }
    }
    if reason == "Completed" && has_running {
        let ready = o
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .is_some_and(|cs| {
                cs.iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            });
        reason = if ready { "Running" } else { "NotReady" }.into();
    }
    if o.pointer("/metadata/deletionTimestamp").is_some() {
        reason = if str_at(o, "/status/reason") == "NodeLost" {
            "Unknown".into()
        } else {
            "Terminating".into()
        };
    }
    reason
}

fn pod_restarts(o: &Value, now: jiff::Timestamp) -> String {
    let mut restarts = 0;
    let mut last: Option<jiff::Timestamp> = None;
    for s in statuses(o) {
        restarts += s["restartCount"].as_i64().unwrap_or(0);
        if let Some(t) = s
            .pointer("/lastState/terminated/finishedAt")
            .and_then(Value::as_str)
            .and_then(|t| t.parse::<jiff::Timestamp>().ok())
            && last.is_none_or(|l| t > l)
        {
            last = Some(t);
        }
    }
    match last {
        Some(t) if restarts > 0 => format!(
            "{restarts} ({} ago)",
            human_duration(now.as_second() - t.as_second())
        ),
        _ => restarts.to_string(),
    }
}

fn readiness_gates(o: &Value) -> String {
    let Some(gates) = o.pointer("/spec/readinessGates").and_then(Value::as_array) else {
        return "<none>".into();
    };
    if gates.is_empty() {
        return "<none>".into();
    }
    let conds = o
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let met = gates
        .iter()
        .filter(|g| {
            conds
                .iter()
                .any(|c| c["type"] == g["conditionType"] && c["status"] == "True")
        })
        .count();
    format!("{met}/{}", gates.len())
}

fn containers(o: &Value, p: &str, field: &str) -> String {
    o.pointer(p)
        .and_then(Value::as_array)
        .map(|cs| {
            cs.iter()
                .filter_map(|c| c[field].as_str())
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

fn selector(sel: Option<&Value>) -> String {
    match sel {
        None => "<none>".into(),
        Some(s) => {
            let r = crate::selector::LabelSelector::from_label_selector(s).render();
            if r.is_empty() { "<none>".into() } else { r }
        }
    }
}

fn map_selector(sel: Option<&Value>) -> String {
    match sel.and_then(Value::as_object) {
        Some(m) if !m.is_empty() => m
            .iter()
            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
            .collect::<Vec<_>>()
            .join(","),
        _ => "<none>".into(),
    }
}

fn controller(o: &Value) -> String {
    o.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .and_then(|refs| {
            refs.iter()
                .find(|r| r["controller"].as_bool() == Some(true))
        })
        .map(|r| {
            let api = r["apiVersion"].as_str().unwrap_or_default();
            let group = api.split_once('/').map(|(g, _)| g).unwrap_or("");
            let kind = r["kind"].as_str().unwrap_or_default().to_lowercase();
            let kind = if group.is_empty() {
                kind
            } else {
                format!("{kind}.{group}")
            };
            format!("{kind}/{}", r["name"].as_str().unwrap_or_default())
        })
        .unwrap_or_else(|| "<none>".into())
}

fn service_type(o: &Value) -> String {
    or_default(str_at(o, "/spec/type"), "ClusterIP")
}

fn external_ip(o: &Value) -> String {
    let external: Vec<&str> = o
        .pointer("/spec/externalIPs")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    match service_type(o).as_str() {
        "ExternalName" => str_at(o, "/spec/externalName").to_string(),
        "LoadBalancer" => {
            let mut ips: Vec<String> = o
                .pointer("/status/loadBalancer/ingress")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|i| i["ip"].as_str().or(i["hostname"].as_str()))
                        .map(String::from)
                        .collect()
                })
                .unwrap_or_default();
            ips.extend(external.iter().map(|s| s.to_string()));
            if ips.is_empty() {
                "<pending>".into()
            } else {
                ips.join(",")
            }
        }
        _ if !external.is_empty() => external.join(","),
        _ => "<none>".into(),
    }
}

fn service_ports(o: &Value) -> String {
    let Some(ports) = o.pointer("/spec/ports").and_then(Value::as_array) else {
        return "<none>".into();
    };
    if ports.is_empty() {
        return "<none>".into();
    }
    ports
        .iter()
        .map(|p| {
            let proto = p["protocol"].as_str().unwrap_or("TCP");
            match p["nodePort"].as_i64() {
                Some(np) if np != 0 => format!("{}:{np}/{proto}", p["port"]),
                _ => format!("{}/{proto}", p["port"]),
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn endpoints(o: &Value) -> String {
    let mut out = vec![];
    for subset in o
        .pointer("/subsets")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let ports: Vec<i64> = subset["ports"]
            .as_array()
            .map(|a| a.iter().filter_map(|p| p["port"].as_i64()).collect())
            .unwrap_or_default();
        for a in subset["addresses"].as_array().into_iter().flatten() {
            let ip = a["ip"].as_str().unwrap_or_default();
            if ports.is_empty() {
                out.push(ip.to_string());
            }
            for p in &ports {
                out.push(format!("{ip}:{p}"));
            }
        }
    }
    format_list(out)
}

/// kubectl lists at most three entries and counts the rest.
fn format_list(items: Vec<String>) -> String {
    if items.is_empty() {
        return "<none>".into();
    }
    let more = items.len().saturating_sub(3);
    let shown = items.into_iter().take(3).collect::<Vec<_>>().join(",");
    if more > 0 {
        format!("{shown} + {more} more...")
    } else {
        shown
    }
}

fn slice_ports(o: &Value) -> String {
    let ports: Vec<String> = o
        .pointer("/ports")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|p| p["port"].as_i64().map(|n| n.to_string()))
                .collect()
        })
        .unwrap_or_default();
    if ports.is_empty() {
        "<unset>".into()
    } else {
        ports.join(",")
    }
}

fn slice_endpoints(o: &Value) -> String {
    let addrs: Vec<String> = o
        .pointer("/endpoints")
        .and_then(Value::as_array)
        .map(|eps| {
            eps.iter()
                .flat_map(|e| e["addresses"].as_array().cloned().unwrap_or_default())
                .filter_map(|a| a.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    format_list(addrs)
}

fn access_modes(modes: Option<&Value>) -> String {
    modes
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(|m| match m {
                    "ReadWriteOnce" => "RWO",
                    "ReadOnlyMany" => "ROX",
                    "ReadWriteMany" => "RWX",
                    "ReadWriteOncePod" => "RWOP",
                    other => other,
                })
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

fn has_condition(o: &Value, ty: &str) -> bool {
    o.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| cs.iter().any(|c| c["type"] == ty && c["status"] == "True"))
}

fn job_status(o: &Value) -> &'static str {
    if has_condition(o, "Failed") {
        "Failed"
    } else if has_condition(o, "Complete") {
        "Complete"
    } else if has_condition(o, "Suspended") {
        "Suspended"
    } else if has_condition(o, "FailureTarget") {
        "FailureTarget"
    } else if has_condition(o, "SuccessCriteriaMet") {
        "SuccessCriteriaMet"
    } else if o.pointer("/metadata/deletionTimestamp").is_some() {
        "Terminating"
    } else {
        "Running"
    }
}

fn job_completions(o: &Value) -> String {
    let succeeded = int_at(o, "/status/succeeded");
    match o.pointer("/spec/completions").and_then(Value::as_i64) {
        Some(c) => format!("{succeeded}/{c}"),
        None => match o.pointer("/spec/parallelism").and_then(Value::as_i64) {
            Some(p) if p > 1 => format!("{succeeded}/1 of {p}"),
            _ => format!("{succeeded}/1"),
        },
    }
}

fn job_duration(o: &Value, now: jiff::Timestamp) -> String {
    let ts = |p: &str| str_at(o, p).parse::<jiff::Timestamp>().ok();
    match (ts("/status/startTime"), ts("/status/completionTime")) {
        (None, _) => String::new(),
        (Some(s), Some(c)) => human_duration(c.as_second() - s.as_second()),
        (Some(s), None) => human_duration(now.as_second() - s.as_second()),
    }
}

fn node_status(o: &Value) -> String {
    let ready = o
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"));
    let mut s = match ready.and_then(|c| c["status"].as_str()) {
        Some("True") => "Ready".to_string(),
        Some(_) => "NotReady".to_string(),
        None => "Unknown".to_string(),
    };
    if o.pointer("/spec/unschedulable").and_then(Value::as_bool) == Some(true) {
        s.push_str(",SchedulingDisabled");
    }
    s
}

fn node_address(o: &Value, ty: &str) -> String {
    o.pointer("/status/addresses")
        .and_then(Value::as_array)
        .and_then(|a| a.iter().find(|x| x["type"] == ty))
        .and_then(|x| x["address"].as_str())
        .map(String::from)
        .unwrap_or_else(|| "<none>".into())
}

fn int_or_string(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => "N/A".into(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

fn subjects(o: &Value, kind: &str) -> String {
    o.pointer("/subjects")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter(|s| s["kind"] == kind)
                .map(|s| {
                    let name = s["name"].as_str().unwrap_or_default();
                    match s["namespace"].as_str() {
                        Some(ns) if kind == "ServiceAccount" => format!("{ns}/{name}"),
                        _ => name.to_string(),
                    }
                })
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}

/// The cells of upstream's event printer, from a core v1 Event.
fn event_cells(o: &Value, now: jiff::Timestamp) -> Vec<Value> {
    let since = |t: &str| {
        if t.is_empty() {
            "<unknown>".to_string()
        } else {
            age(t, now)
        }
    };
    let first = match str_at(o, "/firstTimestamp") {
        "" => since(str_at(o, "/eventTime")),
        t => since(t),
    };
    let mut last = match str_at(o, "/lastTimestamp") {
        "" => first.clone(),
        t => since(t),
    };
    let mut count = int_at(o, "/count");
    if let Some(series) = o.get("series").filter(|s| s.is_object()) {
        last = since(series["lastObservedTime"].as_str().unwrap_or_default());
        count = series["count"].as_i64().unwrap_or(0);
    } else if count == 0 {
        count = 1;
    }
    let kind = str_at(o, "/involvedObject/kind").to_lowercase();
    let target = match str_at(o, "/involvedObject/name") {
        "" => kind,
        n => format!("{kind}/{n}"),
    };
    let source = {
        let component = match str_at(o, "/source/component") {
            "" => str_at(o, "/reportingComponent"),
            c => c,
        };
        let host = match str_at(o, "/source/host") {
            "" => str_at(o, "/reportingInstance"),
            h => h,
        };
        if host.is_empty() {
            component.to_string()
        } else {
            format!("{component}, {host}")
        }
    };
    vec![
        json!(last),
        json!(str_at(o, "/type")),
        json!(str_at(o, "/reason")),
        json!(target),
        json!(str_at(o, "/involvedObject/fieldPath")),
        json!(source),
        json!(str_at(o, "/message").trim()),
        json!(first),
        json!(count),
        json!(str_at(o, "/metadata/name")),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jsonpath_follows_fields_indices_and_filters() {
        let o = json!({"spec": {"version": "16"}, "status": {"conditions": [
            {"type": "Progressing", "status": "False"},
            {"type": "Ready", "status": "True"},
        ]}, "metadata": {"labels": {"a.b/c": "x"}}});
        assert_eq!(jsonpath(&o, ".spec.version"), vec![json!("16")]);
        assert_eq!(
            jsonpath(&o, r#".status.conditions[?(@.type=="Ready")].status"#),
            vec![json!("True")]
        );
        assert_eq!(
            jsonpath(&o, ".status.conditions[0].type"),
            vec![json!("Progressing")]
        );
        assert_eq!(jsonpath(&o, ".status.conditions[*].status").len(), 2);
        assert_eq!(jsonpath(&o, ".metadata.labels['a.b/c']"), vec![json!("x")]);
        assert!(jsonpath(&o, ".status.phase").is_empty());
    }

    #[test]
    fn human_durations_match_apimachinery() {
        for (s, want) in [
            (5, "5s"),
            (119, "119s"),
            (125, "2m5s"),
            (600, "10m"),
            (3 * 3600 + 120, "3h2m"),
            (10 * 3600, "10h"),
            (3 * 86400, "3d"),
            (3 * 86400 + 3600, "3d1h"),
            (30 * 86400, "30d"),
        ] {
            assert_eq!(human_duration(s), want, "{s}s");
        }
    }

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
