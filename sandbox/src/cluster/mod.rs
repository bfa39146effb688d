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
//!
//! The steps live in one file each: `create`, `update` (updates,
//! patches and server-side apply), `delete`, `list` and `scale`;
//! [`kinds`] gathers what a step does differently for one kind (a pod's
//! node and graceful deletion, a Service's ClusterIP, a namespace's
//! Terminating phase, a CRD's schema and served kind). [`options`] holds
//! a request's parameters, and [`pod_runtime`] the interface of the pod
//! runtime the control plane holds.

mod create;
mod delete;
pub mod kinds;
mod list;
pub mod options;
pub mod pod_runtime;
mod scale;
mod update;

use std::sync::Arc;

use serde_json::Value;

use crate::apply::Scope;
use crate::error::{Error, Result};
use crate::registry::{Registry, ResourceType};
use crate::store::{Store, StoreError};

pub use kinds::NODE_NAME;
pub use options::{
    DeleteOptions, ListOptions, PatchKind, Sub, WriteOptions, manager_from_user_agent,
};
pub use pod_runtime::{ContainerReport, ContainerState, PodRuntime, VolumeUsage};

/// The control plane's state: the store, the registry and the pod runtime.
pub struct Cluster {
    pub store: Store,
    pub registry: Registry,
    pub runtime: Arc<dyn PodRuntime>,
    /// Pods the kubelet has handed to the runtime (by uid).
    pub kubelet_started: std::sync::Mutex<std::collections::HashSet<String>>,
    /// Credentials and the in-cluster endpoint ([`crate::auth`]).
    pub auth: crate::auth::Authority,
}

fn store_err(rt: &ResourceType, name: &str, e: StoreError) -> Error {
    match e {
        StoreError::NotFound => Error::not_found(&rt.group, &rt.plural, name),
        StoreError::AlreadyExists => Error::already_exists(&rt.group, &rt.plural, name),
        StoreError::Conflict => Error::conflict(&rt.group, &rt.plural, name),
    }
}

impl Cluster {
    pub fn new(history: usize, runtime: Arc<dyn PodRuntime>) -> Cluster {
        Cluster {
            store: Store::new(history),
            registry: Registry::new(),
            runtime,
            kubelet_started: Default::default(),
            auth: crate::auth::Authority::new(),
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

    pub(super) fn manager(&self, opts: &WriteOptions) -> String {
        if opts.manager.is_empty() {
            "unknown".into()
        } else {
            opts.manager.clone()
        }
    }

    pub(super) fn scope(&self, rt: &ResourceType, sub: Sub) -> Scope {
        match (sub, rt.status) {
            (Sub::Status, _) => Scope::Status,
            (Sub::Main, true) => Scope::Main,
            (Sub::Main, false) => Scope::All,
        }
    }
}
