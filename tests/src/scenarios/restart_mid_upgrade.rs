//! The operator is killed during a minor upgrade on real PostgreSQL and
//! started again: the upgrade ends where the cluster says it was.

use std::fmt;

use k8s_openapi::api::apps::v1::StatefulSet;
use sandbox::SandboxConfig;
use shared::api::UpgradePhase;
use shared::conditions::READY;

use super::pod_hold::Held;
use super::steps::{
    NAME, condition, create_ready, current, current_version, image_of, is_settled_at, patch_spec,
    server_version,
};
use super::{Observed, Scenario, real_postgres};
use crate::builders::DbBuilder;
use crate::harness::{Failed, TestCluster};
use crate::levels::LevelId;

pub struct RestartMidUpgrade;

/// A recorded rollout after the restart.
#[derive(Debug, PartialEq)]
pub struct Rollout {
    /// `startedAt` is what the killed operator recorded.
    pub start_kept: bool,
    pub phase: UpgradePhase,
    /// Who published the newest `DatabaseReady` Event: the reconcile
    /// that finds the pods ready on the new version says so, and marks the
    /// rollout complete then or at the next reconcile (`reportingInstance`).
    pub completed_by: Completer,
}

/// Which operator reported the database Ready again.
#[derive(Debug, PartialEq)]
pub enum Completer {
    /// The operator started after the kill.
    Restarted,
    /// The operator that was killed, before it was.
    Killed,
    /// No Event reported it.
    Nobody,
}

/// The database once the second operator settled it.
#[derive(Debug, PartialEq)]
pub struct Finished {
    pub status_version: Option<String>,
    pub server_reports: String,
    pub rollout: Option<Rollout>,
}

impl fmt::Display for Finished {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Ready at {}; the server reports {}; ",
            self.status_version.as_deref().unwrap_or("(none)"),
            self.server_reports
        )?;
        match &self.rollout {
            None => write!(f, "no rollout recorded"),
            Some(rollout) => write!(
                f,
                "the rollout resumed (start time {}) and {}{}",
                if rollout.start_kept { "kept" } else { "lost" },
                match &rollout.phase {
                    UpgradePhase::Complete => "completed".to_string(),
                    other => format!("ended {other:?}"),
                },
                match rollout.completed_by {
                    Completer::Restarted => "",
                    Completer::Killed => ", as the killed operator had reported",
                    Completer::Nobody => ", with no Event saying Ready",
                }
            ),
        }
    }
}

impl Scenario for RestartMidUpgrade {
    type Observation = Finished;
    const NAME: &'static str = "RestartMidUpgrade";
    const TITLE: &'static str =
        "The operator is killed during the upgrade 16.2 to 16.4 (real PostgreSQL)";

    fn expected(level: LevelId) -> Finished {
        Finished {
            status_version: Some("16.4".into()),
            server_reports: "16.4".into(),
            rollout: match level {
                LevelId::One => None,
                LevelId::Two | LevelId::Three | LevelId::Four | LevelId::Five => Some(Rollout {
                    start_kept: true,
                    phase: UpgradePhase::Complete,
                    completed_by: Completer::Restarted,
                }),
            },
        }
    }

    fn sandbox_config() -> SandboxConfig {
        real_postgres()
    }

    fn budget() -> std::time::Duration {
        std::time::Duration::from_secs(90)
    }

    async fn run(cluster: &TestCluster, level: LevelId) -> Result<Observed<Finished>, Failed> {
        let first = cluster.run_operator(level);
        create_ready(cluster, DbBuilder::manifest(NAME).version("16.2").build()).await?;
        // The pod on 16.2 is held by a finalizer of the tests' own, so the
        // rollout cannot finish before the kill: the StatefulSet controller
        // deletes it to replace it, and it stays, being deleted and not
        // ready, until released. The first operator sees the rollout's
        // outage and says so (the Ready condition False) before it dies.
        // Without the hold a busy machine could let the new pod start and
        // be reported Ready by the first operator, or let the first
        // operator die before it saw the old pod go, and the restarted one
        // would find a database already Ready (no transition to report).
        // The hold is set before the patch: set after it, the pod could be
        // replaced first. The phase is not enough to wait for: it says
        // Updating as soon as the rollout starts, while the old pod still
        // serves and Ready is True.
        let mut held = Held::hold(cluster, &format!("{NAME}-0")).await?;
        let generation = patch_spec(cluster, serde_json::json!({"version": "16.4"})).await?;
        cluster
            .wait_for_object::<StatefulSet>(NAME, "on postgres:16.4", |sts| {
                image_of(sts).as_deref() == Some("postgres:16.4")
            })
            .await?;
        let under_way = |db: &shared::api::PostgresDB| {
            db.status.as_ref().and_then(|s| s.observed_generation) == Some(generation)
                && condition(db, READY).is_some_and(|(status, _)| status == "False")
        };
        cluster
            .wait_for(
                NAME,
                "observed at the new version, not Ready during the rollout",
                under_way,
            )
            .await?;
        let started_at = current(cluster)
            .await?
            .status
            .and_then(|s| s.upgrade)
            .filter(|u| u.to_version == "16.4")
            .map(|u| u.started_at);
        let killed = first.instance().map(str::to_string);
        first.kill().await;
        held.release().await?;
        let second = cluster.run_operator(level);
        let restarted = second.instance().map(str::to_string);
        let db = cluster
            .wait_for(NAME, "Ready at 16.4", |db| is_settled_at(db, "16.4"))
            .await?;
        let rollout = match db.status.as_ref().and_then(|s| s.upgrade.clone()) {
            None => None,
            Some(upgrade) => {
                // Events are published before the status that reports
                // what they say: by now the newest DatabaseReady exists.
                let ready_again = cluster
                    .event_objects(NAME)
                    .await?
                    .into_iter()
                    .rfind(|e| e.reason.as_deref() == Some("DatabaseReady"));
                let by = |instance: &Option<String>| {
                    ready_again.as_ref().is_some_and(|e| {
                        e.reporting_instance.is_some() && &e.reporting_instance == instance
                    })
                };
                Some(Rollout {
                    start_kept: Some(&upgrade.started_at) == started_at.as_ref(),
                    phase: upgrade.phase,
                    completed_by: if by(&restarted) {
                        Completer::Restarted
                    } else if by(&killed) {
                        Completer::Killed
                    } else {
                        Completer::Nobody
                    },
                })
            }
        };
        let observed = Finished {
            status_version: current_version(&db),
            server_reports: server_version(cluster).await?,
            rollout,
        };
        second.stop().await;
        Ok(Observed::Seen(observed))
    }
}
