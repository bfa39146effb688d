//! What status says about the instances: each one's role, readiness,
//! timeline, WAL positions and lag behind the primary
//! (`status.highAvailability.members`), how many run, and the primary's
//! timeline (the last one seen while the primary does not answer).
//!
//! WAL positions move with every write. Written at each reconcile, they
//! would rewrite a busy database's status every second (the core looks
//! again a second after a status change), so a member's positions are
//! carried over from the last status while nothing else about the members
//! changed, and refreshed every [`POSITIONS_REFRESH`] (the reconcile asks
//! to be woken then, only when they moved).
//!
//! A replica's lag is measured against the primary's WAL position, so it
//! is known only while the primary answers. While it does not (killed,
//! frozen, being replaced), each member keeps the lag it had when the
//! primary last answered: that is the figure a failover reports as
//! `lagBytesAtFailover`, and the reconcile that first sees the primary
//! lost must not erase it.

use jiff::{SignedDuration, Timestamp};
use shared::api::PostgresDB;
use shared::ha::{HighAvailabilityStatus, InstanceRole, InstanceStatus};

use super::Decision;
use crate::autopilot::topology::{PodView, Server, Topology};

/// How often members' WAL positions are refreshed in status while
/// nothing else about them changes.
pub const POSITIONS_REFRESH: SignedDuration = SignedDuration::from_secs(30);

/// Fills `decision.status` (all but the promotion and since when the
/// primary is lost, which the steps set) from `topology`, carrying the
/// positions of `previous` over while they are fresh enough.
pub fn fill(
    _db: &PostgresDB,
    topology: &Topology,
    previous: &HighAvailabilityStatus,
    now: Timestamp,
    decision: &mut Decision,
) {
    let primary = decision
        .serving_primary
        .clone()
        .unwrap_or_else(|| decision.recorded_primary.clone());
    let primary_lsn = match topology.member(&primary).map(|m| &m.server) {
        Some(Server::Primary { lsn, .. }) => Some(*lsn),
        _ => None,
    };
    let replicas = u32::try_from(decision.replicas).unwrap_or(0);
    decision.status.members = topology
        .members
        .iter()
        .filter(|m| m.ordinal < replicas || m.pod != PodView::Absent)
        .map(|m| {
            let (role, received, replayed) = match &m.server {
                Server::Primary { .. } => (InstanceRole::Primary, None, None),
                Server::Replica {
                    received, replayed, ..
                } => (InstanceRole::Replica, *received, *replayed),
                _ => (InstanceRole::Unavailable, None, None),
            };
            InstanceStatus {
                name: m.name.clone(),
                role,
                ready: matches!(m.pod, PodView::Ready { .. }),
                timeline: m.timeline(),
                received_lsn: received.map(|l| l.to_string()),
                replayed_lsn: replayed.map(|l| l.to_string()),
                lag_bytes: primary_lsn
                    .zip(received.or(replayed))
                    .map(|(p, r)| p.bytes_after(r)),
            }
        })
        .collect();
    if primary_lsn.is_none() {
        keep_last_lag(previous, decision);
    }
    carry_positions(previous, now, decision);
    decision.status.instances = i32::try_from(
        topology
            .members
            .iter()
            .filter(|m| m.pod != PodView::Absent)
            .count(),
    )
    .unwrap_or(i32::MAX);
    if let Some(Server::Primary { timeline, .. }) = topology.member(&primary).map(|m| &m.server) {
        decision.status.timeline = Some(*timeline);
    }
}

/// While the primary does not answer, gives each member the lag it had
/// in `previous` (when the primary last answered), instead of none.
fn keep_last_lag(previous: &HighAvailabilityStatus, decision: &mut Decision) {
    for member in &mut decision.status.members {
        member.lag_bytes = previous
            .members
            .iter()
            .find(|p| p.name == member.name)
            .and_then(|p| p.lag_bytes);
    }
}

/// The same member but for its positions.
fn same_but_positions(a: &InstanceStatus, b: &InstanceStatus) -> bool {
    a.name == b.name && a.role == b.role && a.ready == b.ready && a.timeline == b.timeline
}

fn positions(m: &InstanceStatus) -> (&Option<String>, &Option<String>, &Option<i64>) {
    (&m.received_lsn, &m.replayed_lsn, &m.lag_bytes)
}

/// Keeps `previous`'s positions (and their time) when they are younger
/// than [`POSITIONS_REFRESH`] and the members are otherwise the same;
/// otherwise the fresh ones are dated `now`. When fresh positions were
/// held back, the reconcile is woken when they are due.
fn carry_positions(previous: &HighAvailabilityStatus, now: Timestamp, decision: &mut Decision) {
    let members = &mut decision.status.members;
    let moved = members.len() != previous.members.len()
        || members
            .iter()
            .zip(&previous.members)
            .any(|(m, p)| positions(m) != positions(p));
    let fresh_at = previous
        .positions_at
        .as_ref()
        .and_then(|at| at.0.checked_add(POSITIONS_REFRESH).ok())
        .filter(|due| *due > now);
    let comparable = members.len() == previous.members.len()
        && members
            .iter()
            .zip(&previous.members)
            .all(|(m, p)| same_but_positions(m, p));
    match fresh_at {
        Some(due) if comparable => {
            for (m, p) in members.iter_mut().zip(&previous.members) {
                m.received_lsn = p.received_lsn.clone();
                m.replayed_lsn = p.replayed_lsn.clone();
                m.lag_bytes = p.lag_bytes;
            }
            decision.status.positions_at = previous.positions_at.clone();
            if moved {
                decision.wake(due);
            }
        }
        _ if !moved && previous.positions_at.is_some() => {
            decision.status.positions_at = previous.positions_at.clone();
        }
        _ => decision.status.positions_at = Some(shared::api::status_time(now)),
    }
}
