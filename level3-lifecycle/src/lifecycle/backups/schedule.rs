//! `spec.backup.schedule`: which slot is due, which comes next, and the
//! name of the backup taken for a slot.
//!
//! The schedule is cron syntax in UTC. The five fields of a Kubernetes
//! CronJob (minute, hour, day of month, month, day of week) are accepted,
//! and so are six with seconds first; `@hourly`, `@daily` and the other
//! macros too. The `cron` crate computes the slots once the expression is
//! normalised to its form ([`normalise`]): seconds first, and days of the
//! week counted from Sunday = 1 where crontab counts from Sunday = 0 (or
//! 7), so `1-5` means Monday to Friday in both forms, as in a CronJob.
//!
//! No timer is kept: each reconcile computes, from its clock and the slots
//! the database's `PostgresDBBackup`s were created for (their
//! [`SCHEDULED_FOR_ANNOTATION`](shared::keys::SCHEDULED_FOR_ANNOTATION)),
//! the latest slot that is due and not taken, and the next slot, at which
//! it asks to be woken ([`plan`]). A restarted operator reads the same
//! objects and so neither skips nor repeats a slot. Only the latest missed
//! slot is taken, once: slots missed while the operator was down or the
//! schedule suspended are not piled up (a CronJob without a starting
//! deadline does the same). Slots before the database was created are not
//! due.
//!
//! Where it stops: when both the day of month and the day of week are
//! restricted, a slot must match both (the `cron` crate's rule; crontab
//! takes either). Time zones other than UTC are not supported. The backups
//! are the only record of the slots taken: retention never deletes the
//! newest scheduled backup (it is the newest completed one, or newer than
//! it), but a person deleting it by hand before the next slot makes its
//! slot due again, and it is taken a second time.

use jiff::Timestamp;
use sha2::{Digest, Sha256};

/// A parsed, normalised schedule.
#[derive(Clone, Debug)]
pub struct Schedule {
    cron: cron::Schedule,
}

/// Why a schedule expression is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScheduleProblem(pub String);

/// The `cron` crate's form of `expression`: seconds first (`0` added to a
/// five-field expression) and numeric days of the week moved from crontab's
/// Sunday = 0 (or 7) to the crate's Sunday = 1. Macros (`@daily`) are left
/// as they are. Refuses any other number of fields.
pub fn normalise(expression: &str) -> Result<String, ScheduleProblem> {
    let trimmed = expression.trim();
    if trimmed.starts_with('@') {
        return Ok(trimmed.to_string());
    }
    let mut fields: Vec<String> = trimmed.split_whitespace().map(String::from).collect();
    match fields.len() {
        5 => fields.insert(0, "0".into()),
        6 => {}
        n => {
            return Err(ScheduleProblem(format!(
                "{expression:?} has {n} fields; expected five as in a CronJob (minute hour day-of-month month day-of-week, \"0 3 * * *\") or six with seconds first"
            )));
        }
    }
    fields[5] = days_of_week(&fields[5]);
    Ok(fields.join(" "))
}

/// Moves crontab's numeric days of the week (0-7, Sunday 0 and 7) to the
/// `cron` crate's (1-7, Sunday 1). Each comma-separated item made only of
/// digits, ranges and steps is expanded into the days it means; items with
/// names (`MON-FRI`), which both count the same way, and items that are
/// not valid crontab (left for the crate to explain) are kept as written.
fn days_of_week(field: &str) -> String {
    if field == "*" || field == "?" {
        return field.to_string();
    }
    field
        .split(',')
        .map(|item| match crontab_days(item) {
            Some(days) => days
                .iter()
                .map(|day| (day + 1).to_string())
                .collect::<Vec<_>>()
                .join(","),
            None => item.to_string(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The days (0 = Sunday .. 6) a numeric crontab item means, or `None` when
/// it is not one.
fn crontab_days(item: &str) -> Option<Vec<u32>> {
    let (range, step) = match item.split_once('/') {
        Some((range, step)) => (range, step.parse::<u32>().ok().filter(|s| *s > 0)?),
        None => (item, 1),
    };
    let (first, last) = if range == "*" {
        (0, 6)
    } else if let Some((a, b)) = range.split_once('-') {
        (a.parse::<u32>().ok()?, b.parse::<u32>().ok()?)
    } else {
        let a = range.parse::<u32>().ok()?;
        // "5/2" means from 5 to the end, as in crontab.
        (a, if item.contains('/') { 7 } else { a })
    };
    if first > 7 || last > 7 || first > last {
        return None;
    }
    let mut days: Vec<u32> = (first..=last)
        .step_by(step as usize)
        .map(|d| d % 7)
        .collect();
    days.sort_unstable();
    days.dedup();
    Some(days)
}

impl Schedule {
    /// Parses `expression` (five or six fields, or a macro), quoting the
    /// `cron` crate's message when it refuses it.
    pub fn parse(expression: &str) -> Result<Self, ScheduleProblem> {
        let normalised = normalise(expression)?;
        let cron = normalised.parse::<cron::Schedule>().map_err(|error| {
            ScheduleProblem(format!("{expression:?} is not a valid schedule: {error}"))
        })?;
        Ok(Self { cron })
    }

    /// The latest slot at or before `at`, if there is one.
    pub fn latest_at_or_before(&self, at: Timestamp) -> Option<Timestamp> {
        // The crate's backward search returns slots strictly before the
        // second it starts from; start one second after `at`'s.
        let from = chrono_time(at.as_second().checked_add(1)?)?;
        self.cron
            .after(&from)
            .next_back()
            .and_then(|t| jiff_time(&t))
    }

    /// The first slot strictly after `at`, if there is one.
    pub fn next_after(&self, at: Timestamp) -> Option<Timestamp> {
        let from = chrono_time(at.as_second())?;
        self.cron.after(&from).next().and_then(|t| jiff_time(&t))
    }
}

fn chrono_time(second: i64) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::from_timestamp(second, 0)
}

fn jiff_time(time: &chrono::DateTime<chrono::Utc>) -> Option<Timestamp> {
    Timestamp::from_second(time.timestamp()).ok()
}

/// What the schedule asks of this reconcile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlotPlan {
    /// The slot a backup is to be created for now: the latest one due,
    /// when no backup was taken for it or a later one.
    pub due: Option<Timestamp>,
    /// The next slot after now, when the schedule has one; the reconcile
    /// asks to be woken then.
    pub next: Option<Timestamp>,
}

/// The plan of a schedule at `now`, given the slots already `taken` (read
/// from the backups) and the instant the database was `created` (slots
/// before it are never due). A suspended schedule takes no slot and has no
/// next one.
pub fn plan(
    schedule: &Schedule,
    suspended: bool,
    created: Option<Timestamp>,
    taken: &[Timestamp],
    now: Timestamp,
) -> SlotPlan {
    if suspended {
        return SlotPlan {
            due: None,
            next: None,
        };
    }
    let last_taken = taken.iter().max().copied();
    let due = schedule.latest_at_or_before(now).filter(|slot| {
        last_taken.is_none_or(|taken| *slot > taken)
            && created.is_none_or(|created| *slot >= created)
    });
    SlotPlan {
        due,
        next: schedule.next_after(now),
    }
}

/// The longest name a backup of a schedule gets: Kubernetes label values
/// (the backup's name is one on its Job and pods) stop at 63 characters.
pub const MAX_BACKUP_NAME: usize = 63;

/// The name of the backup of `database` for `slot`: the database's name and
/// the slot in UTC (`orders-20260101-030000`), so a retried reconcile finds
/// the backup it made instead of making another. A database name too long
/// to fit is cut and followed by a hash of the whole name, so two long
/// names sharing a beginning still get different backups.
pub fn backup_name(database: &str, slot: Timestamp) -> String {
    let stamp = slot.strftime("%Y%m%d-%H%M%S").to_string();
    let room = MAX_BACKUP_NAME - stamp.len() - 1;
    if database.len() <= room {
        return format!("{database}-{stamp}");
    }
    let digest = hex::encode(Sha256::digest(database.as_bytes()));
    let hash = &digest[..8];
    let keep = room - hash.len() - 1;
    let prefix: String = database.chars().take(keep).collect();
    format!("{}-{hash}-{stamp}", prefix.trim_end_matches('-'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::testing::at;

    fn utc(text: &str) -> Timestamp {
        text.parse().expect("an RFC 3339 time")
    }

    fn schedule(expression: &str) -> Schedule {
        Schedule::parse(expression).unwrap_or_else(|p| panic!("{}", p.0))
    }

    #[test]
    fn a_five_field_expression_gets_seconds_first() {
        assert_eq!(normalise("0 3 * * *").expect("valid"), "0 0 3 * * *");
        assert_eq!(normalise(" */5 * * * * ").expect("valid"), "0 */5 * * * *");
        assert_eq!(normalise("*/2 * * * * *").expect("valid"), "*/2 * * * * *");
        assert_eq!(normalise("@daily").expect("valid"), "@daily");
    }

    #[test]
    fn days_of_the_week_count_from_sunday_zero_as_in_a_cronjob() {
        assert_eq!(normalise("0 3 * * 0").expect("valid"), "0 0 3 * * 1");
        assert_eq!(normalise("0 3 * * 7").expect("valid"), "0 0 3 * * 1");
        assert_eq!(
            normalise("0 3 * * 1-5").expect("valid"),
            "0 0 3 * * 2,3,4,5,6"
        );
        assert_eq!(normalise("0 3 * * 5-7").expect("valid"), "0 0 3 * * 1,6,7");
        assert_eq!(
            normalise("0 3 * * */2").expect("valid"),
            "0 0 3 * * 1,3,5,7"
        );
        assert_eq!(
            normalise("0 3 * * MON-FRI").expect("valid"),
            "0 0 3 * * MON-FRI"
        );
        // Monday 2026-01-05 at 03:00 is the next weekday slot after Saturday.
        let weekdays = schedule("0 3 * * 1-5");
        assert_eq!(
            weekdays.next_after(utc("2026-01-03T12:00:00Z")),
            Some(utc("2026-01-05T03:00:00Z"))
        );
        let sundays = schedule("0 3 * * 0");
        assert_eq!(
            sundays.next_after(utc("2026-01-01T00:00:00Z")),
            Some(utc("2026-01-04T03:00:00Z"))
        );
    }

    #[test]
    fn a_bad_expression_is_refused_with_the_parser_s_own_message() {
        let problem = Schedule::parse("0 25 * * *").expect_err("hour 25");
        assert!(problem.0.contains("\"0 25 * * *\""), "{}", problem.0);
        let crate_message = "0 0 25 * * *"
            .parse::<cron::Schedule>()
            .expect_err("hour 25")
            .to_string();
        assert!(problem.0.contains(&crate_message), "{}", problem.0);
        let fields = Schedule::parse("every day").expect_err("two fields");
        assert!(fields.0.contains("has 2 fields"), "{}", fields.0);
        assert!(Schedule::parse("0 3 * * 8").is_err());
    }

    #[test]
    fn the_latest_due_slot_includes_one_falling_exactly_now() {
        let nightly = schedule("0 3 * * *");
        assert_eq!(
            nightly.latest_at_or_before(utc("2026-01-02T03:00:00Z")),
            Some(utc("2026-01-02T03:00:00Z"))
        );
        assert_eq!(
            nightly.latest_at_or_before(utc("2026-01-02T02:59:59Z")),
            Some(utc("2026-01-01T03:00:00Z"))
        );
        assert_eq!(
            nightly.next_after(utc("2026-01-02T03:00:00Z")),
            Some(utc("2026-01-03T03:00:00Z"))
        );
    }

    #[test]
    fn a_due_slot_is_taken_once_and_the_next_one_is_planned() {
        let every_5s = schedule("*/5 * * * * *");
        let created = Some(at(1_000));
        let first = plan(&every_5s, false, created, &[], at(1_007));
        assert_eq!(first.due, Some(at(1_005)));
        assert_eq!(first.next, Some(at(1_010)));
        // Once a backup carries that slot, the same instant plans nothing:
        // a retried or restarted reconcile does not repeat it.
        let again = plan(&every_5s, false, created, &[at(1_005)], at(1_007));
        assert_eq!(again.due, None);
        assert_eq!(again.next, Some(at(1_010)));
        // And the next slot is not skipped.
        let later = plan(&every_5s, false, created, &[at(1_005)], at(1_010));
        assert_eq!(later.due, Some(at(1_010)));
    }

    #[test]
    fn missed_slots_are_not_piled_up_only_the_latest_is_taken() {
        let every_5s = schedule("*/5 * * * * *");
        // Down from 1005 to 1063: slots 1010..1060 were missed.
        let plan = plan(&every_5s, false, Some(at(1_000)), &[at(1_005)], at(1_063));
        assert_eq!(plan.due, Some(at(1_060)));
        assert_eq!(plan.next, Some(at(1_065)));
    }

    #[test]
    fn a_slot_before_the_database_existed_is_never_due() {
        let nightly = schedule("0 3 * * *");
        let created = utc("2026-01-02T10:00:00Z");
        let plan = plan(
            &nightly,
            false,
            Some(created),
            &[],
            utc("2026-01-02T11:00:00Z"),
        );
        assert_eq!(plan.due, None);
        assert_eq!(plan.next, Some(utc("2026-01-03T03:00:00Z")));
    }

    #[test]
    fn a_suspended_schedule_takes_nothing_and_plans_nothing() {
        let every_5s = schedule("*/5 * * * * *");
        let plan = plan(&every_5s, true, Some(at(1_000)), &[], at(1_063));
        assert_eq!(
            plan,
            SlotPlan {
                due: None,
                next: None
            }
        );
    }

    #[test]
    fn a_backup_name_says_the_database_and_the_slot() {
        assert_eq!(
            backup_name("orders", utc("2026-01-02T03:04:05Z")),
            "orders-20260102-030405"
        );
    }

    #[test]
    fn a_backup_name_fits_63_characters_for_the_longest_database_name() {
        let long_a = format!("{}a", "x".repeat(51));
        let long_b = format!("{}b", "x".repeat(51));
        let slot = utc("2026-01-02T03:04:05Z");
        let a = backup_name(&long_a, slot);
        let b = backup_name(&long_b, slot);
        assert!(a.len() <= MAX_BACKUP_NAME, "{a} is {} long", a.len());
        assert_ne!(a, b, "two long names sharing a beginning collide");
        assert!(a.ends_with("-20260102-030405"), "{a}");
        assert_eq!(a, backup_name(&long_a, slot), "not deterministic");
        for length in 1..=52 {
            let name = backup_name(&"d".repeat(length), slot);
            assert!(name.len() <= MAX_BACKUP_NAME, "{name}");
        }
    }
}
