//! Watches: a long-lived response streaming one JSON event per line.
//!
//! `GET ...?watch=true&resourceVersion=N` sends every change after revision
//! `N` as `{"type":"ADDED"|"MODIFIED"|"DELETED","object":...}`. Without a
//! resourceVersion (or with `0`), the watch first sends the current objects
//! as synthetic `ADDED` events. Selectors apply to both the old and new state
//! of an object, so an object that stops matching arrives as `DELETED`.
//! `allowWatchBookmarks=true` adds periodic `BOOKMARK` events carrying only
//! a resourceVersion, letting a client resume without replaying. A
//! resourceVersion older than the history window answers with an `ERROR`
//! event holding a `410 Expired` Status, after which clients list again.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc, watch};

use crate::cluster::Cluster;
use crate::error::{Error, Result};
use crate::printers::Render;
use crate::registry::ResourceType;
use crate::selector::{FieldSelector, LabelSelector};
use crate::store::{Event, EventType};

/// The query parameters of a watch request.
#[derive(Debug, Clone, Default)]
pub struct WatchParams {
    pub resource_version: Option<String>,
    pub labels: LabelSelector,
    pub fields: FieldSelector,
    pub bookmarks: bool,
    pub timeout: Option<Duration>,
    pub send_initial_events: bool,
    /// Objects, or Tables / PartialObjectMetadata, as the Accept header asked.
    pub render: Render,
}

fn line(kind: &str, object: &Value) -> Bytes {
    let mut s = serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap_or_default();
    s.push(b'\n');
    Bytes::from(s)
}

/// A stored object as this watcher receives it: in the resource's view,
/// labelled with the watched version, rendered as asked.
fn present(rt: &ResourceType, render: &Render, obj: Value) -> Value {
    let mut obj = rt.to_view(obj);
    if let Some(o) = obj.as_object_mut() {
        o.insert("apiVersion".into(), json!(rt.api_version()));
        o.insert("kind".into(), json!(rt.kind));
    }
    render.object(rt, obj)
}

struct Filter {
    key: String,
    namespace: Option<String>,
    labels: LabelSelector,
    fields: FieldSelector,
}

impl Filter {
    fn matches(&self, obj: &Value) -> bool {
        self.labels.matches(obj) && self.fields.matches(obj)
    }

    /// The event this watcher sees for a store change, if any.
    fn translate<'e>(&self, e: &'e Event) -> Option<(&'static str, &'e Value)> {
        if e.key != self.key || self.namespace.as_ref().is_some_and(|ns| *ns != e.namespace) {
            return None;
        }
        let now = self.matches(&e.object);
        let before = e.old.as_ref().is_some_and(|o| self.matches(o));
        match e.kind {
            EventType::Added => now.then_some("ADDED"),
            EventType::Deleted => before.then_some("DELETED"),
            EventType::Modified => match (before, now) {
                (true, true) => Some("MODIFIED"),
                (false, true) => Some("ADDED"),
                (true, false) => Some("DELETED"),
                (false, false) => None,
            },
        }
        .map(|t| (t, &e.object))
    }
}

/// The watch line for a change as this watcher sees it. Plain objects
/// look the same to every watcher of a version, so the line is encoded
/// once per event and shared; Tables and metadata are rendered per watcher.
fn event_line(rt: &ResourceType, render: &Render, e: &Event, t: &str, obj: &Value) -> Bytes {
    let encode = || line(t, &present(rt, render, obj.clone()));
    match render {
        Render::Object => e.encoded(&format!("{t} {}", rt.api_version()), encode),
        _ => encode(),
    }
}

/// Starts a watch; events arrive on the returned channel until the client
/// goes away, the timeout passes or a test drops all watches.
pub fn start(
    cluster: Arc<Cluster>,
    rt: Arc<ResourceType>,
    namespace: Option<String>,
    p: WatchParams,
    mut kill: watch::Receiver<u64>,
    bookmark_interval: Duration,
) -> Result<mpsc::Receiver<Bytes>> {
    let (tx, out) = mpsc::channel::<Bytes>(256);
    let filter = Filter {
        key: rt.key(),
        namespace: namespace.clone(),
        labels: p.labels.clone(),
        fields: p.fields.clone(),
    };
    let from = p
        .resource_version
        .as_deref()
        .filter(|rv| !rv.is_empty() && *rv != "0" && !p.send_initial_events);
    let (initial, start_rv, mut rx): (Vec<Bytes>, u64, broadcast::Receiver<Arc<Event>>) = match from
    {
        None => {
            let (items, rv, rx) = cluster
                .store
                .list_and_watch(&rt.key(), namespace.as_deref());
            let lines = items
                .into_iter()
                .filter(|o| filter.matches(o))
                .map(|o| line("ADDED", &present(&rt, &p.render, o)))
                .collect();
            (lines, rv, rx)
        }
        Some(rv) => {
            let n: u64 = rv.parse().map_err(|_| {
                Error::bad_request(format!("invalid resource version {rv:?}: must be a number"))
            })?;
            match cluster.store.watch_from(n) {
                Ok((replay, rx)) => {
                    let lines = replay
                        .iter()
                        .filter_map(|e| {
                            let (t, o) = filter.translate(e)?;
                            Some(event_line(&rt, &p.render, e, t, o))
                        })
                        .collect();
                    let last = replay.last().map(|e| e.rv).unwrap_or(n);
                    (lines, last.max(n), rx)
                }
                Err(oldest) => {
                    let status =
                        Error::expired(format!("too old resource version: {n} ({oldest})"))
                            .status()
                            .to_json();
                    let _ = tx.try_send(line("ERROR", &status));
                    return Ok(out);
                }
            }
        }
    };
    let initial_end_bookmark = p.send_initial_events && p.bookmarks;
    tokio::spawn(async move {
        let mut last_rv = start_rv;
        for l in initial {
            if tx.send(l).await.is_err() {
                return;
            }
        }
        if initial_end_bookmark {
            let bm = json!({"kind": rt.kind, "apiVersion": rt.api_version(), "metadata": {"resourceVersion": last_rv.to_string(), "annotations": {"k8s.io/initial-events-end": "true"}}});
            if tx.send(line("BOOKMARK", &bm)).await.is_err() {
                return;
            }
        }
        let deadline = p.timeout.map(|t| tokio::time::Instant::now() + t);
        let mut ticker = tokio::time::interval(bookmark_interval);
        ticker.tick().await;
        loop {
            let timeout = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                ev = rx.recv() => match ev {
                    Ok(e) => {
                        if e.rv <= last_rv { continue; }
                        last_rv = e.rv;
                        let out = filter.translate(&e).map(|(t, o)| event_line(&rt, &p.render, &e, t, o));
                        if let Some(l) = out
                            && tx.send(l).await.is_err()
                        {
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        // This watcher fell behind the broadcast buffer; like a
                        // slow watcher of the real watch cache it is closed with
                        // 410 and must list again.
                        let status = Error::expired(format!("too old resource version: {last_rv}")).status().to_json();
                        let _ = tx.send(line("ERROR", &status)).await;
                        return;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                _ = ticker.tick(), if p.bookmarks => {
                    let bm = json!({"kind": rt.kind, "apiVersion": rt.api_version(), "metadata": {"resourceVersion": last_rv.to_string()}});
                    if tx.send(line("BOOKMARK", &bm)).await.is_err() { return; }
                }
                _ = timeout => return,
                _ = kill.changed() => return,
                _ = tx.closed() => return,
            }
        }
    });
    Ok(out)
}
