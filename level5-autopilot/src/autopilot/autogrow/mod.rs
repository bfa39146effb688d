//! Storage auto-grow (`spec.storage.autoGrow`): every instance's volume
//! grown before it fills, up to a maximum, never shrunk.
//!
//! What it models: an administrator watching the disk and raising the
//! claims' size before the server stops on a full volume. The measurement
//! is Level 4's: the collector reads the kubelet's volume stats of the
//! primary's data volume into the database's reading
//! ([`shared::capability::Observed::reading`]); a change of its use in
//! whole percent triggers a reconcile, so nothing is polled here. At or
//! above `thresholdPercent` the volumes grow by `increasePercent` of their
//! size, rounded up to whole mebibytes and at most `maxSize`
//! ([`decision`]).
//!
//! The decision is recorded in `status.autopilot.storage` (the size, and
//! the growth with what was measured and when) and announced by a
//! `StorageGrown` Event; the spec is never edited. [`effective_size`] makes
//! the recorded size the effective `spec.storage.size` while it is larger
//! than the spec's, so Level 1 grows every claim `data-<name>-<k>` (and the
//! StatefulSet's template), its shrink check compares with the grown size,
//! and Level 2's major upgrade sizes its new volume the same. The record is
//! kept even when `autoGrow` is removed: a volume never shrinks, so the
//! grown size stays the effective one until the spec's is larger.
//!
//! The condition `StorageAutoGrowLimited` (while `autoGrow` is set) is True
//! with reason `StorageAtMaximum`, and a Warning Event, once the volumes
//! are at `maxSize`: they will not grow further.
//!
//! Where it stops: growing a claim needs a storage class that allows
//! expansion (the sandbox's does); a volume is never shrunk, and a
//! `maxSize` below the current size is refused rather than acted on.

pub mod decision;

#[cfg(test)]
mod tests;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use shared::api::PostgresDB;
use shared::autopilot::autogrow::{AutoGrowSpec, StorageGrowth, StorageGrowthStatus};
use shared::capability::StatusDraft;
use shared::capability::{ApplyReport, Capability, Desired, EventType, Observed, SpecProblem};
use shared::conditions::Assessment;
use shared::error::Error;
use shared::quantity;

use decision::{Decision, Usage, bytes};

/// The condition saying whether the volumes reached `maxSize`.
pub const LIMITED: &str = "StorageAutoGrowLimited";
/// Its reason (and the Warning Event's) once they did.
pub const AT_MAXIMUM: &str = "StorageAtMaximum";
/// The Event of a growth.
pub const GROWN: &str = "StorageGrown";
/// The reason of a refused `autoGrow` section.
pub const INVALID: &str = "InvalidAutoGrow";

/// The size the volumes were grown to, the effective `spec.storage.size`;
/// `None` while they were not grown beyond the spec's size.
pub fn effective_size(db: &PostgresDB) -> Option<String> {
    let grown = db.status.as_ref()?.autopilot.as_ref()?.storage.as_ref()?;
    (quantity::compare(&grown.size, &db.spec.storage.size) == Some(std::cmp::Ordering::Greater))
        .then(|| grown.size.clone())
}

/// The recorded growth, from the status read.
fn recorded(db: &PostgresDB) -> Option<&StorageGrowthStatus> {
    db.status.as_ref()?.autopilot.as_ref()?.storage.as_ref()
}

/// What the volume measured: Level 4's latest reading of it.
fn usage(observed: &Observed) -> Option<Usage> {
    let reading = observed.reading()?;
    Some(Usage {
        used_bytes: reading.volume_used_bytes?,
        capacity_bytes: reading.volume_capacity_bytes?,
    })
}

/// The decision for `db` (its effective spec) and what it was decided
/// from; `None` without `autoGrow` or with sizes that do not parse (which
/// validation refuses).
fn decide<'a>(
    db: &'a PostgresDB,
    observed: &Observed,
) -> Option<(&'a AutoGrowSpec, Decision, u64)> {
    let spec = db.spec.storage.auto_grow.as_ref()?;
    let size = bytes(&db.spec.storage.size)?;
    let max = bytes(&spec.max_size)?;
    Some((
        spec,
        decision::decide(spec, size, max, usage(observed)),
        max,
    ))
}

/// The size to record for a growth to `to_bytes`: the spec's own spelling
/// of the maximum when it stops there.
fn size_text(spec: &AutoGrowSpec, to_bytes: u64, max_bytes: u64) -> String {
    if to_bytes >= max_bytes {
        spec.max_size.clone()
    } else {
        decision::quantity(to_bytes)
    }
}

/// Storage auto-grow.
pub struct AutoGrow;

impl Capability for AutoGrow {
    fn name(&self) -> &'static str {
        "autogrow"
    }

    fn sections(&self) -> &'static [&'static str] {
        &["storage.autoGrow"]
    }

    fn validate(&self, db: &PostgresDB, observed: &Observed) -> Vec<SpecProblem> {
        let Some(spec) = &db.spec.storage.auto_grow else {
            return Vec::new();
        };
        let mut problems = Vec::new();
        if !(50..=99).contains(&spec.threshold_percent) {
            problems.push(SpecProblem::new(
                "spec.storage.autoGrow.thresholdPercent",
                INVALID,
                format!(
                    "{} is out of range: a threshold is 50 to 99 percent of the volume",
                    spec.threshold_percent
                ),
            ));
        }
        if !(10..=100).contains(&spec.increase_percent) {
            problems.push(SpecProblem::new(
                "spec.storage.autoGrow.increasePercent",
                INVALID,
                format!(
                    "{} is out of range: a growth is 10 to 100 percent of the volume's size",
                    spec.increase_percent
                ),
            ));
        }
        match bytes(&spec.max_size).filter(|b| *b > 0) {
            None => problems.push(SpecProblem::new(
                "spec.storage.autoGrow.maxSize",
                INVALID,
                format!("{:?} is not a positive quantity", spec.max_size),
            )),
            Some(max) => {
                // The current size: the claims' (Level 1 reads them), or the
                // effective spec's (the grown size, or the spec's when larger).
                let current = level1_install::install::current_storage_size(db, observed)
                    .into_iter()
                    .chain(std::iter::once(db.spec.storage.size.clone()))
                    .filter_map(|size| Some((bytes(&size)?, size)))
                    .max_by_key(|(b, _)| *b);
                if let Some((current_bytes, current)) = current
                    && max < current_bytes
                {
                    problems.push(SpecProblem::new(
                        "spec.storage.autoGrow.maxSize",
                        INVALID,
                        format!(
                            "{} is below the volumes' current size {current}; volumes never shrink",
                            spec.max_size
                        ),
                    ));
                }
            }
        }
        problems
    }

    fn desire(
        &self,
        db: &PostgresDB,
        observed: &Observed,
        _now: jiff::Timestamp,
        desired: &mut Desired,
    ) -> Result<(), Error> {
        let Some((spec, decision, max)) = decide(db, observed) else {
            return Ok(());
        };
        if let Decision::Grow {
            from_bytes,
            to_bytes,
            used_percent,
            capped,
        } = decision
        {
            let used = usage(observed).map_or(0, |u| u.used_bytes);
            let to = size_text(spec, to_bytes, max);
            let limit = if capped {
                "; that is spec.storage.autoGrow.maxSize, the volumes will not grow further"
                    .to_string()
            } else {
                format!(" (at most {})", spec.max_size)
            };
            desired.note(
                EventType::Normal,
                GROWN,
                format!(
                    "The data volume was {used_percent}% used ({} of {}), at or above the {}% threshold: growing every instance's volume by {}% to {to}{limit}.",
                    decision::quantity(used.div_ceil(decision::MI) * decision::MI),
                    decision::quantity(from_bytes),
                    spec.threshold_percent,
                    spec.increase_percent,
                ),
            );
        }
        Ok(())
    }

    fn assess(
        &self,
        db: &PostgresDB,
        observed: &Observed,
        _applied: &ApplyReport,
        status: &mut StatusDraft,
    ) {
        let mut record = recorded(db).cloned();
        if let Some((spec, decision, max)) = decide(db, observed) {
            if let Decision::Grow {
                to_bytes,
                used_percent,
                ..
            } = decision
            {
                let to = size_text(spec, to_bytes, max);
                record = Some(StorageGrowthStatus {
                    size: to.clone(),
                    last_growth: Some(StorageGrowth {
                        at: Time(status.now),
                        from: db.spec.storage.size.clone(),
                        to,
                        used_percent: i64::try_from(used_percent).unwrap_or(i64::MAX),
                    }),
                });
            }
            let size = bytes(&db.spec.storage.size).unwrap_or(0);
            let assessment = if size >= max {
                Assessment::yes(
                    AT_MAXIMUM,
                    format!(
                        "the volumes are at spec.storage.autoGrow.maxSize ({}): they will not be grown further; raise maxSize or delete data",
                        spec.max_size
                    ),
                )
                .warn()
            } else {
                Assessment::no(
                    "BelowMaximum",
                    format!(
                        "the volumes ({}) can grow to spec.storage.autoGrow.maxSize ({}) when {}% used",
                        db.spec.storage.size, spec.max_size, spec.threshold_percent
                    ),
                )
            };
            status.conditions.set(LIMITED, assessment);
        }
        if let Some(record) = record {
            status.fields.autopilot.get_or_insert_default().storage = Some(record);
        }
    }
}
