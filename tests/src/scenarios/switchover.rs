//! A database asked to run two instances is asked to move its primary to
//! the other one (`spec.primary: orders-1`) while a client writes through
//! the read-write Service.
//!
//! Below Level 5, `spec.instances` and `spec.primary` are not implemented:
//! one instance runs and stays the primary. Level 5 switches over: the
//! replica catches up, the primary is stopped gracefully, the replica is
//! promoted, and the old primary comes back as a replica, with no
//! acknowledged write lost (see [`super::handover`]).

use std::time::Duration;

use sandbox::SandboxConfig;

use super::handover::{self, Event, Handover};
use super::{Observed, Scenario, real_postgres};
use crate::harness::{Failed, TestCluster};
use crate::levels::LevelId;

pub struct Switchover;

impl Scenario for Switchover {
    type Observation = Handover;
    const NAME: &'static str = "Switchover";
    const TITLE: &'static str = "`spec.primary` names the other instance while a client writes (real PostgreSQL, `instances: 2`)";

    fn expected(level: LevelId) -> Handover {
        match level {
            LevelId::One | LevelId::Two | LevelId::Three | LevelId::Four => {
                Handover::single_instance()
            }
            LevelId::Five => Handover::promoted("Switchover"),
        }
    }

    fn sandbox_config() -> SandboxConfig {
        real_postgres()
    }

    fn budget() -> Duration {
        Duration::from_secs(180)
    }

    async fn run(cluster: &TestCluster, level: LevelId) -> Result<Observed<Handover>, Failed> {
        handover::run(cluster, level, Event::Switchover).await
    }
}
