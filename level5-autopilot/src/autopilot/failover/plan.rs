//! A promotion's steps, the same for a failover and a switchover, each
//! decided from the record in status and what the instances say now:
//!
//! 1. **CatchingUp** (switchover only): the roles ConfigMap names the
//!    target and the read-write Service is fenced, so new sessions stop
//!    reaching the old primary; once the target has received all the WAL
//!    the old primary reports (or has streamed for [`CATCH_UP_WAIT`], the
//!    old primary's shutdown sending it the rest), the old primary's pod
//!    is deleted gracefully: a fast shutdown sends all its WAL to the
//!    streaming standbys before it exits.
//! 2. **Fencing**: the old primary's pod is deleted (with a grace period
//!    of 0 when its server does not answer: a frozen or dead pod; a pod
//!    already being deleted is given the rest of its grace period). It
//!    counts as fenced once its pod is gone, is a pod created after that
//!    deletion (another uid than `fromPodUid`), or answers as a replica:
//!    each of these started after the roles ConfigMap named the target.
//! 3. **Promoting**: once the old primary is fenced and no other server
//!    answers as a primary, `pg_promote()` on the target.
//! 4. **Completed**: the target answers as a primary and no other server
//!    does: the read-write Service selects it.
//!
//! Before step 4 the read-write Service selects no pod; at step 4 it
//! selects one. A server that answers as a primary without being the
//! recorded one is fenced too ([`fence_strays`]).

use jiff::{SignedDuration, Timestamp};
use shared::api::PostgresDB;
use shared::capability::EventType;
use shared::conditions::Assessment;
use shared::ha::{HighAvailabilityStatus, PromotionKind, PromotionPhase, PromotionStatus};

use super::{Decision, PodDeletion, lost};
use crate::autopilot::topology::{Member, PodView, Server, Topology};

/// How long a switchover waits for its target to receive all of the old
/// primary's WAL before stopping the old primary anyway (its graceful
/// shutdown sends the rest to the streaming target).
pub const CATCH_UP_WAIT: SignedDuration = SignedDuration::from_secs(10);

/// How soon a promotion in progress is looked at again: a server
/// finishing its promotion changes no Kubernetes object.
pub const RECHECK_PROMOTION: SignedDuration = SignedDuration::from_secs(1);

/// The uid of `member`'s pod when it exists and is not being deleted:
/// the pod a promotion starting now deletes after the roles change.
pub fn deletable_uid(member: Option<&Member>) -> Option<String> {
    match &member?.pod {
        PodView::NotReady { uid, .. } | PodView::Ready { uid, .. } => Some(uid.clone()),
        PodView::Absent | PodView::Deleting { .. } => None,
    }
}

fn answers(member: &Member) -> bool {
    matches!(
        member.server,
        Server::Primary { .. } | Server::Replica { .. }
    )
}

fn words(kind: PromotionKind) -> (&'static str, &'static str) {
    match kind {
        PromotionKind::Failover => ("FailingOver", "failover"),
        PromotionKind::Switchover => ("SwitchingOver", "switchover"),
    }
}

/// Takes the promotion `record` one step further from what `topology`
/// shows, into `decision` (roles, fence, deletions, promotion, status,
/// conditions, Events).
pub fn advance(
    db: &PostgresDB,
    topology: &Topology,
    previous: &HighAvailabilityStatus,
    mut record: PromotionStatus,
    now: Timestamp,
    decision: &mut Decision,
) {
    let known = previous
        .promotion
        .as_ref()
        .filter(|p| p.from == record.from && p.started_at == record.started_at);
    let start = known.is_none();
    let previous_phase = known.map(|p| p.phase);
    let (reason, word) = words(record.kind);

    // A failover whose target stopped answering before anything was
    // promoted turns to the best replica that answers.
    let target_answers = topology.member(&record.to).is_some_and(answers);
    if record.kind == PromotionKind::Failover
        && record.phase == PromotionPhase::Fencing
        && !target_answers
        && let Some(better) = lost::candidate(db, topology, &record.from)
        && better.name != record.to
    {
        decision.event(
            EventType::Warning,
            "FailoverRetargeted",
            format!(
                "{} does not answer; promoting {} instead",
                record.to, better.name
            ),
        );
        record.to = better.name.clone();
    }
    decision.recorded_primary = record.to.clone();
    decision.serving_primary = None;
    decision.wake(now.saturating_add(RECHECK_PROMOTION).unwrap_or(now));

    let target = topology.member(&record.to);
    let others_writable: Vec<&Member> = topology
        .writable()
        .into_iter()
        .filter(|m| m.name != record.to)
        .collect();
    let old = topology.member(&record.from);

    if target.is_some_and(Member::is_writable) && others_writable.is_empty() {
        complete(record, topology, now, decision);
        return;
    }

    if record.phase == PromotionPhase::CatchingUp {
        match old.map(|m| &m.server) {
            Some(Server::Primary { lsn, .. }) => {
                let received = target.and_then(Member::wal);
                let streamed_long_enough = target.is_some_and(Member::is_streaming)
                    && record
                        .started_at
                        .0
                        .saturating_add(CATCH_UP_WAIT)
                        .is_ok_and(|until| now >= until);
                if received.is_some_and(|r| r >= *lsn) || streamed_long_enough {
                    record.phase = PromotionPhase::Fencing;
                } else {
                    let message = format!(
                        "switchover to {}: waiting for it to receive the WAL up to {lsn} (it has {})",
                        record.to,
                        received.map_or_else(|| "nothing".to_string(), |r| r.to_string())
                    );
                    in_progress(reason, message, decision);
                    decision.status.promotion = Some(record);
                    return;
                }
            }
            // The old primary stopped answering as one: nothing to wait for.
            _ => record.phase = PromotionPhase::Fencing,
        }
    }

    if !fence_old(&mut record, old, start, now, decision) {
        let message = format!(
            "{word} from {} to {}: fencing {} (the read-write Service selects no pod)",
            record.from, record.to, record.from
        );
        if record.phase == PromotionPhase::Promoting {
            record.phase = PromotionPhase::Fencing;
        }
        in_progress(reason, message, decision);
        decision.status.promotion = Some(record);
        return;
    }
    for stray in &others_writable {
        fence_stray(stray, decision);
    }
    let message = match target {
        Some(target) if others_writable.is_empty() && target.is_replica() => {
            decision.promote = Some(record.to.clone());
            if previous_phase != Some(PromotionPhase::Promoting) {
                decision.event(
                    EventType::Normal,
                    "PromotingReplica",
                    format!(
                        "{} is fenced; promoting {} to primary",
                        record.from, record.to
                    ),
                );
            }
            format!(
                "{word} from {} to {}: promoting {}",
                record.from, record.to, record.to
            )
        }
        _ if !others_writable.is_empty() => format!(
            "{word} from {} to {}: waiting until no other server accepts writes",
            record.from, record.to
        ),
        _ => format!(
            "{word} from {} to {}: waiting for {} to answer",
            record.from, record.to, record.to
        ),
    };
    record.phase = PromotionPhase::Promoting;
    in_progress(reason, message, decision);
    decision.status.promotion = Some(record);
}

fn in_progress(reason: &str, message: String, decision: &mut Decision) {
    decision.available = Assessment::no(reason, message.clone());
    decision.progressing = Some(Assessment::yes(reason, message));
}

fn complete(
    mut record: PromotionStatus,
    topology: &Topology,
    now: Timestamp,
    decision: &mut Decision,
) {
    let (_, word) = words(record.kind);
    record.phase = PromotionPhase::Completed;
    record.completed_at = Some(shared::api::status_time(now));
    let timeline = topology
        .member(&record.to)
        .and_then(Member::timeline)
        .map(|t| format!(" on timeline {t}"))
        .unwrap_or_default();
    let reason = match record.kind {
        PromotionKind::Failover => "FailoverCompleted",
        PromotionKind::Switchover => "SwitchoverCompleted",
    };
    decision.event(
        EventType::Normal,
        reason,
        format!(
            "{word} completed: {} accepts writes{timeline}; {} rejoins as a replica",
            record.to, record.from
        ),
    );
    decision.serving_primary = Some(record.to.clone());
    decision.available = lost::serving(&record.to);
    decision.progressing = None;
    decision.status.promotion = Some(record);
}

/// Deletes the old primary's pod until it is fenced; whether it is.
fn fence_old(
    record: &mut PromotionStatus,
    old: Option<&Member>,
    start: bool,
    now: Timestamp,
    decision: &mut Decision,
) -> bool {
    let Some(old) = old else {
        return true;
    };
    if old.is_replica() {
        return true;
    }
    let force = !answers(old);
    let target = record.to.clone();
    let how = if force {
        "at once: its server does not answer"
    } else {
        "gracefully: its shutdown sends its WAL to the streaming replicas"
    };
    let delete = |uid: &str, decision: &mut Decision| {
        decision.delete(PodDeletion {
            pod: old.name.clone(),
            uid: Some(uid.to_string()),
            reason: format!(
                "fencing the old primary {} before promoting {target}",
                old.name
            ),
            force,
        });
        decision.event(
            EventType::Normal,
            "FencingOldPrimary",
            format!(
                "deleting pod {} {how}; the roles ConfigMap names {target}",
                old.name
            ),
        );
    };
    match &old.pod {
        PodView::Absent => true,
        PodView::Deleting { uid, until } => {
            // Its replacement starts after this reconcile, which follows
            // the roles change unless the promotion starts now.
            if !start && record.from_pod_uid.is_none() {
                record.from_pod_uid = Some(uid.clone());
            }
            // A pod already being deleted keeps the rest of its grace
            // period: a server that stopped answering may be shutting
            // down, sending its last WAL to the replicas, and a grace of 0
            // would kill it there and free its name (and volume) for a
            // new pod while it still runs. Past its deletionTimestamp no
            // kubelet is stopping it (its node is lost): deleted at once.
            if force {
                match until.filter(|until| now < *until) {
                    Some(until) => decision.wake(until),
                    None => delete(uid, decision),
                }
            }
            false
        }
        PodView::NotReady { uid, .. } | PodView::Ready { uid, .. } => {
            match record.from_pod_uid.as_deref() {
                Some(fenced) if fenced == uid => {
                    delete(uid, decision);
                    false
                }
                // Created after the pod deleted once the roles changed.
                Some(_) => true,
                // A pod nothing says started after the roles changed.
                None => {
                    record.from_pod_uid = Some(uid.clone());
                    delete(uid, decision);
                    false
                }
            }
        }
    }
}

fn fence_stray(stray: &Member, decision: &mut Decision) {
    let Some(uid) = stray.pod_uid() else {
        return;
    };
    decision.delete(PodDeletion {
        pod: stray.name.clone(),
        uid: Some(uid.to_string()),
        reason: format!(
            "{} accepts writes but the roles name {}",
            stray.name, decision.recorded_primary
        ),
        force: false,
    });
    decision.event(
        EventType::Warning,
        "FencedStrayPrimary",
        format!(
            "{} accepts writes although the roles name {} as the primary; deleting its pod so it restarts as a replica",
            stray.name, decision.recorded_primary
        ),
    );
}

/// At rest: a server other than the recorded primary that answers as a
/// primary while the recorded one does too is fenced (its pod deleted, to
/// restart as a replica). When the recorded primary does not answer as
/// one, the other may be the only copy of recent writes: it is left to
/// the failover.
pub fn fence_strays(topology: &Topology, decision: &mut Decision) {
    if decision.progressing.is_some() {
        return;
    }
    let recorded = decision.recorded_primary.clone();
    if !topology.member(&recorded).is_some_and(Member::is_writable) {
        return;
    }
    let strays: Vec<Member> = topology
        .writable()
        .into_iter()
        .filter(|m| m.name != recorded)
        .cloned()
        .collect();
    for stray in &strays {
        fence_stray(stray, decision);
    }
}
