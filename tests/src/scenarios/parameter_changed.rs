//! A reloadable parameter (`work_mem`) changes on a real server: does the
//! level restart the server, or reload it?

use std::fmt;

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use sandbox::SandboxConfig;
use shared::api::ConfigurationMethod;

use super::steps::{NAME, children, create_ready, current, is_settled, patch_spec};
use super::{Observed, Scenario, real_postgres};
use crate::builders::DbBuilder;
use crate::connect::{Role, connect};
use crate::harness::{Failed, OrFail, TestCluster};
use crate::levels::LevelId;

pub struct ParameterChanged;

/// The value the server reports, whether its pod restarted, and what
/// status says.
#[derive(Debug, PartialEq)]
pub struct Applied {
    pub work_mem: String,
    /// A pod was replaced or a container restarted.
    pub restarted: bool,
    /// `status.configuration.appliedBy`, for a level that reports it.
    pub status_says: Option<ConfigurationMethod>,
}

impl fmt::Display for Applied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "work_mem is {} {}",
            self.work_mem,
            if self.restarted {
                "after a server restart"
            } else {
                "without a restart (reloaded)"
            }
        )?;
        if let Some(method) = &self.status_says {
            write!(f, "; status says {method:?}")?;
        }
        Ok(())
    }
}

/// Each pod's name, uid and container restarts.
async fn pods(cluster: &TestCluster) -> Result<Vec<(String, String, i32)>, Failed> {
    Ok(children::<Pod>(cluster)
        .await?
        .into_iter()
        .map(|pod| {
            let restarts = pod
                .status
                .as_ref()
                .and_then(|s| s.container_statuses.as_ref())
                .map(|c| c.iter().map(|c| c.restart_count).sum())
                .unwrap_or(0);
            (pod.name_any(), pod.uid().unwrap_or_default(), restarts)
        })
        .collect())
}

async fn work_mem(cluster: &TestCluster) -> Result<String, Failed> {
    let client = connect(cluster, Role::Superuser, NAME)
        .await
        .ok_or_else(|| Failed::new("the database has no Service or superuser's Secret"))?;
    Ok(client
        .query_one("SHOW work_mem", &[])
        .await
        .or_fail("ask the server for work_mem")?
        .get(0))
}

impl Scenario for ParameterChanged {
    type Observation = Applied;
    const NAME: &'static str = "ParameterChanged";
    const TITLE: &'static str = "Its `work_mem` parameter changes (real PostgreSQL)";

    fn expected(level: LevelId) -> Applied {
        match level {
            LevelId::One => Applied {
                work_mem: "8MB".into(),
                restarted: true,
                status_says: None,
            },
            LevelId::Two | LevelId::Three | LevelId::Four | LevelId::Five => Applied {
                work_mem: "8MB".into(),
                restarted: false,
                status_says: Some(ConfigurationMethod::Reload),
            },
        }
    }

    fn sandbox_config() -> SandboxConfig {
        real_postgres()
    }

    fn budget() -> std::time::Duration {
        std::time::Duration::from_secs(90)
    }

    async fn run(cluster: &TestCluster, level: LevelId) -> Result<Observed<Applied>, Failed> {
        let operator = cluster.run_operator(level);
        create_ready(cluster, DbBuilder::manifest(NAME).version("15").build()).await?;
        let before = pods(cluster).await?;
        patch_spec(
            cluster,
            serde_json::json!({"parameters": {"work_mem": "8MB"}}),
        )
        .await?;
        let value = cluster
            .eventually(
                cluster.budget(),
                "the server reports work_mem 8MB, settled",
                || async {
                    let db = current(cluster).await?;
                    let applied = db
                        .status
                        .as_ref()
                        .and_then(|s| s.configuration.as_ref())
                        .is_none_or(|c| c.applied);
                    if !(is_settled(&db) && applied) {
                        return Ok(None);
                    }
                    let value = work_mem(cluster).await?;
                    Ok((value == "8MB").then_some(value))
                },
            )
            .await?;
        let after = pods(cluster).await?;
        let status_says = current(cluster)
            .await?
            .status
            .and_then(|s| s.configuration)
            .map(|c| c.applied_by);
        operator.stop().await;
        Ok(Observed::Seen(Applied {
            work_mem: value,
            restarted: after != before,
            status_says,
        }))
    }
}
