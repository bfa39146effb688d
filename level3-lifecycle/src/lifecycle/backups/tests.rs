//! The schedule, retention and status of backups, through the capability as
//! the core calls it, with fixed clocks. [`Cluster`] stands for the API
//! server between reconciles: it applies what a reconcile desired and
//! keeps nothing else, so a reconcile made by a fresh capability value is
//! what a restarted operator does.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use shared::backup::{
    BackupDestination, BackupPhase, BackupSpec, BackupVolume, PostgresDBBackupStatus,
    RetentionSpec, S3Destination,
};
use shared::capability::{ApplyReport, DesiredObject};
use shared::keys::INSTANCE_LABEL;
use shared::testing::{DbBuilder, assert_reads_what_it_applies, at, put};

use super::*;

/// 2026-01-01T00:00:00Z.
const T0: i64 = 1_767_225_600;

fn database(backup: BackupSpec) -> PostgresDB {
    let mut db = DbBuilder::named("orders").build();
    db.metadata.creation_timestamp = Some(Time(at(T0)));
    db.spec.backup = Some(backup);
    db
}

fn every(seconds: u32) -> BackupSpec {
    BackupSpec {
        schedule: Some(format!("*/{seconds} * * * * *")),
        ..Default::default()
    }
}

fn keep(keep_last: Option<u32>, max_age: Option<&str>) -> Option<RetentionSpec> {
    Some(RetentionSpec {
        keep_last,
        max_age: max_age.map(String::from),
    })
}

/// The API server, as far as backups go.
#[derive(Default)]
struct Cluster {
    backups: Vec<PostgresDBBackup>,
    uids: u32,
}

/// What one reconcile did.
#[derive(Debug, Default)]
struct Outcome {
    created: Vec<String>,
    deleted: Vec<String>,
    status: StatusDraft,
}

impl Cluster {
    fn observed(&self) -> Observed {
        let mut observed = Observed::default();
        for backup in &self.backups {
            put(&mut observed, backup);
        }
        observed.mark_listed(&ApiResource::erase::<PostgresDBBackup>(&()));
        observed
    }

    /// One reconcile at `now` by a capability that remembers nothing.
    fn reconcile(&mut self, db: &PostgresDB, now: i64) -> Outcome {
        let now = at(now);
        let observed = self.observed();
        let mut outcome = Outcome::default();
        assert!(problems(db).is_empty(), "{:?}", problems(db));
        let mut desired = Desired::default();
        Backups
            .desire(db, &observed, now, &mut desired)
            .expect("desires");
        let parts = desired.into_parts();
        for object in parts.objects {
            outcome.created.push(self.create(object, now));
        }
        for deletion in parts.deletions {
            let found = self.backups.iter().position(|b| {
                b.metadata.name.as_deref() == Some(&deletion.name)
                    && (deletion.uid.is_none() || b.metadata.uid == deletion.uid)
            });
            if let Some(index) = found {
                self.backups.remove(index);
                outcome.deleted.push(deletion.name);
            }
        }
        outcome.status = StatusDraft {
            now,
            ..Default::default()
        };
        Backups.assess(
            db,
            &self.observed(),
            &ApplyReport::default(),
            &mut outcome.status,
        );
        outcome
    }

    fn create(&mut self, object: DesiredObject, now: Timestamp) -> String {
        assert!(!object.owned, "a backup must outlive its database");
        let mut backup: PostgresDBBackup =
            serde_json::from_value(object.value).expect("a PostgresDBBackup");
        assert!(
            !self
                .backups
                .iter()
                .any(|b| b.metadata.name == backup.metadata.name),
            "{} created twice",
            object.name
        );
        self.uids += 1;
        backup.metadata.uid = Some(format!("uid-{}", self.uids));
        backup.metadata.creation_timestamp = Some(Time(now));
        self.backups.push(backup);
        object.name
    }

    /// The backup controller finishing the pending backups at `at`.
    fn finish(&mut self, phase: BackupPhase, at_second: i64) {
        for backup in &mut self.backups {
            let status = backup.status.get_or_insert_with(Default::default);
            if status.phase.is_none() {
                status.phase = Some(phase);
                status.started_at = Some(Time(at(at_second)));
                status.completed_at = Some(Time(at(at_second)));
            }
        }
    }

    fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .backups
            .iter()
            .filter_map(|b| b.metadata.name.clone())
            .collect();
        names.sort();
        names
    }
}

fn slot_name(second: i64) -> String {
    schedule::backup_name("orders", at(second))
}

#[test]
fn a_due_slot_gets_one_backup_with_the_database_s_labels_kept_from_pruning() {
    let db = database(every(10));
    let mut cluster = Cluster::default();
    let outcome = cluster.reconcile(&db, T0 + 12);
    assert_eq!(outcome.created, [slot_name(T0 + 10)]);
    let backup = &cluster.backups[0];
    assert_eq!(backup.spec.database, "orders");
    assert_eq!(
        backup.labels().get(INSTANCE_LABEL).map(String::as_str),
        Some("orders")
    );
    assert_eq!(
        backup
            .annotations()
            .get(NEVER_PRUNE_ANNOTATION)
            .map(String::as_str),
        Some("true")
    );
    assert_eq!(
        backup
            .annotations()
            .get(SCHEDULED_FOR_ANNOTATION)
            .map(String::as_str),
        Some("2026-01-01T00:00:10Z")
    );
    assert_eq!(outcome.status.wake_at, Some(at(T0 + 20)));
}

#[test]
fn a_restarted_operator_neither_skips_nor_repeats_a_slot() {
    let db = database(every(10));
    let mut cluster = Cluster::default();
    let mut created = Vec::new();
    // Reconciles at every second for a minute, each by a capability that
    // knows only what the cluster holds: some twice in the same second
    // (a retried reconcile), then a gap (the operator down from 35 to 49).
    // The database was created at T0, a slot: that one is due too.
    for second in (1..35).chain(49..=60) {
        created.extend(cluster.reconcile(&db, T0 + second).created);
        created.extend(cluster.reconcile(&db, T0 + second).created);
    }
    let expected: Vec<String> = [0, 10, 20, 30, 40, 50, 60]
        .iter()
        .map(|s| slot_name(T0 + s))
        .collect();
    assert_eq!(created, expected);
}

#[test]
fn missed_slots_are_not_piled_up() {
    let db = database(every(10));
    let mut cluster = Cluster::default();
    assert_eq!(cluster.reconcile(&db, T0 + 10).created.len(), 1);
    // Down for 95 seconds: nine slots passed, one backup is taken, for the latest.
    let outcome = cluster.reconcile(&db, T0 + 105);
    assert_eq!(outcome.created, [slot_name(T0 + 100)]);
    assert!(cluster.reconcile(&db, T0 + 106).created.is_empty());
    assert_eq!(cluster.backups.len(), 2);
}

#[test]
fn a_new_database_does_not_take_a_slot_from_before_it_existed() {
    let mut db = database(BackupSpec {
        schedule: Some("0 3 * * *".into()),
        ..Default::default()
    });
    // Created at 10:00; the 03:00 slot of that day is not owed.
    db.metadata.creation_timestamp = Some(Time(at(T0 + 10 * 3600)));
    let mut cluster = Cluster::default();
    let outcome = cluster.reconcile(&db, T0 + 10 * 3600 + 5);
    assert!(outcome.created.is_empty());
    assert_eq!(outcome.status.wake_at, Some(at(T0 + 27 * 3600)));
}

#[test]
fn a_suspended_schedule_creates_nothing_and_plans_no_slot() {
    let mut spec = every(10);
    spec.suspend = true;
    let db = database(spec);
    let mut cluster = Cluster::default();
    for second in [10, 20, 35, 100] {
        let outcome = cluster.reconcile(&db, T0 + second);
        assert!(outcome.created.is_empty());
        assert_eq!(outcome.status.wake_at, None);
        assert_eq!(outcome.status.fields.backup, None);
    }
    // Resumed: the latest missed slot is taken, once.
    let db = database(every(10));
    assert_eq!(
        cluster.reconcile(&db, T0 + 101).created,
        [slot_name(T0 + 100)]
    );
}

#[test]
fn a_backup_already_named_for_the_slot_is_adopted_not_duplicated() {
    let db = database(every(10));
    let mut cluster = Cluster::default();
    // Made for the slot, but its annotation was lost.
    let mut backup = scheduled_backup(&db, at(T0 + 10));
    backup.metadata.annotations = None;
    backup.metadata.uid = Some("uid-x".into());
    cluster.backups.push(backup);
    assert!(cluster.reconcile(&db, T0 + 12).created.is_empty());
}

#[test]
fn backups_of_another_database_are_not_this_one_s() {
    let db = database(every(10));
    let mut other = scheduled_backup(&db, at(T0 + 10));
    other.metadata.name = Some("payments-20260101-000010".into());
    other.spec.database = "payments".into();
    let mut cluster = Cluster {
        backups: vec![other],
        uids: 0,
    };
    assert_eq!(
        cluster.reconcile(&db, T0 + 12).created,
        [slot_name(T0 + 10)]
    );
}

#[test]
fn retention_keeps_exactly_the_last_n_completed_through_a_series() {
    let mut spec = every(10);
    spec.retention = keep(Some(3), None);
    let db = database(spec);
    let mut cluster = Cluster::default();
    for slot in 1..=10 {
        let second = T0 + slot * 10;
        cluster.reconcile(&db, second);
        cluster.finish(BackupPhase::Completed, second + 2);
        let outcome = cluster.reconcile(&db, second + 3);
        let kept: Vec<String> = (slot.saturating_sub(2).max(1)..=slot)
            .map(|s| slot_name(T0 + s * 10))
            .collect();
        assert_eq!(cluster.names(), kept, "after backup {slot}");
        if slot > 3 {
            assert_eq!(outcome.deleted, [slot_name(T0 + (slot - 3) * 10)]);
        }
    }
}

#[test]
fn retention_never_deletes_the_newest_completed_backup() {
    let mut spec = every(10);
    spec.retention = keep(None, Some("1m"));
    let db = database(spec.clone());
    let mut cluster = Cluster::default();
    cluster.reconcile(&db, T0 + 10);
    cluster.finish(BackupPhase::Completed, T0 + 11);
    cluster.reconcile(&db, T0 + 20);
    cluster.finish(BackupPhase::Completed, T0 + 21);
    // Suspended, and a day later both are older than maxAge: the newest stays.
    spec.suspend = true;
    let db = database(spec);
    let outcome = cluster.reconcile(&db, T0 + 86_400);
    assert_eq!(outcome.deleted, [slot_name(T0 + 10)]);
    assert_eq!(cluster.names(), [slot_name(T0 + 20)]);
    assert!(cluster.reconcile(&db, T0 + 90_000).deleted.is_empty());
}

#[test]
fn failed_backups_do_not_count_and_old_ones_go_once_a_newer_one_completed() {
    let mut spec = every(10);
    spec.retention = keep(Some(2), None);
    let db = database(spec);
    let mut cluster = Cluster::default();
    let phases = [
        BackupPhase::Completed,
        BackupPhase::Failed,
        BackupPhase::Completed,
        BackupPhase::Failed,
    ];
    for (index, phase) in phases.iter().enumerate() {
        let second = T0 + (index as i64 + 1) * 10;
        cluster.reconcile(&db, second);
        cluster.finish(*phase, second + 2);
        cluster.reconcile(&db, second + 3);
    }
    // Two completed (10, 30), both kept; the failure at 20 is older than
    // the newest completed and goes; the failure at 40 is the latest news.
    assert_eq!(
        cluster.names(),
        [slot_name(T0 + 10), slot_name(T0 + 30), slot_name(T0 + 40)]
    );
    let status = cluster.reconcile(&db, T0 + 44).status.fields.backup;
    let status = status.expect("a summary");
    assert_eq!(
        status.last_backup.as_deref(),
        Some(slot_name(T0 + 40).as_str())
    );
    assert_eq!(
        status.last_successful_backup.as_deref(),
        Some(slot_name(T0 + 30).as_str())
    );
    assert_eq!(status.last_successful_at, Some(Time(at(T0 + 32))));
    assert_eq!(status.next_scheduled_at, Some(Time(at(T0 + 50))));
}

#[test]
fn with_both_limits_a_backup_either_keeps_is_kept() {
    let policy = Policy {
        keep_last: Some(2),
        max_age: Some(jiff::SignedDuration::from_mins(60)),
    };
    let completed = |name: &str, minutes_ago: i64| BackupView {
        name: name.into(),
        uid: Some(format!("uid-{name}")),
        phase: Some(BackupPhase::Completed),
        completed: Some(at(T0 - minutes_ago * 60)),
        created: Some(at(T0 - minutes_ago * 60 - 5)),
        ..Default::default()
    };
    let backups = [
        completed("a", 10),
        completed("b", 20),
        completed("c", 30),  // third, but younger than an hour
        completed("d", 90),  // third-plus and older: deleted
        completed("e", 120), // likewise
    ];
    let expired: Vec<(String, Option<String>)> = retention::expired(&backups, &policy, at(T0))
        .into_iter()
        .map(|e| (e.name, e.uid))
        .collect();
    assert_eq!(
        expired,
        [
            ("d".to_string(), Some("uid-d".to_string())),
            ("e".to_string(), Some("uid-e".to_string()))
        ]
    );
    // "c" is kept for its age only: the reconcile asks to be woken when it expires.
    assert_eq!(
        retention::next_expiry(&backups, &policy, at(T0)),
        Some(at(T0 + 30 * 60))
    );
}

#[test]
fn a_backup_running_pending_or_being_deleted_is_never_deleted_by_retention() {
    let policy = Policy {
        keep_last: Some(1),
        max_age: None,
    };
    let view = |name: &str, phase: Option<BackupPhase>, deleting: bool| BackupView {
        name: name.into(),
        phase,
        created: Some(at(T0)),
        completed: phase.map(|_| at(T0 + 1)),
        deleting,
        ..Default::default()
    };
    let backups = [
        view("new", Some(BackupPhase::Completed), false),
        view("running", Some(BackupPhase::Running), false),
        view("pending", None, false),
        view("going", Some(BackupPhase::Completed), true),
    ];
    assert!(retention::expired(&backups, &policy, at(T0 + 10)).is_empty());
}

#[test]
fn without_a_retention_every_backup_is_kept() {
    let db = database(every(10));
    let mut cluster = Cluster::default();
    for slot in 1..=5 {
        cluster.reconcile(&db, T0 + slot * 10);
        cluster.finish(BackupPhase::Completed, T0 + slot * 10 + 1);
    }
    assert!(cluster.reconcile(&db, T0 + 55).deleted.is_empty());
    assert_eq!(cluster.backups.len(), 5);
}

#[test]
fn retention_deletes_with_the_uid_it_decided_on_and_says_why() {
    let mut spec = every(10);
    spec.retention = keep(Some(1), None);
    let db = database(spec);
    let mut cluster = Cluster::default();
    cluster.reconcile(&db, T0 + 10);
    cluster.finish(BackupPhase::Completed, T0 + 11);
    cluster.reconcile(&db, T0 + 20);
    cluster.finish(BackupPhase::Completed, T0 + 21);
    let mut desired = Desired::default();
    Backups
        .desire(&db, &cluster.observed(), at(T0 + 22), &mut desired)
        .expect("desires");
    let deletion = &desired.deletions()[0];
    assert_eq!(deletion.name, slot_name(T0 + 10));
    assert_eq!(deletion.uid.as_deref(), Some("uid-1"));
    assert_eq!(desired.notes[0].reason, EXPIRED_REASON);
    assert!(
        desired.notes[0].message.contains("keepLast 1"),
        "{}",
        desired.notes[0].message
    );
}

#[test]
fn status_is_the_same_at_rest_and_wakes_at_the_next_slot() {
    let db = database(every(10));
    let mut cluster = Cluster::default();
    cluster.reconcile(&db, T0 + 10);
    cluster.finish(BackupPhase::Completed, T0 + 12);
    let first = cluster.reconcile(&db, T0 + 13);
    let second = cluster.reconcile(&db, T0 + 17);
    assert!(first.created.is_empty() && second.created.is_empty());
    assert_eq!(first.status.fields.backup, second.status.fields.backup);
    assert_eq!(second.status.wake_at, Some(at(T0 + 20)));
    let summary = second.status.fields.backup.expect("a summary");
    assert_eq!(summary.last_successful_at, Some(Time(at(T0 + 12))));
    assert_eq!(summary.next_scheduled_at, Some(Time(at(T0 + 20))));
}

#[test]
fn a_database_without_backups_or_schedule_has_no_backup_status() {
    let mut db = DbBuilder::named("orders").build();
    db.metadata.creation_timestamp = Some(Time(at(T0)));
    let outcome = Cluster::default().reconcile(&db, T0 + 10);
    assert_eq!(outcome.status.fields.backup, None);
    assert_eq!(outcome.status.wake_at, None);
}

#[test]
fn a_bad_cron_expression_is_refused_naming_the_field_and_quoting_the_parser() {
    let db = database(BackupSpec {
        schedule: Some("0 3 * * * * * *".into()),
        ..Default::default()
    });
    let found = problems(&db);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].field, "spec.backup.schedule");
    assert_eq!(found[0].reason, "InvalidSchedule");
    let db = database(BackupSpec {
        schedule: Some("61 * * * *".into()),
        ..Default::default()
    });
    let found = problems(&db);
    let parser = "0 61 * * * *"
        .parse::<cron::Schedule>()
        .expect_err("minute 61")
        .to_string();
    assert_eq!(found[0].field, "spec.backup.schedule");
    assert!(found[0].message.contains(&parser), "{}", found[0].message);
    let never = database(BackupSpec {
        schedule: Some("0 0 30 2 *".into()),
        ..Default::default()
    });
    assert!(problems(&never)[0].message.contains("never fires"));
}

#[test]
fn a_retention_below_one_or_a_bad_age_is_refused_naming_the_field() {
    let mut spec = every(10);
    spec.retention = keep(Some(0), None);
    let found = problems(&database(spec.clone()));
    assert_eq!(found[0].field, "spec.backup.retention.keepLast");
    assert_eq!(found[0].reason, "InvalidRetention");
    for bad in ["7", "7y", "0d", "d", "1234567d", "7 d"] {
        spec.retention = keep(None, Some(bad));
        let found = problems(&database(spec.clone()));
        assert_eq!(found.len(), 1, "{bad} accepted");
        assert_eq!(found[0].field, "spec.backup.retention.maxAge");
    }
    assert_eq!(
        retention::parse_age("36h"),
        Ok(jiff::SignedDuration::from_hours(36))
    );
    assert_eq!(
        retention::parse_age("2w"),
        Ok(jiff::SignedDuration::from_hours(24 * 14))
    );
}

#[test]
fn a_destination_with_both_a_volume_and_a_bucket_is_refused() {
    let mut spec = every(10);
    spec.destination = BackupDestination {
        volume: Some(BackupVolume::default()),
        s3: Some(S3Destination {
            endpoint: "http://s3.local:9000".into(),
            bucket: "backups".into(),
            credentials_secret: "s3-keys".into(),
            ..Default::default()
        }),
    };
    let found = problems(&database(spec));
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].field, "spec.backup.destination");
}

#[test]
fn a_valid_backup_spec_has_no_problem() {
    let mut spec = every(10);
    spec.retention = keep(Some(7), Some("30d"));
    assert!(problems(&database(spec)).is_empty());
    assert!(problems(&DbBuilder::named("orders").build()).is_empty());
}

#[test]
fn the_backups_it_creates_are_the_ones_it_reads() {
    let db = database(every(10));
    let capabilities: Vec<Box<dyn Capability>> = vec![Box::new(Backups)];
    assert_reads_what_it_applies(&capabilities, &db, &Observed::default(), at(T0 + 15));
}

#[test]
fn a_backup_s_status_is_read_for_its_phase_and_times() {
    let mut backup = scheduled_backup(&database(every(10)), at(T0 + 10));
    backup.status = Some(PostgresDBBackupStatus {
        phase: Some(BackupPhase::Completed),
        started_at: Some(Time(at(T0 + 11))),
        completed_at: Some(Time(at(T0 + 15))),
        ..Default::default()
    });
    let view = BackupView::of(&backup);
    assert_eq!(view.scheduled_for, Some(at(T0 + 10)));
    assert_eq!(view.phase, Some(BackupPhase::Completed));
    assert_eq!(view.finished_at(), Some(at(T0 + 15)));
}

#[test]
fn max_age_keeps_exactly_the_backups_completed_within_it_through_a_series() {
    let mut spec = every(10);
    spec.retention = keep(None, Some("1m"));
    let db = database(spec);
    let mut cluster = Cluster::default();
    for slot in 1..=12 {
        let second = T0 + slot * 10;
        cluster.reconcile(&db, second);
        cluster.finish(BackupPhase::Completed, second + 1);
        let outcome = cluster.reconcile(&db, second + 2);
        // Completed at s*10+1; kept while younger than 60 s at slot*10+2.
        let kept: Vec<String> = (1..=slot)
            .filter(|s| (slot * 10 + 2) - (s * 10 + 1) < 60)
            .map(|s| slot_name(T0 + s * 10))
            .collect();
        assert_eq!(cluster.names(), kept, "after backup {slot}");
        let oldest_kept = (1..=slot)
            .find(|s| (slot * 10 + 2) - (s * 10 + 1) < 60)
            .expect("the newest is kept");
        if oldest_kept < slot {
            assert_eq!(
                outcome.status.wake_at,
                Some(at(T0 + (slot + 1) * 10)),
                "the next slot comes before the oldest expires"
            );
        }
    }
}
