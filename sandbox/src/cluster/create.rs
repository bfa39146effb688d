//! Creates: a new object's server-set metadata (name from
//! `generateName`, uid, creation time, generation), the namespace it goes
//! in, admission (defaults and validation, shared with updates; a pod's
//! ServiceAccount, [`crate::auth::admission`]) and the creator's field
//! ownership. A new namespace gets its `default` ServiceAccount and
//! `kube-root-ca.crt` ConfigMap in the same create.

use serde_json::{Value, json};

use super::{Cluster, WriteOptions, kinds, store_err};
use crate::apply::{self, Scope};
use crate::builtin;
use crate::error::{Cause, Error, Result};
use crate::meta::{self, is_deleting, meta_mut, name_of};
use crate::registry::ResourceType;

impl Cluster {
    pub(super) fn check_namespace(&self, rt: &ResourceType, ns: &str) -> Result<()> {
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
    pub(super) fn admit(
        &self,
        rt: &ResourceType,
        obj: &mut Value,
        old: Option<&Value>,
    ) -> Result<()> {
        if let Some(o) = obj.as_object_mut() {
            o.insert("apiVersion".into(), json!(rt.api_version()));
            o.insert("kind".into(), json!(rt.kind));
        }
        let rules = kinds::rules(rt);
        builtin::apply_defaults(rt, obj);
        rules.admit(rt, obj)?;
        let mut causes = meta::validate_labels(obj);
        causes.extend(builtin::validate(rt, obj, old));
        rules.validate(obj)?;
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
        if is_core(rt, "pods") {
            crate::auth::admission::admit_pod(self, ns, &mut obj)?;
        }
        builtin::initial_status(rt, &mut obj);
        kinds::rules(rt).on_create(self, &mut obj)?;
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
            // Stores nothing, but fails as the write would (upstream's
            // dry-run storage checks the key too).
            if self.store.get(&rt.key(), ns, &name).is_some() {
                return Err(store_err(
                    rt,
                    &name,
                    crate::store::StoreError::AlreadyExists,
                ));
            }
            return Ok(obj);
        }
        let created = self
            .store
            .create(&rt.key(), ns, &name, rt.to_storage(obj))
            .map_err(|e| store_err(rt, &name, e))?;
        kinds::rules(rt).after_write(self, &created);
        if is_core(rt, "namespaces") {
            crate::auth::admission::namespace_created(self, &name);
        }
        Ok(rt.to_view(created))
    }
}

fn is_core(rt: &ResourceType, plural: &str) -> bool {
    rt.group.is_empty() && rt.plural == plural
}
