//! The operator is killed during a minor upgrade on real PostgreSQL and
//! started again: the upgrade ends where the cluster says it was.

use std::fmt;

use k8s_openapi::api::apps::v1::StatefulSet;
use sandbox::SandboxConfig;
use shared::api::UpgradePhase;

use super::steps::{
    NAME, create_ready, current, current_version, image_of, is_settled_at, patch_spec,
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
                "the rollout resumed (start time {}) and {}",
                if rollout.start_kept { "kept" } else { "lost" },
                match &rollout.phase {
                    UpgradePhase::Complete => "completed".to_string(),
                    other => format!("ended {other:?}"),
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
                LevelId::Two => Some(Rollout {
                    start_kept: true,
                    phase: UpgradePhase::Complete,
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
        create_ready(cluster, DbBuilder::named(NAME).version("16.2").build()).await?;
        let generation = patch_spec(cluster, serde_json::json!({"version": "16.4"})).await?;
        // Killed once the new image is in the StatefulSet and the reconcile
        // that put it there has written its status (a level that records
        // rollouts records this one there): the rollout is under way.
        cluster
            .wait_for_object::<StatefulSet>(NAME, "on postgres:16.4", |sts| {
                image_of(sts).as_deref() == Some("postgres:16.4")
            })
            .await?;
        cluster
            .wait_for(NAME, "observed at the new version", |db| {
                db.status.as_ref().and_then(|s| s.observed_generation) == Some(generation)
            })
            .await?;
        let started_at = current(cluster)
            .await?
            .status
            .and_then(|s| s.upgrade)
            .filter(|u| u.to_version == "16.4")
            .map(|u| u.started_at);
        first.kill().await;
        let second = cluster.run_operator(level);
        let db = cluster
            .wait_for(NAME, "Ready at 16.4", |db| is_settled_at(db, "16.4"))
            .await?;
        let observed = Finished {
            status_version: current_version(&db),
            server_reports: server_version(cluster).await?,
            rollout: db.status.and_then(|s| s.upgrade).map(|upgrade| Rollout {
                start_kept: Some(&upgrade.started_at) == started_at.as_ref(),
                phase: upgrade.phase,
            }),
        };
        second.stop().await;
        Ok(Observed::Seen(observed))
    }
}
