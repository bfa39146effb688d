//! Level 1's operator is replaced by this level's on a running database:
//! the new operator takes it over without rewriting what is already right.

use std::fmt;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::ResourceExt;
use kube::api::Api;

use super::steps::{NAME, children, create_ready, is_settled};
use super::{Observed, Scenario};
use crate::builders::DbBuilder;
use crate::harness::{Failed, OrFail, TestCluster, Writes};
use crate::levels::LevelId;

pub struct OperatorSwap;

/// What the new operator changed, once reconciles it began had ended.
#[derive(Debug, PartialEq)]
pub struct TakeOver {
    /// Children written: by the sandbox's request counts (`patch
    /// configmaps`), and by a new resourceVersion (`ConfigMap/orders-config`;
    /// the StatefulSet's aside, which the settle's touches change).
    pub rewritten: Vec<String>,
    /// Children the new operator made that the old one never had (Level
    /// 3's PodDisruptionBudget), `Kind/name`: written once, as an
    /// addition, not a rewrite.
    pub added: Vec<String>,
    /// Writes to the database's own object (its status): observed, not
    /// shown in the matrix, where the claim is about children.
    pub database_writes: Vec<String>,
    /// The database's pod has the uid it had under the old operator.
    pub pod_kept: bool,
    /// Container restarts of the database's pods.
    pub restarts: i32,
}

impl fmt::Display for TakeOver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.rewritten.is_empty() {
            write!(f, "no child rewritten")?;
        } else {
            write!(f, "rewritten: {}", self.rewritten.join(", "))?;
        }
        if !self.added.is_empty() {
            write!(f, "; added {}", self.added.join(", "))?;
        }
        write!(
            f,
            "; {}, {} restarts",
            if self.pod_kept {
                "the pod kept running"
            } else {
                "the pod was replaced"
            },
            self.restarts
        )
    }
}

/// `Kind/name@resourceVersion` of every child.
async fn versions(cluster: &TestCluster) -> Result<Vec<String>, Failed> {
    let mut versions = Vec::new();
    macro_rules! versions_of {
        ($kind:ty) => {
            for object in children::<$kind>(cluster).await? {
                versions.push(format!(
                    "{}/{}@{}",
                    stringify!($kind),
                    object.name_any(),
                    object.resource_version().unwrap_or_default()
                ));
            }
        };
    }
    versions_of!(Secret);
    versions_of!(ConfigMap);
    versions_of!(Service);
    versions_of!(StatefulSet);
    Ok(versions)
}

/// The operator-wide Grafana dashboard ConfigMap (Level 4 applies it in
/// the operator's namespace, `default` for an operator run by the
/// harness), by its resourceVersion; `None` while it does not exist.
async fn dashboard_version(cluster: &TestCluster) -> Result<Option<String>, Failed> {
    let configmaps: Api<ConfigMap> =
        Api::namespaced(cluster.client(), shared::runner::DEFAULT_OPERATOR_NAMESPACE);
    Ok(configmaps
        .get_opt(DASHBOARD)
        .await
        .or_fail(format!("read ConfigMap {DASHBOARD}"))?
        .and_then(|c| c.resource_version()))
}

/// The dashboard ConfigMap's name (docs/level4-insights.md).
const DASHBOARD: &str = "pgdb-operator-dashboard";

/// The names of the database's PodDisruptionBudgets.
async fn budgets(cluster: &TestCluster) -> Result<Vec<String>, Failed> {
    Ok(children::<PodDisruptionBudget>(cluster)
        .await?
        .into_iter()
        .map(|b| b.name_any())
        .collect())
}

/// Each pod's uid and container restarts.
async fn pods(cluster: &TestCluster) -> Result<Vec<(String, i32)>, Failed> {
    Ok(children::<Pod>(cluster)
        .await?
        .into_iter()
        .map(|pod| {
            let restarts = pod
                .status
                .as_ref()
                .and_then(|s| s.container_statuses.as_ref())
                .map(|c| c.iter().map(|c| c.restart_count).sum())
                .unwrap_or(0);
            (pod.uid().unwrap_or_default(), restarts)
        })
        .collect())
}

impl Scenario for OperatorSwap {
    type Observation = TakeOver;
    const NAME: &'static str = "OperatorSwap";
    const TITLE: &'static str = "The Level 1 operator running it is replaced by this level's";

    fn expected(level: LevelId) -> TakeOver {
        TakeOver {
            rewritten: vec![],
            added: match level {
                LevelId::One | LevelId::Two => vec![],
                LevelId::Three | LevelId::Four | LevelId::Five => {
                    vec![format!("PodDisruptionBudget/{NAME}")]
                }
            },
            // Level 2 reports more in status than Level 1 and names itself
            // in the SpecImplemented condition: its first reconcile writes
            // the status, and nothing else.
            database_writes: match level {
                LevelId::One => vec![],
                LevelId::Two | LevelId::Three | LevelId::Four | LevelId::Five => {
                    vec!["patch postgresdbs/status".into()]
                }
            },
            pod_kept: true,
            restarts: 0,
        }
    }

    async fn run(cluster: &TestCluster, level: LevelId) -> Result<Observed<TakeOver>, Failed> {
        // Only the sandbox's request counts show that the new operator's
        // reconciles have run to their end; without them, "nothing was
        // rewritten" could be read before the new operator did anything.
        if cluster.sandbox_handle().is_none() {
            return Ok(Observed::NotRun(
                "not measured (needs the sandbox's request counters)".into(),
            ));
        }
        let first = cluster.run_operator(LevelId::One);
        create_ready(cluster, DbBuilder::manifest(NAME).build()).await?;
        // Level 1's reconciles of the new database end before it stops.
        cluster.settle(NAME).await?;
        first.stop().await;
        let versions_before = versions(cluster).await?;
        let budgets_before = budgets(cluster).await?;
        let pods_before = pods(cluster).await?;
        let dashboard_before = dashboard_version(cluster).await?;
        let counts_before = cluster.sandbox_handle().map(|s| s.counters().snapshot());
        let second = cluster.run_operator(level);
        // The new operator reconciles the database when it starts; settling
        // makes sure every reconcile it began has ended (the touches of the
        // settle are the tests' own, and not counted).
        cluster.settle(NAME).await?;
        let after = cluster.sandbox_handle().map(|s| s.counters().snapshot());
        cluster
            .wait_for(NAME, "Ready under the new operator", is_settled)
            .await?;
        let versions_after = versions(cluster).await?;
        let added: Vec<String> = budgets(cluster)
            .await?
            .into_iter()
            .filter(|b| !budgets_before.contains(b))
            .map(|b| format!("PodDisruptionBudget/{b}"))
            .collect();
        let pods_after = pods(cluster).await?;
        second.stop().await;
        let (Some(before), Some(after)) = (counts_before, after) else {
            return Err(Failed::new("the sandbox's request counts are gone"));
        };
        let mut writes = Writes::between(&before, &after);
        writes.discount("patch", "statefulsets", 2);
        // Level 4 applies its dashboard ConfigMap in the operator's
        // namespace when it starts: an operator-wide object, not one of the
        // database's children (whose ConfigMap's resourceVersion is
        // compared below). Read after the counts, so a write that came
        // after them is discounted from nothing.
        if dashboard_version(cluster).await? != dashboard_before {
            writes.discount("patch", "configmaps", 1);
            writes.discount("create", "configmaps", 1);
        }
        let database = ["postgresdbs", "postgresdbs/status"];
        let database_writes = writes
            .0
            .keys()
            .filter(|(_, r)| database.contains(&r.as_str()))
            .map(|(v, r)| format!("{v} {r}"))
            .collect();
        // Children by the request counts, and by resourceVersion too (a
        // write the counts missed would still show there).
        // A budget written where none was before is the addition above.
        let mut except = vec!["postgresdbs", "postgresdbs/status", "events"];
        if budgets_before.is_empty() && !added.is_empty() {
            except.push("poddisruptionbudgets");
        }
        let mut rewritten = writes.resources_except(&except);
        rewritten.extend(
            versions_after
                .iter()
                .filter(|v| !versions_before.contains(v))
                .map(|v| v.split('@').next().unwrap_or_default().to_string())
                .filter(|v| v != &format!("StatefulSet/{NAME}")),
        );
        Ok(Observed::Seen(TakeOver {
            rewritten,
            added,
            database_writes,
            pod_kept: !pods_before.is_empty()
                && pods_before
                    .iter()
                    .map(|p| &p.0)
                    .eq(pods_after.iter().map(|p| &p.0)),
            restarts: pods_after.iter().map(|p| p.1).sum(),
        }))
    }
}
