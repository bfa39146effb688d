//! The database is paused, its Service deleted, then resumed: a paused
//! operator changes nothing, and resuming repairs what was left.

use std::fmt;

use k8s_openapi::api::core::v1::Service;
use kube::api::DeleteParams;
use shared::api::Phase;

use super::steps::{NAME, create_ready, patch_spec};
use super::{Observed, Scenario};
use crate::builders::DbBuilder;
use crate::harness::{Failed, OrFail, TestCluster};
use crate::levels::LevelId;

pub struct Pause;

/// The Service after a reconcile that began after its deletion, and after
/// resuming.
#[derive(Debug, PartialEq)]
pub struct Paused {
    /// Absent when a reconcile that read the cluster after the deletion
    /// had ended (it wrote the new observedGeneration).
    pub left_deleted: bool,
    /// Present again after resuming.
    pub recreated_on_resume: bool,
}

impl fmt::Display for Paused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Service {} while paused; {} on resume",
            if self.left_deleted {
                "left deleted"
            } else {
                "recreated"
            },
            if self.recreated_on_resume {
                "recreated"
            } else {
                "still missing"
            }
        )
    }
}

impl Scenario for Pause {
    type Observation = Paused;
    const NAME: &'static str = "Pause";
    const TITLE: &'static str = "It is paused, its Service deleted, then resumed";

    fn expected(_: LevelId) -> Paused {
        Paused {
            left_deleted: true,
            recreated_on_resume: true,
        }
    }

    async fn run(cluster: &TestCluster, level: LevelId) -> Result<Observed<Paused>, Failed> {
        let operator = cluster.run_operator(level);
        create_ready(cluster, DbBuilder::manifest(NAME).build()).await?;
        let generation = patch_spec(cluster, serde_json::json!({"paused": true})).await?;
        cluster
            .wait_for(NAME, "Paused", |db| {
                let status = db.status.as_ref();
                status.and_then(|s| s.phase) == Some(Phase::Paused)
                    && status.and_then(|s| s.observed_generation) == Some(generation)
            })
            .await?;
        cluster
            .api::<Service>()
            .delete(NAME, &DeleteParams::default())
            .await
            .or_fail(format!("delete Service {NAME}"))?;
        // The synchronisation point: a spec change made after the deletion
        // (one a paused operator must not act on either) is seen in
        // status.observedGeneration only once a reconcile that read the
        // cluster after the deletion has ended: the status is its last write.
        let generation = patch_spec(
            cluster,
            serde_json::json!({"parameters": {"work_mem": "8MB"}}),
        )
        .await?;
        cluster
            .wait_for(NAME, "observed while paused", |db| {
                db.status.as_ref().and_then(|s| s.observed_generation) == Some(generation)
            })
            .await?;
        let left_deleted = cluster
            .api::<Service>()
            .get_opt(NAME)
            .await
            .or_fail(format!("read Service {NAME}"))?
            .is_none();
        // Resumed with the spec it had before the pause.
        patch_spec(
            cluster,
            serde_json::json!({"paused": false, "parameters": {"work_mem": null}}),
        )
        .await?;
        let recreated = cluster
            .wait_for_object::<Service>(NAME, "recreated after resuming", |s| s.is_some())
            .await?
            .is_some();
        operator.stop().await;
        Ok(Observed::Seen(Paused {
            left_deleted,
            recreated_on_resume: recreated,
        }))
    }
}
