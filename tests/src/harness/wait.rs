//! Waiting for the cluster, and failing in a way that explains itself.
//!
//! One bounded wait, [`TestCluster::eventually`], polls a check until it
//! holds or its budget runs out. A check that hits an API error fails at
//! once: an error never reads as "not yet" or "absent". A wait that times
//! out fails with what it waited for, the status (phase, conditions) of
//! every `PostgresDB` in the test's namespace and the namespace's recent
//! Events, newest last, so the failure says what the operator saw and did.
//!
//! "Nothing happened" needs a synchronisation point, never a sleep:
//! [`TestCluster::settle`] returns once a reconcile that began after the
//! call has run to its end (seen in the sandbox's request counts), with the
//! writes the cluster received meanwhile.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::time::Duration;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::events::v1::Event;
use kube::Resource;
use kube::api::{ListParams, LogParams, Patch, PatchParams};
use serde::de::DeserializeOwned;
use shared::api::PostgresDB;

use super::TestCluster;

/// How often a wait looks again.
const POLL: Duration = Duration::from_millis(100);
/// How many of the namespace's Events a failure shows.
const RECENT_EVENTS: usize = 30;
/// How many lines of a restarted container's previous log a failure shows.
const LOG_LINES: i64 = 10;

/// Why a test step failed, as a sentence with what was seen. Its `Debug`
/// is its message, so a test returning `Result<(), Failed>` prints it
/// readably.
pub struct Failed(String);

impl Failed {
    /// A failure saying `message`.
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Failed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Failed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Failed {}

/// Turns an error into a [`Failed`] naming the action: `failed to {action}: {cause: cause}`.
pub trait OrFail<T> {
    /// The value, or a failure naming `action` and the error's chain.
    fn or_fail(self, action: impl fmt::Display) -> Result<T, Failed>;
}

impl<T, E: std::error::Error> OrFail<T> for Result<T, E> {
    fn or_fail(self, action: impl fmt::Display) -> Result<T, Failed> {
        self.map_err(|error| {
            Failed::new(format!(
                "failed to {action}: {}",
                shared::reconcile::error_chain(&error)
            ))
        })
    }
}

/// Fails with `message` unless `condition` holds.
pub fn ensure(condition: bool, message: impl FnOnce() -> String) -> Result<(), Failed> {
    if condition {
        Ok(())
    } else {
        Err(Failed::new(message()))
    }
}

/// Polls `check` until it returns `Ok(Some(value))`, within `budget`.
/// `Ok(None)` means "not yet"; an `Err` fails at once. On timeout the
/// failure names `what`. Where there is a cluster, use
/// [`TestCluster::eventually`], whose failure also shows the cluster's state.
pub async fn eventually<T, F, Fut>(budget: Duration, what: &str, mut check: F) -> Result<T, Failed>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>, Failed>>,
{
    let deadline = tokio::time::Instant::now() + budget;
    loop {
        if let Some(value) = check().await? {
            return Ok(value);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Failed::new(format!(
                "timed out after {budget:?} waiting until {what}"
            )));
        }
        tokio::time::sleep(POLL).await;
    }
}

impl TestCluster {
    /// [`eventually`], whose timeout also shows [`TestCluster::diagnosis`].
    pub async fn eventually<T, F, Fut>(
        &self,
        budget: Duration,
        what: &str,
        check: F,
    ) -> Result<T, Failed>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<Option<T>, Failed>>,
    {
        match eventually(budget, what, check).await {
            Err(failed) if failed.message().starts_with("timed out") => {
                Err(Failed::new(format!("{failed}\n{}", self.diagnosis().await)))
            }
            other => other,
        }
    }

    /// Waits, within the cluster's budget, until database `name` satisfies
    /// `check`, and returns it.
    pub async fn wait_for(
        &self,
        name: &str,
        what: &str,
        check: impl Fn(&PostgresDB) -> bool,
    ) -> Result<PostgresDB, Failed> {
        self.eventually(
            self.budget(),
            &format!("PostgresDB {name} is {what}"),
            || async { Ok(self.database(name).await?.filter(|db| check(db))) },
        )
        .await
    }

    /// Waits, within the cluster's budget, until the object of kind `K`
    /// named `name` satisfies `check` (given `None` while it is absent),
    /// and returns it as it then was.
    pub async fn wait_for_object<K>(
        &self,
        name: &str,
        what: &str,
        check: impl Fn(Option<&K>) -> bool,
    ) -> Result<Option<K>, Failed>
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
            + Clone
            + DeserializeOwned
            + fmt::Debug,
    {
        let api = self.api::<K>();
        let kind = K::kind(&());
        self.eventually(
            self.budget(),
            &format!("{kind} {name} is {what}"),
            || async {
                let object = api
                    .get_opt(name)
                    .await
                    .or_fail(format!("read {kind} {name}"))?;
                Ok(check(object.as_ref()).then_some(object))
            },
        )
        .await
    }

    /// Waits, within the cluster's budget, for an Event about `name`
    /// matching `check` (as `Type Reason: note`); Events are published
    /// after the writes they report.
    pub async fn wait_for_event(
        &self,
        name: &str,
        what: &str,
        check: impl Fn(&str) -> bool,
    ) -> Result<String, Failed> {
        self.eventually(
            self.budget(),
            &format!("an Event about {name}: {what}"),
            || async { Ok(self.events(name).await?.into_iter().find(|e| check(e))) },
        )
        .await
    }

    /// `Type Reason: note` of the Events about `name`, oldest first.
    pub async fn events(&self, name: &str) -> Result<Vec<String>, Failed> {
        Ok(self
            .event_list()
            .await?
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
            .map(describe_event)
            .collect())
    }

    /// The Events about `name`, oldest first.
    pub async fn event_objects(&self, name: &str) -> Result<Vec<Event>, Failed> {
        Ok(self
            .event_list()
            .await?
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
            .collect())
    }

    async fn event_list(&self) -> Result<Vec<Event>, Failed> {
        let mut events = self
            .api::<Event>()
            .list(&ListParams::default())
            .await
            .or_fail("list the namespace's Events")?
            .items;
        events.sort_by_key(|e| {
            e.event_time.as_ref().map(|t| t.0).or(e
                .metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0))
        });
        Ok(events)
    }

    /// What a failed wait shows: every `PostgresDB` in the namespace with
    /// its phase, generations and conditions, the previous logs of restarted
    /// containers, and the namespace's recent Events, newest last.
    pub async fn diagnosis(&self) -> String {
        let mut text = String::new();
        match self.api::<PostgresDB>().list(&ListParams::default()).await {
            Ok(list) if list.items.is_empty() => text += "no PostgresDB in the namespace\n",
            Ok(list) => {
                for db in list.items {
                    text += &describe_database(&db);
                }
            }
            Err(error) => text += &format!("cannot list PostgresDBs: {error}\n"),
        }
        text += &self.restarted_containers().await;
        if self.runs_operators_in_cluster() {
            text += &self.operator_log_diagnosis().await;
        }
        match self.event_list().await {
            Ok(events) => {
                let skipped = events.len().saturating_sub(RECENT_EVENTS);
                text += &format!(
                    "recent Events in {} (newest last{}):\n",
                    self.namespace(),
                    if skipped > 0 {
                        format!(", {skipped} older ones left out")
                    } else {
                        String::new()
                    }
                );
                for event in events.into_iter().skip(skipped) {
                    let about = event
                        .regarding
                        .as_ref()
                        .map(|r| {
                            format!(
                                "{}/{}",
                                r.kind.as_deref().unwrap_or_default(),
                                r.name.as_deref().unwrap_or_default()
                            )
                        })
                        .unwrap_or_default();
                    text += &format!("  {about}: {}\n", describe_event(event));
                }
            }
            Err(error) => text += &format!("{error}\n"),
        }
        text
    }

    /// The last lines their previous run logged, for containers that
    /// restarted: why a pod crash-loops.
    async fn restarted_containers(&self) -> String {
        let pods = self.api::<Pod>();
        let Ok(list) = pods.list(&ListParams::default()).await else {
            return String::new();
        };
        let mut text = String::new();
        for pod in list.items {
            let name = pod.metadata.name.clone().unwrap_or_default();
            let statuses = pod
                .status
                .and_then(|s| s.container_statuses)
                .unwrap_or_default();
            for container in statuses.iter().filter(|c| c.restart_count > 0) {
                let params = LogParams {
                    container: Some(container.name.clone()),
                    previous: true,
                    tail_lines: Some(LOG_LINES),
                    ..Default::default()
                };
                let log = pods
                    .logs(&name, &params)
                    .await
                    .unwrap_or_else(|e| e.to_string());
                text += &format!(
                    "pod {name} container {} restarted {} times; its previous run logged:\n{}\n",
                    container.name,
                    container.restart_count,
                    log.trim_end()
                );
            }
        }
        text
    }

    /// A synchronisation point for "nothing happened": touches the
    /// StatefulSet `name` (an annotation of the tests' own) so that the
    /// operator reconciles database `name`, waits until a reconcile began
    /// after this call, touches it again and waits until a later one
    /// began. The operator reconciles a database one reconcile at a time,
    /// so by then a reconcile that began after this call (after whatever
    /// the test did before it) has run to its end. Returns the writes
    /// the cluster received meanwhile, by (verb, resource), without the
    /// two touches. Needs the sandbox's request counts (`None` elsewhere),
    /// and the test must not GET the `PostgresDB` meanwhile: a reconcile
    /// begins with one, which is how the count sees it (the harness reads
    /// databases by listing them).
    pub async fn settle(&self, name: &str) -> Result<Option<Writes>, Failed> {
        let Some(sandbox) = self.sandbox_handle() else {
            return Ok(None);
        };
        let counters = sandbox.counters();
        let before = counters.snapshot();
        for touch in 1..=2 {
            // Counted before the touch: the reconcile it starts may begin
            // (and be counted) before the touch's response arrives.
            let began = counters.get("get", "postgresdbs");
            self.touch_statefulset(name, touch).await?;
            self.eventually(
                self.budget(),
                &format!("a reconcile of {name} begins after touch {touch} of its StatefulSet"),
                || async { Ok((counters.get("get", "postgresdbs") > began).then_some(())) },
            )
            .await?;
        }
        let mut writes = Writes::between(&before, &counters.snapshot());
        writes.discount("patch", "statefulsets", 2);
        Ok(Some(writes))
    }

    async fn touch_statefulset(&self, name: &str, touch: u32) -> Result<(), Failed> {
        let patch = serde_json::json!({
            "metadata": {"annotations": {"tests.pgdb.example.com/touch": touch.to_string()}}
        });
        self.api::<StatefulSet>()
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .or_fail(format!("annotate StatefulSet {name}"))?;
        Ok(())
    }
}

/// Writes the cluster received, by (verb, resource), as the sandbox counts them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Writes(pub BTreeMap<(String, String), u64>);

impl Writes {
    /// The writes counted in `after` and not in `before`.
    pub fn between(
        before: &BTreeMap<(String, String), u64>,
        after: &BTreeMap<(String, String), u64>,
    ) -> Self {
        Self(
            after
                .iter()
                .filter(|((verb, _), _)| sandbox::counters::WRITE_VERBS.contains(&verb.as_str()))
                .filter_map(|(key, n)| {
                    let new = n.saturating_sub(before.get(key).copied().unwrap_or(0));
                    (new > 0).then(|| (key.clone(), new))
                })
                .collect(),
        )
    }

    /// Takes `n` writes of `verb` on `resource` away (the test's own).
    pub fn discount(&mut self, verb: &str, resource: &str, n: u64) {
        let key = (verb.to_string(), resource.to_string());
        if let Some(count) = self.0.get_mut(&key) {
            *count = count.saturating_sub(n);
            if *count == 0 {
                self.0.remove(&key);
            }
        }
    }

    /// How many writes in all.
    pub fn total(&self) -> u64 {
        self.0.values().sum()
    }

    /// The resources written, other than `except`, as `patch statefulsets`.
    pub fn resources_except(&self, except: &[&str]) -> Vec<String> {
        self.0
            .keys()
            .filter(|(_, resource)| !except.contains(&resource.as_str()))
            .map(|(verb, resource)| format!("{verb} {resource}"))
            .collect()
    }
}

/// A database's phase, generations and conditions, one line each.
fn describe_database(db: &PostgresDB) -> String {
    let name = db.metadata.name.as_deref().unwrap_or_default();
    let Some(status) = &db.status else {
        return format!(
            "PostgresDB {name} (generation {:?}): no status\n",
            db.metadata.generation
        );
    };
    let mut text = format!(
        "PostgresDB {name}: phase {:?}, generation {:?}, observedGeneration {:?}, currentVersion {:?}\n",
        status.phase, db.metadata.generation, status.observed_generation, status.current_version
    );
    for c in &status.conditions {
        text += &format!("  {}={} {}: {}\n", c.type_, c.status, c.reason, c.message);
    }
    if let Some(upgrade) = &status.upgrade {
        text += &format!(
            "  upgrade: {}\n",
            serde_json::to_string(upgrade).unwrap_or_default()
        );
    }
    text
}

pub(super) fn describe_event(event: Event) -> String {
    let series = event
        .series
        .map(|s| format!(" (x{})", s.count))
        .unwrap_or_default();
    format!(
        "{} {}: {}{series}",
        event.type_.unwrap_or_default(),
        event.reason.unwrap_or_default(),
        event.note.unwrap_or_default()
    )
}
