//! The columns kube-apiserver's printers produce for each built-in kind,
//! and the function computing a row's cells: one match arm per kind, the
//! place to add a kind's columns. Cell values come from [`super::cells`];
//! custom resources' columns are [`super::crd`]'s.

use serde_json::{Value, json};

use super::cells::{
    access_modes, containers, controller, endpoints, event_cells, external_ip, int_or_string,
    job_completions, job_duration, job_status, map_selector, node_address, node_status, pod_ready,
    pod_restarts, pod_status, readiness_gates, selector, service_ports, service_type,
    slice_endpoints, slice_ports, subjects,
};
use super::format::{age, int_at, map_len, or_default, or_none, str_at, unset};
use super::{Cells, Col, col};
use crate::registry::ResourceType;

/// The columns of a kind and the function computing a row's cells.
pub(super) fn printer(rt: &ResourceType) -> (Vec<Col>, Cells) {
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
                col("Up-to-date", "integer", 0),
                col("Available", "integer", 0),
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
        ("apps", "replicasets") => printer!(
            [
                col("Name", "string", 0),
                col("Desired", "integer", 0),
                col("Current", "integer", 0),
                col("Ready", "integer", 0),
                col("Age", "string", 0),
                col("Containers", "string", 1),
                col("Images", "string", 1),
                col("Selector", "string", 1),
            ],
            |o, now| [
                name(o),
                json!(
                    o.pointer("/spec/replicas")
                        .and_then(Value::as_i64)
                        .unwrap_or(1)
                ),
                json!(int_at(o, "/status/replicas")),
                json!(int_at(o, "/status/readyReplicas")),
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
