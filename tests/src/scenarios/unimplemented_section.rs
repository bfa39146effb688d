//! The spec uses a section (`upgrade`) only higher levels implement: a
//! level that does not implement it says so, and serves the rest.

use std::fmt;

use super::edited_child::reason_of;
use super::steps::{NAME, create_ready, is_settled};
use super::{Observed, Scenario};
use crate::builders::DbBuilder;
use crate::harness::{Failed, TestCluster};
use crate::levels::LevelId;

pub struct UnimplementedSection;

/// The SpecImplemented condition and what came with it.
#[derive(Debug, PartialEq)]
pub enum Implemented {
    /// `SpecImplemented=False`, naming the field, with a Warning.
    No {
        field: String,
        warning: Option<String>,
        ready: bool,
    },
    /// `SpecImplemented=True`.
    Yes { ready: bool },
}

impl fmt::Display for Implemented {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Implemented::No {
                field,
                warning,
                ready,
            } => write!(
                f,
                "SpecImplemented=False ({field}); {}; {}",
                match warning {
                    Some(reason) => format!("Warning {reason}"),
                    None => "no Event".into(),
                },
                if *ready { "still Ready" } else { "not Ready" }
            ),
            Implemented::Yes { ready } => write!(
                f,
                "SpecImplemented=True; {}",
                if *ready { "Ready" } else { "not Ready" }
            ),
        }
    }
}

impl Scenario for UnimplementedSection {
    type Observation = Implemented;
    const NAME: &'static str = "UnimplementedSection";
    const TITLE: &'static str = "Its spec sets `upgrade`, a Level 2 section";

    fn expected(level: LevelId) -> Implemented {
        match level {
            LevelId::One => Implemented::No {
                field: "spec.upgrade".into(),
                warning: Some("SectionNotImplemented".into()),
                ready: true,
            },
            LevelId::Two | LevelId::Three | LevelId::Four | LevelId::Five => {
                Implemented::Yes { ready: true }
            }
        }
    }

    async fn run(cluster: &TestCluster, level: LevelId) -> Result<Observed<Implemented>, Failed> {
        let operator = cluster.run_operator(level);
        let mut db = DbBuilder::manifest(NAME).build();
        db.spec.upgrade = Some(shared::api::UpgradeSpec::default());
        let db = create_ready(cluster, db).await?;
        let condition = db
            .status
            .as_ref()
            .and_then(|s| {
                s.conditions
                    .iter()
                    .find(|c| c.type_ == "SpecImplemented")
                    .cloned()
            })
            .ok_or_else(|| Failed::new("a Ready database has no SpecImplemented condition"))?;
        let ready = is_settled(&db);
        let observed = if condition.status == "False" {
            let warning = cluster
                .wait_for_event(NAME, "a Warning", |e| e.starts_with("Warning "))
                .await?;
            Implemented::No {
                field: condition
                    .message
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_string(),
                warning: reason_of(&warning),
                ready,
            }
        } else if condition.status == "True" {
            Implemented::Yes { ready }
        } else {
            return Err(Failed::new(format!(
                "SpecImplemented is {}: {}",
                condition.status, condition.message
            )));
        };
        operator.stop().await;
        Ok(Observed::Seen(observed))
    }
}
