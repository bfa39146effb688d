//! The scenarios every level is put through, each with what every level is
//! expected to do.
//!
//! A scenario drives a cluster the way a user (or an accident) would and
//! returns what it observed as a typed value: only facts it read from the
//! cluster or a server, never a claim it did not check. Its expectation is
//! the same type, written once per level as data. The suite compares the
//! two, and renders the observations as the behaviour matrix in
//! `docs/behaviour-matrix.md`. Reading a row across the levels is the
//! course's lesson.
//!
//! Adding a scenario is one file in this directory, implementing
//! [`Scenario`], and one line in [`all`].

use std::fmt;
use std::future::Future;
use std::time::Duration;

use futures::future::BoxFuture;
use sandbox::SandboxConfig;

use crate::harness::{Failed, TestCluster, WAIT};
use crate::levels::LevelId;

pub mod anomaly_detected;
mod at_rest;
mod auto_tuned;
mod backup_restored;
mod bad_parameter_rolled_back;
mod connections_near_limit;
mod deleted_backup_then_delete;
mod deleted_statefulset;
mod deleted_under_policy;
mod edited_child;
mod failed_minor_upgrade;
mod failing_backup;
pub mod handover;
mod install;
pub mod instances;
mod invalid_spec;
mod major_upgrade_with_data;
pub mod metrics_served;
mod minor_upgrade;
mod operator_swap;
mod parameter_changed;
mod pause;
mod pod_hold;
mod primary_pod_deleted;
pub mod read_load_scaled;
mod restart_mid_backup;
mod restart_mid_reconcile;
mod restart_mid_upgrade;
mod restore_into_non_empty;
mod retention_series;
pub mod steps;
mod storage_auto_grown;
mod switchover;
mod unimplemented_section;
mod version_change;

pub use steps::{condition, is_settled};

/// What a scenario saw, or why it could not look on this cluster.
#[derive(Clone, Debug, PartialEq)]
pub enum Observed<T> {
    /// What the run read.
    Seen(T),
    /// The cluster lacks what the scenario needs (the sandbox's runtime
    /// or request counts): `not run (...)` or `not measured (...)`.
    NotRun(String),
}

/// A scenario: its steps and, per level, the observation expected.
pub trait Scenario {
    /// What the scenario observes; rendered as the matrix's cell.
    type Observation: fmt::Display + fmt::Debug + PartialEq + Send;
    /// Its name, as `PGDB_SCENARIOS` selects it.
    const NAME: &'static str;
    /// The matrix row's label.
    const TITLE: &'static str;

    /// What `level` is expected to do, as the observation it should make.
    fn expected(level: LevelId) -> Self::Observation;

    /// The sandbox the scenario needs.
    fn sandbox_config() -> SandboxConfig {
        SandboxConfig::default()
    }

    /// How long one of its waits may last: sized to the work (a first
    /// start on the simulated runtime, an initdb, a whole major upgrade),
    /// on a busy two-core machine.
    fn budget() -> Duration {
        WAIT
    }

    /// Runs the scenario against `level` on `cluster`. Any step whose
    /// action fails, or whose read fails, fails the run.
    fn run(
        cluster: &TestCluster,
        level: LevelId,
    ) -> impl Future<Output = Result<Observed<Self::Observation>, Failed>> + Send;
}

/// One run's result: the observation and the expectation, rendered.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    /// The observation as the matrix shows it (or why none was made).
    pub observed: String,
    /// The expected observation, rendered the same way.
    pub expected: String,
    /// Whether the observation is the expected one.
    pub matches: bool,
    /// The scenario could not run on this cluster.
    pub not_run: bool,
    /// On a mismatch, both observations in full (`Debug`): an observation
    /// can hold more than its cell shows.
    pub difference: Option<String>,
    /// What was seen, in full (`Debug`, one field a line), when the run
    /// made an observation.
    pub seen: Option<String>,
}

/// A scenario, with its types erased, as the suite lists them.
pub struct Entry {
    /// [`Scenario::NAME`].
    pub name: &'static str,
    /// [`Scenario::TITLE`].
    pub title: &'static str,
    /// [`Scenario::sandbox_config`].
    pub sandbox_config: fn() -> SandboxConfig,
    /// [`Scenario::budget`].
    pub budget: fn() -> Duration,
    run: for<'a> fn(&'a TestCluster, LevelId) -> BoxFuture<'a, Result<Outcome, Failed>>,
}

impl Entry {
    /// Runs the scenario against `level` and compares with the expectation.
    pub fn run<'a>(
        &self,
        cluster: &'a TestCluster,
        level: LevelId,
    ) -> BoxFuture<'a, Result<Outcome, Failed>> {
        (self.run)(cluster, level)
    }
}

fn run_and_compare<S: Scenario>(
    cluster: &TestCluster,
    level: LevelId,
) -> BoxFuture<'_, Result<Outcome, Failed>> {
    Box::pin(async move {
        let expected = S::expected(level);
        Ok(match S::run(cluster, level).await? {
            Observed::Seen(observed) => Outcome {
                matches: observed == expected,
                difference: (observed != expected)
                    .then(|| format!("expected {expected:?}\nobserved {observed:?}")),
                observed: observed.to_string(),
                expected: expected.to_string(),
                not_run: false,
                seen: Some(format!("{observed:#?}")),
            },
            Observed::NotRun(why) => Outcome {
                observed: why,
                expected: expected.to_string(),
                matches: false,
                not_run: true,
                difference: None,
                seen: None,
            },
        })
    })
}

fn entry<S: Scenario>() -> Entry {
    Entry {
        name: S::NAME,
        title: S::TITLE,
        sandbox_config: S::sandbox_config,
        budget: S::budget,
        run: run_and_compare::<S>,
    }
}

/// Every scenario, in the matrix's order.
pub fn all() -> Vec<Entry> {
    vec![
        entry::<install::Install>(),
        entry::<deleted_statefulset::DeletedStatefulSet>(),
        entry::<edited_child::EditedChild>(),
        entry::<pause::Pause>(),
        entry::<invalid_spec::InvalidSpec>(),
        entry::<minor_upgrade::MinorUpgrade>(),
        entry::<version_change::VersionLowered>(),
        entry::<restart_mid_reconcile::RestartMidReconcile>(),
        entry::<at_rest::AtRest>(),
        entry::<unimplemented_section::UnimplementedSection>(),
        entry::<version_change::MajorBump>(),
        entry::<failed_minor_upgrade::FailedMinorUpgrade>(),
        entry::<parameter_changed::ParameterChanged>(),
        entry::<operator_swap::OperatorSwap>(),
        entry::<restart_mid_upgrade::RestartMidUpgrade>(),
        entry::<major_upgrade_with_data::MajorUpgradeWithData>(),
        entry::<deleted_under_policy::DeletedRetain>(),
        entry::<deleted_under_policy::DeletedDelete>(),
        entry::<deleted_backup_then_delete::DeletedBackupThenDelete>(),
        entry::<backup_restored::BackupRestored>(),
        entry::<restore_into_non_empty::RestoreIntoNonEmpty>(),
        entry::<failing_backup::FailingBackup>(),
        entry::<retention_series::RetentionSeries>(),
        entry::<restart_mid_backup::RestartMidBackup>(),
        entry::<metrics_served::MetricsServed>(),
        entry::<connections_near_limit::ConnectionsNearLimit>(),
        entry::<primary_pod_deleted::PrimaryPodDeleted>(),
        entry::<switchover::Switchover>(),
        entry::<read_load_scaled::ReadLoadScaled>(),
        entry::<storage_auto_grown::StorageAutoGrown>(),
        entry::<auto_tuned::AutoTuned>(),
        entry::<bad_parameter_rolled_back::BadParameterRolledBack>(),
        entry::<anomaly_detected::AnomalyDetected>(),
    ]
}

/// The scenario `name` names, as `PGDB_SCENARIOS` and `pgdb-tour
/// --scenario` spell it.
pub fn find(name: &str) -> Option<Entry> {
    all().into_iter().find(|e| e.name == name)
}

/// The real-PostgreSQL runtime, for scenarios where data is at stake or
/// the operator speaks SQL.
pub fn real_postgres() -> SandboxConfig {
    SandboxConfig {
        runtime_kind: sandbox::RuntimeKind::Postgres,
        ..Default::default()
    }
}

/// The version of the databases whose backups a scenario takes: the
/// backup Job runs the server major's `pg_dump`, and the sandbox's client
/// tools are PostgreSQL 15's (`scripts/install-postgres.sh`).
pub const BACKUP_VERSION: &str = "15";

/// The version of the databases whose replicas a scenario runs: a replica
/// is cloned with the server major's `pg_basebackup` and rewound with its
/// `pg_rewind`, and the sandbox's client tools are PostgreSQL 15's, as for
/// backups.
pub const REPLICATION_VERSION: &str = BACKUP_VERSION;

/// `n kind` or `n kinds`.
pub fn count(n: usize, kind: &str) -> String {
    format!("{n} {kind}{}", if n == 1 { "" } else { "s" })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_scenario_has_its_own_name_and_title() {
        let entries = all();
        let mut names: Vec<&str> = entries.iter().map(|e| e.name).collect();
        let mut titles: Vec<&str> = entries.iter().map(|e| e.title).collect();
        names.sort();
        names.dedup();
        titles.sort();
        titles.dedup();
        assert_eq!(names.len(), entries.len());
        assert_eq!(titles.len(), entries.len());
    }
}
