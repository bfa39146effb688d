//! The version is changed in a way some levels refuse: lowered from 16.4
//! to 16.2, or raised from 16.4 to the next major, 17.

use std::fmt;

use super::steps::{NAME, condition, create_ready, current, live_image, patch_spec};
use super::{Observed, Scenario};
use crate::builders::DbBuilder;
use crate::harness::{Failed, TestCluster};
use crate::levels::LevelId;

pub struct VersionLowered;
pub struct MajorBump;

/// What the operator did with the change.
#[derive(Debug, PartialEq)]
pub enum Verdict {
    /// The StatefulSet runs the asked-for image.
    Accepted { image: String },
    /// Ready is False with a `Refused...` reason, as of the change's
    /// generation, and the StatefulSet kept its image.
    Refused { reason: String, image: String },
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Accepted { image } => write!(f, "accepted: image swapped to {image}"),
            Verdict::Refused { reason, image } => {
                write!(f, "refused: Ready=False {reason}; image kept at {image}")
            }
        }
    }
}

fn refused(reason: &str) -> Verdict {
    Verdict::Refused {
        reason: reason.into(),
        image: "postgres:16.4".into(),
    }
}

impl Scenario for VersionLowered {
    type Observation = Verdict;
    const NAME: &'static str = "VersionLowered";
    const TITLE: &'static str = "Its version is lowered from 16.4 to 16.2";

    fn expected(level: LevelId) -> Verdict {
        match level {
            LevelId::One => Verdict::Accepted {
                image: "postgres:16.2".into(),
            },
            LevelId::Two | LevelId::Three | LevelId::Four | LevelId::Five => {
                refused("RefusedDowngrade")
            }
        }
    }

    async fn run(cluster: &TestCluster, level: LevelId) -> Result<Observed<Verdict>, Failed> {
        change_version(cluster, level, "16.4", "16.2").await
    }
}

impl Scenario for MajorBump {
    type Observation = Verdict;
    const NAME: &'static str = "MajorBump";
    const TITLE: &'static str = "Its version goes from 16.4 to 17";

    fn expected(level: LevelId) -> Verdict {
        match level {
            LevelId::One => Verdict::Accepted {
                image: "postgres:17".into(),
            },
            LevelId::Two | LevelId::Three | LevelId::Four | LevelId::Five => {
                refused("RefusedMajorUpgrade")
            }
        }
    }

    async fn run(cluster: &TestCluster, level: LevelId) -> Result<Observed<Verdict>, Failed> {
        change_version(cluster, level, "16.4", "17").await
    }
}

/// Creates a database at `from`, asks for `to`, and reports whether the
/// operator swapped the image or refused the change.
async fn change_version(
    cluster: &TestCluster,
    level: LevelId,
    from: &str,
    to: &str,
) -> Result<Observed<Verdict>, Failed> {
    let operator = cluster.run_operator(level);
    create_ready(cluster, DbBuilder::manifest(NAME).version(from).build()).await?;
    let generation = patch_spec(cluster, serde_json::json!({ "version": to })).await?;
    let wanted = format!("postgres:{to}");
    let verdict = cluster
        .eventually(
            cluster.budget(),
            "the image is swapped or the change refused",
            || async {
                let image = live_image(cluster).await?.unwrap_or_default();
                if image == wanted {
                    return Ok(Some(Verdict::Accepted { image }));
                }
                // The refusal is the status a reconcile of the change writes
                // last: the image read after it is the one it left.
                let db = current(cluster).await?;
                let observed = db.status.as_ref().and_then(|s| s.observed_generation);
                match condition(&db, "Ready") {
                    Some((status, reason))
                        if status == "False"
                            && reason.starts_with("Refused")
                            && observed == Some(generation) =>
                    {
                        let image = live_image(cluster).await?.unwrap_or_default();
                        Ok(Some(Verdict::Refused { reason, image }))
                    }
                    _ => Ok(None),
                }
            },
        )
        .await?;
    operator.stop().await;
    Ok(Observed::Seen(verdict))
}
