//! The work queue every built-in controller runs on, shaped like
//! client-go's `workqueue` and controller-runtime's loop.
//!
//! A controller turns store events into the *keys* of the objects they
//! affect (a pod's event names its StatefulSet, a Service's event names
//! the Service). Keys wait in a deduplicating queue: a key added ten times
//! before it is processed is reconciled once. A reconcile handles one key
//! from the indexed store and says what comes next: nothing, a run again
//! after a delay (`AddAfter`, for state that changes with time alone), or a
//! retry with a per-key exponential back-off because a write failed
//! (`AddRateLimited`). A periodic resync enqueues every key, so anything an
//! event missed is still repaired: the loop stays level-triggered.
//!
//! Work is done in bounded slices: after [`SLICE`] keys the loop yields, so
//! controllers sharing a thread take turns and a burst of events never
//! monopolises it. Controllers run on their own thread (see
//! [`super::spawn_all`]), apart from the runtime that serves requests.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, broadcast, watch};
use tokio::time::Instant;

use crate::cluster::Cluster;
use crate::store::Event;

/// Keys reconciled before the loop yields to other tasks.
pub const SLICE: usize = 32;
/// The first retry's delay; it doubles per failure up to [`MAX_BACKOFF`].
const BASE_BACKOFF: Duration = Duration::from_millis(5);
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// What a reconcile of one key asks for next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Converged (or nothing to do): forget the key's failures.
    Done,
    /// Reconcile again after this delay even if nothing changes.
    After(Duration),
    /// A write failed: retry with the key's growing back-off.
    Retry,
}

/// One built-in controller.
pub trait Controller: Send + Sync + 'static {
    type Key: Hash + Eq + Clone + Ord + Send + std::fmt::Debug;
    /// The controller's name, for logs.
    fn name(&self) -> &'static str;
    /// The keys a store change affects (often none).
    fn keys(&self, c: &Cluster, e: &Event, out: &mut Vec<Self::Key>);
    /// Every key, for the periodic resync.
    fn all(&self, c: &Cluster) -> Vec<Self::Key>;
    /// Brings one object to its desired state.
    fn reconcile(&self, c: &Cluster, key: &Self::Key) -> Outcome;
    /// Keys to look at when an outside source (the pod runtime) says
    /// something changed; `None` means every key.
    fn notified(&self, _c: &Cluster) -> Option<Vec<Self::Key>> {
        None
    }
}

/// A deduplicating queue with delayed adds and per-key back-off.
pub struct WorkQueue<K> {
    ready: VecDeque<K>,
    queued: HashSet<K>,
    delayed: BTreeMap<(Instant, u64), K>,
    seq: u64,
    failures: HashMap<K, u32>,
}

impl<K: Hash + Eq + Clone> Default for WorkQueue<K> {
    fn default() -> Self {
        WorkQueue {
            ready: VecDeque::new(),
            queued: HashSet::new(),
            delayed: BTreeMap::new(),
            seq: 0,
            failures: HashMap::new(),
        }
    }
}

impl<K: Hash + Eq + Clone> WorkQueue<K> {
    /// Adds a key unless it is already waiting.
    pub fn add(&mut self, k: K) {
        if self.queued.insert(k.clone()) {
            self.ready.push_back(k);
        }
    }

    /// Adds a key once `d` has passed.
    pub fn add_after(&mut self, k: K, d: Duration) {
        if d.is_zero() {
            return self.add(k);
        }
        self.seq += 1;
        self.delayed.insert((Instant::now() + d, self.seq), k);
    }

    /// Adds a key after its back-off, which doubles with each failure.
    pub fn add_rate_limited(&mut self, k: K) {
        let n = self.failures.entry(k.clone()).or_default();
        let d = BASE_BACKOFF
            .saturating_mul(1u32 << (*n).min(16))
            .min(MAX_BACKOFF);
        *n += 1;
        self.add_after(k, d);
    }

    /// Forgets a key's failures (its back-off starts over).
    pub fn forget(&mut self, k: &K) {
        self.failures.remove(k);
    }

    /// Moves delayed keys that are due to the ready queue.
    pub fn promote(&mut self, now: Instant) {
        while let Some(entry) = self.delayed.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let k = entry.remove();
            self.add(k);
        }
    }

    /// The next key to reconcile.
    pub fn pop(&mut self) -> Option<K> {
        let k = self.ready.pop_front()?;
        self.queued.remove(&k);
        Some(k)
    }

    /// When the earliest delayed key falls due.
    pub fn next_due(&self) -> Option<Instant> {
        self.delayed.first_key_value().map(|((at, _), _)| *at)
    }

    pub fn len(&self) -> usize {
        self.ready.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ready.is_empty()
    }
}

/// Runs one controller until shutdown: events and notifications become
/// keys, keys are reconciled one at a time in bounded slices.
pub async fn run<C: Controller>(
    cluster: Arc<Cluster>,
    ctl: C,
    mut shutdown: watch::Receiver<bool>,
    notify: Option<Arc<Notify>>,
    resync: Duration,
) {
    let mut rx = cluster.store.subscribe();
    let mut q: WorkQueue<C::Key> = WorkQueue::default();
    for k in ctl.all(&cluster) {
        q.add(k);
    }
    let mut tick = tokio::time::interval(resync);
    tick.tick().await;
    let mut keys = vec![];
    loop {
        if q.is_empty() {
            let notified = async {
                match &notify {
                    Some(n) => n.notified().await,
                    None => std::future::pending().await,
                }
            };
            let due = async {
                match q.next_due() {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                ev = rx.recv() => match ev {
                    Ok(e) => ctl.keys(&cluster, &e, &mut keys),
                    Err(broadcast::error::RecvError::Lagged(_)) => keys.extend(ctl.all(&cluster)),
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                _ = notified => match ctl.notified(&cluster) {
                    Some(ks) => keys.extend(ks),
                    None => keys.extend(ctl.all(&cluster)),
                },
                _ = due => {}
                _ = tick.tick() => keys.extend(ctl.all(&cluster)),
                _ = shutdown.changed() => return,
            }
        }
        if *shutdown.borrow() {
            return;
        }
        // Everything that arrived meanwhile joins the queue (deduplicated).
        loop {
            match rx.try_recv() {
                Ok(e) => ctl.keys(&cluster, &e, &mut keys),
                Err(broadcast::error::TryRecvError::Lagged(_)) => keys.extend(ctl.all(&cluster)),
                Err(broadcast::error::TryRecvError::Closed) => return,
                Err(broadcast::error::TryRecvError::Empty) => break,
            }
        }
        for k in keys.drain(..) {
            q.add(k);
        }
        q.promote(Instant::now());
        for _ in 0..SLICE {
            let Some(k) = q.pop() else { break };
            match ctl.reconcile(&cluster, &k) {
                Outcome::Done => q.forget(&k),
                Outcome::After(d) => {
                    q.forget(&k);
                    q.add_after(k, d);
                }
                Outcome::Retry => {
                    tracing::debug!(controller = ctl.name(), key = ?k, "reconcile failed; retrying");
                    q.add_rate_limited(k);
                }
            }
        }
        tokio::task::yield_now().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_key_added_twice_before_it_is_processed_is_reconciled_once() {
        let mut q = WorkQueue::default();
        q.add("a");
        q.add("b");
        q.add("a");
        assert_eq!(q.pop(), Some("a"));
        assert_eq!(q.pop(), Some("b"));
        assert_eq!(q.pop(), None);
    }

    #[tokio::test]
    async fn a_delayed_key_becomes_ready_when_due() {
        let mut q = WorkQueue::default();
        q.add_after("a", Duration::from_millis(20));
        q.promote(Instant::now());
        assert!(q.is_empty());
        q.promote(Instant::now() + Duration::from_millis(25));
        assert_eq!(q.pop(), Some("a"));
    }

    #[tokio::test]
    async fn retries_back_off_exponentially_until_forgotten() {
        let mut q = WorkQueue::default();
        let start = Instant::now();
        for _ in 0..3 {
            q.add_rate_limited("a");
        }
        let last = q.delayed.last_key_value().map(|((at, _), _)| *at);
        assert!(last.is_some_and(|at| at >= start + BASE_BACKOFF * 4));
        q.forget(&"a");
        assert!(!q.failures.contains_key("a"));
    }
}
