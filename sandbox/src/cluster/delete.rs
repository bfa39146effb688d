//! Deletes: preconditions, finalizers and propagation policies, graceful
//! deletion (an object marked with a `deletionTimestamp` lives on until
//! its finalizers are removed, or the kubelet has stopped a pod), and
//! collection deletes. What happens to dependents is the garbage
//! collector's.

use serde_json::{Value, json};

use super::{Cluster, DeleteOptions, ListOptions, kinds, store_err};
use crate::error::{Error, Result};
use crate::meta::{self, finalizers, is_deleting, meta_mut, name_of};
use crate::registry::ResourceType;
use crate::store::{StoreError, rv_of};

impl Cluster {
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
            let rules = kinds::rules(rt);
            let terminating = rules.terminating_status();
            let grace = rules.deletion_grace(&obj, opts.grace_period);
            if fins.is_empty() && terminating.is_none() && grace == 0 {
                if opts.dry_run {
                    return Ok(obj);
                }
                match self.store.delete(&rt.key(), ns, name, Some(rv_of(&obj))) {
                    Ok(deleted) => {
                        rules.after_delete(self, &deleted);
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
            } else if grace == 0 {
                // A pod whose grace period a later delete cuts to zero
                // (other kinds were marked with zero already).
                meta.insert("deletionGracePeriodSeconds".into(), json!(0));
            }
            if fins.is_empty() {
                meta.remove("finalizers");
            } else {
                meta.insert("finalizers".into(), json!(fins));
            }
            if let Some(status) = terminating.clone()
                && let Some(o) = new.as_object_mut()
            {
                o.insert("status".into(), status);
            }
            if new == obj || opts.dry_run {
                return Ok(new);
            }
            if terminating.is_none() && fins.is_empty() && !rules.waits_for_kubelet(&new) {
                // A pod whose grace period was cut to zero goes at once.
                match self.store.delete(&rt.key(), ns, name, Some(rv_of(&obj))) {
                    Ok(deleted) => {
                        rules.after_delete(self, &deleted);
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
        kinds::rules(rt).after_delete(self, &deleted);
        Ok(rt.to_view(deleted))
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
}
