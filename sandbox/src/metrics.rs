//! Request metrics, served at `/metrics` in the Prometheus text format.
//!
//! The names and labels are kube-apiserver's, so dashboards and queries
//! written for a cluster work here:
//!
//! * `apiserver_request_total{verb,resource,subresource,code}`: requests
//!   answered, by verb (`get`, `list`, `watch`, `create`, ...), resource
//!   plural, subresource (empty for none) and HTTP status code.
//! * `apiserver_request_duration_seconds{verb,resource,subresource}`: a
//!   histogram of the time to answer (for a watch: to start streaming),
//!   with kube-apiserver's buckets.
//!
//! Two more families say who did what, for an outside process (a
//! benchmark, Prometheus) counting writes:
//!
//! * `sandbox_client_requests_total{user_agent,verb,resource,subresource,code}`:
//!   the same count per client, by its User-Agent.
//! * `sandbox_store_writes_total{source}`: changes stored, made by the
//!   built-in controllers (`controllers`, which write in-process and never
//!   reach `apiserver_request_total`) or by requests (`requests`).
//!
//! Counts only grow; a reader takes differences between two scrapes.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

/// kube-apiserver's `apiserver_request_duration_seconds` buckets.
pub const BUCKETS: &[f64] = &[
    0.005, 0.025, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 1.25, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0,
    10.0, 15.0, 20.0, 30.0, 45.0, 60.0,
];

/// The labels of one request.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct RequestLabels {
    pub verb: String,
    pub resource: String,
    pub subresource: String,
}

#[derive(Debug, Default, Clone)]
struct Histogram {
    /// Observations at or below each bucket's bound (not cumulative yet).
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, secs: f64) {
        if self.counts.is_empty() {
            self.counts = vec![0; BUCKETS.len()];
        }
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            self.counts[i] += 1;
        }
        self.sum += secs;
        self.count += 1;
    }
}

#[derive(Debug, Default)]
struct Families {
    total: BTreeMap<(RequestLabels, u16), u64>,
    by_client: BTreeMap<(String, RequestLabels, u16), u64>,
    duration: BTreeMap<RequestLabels, Histogram>,
}

/// The API server's request metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    families: Mutex<Families>,
}

thread_local! {
    static ON_CONTROLLER_THREAD: Cell<bool> = const { Cell::new(false) };
}

/// Marks the calling thread as the built-in controllers' own, so the
/// store attributes its writes to them.
pub fn mark_controller_thread() {
    ON_CONTROLLER_THREAD.with(|c| c.set(true));
}

/// Whether the calling thread is the built-in controllers' (the store
/// counts its writes by this).
pub fn on_controller_thread() -> bool {
    ON_CONTROLLER_THREAD.with(Cell::get)
}

/// Changes stored, by who made them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreWrites {
    pub controllers: u64,
    pub requests: u64,
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Metrics {
    fn lock(&self) -> std::sync::MutexGuard<'_, Families> {
        // Each update is a few map insertions; a poisoned lock holds valid counts.
        self.families.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records one answered request.
    pub fn observe(&self, l: &RequestLabels, user_agent: &str, code: u16, took: Duration) {
        let mut f = self.lock();
        *f.total.entry((l.clone(), code)).or_default() += 1;
        *f.by_client
            .entry((user_agent.to_string(), l.clone(), code))
            .or_default() += 1;
        f.duration
            .entry(l.clone())
            .or_default()
            .observe(took.as_secs_f64());
    }

    /// Every family in the Prometheus text exposition format (0.0.4).
    pub fn render(&self, store: StoreWrites) -> String {
        let f = self.lock();
        let mut out = String::new();
        let labels = |l: &RequestLabels| {
            format!(
                "verb=\"{}\",resource=\"{}\",subresource=\"{}\"",
                escape(&l.verb),
                escape(&l.resource),
                escape(&l.subresource)
            )
        };
        // Writing to a String cannot fail.
        let _ = writeln!(
            out,
            "# HELP apiserver_request_total Counter of apiserver requests broken out for each verb, resource, subresource and HTTP response code.\n# TYPE apiserver_request_total counter"
        );
        for ((l, code), n) in &f.total {
            let _ = writeln!(
                out,
                "apiserver_request_total{{{},code=\"{code}\"}} {n}",
                labels(l)
            );
        }
        let _ = writeln!(
            out,
            "# HELP apiserver_request_duration_seconds Response latency distribution in seconds for each verb, resource and subresource.\n# TYPE apiserver_request_duration_seconds histogram"
        );
        for (l, h) in &f.duration {
            let mut cumulative = 0;
            for (b, n) in BUCKETS.iter().zip(&h.counts) {
                cumulative += n;
                let _ = writeln!(
                    out,
                    "apiserver_request_duration_seconds_bucket{{{},le=\"{b}\"}} {cumulative}",
                    labels(l)
                );
            }
            let _ = writeln!(
                out,
                "apiserver_request_duration_seconds_bucket{{{},le=\"+Inf\"}} {}",
                labels(l),
                h.count
            );
            let _ = writeln!(
                out,
                "apiserver_request_duration_seconds_sum{{{}}} {}",
                labels(l),
                h.sum
            );
            let _ = writeln!(
                out,
                "apiserver_request_duration_seconds_count{{{}}} {}",
                labels(l),
                h.count
            );
        }
        let _ = writeln!(
            out,
            "# HELP sandbox_client_requests_total Requests by client (User-Agent), verb, resource, subresource and HTTP response code.\n# TYPE sandbox_client_requests_total counter"
        );
        for ((agent, l, code), n) in &f.by_client {
            let _ = writeln!(
                out,
                "sandbox_client_requests_total{{user_agent=\"{}\",{},code=\"{code}\"}} {n}",
                escape(agent),
                labels(l)
            );
        }
        let _ = writeln!(
            out,
            "# HELP sandbox_store_writes_total Changes stored, by who made them: the built-in controllers or requests.\n# TYPE sandbox_store_writes_total counter"
        );
        let _ = writeln!(
            out,
            "sandbox_store_writes_total{{source=\"controllers\"}} {}",
            store.controllers
        );
        let _ = writeln!(
            out,
            "sandbox_store_writes_total{{source=\"requests\"}} {}",
            store.requests
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_counted_by_code_and_client_and_timed_in_a_bucket() {
        let m = Metrics::default();
        let l = RequestLabels {
            verb: "patch".into(),
            resource: "statefulsets".into(),
            subresource: "status".into(),
        };
        m.observe(&l, "level1/0.1", 200, Duration::from_millis(30));
        let text = m.render(StoreWrites::default());
        assert!(text.contains(
            "apiserver_request_total{verb=\"patch\",resource=\"statefulsets\",subresource=\"status\",code=\"200\"} 1"
        ));
        assert!(text.contains("le=\"0.025\"} 0"));
        assert!(text.contains("le=\"0.05\"} 1"));
        assert!(
            text.contains("sandbox_client_requests_total{user_agent=\"level1/0.1\",verb=\"patch\"")
        );
    }
}
