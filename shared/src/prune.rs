//! Pruning: deleting what the operator made for a database and no
//! capability of the running level desires any more.
//!
//! Server-side apply converges the objects a reconcile desires, but says
//! nothing about an object the operator made earlier and wants no more (a
//! child a higher level added before a lower level took over, a Job of an
//! earlier attempt). Such an orphan is deleted, with a Normal `Pruned`
//! Event naming it, when all of these hold ([`verdict`]):
//!
//! * its kind is one the level applies (a capability's `owned_kinds`), and
//!   the reconcile listed that kind by the database's instance label, so
//!   what exists is known ([`queries`] adds those lists: one per kind);
//! * it carries the database's instance label and the operator's
//!   managed-by label;
//! * its controller owner reference is this `PostgresDB`, by uid: what a
//!   StatefulSet or a Job controls (their pods), another database's
//!   children and objects the operator did not make are never candidates;
//! * it is not being deleted already;
//! * no capability desires it, or keeps it ([`Desired::keep`]), in this
//!   reconcile;
//! * it holds no data: volumes and snapshots ([`NEVER_PRUNED_KINDS`]),
//!   anything labelled with [`VOLUME_LABEL`] (a data volume or a
//!   backup, whatever its kind) and anything annotated
//!   [`NEVER_PRUNE_ANNOTATION`]`: "true"` are never pruned. A level that
//!   makes backups marks them so.
//!
//! The delete carries the uid the decision was made on as a precondition,
//! so an object recreated under the same name meanwhile is left alone, and
//! propagates in the background, so a pruned Job takes its pods along
//! (the API's default for Jobs orphans them).
//!
//! A paused database or a spec that cannot be served prunes nothing: the
//! core stops before deciding. Swapping a higher level for a lower one
//! deletes only children of kinds the lower level applies itself; volumes
//! are never candidates. Where it stops: an object that lost its labels or
//! its owner reference is no longer recognised as the operator's and is
//! left alone (finding it would take a cluster-wide scan), and the
//! `PostgresDB` itself is never touched.

use kube::api::{ApiResource, DeleteParams, DynamicObject, PropagationPolicy};
use kube::core::params::Preconditions;
use kube::{Resource, ResourceExt};

use crate::api::PostgresDB;
use crate::capability::{
    Deletion, DeletionOrigin, Desired, Level, ObjectKey, Observed, Query, QuerySelector,
};
use crate::keys::{INSTANCE_LABEL, MANAGED_BY_LABEL, NEVER_PRUNE_ANNOTATION, VOLUME_LABEL};
use crate::names::MANAGED_BY;

/// The reason of the Event published for each pruned object.
pub const PRUNED_REASON: &str = "Pruned";
/// Kinds (API group, kind) that hold data and are never pruned.
pub const NEVER_PRUNED_KINDS: [(&str, &str); 4] = [
    ("", "PersistentVolumeClaim"),
    ("", "PersistentVolume"),
    ("snapshot.storage.k8s.io", "VolumeSnapshot"),
    ("snapshot.storage.k8s.io", "VolumeSnapshotContent"),
];

/// What pruning concludes about one observed object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// An orphan: delete it.
    Prune,
    /// Leave it, for this reason.
    Keep(Kept),
}

/// Why an observed object is not pruned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kept {
    /// It holds data or a backup (its kind, label or annotation says so).
    HoldsData,
    /// It lacks the database's instance label or the managed-by label.
    NotLabelledForTheDatabase,
    /// Its controller is not this `PostgresDB` (a StatefulSet's pod,
    /// another database's child, or something the operator did not make).
    NotControlledByTheDatabase,
    /// It is being deleted already.
    BeingDeleted,
    /// A capability desires or keeps it.
    Desired,
}

/// The queries a reconcile makes: the level's own, plus a list by the
/// instance label of every kind the level applies that no capability lists
/// already, so pruning knows what exists.
pub fn queries(level: &Level, db: &PostgresDB) -> Vec<Query> {
    let mut queries = level.queries(db);
    for resource in owned_kinds(level) {
        let listed = queries
            .iter()
            .any(|q| q.resource == resource && q.selector == QuerySelector::Instance);
        if !listed {
            queries.push(Query {
                resource,
                selector: QuerySelector::Instance,
            });
        }
    }
    queries
}

/// The kinds the level's capabilities apply, without duplicates.
fn owned_kinds(level: &Level) -> Vec<ApiResource> {
    let mut kinds: Vec<ApiResource> = Vec::new();
    for resource in level.capabilities.iter().flat_map(|c| c.owned_kinds()) {
        if !kinds.contains(&resource) {
            kinds.push(resource);
        }
    }
    kinds
}

/// What pruning concludes about `object` of kind `resource`, observed for
/// the database named `db_name` with uid `db_uid`, when `wanted` are the
/// objects the capabilities desire or keep.
pub fn verdict(
    db_name: &str,
    db_uid: &str,
    resource: &ApiResource,
    object: &DynamicObject,
    wanted: &[ObjectKey],
) -> Verdict {
    let holds_data = NEVER_PRUNED_KINDS
        .iter()
        .any(|(group, kind)| *group == resource.group && *kind == resource.kind)
        || object.labels().contains_key(VOLUME_LABEL)
        || object
            .annotations()
            .get(NEVER_PRUNE_ANNOTATION)
            .is_some_and(|v| v == "true");
    if holds_data {
        return Verdict::Keep(Kept::HoldsData);
    }
    let labels = object.labels();
    let labelled = labels.get(INSTANCE_LABEL).map(String::as_str) == Some(db_name)
        && labels.get(MANAGED_BY_LABEL).map(String::as_str) == Some(MANAGED_BY);
    if !labelled {
        return Verdict::Keep(Kept::NotLabelledForTheDatabase);
    }
    let controlled = object
        .owner_references()
        .iter()
        .any(|o| o.controller == Some(true) && !db_uid.is_empty() && o.uid == db_uid);
    if !controlled {
        return Verdict::Keep(Kept::NotControlledByTheDatabase);
    }
    if object.metadata.deletion_timestamp.is_some() {
        return Verdict::Keep(Kept::BeingDeleted);
    }
    let key = (
        resource.group.clone(),
        resource.kind.clone(),
        object.name_any(),
    );
    if wanted.contains(&key) {
        return Verdict::Keep(Kept::Desired);
    }
    Verdict::Prune
}

/// The orphans to delete: observed objects of the kinds the level applies
/// and listed, whose [`verdict`] is [`Verdict::Prune`]. Empty when the
/// database has no uid yet.
pub fn orphans(
    level: &Level,
    db: &PostgresDB,
    observed: &Observed,
    desired: &Desired,
) -> Vec<Deletion> {
    let Some(db_uid) = db.meta().uid.as_deref() else {
        return Vec::new();
    };
    let db_name = db.name_any();
    let wanted: Vec<ObjectKey> = desired
        .objects()
        .iter()
        .map(|o| o.key())
        .chain(desired.kept().iter().cloned())
        .collect();
    let mut deletions = Vec::new();
    for resource in owned_kinds(level) {
        if !observed.was_listed(&resource) {
            continue;
        }
        for object in observed.all_raw(&resource) {
            if verdict(&db_name, db_uid, &resource, object, &wanted) == Verdict::Prune {
                deletions.push(Deletion {
                    resource: resource.clone(),
                    name: object.name_any(),
                    reason: format!("no capability of {} desires it any more", level.name),
                    uid: object.metadata.uid.clone(),
                    origin: DeletionOrigin::Prune,
                    grace_period_seconds: None,
                });
            }
        }
    }
    deletions
}

/// How to send a deletion: with its uid as a precondition when known, and,
/// for a pruned object, propagating to its dependents in the background.
pub fn delete_params(deletion: &Deletion) -> DeleteParams {
    DeleteParams {
        preconditions: deletion.uid.clone().map(|uid| Preconditions {
            uid: Some(uid),
            resource_version: None,
        }),
        propagation_policy: (deletion.origin == DeletionOrigin::Prune)
            .then_some(PropagationPolicy::Background),
        grace_period_seconds: deletion.grace_period_seconds,
        ..DeleteParams::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capability::Capability;
    use crate::testing::{ChildBuilder, DB_UID, DbBuilder};
    use k8s_openapi::api::apps::v1::StatefulSet;
    use k8s_openapi::api::batch::v1::Job;
    use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Service};

    /// A capability applying Services, Jobs and (to show they are still
    /// never pruned) PersistentVolumeClaims and Pods.
    struct Applies;

    impl Capability for Applies {
        fn name(&self) -> &'static str {
            "applies"
        }

        fn owned_kinds(&self) -> Vec<ApiResource> {
            vec![
                ApiResource::erase::<Service>(&()),
                ApiResource::erase::<Job>(&()),
                ApiResource::erase::<PersistentVolumeClaim>(&()),
                ApiResource::erase::<Pod>(&()),
            ]
        }
    }

    fn level() -> Level {
        Level {
            number: 9,
            name: "test-level",
            capabilities: vec![Box::new(Applies)],
            companions: Vec::new(),
            insights: None,
            effective_spec: crate::capability::as_written,
        }
    }

    fn database() -> PostgresDB {
        DbBuilder::named("orders").build()
    }

    /// What was observed: `objects` of kind `K`, with every kind of the
    /// test level listed.
    fn observed<K: Resource<DynamicType = ()>>(objects: Vec<DynamicObject>) -> Observed {
        let mut observed = Observed::default();
        for resource in owned_kinds(&level()) {
            observed.mark_listed(&resource);
        }
        for object in objects {
            observed.insert(&ApiResource::erase::<K>(&()), object);
        }
        observed
    }

    fn pruned(observed: &Observed, desired: &Desired) -> Vec<String> {
        orphans(&level(), &database(), observed, desired)
            .into_iter()
            .map(|d| format!("{}/{}", d.resource.kind, d.name))
            .collect()
    }

    fn service(name: &str) -> Service {
        Service {
            metadata: kube::api::ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn an_owned_service_no_capability_desires_is_pruned() {
        let observed = observed::<Service>(vec![
            ChildBuilder::of::<Service>("orders").build(),
            ChildBuilder::of::<Service>("orders-metrics").build(),
        ]);
        let mut desired = Desired::default();
        desired.add(&service("orders")).expect("serialises");
        assert_eq!(pruned(&observed, &desired), ["Service/orders-metrics"]);
    }

    #[test]
    fn a_pruned_object_is_deleted_only_if_it_still_has_the_uid_decided_on() {
        let observed =
            observed::<Service>(vec![ChildBuilder::of::<Service>("orders-metrics").build()]);
        let deletions = orphans(&level(), &database(), &observed, &Desired::default());
        assert_eq!(deletions.len(), 1);
        let deletion = &deletions[0];
        assert_eq!(deletion.origin, DeletionOrigin::Prune);
        assert!(
            deletion.reason.contains("test-level"),
            "{}",
            deletion.reason
        );
        let params = delete_params(deletion);
        assert_eq!(
            params.preconditions.and_then(|p| p.uid).as_deref(),
            Some("uid-orders-metrics")
        );
        assert!(matches!(
            params.propagation_policy,
            Some(PropagationPolicy::Background)
        ));
    }

    #[test]
    fn a_capability_s_deletion_keeps_the_api_s_default_propagation() {
        let mut desired = Desired::default();
        desired.delete::<Pod>("orders-0", "stuck");
        let params = delete_params(&desired.deletions()[0]);
        assert!(params.preconditions.is_none());
        assert!(params.propagation_policy.is_none());
        assert!(params.grace_period_seconds.is_none());
    }

    #[test]
    fn a_deletion_asked_without_a_grace_period_carries_it_and_its_uid() {
        let mut desired = Desired::default();
        desired.delete_observed_with_grace::<Pod>(
            "orders-0",
            Some("uid-0".into()),
            Some(0),
            "frozen",
        );
        let params = delete_params(&desired.deletions()[0]);
        assert_eq!(params.grace_period_seconds, Some(0));
        assert_eq!(
            params.preconditions.and_then(|p| p.uid).as_deref(),
            Some("uid-0")
        );
    }

    #[test]
    fn an_object_a_capability_keeps_is_not_pruned() {
        let observed = observed::<Job>(vec![
            ChildBuilder::of::<Job>("orders-upgrade-16-abcde").build(),
            ChildBuilder::of::<Job>("orders-upgrade-16-01234").build(),
        ]);
        let mut desired = Desired::default();
        desired.keep::<Job>("orders-upgrade-16-abcde");
        assert_eq!(pruned(&observed, &desired), ["Job/orders-upgrade-16-01234"]);
    }

    #[test]
    fn a_data_volume_is_never_pruned() {
        let claim = ChildBuilder::of::<PersistentVolumeClaim>("data-orders-0").build();
        let observed = observed::<PersistentVolumeClaim>(vec![claim.clone()]);
        assert!(pruned(&observed, &Desired::default()).is_empty());
        assert_eq!(
            verdict(
                "orders",
                DB_UID,
                &ApiResource::erase::<PersistentVolumeClaim>(&()),
                &claim,
                &[]
            ),
            Verdict::Keep(Kept::HoldsData)
        );
    }

    #[test]
    fn a_backup_is_never_pruned_whatever_its_kind() {
        let observed = observed::<Job>(vec![
            ChildBuilder::of::<Job>("orders-backup-nightly")
                .label(VOLUME_LABEL, "backup")
                .build(),
            ChildBuilder::of::<Job>("orders-dump")
                .annotation(NEVER_PRUNE_ANNOTATION, "true")
                .build(),
        ]);
        assert!(pruned(&observed, &Desired::default()).is_empty());
    }

    #[test]
    fn a_pod_owned_by_the_statefulset_is_never_pruned() {
        let pod = ChildBuilder::of::<Pod>("orders-0")
            .controlled_by::<StatefulSet>("orders", "sts-uid")
            .build();
        let observed = observed::<Pod>(vec![pod.clone()]);
        assert!(pruned(&observed, &Desired::default()).is_empty());
        assert_eq!(
            verdict("orders", DB_UID, &ApiResource::erase::<Pod>(&()), &pod, &[]),
            Verdict::Keep(Kept::NotControlledByTheDatabase)
        );
    }

    #[test]
    fn an_object_another_database_owns_is_left_alone() {
        let observed = observed::<Service>(vec![
            ChildBuilder::of::<Service>("payments")
                .label(INSTANCE_LABEL, "payments")
                .build(),
            ChildBuilder::of::<Service>("orders-copy")
                .controlled_by::<PostgresDB>("payments", "other-db-uid")
                .build(),
        ]);
        assert!(pruned(&observed, &Desired::default()).is_empty());
    }

    #[test]
    fn an_object_without_the_operator_s_labels_is_left_alone() {
        let observed = observed::<Service>(vec![
            ChildBuilder::of::<Service>("orders-by-hand")
                .without_label(MANAGED_BY_LABEL)
                .build(),
        ]);
        assert!(pruned(&observed, &Desired::default()).is_empty());
    }

    #[test]
    fn an_object_being_deleted_is_not_deleted_again() {
        let observed = observed::<Service>(vec![
            ChildBuilder::of::<Service>("orders-metrics")
                .being_deleted()
                .build(),
        ]);
        assert!(pruned(&observed, &Desired::default()).is_empty());
    }

    #[test]
    fn a_kind_the_level_does_not_apply_is_never_pruned() {
        // A lower level does not touch what a higher level applies and it
        // does not (here, StatefulSets), even when it reads them.
        let mut observed = observed::<StatefulSet>(vec![
            ChildBuilder::of::<StatefulSet>("orders-replica").build(),
        ]);
        observed.mark_listed(&ApiResource::erase::<StatefulSet>(&()));
        assert!(pruned(&observed, &Desired::default()).is_empty());
    }

    /// A capability that watches `PostgresDBBackup`s without owning them.
    struct WatchesBackups;

    impl Capability for WatchesBackups {
        fn name(&self) -> &'static str {
            "watches"
        }

        fn watched_kinds(&self) -> Vec<ApiResource> {
            vec![ApiResource::erase::<crate::backup::PostgresDBBackup>(&())]
        }
    }

    #[test]
    fn a_watched_kind_is_never_pruned_even_listed_and_controlled_by_the_database() {
        let level = Level {
            number: 9,
            name: "test-level",
            capabilities: vec![Box::new(Applies), Box::new(WatchesBackups)],
            companions: Vec::new(),
            insights: None,
            effective_spec: crate::capability::as_written,
        };
        let resource = ApiResource::erase::<crate::backup::PostgresDBBackup>(&());
        let mut observed = Observed::default();
        observed.mark_listed(&resource);
        observed.insert(
            &resource,
            ChildBuilder::of::<crate::backup::PostgresDBBackup>("orders-20260101-030000").build(),
        );
        let deletions = orphans(&level, &database(), &observed, &Desired::default());
        assert!(deletions.is_empty(), "{deletions:?}");
        assert!(
            !queries(&level, &database())
                .iter()
                .any(|q| q.resource == resource),
            "the core lists only owned kinds; a watched kind is listed by its capability"
        );
    }

    #[test]
    fn a_kind_that_was_not_listed_is_not_pruned() {
        let mut observed = Observed::default();
        observed.insert(
            &ApiResource::erase::<Service>(&()),
            ChildBuilder::of::<Service>("orders-metrics").build(),
        );
        assert!(pruned(&observed, &Desired::default()).is_empty());
    }

    #[test]
    fn a_database_without_a_uid_prunes_nothing() {
        let observed =
            observed::<Service>(vec![ChildBuilder::of::<Service>("orders-metrics").build()]);
        let mut db = database();
        db.metadata.uid = None;
        assert!(orphans(&level(), &db, &observed, &Desired::default()).is_empty());
    }

    #[test]
    fn every_kind_the_level_applies_is_listed_once() {
        let queries = queries(&level(), &database());
        let listed: Vec<&str> = queries
            .iter()
            .filter(|q| q.selector == QuerySelector::Instance)
            .map(|q| q.resource.kind.as_str())
            .collect();
        assert_eq!(listed, ["Service", "Job", "PersistentVolumeClaim", "Pod"]);
    }
}
