//! The planned move of the primary: to `spec.primary` when it names
//! another instance, or, when a scale-down would remove the primary, to
//! the replica below the new count with the most WAL. It starts only
//! while the primary serves and the target streams; the steps are
//! [`super::plan`]'s, starting at CatchingUp, so no acknowledged commit
//! is lost.
//!
//! `spec.primary` is declarative: it names the instance that should be
//! the primary. After a failover away from it, the primary moves back to
//! it once it streams again (clear `spec.primary` to keep the new one).

use jiff::Timestamp;
use shared::api::PostgresDB;
use shared::capability::{EventType, SpecProblem};
use shared::ha::{PromotionKind, PromotionPhase, PromotionStatus};

use super::{Decision, instances, plan};
use crate::autopilot::names::ordinal_of;
use crate::autopilot::topology::{Member, PodView, Server, Topology};

/// Where the primary should move, and why, when it should.
pub fn wanted(db: &PostgresDB, topology: &Topology, current: &str) -> Option<(String, String)> {
    let limit = instances(db);
    if let Some(primary) = db.spec.primary.as_deref().filter(|p| *p != current) {
        return Some((primary.to_string(), format!("spec.primary names {primary}")));
    }
    if ordinal_of(db, current).is_some_and(|ordinal| ordinal >= limit) {
        let best = topology
            .members
            .iter()
            .filter(|m| m.ordinal < limit && m.is_streaming())
            .max_by(|a, b| a.wal().cmp(&b.wal()).then(b.ordinal.cmp(&a.ordinal)))?;
        return Some((
            best.name.clone(),
            format!("spec.instances is {limit}, which removes the primary {current}"),
        ));
    }
    None
}

/// Starts a switchover when one is wanted, the primary `current` serves
/// (checked by the caller) and the target streams.
pub fn consider(
    db: &PostgresDB,
    topology: &Topology,
    current: &str,
    now: Timestamp,
    decision: &mut Decision,
) {
    let Some((target, reason)) = wanted(db, topology, current) else {
        return;
    };
    if !topology.member(&target).is_some_and(Member::is_streaming) {
        return;
    }
    let record = PromotionStatus {
        kind: PromotionKind::Switchover,
        from: current.to_string(),
        from_pod_uid: plan::deletable_uid(topology.member(current)),
        to: target.clone(),
        phase: PromotionPhase::CatchingUp,
        reason: reason.clone(),
        started_at: shared::api::status_time(now),
        completed_at: None,
        lag_bytes_at_failover: None,
    };
    decision.event(
        EventType::Normal,
        "SwitchoverStarted",
        format!("{reason}: moving the primary from {current} to {target}"),
    );
    let previous = db
        .status
        .as_ref()
        .and_then(|s| s.high_availability.clone())
        .unwrap_or_default();
    plan::advance(db, topology, &previous, record, now, decision);
}

/// `spec.primary` naming a ready instance that does not stream, while
/// the primary serves and no promotion runs: a switchover to it would
/// wait for ever, so the spec is refused, naming the field. (An instance
/// still starting is waited for, not refused; one beyond
/// `spec.instances` is the instances' validation's to refuse.)
///
/// A target the plan repairs is waited for, not refused: a replica on an
/// older timeline than the primary's is rebuilt ([`super::rejoin`]), and
/// a server accepting writes beside the primary is fenced
/// ([`super::plan::fence_strays`]). A refusal touches nothing, so it would
/// stop the very repair the switchover waits for.
pub fn refusal(db: &PostgresDB, topology: &Topology) -> Option<SpecProblem> {
    let current = super::current_primary(db, topology);
    let target = db.spec.primary.as_deref().filter(|p| *p != current)?;
    // The instant only dates a resumed promotion's record, unused here.
    if super::in_flight(db, topology, Timestamp::UNIX_EPOCH).is_some()
        || super::lost::why_lost(topology.member(&current)).is_some()
    {
        return None;
    }
    let member = topology.member(target)?;
    let ready = matches!(member.pod, PodView::Ready { .. });
    let primary_timeline = topology.member(&current).and_then(Member::timeline);
    let why = match &member.server {
        Server::Replica {
            streaming: false,
            timeline: Some(timeline),
            ..
        } if primary_timeline.is_some_and(|primary| *timeline < primary) => return None,
        Server::Replica {
            streaming: false, ..
        } => "it is a replica that does not stream from the primary",
        Server::Unreachable(_) => "its server does not answer",
        _ => return None,
    };
    // A replica that has just started (a rejoined old primary, say) may
    // not stream yet: the refusal rests on what was observed, and the
    // database is looked at again soon, starting the switchover once it does.
    ready.then(|| {
        SpecProblem::new(
            "spec.primary",
            "RefusedSwitchoverTargetNotStreaming",
            format!(
                "spec.primary names {target}, but {why}; a switchover moves the primary only to a replica that streams (the primary stays {current})"
            ),
        )
        .from_observation()
    })
}
