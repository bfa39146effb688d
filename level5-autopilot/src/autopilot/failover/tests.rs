//! Unit tests of the failover decisions: each builds a database (its
//! spec and the status an earlier reconcile wrote) and a topology, and
//! checks the one decision `progress` makes.

use jiff::Timestamp;
use shared::api::{PostgresDB, status_time};
use shared::conditions::ConditionStatus;
use shared::ha::{
    FailoverSpec, HighAvailabilityStatus, InstanceRole, InstanceStatus, PromotionKind,
    PromotionPhase, PromotionStatus, ReplicationSpec,
};
use shared::testing::{DbBuilder, at};

use super::*;
use crate::autopilot::topology::{Lsn, Member, PodView, Server, Topology};

const NOW: i64 = 1_767_225_600;

fn now() -> Timestamp {
    at(NOW)
}

fn ready(k: u32) -> PodView {
    PodView::Ready {
        uid: format!("uid-{k}"),
        since: None,
    }
}

fn not_ready(k: u32) -> PodView {
    PodView::NotReady {
        uid: format!("uid-{k}"),
        why: "phase Running".into(),
    }
}

/// Pod `k` being deleted, its grace period ending at `until` (seconds
/// from [`NOW`]) when known.
fn deleting(k: u32, until: Option<i64>) -> PodView {
    PodView::Deleting {
        uid: format!("uid-{k}"),
        until: until.map(|seconds| at(NOW + seconds)),
    }
}

fn primary(lsn: u64) -> Server {
    Server::Primary {
        lsn: Lsn(lsn),
        timeline: 1,
        slots: vec![],
        replication_role: true,
    }
}

fn replica(received: u64) -> Server {
    Server::Replica {
        received: Some(Lsn(received)),
        replayed: Some(Lsn(received)),
        timeline: Some(1),
        streaming: true,
    }
}

fn unreachable() -> Server {
    Server::Unreachable("no answer within 5s".into())
}

fn member(k: u32, pod: PodView, server: Server) -> Member {
    Member {
        name: format!("orders-{k}"),
        ordinal: k,
        pod,
        server,
    }
}

fn topology(primary: &str, members: Vec<Member>) -> Topology {
    Topology {
        members,
        recorded_primary: Some(primary.into()),
        bootstrapped: true,
        rolling_out: false,
    }
}

/// Three instances, `orders-0` the primary as an earlier reconcile saw it
/// (the replicas 100 and 300 bytes behind).
fn database() -> DbBuilder {
    DbBuilder::named("orders")
        .instances(3)
        .current_primary("orders-0")
        .high_availability(HighAvailabilityStatus {
            instances: 3,
            timeline: Some(1),
            members: vec![
                status_member("orders-0", InstanceRole::Primary, None),
                status_member("orders-1", InstanceRole::Replica, Some(300)),
                status_member("orders-2", InstanceRole::Replica, Some(100)),
            ],
            ..Default::default()
        })
}

fn status_member(name: &str, role: InstanceRole, lag: Option<i64>) -> InstanceStatus {
    InstanceStatus {
        name: name.into(),
        role,
        ready: true,
        timeline: Some(1),
        received_lsn: None,
        replayed_lsn: None,
        lag_bytes: lag,
    }
}

fn with_promotion(db: DbBuilder, record: PromotionStatus) -> PostgresDB {
    let mut db = db.build();
    let status = db.status.get_or_insert_with(Default::default);
    status.current_primary = Some(record.to.clone());
    status
        .high_availability
        .get_or_insert_with(Default::default)
        .promotion = Some(record);
    db
}

fn failover_record(phase: PromotionPhase, from_pod_uid: Option<&str>) -> PromotionStatus {
    PromotionStatus {
        kind: PromotionKind::Failover,
        from: "orders-0".into(),
        from_pod_uid: from_pod_uid.map(String::from),
        to: "orders-2".into(),
        phase,
        reason: "the primary orders-0 was lost".into(),
        started_at: status_time(at(NOW - 5)),
        completed_at: None,
        lag_bytes_at_failover: Some(100),
    }
}

fn healthy() -> Topology {
    topology(
        "orders-0",
        vec![
            member(0, ready(0), primary(1000)),
            member(1, ready(1), replica(700)),
            member(2, ready(2), replica(900)),
        ],
    )
}

fn lost_primary(pod: PodView, server: Server) -> Topology {
    let mut t = healthy();
    t.members[0].pod = pod;
    t.members[0].server = server;
    t
}

fn reasons(decision: &Decision) -> Vec<&str> {
    decision.events.iter().map(|(_, r, _)| r.as_str()).collect()
}

#[test]
fn a_serving_primary_is_left_alone_and_reported_available() {
    let decision = progress(&database().build(), &healthy(), now());
    assert_eq!(decision.recorded_primary, "orders-0");
    assert_eq!(decision.serving_primary.as_deref(), Some("orders-0"));
    assert!(decision.delete_pods.is_empty() && decision.promote.is_none());
    assert!(decision.events.is_empty(), "{:?}", decision.events);
    assert_eq!(decision.replicas, 3);
    assert_eq!(decision.available.status, ConditionStatus::True);
    assert_eq!(decision.available.reason, "PrimaryServing");
    assert!(decision.progressing.is_none());
    assert_eq!(decision.current_primary.as_deref(), Some("orders-0"));
    let members = &decision.status.members;
    assert_eq!(members.len(), 3);
    assert_eq!(members[0].role, InstanceRole::Primary);
    assert_eq!(members[2].lag_bytes, Some(100));
    assert_eq!(members[2].received_lsn.as_deref(), Some("0/384"));
    assert_eq!(decision.status.timeline, Some(1));
    assert_eq!(decision.status.instances, 3);
}

#[test]
fn a_lost_primary_is_waited_for_during_the_failover_delay() {
    let db = database()
        .failover(FailoverSpec { delay_seconds: 30 })
        .build();
    let decision = progress(&db, &lost_primary(not_ready(0), unreachable()), now());
    assert_eq!(decision.serving_primary.as_deref(), Some("orders-0"));
    assert!(decision.delete_pods.is_empty() && decision.promote.is_none());
    assert_eq!(decision.status.primary_lost_since, Some(status_time(now())));
    assert_eq!(reasons(&decision), ["PrimaryLost"]);
    assert_eq!(decision.available.reason, "PrimaryLost");
    assert_eq!(decision.wake_at, Some(at(NOW + 30)));
}

#[test]
fn a_primary_lost_for_the_whole_delay_is_fenced_and_the_replica_with_the_most_wal_chosen() {
    let db = lost_since(
        database().failover(FailoverSpec { delay_seconds: 30 }),
        NOW - 31,
    );
    let decision = progress(&db, &lost_primary(ready(0), unreachable()), now());
    assert_eq!(decision.recorded_primary, "orders-2");
    assert_eq!(decision.serving_primary, None, "the Service is fenced");
    assert_eq!(
        decision.delete_pods,
        [PodDeletion {
            pod: "orders-0".into(),
            uid: Some("uid-0".into()),
            reason: "fencing the old primary orders-0 before promoting orders-2".into(),
            force: true,
        }]
    );
    assert_eq!(decision.promote, None, "not before the old pod is gone");
    let record = decision.status.promotion.as_ref().expect("a promotion");
    assert_eq!(record.kind, PromotionKind::Failover);
    assert_eq!(record.phase, PromotionPhase::Fencing);
    assert_eq!(record.from_pod_uid.as_deref(), Some("uid-0"));
    assert_eq!(record.lag_bytes_at_failover, Some(100));
    assert_eq!(decision.status.primary_lost_since, None);
    assert_eq!(decision.current_primary.as_deref(), Some("orders-2"));
    assert_eq!(decision.available.reason, "FailingOver");
    assert_eq!(
        decision.progressing.as_ref().map(|p| p.reason.as_str()),
        Some("FailingOver")
    );
    assert!(reasons(&decision).contains(&"FailoverStarted"));
    assert!(reasons(&decision).contains(&"FencingOldPrimary"));
}

#[test]
fn the_lag_at_failover_is_the_targets_lag_when_the_primary_last_answered_even_after_a_reconcile_saw_it_lost()
 {
    // First reconcile after the kill: the pod is still ready, its server
    // does not answer, so it is waited for (UNANSWERED_FOR) and status is
    // written with the primary unreachable.
    let mut db = database().build();
    let first = progress(&db, &lost_primary(ready(0), unreachable()), now());
    assert_eq!(first.available.reason, "PrimaryLost");
    assert!(first.status.promotion.is_none());
    assert_eq!(
        first.status.members[2].lag_bytes,
        Some(100),
        "the lag as last seen is kept while the primary does not answer"
    );
    // Next reconcile: the pod turned unready; the failover starts from
    // the status the first one wrote.
    db.status.as_mut().expect("status").high_availability = Some(first.status.clone());
    let decision = progress(&db, &lost_primary(not_ready(0), unreachable()), at(NOW + 1));
    let record = decision.status.promotion.as_ref().expect("a promotion");
    assert_eq!(record.to, "orders-2");
    assert_eq!(record.lag_bytes_at_failover, Some(100));
}

#[test]
fn a_primary_whose_pod_is_not_ready_but_whose_server_accepts_writes_is_not_lost() {
    let decision = progress(
        &database().build(),
        &lost_primary(not_ready(0), primary(1000)),
        now(),
    );
    assert_eq!(decision.serving_primary.as_deref(), Some("orders-0"));
    assert!(decision.events.is_empty() && decision.status.promotion.is_none());
}

#[test]
fn a_recorded_primary_that_answers_in_recovery_is_replaced_without_deleting_it() {
    let decision = progress(
        &database().build(),
        &lost_primary(ready(0), replica(1000)),
        now(),
    );
    assert!(decision.delete_pods.is_empty());
    assert_eq!(decision.promote.as_deref(), Some("orders-2"));
}

#[test]
fn replicas_tie_to_the_lowest_ordinal_and_instances_beyond_the_spec_are_never_chosen() {
    let db = database().instances(2).build();
    let mut t = lost_primary(PodView::Absent, Server::NotAsked);
    t.members[1].server = replica(900);
    let decision = progress(&db, &t, now());
    assert_eq!(decision.recorded_primary, "orders-1");
    let db = database().build();
    let decision = progress(&db, &t, now());
    assert_eq!(
        decision.recorded_primary, "orders-1",
        "a tie: the lowest ordinal"
    );
}

#[test]
fn with_the_old_pod_gone_the_target_is_promoted_in_the_same_reconcile() {
    let decision = progress(
        &database().build(),
        &lost_primary(PodView::Absent, Server::NotAsked),
        now(),
    );
    assert!(decision.delete_pods.is_empty());
    assert_eq!(decision.promote.as_deref(), Some("orders-2"));
    assert_eq!(decision.serving_primary, None);
    let record = decision.status.promotion.as_ref().expect("a promotion");
    assert_eq!(record.phase, PromotionPhase::Promoting);
    assert!(reasons(&decision).contains(&"PromotingReplica"));
}

#[test]
fn the_target_is_promoted_only_once_the_old_pod_is_gone_recreated_or_a_replica() {
    let db = with_promotion(
        database(),
        failover_record(PromotionPhase::Fencing, Some("uid-0")),
    );
    let still_there = progress(&db, &lost_primary(ready(0), unreachable()), now());
    assert_eq!(still_there.promote, None);
    assert_eq!(still_there.delete_pods.len(), 1, "deleted again");
    let being_deleted = progress(
        &db,
        &lost_primary(deleting(0, None), Server::NotAsked),
        now(),
    );
    assert_eq!(being_deleted.promote, None);
    for (pod, server) in [
        (PodView::Absent, Server::NotAsked),
        (
            PodView::NotReady {
                uid: "uid-new".into(),
                why: "starting".into(),
            },
            Server::NotAsked,
        ),
        (ready(0), replica(500)),
    ] {
        let decision = progress(&db, &lost_primary(pod.clone(), server), now());
        assert_eq!(decision.promote.as_deref(), Some("orders-2"), "{pod:?}");
        assert!(decision.delete_pods.is_empty(), "{pod:?}");
    }
}

#[test]
fn an_old_primary_pod_already_being_deleted_keeps_its_grace_period_and_is_force_deleted_only_after_it()
 {
    let db = with_promotion(
        database(),
        failover_record(PromotionPhase::Fencing, Some("uid-0")),
    );
    // Deleted gracefully by someone else, its server shutting down (it
    // no longer answers): its grace period runs for 30 more seconds.
    let shutting_down = progress(
        &db,
        &lost_primary(deleting(0, Some(30)), unreachable()),
        now(),
    );
    assert!(shutting_down.delete_pods.is_empty(), "no grace-0 delete");
    assert_eq!(shutting_down.promote, None);
    assert_eq!(shutting_down.wake_at, Some(at(NOW + 1)), "rechecked");
    let at_the_end = progress(
        &db,
        &lost_primary(deleting(0, Some(30)), unreachable()),
        at(NOW + 29),
    );
    assert!(at_the_end.delete_pods.is_empty());
    // Still listed after its deletionTimestamp: no kubelet stops it.
    let past = progress(
        &db,
        &lost_primary(deleting(0, Some(30)), unreachable()),
        at(NOW + 30),
    );
    assert_eq!(past.delete_pods.len(), 1);
    assert!(past.delete_pods[0].force);
    assert_eq!(past.delete_pods[0].uid.as_deref(), Some("uid-0"));
    assert_eq!(past.promote, None);
}

#[test]
fn no_replica_is_promoted_while_another_server_accepts_writes() {
    let db = with_promotion(
        database(),
        failover_record(PromotionPhase::Fencing, Some("uid-0")),
    );
    let mut t = lost_primary(PodView::Absent, Server::NotAsked);
    t.members[1].server = primary(950);
    let decision = progress(&db, &t, now());
    assert_eq!(decision.promote, None);
    assert_eq!(decision.serving_primary, None);
    assert_eq!(
        decision.delete_pods[0].pod, "orders-1",
        "the stray is fenced"
    );
}

#[test]
fn a_target_answering_as_primary_completes_the_failover_and_is_served() {
    let db = with_promotion(
        database(),
        failover_record(PromotionPhase::Promoting, Some("uid-0")),
    );
    let mut t = lost_primary(PodView::Absent, Server::NotAsked);
    t.recorded_primary = Some("orders-2".into());
    t.members[2].server = Server::Primary {
        lsn: Lsn(950),
        timeline: 2,
        slots: vec![],
        replication_role: true,
    };
    let decision = progress(&db, &t, now());
    assert_eq!(decision.serving_primary.as_deref(), Some("orders-2"));
    assert_eq!(decision.promote, None);
    let record = decision.status.promotion.as_ref().expect("kept");
    assert_eq!(record.phase, PromotionPhase::Completed);
    assert_eq!(record.completed_at, Some(status_time(now())));
    assert_eq!(reasons(&decision), ["FailoverCompleted"]);
    assert_eq!(decision.available.status, ConditionStatus::True);
    assert!(decision.progressing.is_none());
    assert_eq!(decision.status.timeline, Some(2));

    // The next reconcile: at rest.
    let mut db = db;
    let status = db.status.as_mut().expect("status");
    status.high_availability = Some(decision.status.clone());
    let after = progress(&db, &t, at(NOW + 1));
    assert_eq!(after.serving_primary.as_deref(), Some("orders-2"));
    assert!(after.events.is_empty() && after.delete_pods.is_empty());
}

#[test]
fn with_synchronous_replication_a_failover_waits_for_enough_replicas_to_answer_and_reports_no_lag()
{
    let sync = ReplicationSpec {
        synchronous: true,
        synchronous_replicas: 1,
    };
    let db = database().replication(sync).build();
    let mut t = lost_primary(PodView::Absent, Server::NotAsked);
    t.members[2].server = unreachable();
    // One replica of two answers: the commit may be on the other only.
    let decision = progress(&db, &t, now());
    assert_eq!(decision.available.reason, "NoFailoverCandidate");
    assert_eq!(decision.serving_primary.as_deref(), Some("orders-0"));
    assert!(decision.status.promotion.is_none());
    let decision = progress(&db, &lost_primary(PodView::Absent, Server::NotAsked), now());
    let record = decision.status.promotion.as_ref().expect("a promotion");
    assert_eq!(record.lag_bytes_at_failover, None);
    assert_eq!(record.to, "orders-2");
}

#[test]
fn a_single_instance_that_is_lost_is_reported_and_never_fenced() {
    let db = DbBuilder::named("orders").build();
    let t = Topology {
        members: vec![member(0, not_ready(0), unreachable())],
        recorded_primary: None,
        bootstrapped: true,
        rolling_out: false,
    };
    let decision = progress(&db, &t, now());
    assert_eq!(decision.serving_primary.as_deref(), Some("orders-0"));
    assert_eq!(decision.available.reason, "NoFailoverCandidate");
    assert!(decision.delete_pods.is_empty());
    assert_eq!(decision.replicas, 1);
}

#[test]
fn a_database_never_initialised_has_no_primary_to_lose() {
    let db = DbBuilder::named("orders").instances(2).build();
    let t = Topology {
        members: vec![
            member(0, not_ready(0), Server::NotAsked),
            member(1, PodView::Absent, Server::NotAsked),
        ],
        recorded_primary: None,
        bootstrapped: false,
        rolling_out: false,
    };
    let decision = progress(&db, &t, now());
    assert!(!decision.bootstrapped);
    assert_eq!(decision.available.status, ConditionStatus::Unknown);
    assert!(decision.events.is_empty() && decision.delete_pods.is_empty());
    assert_eq!(decision.status.primary_lost_since, None);
}

#[test]
fn a_pod_deleted_by_someone_else_when_the_failover_starts_is_fenced_again_when_it_returns() {
    // At the start the old pod is being deleted: its replacement may have
    // started before the roles changed, so it is not trusted.
    let deleting = lost_primary(deleting(0, None), Server::NotAsked);
    let start = progress(&database().build(), &deleting, now());
    let record = start.status.promotion.clone().expect("a promotion");
    assert_eq!(record.from_pod_uid, None);
    assert_eq!(start.promote, None);
    let db = with_promotion(database(), record);
    let replacement = lost_primary(
        PodView::NotReady {
            uid: "uid-new".into(),
            why: "starting".into(),
        },
        Server::NotAsked,
    );
    let next = progress(&db, &replacement, at(NOW + 1));
    assert_eq!(next.promote, None);
    assert_eq!(next.delete_pods[0].uid.as_deref(), Some("uid-new"));
    assert_eq!(
        next.status
            .promotion
            .as_ref()
            .and_then(|r| r.from_pod_uid.as_deref()),
        Some("uid-new")
    );
}

#[test]
fn a_switchover_fences_then_waits_for_the_target_to_catch_up_before_stopping_the_primary() {
    let db = database().primary("orders-1").build();
    let decision = progress(&db, &healthy(), now());
    assert_eq!(decision.recorded_primary, "orders-1");
    assert_eq!(decision.serving_primary, None);
    assert!(
        decision.delete_pods.is_empty(),
        "orders-1 is 300 bytes behind"
    );
    let record = decision.status.promotion.clone().expect("a promotion");
    assert_eq!(record.kind, PromotionKind::Switchover);
    assert_eq!(record.phase, PromotionPhase::CatchingUp);
    assert_eq!(record.from_pod_uid.as_deref(), Some("uid-0"));
    assert_eq!(reasons(&decision), ["SwitchoverStarted"]);
    assert_eq!(
        decision.progressing.as_ref().map(|p| p.reason.as_str()),
        Some("SwitchingOver")
    );

    let db = with_promotion(database().primary("orders-1"), record.clone());
    let mut caught_up = healthy();
    caught_up.members[1].server = replica(1000);
    let decision = progress(&db, &caught_up, at(NOW + 1));
    assert_eq!(decision.delete_pods.len(), 1);
    assert!(
        !decision.delete_pods[0].force,
        "a graceful stop sends the WAL"
    );
    assert_eq!(decision.promote, None);
    let fencing = decision.status.promotion.clone().expect("a promotion");
    assert_eq!(fencing.phase, PromotionPhase::Fencing);

    // Behind still, but streaming for longer than the wait: stopped anyway.
    let decision = progress(&db, &healthy(), at(NOW + 11));
    assert_eq!(decision.delete_pods.len(), 1);

    let db = with_promotion(database().primary("orders-1"), fencing);
    let mut recreated = caught_up.clone();
    recreated.members[0].pod = not_ready(9);
    recreated.members[0].server = Server::NotAsked;
    let decision = progress(&db, &recreated, at(NOW + 2));
    assert_eq!(decision.promote.as_deref(), Some("orders-1"));
}

#[test]
fn a_switchover_waits_for_a_target_that_does_not_stream_and_refuses_a_ready_one() {
    let db = database().primary("orders-1").build();
    let mut t = healthy();
    t.members[1].server = Server::Replica {
        received: Some(Lsn(10)),
        replayed: Some(Lsn(10)),
        timeline: Some(1),
        streaming: false,
    };
    let decision = progress(&db, &t, now());
    assert!(decision.status.promotion.is_none());
    assert_eq!(decision.serving_primary.as_deref(), Some("orders-0"));
    let problem = switchover::refusal(&db, &t).expect("refused");
    assert_eq!(problem.field, "spec.primary");
    assert!(problem.reason.starts_with("Refused"));
    assert!(
        problem.observed,
        "a replica may stream a moment later: looked at again soon"
    );
    t.members[1].pod = not_ready(1);
    assert_eq!(
        switchover::refusal(&db, &t),
        None,
        "still starting: waited for"
    );
    assert_eq!(switchover::refusal(&db, &healthy()), None);
}

#[test]
fn a_scale_down_that_would_remove_the_primary_moves_it_below_the_new_count_first() {
    let db = database().instances(1).current_primary("orders-2").build();
    let t = topology(
        "orders-2",
        vec![
            member(0, ready(0), replica(900)),
            member(1, ready(1), replica(950)),
            member(2, ready(2), primary(1000)),
        ],
    );
    let decision = progress(&db, &t, now());
    assert_eq!(
        decision.recorded_primary, "orders-0",
        "the only one below 1"
    );
    assert_eq!(decision.replicas, 3, "the primary's pod stays meanwhile");
    let record = decision.status.promotion.as_ref().expect("a switchover");
    assert_eq!(record.kind, PromotionKind::Switchover);
    assert!(record.reason.contains("spec.instances"));
}

#[test]
fn an_operator_stopped_between_the_roles_and_the_status_write_resumes_the_promotion() {
    // The roles ConfigMap names orders-2, status still orders-0.
    let db = database().build();
    let mut t = lost_primary(ready(0), unreachable());
    t.recorded_primary = Some("orders-2".into());
    let decision = progress(&db, &t, now());
    assert_eq!(decision.recorded_primary, "orders-2");
    assert_eq!(decision.serving_primary, None);
    assert_eq!(decision.delete_pods[0].pod, "orders-0");
    assert!(decision.delete_pods[0].force);
    let record = decision.status.promotion.as_ref().expect("resumed");
    assert_eq!(record.to, "orders-2");
    assert!(record.reason.starts_with("resumed"));
}

#[test]
fn a_failover_whose_target_stops_answering_before_promotion_turns_to_the_next_best() {
    let db = with_promotion(
        database(),
        failover_record(PromotionPhase::Fencing, Some("uid-0")),
    );
    let mut t = lost_primary(PodView::Absent, Server::NotAsked);
    t.members[2].server = unreachable();
    let decision = progress(&db, &t, now());
    assert_eq!(decision.recorded_primary, "orders-1");
    assert_eq!(decision.promote.as_deref(), Some("orders-1"));
    assert!(reasons(&decision).contains(&"FailoverRetargeted"));
}

/// After a failover from `orders-0` to `orders-2` completed `completed`
/// seconds before [`NOW`]: `orders-0` came back on the old timeline and
/// does not stream, `orders-1` follows the new primary.
fn left_on_the_old_timeline(db: DbBuilder, completed: i64) -> (PostgresDB, Topology) {
    let completed = PromotionStatus {
        phase: PromotionPhase::Completed,
        completed_at: Some(status_time(at(NOW - completed))),
        ..failover_record(PromotionPhase::Completed, Some("uid-0"))
    };
    let db = with_promotion(db, completed);
    let t = topology(
        "orders-2",
        vec![
            member(
                0,
                ready(0),
                Server::Replica {
                    received: Some(Lsn(1000)),
                    replayed: Some(Lsn(1000)),
                    timeline: Some(1),
                    streaming: false,
                },
            ),
            member(
                1,
                ready(1),
                Server::Replica {
                    received: Some(Lsn(980)),
                    replayed: Some(Lsn(980)),
                    timeline: Some(2),
                    streaming: true,
                },
            ),
            member(
                2,
                ready(2),
                Server::Primary {
                    lsn: Lsn(990),
                    timeline: 2,
                    slots: vec![],
                    replication_role: true,
                },
            ),
        ],
    );
    (db, t)
}

#[test]
fn a_replica_left_on_the_old_timeline_is_rebuilt_once_the_rejoin_grace_is_over() {
    let (db, t) = left_on_the_old_timeline(database(), 10);
    let early = progress(&db, &t, now());
    assert!(early.rebuild.is_empty());
    assert_eq!(early.wake_at, Some(at(NOW + 20)));
    let later = progress(&db, &t, at(NOW + 21));
    assert_eq!(later.rebuild, ["orders-0"]);
    assert_eq!(later.delete_pods.len(), 1);
    assert_eq!(later.delete_pods[0].uid.as_deref(), Some("uid-0"));
    assert_eq!(reasons(&later), ["RebuildingReplica"]);
}

#[test]
fn a_switchover_target_the_plan_repairs_is_waited_for_and_repaired_not_refused() {
    // spec.primary names the old primary, back on the old timeline: it is
    // rebuilt (a refusal would touch nothing, so it would never stream).
    let (db, t) = left_on_the_old_timeline(database().primary("orders-0"), 40);
    assert_eq!(switchover::refusal(&db, &t), None);
    let decision = progress(&db, &t, now());
    assert_eq!(decision.rebuild, ["orders-0"]);
    let promotion = decision.status.promotion.as_ref().expect("the failover");
    assert_eq!(
        promotion.phase,
        PromotionPhase::Completed,
        "no switchover yet"
    );
    // spec.primary names a server accepting writes beside the primary: it
    // is fenced, to restart as a replica.
    let db = database().primary("orders-1").build();
    let mut t = healthy();
    t.members[1].server = primary(10);
    assert_eq!(switchover::refusal(&db, &t), None);
    let decision = progress(&db, &t, now());
    assert!(decision.status.promotion.is_none());
    assert_eq!(decision.delete_pods[0].pod, "orders-1");
    assert_eq!(reasons(&decision), ["FencedStrayPrimary"]);
}

#[test]
fn a_second_server_accepting_writes_beside_the_recorded_primary_is_fenced() {
    let mut t = healthy();
    t.members[1].server = primary(10);
    let decision = progress(&database().build(), &t, now());
    assert_eq!(decision.serving_primary.as_deref(), Some("orders-0"));
    assert_eq!(decision.delete_pods[0].pod, "orders-1");
    assert_eq!(reasons(&decision), ["FencedStrayPrimary"]);
}

#[test]
fn a_primary_pod_replaced_by_a_rollout_is_a_planned_restart_waited_for_not_failed_over() {
    let mut t = lost_primary(deleting(0, None), Server::NotAsked);
    t.rolling_out = true;
    let decision = progress(&database().build(), &t, now());
    assert!(decision.status.promotion.is_none());
    assert_eq!(decision.serving_primary.as_deref(), Some("orders-0"));
    assert_eq!(decision.wake_at, Some(at(NOW + 60)));
    // A ready pod whose server does not answer is frozen, not restarting:
    // replaced once unanswered for UNANSWERED_FOR, not after the grace.
    let mut frozen = lost_primary(ready(0), unreachable());
    frozen.rolling_out = true;
    let decision = progress(&database().build(), &frozen, now());
    assert_eq!(decision.wake_at, Some(at(NOW + 10)));
    let decision = progress(&lost_since(database(), NOW - 10), &frozen, now());
    assert!(decision.status.promotion.is_some());
}

/// The database of [`database`] whose primary was first seen lost at `since`.
fn lost_since(db: DbBuilder, since: i64) -> PostgresDB {
    let mut db = db.build();
    db.status
        .as_mut()
        .and_then(|s| s.high_availability.as_mut())
        .expect("status")
        .primary_lost_since = Some(status_time(at(since)));
    db
}

#[test]
fn a_primary_pod_ready_again_after_a_restart_has_the_whole_slack_from_its_readiness() {
    // Lost since NOW - 30 (a rollout replaced its pod); the new pod turned
    // ready at NOW and its server has not answered yet.
    let mut t = lost_primary(
        PodView::Ready {
            uid: "uid-0b".into(),
            since: Some(now()),
        },
        unreachable(),
    );
    t.rolling_out = true;
    let db = lost_since(database(), NOW - 30);
    let decision = progress(&db, &t, now());
    assert!(decision.status.promotion.is_none() && decision.delete_pods.is_empty());
    assert_eq!(decision.wake_at, Some(at(NOW + 10)));
    // Ready and silent for 10 s: replaced.
    let decision = progress(&db, &t, at(NOW + 10));
    assert!(decision.status.promotion.is_some());
}

#[test]
fn a_ready_primary_that_leaves_one_probe_unanswered_is_waited_for_even_with_no_delay() {
    // delaySeconds 0: a busy node's slow answer is not a frozen server.
    let frozen = lost_primary(ready(0), unreachable());
    let decision = progress(&database().build(), &frozen, now());
    assert!(decision.status.promotion.is_none() && decision.delete_pods.is_empty());
    assert_eq!(decision.serving_primary.as_deref(), Some("orders-0"));
    assert_eq!(decision.status.primary_lost_since, Some(status_time(now())));
    assert_eq!(decision.wake_at, Some(at(NOW + 10)));
    assert!(
        decision.available.message.contains("stays lost for 10s"),
        "{}",
        decision.available.message
    );
    // Answering again ends it: nothing is left recorded.
    let answered = progress(&lost_since(database(), NOW - 5), &healthy(), now());
    assert_eq!(answered.status.primary_lost_since, None);
    assert!(answered.status.promotion.is_none());
    // Unanswered for UNANSWERED_FOR: replaced.
    let decision = progress(&lost_since(database(), NOW - 10), &frozen, now());
    assert_eq!(
        decision.status.promotion.as_ref().map(|p| p.to.as_str()),
        Some("orders-2")
    );
    // A pod the kubelet found not ready already had its probe's slack.
    let down = lost_primary(not_ready(0), unreachable());
    let decision = progress(&database().build(), &down, now());
    assert!(decision.status.promotion.is_some());
}

#[test]
fn a_primary_seen_once_keeps_the_database_initialised_while_it_does_not_answer() {
    // An earlier reconcile saw the timeline; no roles ConfigMap (a single
    // instance), no server answers now.
    let db = DbBuilder::named("orders")
        .high_availability(HighAvailabilityStatus {
            timeline: Some(1),
            ..Default::default()
        })
        .build();
    let t = Topology {
        members: vec![member(0, not_ready(0), unreachable())],
        recorded_primary: None,
        bootstrapped: false,
        rolling_out: false,
    };
    let decision = progress(&db, &t, now());
    assert!(decision.bootstrapped);
    assert_eq!(
        decision.status.timeline,
        Some(1),
        "kept for the next reconcile"
    );
    assert_eq!(decision.available.reason, "NoFailoverCandidate");
}

/// A healthy three-instance topology whose primary is at `lsn`, the
/// replicas at `lsn - 100` and `lsn - 300`.
fn streaming_at(lsn: u64) -> Topology {
    topology(
        "orders-0",
        vec![
            member(0, ready(0), primary(lsn)),
            member(1, ready(1), replica(lsn - 300)),
            member(2, ready(2), replica(lsn - 100)),
        ],
    )
}

/// The database with the status the decision on `topology` at `when`
/// would write.
fn after(db: PostgresDB, topology: &Topology, when: Timestamp) -> PostgresDB {
    let decision = progress(&db, topology, when);
    let mut db = db;
    let status = db.status.get_or_insert_with(Default::default);
    status.current_primary = decision.current_primary.clone();
    status.high_availability = Some(decision.status);
    db
}

#[test]
fn positions_moved_by_writes_are_written_at_most_every_thirty_seconds_and_not_at_all_at_rest() {
    let first = after(database().build(), &streaming_at(10_000), now());
    let written = first.status.clone().and_then(|s| s.high_availability);
    let positions_at = written.as_ref().and_then(|h| h.positions_at.clone());
    assert_eq!(positions_at, Some(status_time(now())));

    // At rest, nothing changes: the same status, no wake-up.
    let rest = progress(&first, &streaming_at(10_000), at(NOW + 45));
    assert_eq!(Some(&rest.status), written.as_ref());
    assert_eq!(rest.wake_at, None);

    // Writes move the positions: within 30 s the written ones stay, and
    // the reconcile asks to be woken when they are due.
    let busy = progress(&first, &streaming_at(50_000), at(NOW + 10));
    assert_eq!(Some(&busy.status), written.as_ref());
    assert_eq!(busy.wake_at, Some(at(NOW + 30)));

    // Due, the fresh positions are written with their time.
    let due = progress(&first, &streaming_at(50_000), at(NOW + 30));
    assert_eq!(due.status.positions_at, Some(status_time(at(NOW + 30))));
    let lag: Vec<_> = due.status.members.iter().map(|m| m.lag_bytes).collect();
    assert_eq!(lag, vec![None, Some(300), Some(100)]);
    assert_eq!(
        due.status.members[1].received_lsn.as_deref(),
        Some(Lsn(49_700).to_string().as_str())
    );
}

#[test]
fn a_member_changing_role_or_readiness_is_written_at_once_with_fresh_positions() {
    let first = after(database().build(), &streaming_at(10_000), now());
    let mut changed = streaming_at(50_000);
    changed.members[2].pod = not_ready(2);
    let decision = progress(&first, &changed, at(NOW + 5));
    assert_eq!(decision.status.positions_at, Some(status_time(at(NOW + 5))));
    assert!(!decision.status.members[2].ready);
    assert_eq!(decision.status.members[1].lag_bytes, Some(300));
}
