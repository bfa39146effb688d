//! Clients hold most of a real server's connections open, then close
//! them: does the level say so on the database?
//!
//! The database allows 10 connections, 3 of them reserved for superusers
//! (PostgreSQL's default `superuser_reserved_connections`), so clients may
//! open 7; the scenario holds 6 (86%, above Level 4's threshold of 80% of
//! the usable connections), then closes them. Level 4 measures every
//! database on an interval (one second here, `--metrics-interval`) and
//! reports the symptom as the condition `ConnectionsSaturated`, True while
//! the connections are held and False once they are closed, with one
//! Event each way; lower levels measure nothing and say nothing.

use std::fmt;
use std::time::Duration;

use sandbox::SandboxConfig;
use shared::api::PostgresDB;
use shared::runner::RunOptions;

use super::steps::{NAME, condition, create_ready, current};
use super::{Observed, Scenario, real_postgres};
use crate::builders::DbBuilder;
use crate::connect::{Role, connect};
use crate::harness::{Failed, OrFail, TestCluster};
use crate::levels::LevelId;

pub struct ConnectionsNearLimit;

/// The condition Level 4 reports the symptom with.
const CONDITION: &str = "ConnectionsSaturated";

/// `max_connections` of the scenario's database.
const MAX_CONNECTIONS: &str = "10";

/// The client connections held open: 6 of the 7 usable.
const HELD: usize = 6;

/// How often the operator measures the database in this scenario.
const INTERVAL: Duration = Duration::from_secs(1);

/// What the database said while the connections were held, and after.
#[derive(Debug, PartialEq)]
pub struct Saturation {
    /// The condition's status while they were held (`None`: no such
    /// condition).
    pub while_held: Option<String>,
    /// `status.insights.maxConnections` then: the connections clients may
    /// open.
    pub usable: Option<i64>,
    /// `status.insights.connections` then counted at least the held ones.
    pub counted_held: bool,
    /// The condition's status once they were closed.
    pub after_release: Option<String>,
    /// Events about connections on the database since the connections
    /// were opened (an Event repeated as a series counts each time).
    pub events: usize,
}

impl fmt::Display for Saturation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(held) = &self.while_held else {
            write!(f, "no {CONDITION} condition")?;
            if self.usable.is_none() {
                write!(f, ", no status.insights")?;
            }
            return write!(f, "; {}", event_count(self.events));
        };
        write!(f, "{CONDITION} {held} while {HELD} were held")?;
        if let Some(usable) = self.usable {
            write!(
                f,
                " (status.insights: {} of {usable} usable)",
                if self.counted_held {
                    format!("{HELD}+")
                } else {
                    "fewer than held".into()
                }
            )?;
        }
        write!(
            f,
            ", {} once closed; {}",
            self.after_release.as_deref().unwrap_or("absent"),
            event_count(self.events)
        )
    }
}

fn event_count(n: usize) -> String {
    match n {
        0 => "no Event".into(),
        n => super::count(n, "Event"),
    }
}

/// The condition's status, `None` when the database has no such condition.
fn status_of(db: &PostgresDB) -> Option<String> {
    condition(db, CONDITION).map(|(status, _)| status)
}

/// Reads the database until `done` says its condition is final, at most
/// the cluster's budget; returns it as it was then.
async fn read_until(
    cluster: &TestCluster,
    done: impl Fn(Option<&str>) -> bool,
) -> Result<PostgresDB, Failed> {
    let deadline = tokio::time::Instant::now() + cluster.budget();
    loop {
        let db = current(cluster).await?;
        if done(status_of(&db).as_deref()) || tokio::time::Instant::now() >= deadline {
            return Ok(db);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Events about connections on the database created at or after `since`.
async fn connection_events(cluster: &TestCluster, since: jiff::Timestamp) -> Result<usize, Failed> {
    Ok(cluster
        .event_objects(NAME)
        .await?
        .into_iter()
        .filter(|e| {
            let about = format!(
                "{} {}",
                e.reason.as_deref().unwrap_or_default(),
                e.note.as_deref().unwrap_or_default()
            );
            about.to_lowercase().contains("connection")
        })
        .filter(|e| {
            e.metadata
                .creation_timestamp
                .as_ref()
                .is_none_or(|t| t.0 >= since)
        })
        .map(|e| e.series.map_or(1, |s| s.count.max(1) as usize))
        .sum())
}

impl Scenario for ConnectionsNearLimit {
    type Observation = Saturation;
    const NAME: &'static str = "ConnectionsNearLimit";
    const TITLE: &'static str =
        "Clients hold 6 of its 7 usable connections, then close them (real PostgreSQL)";

    fn expected(level: LevelId) -> Saturation {
        match level {
            LevelId::One | LevelId::Two | LevelId::Three => Saturation {
                while_held: None,
                usable: None,
                counted_held: false,
                after_release: None,
                events: 0,
            },
            LevelId::Four | LevelId::Five => Saturation {
                while_held: Some("True".into()),
                usable: Some(7),
                counted_held: true,
                after_release: Some("False".into()),
                events: 2,
            },
        }
    }

    fn sandbox_config() -> SandboxConfig {
        real_postgres()
    }

    fn budget() -> Duration {
        Duration::from_secs(90)
    }

    async fn run(cluster: &TestCluster, level: LevelId) -> Result<Observed<Saturation>, Failed> {
        let options = RunOptions {
            metrics_interval: Some(INTERVAL),
            ..Default::default()
        };
        let operator = cluster.run_operator_with(level, options);
        let db = DbBuilder::manifest(NAME)
            .version("15")
            .parameter("max_connections", MAX_CONNECTIONS)
            .build();
        create_ready(cluster, db).await?;
        // Event times are whole seconds: anything from the second before.
        let since = jiff::Timestamp::now() - jiff::SignedDuration::from_secs(1);
        let mut held = Vec::new();
        for n in 1..=HELD {
            let client = connect(cluster, Role::Owner, NAME)
                .await
                .ok_or_else(|| Failed::new("the database has no Service or owner's Secret"))?;
            client
                .simple_query("SELECT 1")
                .await
                .or_fail(format!("use client connection {n}"))?;
            held.push(client);
        }
        // A level that reports the symptom has the condition from its
        // first reconcile (Unknown until a measurement, False while
        // measured and absent): wait for True; a level without it has no
        // such condition, and there is nothing to wait for.
        let during = read_until(cluster, |s| s.is_none_or(|s| s == "True")).await?;
        let insights = during.status.as_ref().and_then(|s| s.insights.clone());
        drop(held);
        let after = read_until(cluster, |s| s != Some("True")).await?;
        // The reconcile that cleared it has ended, its Event with it.
        cluster.settle(NAME).await?;
        let events = connection_events(cluster, since).await?;
        operator.stop().await;
        Ok(Observed::Seen(Saturation {
            while_held: status_of(&during),
            usable: insights.as_ref().and_then(|i| i.max_connections),
            counted_held: insights
                .as_ref()
                .and_then(|i| i.connections)
                .is_some_and(|c| c >= HELD as i64),
            after_release: status_of(&after),
            events,
        }))
    }
}
