//! The HTTP face of the control plane: Kubernetes REST paths to cluster
//! operations.
//!
//! Paths follow one grammar:
//!
//! ```text
//! /api/v1[/namespaces/{ns}]/{resource}[/{name}[/{subresource}]]
//! /apis/{group}/{version}[/namespaces/{ns}]/{resource}[/{name}[/{subresource}]]
//! ```
//!
//! and the HTTP method picks the verb: GET is `get`, `list` or (with
//! `?watch=true`) `watch`; POST is `create`; PUT `update`; PATCH `patch`
//! (the Content-Type says which patch format); DELETE `delete` or, on a
//! collection, `deletecollection`. `pods/portforward` is a connect
//! subresource: the request is upgraded ([`crate::portforward`]). Discovery documents at `/api`, `/apis`
//! and each group version let clients find out what is served. Every error
//! is a `Status` object with the real code and reason.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::auth::Identity;
use crate::auth::rbac::{Action, Decision};
use crate::cluster::{
    Cluster, DeleteOptions, ListOptions, PatchKind, Sub, WriteOptions, manager_from_user_agent,
};
use crate::counters::Counters;
use crate::error::{Error, Result};
use crate::faults::Faults;
use crate::fieldvalidation;
use crate::printers::Render;
use crate::registry::{ResourceType, version_priority};
use crate::selector::{FieldSelector, LabelSelector};
use crate::watch::WatchParams;

/// The Kubernetes version the sandbox reports; the registry's, kept here
/// for existing paths.
pub use crate::registry::KUBE_MINOR;

/// Everything a request handler needs.
pub struct AppState {
    pub cluster: Arc<Cluster>,
    pub faults: Arc<Faults>,
    pub counters: Arc<Counters>,
    pub bookmark_interval: Duration,
    pub max_body_bytes: usize,
}

pub fn router(state: Arc<AppState>) -> Router {
    Router::new().fallback(handle).with_state(state)
}

fn json_response(code: StatusCode, v: &Value) -> Response {
    let body = serde_json::to_vec(v).unwrap_or_default();
    (code, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn error_response(e: &Error) -> Response {
    let s = e.status();
    let code = StatusCode::from_u16(s.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json_response(code, &s.to_json())
}

async fn handle(State(st): State<Arc<AppState>>, req: Request) -> Response {
    let started = std::time::Instant::now();
    let agent = req
        .headers()
        .get(header::USER_AGENT)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let delay = st.faults.delay();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    // The request log (`RUST_LOG=sandbox::requests=debug`): what a client
    // asked for and how it was answered, to see what a client such as
    // client-go's informers sends.
    let logged = tracing::enabled!(target: "sandbox::requests", tracing::Level::DEBUG).then(|| {
        let accept = req
            .headers()
            .get(header::ACCEPT)
            .and_then(|h| h.to_str().ok())
            .unwrap_or_default()
            .to_string();
        (req.method().clone(), req.uri().clone(), accept)
    });
    let mut labels = None;
    let authorization = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok());
    let response = match crate::auth::authenticate(&st.cluster, authorization) {
        Err(e) => error_response(&e),
        Ok(identity) => match route(&st, req, identity, &mut labels).await {
            Ok(r) => r,
            Err(e) => error_response(&e),
        },
    };
    if let Some((method, uri, accept)) = logged {
        tracing::debug!(
            target: "sandbox::requests",
            %method, %uri, accept, agent, code = response.status().as_u16(),
            ms = started.elapsed().as_millis() as u64,
            "request"
        );
    }
    if let Some(l) = labels {
        let code = response.status().as_u16();
        st.counters
            .metrics()
            .observe(&l, &agent, code, started.elapsed());
    }
    response
}

/// A parsed resource path.
struct Target {
    rt: Arc<ResourceType>,
    namespace: Option<String>,
    name: Option<String>,
    sub: Option<String>,
}

fn discovery(st: &AppState, segs: &[&str], host: &str) -> Option<Value> {
    let reg = &st.cluster.registry;
    match segs {
        ["version"] => Some(json!({
            "major": "1", "minor": KUBE_MINOR, "gitVersion": format!("v1.{KUBE_MINOR}.0-sandbox"),
            "gitCommit": "sandbox", "gitTreeState": "clean", "buildDate": "2025-01-01T00:00:00Z",
            "goVersion": "go1.24", "compiler": "gc", "platform": "linux/amd64",
        })),
        ["api"] => Some(json!({
            "kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": host}],
        })),
        ["apis"] => {
            let groups: Vec<Value> = reg
                .groups()
                .into_iter()
                .map(|(g, vs)| group_json(&g, &vs))
                .collect();
            Some(json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}))
        }
        ["apis", g] => reg.groups().get(*g).map(|vs| {
            let mut v = group_json(g, vs);
            v["kind"] = json!("APIGroup");
            v["apiVersion"] = json!("v1");
            v
        }),
        ["api", "v1"] => Some(reg.resource_list("", "v1")),
        ["apis", g, v] if reg.has_group_version(g, v) => Some(reg.resource_list(g, v)),
        _ => None,
    }
}

fn group_json(g: &str, versions: &[String]) -> Value {
    let mut vs = versions.to_vec();
    vs.sort_by_key(|v| std::cmp::Reverse(version_priority(v)));
    let list: Vec<Value> = vs
        .iter()
        .map(|v| json!({"groupVersion": format!("{g}/{v}"), "version": v}))
        .collect();
    json!({"name": g, "versions": list, "preferredVersion": list.first().cloned().unwrap_or(json!({}))})
}

/// The paths upstream's `system:public-info-viewer` ClusterRole opens to
/// everyone, exactly as it lists them.
const PUBLIC_INFO_PATHS: [&str; 5] = ["/healthz", "/livez", "/readyz", "/version", "/version/"];

fn parse_target(st: &AppState, segs: &[&str]) -> Result<(Target, bool)> {
    let (group, version, rest) = match segs {
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return Err(Error::no_such_resource()),
    };
    // The legacy `/watch/` prefix means `?watch=true`.
    let (legacy_watch, rest) = match rest {
        ["watch", rest @ ..] => (true, rest),
        _ => (false, rest),
    };
    let reg = &st.cluster.registry;
    let lookup = |plural: &str| {
        reg.lookup(group, version, plural)
            .ok_or_else(Error::no_such_resource)
    };
    let t = |rt, ns: Option<&str>, name: Option<&str>, sub: Option<&str>| Target {
        rt,
        namespace: ns.map(String::from),
        name: name.map(String::from),
        sub: sub.map(String::from),
    };
    let target = match rest {
        [res] => t(lookup(res)?, None, None, None),
        ["namespaces", ns, res]
            if reg
                .lookup(group, version, res)
                .is_some_and(|r| r.namespaced) =>
        {
            t(lookup(res)?, Some(ns), None, None)
        }
        ["namespaces", ns, res, name] => t(lookup(res)?, Some(ns), Some(name), None),
        ["namespaces", ns, res, name, sub] => t(lookup(res)?, Some(ns), Some(name), Some(sub)),
        [res, name] => t(lookup(res)?, None, Some(name), None),
        [res, name, sub] => t(lookup(res)?, None, Some(name), Some(sub)),
        _ => return Err(Error::no_such_resource()),
    };
    // A namespaced kind addressed without a namespace can only be listed
    // or watched across all namespaces.
    if target.rt.namespaced && target.namespace.is_none() && target.name.is_some() {
        return Err(Error::no_such_resource());
    }
    if !target.rt.namespaced && target.namespace.is_some() {
        return Err(Error::no_such_resource());
    }
    if let Some(sub) = &target.sub {
        let ok = match sub.as_str() {
            "status" => target.rt.status,
            "scale" => target.rt.scale.is_some(),
            "log" => target.rt.log,
            "portforward" | "exec" => target.rt.plural == "pods" && target.rt.group.is_empty(),
            "finalize" => target.rt.plural == "namespaces" && target.rt.group.is_empty(),
            "proxy" => target.rt.plural == "nodes" && target.rt.group.is_empty(),
            "token" => target.rt.plural == "serviceaccounts" && target.rt.group.is_empty(),
            _ => false,
        };
        if !ok {
            return Err(Error::no_such_resource());
        }
    }
    Ok((target, legacy_watch))
}

fn parse_query(q: Option<&str>) -> HashMap<String, String> {
    form_urlencoded::parse(q.unwrap_or_default().as_bytes())
        .into_owned()
        .collect()
}

fn truthy(q: &HashMap<String, String>, k: &str) -> bool {
    q.get(k).is_some_and(|v| v == "true" || v == "1")
}

fn parse_body(headers: &HeaderMap, body: &[u8]) -> Result<Value> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    let mime = ct.split(';').next().unwrap_or_default().trim();
    match mime {
        "application/json" | "" | "*/*" => serde_json::from_slice(body).map_err(|e| {
            Error::bad_request(format!(
                "the object provided is unrecognized: json parse error: {e}"
            ))
        }),
        crate::protobuf::MEDIA_TYPE => crate::protobuf::decode(body),
        "application/yaml" | "application/x-yaml" | "text/yaml" => serde_yaml::from_slice(body)
            .map_err(|e| {
                Error::bad_request(format!(
                    "the object provided is unrecognized: yaml parse error: {e}"
                ))
            }),
        other => Err(Error::unsupported_media_type(other)),
    }
}

fn with_version(rt: &ResourceType, mut v: Value) -> Value {
    if let Some(o) = v.as_object_mut()
        && o.get("kind").and_then(Value::as_str) == Some(rt.kind.as_str())
    {
        o.insert("apiVersion".into(), json!(rt.api_version()));
    }
    if let Some(items) = v.get_mut("items").and_then(Value::as_array_mut) {
        for i in items.iter_mut().filter_map(Value::as_object_mut) {
            i.insert("apiVersion".into(), json!(rt.api_version()));
            i.insert("kind".into(), json!(rt.kind));
        }
    }
    v
}

fn list_options(q: &HashMap<String, String>, rt: &ResourceType) -> Result<ListOptions> {
    Ok(ListOptions {
        labels: LabelSelector::parse(
            q.get("labelSelector")
                .map(String::as_str)
                .unwrap_or_default(),
        )?,
        fields: FieldSelector::parse_for(
            q.get("fieldSelector")
                .map(String::as_str)
                .unwrap_or_default(),
            rt,
        )?,
        limit: q.get("limit").and_then(|l| l.parse().ok()),
        continue_token: q.get("continue").filter(|c| !c.is_empty()).cloned(),
    })
}

fn delete_options(q: &HashMap<String, String>, body: &[u8]) -> Result<DeleteOptions> {
    let mut o = DeleteOptions::default();
    if !body.iter().all(u8::is_ascii_whitespace) {
        // Typed clients send DeleteOptions in protobuf, like their objects.
        let b: Value = if crate::protobuf::is_protobuf(body) {
            crate::protobuf::decode(body)?
        } else {
            serde_json::from_slice(body)
                .map_err(|e| Error::bad_request(format!("invalid DeleteOptions: {e}")))?
        };
        o.propagation = b
            .get("propagationPolicy")
            .and_then(Value::as_str)
            .map(String::from);
        if b.get("orphanDependents").and_then(Value::as_bool) == Some(true) {
            o.propagation = Some("Orphan".into());
        }
        o.grace_period = b.get("gracePeriodSeconds").and_then(Value::as_i64);
        o.precondition_uid = b
            .pointer("/preconditions/uid")
            .and_then(Value::as_str)
            .map(String::from);
        o.precondition_rv = b
            .pointer("/preconditions/resourceVersion")
            .and_then(Value::as_str)
            .map(String::from);
        o.dry_run = b
            .get("dryRun")
            .and_then(Value::as_array)
            .is_some_and(|a| !a.is_empty());
    }
    if let Some(p) = q.get("propagationPolicy") {
        o.propagation = Some(p.clone());
    }
    if q.get("orphanDependents").is_some_and(|v| v == "true") {
        o.propagation = Some("Orphan".into());
    }
    if let Some(g) = q.get("gracePeriodSeconds").and_then(|g| g.parse().ok()) {
        o.grace_period = Some(g);
    }
    o.dry_run |= q.contains_key("dryRun");
    if let Some(p) = &o.propagation
        && !matches!(p.as_str(), "Foreground" | "Background" | "Orphan")
    {
        return Err(Error::invalid(
            "",
            "DeleteOptions",
            "",
            vec![crate::error::Cause::not_supported(
                "propagationPolicy",
                &json!(p),
                &[json!("Foreground"), json!("Background"), json!("Orphan")],
            )],
        ));
    }
    Ok(o)
}

/// Serves one request; `labels` gets its metric labels once the resource
/// request is parsed (discovery and health checks are not counted).
async fn route(
    st: &AppState,
    req: Request,
    identity: Option<Identity>,
    labels: &mut Option<crate::metrics::RequestLabels>,
) -> Result<Response> {
    let (mut parts, body) = req.into_parts();
    let path = parts.uri.path().to_string();
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let q = parse_query(parts.uri.query());
    let host = parts
        .headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1")
        .to_string();

    // Upstream's system:public-info-viewer: health and version are open to
    // anyone, even without credentials; everything else, paths under these
    // included, needs a token. The role names exact paths.
    let public = PUBLIC_INFO_PATHS.contains(&path.as_str());
    let Some(identity) = identity.or_else(|| public.then(Identity::anonymous)) else {
        return Err(crate::auth::unauthorized());
    };
    let identity = crate::auth::impersonation::apply(&st.cluster, identity, &parts.headers)?;
    // Paths that name no resource (discovery, OpenAPI, metrics) are
    // authorized by path, with the HTTP method as the verb.
    let resource_request = matches!(segs.as_slice(), ["api", _, _, ..] | ["apis", _, _, _, ..]);
    if !public && !resource_request {
        let action = Action::NonResource {
            verb: parts.method.as_str().to_ascii_lowercase(),
            path: parts.uri.path().to_string(),
        };
        authorize(st, &identity, &action)?;
    }
    if matches!(segs.as_slice(), ["healthz"] | ["readyz"] | ["livez"]) {
        return Ok((StatusCode::OK, "ok").into_response());
    }
    if parts.method == Method::GET && segs.as_slice() == ["metrics"] {
        let text = st.counters.metrics().render(st.cluster.store.writes());
        return Ok((
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            text,
        )
            .into_response());
    }
    if parts.method == Method::GET
        && let Some(doc) = discovery(st, &segs, &host)
    {
        return Ok(json_response(StatusCode::OK, &doc));
    }
    if matches!(segs.first(), Some(&"openapi")) {
        return crate::openapi::serve(&st.cluster, &segs)
            .map(|v| json_response(StatusCode::OK, &v));
    }

    // The node proxy (`nodes/NAME/proxy/...`) reaches the kubelet: the
    // path after `proxy` is the kubelet's ([`crate::stats`]).
    let (segs, proxied) = match segs.as_slice() {
        ["api", "v1", "nodes", _, "proxy", rest @ ..] => (segs[..5].to_vec(), Some(rest.to_vec())),
        _ => (segs.clone(), None),
    };
    let (target, legacy_watch) = parse_target(st, &segs)?;
    let rt = target.rt.clone();
    let watching = legacy_watch || truthy(&q, "watch");
    let verb = match (&parts.method, target.name.is_some()) {
        (&Method::GET, false) if watching => "watch",
        // The legacy `/watch/.../NAME` watches one object (upstream still
        // serves it, deprecated in favour of a fieldSelector on the list).
        (&Method::GET, true) if legacy_watch && target.sub.is_none() => "watch",
        // exec is `create` on pods/exec whichever method, as RBAC names it.
        (&Method::GET | &Method::POST, true) if target.sub.as_deref() == Some("exec") => "create",
        (&Method::GET, false) => "list",
        (&Method::GET, true) => "get",
        (&Method::POST, false) => "create",
        // Connect subresources: kube-rs upgrades a GET, kubectl a POST.
        (&Method::POST, true) if target.sub.as_deref() == Some("portforward") => "create",
        // TokenRequest: `create` on serviceaccounts/token.
        (&Method::POST, true) if target.sub.as_deref() == Some("token") => "create",
        (&Method::PUT, true) => "update",
        (&Method::PATCH, true) => "patch",
        (&Method::DELETE, true) => "delete",
        (&Method::DELETE, false) => "deletecollection",
        _ => return Err(Error::method_not_allowed()),
    };
    let resource = match &target.sub {
        Some(s) => format!("{}/{s}", rt.plural),
        None => rt.plural.clone(),
    };
    authorize(
        st,
        &identity,
        &Action::Resource {
            verb: verb.into(),
            namespace: rbac_namespace(&target),
            api_group: rt.group.clone(),
            resource: rt.plural.clone(),
            subresource: target.sub.clone().unwrap_or_default(),
            name: target
                .name
                .clone()
                .or_else(|| {
                    matches!(verb, "list" | "watch")
                        .then(|| named_by_field_selector(&q))
                        .flatten()
                })
                .unwrap_or_default(),
        },
    )?;
    st.counters.record(verb, &resource);
    *labels = Some(crate::metrics::RequestLabels {
        verb: verb.to_string(),
        resource: rt.plural.clone(),
        subresource: target.sub.clone().unwrap_or_default(),
    });
    if let Some(agent) = parts
        .headers
        .get(header::USER_AGENT)
        .and_then(|h| h.to_str().ok())
    {
        st.counters.record_agent(
            agent,
            crate::counters::RequestKind {
                verb: verb.to_string(),
                group: rt.group.clone(),
                resource: resource.clone(),
            },
        );
    }
    if let Some(code) = st.faults.take(verb, &resource) {
        return Err(Error::injected(code));
    }
    if target.sub.as_deref() == Some("portforward") {
        let (ns, name) = (
            target.namespace.clone().unwrap_or_default(),
            target.name.clone().unwrap_or_default(),
        );
        return crate::portforward::serve(&st.cluster, &rt, &mut parts, &ns, &name).await;
    }
    if let Some(path) = &proxied {
        if parts.method != Method::GET {
            return Err(Error::method_not_allowed());
        }
        let name = target.name.clone().unwrap_or_default();
        return crate::stats::serve(&st.cluster, &name, path)
            .map(|v| json_response(StatusCode::OK, &v));
    }
    if target.sub.as_deref() == Some("exec") {
        let (ns, name) = (
            target.namespace.clone().unwrap_or_default(),
            target.name.clone().unwrap_or_default(),
        );
        return crate::exec::serve(&st.cluster, &rt, &mut parts, &ns, &name).await;
    }

    // Bodies are read whole, up to the real server's 3 MiB request limit.
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > st.max_body_bytes) {
        return Err(Error::too_large(st.max_body_bytes));
    }
    let body: Bytes = axum::body::to_bytes(body, st.max_body_bytes)
        .await
        .map_err(|_| Error::too_large(st.max_body_bytes))?;

    let ns = target.namespace.clone().unwrap_or_default();
    let name = target.name.clone().unwrap_or_default();
    let user_agent = parts
        .headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let wopts = WriteOptions {
        manager: q
            .get("fieldManager")
            .cloned()
            .unwrap_or_else(|| manager_from_user_agent(user_agent)),
        force: truthy(&q, "force"),
        dry_run: q.contains_key("dryRun"),
    };
    let sub = match target.sub.as_deref() {
        Some("status") => Sub::Status,
        _ => Sub::Main,
    };
    let c = &st.cluster;
    let mut warnings: Vec<String> = vec![];
    let directive = || fieldvalidation::Directive::from_query(&q);
    let render = Render::negotiate(
        parts
            .headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok()),
        q.get("includeObject").map(String::as_str),
    );
    if rt.create_only() && verb != "create" {
        return Err(Error::method_not_allowed());
    }
    let out = match verb {
        "list" => {
            let list = c.list(&rt, target.namespace.as_deref(), &list_options(&q, &rt)?)?;
            let list = render.list(&rt, with_version(&rt, list));
            return Ok(json_response(StatusCode::OK, &list));
        }
        "watch" => {
            let mut q = q.clone();
            if let Some(name) = &target.name {
                let one = format!("metadata.name={name}");
                let fields = match q.get("fieldSelector").filter(|f| !f.is_empty()) {
                    Some(f) => format!("{one},{f}"),
                    None => one,
                };
                q.insert("fieldSelector".into(), fields);
            }
            return watch_response(st, rt, target.namespace, &q, render);
        }
        "get" => match target.sub.as_deref() {
            Some("scale") => c.get_scale(&rt, &ns, &name)?,
            Some("log") => {
                let container = q.get("container").map(String::as_str);
                return pod_log(c, &rt, &ns, &name, container, truthy(&q, "follow"));
            }
            _ => {
                let obj = with_version(&rt, c.get(&rt, &ns, &name)?);
                return Ok(json_response(StatusCode::OK, &render.object(&rt, obj)));
            }
        },
        "create" if let Some(review) = crate::auth::review::review_of(&rt) => {
            let obj = parse_body(&parts.headers, &body)?;
            let answer = crate::auth::review::create(c, &rt, review, &identity, &ns, obj)?;
            return Ok(json_response(StatusCode::CREATED, &answer));
        }
        "create" if target.sub.as_deref() == Some("token") => {
            let request = parse_body(&parts.headers, &body)?;
            let answer = crate::auth::token_request::create(c, &ns, &name, request)?;
            return Ok(json_response(StatusCode::CREATED, &answer));
        }
        "create" => {
            let obj = parse_body(&parts.headers, &body)?;
            warnings = fieldvalidation::check(&rt, &obj, directive()?, false)?;
            let created = c.create(&rt, &ns, obj, &wopts)?;
            return Ok(with_warnings(
                json_response(StatusCode::CREATED, &with_version(&rt, created)),
                &warnings,
            ));
        }
        "update" => {
            let obj = parse_body(&parts.headers, &body)?;
            if target.sub.as_deref() != Some("scale") {
                warnings = fieldvalidation::check(&rt, &obj, directive()?, false)?;
            }
            match target.sub.as_deref() {
                Some("scale") => c.set_scale(&rt, &ns, &name, &obj, &wopts)?,
                Some("finalize") => c.update(&rt, &ns, &name, obj, Sub::Main, &wopts)?,
                _ => c.update(&rt, &ns, &name, obj, sub, &wopts)?,
            }
        }
        "patch" => {
            let ct = parts
                .headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            let kind = match ct.split(';').next().unwrap_or_default().trim() {
                "application/json-patch+json" => PatchKind::Json,
                "application/merge-patch+json" => PatchKind::Merge,
                "application/strategic-merge-patch+json" => PatchKind::Strategic,
                "application/apply-patch+yaml" => PatchKind::Apply,
                other => return Err(Error::unsupported_media_type(other)),
            };
            if kind == PatchKind::Apply && q.get("fieldManager").is_none_or(String::is_empty) {
                return Err(Error::bad_request(
                    "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
                ));
            }
            let patch_obj: Option<Value> = match kind {
                PatchKind::Apply => crate::apply::parse_body(&body).ok(),
                PatchKind::Merge | PatchKind::Strategic => serde_json::from_slice(&body).ok(),
                PatchKind::Json => None,
            };
            if let Some(p) = patch_obj.filter(|_| target.sub.as_deref() != Some("scale")) {
                warnings = fieldvalidation::check(&rt, &p, directive()?, kind == PatchKind::Apply)?;
            }
            if target.sub.as_deref() == Some("scale") {
                // Read-patch-write, retried when another writer got in
                // between, unless the patch itself names a resourceVersion.
                let mut tries = 0;
                loop {
                    let current = c.get_scale(&rt, &ns, &name)?;
                    let patched = match kind {
                        PatchKind::Json => crate::patch::json_patch(&current, &body)?,
                        PatchKind::Apply => {
                            let v: Value = crate::apply::parse_body(&body)
                                .map_err(|e| Error::bad_request(e.to_string()))?;
                            let mut cur = current.clone();
                            json_patch::merge(&mut cur, &v);
                            cur
                        }
                        _ => crate::patch::merge_patch(&current, &body)?,
                    };
                    let rv = |o: &Value| o.pointer("/metadata/resourceVersion").cloned();
                    let unconditional = rv(&patched) == rv(&current);
                    match c.set_scale(&rt, &ns, &name, &patched, &wopts) {
                        Err(Error::Api(s))
                            if s.reason == "Conflict" && unconditional && tries < 16 =>
                        {
                            tries += 1;
                        }
                        other => break other?,
                    }
                }
            } else {
                c.patch(&rt, &ns, &name, kind, &body, sub, &wopts)?
            }
        }
        "delete" => c.delete(&rt, &ns, &name, &delete_options(&q, &body)?)?,
        "deletecollection" => c.delete_collection(
            &rt,
            target.namespace.as_deref(),
            &list_options(&q, &rt)?,
            &delete_options(&q, &body)?,
        )?,
        _ => return Err(Error::method_not_allowed()),
    };
    Ok(with_warnings(
        json_response(StatusCode::OK, &with_version(&rt, out)),
        &warnings,
    ))
}

/// RBAC's verdict on a request, as a 403 when it is refused.
fn authorize(st: &AppState, identity: &Identity, action: &Action) -> Result<()> {
    match crate::auth::rbac::authorize(&st.cluster, identity, action) {
        Decision::Allow(_) => Ok(()),
        Decision::Deny(reason) => Err(crate::auth::rbac::forbidden(identity, action, &reason)),
    }
}

/// The namespace RBAC sees a request in: the one in its path, or, for a
/// namespace itself (`/api/v1/namespaces/NAME`, its `status` and
/// `finalize`), that namespace, as upstream's RequestInfo sets it; so a
/// RoleBinding in `foo` can grant reading the namespace `foo`.
fn rbac_namespace(target: &Target) -> String {
    let namespace_itself = target.rt.group.is_empty() && target.rt.plural == "namespaces";
    match (&target.namespace, &target.name) {
        (Some(ns), _) => ns.clone(),
        (None, Some(name)) if namespace_itself => name.clone(),
        (None, _) => String::new(),
    }
}

/// The name a list or watch is narrowed to by `fieldSelector=metadata.name=X`
/// (upstream's RequestInfo takes it as the request's name for list and
/// watch only, so RBAC resourceNames apply to it; any other verb carrying
/// a fieldSelector is authorized without a name).
fn named_by_field_selector(q: &HashMap<String, String>) -> Option<String> {
    let selector = q.get("fieldSelector")?;
    let mut parts = selector.split(',');
    let one = parts.next()?;
    if parts.next().is_some() {
        return None;
    }
    let name = one
        .strip_prefix("metadata.name==")
        .or_else(|| one.strip_prefix("metadata.name="))?;
    Some(name.to_string())
}

/// Adds one `Warning: 299 - "..."` header per warning, as the real server
/// reports dropped unknown fields.
fn with_warnings(mut resp: Response, warnings: &[String]) -> Response {
    for w in warnings {
        let quoted = w.replace('\\', "\\\\").replace('"', "\\\"");
        if let Ok(v) = header::HeaderValue::from_str(&format!("299 - \"{quoted}\"")) {
            resp.headers_mut().append(header::WARNING, v);
        }
    }
    resp
}

/// `GET .../pods/NAME/log`: the container's log; with `follow=true` the
/// log so far, then what the container writes, until it stops running
/// (the kubelet's `kubectl logs -f`) or the client goes away.
fn pod_log(
    c: &Arc<Cluster>,
    rt: &ResourceType,
    ns: &str,
    name: &str,
    container: Option<&str>,
    follow: bool,
) -> Result<Response> {
    let pod = c.get(rt, ns, name)?;
    let uid = crate::meta::uid_of(&pod).to_string();
    let container_name = container
        .or_else(|| {
            pod.pointer("/spec/containers/0/name")
                .and_then(Value::as_str)
        })
        .unwrap_or_default()
        .to_string();
    let Some(text) = c.runtime.logs(&uid, container) else {
        return Err(Error::bad_request(format!(
            "container {container_name:?} in pod {name:?} is waiting to start: ContainerCreating"
        )));
    };
    if !follow {
        return Ok((StatusCode::OK, [(header::CONTENT_TYPE, "text/plain")], text).into_response());
    }
    let running = {
        let c = c.clone();
        let uid = uid.clone();
        move || {
            c.runtime.status(&uid).is_some_and(|reports| {
                reports.iter().any(|r| {
                    r.name == container_name
                        && matches!(r.state, crate::runtime::ContainerState::Running { .. })
                })
            })
        }
    };
    let c = c.clone();
    let container = container.map(String::from);
    let first = Bytes::from(text.clone().into_bytes());
    let rest = futures::stream::unfold((text.len(), false), move |(sent, done)| {
        let (c, uid, container, running) =
            (c.clone(), uid.clone(), container.clone(), running.clone());
        async move {
            if done {
                return None;
            }
            loop {
                let alive = running();
                let now = c
                    .runtime
                    .logs(&uid, container.as_deref())
                    .unwrap_or_default();
                // A shorter log is a new run's: this one is over.
                if now.len() < sent {
                    return None;
                }
                if now.len() > sent {
                    let chunk = Bytes::from(now.as_bytes()[sent..].to_vec());
                    return Some((
                        Ok::<Bytes, std::convert::Infallible>(chunk),
                        (now.len(), !alive),
                    ));
                }
                if !alive {
                    return None;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    });
    let stream = futures::StreamExt::chain(
        futures::stream::iter([Ok::<Bytes, std::convert::Infallible>(first)]),
        rest,
    );
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| error_response(&Error::internal("could not build the log stream"))))
}

fn watch_response(
    st: &AppState,
    rt: Arc<ResourceType>,
    ns: Option<String>,
    q: &HashMap<String, String>,
    render: Render,
) -> Result<Response> {
    let send_initial = truthy(q, "sendInitialEvents");
    if send_initial && q.get("resourceVersionMatch").map(String::as_str) != Some("NotOlderThan") {
        return Err(Error::invalid(
            "meta.k8s.io",
            "ListOptions",
            "",
            vec![crate::error::Cause::forbidden(
                "resourceVersionMatch",
                "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
            )],
        ));
    }
    let params = WatchParams {
        resource_version: q.get("resourceVersion").cloned(),
        labels: LabelSelector::parse(
            q.get("labelSelector")
                .map(String::as_str)
                .unwrap_or_default(),
        )?,
        fields: FieldSelector::parse_for(
            q.get("fieldSelector")
                .map(String::as_str)
                .unwrap_or_default(),
            &rt,
        )?,
        bookmarks: truthy(q, "allowWatchBookmarks"),
        timeout: q
            .get("timeoutSeconds")
            .and_then(|t| t.parse().ok())
            .map(Duration::from_secs),
        send_initial_events: send_initial,
        render,
    };
    let rx = crate::watch::start(
        st.cluster.clone(),
        rt,
        ns,
        params,
        st.faults.watch_killer(),
        st.bookmark_interval,
    )?;
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<Bytes, std::convert::Infallible>(b), rx))
    });
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| error_response(&Error::internal("could not build the watch response"))))
}
