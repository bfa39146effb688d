//! Replicas that cannot follow the primary any more are rebuilt: their
//! pod is deleted with their name in the roles ConfigMap's `rebuild` key,
//! so the instance script sets their data aside (one `.diverged` copy)
//! and clones the primary anew.
//!
//! A replica needs it when its server answers in recovery, its WAL
//! receiver does not stream, and it is on an older timeline than the
//! primary's, [`REJOIN_GRACE`] after the last promotion completed (time
//! for it to follow the new timeline by itself, as a replica the
//! promotion did not outrun does). Its timeline is the one its WAL
//! receiver receives on, else the newest its recovery has reached or is
//! bound for (`member.sql`): an old primary just rewound replays the WAL
//! `pg_rewind` copied before its receiver starts, its last checkpoint
//! still on the old timeline, and is on the new one already. An old
//! primary returning, or a replica
//! whose volume was wiped, needs nothing from here: the instance script
//! rewinds or clones it when its pod starts.
//!
//! Where it stops: a replica on the primary's timeline that stops
//! streaming (WAL removed before it was sent) is left to its slot, which
//! keeps that WAL; a replica whose pod crash-loops is not rebuilt.

use jiff::{SignedDuration, Timestamp};
use shared::api::PostgresDB;
use shared::capability::EventType;
use shared::ha::{HighAvailabilityStatus, PromotionPhase};

use super::{Decision, PodDeletion, instances};
use crate::autopilot::topology::{Server, Topology};

/// How long after a promotion a replica on an older timeline is given to
/// follow the new one before it is rebuilt.
pub const REJOIN_GRACE: SignedDuration = SignedDuration::from_secs(30);

/// Adds the replicas to rebuild (and their pods to delete) to `decision`.
pub fn rebuild(
    db: &PostgresDB,
    topology: &Topology,
    previous: &HighAvailabilityStatus,
    now: Timestamp,
    decision: &mut Decision,
) {
    let Some(primary) = decision.serving_primary.clone() else {
        return;
    };
    let Some(Server::Primary {
        timeline: primary_timeline,
        ..
    }) = topology.member(&primary).map(|m| &m.server)
    else {
        return;
    };
    let settled_at = previous
        .promotion
        .as_ref()
        .filter(|p| p.phase == PromotionPhase::Completed)
        .and_then(|p| p.completed_at.as_ref())
        .and_then(|done| done.0.saturating_add(REJOIN_GRACE).ok());
    let limit = instances(db);
    for member in &topology.members {
        if member.name == primary || member.ordinal >= limit {
            continue;
        }
        let Server::Replica {
            streaming: false,
            timeline: Some(timeline),
            ..
        } = member.server
        else {
            continue;
        };
        if timeline >= *primary_timeline {
            continue;
        }
        if let Some(at) = settled_at.filter(|at| now < *at) {
            decision.wake(at);
            continue;
        }
        let Some(uid) = member.pod_uid() else {
            continue;
        };
        decision.rebuild.push(member.name.clone());
        decision.delete(PodDeletion {
            pod: member.name.clone(),
            uid: Some(uid.to_string()),
            reason: format!(
                "rebuilding {}: it does not follow the primary's timeline",
                member.name
            ),
            force: false,
        });
        decision.event(
            EventType::Warning,
            "RebuildingReplica",
            format!(
                "{} is on timeline {timeline} and does not stream from {primary} (timeline {primary_timeline}); setting its data aside and cloning it anew",
                member.name
            ),
        );
    }
}
