//! The restore's decisions, without a cluster: which backup, the refusals,
//! the init container added to Level 1's StatefulSet, and how its verdict
//! reads into status.restore, the conditions and Events.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateTerminated, ContainerStatus, PersistentVolumeClaim, Pod,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use level1_install::api::{PgVersion, statefulset};
use shared::api::PostgresDB;
use shared::backup::{
    BackupLocation, BackupPhase, PostgresDBBackup, PostgresDBBackupSpec, PostgresDBBackupStatus,
    RestorePhase, RestoreSpec, RestoreStatus,
};
use shared::capability::{ApplyReport, Capability, Desired, Observed, StatusDraft};
use shared::conditions::READY;
use shared::names::common_labels;
use shared::testing::{DbBuilder, ObservedBuilder, PodBuilder, at, meta};

use super::plan::{INIT_CONTAINER, SOURCE_VOLUME, backup_dir, restoring_backup_in};
use super::source::Source;
use super::{Restore, standing};

/// `shop/copy` on 15, restoring `from`.
fn db(from: RestoreSpec) -> PostgresDB {
    let mut db = DbBuilder::named("copy").version("15").build();
    db.spec.restore = Some(from);
    db
}

fn from_backup(name: &str) -> RestoreSpec {
    RestoreSpec {
        from_backup: Some(name.into()),
        from_database: None,
    }
}

fn from_database(name: &str) -> RestoreSpec {
    RestoreSpec {
        from_backup: None,
        from_database: Some(name.into()),
    }
}

/// A backup of `database` named `name`, in `phase`, completed at `second`,
/// on the database's backup volume, dumped from 15.
fn backup(name: &str, database: &str, phase: BackupPhase, second: i64) -> PostgresDBBackup {
    let mut metadata = meta(name);
    metadata.labels = Some(common_labels(database));
    PostgresDBBackup {
        metadata,
        spec: PostgresDBBackupSpec {
            database: database.into(),
        },
        status: Some(PostgresDBBackupStatus {
            phase: Some(phase),
            completed_at: Some(Time(at(second))),
            server_version: Some("15.18".into()),
            location: Some(BackupLocation {
                volume: Some(format!("{database}-backups")),
                path: format!("/{name}/"),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

fn recorded(mut db: PostgresDB, backup: &str, phase: RestorePhase) -> PostgresDB {
    db.status.get_or_insert_with(Default::default).restore = Some(RestoreStatus {
        backup: backup.into(),
        phase,
        message: None,
        completed_at: None,
    });
    db
}

/// The database's pod with its restore init container terminated.
fn pod_after_restore(exit_code: i32, message: &str) -> Pod {
    let mut pod = PodBuilder::named("copy-0").phase("Pending").build();
    pod.status
        .get_or_insert_with(Default::default)
        .init_container_statuses = Some(vec![ContainerStatus {
        name: INIT_CONTAINER.into(),
        state: Some(ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code,
                message: Some(message.into()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }]);
    pod
}

/// Level 1's StatefulSet, then the restore's changes to it.
fn desire_over_level1(db: &PostgresDB, observed: &Observed) -> (Desired, Option<StatefulSet>) {
    let mut desired = Desired::default();
    desired
        .add(&statefulset(
            db,
            PgVersion::parse("15").expect("a version"),
            None,
        ))
        .expect("serialises");
    Restore
        .desire(db, observed, at(100), &mut desired)
        .expect("desires");
    let sts = desired
        .objects()
        .iter()
        .find(|o| o.resource.kind == "StatefulSet")
        .map(|o| serde_json::from_value(o.value.clone()).expect("a StatefulSet"));
    (desired, sts)
}

fn problems(db: &PostgresDB, observed: &Observed) -> Vec<(String, String)> {
    Restore
        .validate(db, observed)
        .into_iter()
        .map(|p| (p.field, p.reason))
        .collect()
}

fn assessed(db: &PostgresDB, observed: &Observed) -> StatusDraft {
    let mut status = StatusDraft {
        now: at(100),
        ..Default::default()
    };
    Restore.assess(db, observed, &ApplyReport::default(), &mut status);
    status
}

#[test]
fn a_new_database_restores_the_named_backup_in_an_init_container_before_the_server() {
    let db = db(from_backup("nightly"));
    let observed = ObservedBuilder::new()
        .with(&backup("nightly", "shop-db", BackupPhase::Completed, 10))
        .build();
    assert!(problems(&db, &observed).is_empty());
    let (desired, sts) = desire_over_level1(&db, &observed);
    let sts = sts.expect("the StatefulSet");
    assert_eq!(restoring_backup_in(&sts).as_deref(), Some("nightly"));
    let spec = sts.spec.and_then(|s| s.template.spec).expect("a pod spec");
    let init = &spec.init_containers.expect("init containers")[0];
    assert_eq!(init.name, INIT_CONTAINER);
    assert_eq!(init.image.as_deref(), Some("postgres:15"));
    let env: Vec<&str> = init.env.iter().flatten().map(|e| e.name.as_str()).collect();
    for name in [
        "PGDATA",
        "POSTGRES_PASSWORD",
        "POSTGRES_INITDB_ARGS",
        "APP_OWNER",
        "APP_PASSWORD",
        "BACKUP_DIR",
        "MARKER_DIR",
    ] {
        assert!(env.contains(&name), "{name} in {env:?}");
    }
    let source = spec
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == SOURCE_VOLUME)
        .and_then(|v| v.persistent_volume_claim.clone())
        .expect("the backup volume");
    assert_eq!(source.claim_name, "shop-db-backups");
    assert_eq!(source.read_only, Some(true));
    assert_eq!(desired.notes[0].reason, "RestoreStarted");
    let status = assessed(&db, &observed);
    assert_eq!(
        status.fields.restore.map(|r| (r.backup, r.phase)),
        Some(("nightly".to_string(), RestorePhase::Restoring))
    );
    assert!(!status.conditions.is_true(READY));
}

#[test]
fn the_backup_folder_is_the_location_s_path_on_the_backup_volume() {
    let source = |path: &str| Source {
        backup: "b1".into(),
        location: BackupLocation {
            volume: Some("v".into()),
            path: path.into(),
            ..Default::default()
        },
        server_version: None,
    };
    assert_eq!(
        backup_dir(&source("/b1/")),
        "/var/lib/postgresql/restore-source/b1"
    );
    assert_eq!(
        backup_dir(&source("b1")),
        "/var/lib/postgresql/restore-source/b1"
    );
    assert_eq!(
        backup_dir(&source("")),
        "/var/lib/postgresql/restore-source/b1"
    );
}

#[test]
fn from_a_database_the_newest_completed_backup_of_that_database_is_restored() {
    let db = db(from_database("shop-db"));
    let observed = ObservedBuilder::new()
        .with(&backup("old", "shop-db", BackupPhase::Completed, 10))
        .with(&backup("newest", "shop-db", BackupPhase::Completed, 30))
        .with(&backup("failed", "shop-db", BackupPhase::Failed, 40))
        .with(&backup("running", "shop-db", BackupPhase::Running, 50))
        .with(&backup("other", "other-db", BackupPhase::Completed, 60))
        .build();
    assert!(problems(&db, &observed).is_empty());
    let (_, sts) = desire_over_level1(&db, &observed);
    assert_eq!(
        sts.as_ref().and_then(restoring_backup_in).as_deref(),
        Some("newest")
    );
}

#[test]
fn an_unknown_backup_or_database_is_refused_naming_the_field_and_nothing_is_added() {
    let observed = ObservedBuilder::new().build();
    assert_eq!(
        problems(&db(from_backup("missing")), &observed),
        [(
            "spec.restore.fromBackup".to_string(),
            "RefusedUnknownBackup".to_string()
        )]
    );
    assert_eq!(
        problems(&db(from_database("gone")), &observed),
        [(
            "spec.restore.fromDatabase".to_string(),
            "RefusedUnknownDatabase".to_string()
        )]
    );
    let (desired, sts) = desire_over_level1(&db(from_backup("missing")), &observed);
    assert_eq!(sts.as_ref().and_then(restoring_backup_in), None);
    assert!(desired.notes.is_empty());
}

#[test]
fn a_backup_that_is_not_completed_is_refused() {
    let observed = ObservedBuilder::new()
        .with(&backup("b", "shop-db", BackupPhase::Running, 10))
        .build();
    assert_eq!(
        problems(&db(from_backup("b")), &observed),
        [(
            "spec.restore.fromBackup".to_string(),
            "RefusedBackupNotCompleted".to_string()
        )]
    );
}

#[test]
fn a_backup_of_a_newer_major_is_refused() {
    let mut newer = backup("b", "shop-db", BackupPhase::Completed, 10);
    newer.status.as_mut().expect("status").server_version = Some("16.4".into());
    let observed = ObservedBuilder::new().with(&newer).build();
    let refused = Restore.validate(&db(from_backup("b")), &observed);
    assert_eq!(refused[0].reason, "RefusedNewerMajor");
    assert!(
        refused[0].message.contains("16.4"),
        "{}",
        refused[0].message
    );
    // Into the same or a newer major, it restores.
    let mut later = db(from_backup("b"));
    later.spec.version = "16".into();
    assert!(Restore.validate(&later, &observed).is_empty());
}

#[test]
fn both_or_neither_source_is_invalid() {
    let both = RestoreSpec {
        from_backup: Some("b".into()),
        from_database: Some("d".into()),
    };
    let observed = ObservedBuilder::new().build();
    assert_eq!(
        problems(&db(both), &observed),
        [("spec.restore".to_string(), "InvalidRestore".to_string())]
    );
    assert_eq!(
        problems(&db(RestoreSpec::default()), &observed),
        [("spec.restore".to_string(), "InvalidRestore".to_string())]
    );
}

/// The data volume of `copy`'s pod 0.
fn data_volume() -> PersistentVolumeClaim {
    PersistentVolumeClaim {
        metadata: meta("data-copy-0"),
        ..Default::default()
    }
}

/// A Completed `nightly` backup, and `copy` already holding data.
fn holding_data() -> Observed {
    ObservedBuilder::new()
        .with(&backup("nightly", "shop-db", BackupPhase::Completed, 10))
        .with(&data_volume())
        .build()
}

#[test]
fn a_restore_into_a_database_that_holds_data_is_refused() {
    let db = db(from_backup("nightly"));
    let observed = holding_data();
    let refused = Restore.validate(&db, &observed);
    assert_eq!(refused.len(), 1);
    assert_eq!(
        (refused[0].field.as_str(), refused[0].reason.as_str()),
        ("spec.restore", "RefusedRestoreIntoExistingData")
    );
    assert!(refused[0].message.contains("PVC data-copy-0"));
    // The same volume made by this restore is no refusal: status records it,
    // or (before status was written) the live StatefulSet restores it.
    let restoring = recorded(db.clone(), "nightly", RestorePhase::Restoring);
    assert!(Restore.validate(&restoring, &observed).is_empty());
    let (_, sts) = desire_over_level1(
        &db,
        &ObservedBuilder::new()
            .with(&backup("nightly", "shop-db", BackupPhase::Completed, 10))
            .build(),
    );
    let observed = ObservedBuilder::new()
        .with(&backup("nightly", "shop-db", BackupPhase::Completed, 10))
        .with(&data_volume())
        .with(&sts.expect("the StatefulSet"))
        .build();
    assert!(Restore.validate(&db, &observed).is_empty());
}

#[test]
fn a_refused_restore_is_not_recorded_so_the_next_reconcile_refuses_it_again() {
    let db = db(from_backup("nightly"));
    let observed = holding_data();
    assert_eq!(Restore.validate(&db, &observed).len(), 1, "refused");
    // The core assesses every capability in a refused reconcile too: the
    // status it writes records no restore ...
    let status = assessed(&db, &observed);
    assert_eq!(status.fields.restore, None);
    assert!(status.conditions.get(READY).is_none());
    // ... so the next reconcile, reading that status, refuses again, and
    // nothing would add the restore to the StatefulSet.
    let mut next = db.clone();
    next.status.get_or_insert_with(Default::default).restore = status.fields.restore;
    assert_eq!(Restore.validate(&next, &observed).len(), 1, "refused again");
    let (_, sts) = desire_over_level1(&next, &observed);
    assert_eq!(sts.as_ref().and_then(restoring_backup_in), None);
}

#[test]
fn a_passing_result_verifies_the_restore_and_the_init_container_goes() {
    let db = recorded(
        db(from_backup("nightly")),
        "nightly",
        RestorePhase::Restoring,
    );
    let observed = ObservedBuilder::new()
        .with(&backup("nightly", "shop-db", BackupPhase::Completed, 10))
        .with(&pod_after_restore(
            0,
            r#"{"passed":true,"backup":"nightly","databases":2,"tables":4,"rows":1652,"message":"restored and verified backup nightly: 2 databases, 4 tables, 1652 rows"}"#,
        ))
        .build();
    let (desired, sts) = desire_over_level1(&db, &observed);
    assert_eq!(sts.as_ref().and_then(restoring_backup_in), None);
    assert_eq!(desired.notes[0].reason, "RestoreVerified");
    let status = assessed(&db, &observed);
    let restore = status.fields.restore.expect("status.restore");
    assert_eq!(restore.phase, RestorePhase::Verified);
    assert!(restore.message.unwrap_or_default().contains("1652 rows"));
    assert_eq!(restore.completed_at, Some(Time(at(100))));
    // Verified is final: the pod restarted without the init container keeps it.
    let verified = recorded(db.clone(), "nightly", RestorePhase::Verified);
    let fresh = ObservedBuilder::new().build();
    assert_eq!(
        standing(&verified, &fresh, at(200)).map(|r| r.phase),
        Some(RestorePhase::Verified)
    );
    let (desired, sts) = desire_over_level1(&verified, &fresh);
    assert_eq!(sts.as_ref().and_then(restoring_backup_in), None);
    assert!(desired.notes.is_empty());
}

#[test]
fn a_failed_verification_fails_the_restore_with_a_warning_and_ready_stays_false() {
    let db = recorded(
        db(from_backup("nightly")),
        "nightly",
        RestorePhase::Restoring,
    );
    let observed = ObservedBuilder::new()
        .with(&backup("nightly", "shop-db", BackupPhase::Completed, 10))
        .with(&pod_after_restore(
            1,
            r#"{"passed":false,"backup":"nightly","databases":1,"tables":4,"rows":1652,"message":"verification failed: table sales.orders of database shop has 999 rows restored, the backup recorded 1000","mismatch":{"database":"shop","schema":"sales","table":"orders"}}"#,
        ))
        .build();
    let (desired, sts) = desire_over_level1(&db, &observed);
    // The Warning Event is the Ready condition's, not a second one.
    assert!(desired.notes.is_empty(), "{:?}", desired.notes);
    // The init container stays: the pod does not serve a failed restore.
    assert_eq!(
        sts.as_ref().and_then(restoring_backup_in).as_deref(),
        Some("nightly")
    );
    let status = assessed(&db, &observed);
    assert_eq!(
        status.fields.restore.map(|r| r.phase),
        Some(RestorePhase::Failed)
    );
    let ready = status.conditions.get(READY).expect("Ready");
    assert_eq!(ready.reason, "RestoreFailed");
    assert!(ready.is_warning());
    assert!(ready.message.contains("sales.orders"), "{}", ready.message);
}

#[test]
fn a_restore_under_way_carries_on_when_its_backup_object_is_deleted() {
    let db = recorded(
        db(from_backup("nightly")),
        "nightly",
        RestorePhase::Restoring,
    );
    let with_backup = ObservedBuilder::new()
        .with(&backup("nightly", "shop-db", BackupPhase::Completed, 10))
        .build();
    let (_, sts) = desire_over_level1(&db, &with_backup);
    let live = sts.expect("the StatefulSet");
    let observed = ObservedBuilder::new().with(&live).build();
    assert!(Restore.validate(&db, &observed).is_empty());
    let (_, sts) = desire_over_level1(&db, &observed);
    assert_eq!(
        sts.as_ref().and_then(restoring_backup_in).as_deref(),
        Some("nightly")
    );
}

#[test]
fn a_database_without_spec_restore_is_left_alone() {
    let db = DbBuilder::named("plain").build();
    let observed = ObservedBuilder::new().build();
    assert!(Restore.observe(&db).is_empty());
    assert!(Restore.validate(&db, &observed).is_empty());
    assert!(assessed(&db, &observed).fields.restore.is_none());
}

#[test]
fn a_backup_in_s3_is_downloaded_with_the_bucket_s_credentials_and_no_volume() {
    let source = Source {
        backup: "b1".into(),
        location: BackupLocation {
            s3: Some("s3://backups/pg/shop/shop-db/b1/".into()),
            endpoint: Some("http://s3.storage:9000".into()),
            credentials_secret: Some("s3-keys".into()),
            region: Some("eu-central-1".into()),
            path: "pg/shop/shop-db/b1/".into(),
            ..Default::default()
        },
        server_version: None,
    };
    let (env, mounts) = super::plan::source_access(&source);
    let names: Vec<&str> = env.iter().map(|e| e.name.as_str()).collect();
    let mut unique = names.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), names.len(), "each variable once: {names:?}");
    // The bucket's region as the backup recorded it, and the backup Job's
    // own rclone configuration.
    assert_eq!(
        value_of(&env, "RCLONE_CONFIG_DEST_REGION").as_deref(),
        Some("eu-central-1")
    );
    let s3 = shared::backup::S3Destination {
        endpoint: "http://s3.storage:9000".into(),
        bucket: "backups".into(),
        prefix: None,
        region: Some("eu-central-1".into()),
        credentials_secret: "s3-keys".into(),
    };
    for expected in crate::lifecycle::backup_controller::job::rclone_env(&s3) {
        assert!(env.contains(&expected), "{expected:?} in {names:?}");
    }
    let value = |name: &str| value_of(&env, name);
    assert_eq!(value("S3_BUCKET").as_deref(), Some("backups"));
    assert_eq!(value("S3_PATH").as_deref(), Some("pg/shop/shop-db/b1"));
    assert_eq!(
        value("RCLONE_CONFIG_DEST_ENDPOINT").as_deref(),
        Some("http://s3.storage:9000")
    );
    let key = env
        .iter()
        .find(|e| e.name == "RCLONE_CONFIG_DEST_ACCESS_KEY_ID")
        .and_then(|e| e.value_from.clone())
        .and_then(|v| v.secret_key_ref)
        .map(|s| (s.name, s.key));
    assert_eq!(key, Some(("s3-keys".into(), "AWS_ACCESS_KEY_ID".into())));
    assert!(mounts.is_empty());
    assert!(
        super::plan::init_volumes(&source)
            .iter()
            .all(|v| v.name != SOURCE_VOLUME)
    );
}

fn value_of(env: &[k8s_openapi::api::core::v1::EnvVar], name: &str) -> Option<String> {
    env.iter()
        .find(|e| e.name == name)
        .and_then(|e| e.value.clone())
}
