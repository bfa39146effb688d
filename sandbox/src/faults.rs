//! Fault injection: making the control plane misbehave on purpose.
//!
//! Operators must survive a flaky API server: failed requests, dropped
//! watches, expired resourceVersions and slow answers. Tests arm faults
//! here; the HTTP layer consults them on every request.

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::watch;

#[derive(Debug, Clone)]
struct FailRule {
    verb: Option<String>,
    resource: Option<String>,
    status: u16,
    remaining: u32,
}

#[derive(Debug, Default)]
struct State {
    rules: Vec<FailRule>,
    delay: Duration,
}

/// The faults armed on one sandbox.
pub struct Faults {
    state: Mutex<State>,
    kill_watches: watch::Sender<u64>,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            state: Mutex::new(State::default()),
            kill_watches: watch::channel(0).0,
        }
    }
}

impl Faults {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Plain data, never left half-updated: a poisoned lock is usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Fails the next `count` requests matching `verb` (e.g. `"create"`,
    /// `"patch"`, `"list"`, `"watch"`) and `resource` (e.g. `"pods"`,
    /// `"statefulsets/status"`) with `status`. `None` matches anything.
    pub fn fail_next(&self, count: u32, verb: Option<&str>, resource: Option<&str>, status: u16) {
        self.lock().rules.push(FailRule {
            verb: verb.map(String::from),
            resource: resource.map(String::from),
            status,
            remaining: count,
        });
    }

    /// Delays every response by `d` (zero turns it off).
    pub fn set_delay(&self, d: Duration) {
        self.lock().delay = d;
    }

    pub fn delay(&self) -> Duration {
        self.lock().delay
    }

    /// Closes every open watch stream; clients see the stream end.
    pub fn drop_watches(&self) {
        self.kill_watches.send_modify(|n| *n += 1);
    }

    pub fn clear(&self) {
        let mut s = self.lock();
        s.rules.clear();
        s.delay = Duration::ZERO;
    }

    /// Consumes one matching failure, if armed.
    pub fn take(&self, verb: &str, resource: &str) -> Option<u16> {
        let mut s = self.lock();
        let rule = s.rules.iter_mut().find(|r| {
            r.remaining > 0
                && r.verb.as_deref().is_none_or(|v| v == verb)
                && r.resource.as_deref().is_none_or(|x| x == resource)
        })?;
        rule.remaining -= 1;
        let status = rule.status;
        s.rules.retain(|r| r.remaining > 0);
        Some(status)
    }

    pub fn watch_killer(&self) -> watch::Receiver<u64> {
        self.kill_watches.subscribe()
    }
}
