//! Request counters by verb and resource.
//!
//! An operator at rest should read (or watch) but not write. Counting the
//! requests the API server receives, keyed like Kubernetes' own audit and
//! metrics labels (`verb`, `resource[/subresource]`), lets a test assert
//! exactly that: reset the counters, wait, and check that no `create`,
//! `update`, `patch` or `delete` arrived.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, MutexGuard};

#[derive(Debug, Default)]
pub struct Counters {
    counts: Mutex<BTreeMap<(String, String), u64>>,
    /// What each client (by User-Agent) asked for, as RBAC names it.
    by_agent: Mutex<BTreeMap<String, BTreeSet<RequestKind>>>,
    /// kube-apiserver's request metrics, served at `/metrics`; unlike the
    /// counts above they are never reset.
    metrics: crate::metrics::Metrics,
}

/// A kind of request as an RBAC rule matches it: verb, API group and
/// resource (`pods/portforward` for a subresource).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct RequestKind {
    pub verb: String,
    pub group: String,
    pub resource: String,
}

/// The verbs that change state.
pub const WRITE_VERBS: &[&str] = &["create", "update", "patch", "delete", "deletecollection"];

impl Counters {
    /// The request metrics `/metrics` serves.
    pub fn metrics(&self) -> &crate::metrics::Metrics {
        &self.metrics
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<(String, String), u64>> {
        // Counter increments cannot be interrupted half-way.
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn agents(&self) -> MutexGuard<'_, BTreeMap<String, BTreeSet<RequestKind>>> {
        // As above: one insertion at a time.
        self.by_agent.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Notes that the client `agent` (its User-Agent) made a request of `kind`.
    pub fn record_agent(&self, agent: &str, kind: RequestKind) {
        self.agents()
            .entry(agent.to_string())
            .or_default()
            .insert(kind);
    }

    /// The kinds of request made by clients whose User-Agent starts with
    /// `prefix`: what an RBAC role for that client must grant.
    pub fn requests_from(&self, prefix: &str) -> BTreeSet<RequestKind> {
        self.agents()
            .iter()
            .filter(|(agent, _)| agent.starts_with(prefix))
            .flat_map(|(_, kinds)| kinds.iter().cloned())
            .collect()
    }

    pub fn record(&self, verb: &str, resource: &str) {
        *self
            .lock()
            .entry((verb.to_string(), resource.to_string()))
            .or_default() += 1;
    }

    /// Requests of one verb on one resource (e.g. `("patch", "statefulsets")`).
    pub fn get(&self, verb: &str, resource: &str) -> u64 {
        self.lock()
            .get(&(verb.to_string(), resource.to_string()))
            .copied()
            .unwrap_or(0)
    }

    /// All counts, keyed by (verb, resource).
    pub fn snapshot(&self) -> BTreeMap<(String, String), u64> {
        self.lock().clone()
    }

    /// Total state-changing requests since the last reset.
    pub fn writes(&self) -> u64 {
        self.lock()
            .iter()
            .filter(|((v, _), _)| WRITE_VERBS.contains(&v.as_str()))
            .map(|(_, n)| n)
            .sum()
    }

    /// Clears the counts; the record of what each client asked for stays,
    /// so an RBAC check covers a whole test however often it counts.
    pub fn reset(&self) {
        self.lock().clear();
    }
}
