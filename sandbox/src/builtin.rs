//! What the real server knows about its built-in kinds beyond their names:
//! defaults, create-time status and the validation rules the levels run
//! into. Which of their lists merge by key is [`crate::lists`]'.
//!
//! Defaulting happens on every write, so two clients that send the same
//! object get the same stored result, which is what makes a repeated
//! server-side apply a no-op.

use base64::Engine;
use serde_json::{Map, Value, json};

use crate::error::Cause;
use crate::registry::ResourceType;

// List semantics moved to their own module; kept here for existing paths.
pub use crate::lists::{ListType, list_type};

/// Byte count of a resource quantity such as `1Gi`, `500M` or `2`.
pub fn parse_quantity(q: &str) -> Option<f64> {
    let q = q.trim();
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-' || c == '+'))
        .unwrap_or(q.len());
    let (num, suffix) = q.split_at(split);
    let n: f64 = num.parse().ok()?;
    let mult = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        _ => return None,
    };
    Some(n * mult)
}

fn set_default(obj: &mut Map<String, Value>, key: &str, v: Value) {
    if obj.get(key).is_none_or(Value::is_null) {
        obj.insert(key.into(), v);
    }
}

fn obj_at<'a>(v: &'a mut Value, path: &[&str]) -> Option<&'a mut Map<String, Value>> {
    let mut cur = v;
    for p in path {
        cur = cur.get_mut(*p)?;
    }
    cur.as_object_mut()
}

fn default_containers(spec: &mut Map<String, Value>) {
    for field in ["containers", "initContainers"] {
        let Some(list) = spec.get_mut(field).and_then(Value::as_array_mut) else {
            continue;
        };
        for c in list.iter_mut().filter_map(Value::as_object_mut) {
            let image = c
                .get("image")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let latest = !image.contains(':') || image.ends_with(":latest");
            set_default(
                c,
                "imagePullPolicy",
                json!(if latest { "Always" } else { "IfNotPresent" }),
            );
            set_default(c, "terminationMessagePath", json!("/dev/termination-log"));
            set_default(c, "terminationMessagePolicy", json!("File"));
            if let Some(ports) = c.get_mut("ports").and_then(Value::as_array_mut) {
                for p in ports.iter_mut().filter_map(Value::as_object_mut) {
                    set_default(p, "protocol", json!("TCP"));
                }
            }
        }
    }
}

fn default_pod_spec(spec: &mut Map<String, Value>) {
    set_default(spec, "restartPolicy", json!("Always"));
    set_default(spec, "terminationGracePeriodSeconds", json!(30));
    set_default(spec, "dnsPolicy", json!("ClusterFirst"));
    set_default(spec, "schedulerName", json!("default-scheduler"));
    set_default(spec, "securityContext", json!({}));
    default_containers(spec);
}

/// Applies the defaults the real server's defaulting functions set.
pub fn apply_defaults(rt: &ResourceType, obj: &mut Value) {
    if rt.crd {
        return;
    }
    match (rt.group.as_str(), rt.plural.as_str()) {
        ("", "pods") => {
            if let Some(spec) = obj_at(obj, &["spec"]) {
                default_pod_spec(spec);
            }
        }
        ("", "services") => {
            if let Some(spec) = obj_at(obj, &["spec"]) {
                set_default(spec, "type", json!("ClusterIP"));
                set_default(spec, "sessionAffinity", json!("None"));
                if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
                    for p in ports.iter_mut().filter_map(Value::as_object_mut) {
                        set_default(p, "protocol", json!("TCP"));
                        if let Some(port) = p.get("port").cloned() {
                            set_default(p, "targetPort", port);
                        }
                    }
                }
            }
        }
        ("", "secrets") => {
            if let Some(o) = obj.as_object_mut() {
                set_default(o, "type", json!("Opaque"));
                // stringData is write-only: merged into data, base64-encoded.
                if let Some(Value::Object(sd)) = o.remove("stringData") {
                    let data = o.entry("data").or_insert_with(|| json!({}));
                    if let Some(data) = data.as_object_mut() {
                        for (k, v) in sd {
                            let s = v.as_str().unwrap_or_default();
                            data.insert(
                                k,
                                json!(base64::engine::general_purpose::STANDARD.encode(s)),
                            );
                        }
                    }
                }
            }
        }
        ("", "persistentvolumeclaims") => {
            if let Some(spec) = obj_at(obj, &["spec"]) {
                set_default(spec, "volumeMode", json!("Filesystem"));
            }
        }
        ("", "namespaces") => {
            if let Some(o) = obj.as_object_mut() {
                let spec = o.entry("spec").or_insert_with(|| json!({}));
                if let Some(spec) = spec.as_object_mut() {
                    set_default(spec, "finalizers", json!(["kubernetes"]));
                }
            }
        }
        ("apps", "statefulsets") => {
            if let Some(spec) = obj_at(obj, &["spec"]) {
                set_default(spec, "replicas", json!(1));
                set_default(spec, "podManagementPolicy", json!("OrderedReady"));
                set_default(
                    spec,
                    "updateStrategy",
                    json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}),
                );
                set_default(spec, "revisionHistoryLimit", json!(10));
                set_default(
                    spec,
                    "persistentVolumeClaimRetentionPolicy",
                    json!({"whenDeleted": "Retain", "whenScaled": "Retain"}),
                );
                if let Some(vcts) = spec
                    .get_mut("volumeClaimTemplates")
                    .and_then(Value::as_array_mut)
                {
                    for t in vcts.iter_mut().filter_map(Value::as_object_mut) {
                        set_default(t, "apiVersion", json!("v1"));
                        set_default(t, "kind", json!("PersistentVolumeClaim"));
                        if let Some(s) = t.get_mut("spec").and_then(Value::as_object_mut) {
                            set_default(s, "volumeMode", json!("Filesystem"));
                        }
                    }
                }
            }
            if let Some(spec) = obj_at(obj, &["spec", "template", "spec"]) {
                default_pod_spec(spec);
            }
        }
        ("apps", "deployments") => {
            if let Some(spec) = obj_at(obj, &["spec"]) {
                set_default(spec, "replicas", json!(1));
                set_default(spec, "strategy", json!({}));
                set_default(spec, "revisionHistoryLimit", json!(10));
                set_default(spec, "progressDeadlineSeconds", json!(600));
            }
            if let Some(strategy) = obj_at(obj, &["spec", "strategy"]) {
                set_default(strategy, "type", json!("RollingUpdate"));
                if strategy.get("type") == Some(&json!("RollingUpdate")) {
                    set_default(strategy, "rollingUpdate", json!({}));
                    if let Some(ru) = strategy
                        .get_mut("rollingUpdate")
                        .and_then(Value::as_object_mut)
                    {
                        set_default(ru, "maxUnavailable", json!("25%"));
                        set_default(ru, "maxSurge", json!("25%"));
                    }
                }
            }
            if let Some(spec) = obj_at(obj, &["spec", "template", "spec"]) {
                default_pod_spec(spec);
            }
        }
        ("apps", "replicasets") => {
            if let Some(spec) = obj_at(obj, &["spec"]) {
                set_default(spec, "replicas", json!(1));
            }
            if let Some(spec) = obj_at(obj, &["spec", "template", "spec"]) {
                default_pod_spec(spec);
            }
        }
        ("batch", "jobs") => {
            if let Some(spec) = obj_at(obj, &["spec"]) {
                set_default(spec, "completions", json!(1));
                set_default(spec, "parallelism", json!(1));
                set_default(spec, "backoffLimit", json!(6));
                set_default(spec, "completionMode", json!("NonIndexed"));
                set_default(spec, "suspend", json!(false));
            }
            if let Some(spec) = obj_at(obj, &["spec", "template", "spec"]) {
                default_pod_spec(spec);
            }
        }
        _ => {}
    }
}

/// The status an object starts with: clients cannot create status for kinds
/// that have a status subresource.
pub fn initial_status(rt: &ResourceType, obj: &mut Value) {
    if !rt.status
        || matches!(
            rt.plural.as_str(),
            "nodes" | "persistentvolumes" | "customresourcedefinitions"
        )
    {
        return;
    }
    let status = match (rt.group.as_str(), rt.plural.as_str()) {
        ("", "pods") => json!({"phase": "Pending", "qosClass": "BestEffort"}),
        ("", "persistentvolumeclaims") => json!({"phase": "Pending"}),
        ("", "namespaces") => json!({"phase": "Active"}),
        ("", "services") => json!({"loadBalancer": {}}),
        ("apps", "statefulsets") => json!({"replicas": 0, "availableReplicas": 0}),
        _ if rt.crd => Value::Null,
        _ => json!({}),
    };
    if let Some(o) = obj.as_object_mut() {
        if status.is_null() {
            o.remove("status");
        } else {
            o.insert("status".into(), status);
        }
    }
}

/// Validation rules of built-in kinds that the levels can trip over.
pub fn validate(rt: &ResourceType, obj: &Value, old: Option<&Value>) -> Vec<Cause> {
    let mut causes = vec![];
    match (rt.group.as_str(), rt.plural.as_str()) {
        ("", "pods") => validate_pod_spec(obj.get("spec"), "spec", &mut causes),
        ("apps", "deployments" | "replicasets") => {
            validate_selector(obj, &mut causes);
            validate_pod_spec(
                obj.pointer("/spec/template/spec"),
                "spec.template.spec",
                &mut causes,
            );
            if let Some(policy) = obj
                .pointer("/spec/template/spec/restartPolicy")
                .and_then(Value::as_str)
                .filter(|p| *p != "Always")
            {
                causes.push(Cause::not_supported(
                    "spec.template.spec.restartPolicy",
                    &json!(policy),
                    &[json!("Always")],
                ));
            }
            validate_seconds(obj, rt.plural == "deployments", &mut causes);
            if rt.plural == "deployments" {
                validate_strategy(obj, &mut causes);
            }
            if let Some(old) = old
                && obj.pointer("/spec/selector") != old.pointer("/spec/selector")
            {
                causes.push(Cause::invalid(
                    "spec.selector",
                    obj.pointer("/spec/selector").unwrap_or(&Value::Null),
                    "field is immutable",
                ));
            }
        }
        ("apps", "statefulsets") => {
            validate_selector(obj, &mut causes);
            validate_pod_spec(
                obj.pointer("/spec/template/spec"),
                "spec.template.spec",
                &mut causes,
            );
            if let Some(old) = old {
                let strip = |v: &Value| {
                    let mut s = v.get("spec").cloned().unwrap_or(json!({}));
                    if let Some(o) = s.as_object_mut() {
                        for k in [
                            "replicas",
                            "ordinals",
                            "template",
                            "updateStrategy",
                            "persistentVolumeClaimRetentionPolicy",
                            "minReadySeconds",
                            "revisionHistoryLimit",
                        ] {
                            o.remove(k);
                        }
                    }
                    s
                };
                if strip(obj) != strip(old) {
                    causes.push(Cause::forbidden(
                        "spec",
                        "updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden",
                    ));
                }
            }
        }
        ("", "persistentvolumeclaims") => {
            if let Some(old) = old {
                let strip = |v: &Value| {
                    let mut s = v.get("spec").cloned().unwrap_or(json!({}));
                    if let Some(o) = s.as_object_mut() {
                        o.remove("resources");
                        // The binder sets volumeName once.
                        if old.pointer("/spec/volumeName").is_none() {
                            o.remove("volumeName");
                        }
                    }
                    s
                };
                if strip(obj) != strip(old) {
                    causes.push(Cause::forbidden(
                        "spec",
                        "spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims",
                    ));
                }
                let req = |v: &Value| {
                    v.pointer("/spec/resources/requests/storage")
                        .and_then(Value::as_str)
                        .and_then(parse_quantity)
                };
                if let (Some(new), Some(before)) = (req(obj), req(old))
                    && new < before
                {
                    causes.push(Cause::forbidden(
                        "spec.resources.requests.storage",
                        "field can not be less than previous value",
                    ));
                }
            }
        }
        ("rbac.authorization.k8s.io", "rolebindings") => {
            validate_role_ref(obj, old, &["Role", "ClusterRole"], &mut causes)
        }
        ("rbac.authorization.k8s.io", "clusterrolebindings") => {
            validate_role_ref(obj, old, &["ClusterRole"], &mut causes)
        }
        _ => {}
    }
    causes
}

/// Upstream's `ValidateRoleBinding` and `ValidateClusterRoleBinding`: a
/// binding's `roleRef` names a role of the RBAC API group, of a kind it
/// may bind (`Role` or `ClusterRole` for a RoleBinding, `ClusterRole` for
/// a ClusterRoleBinding), by a name; and it cannot change once created.
/// (Upstream's escalation check, that the writer holds the permissions it
/// binds, is not done.)
fn validate_role_ref(obj: &Value, old: Option<&Value>, kinds: &[&str], causes: &mut Vec<Cause>) {
    const GROUP: &str = "rbac.authorization.k8s.io";
    let text = |k: &str| {
        obj.pointer(&format!("/roleRef/{k}"))
            .and_then(Value::as_str)
            .unwrap_or_default()
    };
    if text("apiGroup") != GROUP {
        causes.push(Cause::not_supported(
            "roleRef.apiGroup",
            &json!(text("apiGroup")),
            &[json!(GROUP)],
        ));
    }
    if !kinds.contains(&text("kind")) {
        let allowed: Vec<Value> = kinds.iter().map(|k| json!(k)).collect();
        causes.push(Cause::not_supported(
            "roleRef.kind",
            &json!(text("kind")),
            &allowed,
        ));
    }
    if text("name").is_empty() {
        causes.push(Cause::required("roleRef.name", ""));
    }
    if let Some(old) = old
        && obj.get("roleRef") != old.get("roleRef")
    {
        causes.push(Cause::invalid(
            "roleRef",
            obj.get("roleRef").unwrap_or(&Value::Null),
            "cannot change roleRef",
        ));
    }
}

/// A workload's selector is required, not empty, and selects its template.
fn validate_selector(obj: &Value, causes: &mut Vec<Cause>) {
    let selector = obj.pointer("/spec/selector");
    if selector.is_none_or(Value::is_null) {
        causes.push(Cause::required("spec.selector", ""));
    } else if let Some(sel) = selector {
        let s = crate::selector::LabelSelector::from_label_selector(sel);
        let tmpl = obj
            .pointer("/spec/template")
            .cloned()
            .unwrap_or(Value::Null);
        if s.is_empty() || !s.matches(&tmpl) {
            let labels = tmpl
                .pointer("/metadata/labels")
                .cloned()
                .unwrap_or(json!({}));
            causes.push(Cause::invalid(
                "spec.template.metadata.labels",
                &Value::String(labels.to_string()),
                "`selector` does not match template `labels`",
            ));
        }
    }
}

/// A Deployment's strategy as upstream's `ValidateDeploymentStrategy`
/// checks it: maxSurge and maxUnavailable are non-negative ints or
/// percentages, not both zero, maxUnavailable at most 100%, and a Recreate
/// strategy has no rollingUpdate section.
/// `minReadySeconds` (and a Deployment's `progressDeadlineSeconds`): int32
/// fields upstream, non-negative, and a deadline longer than the wait for
/// availability (`ValidateDeploymentSpec`).
fn validate_seconds(obj: &Value, deployment: bool, causes: &mut Vec<Cause>) {
    let field = |name: &str, causes: &mut Vec<Cause>| -> Option<i64> {
        let v = obj
            .pointer(&format!("/spec/{name}"))
            .filter(|v| !v.is_null())?;
        let path = format!("spec.{name}");
        match v.as_i64() {
            Some(n) if n < 0 => {
                causes.push(Cause::invalid(
                    path,
                    v,
                    "must be greater than or equal to 0",
                ));
                None
            }
            Some(n) if n > i64::from(i32::MAX) => {
                causes.push(Cause::invalid(path, v, "must be a 32-bit integer"));
                None
            }
            Some(n) => Some(n),
            None => {
                causes.push(Cause::invalid(path, v, "must be an integer"));
                None
            }
        }
    };
    let min_ready = field("minReadySeconds", causes);
    if !deployment {
        return;
    }
    if let Some(deadline) = field("progressDeadlineSeconds", causes)
        && deadline <= min_ready.unwrap_or(0)
    {
        causes.push(Cause::invalid(
            "spec.progressDeadlineSeconds",
            &json!(deadline),
            "must be greater than minReadySeconds",
        ));
    }
}

fn validate_strategy(obj: &Value, causes: &mut Vec<Cause>) {
    let ty = obj
        .pointer("/spec/strategy/type")
        .and_then(Value::as_str)
        .unwrap_or("RollingUpdate");
    let ru = obj
        .pointer("/spec/strategy/rollingUpdate")
        .filter(|v| !v.is_null());
    match ty {
        "Recreate" => {
            if ru.is_some() {
                causes.push(Cause::forbidden(
                    "spec.strategy.rollingUpdate",
                    "may not be specified when strategy `type` is 'Recreate'",
                ));
            }
            return;
        }
        "RollingUpdate" => {}
        other => {
            causes.push(Cause::not_supported(
                "spec.strategy.type",
                &json!(other),
                &[json!("Recreate"), json!("RollingUpdate")],
            ));
            return;
        }
    }
    let mut zero = [false, false];
    for (i, field) in ["maxUnavailable", "maxSurge"].into_iter().enumerate() {
        let Some(v) = ru.and_then(|r| r.get(field)).filter(|v| !v.is_null()) else {
            continue;
        };
        let path = format!("spec.strategy.rollingUpdate.{field}");
        let n = match (v.as_i64(), v.as_str()) {
            (Some(n), _) => Some(n),
            (None, Some(s)) => s.strip_suffix('%').and_then(|p| p.parse::<i64>().ok()),
            _ => None,
        };
        let Some(n) = n else {
            causes.push(Cause::invalid(
                path,
                v,
                "a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')",
            ));
            continue;
        };
        if n < 0 {
            causes.push(Cause::invalid(
                path,
                v,
                "must be greater than or equal to 0",
            ));
            continue;
        }
        if n > i64::from(i32::MAX) {
            causes.push(Cause::invalid(path, v, "must be a 32-bit integer"));
            continue;
        }
        if field == "maxUnavailable" && v.is_string() && n > 100 {
            causes.push(Cause::invalid(path, v, "must not be greater than 100%"));
        }
        zero[i] = n == 0;
    }
    if zero == [true, true] {
        causes.push(Cause::invalid(
            "spec.strategy.rollingUpdate.maxUnavailable",
            &json!(0),
            "may not be 0 when `maxSurge` is 0",
        ));
    }
}

fn validate_pod_spec(spec: Option<&Value>, at: &str, causes: &mut Vec<Cause>) {
    let containers = spec
        .and_then(|s| s.get("containers"))
        .and_then(Value::as_array);
    match containers {
        None => causes.push(Cause::required(format!("{at}.containers"), "")),
        Some(list) if list.is_empty() => {
            causes.push(Cause::required(format!("{at}.containers"), ""))
        }
        Some(list) => {
            for (i, c) in list.iter().enumerate() {
                if c.get("name")
                    .and_then(Value::as_str)
                    .is_none_or(str::is_empty)
                {
                    causes.push(Cause::required(format!("{at}.containers[{i}].name"), ""));
                }
                if c.get("image")
                    .and_then(Value::as_str)
                    .is_none_or(str::is_empty)
                {
                    causes.push(Cause::required(format!("{at}.containers[{i}].image"), ""));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding(kind: &str, name: &str) -> Value {
        json!({"roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": name}})
    }

    fn fields(obj: &Value, old: Option<&Value>, kinds: &[&str]) -> Vec<String> {
        let mut causes = vec![];
        validate_role_ref(obj, old, kinds, &mut causes);
        causes.iter().map(|c| c.field.clone()).collect()
    }

    #[test]
    fn a_bindings_role_ref_names_a_role_it_may_bind_and_never_changes() {
        let role_binding = ["Role", "ClusterRole"];
        let cluster_binding = ["ClusterRole"];
        assert!(fields(&binding("Role", "r"), None, &role_binding).is_empty());
        assert!(fields(&binding("ClusterRole", "r"), None, &cluster_binding).is_empty());
        assert_eq!(
            fields(&binding("Role", "r"), None, &cluster_binding),
            ["roleRef.kind"]
        );
        assert_eq!(
            fields(&binding("Secret", "r"), None, &role_binding),
            ["roleRef.kind"]
        );
        assert_eq!(
            fields(
                &json!({"roleRef": {"kind": "Role", "name": "r"}}),
                None,
                &role_binding
            ),
            ["roleRef.apiGroup"]
        );
        assert_eq!(
            fields(&binding("Role", ""), None, &role_binding),
            ["roleRef.name"]
        );
        let old = binding("Role", "r");
        assert!(fields(&binding("Role", "r"), Some(&old), &role_binding).is_empty());
        assert_eq!(
            fields(&binding("ClusterRole", "r"), Some(&old), &role_binding),
            ["roleRef"]
        );
    }
}
