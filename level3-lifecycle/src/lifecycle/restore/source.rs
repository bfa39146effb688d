//! Which backup a restore reads, and the refusals that keep it from
//! touching anything.
//!
//! `spec.restore.fromBackup` names a `PostgresDBBackup` of the namespace;
//! `fromDatabase` names a `PostgresDB` (which may be deleted since) whose
//! newest Completed backup is taken, found by the database's instance label
//! and the backup's `spec.database`. Once a restore has started, the backup
//! it started from is the one `status.restore` records, so a newer backup
//! of the source database appearing meanwhile changes nothing.
//!
//! A restore is refused, naming the field, when the backup is unknown, not
//! Completed, has no files recorded, or comes from a newer major than
//! `spec.version` (a dump restores into the same or a newer major only), and
//! when the database already holds data: its StatefulSet or its data volume
//! exists, and neither `status.restore` nor the StatefulSet's restore init
//! container records this restore.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::ResourceExt;
use level1_install::api::{Names, PRIMARY_ORDINAL, PgVersion};
use shared::api::PostgresDB;
use shared::backup::{BackupLocation, BackupPhase, PostgresDBBackup};
use shared::capability::{Observed, SpecProblem};

use super::plan::restoring_backup_in;

/// The backup a restore reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Source {
    /// The `PostgresDBBackup`'s name.
    pub backup: String,
    /// Where its files are.
    pub location: BackupLocation,
    /// The server version it dumped, when recorded.
    pub server_version: Option<String>,
}

impl Source {
    /// The source a Completed backup's status records, when it records
    /// where its files are.
    pub fn of(backup: &PostgresDBBackup) -> Option<Self> {
        let status = backup.status.as_ref()?;
        let location = status
            .location
            .clone()
            .filter(|l| l.volume.is_some() || l.s3.is_some())?;
        Some(Self {
            backup: backup.name_any(),
            location,
            server_version: status.server_version.clone(),
        })
    }
}

/// The field a restore's source is named in.
pub fn source_field(db: &PostgresDB) -> &'static str {
    match db.spec.restore.as_ref() {
        Some(r) if r.from_backup.is_none() && r.from_database.is_some() => {
            "spec.restore.fromDatabase"
        }
        _ => "spec.restore.fromBackup",
    }
}

/// The name of the backup `spec.restore` asks for, or why there is none.
fn wanted_backup(db: &PostgresDB, observed: &Observed) -> Result<String, SpecProblem> {
    if let Some(recorded) = db.status.as_ref().and_then(|s| s.restore.as_ref()) {
        return Ok(recorded.backup.clone());
    }
    let Some(restore) = db.spec.restore.as_ref() else {
        return Err(SpecProblem::new(
            "spec.restore",
            "InvalidRestore",
            "no restore is asked for",
        ));
    };
    let namespace = db.namespace().unwrap_or_else(|| "default".into());
    match (&restore.from_backup, &restore.from_database) {
        (Some(backup), None) => Ok(backup.clone()),
        (None, Some(source)) => newest_completed(observed, source).ok_or_else(|| {
            SpecProblem::new(
                "spec.restore.fromDatabase",
                "RefusedUnknownDatabase",
                format!(
                    "PostgresDB {source} has no Completed PostgresDBBackup in namespace {namespace} (listed by the label pgdb.example.com/instance={source}); nothing was created"
                ),
            )
        }),
        _ => Err(SpecProblem::new(
            "spec.restore",
            "InvalidRestore",
            "set exactly one of spec.restore.fromBackup and spec.restore.fromDatabase",
        )),
    }
}

/// The newest Completed backup of the database `source` among those observed.
pub fn newest_completed(observed: &Observed, source: &str) -> Option<String> {
    observed
        .all::<PostgresDBBackup>()
        .into_iter()
        .filter(|b| b.spec.database == source)
        .filter(|b| b.status.as_ref().and_then(|s| s.phase) == Some(BackupPhase::Completed))
        .max_by_key(|b| {
            let completed = b
                .status
                .as_ref()
                .and_then(|s| s.completed_at.as_ref())
                .map(|t| t.0);
            let created = b.metadata.creation_timestamp.as_ref().map(|t| t.0);
            (completed, created, b.name_any())
        })
        .map(|b| b.name_any())
}

/// The leading major number of a version ("16.4", "15.18 (Debian ...)").
fn major_of(version: &str) -> Option<u32> {
    let digits: String = version.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// The backup `spec.restore` reads, checked, or the refusal.
pub fn resolve(db: &PostgresDB, observed: &Observed) -> Result<Source, SpecProblem> {
    let field = source_field(db);
    let name = wanted_backup(db, observed)?;
    let namespace = db.namespace().unwrap_or_else(|| "default".into());
    let Some(backup) = observed.get::<PostgresDBBackup>(&name) else {
        return Err(SpecProblem::new(
            field,
            "RefusedUnknownBackup",
            format!(
                "PostgresDBBackup {name} does not exist in namespace {namespace}; nothing was created"
            ),
        ));
    };
    let status = backup.status.clone().unwrap_or_default();
    if status.phase != Some(BackupPhase::Completed) {
        let phase = status
            .phase
            .map(|p| format!("{p:?}"))
            .unwrap_or_else(|| "not started".into());
        return Err(SpecProblem::new(
            field,
            "RefusedBackupNotCompleted",
            format!(
                "PostgresDBBackup {name} is {phase}: only a Completed backup is restored; nothing was created"
            ),
        ));
    }
    let Some(location) = status
        .location
        .clone()
        .filter(|l| l.volume.is_some() || l.s3.is_some())
    else {
        return Err(SpecProblem::new(
            field,
            "RefusedBackupNotCompleted",
            format!(
                "PostgresDBBackup {name} records no location for its files; nothing was created"
            ),
        ));
    };
    if let (Some(dumped), Some(target)) = (
        status.server_version.as_deref().and_then(major_of),
        PgVersion::parse(&db.spec.version),
    ) && dumped > target.major
    {
        return Err(SpecProblem::new(
            field,
            "RefusedNewerMajor",
            format!(
                "PostgresDBBackup {name} was dumped from PostgreSQL {} (major {dumped}), newer than spec.version {}: a dump restores only into the same or a newer major; set spec.version to {dumped} or later",
                status.server_version.clone().unwrap_or_default(),
                db.spec.version
            ),
        ));
    }
    Ok(Source {
        backup: name,
        location,
        server_version: status.server_version,
    })
}

/// Why the database cannot be restored into because it already holds data:
/// its StatefulSet or data volume exists, and no record says this restore
/// made them. `None` when it is new, or the data is this restore's.
pub fn existing_data(db: &PostgresDB, observed: &Observed, backup: &str) -> Option<SpecProblem> {
    let recorded = db
        .status
        .as_ref()
        .and_then(|s| s.restore.as_ref())
        .is_some_and(|r| r.backup == backup);
    let names = Names::of(db);
    let live = observed.get::<StatefulSet>(&names.primary);
    let set_up_by_this_restore = live
        .as_ref()
        .and_then(restoring_backup_in)
        .is_some_and(|b| b == backup);
    if recorded || set_up_by_this_restore {
        return None;
    }
    let claim = names.data_claim(PRIMARY_ORDINAL);
    let evidence = if observed.get::<PersistentVolumeClaim>(&claim).is_some() {
        format!("its data volume, PVC {claim}, exists")
    } else if live.is_some() {
        format!("its StatefulSet {} exists", names.primary)
    } else {
        return None;
    };
    Some(SpecProblem::new(
        "spec.restore",
        "RefusedRestoreIntoExistingData",
        format!(
            "PostgresDB {} already holds data ({evidence}) and status.restore records no restore of {backup}: a restore only initialises a new database and never overwrites one; create a new PostgresDB with spec.restore instead",
            db.name_any()
        ),
    ))
}
