use jiff::Timestamp;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use shared::api::{PostgresDB, status_time};
use shared::autopilot::AutopilotStatus;
use shared::autopilot::autoscaling::{
    AutoscalingSpec, AutoscalingStatus, PendingScaling, ScalingDirection,
};
use shared::capability::{ApplyReport, Capability, Desired, EventType, StatusDraft};
use shared::ha::ReplicationSpec;
use shared::sql::SqlAnswer;
use shared::testing::{DbBuilder, ObservedBuilder, PodBuilder, at, login_secret};

use super::decision::{
    self, Inputs, Outcome, PROBE_INTERVAL, SCALE_OUT_HELD_FOR_LAG, SCALED_IN, SCALED_OUT,
};
use super::load::{self, LAG_HOLD_BYTES, Lag, Load, Measured};
use super::validate::{INVALID_AUTOSCALING, problems};
use super::{Autoscaler, effective_instances};
use crate::autopilot::topology::{self, Lsn, Member, PodView, Server, Topology};

const T0: i64 = 1_767_225_600;

fn spec(min: i32, max: i32, target: u32) -> AutoscalingSpec {
    AutoscalingSpec {
        target_connections_percent: target,
        scale_out_stabilization_seconds: 0,
        scale_in_stabilization_seconds: 300,
        ..AutoscalingSpec::between(min, max)
    }
}

/// Load on replicas (or the primary alone when `replicas` is 0).
fn load(replicas: usize, clients: i64, usable_each: i64) -> Load {
    let primary_reads = replicas == 0;
    let readers: Vec<String> = if primary_reads {
        vec!["orders-0".into()]
    } else {
        (1..=replicas).map(|k| format!("orders-{k}")).collect()
    };
    Load {
        usable: usable_each * readers.len() as i64,
        readers,
        primary_reads,
        clients,
    }
}

fn decide_at(
    spec: &AutoscalingSpec,
    previous: Option<&AutoscalingStatus>,
    decided: i32,
    measured: Measured,
    lagging: Option<Lag>,
    now: Timestamp,
) -> Outcome {
    decision::decide(Inputs {
        spec,
        previous,
        decided,
        measured: &measured,
        lagging,
        now,
    })
}

fn recorded(instances: i32) -> AutoscalingStatus {
    AutoscalingStatus {
        instances,
        ..Default::default()
    }
}

#[test]
fn a_load_within_the_tolerance_of_the_target_keeps_the_count() {
    let spec = spec(1, 5, 50);
    // 2 replicas, 54 of 100 usable: 54% is within 10% of 50%.
    assert_eq!(decision::recommend(&spec, 3, &load(2, 54, 50)), 3);
    // 46%: within too.
    assert_eq!(decision::recommend(&spec, 3, &load(2, 46, 50)), 3);
}

#[test]
fn the_recommendation_is_the_hpa_ceiling_over_the_replicas_plus_the_primary() {
    let spec = spec(1, 9, 50);
    // 2 replicas at 80% with a 50% target: ceil(2 × 80 / 50) = 4 replicas.
    assert_eq!(decision::recommend(&spec, 3, &load(2, 80, 50)), 5);
    // 2 replicas at 20%: ceil(2 × 20 / 50) = 1 replica.
    assert_eq!(decision::recommend(&spec, 3, &load(2, 20, 50)), 2);
    // The primary alone at 60% of 17: ceil(1 × 60 / 50) = 2 readers, one of
    // them a replica to add.
    assert_eq!(decision::recommend(&spec, 1, &load(0, 10, 17)), 2);
}

#[test]
fn the_recommendation_stays_within_min_and_max_instances() {
    let spec = spec(2, 3, 50);
    assert_eq!(decision::recommend(&spec, 3, &load(2, 100, 50)), 3);
    assert_eq!(decision::recommend(&spec, 3, &load(2, 0, 50)), 2);
    // Never below minInstances, even with no load at all.
    let at_min = decide_at(
        &spec,
        Some(&recorded(2)),
        2,
        Measured::Load(load(1, 0, 17)),
        None,
        at(T0),
    );
    assert_eq!(at_min.status, recorded(2));
    assert!(at_min.events.is_empty());
}

#[test]
fn with_no_scale_out_window_a_load_above_the_target_scales_out_at_once_and_says_why() {
    let spec = spec(1, 3, 50);
    let outcome = decide_at(
        &spec,
        Some(&recorded(1)),
        1,
        Measured::Load(load(0, 10, 17)),
        None,
        at(T0),
    );
    assert_eq!(outcome.status.instances, 2);
    assert_eq!(outcome.status.pending, None);
    let decision = outcome.status.last_decision.expect("recorded");
    assert_eq!((decision.from, decision.to), (1, 2));
    assert_eq!(decision.connections_percent, 59);
    assert_eq!(decision.at, status_time(at(T0)));
    let (type_, reason, message) = &outcome.events[0];
    assert_eq!((*type_, *reason), (EventType::Normal, SCALED_OUT));
    assert!(message.contains("from 1 to 2 instances"), "{message}");
    assert!(message.contains("(59%)"), "{message}");
    assert!(message.contains("target of 50%"), "{message}");
    assert_eq!(outcome.wake_at, at(T0) + PROBE_INTERVAL);
}

#[test]
fn a_scale_in_waits_for_its_window_recording_the_pending_recommendation_once() {
    let spec = spec(1, 3, 50);
    let idle = || Measured::Load(load(2, 0, 17));
    let first = decide_at(&spec, Some(&recorded(3)), 3, idle(), None, at(T0));
    assert_eq!(first.status.instances, 3);
    let pending = first.status.pending.clone().expect("pending");
    assert_eq!(pending.direction, ScalingDirection::In);
    assert_eq!(pending.since, status_time(at(T0)));
    assert_eq!(pending.instances, 1);
    assert!(first.events.is_empty());
    // Measured again within the window: status does not change at all.
    let later = decide_at(&spec, Some(&first.status), 3, idle(), None, at(T0 + 150));
    assert_eq!(later.status, first.status);
    assert!(later.events.is_empty());
    // The window ends before the next regular measurement: woken for it.
    let near = decide_at(&spec, Some(&first.status), 3, idle(), None, at(T0 + 290));
    assert_eq!(near.wake_at, at(T0 + 300));
    let due = decide_at(&spec, Some(&first.status), 3, idle(), None, at(T0 + 300));
    assert_eq!(due.status.instances, 1);
    assert_eq!(due.status.pending, None);
    assert_eq!(due.events[0].1, SCALED_IN);
    assert!(due.events[0].2.contains("from 3 to 1 instances"));
    assert!(due.events[0].2.contains("below the target of 50%"));
}

#[test]
fn a_scale_in_goes_to_the_most_cautious_count_recommended_over_its_window() {
    let spec = spec(1, 5, 50);
    let first = decide_at(
        &spec,
        Some(&recorded(4)),
        4,
        Measured::Load(load(3, 0, 20)),
        None,
        at(T0),
    );
    assert_eq!(first.status.pending.as_ref().map(|p| p.instances), Some(1));
    // 3 replicas at 25% of 60: ceil(3 × 25 / 50) = 2 replicas, 3 instances.
    let busier = decide_at(
        &spec,
        Some(&first.status),
        4,
        Measured::Load(load(3, 15, 20)),
        None,
        at(T0 + 100),
    );
    let pending = busier.status.pending.clone().expect("still pending");
    assert_eq!(pending.instances, 3);
    assert_eq!(pending.since, status_time(at(T0)), "the window runs on");
    let due = decide_at(
        &spec,
        Some(&busier.status),
        4,
        Measured::Load(load(3, 0, 20)),
        None,
        at(T0 + 300),
    );
    assert_eq!(due.status.instances, 3);
}

#[test]
fn a_recommendation_that_returns_to_the_count_or_turns_around_restarts_the_window() {
    let spec = AutoscalingSpec {
        scale_out_stabilization_seconds: 60,
        ..spec(1, 5, 50)
    };
    let pending_in = decide_at(
        &spec,
        Some(&recorded(3)),
        3,
        Measured::Load(load(2, 0, 17)),
        None,
        at(T0),
    );
    assert!(pending_in.status.pending.is_some());
    let steady = decide_at(
        &spec,
        Some(&pending_in.status),
        3,
        Measured::Load(load(2, 17, 17)),
        None,
        at(T0 + 30),
    );
    assert_eq!(steady.status.pending, None);
    let turned = decide_at(
        &spec,
        Some(&pending_in.status),
        3,
        Measured::Load(load(2, 30, 17)),
        None,
        at(T0 + 30),
    );
    assert_eq!(
        turned.status.pending,
        Some(PendingScaling {
            direction: ScalingDirection::Out,
            since: status_time(at(T0 + 30)),
            instances: 5,
            connections_percent: 88,
        })
    );
    assert_eq!(turned.status.instances, 3, "the scale-out window is 60 s");
}

#[test]
fn a_scale_out_is_held_while_a_replica_lags_and_made_once_it_caught_up() {
    let spec = spec(1, 4, 50);
    let busy = || Measured::Load(load(1, 15, 17));
    let lag = || {
        Some(Lag {
            replica: "orders-1".into(),
            bytes: LAG_HOLD_BYTES + 1,
        })
    };
    let held = decide_at(&spec, Some(&recorded(2)), 2, busy(), lag(), at(T0));
    assert_eq!(held.status.instances, 2);
    let hold = held.status.held.clone().expect("held");
    assert_eq!(hold.reason, SCALE_OUT_HELD_FOR_LAG);
    assert!(hold.message.contains("orders-1"), "{}", hold.message);
    assert_eq!(held.events.len(), 1);
    assert_eq!(
        (held.events[0].0, held.events[0].1),
        (EventType::Warning, SCALE_OUT_HELD_FOR_LAG)
    );
    // Still lagging: nothing new to say or record.
    let still = decide_at(&spec, Some(&held.status), 2, busy(), lag(), at(T0 + 15));
    assert_eq!(still.status, held.status);
    assert!(still.events.is_empty());
    let caught_up = decide_at(&spec, Some(&held.status), 2, busy(), None, at(T0 + 30));
    assert_eq!(caught_up.status.instances, 3);
    assert_eq!(caught_up.status.held, None);
    assert_eq!(caught_up.events[0].1, SCALED_OUT);
    // A lag does not hold a scale-in.
    let idle = decide_at(
        &spec,
        Some(&recorded(3)),
        3,
        Measured::Load(load(2, 0, 17)),
        lag(),
        at(T0),
    );
    assert_eq!(idle.status.held, None);
    assert!(idle.status.pending.is_some());
}

#[test]
fn without_a_measurement_what_was_recorded_stands() {
    let spec = spec(1, 3, 50);
    let mut previous = recorded(2);
    previous.pending = Some(PendingScaling {
        direction: ScalingDirection::In,
        since: status_time(at(T0 - 400)),
        instances: 1,
        connections_percent: 0,
    });
    let outcome = decide_at(
        &spec,
        Some(&previous),
        2,
        Measured::Unknown("orders-1 is not ready yet".into()),
        None,
        at(T0),
    );
    assert_eq!(outcome.status, previous);
    assert!(outcome.events.is_empty());
    assert_eq!(outcome.wake_at, at(T0) + PROBE_INTERVAL);
}

#[test]
fn bounds_moved_past_the_recorded_count_move_it_at_once_with_an_event() {
    let spec = spec(1, 2, 50);
    let outcome = decide_at(
        &spec,
        Some(&recorded(4)),
        2,
        Measured::Load(load(3, 0, 17)),
        None,
        at(T0),
    );
    assert_eq!(outcome.status.instances, 2);
    assert_eq!(outcome.events[0].1, SCALED_IN);
    assert!(outcome.events[0].2.contains("maxInstances"));
}

fn db_with(spec: AutoscalingSpec, instances: Option<i32>, recorded: Option<i32>) -> PostgresDB {
    let mut builder = DbBuilder::named("orders").autoscaling(spec);
    if let Some(instances) = instances {
        builder = builder.instances(instances);
    }
    if let Some(instances) = recorded {
        builder = builder.autopilot_status(AutopilotStatus {
            autoscaling: Some(self::recorded(instances)),
            ..Default::default()
        });
    }
    builder.build()
}

#[test]
fn the_effective_instance_count_is_the_decision_within_the_bounds_and_spec_instances_only_starts_it()
 {
    assert_eq!(
        effective_instances(&DbBuilder::named("orders").instances(3).build()),
        None
    );
    assert_eq!(
        effective_instances(&db_with(spec(2, 4, 50), None, None)),
        Some(2)
    );
    assert_eq!(
        effective_instances(&db_with(spec(1, 4, 50), Some(3), None)),
        Some(3)
    );
    assert_eq!(
        effective_instances(&db_with(spec(1, 4, 50), Some(7), None)),
        Some(4)
    );
    assert_eq!(
        effective_instances(&db_with(spec(1, 4, 50), Some(1), Some(3))),
        Some(3)
    );
    assert_eq!(
        effective_instances(&db_with(spec(1, 2, 50), Some(1), Some(3))),
        Some(2)
    );
    // Crossed bounds (refused by validation) do not panic.
    assert_eq!(
        effective_instances(&db_with(spec(3, 2, 50), None, Some(1))),
        Some(3)
    );
    let effective =
        crate::autopilot::effective::effective_spec(&db_with(spec(1, 4, 50), Some(1), Some(3)));
    assert_eq!(effective.spec.instances, Some(3));
}

#[test]
fn bad_bounds_targets_and_windows_are_refused_naming_the_field() {
    let fields = |spec: AutoscalingSpec| -> Vec<String> {
        problems(&db_with(spec, None, None))
            .into_iter()
            .inspect(|p| assert_eq!(p.reason, INVALID_AUTOSCALING))
            .map(|p| p.field)
            .collect()
    };
    assert!(fields(spec(1, 3, 50)).is_empty());
    assert_eq!(fields(spec(4, 3, 50)), ["spec.autoscaling.minInstances"]);
    assert_eq!(fields(spec(0, 3, 50)), ["spec.autoscaling.minInstances"]);
    assert_eq!(fields(spec(1, 10, 50)), ["spec.autoscaling.maxInstances"]);
    assert_eq!(
        fields(spec(1, 3, 0)),
        ["spec.autoscaling.targetConnectionsPercent"]
    );
    assert_eq!(
        fields(spec(1, 3, 101)),
        ["spec.autoscaling.targetConnectionsPercent"]
    );
    assert_eq!(
        fields(AutoscalingSpec {
            scale_out_stabilization_seconds: 3601,
            scale_in_stabilization_seconds: 86_401,
            ..spec(1, 3, 50)
        }),
        [
            "spec.autoscaling.scaleOutStabilizationSeconds",
            "spec.autoscaling.scaleInStabilizationSeconds"
        ]
    );
    let synchronous = DbBuilder::named("orders")
        .autoscaling(spec(1, 3, 50))
        .replication(ReplicationSpec {
            synchronous: true,
            synchronous_replicas: 1,
        })
        .build();
    assert_eq!(
        problems(&synchronous)[0].field,
        "spec.autoscaling.minInstances"
    );
    let primary = DbBuilder::named("orders")
        .autoscaling(spec(2, 3, 50))
        .primary("orders-2")
        .build();
    let refused = problems(&primary);
    assert_eq!(refused[0].field, "spec.autoscaling.minInstances");
    assert!(refused[0].message.contains("orders-2"));
}

fn member(ordinal: u32, pod: PodView, server: Server) -> Member {
    Member {
        name: format!("orders-{ordinal}"),
        ordinal,
        pod,
        server,
    }
}

fn ready(k: u32) -> PodView {
    PodView::Ready {
        uid: format!("uid-{k}"),
        since: None,
    }
}

fn primary_at(lsn: u64) -> Server {
    Server::Primary {
        lsn: Lsn(lsn),
        timeline: 1,
        slots: Vec::new(),
        replication_role: true,
    }
}

fn replica_at(lsn: u64) -> Server {
    Server::Replica {
        received: Some(Lsn(lsn)),
        replayed: Some(Lsn(lsn)),
        timeline: Some(1),
        streaming: true,
    }
}

fn load_answer(clients: i64, usable: i64) -> SqlAnswer {
    Ok(vec![vec![
        Some(clients.to_string()),
        Some(usable.to_string()),
    ]])
}

#[test]
fn the_replicas_are_measured_and_the_primary_only_while_there_is_none() {
    let observed = ObservedBuilder::new()
        .sql(&load::probe_name("orders-0"), load_answer(9, 17))
        .sql(&load::probe_name("orders-1"), load_answer(4, 17))
        .sql(&load::probe_name("orders-2"), load_answer(6, 17))
        .build();
    let three = Topology {
        members: vec![
            member(0, ready(0), primary_at(100)),
            member(1, ready(1), replica_at(100)),
            member(2, ready(2), replica_at(90)),
        ],
        ..Default::default()
    };
    let Measured::Load(measured) = load::measure(&observed, &three, 3) else {
        panic!("measured");
    };
    assert_eq!(measured.readers, ["orders-1", "orders-2"]);
    assert!(!measured.primary_reads);
    assert_eq!((measured.clients, measured.usable), (10, 34));
    let one = Topology {
        members: vec![member(0, ready(0), primary_at(100))],
        ..Default::default()
    };
    let Measured::Load(alone) = load::measure(&observed, &one, 1) else {
        panic!("measured");
    };
    assert!(alone.primary_reads);
    assert_eq!((alone.clients, alone.usable), (9, 17));
}

#[test]
fn instances_in_motion_or_a_failed_probe_give_no_measurement() {
    let observed = ObservedBuilder::new()
        .sql(&load::probe_name("orders-0"), load_answer(9, 17))
        .sql(&load::probe_name("orders-1"), Err("timed out".into()))
        .build();
    let joining = Topology {
        members: vec![
            member(0, ready(0), primary_at(100)),
            member(
                1,
                PodView::NotReady {
                    uid: "uid-1".into(),
                    why: "starting".into(),
                },
                Server::NotAsked,
            ),
        ],
        ..Default::default()
    };
    assert_eq!(
        load::measure(&observed, &joining, 2),
        Measured::Unknown("orders-1 is not ready yet".into())
    );
    assert_eq!(
        load::measure(&observed, &joining, 1),
        Measured::Unknown("orders-1 is being removed".into())
    );
    let failed = Topology {
        members: vec![
            member(0, ready(0), primary_at(100)),
            member(1, ready(1), replica_at(100)),
        ],
        ..Default::default()
    };
    assert!(matches!(
        load::measure(&observed, &failed, 2),
        Measured::Unknown(why) if why.contains("timed out")
    ));
}

#[test]
fn a_replica_further_behind_than_one_wal_segment_is_lagging() {
    let behind = |bytes: u64| Topology {
        members: vec![
            member(0, ready(0), primary_at(1 << 30)),
            member(1, ready(1), replica_at((1 << 30) - 10)),
            member(2, ready(2), replica_at((1 << 30) - bytes)),
        ],
        ..Default::default()
    };
    assert_eq!(load::lagging(&behind(LAG_HOLD_BYTES as u64)), None);
    assert_eq!(
        load::lagging(&behind(LAG_HOLD_BYTES as u64 + 1)),
        Some(Lag {
            replica: "orders-2".into(),
            bytes: LAG_HOLD_BYTES + 1
        })
    );
}

fn pod(k: u32, is_ready: bool) -> Pod {
    let mut pod = PodBuilder::named(&format!("orders-{k}"))
        .owned_by::<StatefulSet>("orders")
        .phase("Running")
        .ready(is_ready)
        .ip(&format!("10.0.0.{}", k + 1))
        .build();
    pod.metadata.uid = Some(format!("uid-{k}"));
    pod
}

fn member_answer(in_recovery: bool) -> SqlAnswer {
    let lsn = Some("0/3000000".to_string());
    Ok(vec![if in_recovery {
        vec![
            Some("true".into()),
            None,
            lsn.clone(),
            lsn,
            Some("1".into()),
            Some("streaming".into()),
            None,
            Some("true".into()),
        ]
    } else {
        vec![
            Some("false".into()),
            lsn,
            None,
            None,
            Some("1".into()),
            None,
            None,
            Some("true".into()),
        ]
    }])
}

#[test]
fn the_capability_probes_ready_instances_and_records_its_decision_in_status_and_an_event() {
    let db = db_with(
        AutoscalingSpec {
            scale_in_stabilization_seconds: 60,
            ..spec(1, 3, 50)
        },
        None,
        Some(1),
    );
    let db = crate::autopilot::effective::effective_spec(&db);
    let observed = ObservedBuilder::new()
        .with(&login_secret("orders-superuser", "postgres", "pw"))
        .with(&pod(0, true))
        .sql(&topology::probe_name("orders-0"), member_answer(false))
        .sql(&load::probe_name("orders-0"), load_answer(10, 17))
        .build();
    let probes = Autoscaler.sql_probes(&db, &observed);
    assert_eq!(probes.len(), 1);
    assert_eq!(probes[0].name, "autoscaling/load/orders-0");
    assert_eq!(probes[0].statement, load::LOAD_SQL);
    let now = at(T0);
    let mut desired = Desired::default();
    Autoscaler
        .desire(&db, &observed, now, &mut desired)
        .expect("desires");
    assert_eq!(desired.notes.len(), 1);
    assert_eq!(desired.notes[0].reason, SCALED_OUT);
    let mut status = StatusDraft {
        now,
        ..Default::default()
    };
    Autoscaler.assess(&db, &observed, &ApplyReport::default(), &mut status);
    let recorded = status
        .fields
        .autopilot
        .and_then(|a| a.autoscaling)
        .expect("recorded");
    assert_eq!(recorded.instances, 2);
    assert_eq!(status.wake_at, Some(now + PROBE_INTERVAL));
    // A pod not ready is not asked; nothing is asked without the section.
    let starting = ObservedBuilder::new()
        .with(&login_secret("orders-superuser", "postgres", "pw"))
        .with(&pod(0, true))
        .with(&pod(1, false))
        .build();
    assert_eq!(Autoscaler.sql_probes(&db, &starting).len(), 1);
    let plain = DbBuilder::named("orders").build();
    assert!(Autoscaler.sql_probes(&plain, &starting).is_empty());
    let mut untouched = StatusDraft::default();
    Autoscaler.assess(&plain, &starting, &ApplyReport::default(), &mut untouched);
    assert_eq!(untouched.fields.autopilot, None);
    assert_eq!(untouched.wake_at, None);
}

#[test]
fn a_paused_database_keeps_what_was_decided_and_decides_nothing() {
    let mut db = db_with(spec(1, 3, 50), None, Some(1));
    db.spec.paused = true;
    let observed = ObservedBuilder::new()
        .with(&login_secret("orders-superuser", "postgres", "pw"))
        .with(&pod(0, true))
        .sql(&topology::probe_name("orders-0"), member_answer(false))
        .sql(&load::probe_name("orders-0"), load_answer(17, 17))
        .build();
    let mut status = StatusDraft {
        now: at(T0),
        ..Default::default()
    };
    Autoscaler.assess(&db, &observed, &ApplyReport::default(), &mut status);
    assert_eq!(
        status.fields.autopilot.and_then(|a| a.autoscaling),
        Some(recorded(1))
    );
}

#[test]
fn a_refused_section_keeps_what_was_decided_and_decides_nothing() {
    let db = db_with(spec(3, 2, 50), None, Some(2));
    let observed = ObservedBuilder::new()
        .with(&login_secret("orders-superuser", "postgres", "pw"))
        .with(&pod(0, true))
        .sql(&topology::probe_name("orders-0"), member_answer(false))
        .sql(&load::probe_name("orders-0"), load_answer(17, 17))
        .build();
    assert_eq!(Autoscaler.validate(&db, &observed).len(), 1);
    let mut desired = Desired::default();
    Autoscaler
        .desire(&db, &observed, at(T0), &mut desired)
        .expect("desires");
    assert!(desired.notes.is_empty());
    let mut status = StatusDraft {
        now: at(T0),
        ..Default::default()
    };
    Autoscaler.assess(&db, &observed, &ApplyReport::default(), &mut status);
    assert_eq!(
        status.fields.autopilot.and_then(|a| a.autoscaling),
        Some(recorded(2))
    );
    assert_eq!(status.wake_at, None);
}
