//! `spec.backup.retention`: which backups are deleted.
//!
//! Retention keeps the `keepLast` newest completed backups, or those
//! completed less than `maxAge` ago, or, both set, every backup either
//! keeps. Whatever the policy, the newest completed backup is kept: a
//! database always has one good backup, also when its schedule is
//! suspended and the others have aged out. Failed backups do not count
//! toward `keepLast`; a failed backup older than the newest completed one
//! is deleted (a newer one stays, as the evidence of what is going wrong).
//! Backups still pending or running, and those being deleted already, are
//! never candidates. Without `retention` every backup is kept.
//!
//! The verdict is a pure function of the backups and the reconcile's clock
//! ([`expired`]). It is enforced at every reconcile of the database: right
//! after each backup completes (its status change triggers one) and as
//! backups age past `maxAge` (the reconcile asks to be woken then,
//! [`next_expiry`]). Deleting a `PostgresDBBackup` deletes its files: the
//! backup controller's finalizer removes them before the object goes. Each
//! delete carries the uid the decision was made on, so a backup recreated
//! under the same name meanwhile is left alone.

use jiff::{SignedDuration, Timestamp};
use shared::backup::{BackupPhase, RetentionSpec};

use super::BackupView;

/// A retention policy, parsed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    /// How many completed backups to keep.
    pub keep_last: Option<u32>,
    /// Keep completed backups younger than this.
    pub max_age: Option<SignedDuration>,
}

/// Why a retention is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetentionProblem {
    /// The field at fault, under `spec.backup.retention`.
    pub field: &'static str,
    /// What is wrong.
    pub message: String,
}

impl Policy {
    /// Parses `spec.backup.retention`. The schema refuses the same values;
    /// this check holds when the CRD in the cluster is older than the
    /// operator.
    pub fn parse(spec: &RetentionSpec) -> Result<Self, RetentionProblem> {
        if spec.keep_last == Some(0) {
            return Err(RetentionProblem {
                field: "spec.backup.retention.keepLast",
                message: "keepLast is 0; keep at least 1 completed backup, or remove keepLast"
                    .into(),
            });
        }
        let max_age = match &spec.max_age {
            Some(text) => Some(parse_age(text).map_err(|message| RetentionProblem {
                field: "spec.backup.retention.maxAge",
                message,
            })?),
            None => None,
        };
        Ok(Self {
            keep_last: spec.keep_last,
            max_age,
        })
    }

    /// Whether the policy deletes anything at all.
    pub fn is_set(&self) -> bool {
        self.keep_last.is_some() || self.max_age.is_some()
    }
}

/// An age as `spec.backup.retention.maxAge` writes it: a whole number
/// (1 to 999999) of minutes, hours, days or weeks ("90m", "36h", "7d", "4w").
pub fn parse_age(text: &str) -> Result<SignedDuration, String> {
    let refuse = || {
        format!(
            "{text:?} is not an age; write a whole number followed by m, h, d or w (\"7d\", \"36h\")"
        )
    };
    let unit = text.chars().last().ok_or_else(refuse)?;
    let number = &text[..text.len() - unit.len_utf8()];
    if number.is_empty() || number.len() > 6 || number.starts_with('0') {
        return Err(refuse());
    }
    let count: i64 = number.parse().map_err(|_| refuse())?;
    let minutes = match unit {
        'm' => count,
        'h' => count * 60,
        'd' => count * 60 * 24,
        'w' => count * 60 * 24 * 7,
        _ => return Err(refuse()),
    };
    Ok(SignedDuration::from_mins(minutes))
}

/// A backup retention deletes, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expired {
    /// The backup's name.
    pub name: String,
    /// Its uid when observed, the delete's precondition.
    pub uid: Option<String>,
    /// Why, for the Event and the log.
    pub reason: String,
}

/// The completed backups that are not being deleted, newest first (by the
/// time they completed; the name breaks ties, so the order is total).
pub fn completed_newest_first(backups: &[BackupView]) -> Vec<&BackupView> {
    let mut completed: Vec<&BackupView> = backups
        .iter()
        .filter(|b| !b.deleting && b.phase == Some(BackupPhase::Completed))
        .collect();
    completed.sort_by(|a, b| (b.finished_at(), &b.name).cmp(&(a.finished_at(), &a.name)));
    completed
}

/// Whether the `index`-th newest completed backup, finished at `at`, is
/// kept by `policy` at `now`.
fn kept(policy: &Policy, index: usize, at: Option<Timestamp>, now: Timestamp) -> bool {
    if index == 0 {
        return true;
    }
    let by_count = policy
        .keep_last
        .is_some_and(|n| index < usize::try_from(n).unwrap_or(usize::MAX));
    let by_age = match (policy.max_age, at) {
        (Some(age), Some(at)) => now.duration_since(at) < age,
        // A completed backup without a time cannot be aged: keep it.
        (Some(_), None) => true,
        (None, _) => false,
    };
    by_count || by_age
}

/// The backups `policy` deletes at `now`.
pub fn expired(backups: &[BackupView], policy: &Policy, now: Timestamp) -> Vec<Expired> {
    if !policy.is_set() {
        return Vec::new();
    }
    let completed = completed_newest_first(backups);
    let mut expired = Vec::new();
    for (index, backup) in completed.iter().enumerate() {
        if kept(policy, index, backup.finished_at(), now) {
            continue;
        }
        expired.push(Expired {
            name: backup.name.clone(),
            uid: backup.uid.clone(),
            reason: format!(
                "retention ({}) keeps it no longer: it is the completed backup number {} from the newest",
                describe(policy),
                index + 1
            ),
        });
    }
    if let Some(newest) = completed.first() {
        for backup in backups.iter().filter(|b| {
            !b.deleting
                && b.phase == Some(BackupPhase::Failed)
                && b.created.is_some()
                && b.created < newest.created
        }) {
            expired.push(Expired {
                name: backup.name.clone(),
                uid: backup.uid.clone(),
                reason: format!(
                    "it failed, and the newer backup {} completed since",
                    newest.name
                ),
            });
        }
    }
    expired
}

/// When a completed backup kept only for its age will expire next, so the
/// reconcile can ask to be woken then.
pub fn next_expiry(backups: &[BackupView], policy: &Policy, now: Timestamp) -> Option<Timestamp> {
    let age = policy.max_age?;
    completed_newest_first(backups)
        .iter()
        .enumerate()
        .filter(|(index, backup)| {
            let by_count = policy
                .keep_last
                .is_some_and(|n| *index < usize::try_from(n).unwrap_or(usize::MAX));
            *index > 0 && !by_count && kept(policy, *index, backup.finished_at(), now)
        })
        .filter_map(|(_, backup)| backup.finished_at()?.checked_add(age).ok())
        .min()
}

fn describe(policy: &Policy) -> String {
    let mut parts = Vec::new();
    if let Some(n) = policy.keep_last {
        parts.push(format!("keepLast {n}"));
    }
    if let Some(age) = policy.max_age {
        parts.push(format!("maxAge {}", friendly(age)));
    }
    parts.join(", ")
}

fn friendly(age: SignedDuration) -> String {
    let minutes = age.as_mins();
    match minutes {
        m if m % (60 * 24 * 7) == 0 => format!("{}w", m / (60 * 24 * 7)),
        m if m % (60 * 24) == 0 => format!("{}d", m / (60 * 24)),
        m if m % 60 == 0 => format!("{}h", m / 60),
        m => format!("{m}m"),
    }
}
