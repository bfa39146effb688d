//! The namespace controller: deleting a namespace deletes everything in it.
//!
//! A deleted namespace first turns `Terminating` (it has a
//! `deletionTimestamp`); this controller then deletes each namespaced object
//! in it, waits for objects held by finalizers, and removes the namespace
//! once it is empty. While terminating, the namespace refuses new objects.

use super::queue::{Controller, Outcome};
use crate::cluster::{Cluster, DeleteOptions};
use crate::meta::{is_deleting, name_of};
use crate::store::{Event, EventType};

const NAMESPACES: &str = "/namespaces";

/// Keyed by namespace: its own events, and the deletion of anything in it
/// (a terminating namespace waits for its last object).
pub struct NamespaceController;

impl Controller for NamespaceController {
    type Key = String;

    fn name(&self) -> &'static str {
        "namespace"
    }

    fn keys(&self, _c: &Cluster, e: &Event, out: &mut Vec<String>) {
        if e.key == NAMESPACES {
            out.push(e.name.clone());
        } else if e.kind == EventType::Deleted && !e.namespace.is_empty() {
            out.push(e.namespace.clone());
        }
    }

    fn all(&self, c: &Cluster) -> Vec<String> {
        c.store
            .keys(NAMESPACES, None)
            .into_iter()
            .map(|(_, n)| n)
            .collect()
    }

    fn reconcile(&self, c: &Cluster, ns: &String) -> Outcome {
        sync(c, ns);
        Outcome::Done
    }
}

/// Empties a terminating namespace, then removes it.
fn sync(c: &Cluster, ns: &str) {
    let Ok(nsrt) = c.rt("", "namespaces") else {
        return;
    };
    let Some(namespace) = c.store.get(NAMESPACES, "", ns) else {
        return;
    };
    if !is_deleting(&namespace) {
        return;
    }
    let ns = ns.to_string();
    {
        let mut remaining = 0;
        let mut seen = std::collections::HashSet::new();
        for rt in c.registry.all().into_iter().filter(|rt| rt.namespaced) {
            if !seen.insert(rt.key()) {
                continue;
            }
            for obj in c
                .store
                .list(&rt.key(), Some(&ns), None, None, &|_| true)
                .items
            {
                remaining += 1;
                if !is_deleting(&obj) {
                    let opts = DeleteOptions {
                        grace_period: Some(0),
                        ..Default::default()
                    };
                    let _ = c.delete(&rt, &ns, name_of(&obj), &opts);
                }
            }
        }
        if remaining == 0 {
            let _ = c.remove(&nsrt, "", &ns);
        }
    }
}
