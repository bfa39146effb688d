//! Unit tests of `spec.backup.verify` in the backup controller.

use shared::backup::BackupSpec;

use super::*;
use crate::lifecycle::verify::VERIFY_CONTAINER;

const SUMMARY: &str =
    r#"{"serverVersion":"15.10","databases":2,"tables":3,"rows":1500,"bytes":1536}"#;

/// A Ready database asking for verification, its backup role's Secret and
/// volume, and the backup `b1`'s Job succeeded.
fn dumped() -> ObservedBuilder {
    let mut db = ready_db("15");
    db.spec.backup = Some(BackupSpec {
        verify: true,
        ..Default::default()
    });
    ObservedBuilder::new()
        .with(&db)
        .with(&login_secret(
            "orders-backup-credentials",
            "pgdb_backup",
            "pw",
        ))
        .with(&claim("orders-backups"))
        .with(&job_with("b1-backup", succeeded()))
        .with(
            &PodBuilder::named("b1-backup-x1")
                .label(JOB_NAME_LABEL, "b1-backup")
                .phase("Succeeded")
                .container(BACKUP_CONTAINER, terminated(0, SUMMARY))
                .build(),
        )
}

/// The verify Job of `b1` finished with `status`, its script saying `message`.
fn verified(status: JobStatus, code: i32, message: &str) -> Observed {
    dumped()
        .with(&job_with("b1-verify", status))
        .with(
            &PodBuilder::named("b1-verify-x1")
                .label(JOB_NAME_LABEL, "b1-verify")
                .phase(if code == 0 { "Succeeded" } else { "Failed" })
                .container(VERIFY_CONTAINER, terminated(code, message))
                .build(),
        )
        .build()
}

fn running_backup() -> PostgresDBBackup {
    BackupBuilder::adopted("b1")
        .phase(BackupPhase::Running)
        .build()
}

#[test]
fn a_dumped_backup_of_a_database_asking_for_verification_stays_running_while_a_verify_job_restores_it()
 {
    let backup = running_backup();
    let step = decide(&backup, &dumped().build(), at(NOW));
    let job = step.create.as_ref().expect("the verify Job is created");
    assert_eq!(job.metadata.name.as_deref(), Some("b1-verify"));
    let owner = job
        .metadata
        .owner_references
        .iter()
        .flatten()
        .next()
        .expect("owned by the backup");
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str()),
        ("PostgresDBBackup", "b1")
    );
    let status = status_of(&step);
    assert_eq!(status.phase, Some(BackupPhase::Running));
    assert_eq!(status.verification, None);
    assert_eq!(status.size_bytes, Some(1536));
    assert_eq!(status.completed_at, Some(Time(at(NOW))));
    let ready = status
        .conditions
        .iter()
        .find(|c| c.type_ == READY)
        .expect("Ready");
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "Verifying")
    );
    assert_eq!(step.events[0].reason, "BackupVerifying");
    assert_eq!(step.requeue, Some(RECHECK));

    // The next look, the verify Job running: nothing new is created or
    // written, and the dump's completion time is kept.
    let mut backup = backup;
    backup.status = step.status.clone();
    let running = dumped()
        .with(&job_with("b1-verify", active()))
        .with(
            &PodBuilder::named("b1-verify-x1")
                .label(JOB_NAME_LABEL, "b1-verify")
                .phase("Running")
                .container(VERIFY_CONTAINER, running_state())
                .build(),
        )
        .build();
    let again = decide(&backup, &running, at(NOW + 30));
    assert_eq!(again.create, None);
    assert_eq!(again.status, None);
    assert!(again.events.is_empty());
}

#[test]
fn a_backup_that_restores_and_matches_its_manifest_completes_verified() {
    let mut backup = running_backup();
    backup.status = decide(&backup, &dumped().build(), at(NOW)).status;
    let observed = verified(
        succeeded(),
        0,
        r#"{"passed":true,"backup":"b1","databases":2,"tables":3,"rows":1500,"message":"restored and verified backup b1: 2 databases, 3 tables, 1500 rows"}"#,
    );
    let step = decide(&backup, &observed, at(NOW + 60));
    let status = status_of(&step);
    assert_eq!(status.phase, Some(BackupPhase::Completed));
    let verification = status.verification.clone().expect("recorded");
    assert!(verification.passed);
    assert!(
        verification.message.contains("1500 rows"),
        "{}",
        verification.message
    );
    assert_eq!(verification.verified_at, Time(at(NOW + 60)));
    assert_eq!(status.completed_at, Some(Time(at(NOW))));
    assert!(ready_message(status).contains("verified"));
    assert_eq!(step.events[0].reason, "BackupCompleted");
    assert_eq!(step.requeue, None);
    // Recorded once: at rest nothing is written.
    backup.status = step.status.clone();
    assert_eq!(decide(&backup, &observed, at(NOW + 90)), Step::default());
}

#[test]
fn a_backup_that_does_not_restore_as_dumped_fails_saying_which_table_differs() {
    let mut backup = running_backup();
    backup.status = decide(&backup, &dumped().build(), at(NOW)).status;
    let observed = verified(
        failed(),
        1,
        r#"{"passed":false,"backup":"b1","databases":1,"tables":3,"rows":42,"message":"verification failed: table public.items of database app has 2 rows restored, the backup recorded 3","mismatch":{"database":"app","schema":"public","table":"items"}}"#,
    );
    let step = decide(&backup, &observed, at(NOW + 60));
    let status = status_of(&step);
    assert_eq!(status.phase, Some(BackupPhase::Failed));
    assert!(!status.verification.clone().expect("recorded").passed);
    let error = status.error.clone().unwrap_or_default();
    assert!(error.contains("spec.backup.verify"), "{error}");
    assert!(error.contains("public.items"), "{error}");
    assert!(ready_message(status).contains("public.items"));
    assert_eq!(step.events[0].type_, EventType::Warning);
    assert_eq!(step.events[0].reason, "BackupFailed");
}

#[test]
fn without_verify_a_dumped_backup_completes_at_once_with_no_verify_job() {
    let observed = job_observed(
        ready(),
        "b1-backup",
        BACKUP_CONTAINER,
        succeeded(),
        terminated(0, SUMMARY),
        "Succeeded",
    );
    let step = decide(&running_backup(), &observed, at(NOW));
    assert_eq!(step.create, None);
    assert_eq!(status_of(&step).phase, Some(BackupPhase::Completed));
    assert_eq!(status_of(&step).verification, None);
}
