//! The spec names a major version no level supports: the operator refuses
//! it, names the field, and creates nothing.

use std::fmt;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};

use super::steps::condition;
use super::{Observed, Scenario};
use crate::builders::DbBuilder;
use crate::harness::{Failed, OrFail, TestCluster};
use crate::levels::LevelId;

pub struct InvalidSpec;

const NAME: &str = "legacy";

/// The Ready condition of the refused database, and what exists of it.
#[derive(Debug, PartialEq)]
pub struct Refusal {
    /// `Ready`'s status and reason.
    pub ready: (String, String),
    /// The field its message names first.
    pub field: String,
    /// Children that exist anyway, as `Kind/name`.
    pub created: Vec<String>,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (status, reason) = &self.ready;
        write!(
            f,
            "refused: Ready={status} {reason} naming {}; {}",
            self.field,
            if self.created.is_empty() {
                "nothing created".to_string()
            } else {
                format!("created {}", self.created.join(", "))
            }
        )
    }
}

impl Scenario for InvalidSpec {
    type Observation = Refusal;
    const NAME: &'static str = "InvalidSpec";
    const TITLE: &'static str = "Its version is an unsupported major (12)";

    fn expected(_: LevelId) -> Refusal {
        Refusal {
            ready: ("False".into(), "InvalidVersion".into()),
            field: "spec.version".into(),
            created: vec![],
        }
    }

    async fn run(cluster: &TestCluster, level: LevelId) -> Result<Observed<Refusal>, Failed> {
        let operator = cluster.run_operator(level);
        cluster
            .create(&DbBuilder::manifest(NAME).version("12").build())
            .await
            .or_fail(format!("create PostgresDB {NAME}"))?;
        // The refusal is in the status a reconcile writes last: by then it
        // has created whatever it was going to.
        let db = cluster
            .wait_for(NAME, "refused", |db| {
                condition(db, "Ready")
                    .is_some_and(|(s, r)| s == "False" && r.starts_with("Invalid"))
                    && db.status.as_ref().and_then(|s| s.observed_generation)
                        == db.metadata.generation
            })
            .await?;
        let ready = db
            .status
            .as_ref()
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready").cloned())
            .ok_or_else(|| Failed::new("the refused database has no Ready condition"))?;
        let field = ready
            .message
            .split(':')
            .next()
            .unwrap_or_default()
            .to_string();
        let mut created = Vec::new();
        let selector = shared::names::instance_selector(NAME);
        let list = kube::api::ListParams::default().labels(&selector);
        macro_rules! existing {
            ($kind:ty) => {
                for object in cluster
                    .api::<$kind>()
                    .list(&list)
                    .await
                    .or_fail(format!("list the {}s of {NAME}", stringify!($kind)))?
                    .items
                {
                    created.push(format!(
                        "{}/{}",
                        stringify!($kind),
                        object.metadata.name.unwrap_or_default()
                    ));
                }
            };
        }
        existing!(Secret);
        existing!(ConfigMap);
        existing!(Service);
        existing!(StatefulSet);
        operator.stop().await;
        Ok(Observed::Seen(Refusal {
            ready: (ready.status, ready.reason),
            field,
            created,
        }))
    }
}
