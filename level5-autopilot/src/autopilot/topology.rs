//! What each instance of a database is doing, as data: its pod (absent,
//! being deleted, not ready, ready) and what its server says (primary with
//! its WAL position, replica with what it received and replayed, or no
//! answer). Read from the pods the core listed and one constant SQL probe
//! per reachable pod ([`probes`]); [`observe`] is a pure function of them,
//! so every decision in [`super::failover`] can be tested without a
//! cluster.
//!
//! It stops at observation: it never decides who should be primary.

use std::fmt;

use shared::api::PostgresDB;
use shared::capability::Observed;
use shared::sql::SqlProbe;

/// The name the probe of `pod` is answered under (`autopilot/member/<pod>`).
pub fn probe_name(pod: &str) -> String {
    format!("autopilot/member/{pod}")
}

/// A WAL position (`pg_lsn`), comparable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Lsn(pub u64);

impl Lsn {
    /// Parses PostgreSQL's text form (`16/B374D848`).
    pub fn parse(text: &str) -> Option<Lsn> {
        let (high, low) = text.trim().split_once('/')?;
        let high = u64::from_str_radix(high, 16).ok()?;
        let low = u64::from_str_radix(low, 16).ok()?;
        (high <= u32::MAX as u64 && low <= u32::MAX as u64).then_some(Lsn((high << 32) | low))
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

/// An instance's pod, as listed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PodView {
    /// No pod by that name.
    Absent,
    /// Being deleted (`deletionTimestamp` set).
    Deleting { uid: String },
    /// Exists but does not pass readiness; why, in words.
    NotReady { uid: String, why: String },
    /// Passes readiness.
    Ready { uid: String },
}

/// What an instance's server said.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Server {
    /// Not in recovery: accepts writes.
    Primary {
        /// `pg_current_wal_lsn()`.
        lsn: Lsn,
        /// The timeline it writes on.
        timeline: i64,
    },
    /// In recovery: a standby.
    Replica {
        /// `pg_last_wal_receive_lsn()`, `None` before it received anything.
        received: Option<Lsn>,
        /// `pg_last_wal_replay_lsn()`.
        replayed: Option<Lsn>,
        /// The timeline it receives (or replays) on.
        timeline: Option<i64>,
        /// Whether its WAL receiver is streaming now.
        streaming: bool,
    },
    /// The probe failed: why.
    Unreachable(String),
    /// Not asked: the pod has no IP, or there is no pod.
    NotAsked,
}

/// One instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// The pod's name, `<db>-<ordinal>`.
    pub name: String,
    /// Its ordinal.
    pub ordinal: u32,
    /// Its pod.
    pub pod: PodView,
    /// Its server.
    pub server: Server,
}

impl Member {
    /// The WAL this instance holds: a primary's current position, a
    /// replica's received one (else replayed).
    pub fn wal(&self) -> Option<Lsn> {
        match &self.server {
            Server::Primary { lsn, .. } => Some(*lsn),
            Server::Replica {
                received, replayed, ..
            } => received.or(*replayed),
            _ => None,
        }
    }
}

/// Every instance of a database and what the cluster records about roles.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Topology {
    /// Ordinals `0..n`, where `n` covers the StatefulSet's replicas, every
    /// existing pod and `spec.instances`.
    pub members: Vec<Member>,
    /// The primary the roles ConfigMap names (what a starting instance
    /// obeys), when it exists.
    pub recorded_primary: Option<String>,
    /// Whether the roles ConfigMap says the database was ever initialised
    /// (a primary with an empty data directory then refuses to start, so a
    /// lost volume is a lost primary, never a new empty database).
    pub bootstrapped: bool,
}

impl Topology {
    /// The member named `name`.
    pub fn member(&self, name: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.name == name)
    }

    /// Members whose servers say they accept writes.
    pub fn writable(&self) -> Vec<&Member> {
        self.members
            .iter()
            .filter(|m| matches!(m.server, Server::Primary { .. }))
            .collect()
    }
}

/// The probes: one per pod with an IP, logged in as the superuser.
pub fn probes(_db: &PostgresDB, _observed: &Observed) -> Vec<SqlProbe> {
    Vec::new()
}

/// The topology from what was listed and answered.
pub fn observe(_db: &PostgresDB, _observed: &Observed) -> Topology {
    Topology::default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_lsn_reads_and_prints_as_postgresql_writes_it_and_orders_by_position() {
        let a = Lsn::parse("16/B374D848").unwrap();
        assert_eq!(a.to_string(), "16/B374D848");
        assert!(Lsn::parse("0/3000060").unwrap() < a);
        assert_eq!(Lsn::parse("nonsense"), None);
    }
}
