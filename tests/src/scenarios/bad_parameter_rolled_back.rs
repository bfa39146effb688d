//! A parameter the server will not start with (`wal_level = 'minimal'`
//! beside the default `max_wal_senders`) is set on a running database:
//! does the level leave it down, or roll the change back?

use std::fmt;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use sandbox::SandboxConfig;
use shared::api::PostgresDB;

use super::steps::{NAME, children, condition, create_ready, is_settled, patch_spec};
use super::{Observed, Scenario, real_postgres};
use crate::builders::DbBuilder;
use crate::connect::{Role, connect};
use crate::harness::{Failed, TestCluster};
use crate::levels::LevelId;

pub struct BadParameterRolledBack;

/// The server's reason for not starting.
const FATAL: &str =
    "FATAL: WAL streaming (max_wal_senders > 0) requires wal_level \"replica\" or \"logical\"";

/// The database once the level has done what it does about the change.
#[derive(Debug, PartialEq)]
pub struct AfterBadParameter {
    /// The Ready condition is True.
    pub ready: bool,
    /// Degraded's status and reason.
    pub degraded: Option<(String, String)>,
    /// A pod's container waits in CrashLoopBackOff, or was restarted and is
    /// not ready.
    pub crash_looping: bool,
    /// What `SHOW wal_level` answers, when a server answers.
    pub wal_level: Option<String>,
    /// `spec.parameters` still asks for `wal_level = 'minimal'`.
    pub spec_kept: bool,
    /// A Warning Event quotes the server's reason.
    pub warning_quotes_server: bool,
}

impl fmt::Display for AfterBadParameter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", if self.ready { "Ready" } else { "not Ready" })?;
        if let Some((status, reason)) = &self.degraded {
            write!(f, ", Degraded {status} {reason}")?;
        }
        if self.crash_looping {
            write!(f, ", crash-looping")?;
        }
        match &self.wal_level {
            Some(level) => write!(f, "; the server runs wal_level {level}")?,
            None => write!(f, "; no server answers")?,
        }
        write!(
            f,
            "; spec {}; {}",
            if self.spec_kept {
                "as written"
            } else {
                "edited"
            },
            if self.warning_quotes_server {
                "a Warning quotes the server"
            } else {
                "no Warning quotes the server"
            }
        )
    }
}

fn crash_looping(pods: &[Pod]) -> bool {
    pods.iter().any(|pod| {
        pod.status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .is_some_and(|statuses| {
                statuses.iter().any(|c| {
                    let waiting = c
                        .state
                        .as_ref()
                        .and_then(|s| s.waiting.as_ref())
                        .and_then(|w| w.reason.as_deref());
                    waiting == Some("CrashLoopBackOff") || (c.restart_count > 0 && !c.ready)
                })
            })
    })
}

/// Whether the level has done what it does: the database is down and says
/// why, or it runs again after a rollback.
fn concluded(db: &PostgresDB) -> bool {
    let degraded = condition(db, "Degraded");
    let down = degraded
        .as_ref()
        .is_some_and(|(status, reason)| status == "True" && reason == "PodFailing");
    let recovered = degraded
        .as_ref()
        .is_some_and(|(status, reason)| status == "False" && reason == "Recovered")
        && condition(db, "Ready").is_some_and(|(status, _)| status == "True");
    down || recovered
}

impl Scenario for BadParameterRolledBack {
    type Observation = AfterBadParameter;
    const NAME: &'static str = "BadParameterRolledBack";
    const TITLE: &'static str =
        "A parameter its server will not start with is set (`wal_level: minimal`, real PostgreSQL)";

    fn expected(level: LevelId) -> AfterBadParameter {
        match level {
            LevelId::One | LevelId::Two | LevelId::Three | LevelId::Four => AfterBadParameter {
                ready: false,
                degraded: Some(("True".into(), "PodFailing".into())),
                crash_looping: true,
                wal_level: None,
                spec_kept: true,
                warning_quotes_server: true,
            },
            LevelId::Five => AfterBadParameter {
                ready: true,
                degraded: Some(("False".into(), "Recovered".into())),
                crash_looping: false,
                wal_level: Some("replica".into()),
                spec_kept: true,
                warning_quotes_server: true,
            },
        }
    }

    fn sandbox_config() -> SandboxConfig {
        real_postgres()
    }

    fn budget() -> Duration {
        Duration::from_secs(120)
    }

    async fn run(
        cluster: &TestCluster,
        level: LevelId,
    ) -> Result<Observed<AfterBadParameter>, Failed> {
        let operator = cluster.run_operator(level);
        create_ready(
            cluster,
            DbBuilder::manifest(NAME)
                .version("15")
                .parameter("work_mem", "8MB")
                .build(),
        )
        .await?;
        // Level 5 records the configuration that ran first: a rollback
        // needs something to go back to.
        cluster
            .wait_for(NAME, "settled, its configuration recorded", |db| {
                is_settled(db)
                    && (level.number() < 5
                        || db
                            .status
                            .as_ref()
                            .and_then(|s| s.autopilot.as_ref())
                            .is_some_and(|a| a.configuration.is_some()))
            })
            .await?;
        patch_spec(
            cluster,
            serde_json::json!({"parameters": {"wal_level": "minimal"}}),
        )
        .await?;
        let db = cluster
            .wait_for(NAME, "down and saying why, or running again", concluded)
            .await?;
        let pods = children::<Pod>(cluster).await?;
        let ready = condition(&db, "Ready").is_some_and(|(status, _)| status == "True");
        // A server that is down is not asked (a connection would be
        // retried for the whole budget).
        let client = match ready {
            true => connect(cluster, Role::Superuser, NAME).await,
            false => None,
        };
        let wal_level = match client {
            Some(client) => client
                .query_one("SHOW wal_level", &[])
                .await
                .ok()
                .map(|row| row.get::<_, String>(0)),
            None => None,
        };
        let events = cluster.events(NAME).await?;
        operator.stop().await;
        Ok(Observed::Seen(AfterBadParameter {
            ready,
            degraded: condition(&db, "Degraded"),
            crash_looping: crash_looping(&pods),
            wal_level,
            spec_kept: db.spec.parameters.get("wal_level").map(String::as_str) == Some("minimal"),
            warning_quotes_server: events
                .iter()
                .any(|e| e.starts_with("Warning") && e.contains(FATAL)),
        }))
    }
}
