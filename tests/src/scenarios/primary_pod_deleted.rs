//! A database asked to run two instances loses its primary's pod (someone
//! deletes it) while a client writes through the read-write Service.
//!
//! Below Level 5, `spec.instances` is not implemented: one instance runs,
//! and the StatefulSet recreates the deleted pod on the same volume; the
//! writes stop until its server is back. Level 5 runs a streaming replica
//! and promotes it: writes go on on the replica, and the old primary's pod
//! comes back as a replica. Either way no acknowledged write may be lost,
//! the read-write Service may never select two pods, and no two servers
//! may accept writes at once. How long the writes stopped is measured
//! (shown by `pgdb-tour --scenario PrimaryPodDeleted`), not compared: it
//! depends on the machine.

use std::fmt;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::DeleteParams;
use sandbox::SandboxConfig;
use tokio::time::Instant;

use super::instances::{ServerRole, Writer, rows_held, selected_pods, server_roles};
use super::steps::{NAME, condition, create_ready, current};
use super::{Observed, Scenario, real_postgres};
use crate::builders::DbBuilder;
use crate::harness::{Failed, OrFail, TestCluster, ensure};
use crate::levels::LevelId;

pub struct PrimaryPodDeleted;

/// The instances the scenario asks for.
const INSTANCES: i32 = 2;

/// Acknowledged writes before the fault, each on every replica.
const WRITES_BEFORE: usize = 20;

/// What the deletion did to the database and its writers.
#[derive(Debug)]
pub struct AfterPrimaryLoss {
    /// The level implements `spec.instances` (no `SpecImplemented=False`
    /// naming it).
    pub instances_implemented: bool,
    /// Servers answering before the fault.
    pub instances: usize,
    /// The pod whose server accepted writes before the fault.
    pub primary_before: String,
    /// The pods whose server accepts writes at the end.
    pub writes_back_on: Vec<String>,
    /// `status.highAvailability.promotion`'s kind and phase at the end.
    pub promotion: Option<String>,
    /// What the deleted pod's server is at the end.
    pub deleted_pod: ServerRole,
    /// Acknowledged inserts missing at the end.
    pub lost: usize,
    /// The most pods the read-write Service's Endpoints listed at once.
    pub most_selected: usize,
    /// The most servers seen accepting writes at once (sampled).
    pub most_writable: usize,
    /// Inserts acknowledged in the whole run (not compared).
    pub acknowledged: usize,
    /// From the deletion to the first write acknowledged after it (not
    /// compared: it depends on the machine).
    pub writes_back_after: Option<Duration>,
}

impl PartialEq for AfterPrimaryLoss {
    fn eq(&self, other: &Self) -> bool {
        self.instances_implemented == other.instances_implemented
            && self.instances == other.instances
            && self.primary_before == other.primary_before
            && self.writes_back_on == other.writes_back_on
            && self.promotion == other.promotion
            && self.deleted_pod == other.deleted_pod
            && self.lost == other.lost
            && self.most_selected == other.most_selected
            && self.most_writable == other.most_writable
    }
}

impl fmt::Display for AfterPrimaryLoss {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", super::count(self.instances, "instance"))?;
        if !self.instances_implemented {
            write!(f, " (spec.instances not implemented)")?;
        }
        write!(f, "; writes back on ")?;
        if self.writes_back_on.is_empty() {
            write!(f, "no pod")?;
        } else {
            write!(f, "{}", self.writes_back_on.join(", "))?;
        }
        match &self.promotion {
            Some(promotion) => write!(f, " ({promotion})")?,
            None => write!(f, " (its pod recreated)")?,
        }
        let deleted = &self.primary_before;
        match self.deleted_pod {
            ServerRole::Primary if self.writes_back_on.contains(deleted) => {}
            ServerRole::Primary => write!(f, ", {deleted} came back writable")?,
            ServerRole::Replica => write!(f, ", {deleted} rejoined as a replica")?,
            ServerRole::Silent => write!(f, ", {deleted} silent")?,
        }
        write!(
            f,
            "; {} lost; the read-write Service selected at most {}, at most {} writable",
            super::count(self.lost, "acknowledged write"),
            super::count(self.most_selected, "pod"),
            super::count(self.most_writable, "server")
        )
    }
}

/// The `SpecImplemented` condition does not name `spec.instances`.
fn implements_instances(db: &shared::api::PostgresDB) -> bool {
    let named = db
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "SpecImplemented"))
        .is_some_and(|c| c.status == "False" && c.message.contains("spec.instances"));
    !named && condition(db, "SpecImplemented").is_some()
}

impl Scenario for PrimaryPodDeleted {
    type Observation = AfterPrimaryLoss;
    const NAME: &'static str = "PrimaryPodDeleted";
    const TITLE: &'static str =
        "Its primary's pod is deleted while a client writes (real PostgreSQL, `instances: 2`)";

    fn expected(level: LevelId) -> AfterPrimaryLoss {
        let single = AfterPrimaryLoss {
            instances_implemented: false,
            instances: 1,
            primary_before: format!("{NAME}-0"),
            writes_back_on: vec![format!("{NAME}-0")],
            promotion: None,
            deleted_pod: ServerRole::Primary,
            lost: 0,
            most_selected: 1,
            most_writable: 1,
            acknowledged: 0,
            writes_back_after: None,
        };
        match level {
            LevelId::One | LevelId::Two | LevelId::Three | LevelId::Four => single,
            LevelId::Five => AfterPrimaryLoss {
                instances_implemented: true,
                instances: 2,
                writes_back_on: vec![format!("{NAME}-1")],
                promotion: Some("Failover Completed".into()),
                deleted_pod: ServerRole::Replica,
                ..single
            },
        }
    }

    fn sandbox_config() -> SandboxConfig {
        real_postgres()
    }

    fn budget() -> Duration {
        Duration::from_secs(180)
    }

    async fn run(
        cluster: &TestCluster,
        level: LevelId,
    ) -> Result<Observed<AfterPrimaryLoss>, Failed> {
        if cluster.sandbox_handle().is_none() {
            return Ok(Observed::NotRun(
                "not run (needs the sandbox: the client speaks to the Service's and the pods' addresses)"
                    .into(),
            ));
        }
        let operator = cluster.run_operator(level);
        let db = create_ready(
            cluster,
            DbBuilder::manifest(NAME).instances(INSTANCES).build(),
        )
        .await?;
        let instances_implemented = implements_instances(&db);
        let expected_pods = if instances_implemented {
            INSTANCES as usize
        } else {
            1
        };
        let writer = Writer::start(cluster).await?;
        // Every instance answers, one as the primary, and each replica has
        // replayed the first writes: it streams.
        let roles = cluster
            .eventually(
                cluster.budget(),
                &format!(
                    "{expected_pods} servers answer, each replica holding {WRITES_BEFORE} rows"
                ),
                || async {
                    if writer.acknowledged() < WRITES_BEFORE {
                        return Ok(None);
                    }
                    let roles = server_roles(cluster).await?;
                    let primaries = roles.iter().filter(|r| r.1 == ServerRole::Primary).count();
                    let streaming = roles.iter().all(|(_, role, rows)| match role {
                        ServerRole::Primary => true,
                        ServerRole::Replica => rows.unwrap_or(0) >= WRITES_BEFORE as i64,
                        ServerRole::Silent => false,
                    });
                    Ok(
                        (roles.len() == expected_pods && primaries == 1 && streaming)
                            .then_some(roles),
                    )
                },
            )
            .await?;
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

        let fault = Instant::now();
        pods.delete(&primary_before, &DeleteParams::default())
            .await
            .or_fail(format!("delete pod {primary_before}"))?;
        let (mut most_selected, mut most_writable) = (0, 0);
        let deadline = fault + cluster.budget();
        loop {
            most_selected = most_selected.max(selected_pods(cluster).await?);
            let roles = server_roles(cluster).await?;
            let writable = roles.iter().filter(|r| r.1 == ServerRole::Primary).count();
            most_writable = most_writable.max(writable);
            let recreated = pods
                .get_opt(&primary_before)
                .await
                .or_fail(format!("read pod {primary_before}"))?
                .is_some_and(|p| p.uid() != uid_before);
            let all_answer =
                roles.len() == expected_pods && roles.iter().all(|r| r.1 != ServerRole::Silent);
            if writer.first_after(fault).is_some() && recreated && all_answer && writable == 1 {
                break;
            }
            ensure(Instant::now() < deadline, || {
                format!(
                    "within {:?} of deleting {primary_before}, writes were not accepted again \
                     with every instance answering and one writable (servers: {roles:?})",
                    cluster.budget()
                )
            })?;
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        // A few more writes on the new primary, then count.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let writes_back_after = writer.first_after(fault).map(|at| at - fault);
        let acknowledged = writer.stop().await;
        let held = rows_held(cluster).await?;
        let lost = acknowledged.iter().filter(|id| !held.contains(id)).count();
        let roles = server_roles(cluster).await?;
        let db = current(cluster).await?;
        let observed = AfterPrimaryLoss {
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
            deleted_pod: roles
                .iter()
                .find(|r| r.0 == primary_before)
                .map_or(ServerRole::Silent, |r| r.1),
            primary_before,
            lost,
            most_selected,
            most_writable,
            acknowledged: acknowledged.len(),
            writes_back_after,
        };
        operator.stop().await;
        Ok(Observed::Seen(observed))
    }
}
