//! The run the high-availability scenarios share: a database asked to run
//! two instances, a client writing through the read-write Service, one
//! event that takes the primary away (its pod deleted, its processes
//! frozen, or a switchover asked for; a deleted pod is held until the
//! operator has reconciled, see [`hold_and_delete`]), and what followed: where writes were accepted again, the
//! promotion status reports, what the old primary became, the
//! acknowledged writes lost, and, watched throughout, the most pods the
//! read-write Service selected and the most servers accepting writes at
//! once. How long the writes stopped is measured (shown by
//! `pgdb-tour --scenario NAME`), not compared: it depends on the machine.

use std::fmt;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::DeleteParams;
use tokio::time::Instant;

use super::instances::{ServerRole, Writer, rows_held, selected_pods, server_roles};
use super::pod_hold::Held;
use super::steps::{NAME, condition, create_ready, current, is_settled, patch_spec};
use super::{Observed, REPLICATION_VERSION, count};
use crate::builders::DbBuilder;
use crate::harness::{Failed, OrFail, TestCluster, ensure};
use crate::levels::LevelId;

/// The instances the scenarios ask for.
pub const INSTANCES: i32 = 2;

/// How long the database must stay recovered before the run counts what
/// it holds: an instance that answers once and then restarts (rejoining)
/// is not the end.
const SETTLED_FOR: Duration = Duration::from_secs(3);

/// Acknowledged writes before the event, each on every replica.
const WRITES_BEFORE: usize = 20;

/// What takes the primary away.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// Its pod is deleted (gracefully, as `kubectl delete pod` does).
    PodDeleted,
    /// `spec.primary` names the other instance.
    Switchover,
    /// Its server's processes are stopped (SIGSTOP), as on a node that
    /// stops answering: connections open but nothing answers, until the
    /// kubelet's liveness probe restarts the container or the pod goes.
    Frozen,
}

/// What the event did to the database and its writers.
#[derive(Debug)]
pub struct Handover {
    /// The level implements `spec.instances` (no `SpecImplemented=False`
    /// naming it).
    pub instances_implemented: bool,
    /// Servers answering before the event.
    pub instances: usize,
    /// The pod whose server accepted writes before the event.
    pub primary_before: String,
    /// The pods whose server accepts writes at the end.
    pub writes_back_on: Vec<String>,
    /// `status.highAvailability.promotion`'s kind and phase at the end.
    pub promotion: Option<String>,
    /// What the old primary's server is at the end.
    pub old_primary: ServerRole,
    /// Acknowledged inserts missing at the end.
    pub lost: usize,
    /// The most pods the read-write Service's Endpoints listed at once.
    pub most_selected: usize,
    /// The most servers seen accepting writes at once (sampled).
    pub most_writable: usize,
    /// Inserts acknowledged in the whole run (not compared).
    pub acknowledged: usize,
    /// The longest time without an acknowledged write after the event:
    /// how long writes stopped (not compared: it depends on the machine).
    pub writes_stopped_for: Duration,
}

impl Handover {
    /// A level below 5: one instance, `orders-0`, which stays the primary
    /// and loses nothing.
    pub fn single_instance() -> Self {
        Handover {
            instances_implemented: false,
            instances: 1,
            primary_before: format!("{NAME}-0"),
            writes_back_on: vec![format!("{NAME}-0")],
            promotion: None,
            old_primary: ServerRole::Primary,
            lost: 0,
            most_selected: 1,
            most_writable: 1,
            acknowledged: 0,
            writes_stopped_for: Duration::ZERO,
        }
    }

    /// Level 5: `orders-1` promoted by a promotion of `kind`, `orders-0`
    /// back as a replica, nothing lost.
    pub fn promoted(kind: &str) -> Self {
        Handover {
            instances_implemented: true,
            instances: INSTANCES as usize,
            writes_back_on: vec![format!("{NAME}-1")],
            promotion: Some(format!("{kind} Completed")),
            old_primary: ServerRole::Replica,
            ..Self::single_instance()
        }
    }
}

impl PartialEq for Handover {
    fn eq(&self, other: &Self) -> bool {
        self.instances_implemented == other.instances_implemented
            && self.instances == other.instances
            && self.primary_before == other.primary_before
            && self.writes_back_on == other.writes_back_on
            && self.promotion == other.promotion
            && self.old_primary == other.old_primary
            && self.lost == other.lost
            && self.most_selected == other.most_selected
            && self.most_writable == other.most_writable
    }
}

impl fmt::Display for Handover {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", count(self.instances, "instance"))?;
        if !self.instances_implemented {
            write!(f, " (spec.instances not implemented)")?;
        }
        write!(f, "; writes on ")?;
        if self.writes_back_on.is_empty() {
            write!(f, "no pod")?;
        } else {
            write!(f, "{}", self.writes_back_on.join(", "))?;
        }
        if let Some(promotion) = &self.promotion {
            write!(f, " ({promotion})")?;
        }
        let old = &self.primary_before;
        match self.old_primary {
            ServerRole::Primary if self.writes_back_on.contains(old) => {}
            ServerRole::Primary => write!(f, ", {old} writable too")?,
            ServerRole::Replica => write!(f, ", {old} rejoined as a replica")?,
            ServerRole::Silent => write!(f, ", {old} silent")?,
        }
        write!(
            f,
            "; {} lost; the read-write Service selected at most {}, at most {} writable",
            count(self.lost, "acknowledged write"),
            count(self.most_selected, "pod"),
            count(self.most_writable, "server")
        )
    }
}

/// Deletes pod `name` (gracefully, as `kubectl delete pod` does), held by
/// the tests' finalizer ([`Held`]): it stays, being deleted (its containers
/// stopped), until released. The run releases it once a reconcile of
/// the database that began after the delete has run to its end
/// ([`TestCluster::settle`]). On the sandbox the StatefulSet recreates a
/// deleted pod and its server answers again within about a second, sooner
/// than a busy operator may reconcile: had no reconcile seen the pod gone,
/// the primary would simply have restarted in place (nothing lost, no
/// failover), and the run would not show what the operator does with a
/// deleted primary. On a real cluster a pod's termination, scheduling and
/// probes take seconds; the hold gives every run that window.
async fn hold_and_delete(cluster: &TestCluster, name: &str) -> Result<Held, Failed> {
    let held = Held::hold(cluster, name).await?;
    cluster
        .api::<Pod>()
        .delete(name, &DeleteParams::default())
        .await
        .or_fail(format!("delete pod {name}"))?;
    Ok(held)
}

/// Whether the `SpecImplemented` condition leaves `field` out of what the
/// level does not implement.
fn implements(db: &shared::api::PostgresDB, field: &str) -> bool {
    let named = db
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "SpecImplemented"))
        .is_some_and(|c| c.status == "False" && c.message.contains(field));
    !named && condition(db, "SpecImplemented").is_some()
}

/// Runs the scenario of `event` against `level`.
pub async fn run(
    cluster: &TestCluster,
    level: LevelId,
    event: Event,
) -> Result<Observed<Handover>, Failed> {
    if cluster.sandbox_handle().is_none() {
        return Ok(Observed::NotRun(
            "not run (needs the sandbox: the client speaks to the Service's and the pods' addresses)"
                .into(),
        ));
    }
    let operator = cluster.run_operator(level);
    let db = create_ready(
        cluster,
        DbBuilder::manifest(NAME)
            .version(REPLICATION_VERSION)
            .instances(INSTANCES)
            .build(),
    )
    .await?;
    let instances_implemented = implements(&db, "spec.instances");
    let expected_pods = if instances_implemented {
        INSTANCES as usize
    } else {
        1
    };
    let writer = Writer::start(cluster).await?;
    // Every instance answers, one as the primary, and each replica has
    // replayed the first writes: it streams.
    let deadline = Instant::now() + cluster.budget();
    let roles = loop {
        let roles = server_roles(cluster).await?;
        let primaries = roles.iter().filter(|r| r.1 == ServerRole::Primary).count();
        let streaming = roles.iter().all(|(_, role, rows)| match role {
            ServerRole::Primary => true,
            ServerRole::Replica => rows.unwrap_or(0) >= WRITES_BEFORE as i64,
            ServerRole::Silent => false,
        });
        if writer.acknowledged() >= WRITES_BEFORE
            && roles.len() == expected_pods
            && primaries == 1
            && streaming
        {
            break roles;
        }
        if Instant::now() >= deadline {
            return Err(Failed::new(format!(
                "within {:?}, not every one of {expected_pods} servers answered with each \
                 replica holding {WRITES_BEFORE} rows: servers {roles:?}; {} writes \
                 acknowledged (last failure: {})\n{}",
                cluster.budget(),
                writer.acknowledged(),
                writer.last_error().unwrap_or_else(|| "none".into()),
                cluster.diagnosis().await
            )));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let primary_before = roles
        .iter()
        .find(|r| r.1 == ServerRole::Primary)
        .map(|r| r.0.clone())
        .unwrap_or_default();
    let pods = cluster.api::<Pod>();
    let uid_before = pods
        .get(&primary_before)
        .await
        .or_fail(format!("read pod {primary_before}"))?
        .uid();

    // What the read-write Service selects before the event counts too.
    let mut most_selected = selected_pods(cluster).await?;
    let mut most_writable = 1;
    let began = Instant::now();
    let mut held = None;
    let generation = match event {
        Event::PodDeleted => {
            held = Some(hold_and_delete(cluster, &primary_before).await?);
            None
        }
        Event::Switchover => {
            let target = format!("{NAME}-1");
            Some(patch_spec(cluster, serde_json::json!({ "primary": target })).await?)
        }
        Event::Frozen => {
            let runtime = cluster
                .sandbox_handle()
                .and_then(|s| s.postgres_runtime())
                .ok_or_else(|| Failed::new("the sandbox runs no real PostgreSQL"))?;
            let paused = runtime.pause(cluster.namespace(), &primary_before, None, true);
            ensure(paused, || {
                format!("no server process of {primary_before} to freeze")
            })?;
            None
        }
    };
    let deadline = began + cluster.budget();
    // A deleted pod is held until a reconcile that began after the delete
    // has run, sampled meanwhile like the rest of the run.
    let mut settling = std::pin::pin!(cluster.settle(NAME));
    let mut recovered: Option<Instant> = None;
    // The old primary was seen silent or not writable since the event.
    let mut seen_lost = false;
    loop {
        most_selected = most_selected.max(selected_pods(cluster).await?);
        let roles = server_roles(cluster).await?;
        let writable = roles.iter().filter(|r| r.1 == ServerRole::Primary).count();
        most_writable = most_writable.max(writable);
        seen_lost |= roles
            .iter()
            .find(|r| r.0 == primary_before)
            .is_none_or(|r| r.1 != ServerRole::Primary);
        // Recovered for a while (every instance answering, one writable,
        // the database Ready), with a write acknowledged since: settled.
        if recovered
            .is_some_and(|at| at.elapsed() >= SETTLED_FOR && writer.first_after(at).is_some())
        {
            break;
        }
        let db = current(cluster).await?;
        let moved_on = match generation {
            // The frozen server stopped answering as the primary.
            None if event != Event::PodDeleted => seen_lost,
            // The deleted pod is back (another uid).
            None => pods
                .get_opt(&primary_before)
                .await
                .or_fail(format!("read pod {primary_before}"))?
                .is_some_and(|p| p.uid() != uid_before),
            // The spec change was taken; a level that implements
            // `spec.primary` made the target the primary.
            Some(generation) => {
                let status = db.status.as_ref();
                let target = format!("{NAME}-1");
                status.and_then(|s| s.observed_generation) >= Some(generation)
                    && (!implements(&db, "spec.primary")
                        || status.and_then(|s| s.current_primary.as_deref())
                            == Some(target.as_str()))
                    && status
                        .and_then(|s| s.high_availability.as_ref()?.promotion.as_ref())
                        .is_none_or(|p| p.phase == shared::ha::PromotionPhase::Completed)
            }
        };
        let all_answer =
            roles.len() == expected_pods && roles.iter().all(|r| r.1 != ServerRole::Silent);
        if moved_on && all_answer && writable == 1 && is_settled(&db) {
            recovered.get_or_insert_with(Instant::now);
        } else {
            // Not yet, or not any more (an instance restarting again).
            recovered = None;
        }
        if Instant::now() >= deadline {
            return Err(Failed::new(format!(
                "within {:?} of the {event:?}, writes were not accepted again with every \
                 instance answering and one writable: servers {roles:?}; {} writes \
                 acknowledged (last failure: {})\n{}",
                cluster.budget(),
                writer.acknowledged(),
                writer.last_error().unwrap_or_else(|| "none".into()),
                cluster.diagnosis().await
            )));
        }
        let pause = tokio::time::sleep(Duration::from_millis(250));
        if let Some(hold) = held.as_mut() {
            tokio::select! {
                () = pause => {}
                settled = &mut settling => {
                    let released = hold.release().await;
                    held = None;
                    settled.and(released)?;
                }
            }
        } else {
            pause.await;
        }
    }
    let writes_stopped_for = writer.longest_pause_since(began);
    let acknowledged = writer.stop().await;
    let held = rows_held(cluster).await?;
    let lost = acknowledged.iter().filter(|id| !held.contains(id)).count();
    let roles = server_roles(cluster).await?;
    let db = current(cluster).await?;
    let observed = Handover {
        instances_implemented,
        instances: expected_pods,
        writes_back_on: roles
            .iter()
            .filter(|r| r.1 == ServerRole::Primary)
            .map(|r| r.0.clone())
            .collect(),
        promotion: db
            .status
            .as_ref()
            .and_then(|s| s.high_availability.as_ref()?.promotion.as_ref())
            .map(|p| format!("{:?} {:?}", p.kind, p.phase)),
        old_primary: roles
            .iter()
            .find(|r| r.0 == primary_before)
            .map_or(ServerRole::Silent, |r| r.1),
        primary_before,
        lost,
        most_selected,
        most_writable,
        acknowledged: acknowledged.len(),
        writes_stopped_for,
    };
    operator.stop().await;
    Ok(Observed::Seen(observed))
}
