//! When the primary counts as lost, and which replica replaces it.
//!
//! The primary is lost when its pod is absent or being deleted, or its
//! server does not answer as a primary (killed, frozen, its volume gone,
//! crash-looping after a bad parameter). A pod that is not ready while its
//! server answers as the primary is not lost: the readiness probe lags the
//! server, and a failover for a probe's hiccup would cost more than it
//! saves. For the same reason a ready pod whose server leaves the member
//! probe unanswered is replaced only once it has been ready and unanswered
//! for [`UNANSWERED_FOR`]: one probe timing out on a busy node is not a
//! frozen server (the readiness probe's failure threshold gives the server
//! a similar slack before the pod turns unready). Otherwise it must stay
//! lost for `spec.failover.delaySeconds`, counted from
//! `status.highAvailability.primaryLostSince`, before a replica replaces
//! it: the replica that answers with the most WAL received (ties: the
//! lowest ordinal). With synchronous replication, enough replicas must
//! answer that one of them holds every acknowledged commit (a quorum of
//! `synchronousReplicas` out of the replicas intersects any set of
//! `replicas - synchronousReplicas + 1` of them); otherwise it waits.
//!
//! A database that never had a primary (being created) has nothing to
//! lose: no failover. While the StatefulSet rolls out a new template (a
//! parameter that needs a restart, a minor upgrade), the primary's pod
//! being replaced is a planned restart, waited for [`ROLLOUT_GRACE`] more
//! than the delay (a ready pod whose server does not answer is not one).

use jiff::{SignedDuration, Timestamp};
use shared::api::PostgresDB;
use shared::capability::EventType;
use shared::conditions::Assessment;
use shared::ha::{HighAvailabilityStatus, PromotionKind, PromotionPhase, PromotionStatus};

use super::{Decision, instances, plan};
use crate::autopilot::topology::{Member, PodView, Server, Topology};

/// How often a lost primary is looked at again while nothing can replace
/// it (no change of a pod may announce that a replica answers again).
pub const RECHECK_LOST: SignedDuration = SignedDuration::from_secs(5);

/// How long the server of a ready primary pod must leave the member probe
/// unanswered before a replica replaces it, counted from when it was first
/// seen lost or from when the pod became ready, the later: a floor under
/// the failover delay.
pub const UNANSWERED_FOR: SignedDuration = SignedDuration::from_secs(10);

/// How much longer a primary whose pod a StatefulSet rollout replaces is
/// waited for (a planned restart) before a replica replaces it.
pub const ROLLOUT_GRACE: SignedDuration = SignedDuration::from_secs(60);

/// Why `member` does not serve as the primary, or `None` when it does.
pub fn why_lost(member: Option<&Member>) -> Option<String> {
    let Some(member) = member else {
        return Some("it is not an instance of the database".into());
    };
    match (&member.pod, &member.server) {
        (PodView::Absent, _) => Some("its pod does not exist".into()),
        (PodView::Deleting { .. }, _) => Some("its pod is being deleted".into()),
        // Its server accepts writes: a readiness probe that lags (or
        // times out on a busy node) is no reason to fail over.
        (PodView::Ready { .. } | PodView::NotReady { .. }, Server::Primary { .. }) => None,
        (PodView::NotReady { why, .. }, _) => Some(format!("its pod is not ready ({why})")),
        (PodView::Ready { .. }, Server::Replica { .. }) => {
            Some("its server is in recovery, not accepting writes".into())
        }
        (PodView::Ready { .. }, Server::Unreachable(error)) => {
            Some(format!("its server does not answer ({error})"))
        }
        (PodView::Ready { .. }, Server::NotAsked) => Some("its server was not reachable".into()),
    }
}

/// The replica to promote in place of `lost`: among those that answer as
/// replicas with an ordinal below `spec.instances`, the one with the most
/// WAL received, the lowest ordinal on a tie. `None` when none answers, or
/// (synchronous replication) when too few answer to be sure one of them
/// holds every acknowledged commit.
pub fn candidate<'a>(db: &PostgresDB, topology: &'a Topology, lost: &str) -> Option<&'a Member> {
    let limit = instances(db);
    let answering: Vec<&Member> = topology
        .members
        .iter()
        .filter(|m| m.name != lost && m.ordinal < limit && m.is_replica())
        .filter(|m| !matches!(m.pod, PodView::Deleting { .. } | PodView::Absent))
        .collect();
    if let Some(replication) = db.spec.replication.as_ref().filter(|r| r.synchronous) {
        let replicas = limit.saturating_sub(1);
        let quorum = replication.synchronous_replicas.min(replicas);
        let needed = replicas.saturating_sub(quorum) + 1;
        if u32::try_from(answering.len()).unwrap_or(u32::MAX) < needed {
            return None;
        }
    }
    answering
        .into_iter()
        .max_by(|a, b| a.wal().cmp(&b.wal()).then(b.ordinal.cmp(&a.ordinal)))
}

/// Watches the primary `current`: when it is lost, records since when,
/// and starts a failover once the delay is over and a replica can replace
/// it. Returns whether it is lost (nothing else is decided then).
pub fn watch(
    db: &PostgresDB,
    topology: &Topology,
    previous: &HighAvailabilityStatus,
    current: &str,
    now: Timestamp,
    decision: &mut Decision,
) -> bool {
    let member = topology.member(current);
    let Some(why) = why_lost(member) else {
        decision.available = serving(current);
        return false;
    };
    if !decision.bootstrapped {
        decision.available = Assessment::unknown(
            "NotInitialised",
            format!("{current} has not started as the primary yet"),
        );
        return false;
    }
    let since = previous.primary_lost_since.as_ref().map_or(now, |t| t.0);
    decision.status.primary_lost_since = Some(shared::api::status_time(since));
    if previous.primary_lost_since.is_none() {
        decision.event(
            EventType::Warning,
            "PrimaryLost",
            format!("the primary {current} is lost: {why}"),
        );
    }
    let delay = SignedDuration::from_secs(i64::from(
        db.spec
            .failover
            .as_ref()
            .map_or(0, |failover| failover.delay_seconds),
    ));
    // A ready pod whose server does not answer: since when it has been
    // so, as far as can be told (first seen lost, or ready, the later).
    let unanswered_from = member.and_then(|m| match (&m.pod, &m.server) {
        (PodView::Ready { since: ready, .. }, Server::Unreachable(_)) => {
            Some(ready.map_or(since, |ready| ready.max(since)))
        }
        _ => None,
    });
    // A rollout replacing the primary's pod is a planned restart: waited
    // for, up to ROLLOUT_GRACE more.
    let planned = topology.rolling_out && unanswered_from.is_none();
    let delay = if planned {
        delay.saturating_add(ROLLOUT_GRACE)
    } else {
        delay
    };
    let due = since.saturating_add(delay).unwrap_or(since);
    // A server that missed one probe on a busy node is not frozen.
    let due = unanswered_from
        .and_then(|from| from.checked_add(UNANSWERED_FOR).ok())
        .map_or(due, |floor| due.max(floor));
    if now < due {
        decision.available = Assessment::no(
            "PrimaryLost",
            format!(
                "{current} is lost ({why}); a replica replaces it if it stays lost for {}s",
                due.duration_since(since).as_secs()
            ),
        )
        .warn();
        decision.wake(due);
        return true;
    }
    let Some(target) = candidate(db, topology, current) else {
        decision.available = Assessment::no(
            "NoFailoverCandidate",
            format!(
                "{current} is lost ({why}) and no replica that answers can replace it{}",
                if db.spec.replication.as_ref().is_some_and(|r| r.synchronous) {
                    " with every acknowledged commit"
                } else {
                    ""
                }
            ),
        )
        .warn();
        decision.wake(now.saturating_add(RECHECK_LOST).unwrap_or(now));
        return true;
    };
    let synchronous = db.spec.replication.as_ref().is_some_and(|r| r.synchronous);
    let lag = (!synchronous)
        .then(|| {
            previous
                .members
                .iter()
                .find(|m| m.name == target.name)
                .and_then(|m| m.lag_bytes)
        })
        .flatten();
    let record = PromotionStatus {
        kind: PromotionKind::Failover,
        from: current.to_string(),
        from_pod_uid: plan::deletable_uid(member),
        to: target.name.clone(),
        phase: PromotionPhase::Fencing,
        reason: format!("the primary {current} was lost: {why}"),
        started_at: shared::api::status_time(now),
        completed_at: None,
        lag_bytes_at_failover: lag,
    };
    decision.status.primary_lost_since = None;
    decision.event(
        EventType::Warning,
        "FailoverStarted",
        format!(
            "the primary {current} is lost ({why}): fencing it and promoting {}, the replica with the most WAL{}",
            target.name,
            lag.map(|l| format!(" ({l} bytes behind when last seen)"))
                .unwrap_or_default()
        ),
    );
    plan::advance(db, topology, previous, record, now, decision);
    true
}

/// The condition for a primary that serves, used by the other steps.
pub fn serving(current: &str) -> Assessment {
    Assessment::yes(
        "PrimaryServing",
        format!("{current} accepts writes behind the read-write Service"),
    )
    .announce()
}
