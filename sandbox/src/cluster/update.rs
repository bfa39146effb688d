//! Updates and patches: a requested new state turned into what is stored
//! (subresource scoping, server-owned metadata, admission, generation),
//! optimistic concurrency, the four patch formats, server-side apply
//! (which creates a missing object) and controllers' read-modify-write.
//! A write that changes nothing stores nothing.

use serde_json::{Value, json};

use super::{Cluster, PatchKind, Sub, WriteOptions, kinds, store_err};
use crate::apply::{self, ApplyRequest};
use crate::error::{Cause, Error, Result};
use crate::meta::{self, finalizers, is_deleting, meta_mut, name_of};
use crate::registry::ResourceType;
use crate::store::rv_of;

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
impl Cluster {
    /// Turns a requested new state into what will be stored: subresource
    /// scoping, server-owned metadata, defaults, validation, generation.
    pub(super) fn prepare_update(
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
    pub(super) fn commit(
        &self,
        rt: &ResourceType,
        old: &Value,
        new: Value,
        dry_run: bool,
    ) -> Result<Value> {
        let name = name_of(old).to_string();
        let ns = meta::namespace_of(old).to_string();
        if new == *old || dry_run {
            return Ok(new);
        }
        if is_deleting(&new)
            && finalizers(&new).is_empty()
            && !kinds::rules(rt).waits_for_kubelet(&new)
        {
            let deleted = self
                .store
                .delete(&rt.key(), &ns, &name, Some(rv_of(old)))
                .map_err(|e| store_err(rt, &name, e))?;
            kinds::rules(rt).after_delete(self, &deleted);
            return Ok(rt.to_view(deleted));
        }
        let stored = self
            .store
            .update(&rt.key(), &ns, &name, rt.to_storage(new), rv_of(old))
            .map_err(|e| store_err(rt, &name, e))?;
        kinds::rules(rt).after_write(self, &stored);
        Ok(rt.to_view(stored))
    }

    /// The object an update or a non-apply patch turns `old` into: the
    /// optimistic-concurrency check on a resourceVersion the body carries,
    /// then the update rules and the managedFields of the writing manager.
    pub(super) fn replacement(
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
            let v: Value = crate::apply::parse_body(body)
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

    pub(super) fn create_by_apply(
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
}
