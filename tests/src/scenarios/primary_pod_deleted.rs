//! A database asked to run two instances loses its primary's pod (someone
//! deletes it) while a client writes through the read-write Service.
//!
//! Below Level 5, `spec.instances` is not implemented: one instance runs,
//! and the StatefulSet recreates the deleted pod on the same volume; the
//! writes stop until its server is back. Level 5 runs a streaming replica
//! and promotes it: writes go on on the replica, and the old primary's pod
//! comes back as a replica. Either way no acknowledged write may be lost,
//! the read-write Service may never select two pods, and no two servers
//! may accept writes at once (see [`super::handover`]).

use std::time::Duration;

use sandbox::SandboxConfig;

use super::handover::{self, Event, Handover};
use super::{Observed, Scenario, real_postgres};
use crate::harness::{Failed, TestCluster};
use crate::levels::LevelId;

pub struct PrimaryPodDeleted;

impl Scenario for PrimaryPodDeleted {
    type Observation = Handover;
    const NAME: &'static str = "PrimaryPodDeleted";
    const TITLE: &'static str =
        "Its primary's pod is deleted while a client writes (real PostgreSQL, `instances: 2`)";

    fn expected(level: LevelId) -> Handover {
        match level {
            LevelId::One | LevelId::Two | LevelId::Three | LevelId::Four => {
                Handover::single_instance()
            }
            LevelId::Five => Handover::promoted("Failover"),
        }
    }

    fn sandbox_config() -> SandboxConfig {
        real_postgres()
    }

    fn budget() -> Duration {
        Duration::from_secs(180)
    }

    async fn run(cluster: &TestCluster, level: LevelId) -> Result<Observed<Handover>, Failed> {
        handover::run(cluster, level, Event::PodDeleted).await
    }
}
