//! How long the operator keeps what it no longer uses, and when that ends.
//!
//! A kept object (a previous major's data volume, a pre-upgrade dump, later
//! a backup) carries the instant it may be deleted in its
//! `retain-until` annotation ([`crate::keys::RETAIN_UNTIL_ANNOTATION`]), so a
//! restarted operator, or an administrator, reads the deadline from the
//! object itself. Deadlines are whole seconds, computed from the reconcile's
//! clock: the same `now` gives the same text wherever it is written (the
//! annotation and the status), whichever step computes it.

use jiff::{SignedDuration, Timestamp};
use kube::Resource;

use crate::api::status_time;
use crate::keys::RETAIN_UNTIL_ANNOTATION;

/// `now` to the whole second: how times are written in annotations and
/// status (see [`status_time`]).
pub fn to_second(now: Timestamp) -> Timestamp {
    status_time(now).0
}

/// The end of a retention of `hours` starting `now`, to the second.
pub fn retain_until(now: Timestamp, hours: u32) -> Option<Timestamp> {
    to_second(now)
        .checked_add(SignedDuration::from_hours(i64::from(hours)))
        .ok()
}

/// The annotation text of an instant: RFC 3339 in UTC to the second, the
/// text Kubernetes' `Time` has on the wire.
pub fn annotation_text(until: Timestamp) -> String {
    to_second(until).to_string()
}

/// Until when `object` is kept, from its annotation (`None` without one,
/// or when the annotation is not a time).
pub fn retained_until<K: Resource>(object: &K) -> Option<Timestamp> {
    object
        .meta()
        .annotations
        .as_ref()?
        .get(RETAIN_UNTIL_ANNOTATION)?
        .parse()
        .ok()
}

/// Whether `object`'s retention has passed at `now`. An object without a
/// retention is kept: it has not expired.
pub fn expired<K: Resource>(object: &K, now: Timestamp) -> bool {
    retained_until(object).is_some_and(|until| until <= now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::PersistentVolumeClaim;
    use kube::api::ObjectMeta;

    fn at(second: i64, nanos: i32) -> Timestamp {
        Timestamp::new(second, nanos).expect("a valid time")
    }

    #[test]
    fn a_retention_counts_whole_hours_from_the_second_it_starts() {
        let until = retain_until(at(1_000, 999_999_999), 2).expect("in range");
        assert_eq!(until, at(1_000 + 7_200, 0));
        assert_eq!(annotation_text(until), "1970-01-01T02:16:40Z");
    }

    #[test]
    fn an_object_expires_at_its_annotation_and_never_without_one() {
        let mut claim = PersistentVolumeClaim {
            metadata: ObjectMeta::default(),
            ..Default::default()
        };
        assert!(!expired(&claim, at(i64::from(i32::MAX), 0)));
        claim.metadata.annotations = Some(
            [(
                RETAIN_UNTIL_ANNOTATION.to_string(),
                annotation_text(at(100, 0)),
            )]
            .into(),
        );
        assert!(!expired(&claim, at(99, 0)));
        assert!(expired(&claim, at(100, 0)));
    }
}
