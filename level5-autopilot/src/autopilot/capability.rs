//! Level 5's capability: read the instances ([`topology`]), decide the
//! roles ([`failover::progress`]), ask the core to act ([`instances`] for
//! the objects; here the pods a promotion deletes and the promotion
//! itself, `pg_promote()` on the target, which the core runs after the
//! objects, the roles ConfigMap first among them, are applied).
//!
//! Pods are watched (by the database's labels), so a pod that stops
//! being ready or goes away starts a reconcile at once.

use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service};
use kube::api::ApiResource;
use level2_upgrade::logins;
use shared::api::PostgresDB;
use shared::capability::{
    ApplyReport, Capability, Desired, Observed, Query, SpecProblem, StatusDraft,
};
use shared::error::Error;
use shared::sql::{SessionSettings, SqlAction, SqlProbe};

use super::failover::Decision;
use super::names::ordinal_of;
use super::{failover, instances, topology};

/// The statement that promotes a standby: it waits up to 4 seconds for
/// the promotion to finish, within the core's 5-second statement timeout
/// (the next reconcile sees the outcome either way).
pub const PROMOTE_SQL: &str = "SELECT pg_promote(true, 4)::text";

/// Asks the core for the decision's pod deletions and promotion.
pub fn act(db: &PostgresDB, observed: &Observed, decision: &Decision, desired: &mut Desired) {
    for deletion in &decision.delete_pods {
        desired.delete_observed_with_grace::<Pod>(
            &deletion.pod,
            deletion.uid.clone(),
            deletion.force.then_some(0),
            deletion.reason.clone(),
        );
    }
    let target = decision.promote.as_deref().and_then(|pod| {
        let ordinal = ordinal_of(db, pod)?;
        logins::pod_target(db, observed, ordinal)
    });
    if let Some(target) = target {
        let pod = target.pod.clone();
        desired.run_sql(SqlAction {
            target,
            statement: PROMOTE_SQL,
            reason: "PromotedReplica".into(),
            message: format!("promoted {pod} to primary"),
            settings: SessionSettings::default(),
        });
    }
}

/// High availability: instances, failover, switchover, self-healing.
pub struct Autopilot;

impl Capability for Autopilot {
    fn name(&self) -> &'static str {
        "autopilot"
    }

    fn sections(&self) -> &'static [&'static str] {
        &["instances", "primary", "failover", "replication"]
    }

    fn owned_kinds(&self) -> Vec<ApiResource> {
        vec![
            ApiResource::erase::<Service>(&()),
            ApiResource::erase::<ConfigMap>(&()),
            ApiResource::erase::<Secret>(&()),
        ]
    }

    fn watched_kinds(&self) -> Vec<ApiResource> {
        vec![ApiResource::erase::<Pod>(&())]
    }

    fn observe(&self, db: &PostgresDB) -> Vec<Query> {
        instances::queries(db)
    }

    fn sql_probes(&self, db: &PostgresDB, observed: &Observed) -> Vec<SqlProbe> {
        let mut probes = topology::probes(db, observed);
        probes.extend(instances::probes(db, observed));
        probes
    }

    fn validate(&self, db: &PostgresDB, observed: &Observed) -> Vec<SpecProblem> {
        let mut problems = instances::validate(db, observed);
        let topology = topology::observe(db, observed);
        problems.extend(failover::switchover::refusal(db, &topology));
        problems
    }

    fn desire(
        &self,
        db: &PostgresDB,
        observed: &Observed,
        now: jiff::Timestamp,
        desired: &mut Desired,
    ) -> Result<(), Error> {
        let topology = topology::observe(db, observed);
        let decision = failover::progress(db, &topology, now);
        for (type_, reason, message) in &decision.events {
            desired.note(*type_, reason, message.clone());
        }
        act(db, observed, &decision, desired);
        instances::desire(db, observed, &topology, &decision, desired)
    }

    fn assess(
        &self,
        db: &PostgresDB,
        observed: &Observed,
        _applied: &ApplyReport,
        status: &mut StatusDraft,
    ) {
        let topology = topology::observe(db, observed);
        let decision = failover::progress(db, &topology, status.now);
        status.fields.current_primary = decision.current_primary.clone();
        status.fields.high_availability = Some(decision.status.clone());
        status
            .conditions
            .set(failover::PRIMARY_AVAILABLE, decision.available.clone());
        if let Some(progressing) = decision
            .progressing
            .clone()
            .or_else(|| instances::progressing(db, observed))
        {
            status
                .conditions
                .set(shared::conditions::PROGRESSING, progressing);
        }
        if let Some(at) = decision.wake_at {
            status.wake_at(at);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::StatefulSet;
    use shared::testing::{DbBuilder, ObservedBuilder, PodBuilder, at, login_secret};

    fn pod(k: u32, ip: &str) -> Pod {
        let mut pod = PodBuilder::named(&format!("orders-{k}"))
            .owned_by::<StatefulSet>("orders")
            .phase("Running")
            .ready(true)
            .ip(ip)
            .build();
        pod.metadata.uid = Some(format!("uid-{k}"));
        pod
    }

    fn answer(in_recovery: bool, lsn: &str) -> shared::sql::SqlAnswer {
        let row = if in_recovery {
            vec![
                Some("true".into()),
                None,
                Some(lsn.into()),
                Some(lsn.into()),
                Some("1".into()),
                Some("streaming".into()),
                None,
                Some("true".into()),
            ]
        } else {
            vec![
                Some("false".into()),
                Some(lsn.into()),
                None,
                None,
                Some("1".into()),
                None,
                None,
                Some("true".into()),
            ]
        };
        Ok(vec![row])
    }

    #[test]
    fn a_frozen_primary_s_pod_is_deleted_with_no_grace_and_the_uid_it_was_seen_with() {
        // Its server has not answered for failover::lost::UNANSWERED_FOR.
        let db = DbBuilder::named("orders")
            .instances(2)
            .current_primary("orders-0")
            .high_availability(shared::ha::HighAvailabilityStatus {
                primary_lost_since: Some(shared::api::status_time(at(1_767_225_590))),
                ..Default::default()
            })
            .build();
        let observed = ObservedBuilder::new()
            .with(&login_secret("orders-superuser", "postgres", "pw"))
            .with(&pod(0, "10.0.0.1"))
            .with(&pod(1, "10.0.0.2"))
            .sql(
                &topology::probe_name("orders-0"),
                Err("no answer within 5s".into()),
            )
            .sql(&topology::probe_name("orders-1"), answer(true, "0/3000000"))
            .build();
        let mut desired = Desired::default();
        Autopilot
            .desire(&db, &observed, at(1_767_225_600), &mut desired)
            .expect("desires");
        let deletion = &desired.deletions()[0];
        assert_eq!(deletion.name, "orders-0");
        assert_eq!(deletion.uid.as_deref(), Some("uid-0"));
        assert_eq!(deletion.grace_period_seconds, Some(0));
        assert!(desired.sql().is_empty(), "not promoted before the fence");
        assert!(desired.notes.iter().any(|n| n.reason == "FailoverStarted"));
    }

    #[test]
    fn once_the_old_primary_is_gone_the_target_is_promoted_on_its_own_pod() {
        let db = DbBuilder::named("orders")
            .instances(2)
            .current_primary("orders-0")
            .build();
        let observed = ObservedBuilder::new()
            .with(&login_secret("orders-superuser", "postgres", "pw"))
            .with(&pod(1, "10.0.0.2"))
            .sql(&topology::probe_name("orders-1"), answer(true, "0/3000000"))
            .build();
        let mut desired = Desired::default();
        Autopilot
            .desire(&db, &observed, at(1_767_225_600), &mut desired)
            .expect("desires");
        assert!(desired.deletions().is_empty());
        let promote = &desired.sql()[0];
        assert_eq!(promote.statement, PROMOTE_SQL);
        assert_eq!(promote.target.pod, "orders-1");
        assert_eq!(promote.target.pod_ip.as_deref(), Some("10.0.0.2"));
    }

    #[test]
    fn a_healthy_primary_asks_for_nothing_and_status_names_it() {
        let db = DbBuilder::named("orders").instances(2).build();
        let observed = ObservedBuilder::new()
            .with(&login_secret("orders-superuser", "postgres", "pw"))
            .with(&pod(0, "10.0.0.1"))
            .with(&pod(1, "10.0.0.2"))
            .sql(
                &topology::probe_name("orders-0"),
                answer(false, "0/3000000"),
            )
            .sql(&topology::probe_name("orders-1"), answer(true, "0/3000000"))
            .build();
        let mut desired = Desired::default();
        let now = at(1_767_225_600);
        Autopilot
            .desire(&db, &observed, now, &mut desired)
            .expect("desires");
        assert!(desired.deletions().is_empty());
        assert!(!desired.sql().iter().any(|a| a.statement == PROMOTE_SQL));
        assert!(!desired.notes.iter().any(|n| n.reason.contains("Fail")));
        let mut status = StatusDraft {
            now,
            ..Default::default()
        };
        Autopilot.assess(&db, &observed, &ApplyReport::default(), &mut status);
        assert_eq!(status.fields.current_primary.as_deref(), Some("orders-0"));
        assert!(status.conditions.is_true(failover::PRIMARY_AVAILABLE));
        let ha = status.fields.high_availability.expect("reported");
        assert_eq!(ha.members.len(), 2);
        assert_eq!(ha.members[1].lag_bytes, Some(0));
        let members = Autopilot
            .sql_probes(&db, &observed)
            .into_iter()
            .filter(|p| p.statement == topology::MEMBER_SQL)
            .count();
        assert_eq!(members, 2);
        assert_eq!(Autopilot.watched_kinds()[0].kind, "Pod");
    }
}
