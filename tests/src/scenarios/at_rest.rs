//! Nothing changes and a reconcile runs: what does the operator write?

use std::fmt;

use super::steps::{NAME, create_ready};
use super::{Observed, Scenario};
use crate::builders::DbBuilder;
use crate::harness::{Failed, TestCluster, Writes};
use crate::levels::LevelId;

pub struct AtRest;

/// The writes a whole reconcile of a settled database made.
#[derive(Debug, PartialEq)]
pub struct AtRestWrites(pub Writes);

impl fmt::Display for AtRestWrites {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} writes", self.0.total())?;
        if self.0.total() > 0 {
            write!(f, " ({})", self.0.resources_except(&[]).join(", "))?;
        }
        Ok(())
    }
}

impl Scenario for AtRest {
    type Observation = AtRestWrites;
    const NAME: &'static str = "AtRest";
    const TITLE: &'static str = "Nothing changes and a reconcile runs";

    fn expected(_: LevelId) -> AtRestWrites {
        AtRestWrites(Writes::default())
    }

    async fn run(cluster: &TestCluster, level: LevelId) -> Result<Observed<AtRestWrites>, Failed> {
        if cluster.sandbox_handle().is_none() {
            return Ok(Observed::NotRun(
                "not measured (needs the sandbox's request counters)".into(),
            ));
        }
        let operator = cluster.run_operator(level);
        create_ready(cluster, DbBuilder::manifest(NAME).build()).await?;
        // Settle twice: the first lets the reconciles that made the
        // database end (and their requeues run); the second is a whole
        // reconcile of the settled database, which someone else's
        // annotation on its StatefulSet started.
        cluster.settle(NAME).await?;
        let writes = cluster.settle(NAME).await?.unwrap_or_default();
        operator.stop().await;
        Ok(Observed::Seen(AtRestWrites(writes)))
    }
}
