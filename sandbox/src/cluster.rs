//! The API server's write path, independent of HTTP.
//!
//! Every create, update, patch and delete goes through the same steps as in
//! the real server's generic registry: decode, apply the request's
//! semantics (subresource scoping, optimistic concurrency), default,
//! validate (built-in rules or the CRD schema), record field ownership,
//! bump `generation` when the spec changed, skip the write entirely when
//! nothing changed, and store. Deletion honours finalizers: an object with
//! finalizers only gets a `deletionTimestamp` and lives on until they are
//! removed. The HTTP server and the built-in controllers both call this
//! layer, so controllers' writes look exactly like clients' writes to
//! anyone watching.

use std::sync::Arc;

use base64::Engine;
use serde_json::{Value, json};

use crate::apply::{self, ApplyRequest, Scope};
use crate::builtin;
use crate::error::{Cause, Error, Result};
use crate::meta::{self, finalizers, is_deleting, meta_mut, name_of};
use crate::registry::{Registry, ResourceType};
use crate::runtime::PodRuntime;
use crate::selector::{FieldSelector, LabelSelector};
use crate::store::{ObjectKey, Store, StoreError, rv_of};

/// Which part of an object a request addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sub {
    Main,
    Status,
}

impl Sub {
    fn name(self) -> &'static str {
        match self {
            Sub::Main => "",
            Sub::Status => "status",
        }
    }
}

/// The four PATCH content types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchKind {
    Json,
    Merge,
    Strategic,
    Apply,
}

/// Parameters of a write that do not belong to the object.
#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    pub manager: String,
    pub force: bool,
    pub dry_run: bool,
}

impl WriteOptions {
    pub fn manager(m: &str) -> WriteOptions {
        WriteOptions {
            manager: m.into(),
            ..Default::default()
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct DeleteOptions {
    pub propagation: Option<String>,
    pub grace_period: Option<i64>,
    pub precondition_uid: Option<String>,
    pub precondition_rv: Option<String>,
    pub dry_run: bool,
}

#[derive(Debug, Clone, Default)]
pub struct ListOptions {
    pub labels: LabelSelector,
    pub fields: FieldSelector,
    pub limit: Option<usize>,
    pub continue_token: Option<String>,
}

/// The control plane's state: the store, the registry and the pod runtime.
pub struct Cluster {
    pub store: Store,
    pub registry: Registry,
    pub runtime: Arc<dyn PodRuntime>,
    /// Pods the kubelet has handed to the runtime (by uid).
    pub kubelet_started: std::sync::Mutex<std::collections::HashSet<String>>,
}

fn store_err(rt: &ResourceType, name: &str, e: StoreError) -> Error {
    match e {
        StoreError::NotFound => Error::not_found(&rt.group, &rt.plural, name),
        StoreError::AlreadyExists => Error::already_exists(&rt.group, &rt.plural, name),
        StoreError::Conflict => Error::conflict(&rt.group, &rt.plural, name),
    }
}

/// `spec` (or, for kinds without one, everything but metadata and status):
/// the part whose changes bump `metadata.generation`.
fn generation_part(obj: &Value) -> Value {
    match obj.get("spec") {
        Some(s) => s.clone(),
        None => {
            let mut o = obj.clone();
            if let Some(m) = o.as_object_mut() {
                m.remove("metadata");
                m.remove("status");
                m.remove("apiVersion");
                m.remove("kind");
            }
            o
        }
    }
}

fn encode_continue(k: &ObjectKey) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json!([k.0, k.1]).to_string())
}

fn decode_continue(s: &str) -> Result<ObjectKey> {
    let bad = || Error::bad_request(format!("continue key is not valid: {s}"));
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&bytes).map_err(|_| bad())?;
    match (
        v.get(0).and_then(Value::as_str),
        v.get(1).and_then(Value::as_str),
    ) {
        (Some(a), Some(b)) => Ok((a.to_string(), b.to_string())),
        _ => Err(bad()),
    }
}

/// The field manager a request without `fieldManager` is recorded under:
/// its user agent up to the first `/`, as upstream does.
pub fn manager_from_user_agent(ua: &str) -> String {
    let m = ua.split('/').next().unwrap_or_default();
    if m.is_empty() {
        "unknown".into()
    } else {
        m.chars().take(128).collect()
    }
}

impl Cluster {
    pub fn new(history: usize, runtime: Arc<dyn PodRuntime>) -> Cluster {
        Cluster {
            store: Store::new(history),
            registry: Registry::new(),
            runtime,
            kubelet_started: Default::default(),
        }
    }

    pub fn rt(&self, group: &str, plural: &str) -> Result<Arc<ResourceType>> {
        self.registry
            .by_key(group, plural)
            .ok_or_else(Error::no_such_resource)
    }

    pub fn get(&self, rt: &ResourceType, ns: &str, name: &str) -> Result<Value> {
        self.store
            .get(&rt.key(), ns, name)
            .map(|o| rt.to_view(o))
            .ok_or_else(|| Error::not_found(&rt.group, &rt.plural, name))
    }

    /// A `<Kind>List` with selectors and paging applied.
    pub fn list(&self, rt: &ResourceType, ns: Option<&str>, opts: &ListOptions) -> Result<Value> {
        let after = opts
            .continue_token
            .as_deref()
            .map(decode_continue)
            .transpose()?;
        let keep = |o: &Value| opts.labels.matches(o) && opts.fields.matches(o);
        let page = self.store.list(
            &rt.key(),
            ns,
            after.as_ref(),
            opts.limit.filter(|l| *l > 0),
            &keep,
        );
        let mut metadata = json!({"resourceVersion": page.rv.to_string()});
        if let Some(next) = &page.next {
            metadata["continue"] = json!(encode_continue(next));
        }
        Ok(json!({
            "apiVersion": rt.api_version(),
            "kind": rt.list_kind(),
            "metadata": metadata,
            "items": page.items.into_iter().map(|o| rt.to_view(o)).collect::<Vec<_>>(),
        }))
    }

    fn check_namespace(&self, rt: &ResourceType, ns: &str) -> Result<()> {
        if !rt.namespaced {
            return Ok(());
        }
        let nsrt = self.rt("", "namespaces")?;
        match self.store.get(&nsrt.key(), "", ns) {
            None => Err(Error::not_found("", "namespaces", ns)),
            Some(n) if is_deleting(&n) => Err(Error::forbidden(
                &rt.group,
                &rt.plural,
                "",
                &format!(
                    "unable to create new content in namespace {ns} because it is being terminated"
                ),
            )),
            Some(_) => Ok(()),
        }
    }

    /// Defaulting and validation shared by creates and updates.
    fn admit(&self, rt: &ResourceType, obj: &mut Value, old: Option<&Value>) -> Result<()> {
        if let Some(o) = obj.as_object_mut() {
            o.insert("apiVersion".into(), json!(rt.api_version()));
            o.insert("kind".into(), json!(rt.kind));
        }
        builtin::apply_defaults(rt, obj);
        if rt.crd {
            crate::schema::admit(rt, obj)?;
        }
        let mut causes = meta::validate_labels(obj);
        causes.extend(builtin::validate(rt, obj, old));
        if rt.plural == "customresourcedefinitions" && rt.group == "apiextensions.k8s.io" {
            crate::schema::validate_crd(obj)?;
        }
        if causes.is_empty() {
            Ok(())
        } else {
            Err(Error::invalid(&rt.group, &rt.kind, name_of(obj), causes))
        }
    }

    /// POST: creates a new object in `ns` (empty for cluster-scoped kinds).
    pub fn create(
        &self,
        rt: &ResourceType,
        ns: &str,
        mut obj: Value,
        opts: &WriteOptions,
    ) -> Result<Value> {
        if !obj.is_object() {
            return Err(Error::bad_request(
                "the object provided is not a JSON object",
            ));
        }
        if let Some(kind) = obj.get("kind").and_then(Value::as_str)
            && kind != rt.kind
        {
            return Err(Error::bad_request(format!(
                "the kind in the data ({kind}) does not match the expected kind ({})",
                rt.kind
            )));
        }
        let meta = meta_mut(&mut obj);
        if rt.namespaced {
            match meta.get("namespace").and_then(Value::as_str) {
                Some(n) if !n.is_empty() && n != ns => {
                    return Err(Error::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ));
                }
                _ => {
                    meta.insert("namespace".into(), json!(ns));
                }
            }
        } else {
            meta.remove("namespace");
        }
        let mut name = meta
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        if name.is_empty() {
            match meta.get("generateName").and_then(Value::as_str) {
                Some(prefix) if !prefix.is_empty() => {
                    name = format!("{prefix}{}", meta::random_suffix());
                    meta.insert("name".into(), json!(name));
                }
                _ => {
                    return Err(Error::invalid(
                        &rt.group,
                        &rt.kind,
                        "",
                        vec![Cause::required(
                            "metadata.name",
                            "name or generateName is required",
                        )],
                    ));
                }
            }
        }
        if let Some(c) = meta::validate_name(&rt.plural, &name) {
            return Err(Error::invalid(&rt.group, &rt.kind, &name, vec![c]));
        }
        meta.insert("uid".into(), json!(meta::uid()));
        meta.insert("creationTimestamp".into(), json!(meta::now()));
        meta.insert("generation".into(), json!(1));
        for k in [
            "resourceVersion",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "selfLink",
        ] {
            meta.remove(k);
        }
        self.check_namespace(rt, ns)?;
        builtin::initial_status(rt, &mut obj);
        self.on_create(rt, &mut obj)?;
        self.admit(rt, &mut obj, None)?;
        // An empty manager means the caller (create-by-apply) already
        // recorded ownership; otherwise the creator owns what it sent.
        if !opts.manager.is_empty() {
            let scope = if rt.status { Scope::Main } else { Scope::All };
            meta_mut(&mut obj).remove("managedFields");
            apply::track_update(
                rt,
                None,
                &mut obj,
                &opts.manager,
                scope,
                "",
                &rt.api_version(),
            );
        }
        if opts.dry_run {
            return Ok(obj);
        }
        let created = self
            .store
            .create(&rt.key(), ns, &name, rt.to_storage(obj))
            .map_err(|e| store_err(rt, &name, e))?;
        self.after_write(rt, &created);
        Ok(rt.to_view(created))
    }

    /// Kind-specific create-time behaviour.
    fn on_create(&self, rt: &ResourceType, obj: &mut Value) -> Result<()> {
        match (rt.group.as_str(), rt.plural.as_str()) {
            ("", "pods") => {
                // The scheduler's job, done at once: there is one node.
                if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
                    spec.entry("nodeName")
                        .or_insert(json!(crate::controllers::NODE_NAME));
                }
            }
            ("", "services") => {
                if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut)
                    && spec
                        .get("clusterIP")
                        .and_then(Value::as_str)
                        .is_none_or(str::is_empty)
                {
                    // A runtime that serves Services hands out addresses it
                    // can listen on; otherwise the address is only a name.
                    let ip = self.runtime.allocate_service_ip().unwrap_or_else(|| {
                        format!(
                            "10.96.{}.{}",
                            rand::random_range(0..255u8),
                            rand::random_range(1..255u8)
                        )
                    });
                    spec.insert("clusterIP".into(), json!(ip));
                    spec.insert("clusterIPs".into(), json!([ip]));
                }
            }
            ("apiextensions.k8s.io", "customresourcedefinitions") => {
                crate::schema::validate_crd(obj)?;
                let status = crate::schema::crd_status(obj);
                if let Some(o) = obj.as_object_mut() {
                    o.insert("status".into(), status);
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn after_write(&self, rt: &ResourceType, obj: &Value) {
        if rt.group == "apiextensions.k8s.io" && rt.plural == "customresourcedefinitions" {
            let types = crate::schema::crd_types(obj);
            let group = obj
                .pointer("/spec/group")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let plural = obj
                .pointer("/spec/names/plural")
                .and_then(Value::as_str)
                .unwrap_or_default();
            self.registry.set_crd(group, plural, types);
        }
    }

    /// Turns a requested new state into what will be stored: subresource
    /// scoping, server-owned metadata, defaults, validation, generation.
    fn prepare_update(
        &self,
        rt: &ResourceType,
        old: &Value,
        mut new: Value,
        sub: Sub,
    ) -> Result<Value> {
        if !new.is_object() {
            return Err(Error::bad_request(
                "the object provided is not a JSON object",
            ));
        }
        if sub == Sub::Status {
            let mut merged = old.clone();
            if let Some(o) = merged.as_object_mut() {
                match new.get("status") {
                    Some(s) => o.insert("status".into(), s.clone()),
                    None => o.remove("status"),
                };
            }
            new = merged;
        } else if rt.status
            && let Some(o) = new.as_object_mut()
        {
            match old.get("status") {
                Some(s) => o.insert("status".into(), s.clone()),
                None => o.remove("status"),
            };
        }
        let old_meta = old.get("metadata").cloned().unwrap_or(json!({}));
        let meta = meta_mut(&mut new);
        for k in [
            "name",
            "namespace",
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
        ] {
            match old_meta.get(k) {
                Some(v) => meta.insert(k.into(), v.clone()),
                None => meta.remove(k),
            };
        }
        // Deletion only completes through finalizer removal; none may be
        // added once the object is being deleted.
        if is_deleting(old) {
            let before = finalizers(old);
            if finalizers(&new).iter().any(|f| !before.contains(f)) {
                return Err(Error::invalid(
                    &rt.group,
                    &rt.kind,
                    name_of(old),
                    vec![Cause::forbidden(
                        "metadata.finalizers",
                        "no new finalizers can be added if the object is being deleted",
                    )],
                ));
            }
        }
        self.admit(rt, &mut new, Some(old))?;
        if generation_part(&new) != generation_part(old) {
            let g = old
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(1);
            meta_mut(&mut new).insert("generation".into(), json!(g + 1));
        }
        meta_mut(&mut new).insert("resourceVersion".into(), json!(rv_of(old).to_string()));
        Ok(new)
    }

    /// Stores `new` over `old` unless nothing changed; completes a pending
    /// deletion when the last finalizer goes.
    fn commit(&self, rt: &ResourceType, old: &Value, new: Value, dry_run: bool) -> Result<Value> {
        let name = name_of(old).to_string();
        let ns = meta::namespace_of(old).to_string();
        if new == *old || dry_run {
            return Ok(new);
        }
        if is_deleting(&new) && finalizers(&new).is_empty() && !self.waits_for_kubelet(rt, &new) {
            let deleted = self
                .store
                .delete(&rt.key(), &ns, &name, Some(rv_of(old)))
                .map_err(|e| store_err(rt, &name, e))?;
            self.after_delete(rt, &deleted);
            return Ok(rt.to_view(deleted));
        }
        let stored = self
            .store
            .update(&rt.key(), &ns, &name, rt.to_storage(new), rv_of(old))
            .map_err(|e| store_err(rt, &name, e))?;
        self.after_write(rt, &stored);
        Ok(rt.to_view(stored))
    }

    /// The object an update or a non-apply patch turns `old` into: the
    /// optimistic-concurrency check on a resourceVersion the body carries,
    /// then the update rules and the managedFields of the writing manager.
    fn replacement(
        &self,
        rt: &ResourceType,
        old: &Value,
        body: Value,
        sub: Sub,
        opts: &WriteOptions,
        name: &str,
    ) -> Result<Value> {
        let wanted = body
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if !wanted.is_empty() && wanted != rv_of(old).to_string() {
            return Err(Error::conflict(&rt.group, &rt.plural, name));
        }
        let mut new = self.prepare_update(rt, old, body, sub)?;
        apply::track_update(
            rt,
            Some(old),
            &mut new,
            &self.manager(opts),
            self.scope(rt, sub),
            sub.name(),
            &rt.api_version(),
        );
        Ok(new)
    }

    /// PUT: replaces an object (or its status). A resourceVersion in the
    /// body must match the stored one (optimistic concurrency).
    pub fn update(
        &self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        body: Value,
        sub: Sub,
        opts: &WriteOptions,
    ) -> Result<Value> {
        if let Some(n) = body.pointer("/metadata/name").and_then(Value::as_str)
            && n != name
        {
            return Err(Error::bad_request(format!(
                "the name of the object ({n}) does not match the name on the URL ({name})"
            )));
        }
        let old = self.get(rt, ns, name)?;
        let new = self.replacement(rt, &old, body, sub, opts, name)?;
        self.commit(rt, &old, new, opts.dry_run)
    }

    fn manager(&self, opts: &WriteOptions) -> String {
        if opts.manager.is_empty() {
            "unknown".into()
        } else {
            opts.manager.clone()
        }
    }

    fn scope(&self, rt: &ResourceType, sub: Sub) -> Scope {
        match (sub, rt.status) {
            (Sub::Status, _) => Scope::Status,
            (Sub::Main, true) => Scope::Main,
            (Sub::Main, false) => Scope::All,
        }
    }

    /// PATCH in any of the four formats; apply creates a missing object.
    // The parameters are those of the REST call itself; bundling them would
    // only hide that correspondence.
    #[allow(clippy::too_many_arguments)]
    pub fn patch(
        &self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        kind: PatchKind,
        body: &[u8],
        sub: Sub,
        opts: &WriteOptions,
    ) -> Result<Value> {
        if kind == PatchKind::Strategic && rt.crd {
            return Err(Error::unsupported_media_type(
                "application/strategic-merge-patch+json",
            ));
        }
        let config = if kind == PatchKind::Apply {
            if opts.manager.is_empty() {
                return Err(Error::bad_request(
                    "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
                ));
            }
            let v: Value = serde_yaml::from_slice(body)
                .map_err(|e| Error::bad_request(format!("error decoding YAML: {e}")))?;
            if !v.is_object() {
                return Err(Error::bad_request(
                    "error decoding YAML: the applied configuration must be an object",
                ));
            }
            for f in ["apiVersion", "kind"] {
                if v.get(f).and_then(Value::as_str).is_none_or(str::is_empty) {
                    return Err(Error::bad_request(format!(
                        "invalid object type: {f} not set"
                    )));
                }
            }
            if let Some(n) = v.pointer("/metadata/name").and_then(Value::as_str)
                && n != name
            {
                return Err(Error::bad_request(format!(
                    "the name of the object ({n}) does not match the name on the URL ({name})"
                )));
            }
            Some(v)
        } else {
            None
        };
        // Read-modify-write, retried when another writer got in between
        // (the real server's GuaranteedUpdate loop).
        for _ in 0..16 {
            let old = match self.store.get(&rt.key(), ns, name).map(|o| rt.to_view(o)) {
                Some(o) => o,
                None => match &config {
                    Some(cfg) if sub == Sub::Main => {
                        match self.create_by_apply(rt, ns, name, cfg, opts) {
                            // Another writer created it meanwhile: apply to
                            // that object instead, as the real server does.
                            Err(Error::Api(s)) if s.reason == "AlreadyExists" => continue,
                            other => return other,
                        }
                    }
                    _ => return Err(Error::not_found(&rt.group, &rt.plural, name)),
                },
            };
            let result = match (kind, &config) {
                (PatchKind::Apply, Some(cfg)) => {
                    let req = ApplyRequest {
                        manager: &opts.manager,
                        force: opts.force,
                        scope: self.scope(rt, sub),
                        subresource: sub.name(),
                        api_version: &rt.api_version(),
                    };
                    let applied = apply::apply(rt, &old, cfg, &req)?;
                    // A status write keeps the stored metadata, but the
                    // apply's field ownership is part of it: without it, a
                    // status field the manager stops applying would stay.
                    let managed = applied.pointer("/metadata/managedFields").cloned();
                    let mut prepared = self.prepare_update(rt, &old, applied, sub)?;
                    if sub == Sub::Status {
                        let meta = meta_mut(&mut prepared);
                        match managed {
                            Some(m) => meta.insert("managedFields".into(), m),
                            None => meta.remove("managedFields"),
                        };
                    }
                    prepared
                }
                _ => {
                    let patched = match kind {
                        PatchKind::Json => crate::patch::json_patch(&old, body)?,
                        PatchKind::Merge => crate::patch::merge_patch(&old, body)?,
                        _ => crate::patch::strategic_merge_patch(rt, &old, body)?,
                    };
                    self.replacement(rt, &old, patched, sub, opts, name)?
                }
            };
            match self.commit(rt, &old, result, opts.dry_run) {
                Err(Error::Api(s))
                    if s.reason == "Conflict" && !s.message.starts_with("Apply failed") =>
                {
                    continue;
                }
                other => return other,
            }
        }
        Err(Error::conflict(&rt.group, &rt.plural, name))
    }

    fn create_by_apply(
        &self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        cfg: &Value,
        opts: &WriteOptions,
    ) -> Result<Value> {
        let mut skeleton =
            json!({"apiVersion": rt.api_version(), "kind": rt.kind, "metadata": {"name": name}});
        if rt.namespaced {
            skeleton["metadata"]["namespace"] = json!(ns);
        }
        let req = ApplyRequest {
            manager: &opts.manager,
            force: opts.force,
            scope: self.scope(rt, Sub::Main),
            subresource: "",
            api_version: &rt.api_version(),
        };
        let obj = apply::apply(rt, &skeleton, cfg, &req)?;
        // Field ownership is already recorded; create must not redo it.
        let create_opts = WriteOptions {
            manager: String::new(),
            ..opts.clone()
        };
        self.create(rt, ns, obj, &create_opts)
    }

    /// A controller's read-modify-write with retries on conflict.
    pub fn modify(
        &self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        sub: Sub,
        manager: &str,
        f: &dyn Fn(&mut Value),
    ) -> Result<Value> {
        for _ in 0..16 {
            let old = self.get(rt, ns, name)?;
            let mut new = old.clone();
            f(&mut new);
            if new == old {
                return Ok(old);
            }
            match self.update(rt, ns, name, new, sub, &WriteOptions::manager(manager)) {
                Err(Error::Api(s)) if s.reason == "Conflict" => continue,
                other => return other,
            }
        }
        Err(Error::conflict(&rt.group, &rt.plural, name))
    }

    /// Pods bound to a node are deleted gracefully: the kubelet stops the
    /// containers and then removes the object.
    fn waits_for_kubelet(&self, rt: &ResourceType, obj: &Value) -> bool {
        rt.group.is_empty()
            && rt.plural == "pods"
            && obj
                .pointer("/metadata/deletionGracePeriodSeconds")
                .and_then(Value::as_i64)
                .unwrap_or(0)
                > 0
            && !matches!(
                obj.pointer("/status/phase").and_then(Value::as_str),
                Some("Succeeded" | "Failed")
            )
    }

    /// DELETE of one object.
    pub fn delete(
        &self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        opts: &DeleteOptions,
    ) -> Result<Value> {
        for _ in 0..16 {
            let obj = self.get(rt, ns, name)?;
            if let Some(uid) = &opts.precondition_uid
                && uid != meta::uid_of(&obj)
            {
                return Err(Error::conflict_with(
                    &rt.group,
                    &rt.plural,
                    name,
                    &format!(
                        "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                        meta::uid_of(&obj)
                    ),
                ));
            }
            if let Some(rv) = &opts.precondition_rv
                && *rv != rv_of(&obj).to_string()
            {
                return Err(Error::conflict_with(
                    &rt.group,
                    &rt.plural,
                    name,
                    &format!(
                        "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                        rv_of(&obj)
                    ),
                ));
            }
            let mut fins = finalizers(&obj);
            match opts.propagation.as_deref() {
                Some("Foreground") if !fins.iter().any(|f| f == "foregroundDeletion") => {
                    fins.push("foregroundDeletion".into())
                }
                Some("Orphan") if !fins.iter().any(|f| f == "orphan") => fins.push("orphan".into()),
                _ => {}
            }
            let is_ns = rt.group.is_empty() && rt.plural == "namespaces";
            let grace = if rt.group.is_empty() && rt.plural == "pods" {
                let spec_grace = obj
                    .pointer("/spec/terminationGracePeriodSeconds")
                    .and_then(Value::as_i64)
                    .unwrap_or(30);
                let running = !matches!(
                    obj.pointer("/status/phase").and_then(Value::as_str),
                    Some("Succeeded" | "Failed")
                );
                if running {
                    opts.grace_period.unwrap_or(spec_grace).max(0)
                } else {
                    0
                }
            } else {
                0
            };
            if fins.is_empty() && !is_ns && grace == 0 {
                if opts.dry_run {
                    return Ok(obj);
                }
                match self.store.delete(&rt.key(), ns, name, Some(rv_of(&obj))) {
                    Ok(deleted) => {
                        self.after_delete(rt, &deleted);
                        return Ok(rt.to_view(deleted));
                    }
                    Err(StoreError::Conflict) => continue,
                    Err(e) => return Err(store_err(rt, name, e)),
                }
            }
            // Graceful: mark for deletion; finalizers, the namespace
            // controller or the kubelet complete it.
            let mut new = obj.clone();
            let already = is_deleting(&obj);
            let meta = meta_mut(&mut new);
            if !already {
                meta.insert("deletionTimestamp".into(), json!(meta::now()));
                meta.insert("deletionGracePeriodSeconds".into(), json!(grace));
                let g = meta.get("generation").and_then(Value::as_i64).unwrap_or(1);
                meta.insert("generation".into(), json!(g + 1));
            } else if grace == 0 && rt.plural == "pods" {
                meta.insert("deletionGracePeriodSeconds".into(), json!(0));
            }
            if fins.is_empty() {
                meta.remove("finalizers");
            } else {
                meta.insert("finalizers".into(), json!(fins));
            }
            if is_ns && let Some(o) = new.as_object_mut() {
                o.insert("status".into(), json!({"phase": "Terminating"}));
            }
            if new == obj || opts.dry_run {
                return Ok(new);
            }
            if !is_ns && fins.is_empty() && !self.waits_for_kubelet(rt, &new) {
                // A pod whose grace period was cut to zero goes at once.
                match self.store.delete(&rt.key(), ns, name, Some(rv_of(&obj))) {
                    Ok(deleted) => {
                        self.after_delete(rt, &deleted);
                        return Ok(rt.to_view(deleted));
                    }
                    Err(StoreError::Conflict) => continue,
                    Err(e) => return Err(store_err(rt, name, e)),
                }
            }
            match self
                .store
                .update(&rt.key(), ns, name, rt.to_storage(new), rv_of(&obj))
            {
                Ok(v) => return Ok(rt.to_view(v)),
                Err(StoreError::Conflict) => continue,
                Err(e) => return Err(store_err(rt, name, e)),
            }
        }
        Err(Error::conflict(&rt.group, &rt.plural, name))
    }

    /// Removes an object regardless of finalizers (used by controllers that
    /// finish a deletion, such as the kubelet and the namespace controller).
    pub fn remove(&self, rt: &ResourceType, ns: &str, name: &str) -> Result<Value> {
        let deleted = self
            .store
            .delete(&rt.key(), ns, name, None)
            .map_err(|e| store_err(rt, name, e))?;
        self.after_delete(rt, &deleted);
        Ok(rt.to_view(deleted))
    }

    fn after_delete(&self, rt: &ResourceType, obj: &Value) {
        if rt.group == "apiextensions.k8s.io" && rt.plural == "customresourcedefinitions" {
            // Deleting a CRD deletes its objects and stops serving them.
            let group = obj
                .pointer("/spec/group")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let plural = obj
                .pointer("/spec/names/plural")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            if let Some(crt) = self.registry.by_key(&group, &plural) {
                let page = self.store.list(&crt.key(), None, None, None, &|_| true);
                for o in page.items {
                    let _ =
                        self.store
                            .delete(&crt.key(), meta::namespace_of(&o), name_of(&o), None);
                }
            }
            self.registry.remove_crd(&group, &plural);
        }
    }

    /// DELETE on a collection: deletes every matching object.
    pub fn delete_collection(
        &self,
        rt: &ResourceType,
        ns: Option<&str>,
        list: &ListOptions,
        opts: &DeleteOptions,
    ) -> Result<Value> {
        let keep = |o: &Value| list.labels.matches(o) && list.fields.matches(o);
        let page = self.store.list(&rt.key(), ns, None, None, &keep);
        let mut items = vec![];
        for o in page.items {
            match self.delete(rt, meta::namespace_of(&o), name_of(&o), opts) {
                Ok(d) => items.push(d),
                Err(e) if e.code() == 404 => {}
                Err(e) => return Err(e),
            }
        }
        Ok(json!({
            "apiVersion": rt.api_version(),
            "kind": rt.list_kind(),
            "metadata": {"resourceVersion": self.store.current_rv().to_string()},
            "items": items,
        }))
    }

    /// The autoscaling/v1 Scale view of an object.
    pub fn get_scale(&self, rt: &ResourceType, ns: &str, name: &str) -> Result<Value> {
        let obj = self.get(rt, ns, name)?;
        let Some(scale) = &rt.scale else {
            return Err(Error::no_such_resource());
        };
        let ptr = |p: &str| p.replace('.', "/");
        let spec = obj
            .pointer(&ptr(&scale.spec_replicas_path))
            .and_then(Value::as_i64)
            .unwrap_or(0);
        let status = obj
            .pointer(&ptr(&scale.status_replicas_path))
            .and_then(Value::as_i64)
            .unwrap_or(0);
        let selector = scale
            .label_selector_path
            .as_ref()
            .and_then(|p| {
                obj.pointer(&ptr(p))
                    .and_then(Value::as_str)
                    .map(String::from)
            })
            .or_else(|| {
                obj.pointer("/spec/selector")
                    .map(|s| LabelSelector::from_label_selector(s).render())
            })
            .unwrap_or_default();
        let m = &obj["metadata"];
        Ok(json!({
            "kind": "Scale",
            "apiVersion": "autoscaling/v1",
            "metadata": {"name": m["name"], "namespace": m["namespace"], "uid": m["uid"], "resourceVersion": m["resourceVersion"], "creationTimestamp": m["creationTimestamp"]},
            "spec": {"replicas": spec},
            "status": {"replicas": status, "selector": selector},
        }))
    }

    /// Writes `spec.replicas` through the scale subresource.
    pub fn set_scale(
        &self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        scale_obj: &Value,
        opts: &WriteOptions,
    ) -> Result<Value> {
        let Some(scale) = &rt.scale else {
            return Err(Error::no_such_resource());
        };
        let Some(replicas) = scale_obj.pointer("/spec/replicas").and_then(Value::as_i64) else {
            return Err(Error::invalid(
                "autoscaling",
                "Scale",
                name,
                vec![Cause::required("spec.replicas", "")],
            ));
        };
        if replicas < 0 {
            return Err(Error::invalid(
                "autoscaling",
                "Scale",
                name,
                vec![Cause::invalid(
                    "spec.replicas",
                    &json!(replicas),
                    "must be greater than or equal to 0",
                )],
            ));
        }
        let wanted_rv = scale_obj
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let old = self.get(rt, ns, name)?;
        if !wanted_rv.is_empty() && wanted_rv != rv_of(&old).to_string() {
            return Err(Error::conflict(&rt.group, &rt.plural, name));
        }
        let mut new = old.clone();
        let path: Vec<&str> = scale
            .spec_replicas_path
            .trim_start_matches('.')
            .split('.')
            .collect();
        let mut cur = &mut new;
        for (i, p) in path.iter().enumerate() {
            if i + 1 == path.len() {
                if let Some(o) = cur.as_object_mut() {
                    o.insert((*p).into(), json!(replicas));
                }
                break;
            }
            if !cur.get(*p).is_some_and(Value::is_object)
                && let Some(o) = cur.as_object_mut()
            {
                o.insert((*p).into(), json!({}));
            }
            let Some(next) = cur.get_mut(*p) else { break };
            cur = next;
        }
        let opts = WriteOptions {
            manager: self.manager(opts),
            ..opts.clone()
        };
        self.update(rt, ns, name, new, Sub::Main, &opts)?;
        self.get_scale(rt, ns, name)
    }
}
