//! A database with `tuning: auto` and a 1Gi memory limit: what the server
//! runs.
//!
//! Below Level 5 the section is not implemented: the server runs
//! PostgreSQL's defaults (shared_buffers 128MB). Level 5 derives the
//! memory parameters from the limit (PGTune's formulas): the server runs
//! shared_buffers 256MB and effective_cache_size 768MB, and
//! `status.autopilot.tuning` shows them.

use std::fmt;
use std::time::Duration;

use sandbox::SandboxConfig;
use shared::api::{ComputeResources, ResourcesSpec};
use shared::autopilot::tuning::Tuning;

use super::steps::{NAME, condition, create_ready};
use super::{Observed, Scenario, real_postgres};
use crate::builders::DbBuilder;
use crate::connect::{Role, connect};
use crate::harness::{Failed, OrFail, TestCluster};
use crate::levels::LevelId;

pub struct AutoTuned;

/// What the server runs, and what status says.
#[derive(Debug, PartialEq)]
pub struct Tuned {
    /// Whether the level implements `spec.tuning`.
    pub implemented: bool,
    /// `SHOW shared_buffers` on the server.
    pub shared_buffers: String,
    /// `SHOW effective_cache_size` on the server.
    pub effective_cache_size: String,
    /// `status.autopilot.tuning.parameters.shared_buffers`, if shown.
    pub status_shows: Option<String>,
}

impl fmt::Display for Tuned {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.implemented {
            write!(f, "`tuning` not implemented; ")?;
        }
        write!(
            f,
            "the server runs shared_buffers {}, effective_cache_size {}",
            self.shared_buffers, self.effective_cache_size
        )?;
        if let Some(shown) = &self.status_shows {
            write!(f, "; status shows shared_buffers {shown}")?;
        }
        Ok(())
    }
}

async fn show(client: &tokio_postgres::Client, name: &str) -> Result<String, Failed> {
    let row = client
        .query_one(&format!("SHOW {name}"), &[])
        .await
        .or_fail(format!("SHOW {name}"))?;
    row.try_get::<_, String>(0).or_fail(format!("read {name}"))
}

impl Scenario for AutoTuned {
    type Observation = Tuned;
    const NAME: &'static str = "AutoTuned";
    const TITLE: &'static str =
        "Its spec sets `tuning: auto` with a 1Gi memory limit (real PostgreSQL)";

    fn expected(level: LevelId) -> Tuned {
        match level {
            LevelId::One | LevelId::Two | LevelId::Three | LevelId::Four => Tuned {
                implemented: false,
                shared_buffers: "128MB".into(),
                effective_cache_size: "4GB".into(),
                status_shows: None,
            },
            LevelId::Five => Tuned {
                implemented: true,
                shared_buffers: "256MB".into(),
                effective_cache_size: "768MB".into(),
                status_shows: Some("256MB".into()),
            },
        }
    }

    fn sandbox_config() -> SandboxConfig {
        real_postgres()
    }

    fn budget() -> Duration {
        Duration::from_secs(90)
    }

    async fn run(cluster: &TestCluster, level: LevelId) -> Result<Observed<Tuned>, Failed> {
        let operator = cluster.run_operator(level);
        let mut db = DbBuilder::manifest(NAME)
            .version("15")
            .tuning(Tuning::Auto)
            .build();
        db.spec.resources = ResourcesSpec {
            requests: Some(ComputeResources {
                cpu: Some("100m".into()),
                memory: Some("256Mi".into()),
            }),
            limits: Some(ComputeResources {
                cpu: None,
                memory: Some("1Gi".into()),
            }),
        };
        let db = create_ready(cluster, db).await?;
        let implemented = condition(&db, "SpecImplemented").is_some_and(|(s, _)| s == "True");
        let client = connect(cluster, Role::Owner, NAME)
            .await
            .ok_or_else(|| Failed::new("the database has no Service or owner's Secret"))?;
        let status_shows = db
            .status
            .as_ref()
            .and_then(|s| s.autopilot.as_ref())
            .and_then(|a| a.tuning.as_ref())
            .and_then(|t| t.parameters.get("shared_buffers").cloned());
        let observed = Tuned {
            implemented,
            shared_buffers: show(&client, "shared_buffers").await?,
            effective_cache_size: show(&client, "effective_cache_size").await?,
            status_shows,
        };
        operator.stop().await;
        Ok(Observed::Seen(observed))
    }
}
