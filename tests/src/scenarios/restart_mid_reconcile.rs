//! The operator dies in the middle of a reconcile and its binary is
//! started again: it carries on from what the cluster holds.

use std::fmt;

use k8s_openapi::api::core::v1::Secret;

use super::steps::{NAME, is_settled, owner_password};
use super::{Observed, Scenario};
use crate::builders::DbBuilder;
use crate::harness::{Failed, OrFail, TestCluster};
use crate::levels::LevelId;

pub struct RestartMidReconcile;

/// How the second operator left the database.
#[derive(Debug, PartialEq)]
pub struct Resumed {
    pub ready: bool,
    /// The owner's password is the one the first operator generated.
    pub password_kept: bool,
}

impl fmt::Display for Resumed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "resumed from the cluster: {}, generated password {}",
            if self.ready { "Ready" } else { "not Ready" },
            if self.password_kept {
                "kept"
            } else {
                "regenerated"
            }
        )
    }
}

impl Scenario for RestartMidReconcile {
    type Observation = Resumed;
    const NAME: &'static str = "RestartMidReconcile";
    const TITLE: &'static str = "The operator is killed mid-reconcile and its binary started again";

    fn expected(_: LevelId) -> Resumed {
        Resumed {
            ready: true,
            password_kept: true,
        }
    }

    async fn run(cluster: &TestCluster, level: LevelId) -> Result<Observed<Resumed>, Failed> {
        // On the sandbox, StatefulSet writes fail, so the first operator is
        // certainly stopped with the database half-built.
        if let Some(sandbox) = cluster.sandbox_handle() {
            sandbox
                .faults()
                .fail_next(1_000, Some("patch"), Some("statefulsets"), 500);
        }
        let first = cluster.run_operator(level);
        cluster
            .create(&DbBuilder::manifest(NAME).build())
            .await
            .or_fail(format!("create PostgresDB {NAME}"))?;
        cluster
            .wait_for_object::<Secret>(&format!("{NAME}-credentials"), "created", |s| s.is_some())
            .await?;
        let password = owner_password(cluster).await?;
        first.kill().await;
        if let Some(sandbox) = cluster.sandbox_handle() {
            sandbox.faults().clear();
        }
        let second = cluster
            .run_binary(level)
            .or_fail(format!("start the {} binary", level.name()))?;
        let db = cluster
            .wait_for(NAME, "Ready after the restart", is_settled)
            .await?;
        let observed = Resumed {
            ready: is_settled(&db),
            password_kept: password.is_some() && owner_password(cluster).await? == password,
        };
        second.stop().await;
        Ok(Observed::Seen(observed))
    }
}
