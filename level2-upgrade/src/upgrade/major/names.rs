//! The names of a major upgrade's objects: its Job and the data volume of
//! each major.
//!
//! The volumes' own names are shared (`shared::volumes`: `<db>-data-<major>`
//! and `<db>-backup-<major>`); this module adds which claim holds a major's
//! data now, read from the cluster, and the Job of each attempt.

use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use level1_install::api::{Names, PRIMARY_ORDINAL};
use shared::api::PostgresDB;
use shared::capability::Observed;
use shared::ext::PvcExt;
use shared::volumes::{data_claim, is_verified};

/// The Job of the attempt started at `started_at` (its RFC 3339 text): a
/// short hash of the attempt keeps each attempt's Job (and its log) apart,
/// within the 63 characters a Job's name may have.
pub fn job_name(db_name: &str, to_major: u32, started_at: &str) -> String {
    // FNV-1a: stable across builds and platforms, which is all that matters here.
    let hash = format!("{db_name}/{started_at}")
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
    let suffix = format!("-upgrade-{to_major}-{:05x}", hash & 0xf_ffff);
    let keep = 63usize.saturating_sub(suffix.len()).min(db_name.len());
    format!("{}{suffix}", db_name[..keep].trim_end_matches('-'))
}

/// The claim-template PVC of the primary's pod, which holds the data of
/// the major the database was created with.
pub fn template_data_claim(db: &PostgresDB) -> String {
    Names::of(db).data_claim(PRIMARY_ORDINAL)
}

/// The PVC holding the data directory of `major`: the operator's
/// `<db>-data-<major>` once a migration into it was verified, else the
/// StatefulSet's claim-template PVC.
pub fn data_claim_of(db: &PostgresDB, observed: &Observed, major: u32) -> String {
    let names = Names::of(db);
    let ours = data_claim(&names.primary, major);
    let verified = observed
        .get::<PersistentVolumeClaim>(&ours)
        .is_some_and(|c| is_verified(&c));
    if verified {
        ours
    } else {
        template_data_claim(db)
    }
}

/// The text naming an attempt (its start time, RFC 3339): what the Job's
/// name hashes and its attempt annotation holds.
pub fn attempt_text(started_at: &Time) -> String {
    started_at.0.to_string()
}

/// Whether the PVC `claim` exists and is not being deleted.
pub fn claim_exists(observed: &Observed, claim: &str) -> bool {
    observed
        .get::<PersistentVolumeClaim>(claim)
        .is_some_and(|c| !c.is_deleting())
}
