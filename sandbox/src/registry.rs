//! The resource registry: which kinds the server serves, and where.
//!
//! Every REST path names a *resource* (a lowercase plural such as `pods`) in
//! an API group and version. The registry maps those names to a
//! [`ResourceType`]: its kind, whether it lives in a namespace, and which
//! subresources (`status`, `scale`, `log`) it has. Built-in types are listed
//! here; a CustomResourceDefinition adds one type per served version while it
//! exists. Discovery documents (`/api/v1`, `/apis/...`) are rendered from it.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use serde_json::{Value, json};

/// The Kubernetes minor version the sandbox serves and reports (the
/// k8s-openapi feature it is built against): in `/version`, in the OpenAPI
/// documents' info and as the node's kubelet version.
pub const KUBE_MINOR: &str = "33";

/// Where the scale subresource reads and writes replicas.
#[derive(Debug, Clone)]
pub struct ScaleSpec {
    pub spec_replicas_path: String,
    pub status_replicas_path: String,
    pub label_selector_path: Option<String>,
}

/// One served resource.
#[derive(Debug, Clone)]
pub struct ResourceType {
    pub group: String,
    /// The version this entry serves.
    pub version: String,
    pub plural: String,
    pub singular: String,
    pub kind: String,
    pub namespaced: bool,
    pub short_names: Vec<String>,
    pub status: bool,
    pub scale: Option<ScaleSpec>,
    pub log: bool,
    /// For CRD-backed types, the openAPIV3Schema of this version.
    pub schema: Option<Arc<Value>>,
    pub crd: bool,
    pub categories: Vec<String>,
    /// For CRD-backed types, this version's `additionalPrinterColumns`.
    pub printer_columns: Vec<Value>,
    /// How objects are stored when the stored shape differs from this view.
    pub view: View,
}

/// The shape a resource's objects are served in, relative to storage.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum View {
    /// Served as stored.
    #[default]
    Stored,
    /// events.k8s.io/v1 Events, stored as core v1 Events.
    EventsV1,
}

impl ResourceType {
    /// The storage identity shared by all versions of a resource.
    pub fn key(&self) -> String {
        match self.view {
            View::EventsV1 => "/events".into(),
            View::Stored => format!("{}/{}", self.group, self.plural),
        }
    }
    /// A stored object as this resource serves it.
    pub fn to_view(&self, obj: Value) -> Value {
        match self.view {
            View::Stored => obj,
            View::EventsV1 => crate::convert::event_from_core(obj),
        }
    }
    /// An object of this resource in the stored shape.
    pub fn to_storage(&self, obj: Value) -> Value {
        match self.view {
            View::Stored => obj,
            View::EventsV1 => crate::convert::event_to_core(obj),
        }
    }
    /// The stored field a field selector on this resource names.
    pub fn storage_field(&self, field: &str) -> String {
        match self.view {
            View::Stored => field.to_string(),
            View::EventsV1 => crate::convert::event_field_to_core(field),
        }
    }
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }
    /// Kinds that only answer a `create` and store nothing (the access
    /// and identity reviews).
    pub fn create_only(&self) -> bool {
        !self.crd
            && matches!(
                self.group.as_str(),
                "authorization.k8s.io" | "authentication.k8s.io"
            )
    }
}

fn builtin(group: &str, version: &str, plural: &str, kind: &str, namespaced: bool) -> ResourceType {
    ResourceType {
        group: group.into(),
        version: version.into(),
        plural: plural.into(),
        singular: kind.to_lowercase(),
        kind: kind.into(),
        namespaced,
        short_names: vec![],
        status: false,
        scale: None,
        log: false,
        schema: None,
        crd: false,
        categories: vec![],
        printer_columns: vec![],
        view: View::Stored,
    }
}

fn with_status(mut rt: ResourceType) -> ResourceType {
    rt.status = true;
    rt
}

fn short(mut rt: ResourceType, names: &[&str]) -> ResourceType {
    rt.short_names = names.iter().map(|s| s.to_string()).collect();
    rt
}

fn replicas_scale() -> Option<ScaleSpec> {
    Some(ScaleSpec {
        spec_replicas_path: ".spec.replicas".into(),
        status_replicas_path: ".status.replicas".into(),
        label_selector_path: Some(".status.selector".into()),
    })
}

/// The built-in kinds, as the levels need them.
fn builtins() -> Vec<ResourceType> {
    let mut pods = short(with_status(builtin("", "v1", "pods", "Pod", true)), &["po"]);
    pods.log = true;
    pods.categories = vec!["all".into()];
    let mut sts = short(
        with_status(builtin("apps", "v1", "statefulsets", "StatefulSet", true)),
        &["sts"],
    );
    sts.scale = replicas_scale();
    sts.categories = vec!["all".into()];
    let mut deploy = short(
        with_status(builtin("apps", "v1", "deployments", "Deployment", true)),
        &["deploy"],
    );
    deploy.scale = replicas_scale();
    deploy.categories = vec!["all".into()];
    let mut rs = short(
        with_status(builtin("apps", "v1", "replicasets", "ReplicaSet", true)),
        &["rs"],
    );
    rs.scale = replicas_scale();
    rs.categories = vec!["all".into()];
    let mut svc = short(
        with_status(builtin("", "v1", "services", "Service", true)),
        &["svc"],
    );
    svc.categories = vec!["all".into()];
    let mut job = with_status(builtin("batch", "v1", "jobs", "Job", true));
    job.categories = vec!["all".into()];
    vec![
        short(
            with_status(builtin("", "v1", "namespaces", "Namespace", false)),
            &["ns"],
        ),
        pods,
        svc,
        short(builtin("", "v1", "endpoints", "Endpoints", true), &["ep"]),
        short(builtin("", "v1", "configmaps", "ConfigMap", true), &["cm"]),
        builtin("", "v1", "secrets", "Secret", true),
        short(
            with_status(builtin(
                "",
                "v1",
                "persistentvolumeclaims",
                "PersistentVolumeClaim",
                true,
            )),
            &["pvc"],
        ),
        short(
            with_status(builtin(
                "",
                "v1",
                "persistentvolumes",
                "PersistentVolume",
                false,
            )),
            &["pv"],
        ),
        short(builtin("", "v1", "events", "Event", true), &["ev"]),
        short(
            builtin("", "v1", "serviceaccounts", "ServiceAccount", true),
            &["sa"],
        ),
        short(
            with_status(builtin("", "v1", "nodes", "Node", false)),
            &["no"],
        ),
        sts,
        deploy,
        rs,
        builtin(
            "apps",
            "v1",
            "controllerrevisions",
            "ControllerRevision",
            true,
        ),
        job,
        short(
            with_status(builtin("batch", "v1", "cronjobs", "CronJob", true)),
            &["cj"],
        ),
        builtin("coordination.k8s.io", "v1", "leases", "Lease", true),
        {
            let mut ev = short(
                builtin("events.k8s.io", "v1", "events", "Event", true),
                &["ev"],
            );
            ev.view = View::EventsV1;
            ev
        },
        short(
            with_status(builtin(
                "policy",
                "v1",
                "poddisruptionbudgets",
                "PodDisruptionBudget",
                true,
            )),
            &["pdb"],
        ),
        builtin("rbac.authorization.k8s.io", "v1", "roles", "Role", true),
        builtin(
            "rbac.authorization.k8s.io",
            "v1",
            "rolebindings",
            "RoleBinding",
            true,
        ),
        builtin(
            "rbac.authorization.k8s.io",
            "v1",
            "clusterroles",
            "ClusterRole",
            false,
        ),
        builtin(
            "rbac.authorization.k8s.io",
            "v1",
            "clusterrolebindings",
            "ClusterRoleBinding",
            false,
        ),
        // The access reviews ([`crate::auth::review`]): create-only,
        // never stored.
        builtin(
            "authorization.k8s.io",
            "v1",
            "subjectaccessreviews",
            "SubjectAccessReview",
            false,
        ),
        builtin(
            "authorization.k8s.io",
            "v1",
            "localsubjectaccessreviews",
            "LocalSubjectAccessReview",
            true,
        ),
        builtin(
            "authorization.k8s.io",
            "v1",
            "selfsubjectaccessreviews",
            "SelfSubjectAccessReview",
            false,
        ),
        builtin(
            "authorization.k8s.io",
            "v1",
            "selfsubjectrulesreviews",
            "SelfSubjectRulesReview",
            false,
        ),
        builtin(
            "authentication.k8s.io",
            "v1",
            "selfsubjectreviews",
            "SelfSubjectReview",
            false,
        ),
        builtin(
            "discovery.k8s.io",
            "v1",
            "endpointslices",
            "EndpointSlice",
            true,
        ),
        short(
            with_status(builtin(
                "apiextensions.k8s.io",
                "v1",
                "customresourcedefinitions",
                "CustomResourceDefinition",
                false,
            )),
            &["crd", "crds"],
        ),
    ]
}

/// The registry of served resources, shared by the server and controllers.
#[derive(Debug)]
pub struct Registry {
    /// (group, version, plural) → type.
    types: RwLock<BTreeMap<(String, String, String), Arc<ResourceType>>>,
}

impl Default for Registry {
    fn default() -> Self {
        Self::new()
    }
}

impl Registry {
    pub fn new() -> Registry {
        let mut map = BTreeMap::new();
        for rt in builtins() {
            map.insert(
                (rt.group.clone(), rt.version.clone(), rt.plural.clone()),
                Arc::new(rt),
            );
        }
        Registry {
            types: RwLock::new(map),
        }
    }

    fn read(
        &self,
    ) -> std::sync::RwLockReadGuard<'_, BTreeMap<(String, String, String), Arc<ResourceType>>> {
        // A panic while holding this lock cannot leave the map half-written
        // (inserts are single calls), so a poisoned lock is still usable.
        self.types.read().unwrap_or_else(|e| e.into_inner())
    }

    pub fn lookup(&self, group: &str, version: &str, plural: &str) -> Option<Arc<ResourceType>> {
        self.read()
            .get(&(group.to_string(), version.to_string(), plural.to_string()))
            .cloned()
    }

    /// Any served version of a resource (controllers do not care which).
    pub fn by_key(&self, group: &str, plural: &str) -> Option<Arc<ResourceType>> {
        self.read()
            .values()
            .find(|rt| rt.group == group && rt.plural == plural)
            .cloned()
    }

    pub fn all(&self) -> Vec<Arc<ResourceType>> {
        self.read().values().cloned().collect()
    }

    /// Replaces the types a CRD serves (all versions of `group/plural`).
    pub fn set_crd(&self, group: &str, plural: &str, types: Vec<ResourceType>) {
        let mut map = self.types.write().unwrap_or_else(|e| e.into_inner());
        map.retain(|(g, _, p), rt| !(g == group && p == plural && rt.crd));
        for rt in types {
            map.insert(
                (rt.group.clone(), rt.version.clone(), rt.plural.clone()),
                Arc::new(rt),
            );
        }
    }

    pub fn remove_crd(&self, group: &str, plural: &str) {
        let mut map = self.types.write().unwrap_or_else(|e| e.into_inner());
        map.retain(|(g, _, p), rt| !(g == group && p == plural && rt.crd));
    }

    /// `{group: [versions]}` for `/apis`.
    pub fn groups(&self) -> BTreeMap<String, Vec<String>> {
        let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for rt in self.read().values() {
            if rt.group.is_empty() {
                continue;
            }
            let versions = out.entry(rt.group.clone()).or_default();
            if !versions.contains(&rt.version) {
                versions.push(rt.version.clone());
            }
        }
        for versions in out.values_mut() {
            versions.sort_by_key(|v| std::cmp::Reverse(version_priority(v)));
        }
        out
    }

    pub fn has_group_version(&self, group: &str, version: &str) -> bool {
        self.read()
            .keys()
            .any(|(g, v, _)| g == group && v == version)
    }

    /// The `APIResourceList` for one group version.
    pub fn resource_list(&self, group: &str, version: &str) -> Value {
        let mut resources = vec![];
        for rt in self
            .read()
            .values()
            .filter(|rt| rt.group == group && rt.version == version)
        {
            let mut verbs = vec![
                "create",
                "delete",
                "deletecollection",
                "get",
                "list",
                "patch",
                "update",
                "watch",
            ];
            verbs.sort();
            if rt.create_only() {
                verbs = vec!["create"];
            }
            let mut r = json!({
                "name": rt.plural,
                "singularName": rt.singular,
                "namespaced": rt.namespaced,
                "kind": rt.kind,
                "verbs": verbs,
            });
            if !rt.short_names.is_empty() {
                r["shortNames"] = json!(rt.short_names);
            }
            if !rt.categories.is_empty() {
                r["categories"] = json!(rt.categories);
            }
            resources.push(r);
            if rt.status {
                resources.push(json!({"name": format!("{}/status", rt.plural), "singularName": "", "namespaced": rt.namespaced, "kind": rt.kind, "verbs": ["get", "patch", "update"]}));
            }
            if rt.scale.is_some() {
                resources.push(json!({"name": format!("{}/scale", rt.plural), "singularName": "", "namespaced": rt.namespaced, "group": "autoscaling", "version": "v1", "kind": "Scale", "verbs": ["get", "patch", "update"]}));
            }
            if rt.group.is_empty() && rt.plural == "serviceaccounts" {
                resources.push(json!({"name": "serviceaccounts/token", "singularName": "", "namespaced": true, "group": "authentication.k8s.io", "version": "v1", "kind": "TokenRequest", "verbs": ["create"]}));
            }
            if rt.log {
                resources.push(json!({"name": format!("{}/log", rt.plural), "singularName": "", "namespaced": rt.namespaced, "kind": "Pod", "verbs": ["get"]}));
                resources.push(json!({"name": format!("{}/exec", rt.plural), "singularName": "", "namespaced": rt.namespaced, "kind": "PodExecOptions", "verbs": ["create", "get"]}));
                resources.push(json!({"name": format!("{}/portforward", rt.plural), "singularName": "", "namespaced": rt.namespaced, "kind": "PodPortForwardOptions", "verbs": ["create", "get"]}));
            }
        }
        let gv = if group.is_empty() {
            version.to_string()
        } else {
            format!("{group}/{version}")
        };
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources})
    }
}

/// Kubernetes version ordering: GA > beta > alpha, then by number.
pub fn version_priority(v: &str) -> (u8, u32, u32) {
    let re = |s: &str| s.parse::<u32>().unwrap_or(0);
    let Some(rest) = v.strip_prefix('v') else {
        return (0, 0, 0);
    };
    if let Some((major, minor)) = rest.split_once("beta") {
        (2, re(major), re(minor))
    } else if let Some((major, minor)) = rest.split_once("alpha") {
        (1, re(major), re(minor))
    } else {
        (3, re(rest), 0)
    }
}
