//! The volume claims that hold a database's data, and how they are named.
//!
//! Two kinds of claim hold data. A StatefulSet's claim template makes one
//! per pod, `data-<statefulset>-<ordinal>` ([`template_claim`]), which the
//! StatefulSet controller creates and never deletes. The operator makes its
//! own for what a template cannot express: the data directory of another
//! major version (`<db>-data-<major>`) and the dump taken before an upgrade
//! (`<db>-backup-<major>`), labelled with their [`VolumeRole`] and major
//! ([`owned_claim`]). Neither kind is owned by the `PostgresDB`: deleting a
//! database keeps its data, and an operator claim is deleted only when its
//! retention passed (see [`crate::retention`]).
//!
//! Names take what distinguishes the claim (the pod ordinal, the major), so
//! a level running several instances names each instance's claims.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimSpec, PersistentVolumeClaimVolumeSource, Volume,
    VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::ResourceExt;
use kube::api::ObjectMeta;

use crate::api::PostgresDB;
use crate::ext::PvcExt;
use crate::keys::{MAJOR_LABEL, RETAIN_UNTIL_ANNOTATION, VERIFIED_ANNOTATION, VOLUME_LABEL};
use crate::retention;

/// The name of the StatefulSet's claim template for the data directory
/// (also the name its pods mount it under).
pub const DATA_TEMPLATE: &str = "data";

/// What an operator claim holds: its `pgdb.example.com/volume` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VolumeRole {
    /// A data directory.
    Data,
    /// A dump of the databases.
    Backup,
}

impl VolumeRole {
    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            VolumeRole::Data => "data",
            VolumeRole::Backup => "backup",
        }
    }

    /// The role of an operator claim, from its label.
    pub fn of(claim: &PersistentVolumeClaim) -> Option<Self> {
        match claim.labels().get(VOLUME_LABEL)?.as_str() {
            "data" => Some(VolumeRole::Data),
            "backup" => Some(VolumeRole::Backup),
            _ => None,
        }
    }
}

/// The claim the StatefulSet `statefulset` makes for the pod with `ordinal`.
pub fn template_claim(statefulset: &str, ordinal: u32) -> String {
    format!("{DATA_TEMPLATE}-{statefulset}-{ordinal}")
}

/// The pod ordinal a claim of [`template_claim`]'s form is for.
pub fn template_claim_ordinal(statefulset: &str, claim: &str) -> Option<u32> {
    claim
        .strip_prefix(&format!("{DATA_TEMPLATE}-{statefulset}-"))?
        .parse()
        .ok()
}

/// The operator's claim for the data directory of `major`.
pub fn data_claim(db_name: &str, major: u32) -> String {
    format!("{db_name}-data-{major}")
}

/// The operator's claim for the dump taken before upgrading to `major`.
pub fn backup_claim(db_name: &str, major: u32) -> String {
    format!("{db_name}-backup-{major}")
}

/// The major a claim of [`data_claim`]'s form is for.
pub fn major_of_data_claim(db_name: &str, claim: &str) -> Option<u32> {
    claim
        .strip_prefix(&format!("{db_name}-data-"))?
        .parse()
        .ok()
}

/// Whether the operator made this claim (it carries a role label).
pub fn is_owned(claim: &PersistentVolumeClaim) -> bool {
    claim.labels().contains_key(VOLUME_LABEL)
}

/// What an operator claim must carry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnedClaim<'a> {
    /// Its name.
    pub name: &'a str,
    /// What it holds.
    pub role: VolumeRole,
    /// The major version it was made for.
    pub major: u32,
    /// When it may be deleted; without it, a retention set earlier is lifted.
    pub retain_until: Option<jiff::Timestamp>,
    /// The Job that verified a migration into it, once one did.
    pub verified_by: Option<&'a str>,
}

/// An operator claim: the spec's size, the live class when it exists (a
/// claim cannot change class), the spec's class otherwise. It keeps the
/// verification annotation it has (applying without it would remove it),
/// gets one when `verified_by` names the Job, and carries `retain_until`
/// only when given.
pub fn owned_claim(
    db: &PostgresDB,
    live: Option<&PersistentVolumeClaim>,
    claim: &OwnedClaim<'_>,
) -> PersistentVolumeClaim {
    let mut annotations: BTreeMap<String, String> = live
        .map(|c| c.annotations().clone())
        .unwrap_or_default()
        .into_iter()
        .filter(|(k, _)| k == VERIFIED_ANNOTATION)
        .collect();
    if let Some(job) = claim.verified_by {
        annotations.insert(VERIFIED_ANNOTATION.into(), job.into());
    }
    if let Some(until) = claim.retain_until {
        annotations.insert(
            RETAIN_UNTIL_ANNOTATION.into(),
            retention::annotation_text(until),
        );
    }
    let storage_class_name = match live {
        Some(c) => c.storage_class(),
        None => db.spec.storage.storage_class_name.clone(),
    };
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(claim.name.into()),
            labels: Some(BTreeMap::from([
                (VOLUME_LABEL.to_string(), claim.role.label().to_string()),
                (MAJOR_LABEL.to_string(), claim.major.to_string()),
            ])),
            annotations: (!annotations.is_empty()).then_some(annotations),
            ..Default::default()
        },
        spec: Some(claim_spec(&db.spec.storage.size, storage_class_name)),
        ..Default::default()
    }
}

/// The spec of every claim the operator makes: one ReadWriteOnce volume of
/// `size` (a quantity such as `1Gi`), of `storage_class_name` or the
/// cluster's default class.
pub fn claim_spec(size: &str, storage_class_name: Option<String>) -> PersistentVolumeClaimSpec {
    PersistentVolumeClaimSpec {
        access_modes: Some(vec!["ReadWriteOnce".into()]),
        storage_class_name,
        resources: Some(storage_request(size)),
        ..Default::default()
    }
}

/// A claim's request for `size` of storage (a quantity such as `1Gi`).
pub fn storage_request(size: &str) -> VolumeResourceRequirements {
    VolumeResourceRequirements {
        requests: Some(BTreeMap::from([(
            "storage".to_string(),
            Quantity(size.to_string()),
        )])),
        ..Default::default()
    }
}

/// Whether a migration was verified into the claim (it names the Job).
pub fn is_verified(claim: &PersistentVolumeClaim) -> bool {
    claim.annotations().contains_key(VERIFIED_ANNOTATION)
}

/// A pod volume named `name` mounting the claim `claim`.
pub fn claim_volume(name: &str, claim: &str) -> Volume {
    Volume {
        name: name.into(),
        persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
            claim_name: claim.into(),
            read_only: None,
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claim_names_carry_the_ordinal_or_the_major_and_read_back() {
        assert_eq!(template_claim("orders", 2), "data-orders-2");
        assert_eq!(template_claim_ordinal("orders", "data-orders-2"), Some(2));
        assert_eq!(template_claim_ordinal("orders", "data-other-2"), None);
        assert_eq!(data_claim("orders", 16), "orders-data-16");
        assert_eq!(backup_claim("orders", 16), "orders-backup-16");
        assert_eq!(major_of_data_claim("orders", "orders-data-16"), Some(16));
        assert_eq!(major_of_data_claim("orders", "orders-backup-16"), None);
    }
}
