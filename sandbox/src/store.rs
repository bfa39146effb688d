//! The object store: what etcd is to a real cluster.
//!
//! Objects are JSON documents keyed by resource, namespace and name. Every
//! write takes the next value of one global counter as its
//! `metadata.resourceVersion`, so resourceVersions order all changes in the
//! cluster, as etcd's revision does. Each write is also appended to a bounded
//! history and broadcast; watches replay the history from the
//! resourceVersion they start at and then follow the broadcast. A watch that
//! starts before the oldest remembered change gets `410 Gone` and must list
//! again: the real server's watch cache has the same window.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::{Value, json};
use tokio::sync::broadcast;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One change to one object.
#[derive(Debug)]
pub struct Event {
    pub kind: EventType,
    /// The resource's storage key (`group/plural`).
    pub key: String,
    pub namespace: String,
    pub name: String,
    pub rv: u64,
    /// The object after the change (for deletes: as it was, with the
    /// deletion's resourceVersion).
    pub object: Value,
    /// The object before the change, so watches with selectors can tell when
    /// an object leaves or enters their view.
    pub old: Option<Value>,
}

/// Why a store write was refused; the API layer turns it into a Status.
#[derive(Debug, PartialEq, Eq)]
pub enum StoreError {
    NotFound,
    AlreadyExists,
    /// The stored resourceVersion differs from the expected one.
    Conflict,
}

/// Changes to replay, and the subscription that continues after them.
pub type Replay = (Vec<Arc<Event>>, broadcast::Receiver<Arc<Event>>);

/// `(namespace, name)`; cluster-scoped objects have an empty namespace.
pub type ObjectKey = (String, String);

struct Inner {
    rv: u64,
    objects: HashMap<String, BTreeMap<ObjectKey, Value>>,
    history: VecDeque<Arc<Event>>,
    capacity: usize,
    /// Every change with a resourceVersion above this one is in `history`.
    oldest: u64,
}

pub struct Store {
    inner: Mutex<Inner>,
    tx: broadcast::Sender<Arc<Event>>,
}

/// A list answer: matching objects, the revision they were read at, and
/// where to continue if a limit cut the list short.
pub struct ListPage {
    pub items: Vec<Value>,
    pub rv: u64,
    pub next: Option<ObjectKey>,
}

fn set_rv(obj: &mut Value, rv: u64) {
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("resourceVersion".into(), json!(rv.to_string()));
    }
}

/// The resourceVersion stored in an object, as a number.
pub fn rv_of(obj: &Value) -> u64 {
    obj.pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

impl Store {
    pub fn new(history: usize) -> Store {
        // The broadcast buffer only needs to absorb bursts between a
        // subscriber's polls; a lagging subscriber is told to start over.
        let (tx, _) = broadcast::channel(history.max(1024));
        Store {
            inner: Mutex::new(Inner {
                rv: 1,
                objects: HashMap::new(),
                history: VecDeque::new(),
                capacity: history.max(1),
                oldest: 1,
            }),
            tx,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every mutation below completes before it can panic (serde_json
        // inserts do not fail), so a poisoned store is still consistent.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn current_rv(&self) -> u64 {
        self.lock().rv
    }

    pub fn get(&self, key: &str, ns: &str, name: &str) -> Option<Value> {
        self.lock()
            .objects
            .get(key)
            .and_then(|m| m.get(&(ns.to_string(), name.to_string())))
            .cloned()
    }

    /// Objects of one resource in key order, optionally in one namespace,
    /// starting after `after`, keeping those `keep` accepts, at most `limit`.
    pub fn list(
        &self,
        key: &str,
        ns: Option<&str>,
        after: Option<&ObjectKey>,
        limit: Option<usize>,
        keep: &dyn Fn(&Value) -> bool,
    ) -> ListPage {
        let inner = self.lock();
        let mut items = vec![];
        let mut next = None;
        if let Some(map) = inner.objects.get(key) {
            let start = match (after, ns) {
                (Some(k), _) => std::ops::Bound::Excluded(k.clone()),
                (None, Some(ns)) => std::ops::Bound::Included((ns.to_string(), String::new())),
                (None, None) => std::ops::Bound::Unbounded,
            };
            for ((ons, oname), obj) in map.range((start, std::ops::Bound::Unbounded)) {
                if let Some(ns) = ns
                    && ons != ns
                {
                    if ons.as_str() > ns {
                        break;
                    }
                    continue;
                }
                if !keep(obj) {
                    continue;
                }
                if let Some(l) = limit
                    && items.len() == l
                {
                    next = Some((ons.clone(), oname.clone()));
                    break;
                }
                items.push(obj.clone());
            }
        }
        // The continue key is the last returned item; the next page starts after it.
        let next = next.and_then(|_| {
            items.last().map(|o| {
                let meta = &o["metadata"];
                (
                    meta["namespace"].as_str().unwrap_or_default().to_string(),
                    meta["name"].as_str().unwrap_or_default().to_string(),
                )
            })
        });
        ListPage {
            items,
            rv: inner.rv,
            next,
        }
    }

    /// Every object of every resource (the garbage collector's view).
    pub fn snapshot(&self) -> Vec<(String, Value)> {
        let inner = self.lock();
        inner
            .objects
            .iter()
            .flat_map(|(k, m)| m.values().map(move |v| (k.clone(), v.clone())))
            .collect()
    }

    fn record(&self, inner: &mut Inner, event: Event) {
        let event = Arc::new(event);
        inner.history.push_back(event.clone());
        while inner.history.len() > inner.capacity {
            if let Some(e) = inner.history.pop_front() {
                inner.oldest = e.rv;
            }
        }
        // No receivers is normal (nobody watching yet).
        let _ = self.tx.send(event);
    }

    pub fn create(
        &self,
        key: &str,
        ns: &str,
        name: &str,
        mut obj: Value,
    ) -> Result<Value, StoreError> {
        let mut inner = self.lock();
        let okey = (ns.to_string(), name.to_string());
        if inner
            .objects
            .get(key)
            .is_some_and(|m| m.contains_key(&okey))
        {
            return Err(StoreError::AlreadyExists);
        }
        inner.rv += 1;
        let rv = inner.rv;
        set_rv(&mut obj, rv);
        inner
            .objects
            .entry(key.to_string())
            .or_default()
            .insert(okey, obj.clone());
        let ev = Event {
            kind: EventType::Added,
            key: key.into(),
            namespace: ns.into(),
            name: name.into(),
            rv,
            object: obj.clone(),
            old: None,
        };
        self.record(&mut inner, ev);
        Ok(obj)
    }

    /// Compare-and-swap: replaces the object if its stored resourceVersion
    /// is still `expected_rv`.
    pub fn update(
        &self,
        key: &str,
        ns: &str,
        name: &str,
        mut obj: Value,
        expected_rv: u64,
    ) -> Result<Value, StoreError> {
        let mut inner = self.lock();
        let okey = (ns.to_string(), name.to_string());
        let old = match inner.objects.get(key).and_then(|m| m.get(&okey)) {
            None => return Err(StoreError::NotFound),
            Some(old) if rv_of(old) != expected_rv => return Err(StoreError::Conflict),
            Some(old) => old.clone(),
        };
        inner.rv += 1;
        let rv = inner.rv;
        set_rv(&mut obj, rv);
        inner
            .objects
            .entry(key.to_string())
            .or_default()
            .insert(okey, obj.clone());
        let ev = Event {
            kind: EventType::Modified,
            key: key.into(),
            namespace: ns.into(),
            name: name.into(),
            rv,
            object: obj.clone(),
            old: Some(old),
        };
        self.record(&mut inner, ev);
        Ok(obj)
    }

    /// Removes an object; `expected_rv` guards against racing writers.
    pub fn delete(
        &self,
        key: &str,
        ns: &str,
        name: &str,
        expected_rv: Option<u64>,
    ) -> Result<Value, StoreError> {
        let mut inner = self.lock();
        let okey = (ns.to_string(), name.to_string());
        let Some(map) = inner.objects.get_mut(key) else {
            return Err(StoreError::NotFound);
        };
        match map.get(&okey) {
            None => return Err(StoreError::NotFound),
            Some(old) if expected_rv.is_some_and(|rv| rv != rv_of(old)) => {
                return Err(StoreError::Conflict);
            }
            Some(_) => {}
        }
        let Some(mut obj) = map.remove(&okey) else {
            return Err(StoreError::NotFound);
        };
        inner.rv += 1;
        let rv = inner.rv;
        let old = obj.clone();
        set_rv(&mut obj, rv);
        let ev = Event {
            kind: EventType::Deleted,
            key: key.into(),
            namespace: ns.into(),
            name: name.into(),
            rv,
            object: obj.clone(),
            old: Some(old),
        };
        self.record(&mut inner, ev);
        Ok(obj)
    }

    /// Replays changes after `rv` and subscribes to later ones, atomically,
    /// so no change falls between the two. `Err(oldest)` when `rv` is older
    /// than the history window.
    pub fn watch_from(&self, rv: u64) -> Result<Replay, u64> {
        let inner = self.lock();
        if rv < inner.oldest {
            return Err(inner.oldest);
        }
        let replay = inner
            .history
            .iter()
            .filter(|e| e.rv > rv)
            .cloned()
            .collect();
        Ok((replay, self.tx.subscribe()))
    }

    /// A snapshot of one resource plus a subscription starting right after it.
    pub fn list_and_watch(
        &self,
        key: &str,
        ns: Option<&str>,
    ) -> (Vec<Value>, u64, broadcast::Receiver<Arc<Event>>) {
        let inner = self.lock();
        let items = inner
            .objects
            .get(key)
            .map(|m| {
                m.iter()
                    .filter(|((ons, _), _)| ns.is_none_or(|ns| ns == ons))
                    .map(|(_, v)| v.clone())
                    .collect()
            })
            .unwrap_or_default();
        (items, inner.rv, self.tx.subscribe())
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.tx.subscribe()
    }

    /// Forgets the whole history, so every resourceVersion handed out so far
    /// is too old to watch from (a fault tests inject to exercise re-listing).
    pub fn expire_history(&self) {
        let mut inner = self.lock();
        inner.rv += 1;
        inner.oldest = inner.rv;
        inner.history.clear();
    }

    /// How many changes back a watch can start (the oldest valid revision).
    pub fn oldest_rv(&self) -> u64 {
        self.lock().oldest
    }
}
