//! A database asked to run two instances loses its primary's server (its
//! container is killed, as a crash would) while a client writes through
//! the read-write Service.
//!
//! Below Level 5, `spec.instances` is not implemented: one instance runs,
//! and the kubelet restarts the killed container; the writes stop until
//! its server has recovered. Level 5 counts the primary as lost and
//! promotes its streaming replica; the old primary comes back as a
//! replica. Either way no acknowledged write may be lost,
//! the read-write Service may never select two pods, and no two servers
//! may accept writes at once (see [`super::handover`]).

use std::time::Duration;

use sandbox::SandboxConfig;

use super::handover::{self, Event, Handover};
use super::{Observed, Scenario, real_postgres};
use crate::harness::{Failed, TestCluster};
use crate::levels::LevelId;

pub struct PrimaryServerKilled;

impl Scenario for PrimaryServerKilled {
    type Observation = Handover;
    const NAME: &'static str = "PrimaryServerKilled";
    const TITLE: &'static str =
        "Its primary's server is killed while a client writes (real PostgreSQL, `instances: 2`)";

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
        handover::run(cluster, level, Event::ServerKilled).await
    }
}
