//! Someone deletes the database's StatefulSet: the operator makes a new
//! one, on the same data volume, and the rows written before are there.

use std::fmt;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::ResourceExt;
use kube::api::DeleteParams;
use sandbox::SandboxConfig;

use super::steps::{NAME, create_ready, is_settled, rows, statefulset, write_three_rows};
use super::{Observed, Scenario, real_postgres};
use crate::builders::DbBuilder;
use crate::harness::{Failed, OrFail, TestCluster, ensure};
use crate::levels::LevelId;

pub struct DeletedStatefulSet;

/// What came back after the deletion.
#[derive(Debug, PartialEq)]
pub struct Recovery {
    /// A StatefulSet with a new uid and a later creationTimestamp exists.
    pub recreated: bool,
    /// The database was settled again afterwards.
    pub ready_again: bool,
    /// The data claim has the uid it had before the deletion.
    pub same_volume: bool,
    /// The rows `items` holds afterwards (`None`: the table is gone).
    pub rows: Option<i64>,
}

impl fmt::Display for Recovery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "StatefulSet {}, {} on {} data volume; {}",
            if self.recreated {
                "recreated"
            } else {
                "not recreated"
            },
            if self.ready_again {
                "Ready again"
            } else {
                "not Ready"
            },
            if self.same_volume {
                "the same"
            } else {
                "a new"
            },
            match self.rows {
                Some(rows) => format!("{rows} rows intact"),
                None => "rows lost".into(),
            }
        )
    }
}

async fn data_claim_uid(cluster: &TestCluster) -> Result<Option<String>, Failed> {
    let claim = cluster
        .api::<PersistentVolumeClaim>()
        .get_opt(&format!("data-{NAME}-0"))
        .await
        .or_fail("read the data claim")?;
    Ok(claim.and_then(|c| c.uid()))
}

impl Scenario for DeletedStatefulSet {
    type Observation = Recovery;
    const NAME: &'static str = "DeletedStatefulSet";
    const TITLE: &'static str = "Its StatefulSet is deleted (real PostgreSQL, 3 rows written)";

    fn expected(_: LevelId) -> Recovery {
        Recovery {
            recreated: true,
            ready_again: true,
            same_volume: true,
            rows: Some(3),
        }
    }

    fn sandbox_config() -> SandboxConfig {
        real_postgres()
    }

    fn budget() -> std::time::Duration {
        std::time::Duration::from_secs(90)
    }

    async fn run(cluster: &TestCluster, level: LevelId) -> Result<Observed<Recovery>, Failed> {
        let operator = cluster.run_operator(level);
        create_ready(cluster, DbBuilder::manifest(NAME).build()).await?;
        write_three_rows(cluster).await?;
        let volume_before = data_claim_uid(cluster).await?;
        ensure(volume_before.is_some(), || {
            "a Ready database has no data claim".into()
        })?;
        let before = statefulset(cluster)
            .await?
            .ok_or_else(|| Failed::new("a Ready database has no StatefulSet"))?;
        let (uid, created) = (before.uid(), before.creation_timestamp());
        // A StatefulSet made in the same second as this one would carry the
        // same creationTimestamp: the deletion waits for the next second,
        // so that a new one can be told apart by its timestamp too.
        cluster
            .eventually(
                cluster.budget(),
                "a second has passed since the StatefulSet's creation",
                || async {
                    let now = k8s_openapi::jiff::Timestamp::now();
                    Ok(created
                        .as_ref()
                        .is_none_or(|c| now.as_second() > c.0.as_second())
                        .then_some(()))
                },
            )
            .await?;
        cluster
            .api::<StatefulSet>()
            .delete(NAME, &DeleteParams::default())
            .await
            .or_fail(format!("delete StatefulSet {NAME}"))?;
        let recreated = cluster
            .wait_for_object::<StatefulSet>(
                NAME,
                "recreated (a new uid and creationTimestamp)",
                |s| s.is_some_and(|s| s.uid() != uid && s.creation_timestamp() > created),
            )
            .await?
            .is_some();
        let db = cluster.wait_for(NAME, "Ready again", is_settled).await?;
        let observed = Recovery {
            recreated,
            ready_again: is_settled(&db),
            same_volume: data_claim_uid(cluster).await? == volume_before,
            rows: rows(cluster).await?,
        };
        operator.stop().await;
        Ok(Observed::Seen(observed))
    }
}
