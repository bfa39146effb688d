//! The version goes to 16.5, whose pods never become ready: what does a
//! level do once the upgrade's health timeout has passed?

use std::fmt;
use std::time::Duration;

use sandbox::SandboxConfig;
use shared::api::UpgradePhase;

use super::edited_child::reason_of;
use super::steps::{NAME, create_ready, current, current_version, is_true, live_image, patch_spec};
use super::{Observed, Scenario};
use crate::builders::DbBuilder;
use crate::harness::{Failed, TestCluster};
use crate::levels::LevelId;

pub struct FailedMinorUpgrade;

/// `spec.upgrade.healthTimeoutSeconds` in this scenario.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(10);

/// The database after a reconcile that began once the health timeout had passed.
#[derive(Debug, PartialEq)]
pub enum AfterTimeout {
    /// The old image runs again and the database is Ready.
    RolledBack {
        image: String,
        version: Option<String>,
        warning: Option<String>,
    },
    /// The failing image stayed.
    Kept {
        image: String,
        ready: bool,
        degraded: bool,
    },
}

impl fmt::Display for AfterTimeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AfterTimeout::RolledBack {
                image,
                version,
                warning,
            } => write!(
                f,
                "rolled back to {image}; Ready at {}; {}",
                version.as_deref().unwrap_or("(none)"),
                match warning {
                    Some(reason) => format!("Warning {reason}"),
                    None => "no Event".into(),
                }
            ),
            AfterTimeout::Kept {
                image,
                ready,
                degraded,
            } => write!(
                f,
                "image {image} kept; {}{}",
                if *ready { "Ready" } else { "not Ready" },
                if *degraded { ", Degraded" } else { "" }
            ),
        }
    }
}

impl Scenario for FailedMinorUpgrade {
    type Observation = AfterTimeout;
    const NAME: &'static str = "FailedMinorUpgrade";
    const TITLE: &'static str = "Its version goes to 16.5, whose pods never become ready";

    fn expected(level: LevelId) -> AfterTimeout {
        match level {
            LevelId::One => AfterTimeout::Kept {
                image: "postgres:16.5".into(),
                ready: false,
                degraded: true,
            },
            LevelId::Two | LevelId::Three | LevelId::Four | LevelId::Five => {
                AfterTimeout::RolledBack {
                    image: "postgres:16.4".into(),
                    version: Some("16.4".into()),
                    warning: Some("UpgradeRolledBack".into()),
                }
            }
        }
    }

    /// The simulated runtime, slow enough to keep a pod from becoming ready.
    fn sandbox_config() -> SandboxConfig {
        let mut config = SandboxConfig::default();
        config.simulated.ready_delay = Duration::from_millis(300);
        config
    }

    fn budget() -> Duration {
        Duration::from_secs(45)
    }

    async fn run(cluster: &TestCluster, level: LevelId) -> Result<Observed<AfterTimeout>, Failed> {
        let Some(runtime) = cluster.sandbox_handle().and_then(|s| s.simulated_runtime()) else {
            return Ok(Observed::NotRun(
                "not run (needs the sandbox's simulated runtime to make 16.5 fail)".into(),
            ));
        };
        // The broken release: a postgres:16.5 container exits before it could
        // pass its readiness probe, again and again.
        runtime.add_exit_rule(sandbox::ExitRule {
            image_contains: Some("postgres:16.5".into()),
            pod_label: None,
            exit_code: 1,
            after: Duration::from_millis(100),
        });
        let operator = cluster.run_operator(level);
        let mut db = DbBuilder::manifest(NAME).version("16.4").build();
        db.spec.upgrade = Some(shared::api::UpgradeSpec {
            health_timeout_seconds: HEALTH_TIMEOUT.as_secs() as u32,
            ..Default::default()
        });
        create_ready(cluster, db).await?;
        patch_spec(cluster, serde_json::json!({"version": "16.5"})).await?;
        cluster
            .wait_for_object::<k8s_openapi::api::apps::v1::StatefulSet>(
                NAME,
                "on postgres:16.5",
                |s| super::steps::image_of(s).as_deref() == Some("postgres:16.5"),
            )
            .await?;
        // The health timeout is the spec's deadline, counted from the
        // rollout's start (status.upgrade.startedAt, in whole seconds, for
        // a level that records it; the image swap otherwise): the scenario
        // waits until it has passed, then for a reconcile that began after.
        let swapped = std::time::SystemTime::now();
        let started = current(cluster)
            .await?
            .status
            .and_then(|s| s.upgrade)
            .map(|u| std::time::SystemTime::from(u.started_at.0))
            .unwrap_or(swapped);
        let passed = started.max(swapped) + HEALTH_TIMEOUT + Duration::from_secs(1);
        cluster
            .eventually(
                HEALTH_TIMEOUT + Duration::from_secs(5),
                "the health timeout has passed",
                || async { Ok((std::time::SystemTime::now() >= passed).then_some(())) },
            )
            .await?;
        cluster.settle(NAME).await?;
        let db = current(cluster).await?;
        let rolling_back = db
            .status
            .as_ref()
            .and_then(|s| s.upgrade.as_ref())
            .is_some_and(|u| u.phase == UpgradePhase::RolledBack);
        let observed = if rolling_back {
            let db = cluster
                .wait_for(NAME, "Ready on the old image", |db| is_true(db, "Ready"))
                .await?;
            let warning = cluster
                .wait_for_event(NAME, "a Warning about the rollback", |e| {
                    e.starts_with("Warning UpgradeRolledBack")
                })
                .await?;
            AfterTimeout::RolledBack {
                image: live_image(cluster).await?.unwrap_or_default(),
                version: current_version(&db),
                warning: reason_of(&warning),
            }
        } else {
            AfterTimeout::Kept {
                image: live_image(cluster).await?.unwrap_or_default(),
                ready: is_true(&db, "Ready"),
                degraded: is_true(&db, "Degraded"),
            }
        };
        operator.stop().await;
        Ok(Observed::Seen(observed))
    }
}
