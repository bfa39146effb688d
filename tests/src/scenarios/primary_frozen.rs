//! A database asked to run two instances has its primary frozen (SIGSTOP to
//! its server's processes, as on a node that stops answering) while a
//! client writes through the read-write Service: connections open, nothing
//! answers.
//!
//! Below Level 5, `spec.instances` is not implemented: one instance runs,
//! and the writes wait until the kubelet's liveness probe gives up on the
//! frozen container and restarts it (a minute). Level 5 counts the
//! primary as lost once its server stops answering, deletes the frozen pod
//! at once (grace period 0) and promotes its streaming replica; the old
//! primary's pod comes back as a replica. Either way no acknowledged write may be lost,
//! the read-write Service may never select two pods, and no two servers
//! may accept writes at once (see [`super::handover`]).

use std::time::Duration;

use sandbox::SandboxConfig;

use super::handover::{self, Event, Handover};
use super::{Observed, Scenario, real_postgres};
use crate::harness::{Failed, TestCluster};
use crate::levels::LevelId;

pub struct PrimaryFrozen;

impl Scenario for PrimaryFrozen {
    type Observation = Handover;
    const NAME: &'static str = "PrimaryFrozen";
    const TITLE: &'static str =
        "Its primary is frozen (SIGSTOP) while a client writes (real PostgreSQL, `instances: 2`)";

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
        Duration::from_secs(240)
    }

    async fn run(cluster: &TestCluster, level: LevelId) -> Result<Observed<Handover>, Failed> {
        handover::run(cluster, level, Event::Frozen).await
    }
}
