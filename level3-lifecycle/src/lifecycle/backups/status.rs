//! `status.backup` of a `PostgresDB`: the last backup, the last successful
//! one and when it completed, and the schedule's next slot.
//!
//! It is derived at every reconcile from the backups observed and the
//! schedule, never accumulated, so it is the same at rest and the core
//! writes it only when it changes: when a backup starts or completes, and
//! once per slot as the next one moves on.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use shared::backup::BackupSummary;

use super::BackupView;
use super::retention::completed_newest_first;

/// The summary of `backups` with the schedule's `next` slot; `None` when
/// there is nothing to say (no backup, no schedule).
pub fn summary(backups: &[BackupView], next: Option<Timestamp>) -> Option<BackupSummary> {
    let last = backups
        .iter()
        .filter(|b| !b.deleting)
        .filter_map(|b| Some((b.started.or(b.completed)?, &b.name)))
        .max()
        .map(|(_, name)| name.clone());
    let newest = completed_newest_first(backups).first().copied();
    let summary = BackupSummary {
        last_backup: last,
        last_successful_backup: newest.map(|b| b.name.clone()),
        last_successful_at: newest.and_then(|b| b.finished_at()).map(Time),
        next_scheduled_at: next.map(Time),
    };
    (summary != BackupSummary::default()).then_some(summary)
}
