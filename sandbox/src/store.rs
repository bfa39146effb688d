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
//!
//! The store also keeps the indexes the built-in controllers read from, as
//! an informer's indexers do: objects by uid, dependents by owner uid,
//! objects by label pair, and Services (any object with a flat
//! `spec.selector` map) by selector pair. They are updated with every
//! write, so a controller reconciling one object reads only what relates
//! to it instead of scanning a whole resource.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
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
    /// The event as watch lines, encoded once for every watcher that sees
    /// it the same way (by event type and API version), not once each.
    pub encoded: Mutex<Vec<(String, axum::body::Bytes)>>,
}

impl Event {
    pub fn new(
        kind: EventType,
        key: &str,
        namespace: &str,
        name: &str,
        rv: u64,
        object: Value,
        old: Option<Value>,
    ) -> Event {
        Event {
            kind,
            key: key.into(),
            namespace: namespace.into(),
            name: name.into(),
            rv,
            object,
            old,
            encoded: Mutex::default(),
        }
    }

    /// The line `encode` makes for watchers that see this event as `how`,
    /// encoded by the first of them and shared with the rest.
    pub fn encoded(
        &self,
        how: &str,
        encode: impl FnOnce() -> axum::body::Bytes,
    ) -> axum::body::Bytes {
        // A poisoned cache still holds whole lines.
        let mut cache = self.encoded.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, line)) = cache.iter().find(|(h, _)| h == how) {
            return line.clone();
        }
        let line = encode();
        cache.push((how.to_string(), line.clone()));
        line
    }
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
    idx: Indexes,
}

/// An object's place: its resource's storage key and `(namespace, name)`.
pub type ObjectRef = (String, ObjectKey);

/// `(resource key, namespace, label key, label value)`.
type PairKey = (String, String, String, String);

/// Secondary indexes, kept in step with `objects` by every write.
#[derive(Default)]
struct Indexes {
    by_uid: HashMap<String, ObjectRef>,
    by_owner: HashMap<String, BTreeSet<ObjectRef>>,
    by_label: HashMap<PairKey, BTreeSet<String>>,
    by_selector: HashMap<PairKey, BTreeSet<String>>,
}

fn str_pairs<'a>(obj: &'a Value, pointer: &str) -> impl Iterator<Item = (&'a str, &'a str)> {
    obj.pointer(pointer)
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| v.as_str().map(|v| (k.as_str(), v)))
}

fn owner_uids(obj: &Value) -> impl Iterator<Item = &str> {
    obj.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|r| r["uid"].as_str())
}

impl Indexes {
    /// Moves `(key, okey)` from the entries `old` had to those `new` has.
    fn update(&mut self, key: &str, okey: &ObjectKey, old: Option<&Value>, new: Option<&Value>) {
        let uid = |o: Option<&Value>| {
            o.and_then(|o| o.pointer("/metadata/uid"))
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        let pair = |k: &str, v: &str| {
            (
                key.to_string(),
                okey.0.clone(),
                k.to_string(),
                v.to_string(),
            )
        };
        let oref = || (key.to_string(), okey.clone());
        if let Some(o) = old {
            if let Some(u) = uid(Some(o)) {
                self.by_uid.remove(&u);
            }
            for u in owner_uids(o) {
                if let Some(set) = self.by_owner.get_mut(u) {
                    set.remove(&oref());
                    if set.is_empty() {
                        self.by_owner.remove(u);
                    }
                }
            }
            for (index, pointer) in [
                (&mut self.by_label, "/metadata/labels"),
                (&mut self.by_selector, "/spec/selector"),
            ] {
                for (k, v) in str_pairs(o, pointer) {
                    let p = pair(k, v);
                    if let Some(set) = index.get_mut(&p) {
                        set.remove(&okey.1);
                        if set.is_empty() {
                            index.remove(&p);
                        }
                    }
                }
            }
        }
        if let Some(n) = new {
            if let Some(u) = uid(Some(n)) {
                self.by_uid.insert(u, oref());
            }
            for u in owner_uids(n) {
                self.by_owner
                    .entry(u.to_string())
                    .or_default()
                    .insert(oref());
            }
            for (k, v) in str_pairs(n, "/metadata/labels") {
                self.by_label
                    .entry(pair(k, v))
                    .or_default()
                    .insert(okey.1.clone());
            }
            for (k, v) in str_pairs(n, "/spec/selector") {
                self.by_selector
                    .entry(pair(k, v))
                    .or_default()
                    .insert(okey.1.clone());
            }
        }
    }
}

pub struct Store {
    inner: Mutex<Inner>,
    tx: broadcast::Sender<Arc<Event>>,
    /// Changes made by the built-in controllers' thread, and by others.
    writes: [AtomicU64; 2],
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
                idx: Indexes::default(),
            }),
            tx,
            writes: Default::default(),
        }
    }

    /// How many changes were stored, by the built-in controllers and by
    /// requests.
    pub fn writes(&self) -> crate::metrics::StoreWrites {
        crate::metrics::StoreWrites {
            controllers: self.writes[0].load(Ordering::Relaxed),
            requests: self.writes[1].load(Ordering::Relaxed),
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

    /// Whether the object exists, without copying it.
    pub fn contains(&self, key: &str, ns: &str, name: &str) -> bool {
        self.lock()
            .objects
            .get(key)
            .is_some_and(|m| m.contains_key(&(ns.to_string(), name.to_string())))
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
        self.list_labelled(key, ns, &[], after, limit, keep)
    }

    /// [`Self::list`] of the objects whose labels include every pair of
    /// `labels` (`keep` still sees each candidate). In one namespace with
    /// at least one pair, the candidates come from the label index (the
    /// pair with the fewest objects), in the same order as a scan, so a
    /// selective list costs what it returns, not what the namespace holds.
    pub fn list_labelled(
        &self,
        key: &str,
        ns: Option<&str>,
        labels: &[(&str, &str)],
        after: Option<&ObjectKey>,
        limit: Option<usize>,
        keep: &dyn Fn(&Value) -> bool,
    ) -> ListPage {
        let inner = self.lock();
        let mut items = vec![];
        let mut next = None;
        if let (Some(ns), false) = (ns, labels.is_empty()) {
            let map = inner.objects.get(key);
            let posting = |(k, v): &(&str, &str)| {
                inner.idx.by_label.get(&(
                    key.to_string(),
                    ns.to_string(),
                    k.to_string(),
                    v.to_string(),
                ))
            };
            // A pair no object carries: nothing matches.
            let smallest = labels
                .iter()
                .map(posting)
                .min_by_key(|p| p.map_or(0, BTreeSet::len))
                .flatten();
            let start = match after {
                Some((ans, aname)) if ans.as_str() == ns => {
                    std::ops::Bound::Excluded(aname.clone())
                }
                Some((ans, _)) if ans.as_str() > ns => {
                    return ListPage {
                        items,
                        rv: inner.rv,
                        next,
                    };
                }
                _ => std::ops::Bound::Unbounded,
            };
            let names = smallest.into_iter().flat_map(|set| {
                set.range::<String, _>((start.clone(), std::ops::Bound::Unbounded))
            });
            for name in names {
                let Some(obj) = map.and_then(|m| m.get(&(ns.to_string(), name.clone()))) else {
                    continue;
                };
                if !keep(obj) {
                    continue;
                }
                if let Some(l) = limit
                    && items.len() == l
                {
                    next = Some((ns.to_string(), name.clone()));
                    break;
                }
                items.push(obj.clone());
            }
        } else if let Some(map) = inner.objects.get(key) {
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

    /// The names of one resource's objects (in one namespace, or all),
    /// without copying the objects: what a controller's resync enqueues.
    pub fn keys(&self, key: &str, ns: Option<&str>) -> Vec<ObjectKey> {
        let inner = self.lock();
        let Some(map) = inner.objects.get(key) else {
            return vec![];
        };
        match ns {
            Some(ns) => map
                .range((ns.to_string(), String::new())..)
                .take_while(|((ons, _), _)| ons == ns)
                .map(|(k, _)| k.clone())
                .collect(),
            None => map.keys().cloned().collect(),
        }
    }

    /// The object with this uid, and its resource's key.
    pub fn get_by_uid(&self, uid: &str) -> Option<(String, Value)> {
        let inner = self.lock();
        let (key, okey) = inner.idx.by_uid.get(uid)?;
        let obj = inner.objects.get(key)?.get(okey)?.clone();
        Some((key.clone(), obj))
    }

    /// What `read` makes of the object with this uid and its resource's
    /// key, read in place: a controller that needs a few fields of an
    /// object does not copy all of it.
    pub fn read_by_uid<R>(&self, uid: &str, read: impl FnOnce(&str, &Value) -> R) -> Option<R> {
        let inner = self.lock();
        let (key, okey) = inner.idx.by_uid.get(uid)?;
        let obj = inner.objects.get(key)?.get(okey)?;
        Some(read(key, obj))
    }

    /// The uids of every object naming `owner_uid` in its ownerReferences,
    /// without copying the objects.
    pub fn dependent_uids(&self, owner_uid: &str) -> Vec<String> {
        let inner = self.lock();
        inner
            .idx
            .by_owner
            .get(owner_uid)
            .into_iter()
            .flatten()
            .filter_map(|(k, okey)| inner.objects.get(k)?.get(okey))
            .filter_map(|o| o.pointer("/metadata/uid").and_then(Value::as_str))
            .map(str::to_string)
            .collect()
    }

    /// Where the object with this uid is stored, without copying it.
    pub fn locate_uid(&self, uid: &str) -> Option<ObjectRef> {
        self.lock().idx.by_uid.get(uid).cloned()
    }

    /// Every object naming `owner_uid` in its ownerReferences, with its
    /// resource's key.
    pub fn dependents(&self, owner_uid: &str) -> Vec<(String, Value)> {
        let inner = self.lock();
        inner
            .idx
            .by_owner
            .get(owner_uid)
            .into_iter()
            .flatten()
            .filter_map(|(k, okey)| Some((k.clone(), inner.objects.get(k)?.get(okey)?.clone())))
            .collect()
    }

    /// Objects of one resource that name `owner_uid` in their ownerReferences.
    pub fn owned(&self, key: &str, owner_uid: &str) -> Vec<Value> {
        let inner = self.lock();
        inner
            .idx
            .by_owner
            .get(owner_uid)
            .into_iter()
            .flatten()
            .filter(|(k, _)| k == key)
            .filter_map(|(k, okey)| inner.objects.get(k)?.get(okey).cloned())
            .collect()
    }

    /// Objects of one resource in `ns` whose labels include every pair, read
    /// from the label index (the smallest posting list, then checked).
    pub fn labelled(&self, key: &str, ns: &str, pairs: &[(&str, &str)]) -> Vec<Value> {
        let inner = self.lock();
        let Some(map) = inner.objects.get(key) else {
            return vec![];
        };
        let posting = |(k, v): &(&str, &str)| {
            inner.idx.by_label.get(&(
                key.to_string(),
                ns.to_string(),
                k.to_string(),
                v.to_string(),
            ))
        };
        let Some(first) = pairs
            .iter()
            .map(posting)
            .min_by_key(|p| p.map_or(0, BTreeSet::len))
        else {
            return map
                .range((ns.to_string(), String::new())..)
                .take_while(|((ons, _), _)| ons == ns)
                .map(|(_, v)| v.clone())
                .collect();
        };
        first
            .into_iter()
            .flatten()
            .filter_map(|name| map.get(&(ns.to_string(), name.clone())))
            .filter(|o| {
                pairs.iter().all(|(k, v)| {
                    o.pointer("/metadata/labels")
                        .and_then(|l| l.get(*k))
                        .and_then(Value::as_str)
                        == Some(*v)
                })
            })
            .cloned()
            .collect()
    }

    /// Names of objects of one resource in `ns` whose flat `spec.selector`
    /// has at least one of these label pairs (candidates: the caller checks
    /// the whole selector).
    pub fn selecting<'a>(
        &self,
        key: &str,
        ns: &str,
        labels: impl Iterator<Item = (&'a str, &'a str)>,
    ) -> BTreeSet<String> {
        let inner = self.lock();
        labels
            .filter_map(|(k, v)| {
                inner.idx.by_selector.get(&(
                    key.to_string(),
                    ns.to_string(),
                    k.to_string(),
                    v.to_string(),
                ))
            })
            .flatten()
            .cloned()
            .collect()
    }

    /// The uids of one resource's objects.
    pub fn uids_of(&self, key: &str) -> Vec<String> {
        let inner = self.lock();
        inner
            .objects
            .get(key)
            .into_iter()
            .flat_map(|m| m.values())
            .filter_map(|o| o.pointer("/metadata/uid").and_then(Value::as_str))
            .map(str::to_string)
            .collect()
    }

    /// The uids of every object `keep` accepts, without copying objects.
    pub fn uids_where(&self, keep: &dyn Fn(&Value) -> bool) -> Vec<String> {
        let inner = self.lock();
        inner
            .objects
            .values()
            .flat_map(|m| m.values())
            .filter(|o| keep(o))
            .filter_map(|o| o.pointer("/metadata/uid").and_then(Value::as_str))
            .map(str::to_string)
            .collect()
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
        let source = usize::from(!crate::metrics::on_controller_thread());
        self.writes[source].fetch_add(1, Ordering::Relaxed);
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
        inner.idx.update(key, &okey, None, Some(&obj));
        inner
            .objects
            .entry(key.to_string())
            .or_default()
            .insert(okey, obj.clone());
        let ev = Event::new(EventType::Added, key, ns, name, rv, obj.clone(), None);
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
        inner.idx.update(key, &okey, Some(&old), Some(&obj));
        inner
            .objects
            .entry(key.to_string())
            .or_default()
            .insert(okey, obj.clone());
        let ev = Event::new(
            EventType::Modified,
            key,
            ns,
            name,
            rv,
            obj.clone(),
            Some(old),
        );
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
        inner.idx.update(key, &okey, Some(&obj), None);
        let old = obj.clone();
        set_rv(&mut obj, rv);
        let ev = Event::new(
            EventType::Deleted,
            key,
            ns,
            name,
            rv,
            obj.clone(),
            Some(old),
        );
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
