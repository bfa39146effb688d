//! A load far above what the database usually carries, then its end: does
//! the level notice, against the database's own learned baseline?
//!
//! The database asks for anomaly detection with a short interval (a
//! sample every 5 s, a warm-up of 12, a deviation of 2 samples in a row),
//! the operator measuring every second (`--metrics-interval`). Once the
//! baseline is learned at rest, pgbench runs `SELECT 1` with 4 clients
//! against the primary, thousands of transactions a second where the
//! database at rest has a few; the load stops once the condition says so
//! (or after two minutes). Level 5 learns the baseline and sets the
//! condition `Anomaly` True naming the metric, then False once the load
//! stops, with a Warning Event and a Normal one; lower levels report
//! `spec.anomalyDetection` as not implemented and have no such condition.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use sandbox::SandboxConfig;
use shared::api::PostgresDB;
use shared::autopilot::anomaly::AnomalyDetectionSpec;
use shared::runner::RunOptions;
use shared::sql::DatabaseAccess;

use super::steps::{NAME, condition, create_ready};
use super::{Observed, Scenario, real_postgres};
use crate::builders::DbBuilder;
use crate::connect::{Role, login};
use crate::harness::{Failed, OrFail, TestCluster};
use crate::levels::LevelId;

pub struct AnomalyDetected;

/// The condition Level 5 reports a deviation with.
pub const CONDITION: &str = "Anomaly";

/// The scenario's anomaly detection: a sample every 5 s, 12 to warm up,
/// 4 σ, 2 samples in a row.
pub fn detection() -> AnomalyDetectionSpec {
    AnomalyDetectionSpec {
        interval_seconds: 5,
        warm_up_samples: 12,
        threshold_sigmas: 4,
        sustain_samples: 2,
    }
}

/// What each pgbench client runs: a statement active for 50 ms, so the
/// clients' connections are active nearly all the time at little CPU.
/// (Their transactions reach `pg_stat_database` only when a busy backend
/// flushes its statistics, which PostgreSQL 15 was seen to do a minute
/// apart under a steady load; `SELECT 1` as fast as possible showed no
/// active connection and no transaction for a minute.)
pub const LOAD_SCRIPT: &str = "SELECT pg_sleep(0.05);\n";

/// pgbench, running [`LOAD_SCRIPT`] with `clients` clients against the pod
/// `<name>-0` as the owner for at most `seconds`, and the file its output
/// goes to.
pub struct Pgbench {
    child: tokio::process::Child,
    log: PathBuf,
}

impl Pgbench {
    /// Starts it.
    pub async fn start(
        cluster: &TestCluster,
        name: &str,
        clients: u32,
        seconds: u32,
    ) -> Result<Self, Failed> {
        let pod = cluster
            .api::<Pod>()
            .get(&format!("{name}-0"))
            .await
            .or_fail("read the primary's pod")?;
        let ip = pod
            .status
            .and_then(|s| s.pod_ip)
            .ok_or_else(|| Failed::new("the primary's pod has no IP"))?;
        let config = login(cluster, Role::Owner, name, None)
            .await
            .ok_or_else(|| Failed::new("the owner's Secret is missing"))?;
        let user = config.get_user().unwrap_or_default().to_string();
        let password =
            String::from_utf8_lossy(config.get_password().unwrap_or_default()).to_string();
        let dbname = config.get_dbname().unwrap_or_default().to_string();
        let unique = format!(
            "{}-{}",
            std::process::id(),
            jiff::Timestamp::now().as_nanosecond()
        );
        let script = std::env::temp_dir().join(format!("load-{unique}.sql"));
        std::fs::write(&script, LOAD_SCRIPT).or_fail("write the pgbench script")?;
        let log = std::env::temp_dir().join(format!("pgbench-{unique}.log"));
        let output = std::fs::File::create(&log).or_fail("create pgbench's log")?;
        let errors = output.try_clone().or_fail("duplicate a file handle")?;
        let child = tokio::process::Command::new("pgbench")
            .args(["-h", &ip, "-p", "5432", "-U", &user, "-n"])
            .args(["-c", &clients.to_string(), "-T", &seconds.to_string()])
            .arg("-f")
            .arg(&script)
            .arg(&dbname)
            .env("PGPASSWORD", password)
            .stdout(output)
            .stderr(errors)
            .kill_on_drop(true)
            .spawn()
            .or_fail("start pgbench")?;
        Ok(Self { child, log })
    }

    /// Whether it still runs, and what it said: for a failure's message.
    pub fn state(&mut self) -> String {
        describe(self.child.try_wait(), &self.log)
    }

    /// Stops it.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

fn describe(status: std::io::Result<Option<std::process::ExitStatus>>, log: &Path) -> String {
    let state = match status {
        Ok(None) => "pgbench runs".to_string(),
        Ok(Some(exit)) => format!("pgbench ended ({exit})"),
        Err(error) => format!("pgbench's state is unknown ({error})"),
    };
    format!(
        "{state}; its output:\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    )
}

/// What the database said about the load.
#[derive(Debug, PartialEq)]
pub struct Detection {
    /// `SpecImplemented` once Ready.
    pub implemented: bool,
    /// The condition's reason at rest once learned (`None`: no condition).
    pub at_rest: Option<String>,
    /// Its status under the load.
    pub under_load: Option<String>,
    /// Under the load, its message named the active connections.
    pub named_the_metric: bool,
    /// Its status once the load stopped.
    pub after_load: Option<String>,
    /// The anomaly Events' reasons, in order (once each).
    pub events: Vec<String>,
}

impl fmt::Display for Detection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.implemented {
            write!(f, "spec.anomalyDetection not implemented; ")?;
        }
        let Some(at_rest) = &self.at_rest else {
            return write!(f, "no {CONDITION} condition");
        };
        write!(
            f,
            "{CONDITION} False ({at_rest}) at rest, {} under load{}, {} once it stopped",
            self.under_load.as_deref().unwrap_or("absent"),
            if self.named_the_metric {
                " naming activeConnections"
            } else {
                ""
            },
            self.after_load.as_deref().unwrap_or("absent"),
        )?;
        if !self.events.is_empty() {
            write!(f, "; Events {}", self.events.join(", "))?;
        }
        Ok(())
    }
}

fn status_of(db: &PostgresDB) -> Option<String> {
    condition(db, CONDITION).map(|(status, _)| status)
}

fn message_of(db: &PostgresDB) -> String {
    db.status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == CONDITION))
        .map(|c| c.message.clone())
        .unwrap_or_default()
}

/// The reasons of the anomaly Events about the database, oldest first,
/// each once.
async fn anomaly_events(cluster: &TestCluster) -> Result<Vec<String>, Failed> {
    let mut reasons: Vec<String> = Vec::new();
    for event in cluster.event_objects(NAME).await? {
        let reason = event.reason.unwrap_or_default();
        if ["BaselineLearned", "AnomalyDetected", "AnomalyCleared"].contains(&reason.as_str())
            && !reasons.contains(&reason)
        {
            reasons.push(reason);
        }
    }
    Ok(reasons)
}

impl Scenario for AnomalyDetected {
    type Observation = Detection;
    const NAME: &'static str = "AnomalyDetected";
    const TITLE: &'static str =
        "A pgbench load far above its learned baseline, then its end (real PostgreSQL)";

    fn expected(level: LevelId) -> Detection {
        match level {
            LevelId::One | LevelId::Two | LevelId::Three | LevelId::Four => Detection {
                implemented: false,
                at_rest: None,
                under_load: None,
                named_the_metric: false,
                after_load: None,
                events: Vec::new(),
            },
            LevelId::Five => Detection {
                implemented: true,
                at_rest: Some("WithinBaseline".into()),
                under_load: Some("True".into()),
                named_the_metric: true,
                after_load: Some("False".into()),
                events: vec![
                    "BaselineLearned".into(),
                    "AnomalyDetected".into(),
                    "AnomalyCleared".into(),
                ],
            },
        }
    }

    fn sandbox_config() -> SandboxConfig {
        real_postgres()
    }

    fn budget() -> Duration {
        // A first start, then a warm-up of 12 samples 5 s apart.
        Duration::from_secs(240)
    }

    async fn run(cluster: &TestCluster, level: LevelId) -> Result<Observed<Detection>, Failed> {
        let operator = cluster.run_operator_with(
            level,
            RunOptions {
                database_access: DatabaseAccess::Direct,
                metrics_interval: Some(Duration::from_secs(1)),
                ..Default::default()
            },
        );
        let db = DbBuilder::manifest(NAME)
            .version("15")
            .anomaly_detection(detection())
            .build();
        let ready = create_ready(cluster, db).await?;
        let implemented = condition(&ready, "SpecImplemented").is_some_and(|(s, _)| s == "True");
        if !implemented {
            // Nothing learns a baseline: there is no condition to wait for.
            operator.stop().await;
            return Ok(Observed::Seen(Detection {
                implemented,
                at_rest: condition(&ready, CONDITION).map(|(_, reason)| reason),
                under_load: None,
                named_the_metric: false,
                after_load: None,
                events: anomaly_events(cluster).await?,
            }));
        }
        let learned = cluster
            .wait_for(NAME, "within its learned baseline", |db| {
                condition(db, CONDITION).is_some_and(|(s, r)| s == "False" && r == "WithinBaseline")
            })
            .await?;
        let mut load = Pgbench::start(cluster, NAME, 4, 120).await?;
        let during = cluster
            .wait_for(NAME, "anomalous", |db| {
                status_of(db).as_deref() == Some("True")
            })
            .await;
        let during = match during {
            Ok(db) => db,
            Err(failed) => {
                let state = load.state();
                load.stop().await;
                return Err(Failed::new(format!("{failed}\n{state}")));
            }
        };
        load.stop().await;
        let after = cluster
            .wait_for(NAME, "back within its baseline", |db| {
                status_of(db).as_deref() == Some("False")
            })
            .await?;
        // Events are published before the status is written: the clearing's
        // is in.
        let events = anomaly_events(cluster).await?;
        operator.stop().await;
        Ok(Observed::Seen(Detection {
            implemented,
            at_rest: condition(&learned, CONDITION).map(|(_, reason)| reason),
            under_load: status_of(&during),
            named_the_metric: message_of(&during).contains("activeConnections"),
            after_load: status_of(&after),
            events,
        }))
    }
}
