//! Someone edits the generated ConfigMap by hand: the operator reverts the
//! edit and says so with a Warning.

use std::fmt;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Patch, PatchParams};

use super::steps::{NAME, create_ready};
use super::{Observed, Scenario};
use crate::builders::DbBuilder;
use crate::harness::{Failed, OrFail, TestCluster};
use crate::levels::LevelId;

pub struct EditedChild;

/// Whether the edit was undone, and the Warning published about it.
#[derive(Debug, PartialEq)]
pub struct Repair {
    pub reverted: bool,
    /// The reason of the Warning about the database, if one came.
    pub warning: Option<String>,
}

impl fmt::Display for Repair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}; {}",
            if self.reverted {
                "edit reverted"
            } else {
                "edit kept"
            },
            match &self.warning {
                Some(reason) => format!("Warning {reason}"),
                None => "no Event".into(),
            }
        )
    }
}

const EDIT: &str = "edited by hand\n";

impl Scenario for EditedChild {
    type Observation = Repair;
    const NAME: &'static str = "EditedChild";
    const TITLE: &'static str = "Its ConfigMap is edited by hand";

    fn expected(_: LevelId) -> Repair {
        Repair {
            reverted: true,
            warning: Some("DriftRepaired".into()),
        }
    }

    async fn run(cluster: &TestCluster, level: LevelId) -> Result<Observed<Repair>, Failed> {
        let operator = cluster.run_operator(level);
        create_ready(cluster, DbBuilder::manifest(NAME).build()).await?;
        let config = format!("{NAME}-config");
        let patch = serde_json::json!({"data": {"postgresql.conf": EDIT}});
        let edited = cluster
            .api::<ConfigMap>()
            .patch(&config, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .or_fail(format!("edit ConfigMap {config}"))?;
        let conf = |c: Option<&ConfigMap>| {
            c.and_then(|c| c.data.as_ref()?.get("postgresql.conf").cloned())
        };
        crate::harness::ensure(conf(Some(&edited)).as_deref() == Some(EDIT), || {
            format!("the edit did not take: {edited:?}")
        })?;
        let restored = cluster
            .wait_for_object::<ConfigMap>(&config, "restored", |c| {
                conf(c).is_some_and(|conf| conf != EDIT && conf.contains("listen_addresses"))
            })
            .await?;
        // Events are published after the write they report.
        let warning = cluster
            .wait_for_event(NAME, "a Warning", |e| e.starts_with("Warning "))
            .await?;
        operator.stop().await;
        Ok(Observed::Seen(Repair {
            reverted: restored.is_some(),
            warning: reason_of(&warning),
        }))
    }
}

/// The reason of an Event described as `Type Reason: note`.
pub fn reason_of(event: &str) -> Option<String> {
    event.split([' ', ':']).nth(1).map(str::to_string)
}
