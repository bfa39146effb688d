//! The version goes from 16.2 to 16.4 on real PostgreSQL: the image is
//! swapped and the server itself reports the new version.

use std::fmt;

use sandbox::SandboxConfig;

use super::steps::{
    NAME, create_ready, current_version, is_settled_at, live_image, patch_spec, server_version,
};
use super::{Observed, Scenario, real_postgres};
use crate::builders::DbBuilder;
use crate::harness::{Failed, TestCluster};
use crate::levels::LevelId;

pub struct MinorUpgrade;

/// The image, the version in status, and the server's own answer.
#[derive(Debug, PartialEq)]
pub struct Upgraded {
    pub image: Option<String>,
    pub status_version: Option<String>,
    pub server_reports: String,
}

impl fmt::Display for Upgraded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "image swapped to {}; Ready at {}; the server reports {}",
            self.image.as_deref().unwrap_or("(none)"),
            self.status_version.as_deref().unwrap_or("(none)"),
            self.server_reports
        )
    }
}

impl Scenario for MinorUpgrade {
    type Observation = Upgraded;
    const NAME: &'static str = "MinorUpgrade";
    const TITLE: &'static str = "Its version goes from 16.2 to 16.4";

    fn expected(_: LevelId) -> Upgraded {
        Upgraded {
            image: Some("postgres:16.4".into()),
            status_version: Some("16.4".into()),
            server_reports: "16.4".into(),
        }
    }

    fn sandbox_config() -> SandboxConfig {
        real_postgres()
    }

    fn budget() -> std::time::Duration {
        std::time::Duration::from_secs(90)
    }

    async fn run(cluster: &TestCluster, level: LevelId) -> Result<Observed<Upgraded>, Failed> {
        let operator = cluster.run_operator(level);
        create_ready(cluster, DbBuilder::manifest(NAME).version("16.2").build()).await?;
        patch_spec(cluster, serde_json::json!({"version": "16.4"})).await?;
        let db = cluster
            .wait_for(NAME, "Ready at 16.4", |db| is_settled_at(db, "16.4"))
            .await?;
        let observed = Upgraded {
            image: live_image(cluster).await?,
            status_version: current_version(&db),
            server_reports: server_version(cluster).await?,
        };
        operator.stop().await;
        Ok(Observed::Seen(observed))
    }
}
