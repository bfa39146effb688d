//! A `PostgresDB` is created: every level makes the same children.

use std::fmt;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};

use super::steps::{NAME, children, create_ready, is_settled};
use super::{Observed, Scenario, count};
use crate::builders::DbBuilder;
use crate::harness::{Failed, TestCluster};
use crate::levels::LevelId;

pub struct Install;

/// Whether the database became Ready, and the children it owns by kind.
#[derive(Debug, PartialEq)]
pub struct Made {
    pub ready: bool,
    pub secrets: usize,
    pub config_maps: usize,
    pub services: usize,
    pub statefulsets: usize,
}

impl fmt::Display for Made {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}; {}, {}, {}, {} created",
            if self.ready { "Ready" } else { "not Ready" },
            count(self.secrets, "Secret"),
            count(self.config_maps, "ConfigMap"),
            count(self.services, "Service"),
            count(self.statefulsets, "StatefulSet")
        )
    }
}

impl Scenario for Install {
    type Observation = Made;
    const NAME: &'static str = "Install";
    const TITLE: &'static str = "A PostgresDB is created";

    fn expected(_: LevelId) -> Made {
        Made {
            ready: true,
            secrets: 2,
            config_maps: 1,
            services: 2,
            statefulsets: 1,
        }
    }

    async fn run(cluster: &TestCluster, level: LevelId) -> Result<Observed<Made>, Failed> {
        let operator = cluster.run_operator(level);
        let db = create_ready(cluster, DbBuilder::manifest(NAME).build()).await?;
        let made = Made {
            ready: is_settled(&db),
            secrets: children::<Secret>(cluster).await?.len(),
            config_maps: children::<ConfigMap>(cluster).await?.len(),
            services: children::<Service>(cluster).await?.len(),
            statefulsets: children::<StatefulSet>(cluster).await?.len(),
        };
        operator.stop().await;
        Ok(Observed::Seen(made))
    }
}
