//! The deletion policy's decisions, from observed objects.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimVolumeSource, Pod, PodSpec, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::ApiResource;
use shared::backup::{
    BackupPhase, DeletionPolicy, PostgresDBBackup, PostgresDBBackupSpec, PostgresDBBackupStatus,
};
use shared::capability::{Capability, Desired, EventType, Finalized, Observed};
use shared::finalizer::{self, FinalizerChange};
use shared::keys::{INSTANCE_LABEL, MAJOR_LABEL, NEVER_PRUNE_ANNOTATION, VOLUME_LABEL};
use shared::names::common_labels;
use shared::testing::{DbBuilder, ObservedBuilder, at, meta};

use super::{Deletion, final_backup_name, finalize};

fn db(policy: Option<DeletionPolicy>) -> shared::PostgresDB {
    let mut builder = DbBuilder::named("orders");
    if let Some(policy) = policy {
        builder = builder.deletion_policy(policy);
    }
    builder.build()
}

fn deleting(policy: DeletionPolicy) -> shared::PostgresDB {
    DbBuilder::named("orders")
        .deletion_policy(policy)
        .being_deleted(at(1_800_000_000))
        .build()
}

fn claim(name: &str, role: Option<&str>) -> PersistentVolumeClaim {
    let mut metadata = meta(name);
    let mut labels = common_labels("orders");
    if let Some(role) = role {
        labels.insert(VOLUME_LABEL.into(), role.into());
        labels.insert(MAJOR_LABEL.into(), "15".into());
    }
    metadata.labels = Some(labels);
    PersistentVolumeClaim {
        metadata,
        ..Default::default()
    }
}

fn being_deleted(mut claim: PersistentVolumeClaim) -> PersistentVolumeClaim {
    claim.metadata.deletion_timestamp = Some(Time(at(1_800_000_001)));
    claim
}

fn pod_mounting(name: &str, claim: &str) -> Pod {
    let mut metadata = meta(name);
    metadata.labels = Some(BTreeMap::from([(INSTANCE_LABEL.into(), "orders".into())]));
    Pod {
        metadata,
        spec: Some(PodSpec {
            volumes: Some(vec![Volume {
                name: "data".into(),
                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                    claim_name: claim.into(),
                    read_only: None,
                }),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn statefulset() -> StatefulSet {
    StatefulSet {
        metadata: meta("orders"),
        ..Default::default()
    }
}

fn backup(name: &str, phase: Option<BackupPhase>) -> PostgresDBBackup {
    let mut backup = PostgresDBBackup::new(
        name,
        PostgresDBBackupSpec {
            database: "orders".into(),
        },
    );
    backup.metadata = meta(name);
    backup.metadata.labels = Some(common_labels("orders"));
    backup.status = Some(PostgresDBBackupStatus {
        phase,
        error: (phase == Some(BackupPhase::Failed))
            .then(|| "pg_dump: error: connection to server failed".into()),
        ..Default::default()
    });
    backup
}

fn final_name() -> String {
    final_backup_name(&deleting(DeletionPolicy::BackupThenDelete)).expect("being deleted")
}

/// Runs the finalize step; the deletions as (kind, name), and the verdict.
fn run(
    db: &shared::PostgresDB,
    observed: &Observed,
) -> (Vec<(String, String)>, Finalized, Desired) {
    let mut desired = Desired::default();
    let verdict = finalize(db, observed, &mut desired).expect("finalizes");
    let deletions = desired
        .deletions()
        .iter()
        .map(|d| (d.resource.kind.clone(), d.name.clone()))
        .collect();
    (deletions, verdict, desired)
}

fn kind_name(kind: &str, name: &str) -> (String, String) {
    (kind.to_string(), name.to_string())
}

fn reasons(desired: &Desired) -> Vec<(EventType, String)> {
    desired
        .notes
        .iter()
        .map(|n| (n.type_, n.reason.clone()))
        .collect()
}

#[test]
fn retain_is_the_default_and_needs_no_finalizer() {
    assert!(!Deletion.needs_finalizer(&db(None)));
    assert!(!Deletion.needs_finalizer(&db(Some(DeletionPolicy::Retain))));
    assert!(Deletion.needs_finalizer(&db(Some(DeletionPolicy::Delete))));
    assert!(Deletion.needs_finalizer(&db(Some(DeletionPolicy::BackupThenDelete))));
}

#[test]
fn level_3_adds_the_finalizer_for_a_policy_with_work_to_do_and_level_2_never_does() {
    let delete = db(Some(DeletionPolicy::Delete));
    assert_eq!(
        finalizer::change(&crate::level(), &delete),
        Some(FinalizerChange::Add)
    );
    assert_eq!(finalizer::change(&crate::level(), &db(None)), None);
    assert_eq!(finalizer::change(&level2_upgrade::level(), &delete), None);
}

#[test]
fn changing_the_policy_back_to_retain_takes_the_finalizer_off() {
    let mut retain = db(Some(DeletionPolicy::Retain));
    retain.metadata.finalizers = Some(vec![finalizer::FINALIZER.into()]);
    assert_eq!(
        finalizer::change(&crate::level(), &retain),
        Some(FinalizerChange::Remove)
    );
}

#[test]
fn a_database_at_rest_costs_no_read_and_one_being_deleted_is_observed() {
    assert!(
        Deletion
            .observe(&db(Some(DeletionPolicy::Delete)))
            .is_empty()
    );
    assert!(
        Deletion
            .observe(&DbBuilder::named("orders").being_deleted(at(1)).build())
            .is_empty(),
        "Retain has nothing to read"
    );
    assert_eq!(Deletion.observe(&deleting(DeletionPolicy::Delete)).len(), 5);
}

#[test]
fn retain_lets_the_database_go_and_deletes_nothing() {
    let observed = ObservedBuilder::new()
        .with(&claim("data-orders-0", None))
        .with(&backup("orders-1", Some(BackupPhase::Completed)))
        .build();
    let db = DbBuilder::named("orders")
        .being_deleted(at(1_800_000_000))
        .build();
    let (deletions, verdict, _) = run(&db, &observed);
    assert!(deletions.is_empty());
    assert_eq!(verdict, Finalized::Done);
}

#[test]
fn delete_deletes_the_backups_first_and_keeps_the_backup_volume_until_they_are_gone() {
    let observed = ObservedBuilder::new()
        .with(&claim("data-orders-0", None))
        .with(&claim("orders-backups", None))
        .with(&backup("orders-1", Some(BackupPhase::Completed)))
        .with(&backup("orders-2", Some(BackupPhase::Failed)))
        .build();
    let (deletions, verdict, desired) = run(&deleting(DeletionPolicy::Delete), &observed);
    assert!(deletions.contains(&kind_name("PostgresDBBackup", "orders-1")));
    assert!(deletions.contains(&kind_name("PostgresDBBackup", "orders-2")));
    assert!(deletions.contains(&kind_name("PersistentVolumeClaim", "data-orders-0")));
    assert!(
        !deletions.contains(&kind_name("PersistentVolumeClaim", "orders-backups")),
        "the backups' finalizer may need their files: {deletions:?}"
    );
    let Finalized::Pending(why) = verdict else {
        panic!("done with backups left");
    };
    assert!(why.contains("orders-1"), "{why}");
    assert!(reasons(&desired).contains(&(EventType::Normal, "BackupsDeleted".into())));

    let backups_gone = ObservedBuilder::new()
        .with(&being_deleted(claim("data-orders-0", None)))
        .with(&claim("orders-backups", None))
        .build();
    let (deletions, _, _) = run(&deleting(DeletionPolicy::Delete), &backups_gone);
    assert_eq!(
        deletions,
        [kind_name("PersistentVolumeClaim", "orders-backups")]
    );
}

#[test]
fn delete_stops_the_server_before_deleting_a_volume_a_pod_mounts() {
    let observed = ObservedBuilder::new()
        .with(&claim("data-orders-0", None))
        .with(&pod_mounting("orders-0", "data-orders-0"))
        .with(&statefulset())
        .build();
    let (deletions, verdict, desired) = run(&deleting(DeletionPolicy::Delete), &observed);
    assert_eq!(deletions, [kind_name("StatefulSet", "orders")]);
    assert!(matches!(&verdict, Finalized::Pending(why) if why.contains("mounted by pod orders-0")));
    assert!(reasons(&desired).contains(&(EventType::Normal, "ServerStopping".into())));
}

#[test]
fn delete_takes_every_data_volume_a_previous_majors_and_the_pre_upgrade_dump() {
    let observed = ObservedBuilder::new()
        .with(&claim("data-orders-0", None))
        .with(&claim("orders-data-16", Some("data")))
        .with(&claim("orders-backup-16", Some("backup")))
        .with(&claim("someone-elses", None))
        .build();
    let (deletions, verdict, desired) = run(&deleting(DeletionPolicy::Delete), &observed);
    for name in ["data-orders-0", "orders-data-16", "orders-backup-16"] {
        assert!(
            deletions.contains(&kind_name("PersistentVolumeClaim", name)),
            "{name}: {deletions:?}"
        );
    }
    assert!(!deletions.contains(&kind_name("PersistentVolumeClaim", "someone-elses")));
    assert!(matches!(verdict, Finalized::Pending(_)));
    assert!(reasons(&desired).contains(&(EventType::Normal, "VolumesDeleted".into())));
}

#[test]
fn delete_is_done_once_everything_is_gone_or_being_deleted() {
    let observed = ObservedBuilder::new()
        .with(&being_deleted(claim("data-orders-0", None)))
        .with(&being_deleted(claim("orders-backups", None)))
        .build();
    let (deletions, verdict, desired) = run(&deleting(DeletionPolicy::Delete), &observed);
    assert!(deletions.is_empty());
    assert_eq!(verdict, Finalized::Done);
    assert!(desired.notes.is_empty(), "nothing is news");
    let (_, verdict, _) = run(&deleting(DeletionPolicy::Delete), &Observed::default());
    assert_eq!(verdict, Finalized::Done);
}

#[test]
fn the_final_backup_is_named_after_the_database_and_its_deletion_time() {
    assert_eq!(final_name(), "orders-final-20270115080000");
    let later = DbBuilder::named("orders")
        .deletion_policy(DeletionPolicy::BackupThenDelete)
        .being_deleted(at(1_800_000_061))
        .build();
    assert_eq!(
        final_backup_name(&later).as_deref(),
        Some("orders-final-20270115080101")
    );
    assert_eq!(final_backup_name(&db(None)), None);
}

#[test]
fn backup_then_delete_creates_a_final_backup_labelled_for_the_database_and_not_owned_by_it() {
    let db = deleting(DeletionPolicy::BackupThenDelete);
    let observed = ObservedBuilder::new()
        .with(&claim("data-orders-0", None))
        .with(&pod_mounting("orders-0", "data-orders-0"))
        .build();
    let outcome =
        finalizer::finalize(&crate::level(), &db, &observed, at(1_800_000_002)).expect("finalizes");
    assert!(!outcome.is_done());
    assert!(
        outcome.deletions.is_empty(),
        "nothing goes before the backup"
    );
    let [(backup, _)] = outcome.changes.as_slice() else {
        panic!("one object: {:?}", outcome.changes);
    };
    assert_eq!(backup.resource, ApiResource::erase::<PostgresDBBackup>(&()));
    assert_eq!(backup.name, final_name());
    assert_eq!(backup.value["spec"]["database"], "orders");
    assert_eq!(backup.value["metadata"]["labels"][INSTANCE_LABEL], "orders");
    assert_eq!(
        backup.value["metadata"]["annotations"][NEVER_PRUNE_ANNOTATION],
        "true"
    );
    assert!(backup.value["metadata"]["ownerReferences"].is_null());
    assert_eq!(outcome.notes[0].reason, "FinalBackupRequested");
}

#[test]
fn backup_then_delete_waits_while_the_final_backup_is_pending_or_running() {
    for phase in [None, Some(BackupPhase::Pending), Some(BackupPhase::Running)] {
        let observed = ObservedBuilder::new()
            .with(&claim("data-orders-0", None))
            .with(&backup(&final_name(), phase))
            .build();
        let (deletions, verdict, desired) =
            run(&deleting(DeletionPolicy::BackupThenDelete), &observed);
        assert!(deletions.is_empty(), "{phase:?}: {deletions:?}");
        assert!(desired.objects().is_empty(), "taken once: {phase:?}");
        assert!(
            matches!(&verdict, Finalized::Pending(why) if why.contains(&final_name())),
            "{phase:?}: {verdict:?}"
        );
    }
}

#[test]
fn a_failed_final_backup_keeps_the_data_and_warns_with_the_tools_error() {
    let observed = ObservedBuilder::new()
        .with(&claim("data-orders-0", None))
        .with(&backup(&final_name(), Some(BackupPhase::Failed)))
        .build();
    let (deletions, verdict, desired) = run(&deleting(DeletionPolicy::BackupThenDelete), &observed);
    assert!(deletions.is_empty());
    assert!(matches!(verdict, Finalized::Pending(_)));
    let warning = desired
        .notes
        .iter()
        .find(|n| n.reason == "FinalBackupFailed")
        .expect("a warning");
    assert_eq!(warning.type_, EventType::Warning);
    assert!(warning.message.contains("connection to server failed"));
    assert!(warning.message.contains("spec.deletionPolicy"));
}

#[test]
fn a_completed_final_backup_lets_the_data_volumes_go_and_keeps_every_backup() {
    let observed = ObservedBuilder::new()
        .with(&claim("data-orders-0", None))
        .with(&claim("orders-data-16", Some("data")))
        .with(&claim("orders-backup-16", Some("backup")))
        .with(&claim("orders-backups", None))
        .with(&backup("orders-1", Some(BackupPhase::Completed)))
        .with(&backup(&final_name(), Some(BackupPhase::Completed)))
        .build();
    let (deletions, verdict, _) = run(&deleting(DeletionPolicy::BackupThenDelete), &observed);
    assert_eq!(
        deletions,
        [
            kind_name("PersistentVolumeClaim", "data-orders-0"),
            kind_name("PersistentVolumeClaim", "orders-data-16"),
        ]
    );
    assert!(matches!(verdict, Finalized::Pending(_)));
    let gone = ObservedBuilder::new()
        .with(&claim("orders-backup-16", Some("backup")))
        .with(&claim("orders-backups", None))
        .with(&backup(&final_name(), Some(BackupPhase::Completed)))
        .build();
    let (deletions, verdict, _) = run(&deleting(DeletionPolicy::BackupThenDelete), &gone);
    assert!(deletions.is_empty());
    assert_eq!(verdict, Finalized::Done);
}

#[test]
fn a_completed_final_backup_stops_the_server_before_its_volume_goes() {
    let observed = ObservedBuilder::new()
        .with(&claim("data-orders-0", None))
        .with(&pod_mounting("orders-0", "data-orders-0"))
        .with(&statefulset())
        .with(&backup(&final_name(), Some(BackupPhase::Completed)))
        .build();
    let (deletions, _, _) = run(&deleting(DeletionPolicy::BackupThenDelete), &observed);
    assert_eq!(deletions, [kind_name("StatefulSet", "orders")]);
}

#[test]
fn the_examples_parse_as_their_kinds_and_level_3_serves_the_databases() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples");
    let mut kinds = Vec::new();
    for entry in std::fs::read_dir(dir).expect("examples/ exists") {
        let path = entry.expect("readable entry").path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("readable example");
        let value: serde_json::Value =
            serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        match value["kind"].as_str() {
            Some("PostgresDBBackup") => {
                let backup: PostgresDBBackup = serde_json::from_value(value)
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                assert!(!backup.spec.database.is_empty());
            }
            Some("PostgresDB") => {
                let mut db: shared::PostgresDB = serde_json::from_value(value)
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                db.metadata.namespace = Some("default".into());
                db.metadata.uid = Some("uid".into());
                // A restore needs its source: a Completed backup of the
                // database it names (a fresh cluster has none, and the
                // restore is then refused, as it should be).
                let mut observed = ObservedBuilder::new();
                if let Some(source) = db
                    .spec
                    .restore
                    .as_ref()
                    .and_then(|r| r.from_database.clone())
                {
                    observed = observed.with(&completed_backup_of(&source));
                }
                let decision =
                    shared::reconcile::decide(&crate::level(), &db, &observed.build(), at(1))
                        .expect("decides");
                assert!(
                    matches!(decision, shared::reconcile::Decision::Apply { .. }),
                    "{}: {decision:?}",
                    path.display()
                );
            }
            other => panic!("{}: unexpected kind {other:?}", path.display()),
        }
        kinds.push(path);
    }
    assert!(kinds.len() >= 4, "the examples: {kinds:?}");
}

#[test]
fn a_long_named_database_s_final_backup_gets_jobs_whose_names_fit_63_characters() {
    use crate::lifecycle::backup_controller::job::{
        backup_job_name, backup_label_value, cleanup_job_name,
    };
    use crate::lifecycle::verify::verify_job_name;
    // As long as a name of a Service (the database's own) may be.
    let name = "a".repeat(63);
    let db = DbBuilder::named(&name)
        .deletion_policy(DeletionPolicy::BackupThenDelete)
        .being_deleted(at(1_800_000_000))
        .build();
    let backup = final_backup_name(&db).expect("being deleted");
    let jobs = [
        backup_job_name(&backup),
        cleanup_job_name(&backup),
        verify_job_name(&backup),
    ];
    for job in &jobs {
        assert!(job.len() <= 63, "{job} has {} characters", job.len());
    }
    assert_ne!(jobs[0], jobs[1]);
    assert_ne!(jobs[0], jobs[2]);
    assert!(backup_label_value(&backup).len() <= 63);
}

/// A Completed backup of `database`, dumped from 15, on its backup volume.
fn completed_backup_of(database: &str) -> PostgresDBBackup {
    let mut metadata = meta(&format!("{database}-20261201-030000"));
    metadata.labels = Some(common_labels(database));
    PostgresDBBackup {
        metadata,
        spec: shared::backup::PostgresDBBackupSpec {
            database: database.into(),
        },
        status: Some(shared::backup::PostgresDBBackupStatus {
            phase: Some(BackupPhase::Completed),
            completed_at: Some(Time(at(0))),
            server_version: Some("15.18".into()),
            location: Some(shared::backup::BackupLocation {
                volume: Some(format!("{database}-backups")),
                path: format!("/{database}-20261201-030000/"),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}
