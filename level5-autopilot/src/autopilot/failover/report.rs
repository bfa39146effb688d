//! What status says about the instances: each one's role, readiness,
//! timeline, WAL positions and lag behind the primary
//! (`status.highAvailability.members`), how many run, and the primary's
//! timeline (the last one seen while the primary does not answer).

use shared::api::PostgresDB;
use shared::ha::{InstanceRole, InstanceStatus};

use super::Decision;
use crate::autopilot::topology::{PodView, Server, Topology};

/// Fills `decision.status` (all but the promotion and since when the
/// primary is lost, which the steps set) from `topology`.
pub fn fill(_db: &PostgresDB, topology: &Topology, decision: &mut Decision) {
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
