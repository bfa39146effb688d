//! The load the autoscaler decides on, measured by the operator itself:
//! client connections over the connections clients may open, on each
//! instance that serves reads (the replicas; the primary while there is
//! none), asked with one constant probe per ready instance ([`probes`]).
//!
//! Also what else the decision needs from the instances: whether they
//! have settled (every decided instance ready and answering, none being
//! removed: a count in motion is no basis for the next one), and the
//! replica lagging furthest behind the primary.
//!
//! It stops at measuring: what to do with the load is [`super::decision`]'s.

use kube::ResourceExt;
use level2_upgrade::logins;
use shared::api::PostgresDB;
use shared::capability::Observed;
use shared::ext::PodExt;
use shared::sql::{SqlAnswer, SqlProbe};

use crate::autopilot::topology::{PodView, Server, Topology};

/// The probe asked of each ready instance.
pub const LOAD_SQL: &str = include_str!("load.sql");

/// A replica further behind the primary than this (one WAL segment) holds
/// scale-out back: the instances cannot keep up with the writes, and one
/// more replica is one more stream for the primary to send and a base
/// backup to copy.
pub const LAG_HOLD_BYTES: i64 = 16 * 1024 * 1024;

/// The name the load probe of `pod` is answered under.
pub fn probe_name(pod: &str) -> String {
    format!("autoscaling/load/{pod}")
}

/// The load probes: one per ready pod of the StatefulSet a login reaches.
pub fn probes(db: &PostgresDB, observed: &Observed) -> Vec<SqlProbe> {
    logins::reachable_pods(db, observed)
        .into_iter()
        .filter(|(pod, _)| pod.is_ready())
        .map(|(pod, target)| SqlProbe {
            name: probe_name(&pod.name_any()),
            target,
            statement: LOAD_SQL,
        })
        .collect()
}

/// The load on the instances that serve reads, summed over them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Load {
    /// The instances measured, by pod name.
    pub readers: Vec<String>,
    /// Whether the primary is the one serving reads (no replica is).
    pub primary_reads: bool,
    /// Client connections, summed.
    pub clients: i64,
    /// Connections clients may open, summed.
    pub usable: i64,
}

impl Load {
    /// `clients` over `usable`, in percent, rounded to the nearest.
    pub fn percent(&self) -> i64 {
        if self.usable <= 0 {
            return 0;
        }
        (200 * self.clients + self.usable) / (2 * self.usable)
    }

    /// The readers, in words ("the primary orders-0", "the replica
    /// orders-1", "2 replicas (orders-1, orders-2)").
    pub fn describe_readers(&self) -> String {
        match (self.primary_reads, self.readers.len()) {
            (true, _) => format!("the primary {}", self.readers.join(", ")),
            (false, 1) => format!("the replica {}", self.readers[0]),
            (false, n) => format!("{n} replicas ({})", self.readers.join(", ")),
        }
    }
}

/// What was measured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Measured {
    /// The load, from every reader.
    Load(Load),
    /// No measurement to decide on, and why (an instance not ready yet, a
    /// probe that failed).
    Unknown(String),
}

/// One instance's answer: (clients, usable).
fn parse(answer: Option<&SqlAnswer>, pod: &str) -> Result<(i64, i64), String> {
    let rows = match answer {
        None => return Err(format!("{pod} was not asked for its load")),
        Some(Err(error)) => return Err(format!("{pod} did not answer the load probe: {error}")),
        Some(Ok(rows)) => rows,
    };
    let number = |i: usize| {
        rows.first()
            .and_then(|row| row.get(i))
            .and_then(|v| v.as_deref())
            .and_then(|v| v.trim().parse::<i64>().ok())
    };
    match (number(0), number(1)) {
        (Some(clients), Some(usable)) if usable > 0 => Ok((clients, usable)),
        _ => Err(format!("{pod} answered the load probe with {rows:?}")),
    }
}

/// The load on the readers among the `decided` instances, or why there
/// is none to decide on.
pub fn measure(observed: &Observed, topology: &Topology, decided: i32) -> Measured {
    let decided = u32::try_from(decided).unwrap_or(0);
    for member in &topology.members {
        let counted = member.ordinal < decided;
        match (&member.pod, &member.server, counted) {
            (PodView::Ready { .. }, Server::Primary { .. } | Server::Replica { .. }, true) => {}
            (PodView::Absent, _, false) => {}
            (_, _, false) => {
                return Measured::Unknown(format!("{} is being removed", member.name));
            }
            (PodView::Ready { .. }, _, true) => {
                return Measured::Unknown(format!(
                    "the server of {} does not say its role yet",
                    member.name
                ));
            }
            (_, _, true) => {
                return Measured::Unknown(format!("{} is not ready yet", member.name));
            }
        }
    }
    let counted = || topology.members.iter().filter(|m| m.ordinal < decided);
    let mut readers: Vec<&str> = counted()
        .filter(|m| m.is_replica())
        .map(|m| m.name.as_str())
        .collect();
    let primary_reads = readers.is_empty();
    if primary_reads {
        readers = counted()
            .filter(|m| m.is_writable())
            .map(|m| m.name.as_str())
            .collect();
    }
    if readers.is_empty() {
        return Measured::Unknown("no instance serves reads yet".into());
    }
    let mut load = Load {
        readers: readers.iter().map(|r| r.to_string()).collect(),
        primary_reads,
        clients: 0,
        usable: 0,
    };
    for pod in readers {
        match parse(observed.sql(&probe_name(pod)), pod) {
            Ok((clients, usable)) => {
                load.clients += clients;
                load.usable += usable;
            }
            Err(why) => return Measured::Unknown(why),
        }
    }
    Measured::Load(load)
}

/// A replica behind the primary by more than [`LAG_HOLD_BYTES`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lag {
    /// The replica furthest behind.
    pub replica: String,
    /// How far, in bytes of WAL.
    pub bytes: i64,
}

/// The replica furthest behind the primary, when it is behind by more
/// than [`LAG_HOLD_BYTES`].
pub fn lagging(topology: &Topology) -> Option<Lag> {
    let writable = topology.writable();
    let [primary] = writable.as_slice() else {
        return None;
    };
    let primary_lsn = primary.wal()?;
    topology
        .members
        .iter()
        .filter(|m| m.is_replica())
        .filter_map(|m| {
            let bytes = primary_lsn.bytes_after(m.wal()?);
            Some(Lag {
                replica: m.name.clone(),
                bytes,
            })
        })
        .max_by_key(|lag| lag.bytes)
        .filter(|lag| lag.bytes > LAG_HOLD_BYTES)
}
