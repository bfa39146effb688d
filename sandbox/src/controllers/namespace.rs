//! The namespace controller: deleting a namespace deletes everything in it.
//!
//! A deleted namespace first turns `Terminating` (it has a
//! `deletionTimestamp`); this controller then deletes each namespaced object
//! in it, waits for objects held by finalizers, and removes the namespace
//! once it is empty. While terminating, the namespace refuses new objects.

use crate::cluster::{Cluster, DeleteOptions};
use crate::meta::{is_deleting, name_of};
use crate::store::Event;

pub fn interest(e: &Event) -> bool {
    e.key == "/namespaces" || e.kind == crate::store::EventType::Deleted
}

pub fn reconcile(c: &Cluster) {
    let Ok(nsrt) = c.rt("", "namespaces") else {
        return;
    };
    let terminating: Vec<String> = super::list_all(c, "", "namespaces", None)
        .into_iter()
        .filter(is_deleting)
        .map(|n| name_of(&n).to_string())
        .collect();
    for ns in terminating {
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
