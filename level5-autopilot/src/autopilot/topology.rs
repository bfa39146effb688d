//! What each instance of a database is doing, as data: its pod (absent,
//! being deleted, not ready, ready) and what its server says (primary with
//! its WAL position, replica with what it received and replayed, or no
//! answer). Read from the pods the core listed and one constant SQL probe
//! per reachable pod ([`probes`]); [`observe`] is a pure function of them,
//! so every decision in [`super::failover`] can be tested without a
//! cluster.
//!
//! It also carries what the primary's server says about the replication
//! it serves (its slots, whether the replication role exists), which
//! [`super::instances`] compares with what it wants.
//!
//! It stops at observation: it never decides who should be primary.

use std::fmt;

use jiff::Timestamp;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::ResourceExt;
use level1_install::api::Names;
use level2_upgrade::logins;
use shared::api::PostgresDB;
use shared::capability::Observed;
use shared::ext::PodExt;
use shared::sql::{SqlAnswer, SqlProbe};

use super::names::{HaNames, ordinal_of};

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

    /// How many bytes of WAL `self` is ahead of `earlier` (0 when behind).
    pub fn bytes_after(self, earlier: Lsn) -> i64 {
        i64::try_from(self.0.saturating_sub(earlier.0)).unwrap_or(i64::MAX)
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
    /// Being deleted: its `deletionTimestamp`, `until`, is when the
    /// kubelet's grace period ends (the delete's time plus the grace
    /// period); a pod still listed after it is not being stopped by a
    /// kubelet (its node is lost) or is held by a finalizer.
    Deleting {
        uid: String,
        until: Option<Timestamp>,
    },
    /// Exists but does not pass readiness; why, in words.
    NotReady { uid: String, why: String },
    /// Passes readiness, since `since` (its Ready condition's
    /// `lastTransitionTime`, when it has one).
    Ready {
        uid: String,
        since: Option<Timestamp>,
    },
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
        /// The physical replication slots it keeps, by name, sorted.
        slots: Vec<String>,
        /// Whether the replication login's role
        /// ([`super::names::REPLICATION_USER`]) exists on it.
        replication_role: bool,
    },
    /// In recovery: a standby.
    Replica {
        /// `pg_last_wal_receive_lsn()`, `None` before it received anything.
        received: Option<Lsn>,
        /// `pg_last_wal_replay_lsn()`.
        replayed: Option<Lsn>,
        /// The timeline it receives on, or else the newest it has replayed
        /// into or is bound for (a standby just rewound onto the primary's
        /// timeline is on it before its WAL receiver starts).
        timeline: Option<i64>,
        /// Whether its WAL receiver is streaming now.
        streaming: bool,
    },
    /// The probe failed: why.
    Unreachable(String),
    /// Not asked: the pod has no IP, or there is no pod.
    NotAsked,
}

impl Server {
    /// What an answer to [`MEMBER_SQL`] says (`None`: not asked).
    pub fn from_answer(answer: Option<&SqlAnswer>) -> Server {
        let rows = match answer {
            None => return Server::NotAsked,
            Some(Err(error)) => return Server::Unreachable(error.clone()),
            Some(Ok(rows)) => rows,
        };
        let Some(row) = rows.first() else {
            return Server::Unreachable("the server answered the member probe with no row".into());
        };
        let column = |i: usize| row.get(i).and_then(|v| v.as_deref());
        let lsn = |i: usize| column(i).and_then(Lsn::parse);
        let timeline = column(4).and_then(|t| t.trim().parse::<i64>().ok());
        match column(0) {
            Some("false") => match (lsn(1), timeline) {
                (Some(lsn), Some(timeline)) => Server::Primary {
                    lsn,
                    timeline,
                    slots: column(6)
                        .map(|s| {
                            s.split(',')
                                .filter(|n| !n.is_empty())
                                .map(String::from)
                                .collect()
                        })
                        .unwrap_or_default(),
                    replication_role: column(7) == Some("true"),
                },
                _ => Server::Unreachable(
                    "the server says it accepts writes but gave no WAL position or timeline".into(),
                ),
            },
            Some("true") => Server::Replica {
                received: lsn(2),
                replayed: lsn(3),
                timeline,
                streaming: column(5) == Some("streaming"),
            },
            other => Server::Unreachable(format!(
                "the server answered the member probe with recovery state {other:?}"
            )),
        }
    }
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

    /// The uid of its pod, when there is one.
    pub fn pod_uid(&self) -> Option<&str> {
        match &self.pod {
            PodView::Absent => None,
            PodView::Deleting { uid, .. }
            | PodView::NotReady { uid, .. }
            | PodView::Ready { uid, .. } => Some(uid),
        }
    }

    /// Whether its server says it accepts writes.
    pub fn is_writable(&self) -> bool {
        matches!(self.server, Server::Primary { .. })
    }

    /// Whether its server answers as a standby.
    pub fn is_replica(&self) -> bool {
        matches!(self.server, Server::Replica { .. })
    }

    /// Whether its server answers as a standby whose WAL receiver streams.
    pub fn is_streaming(&self) -> bool {
        matches!(
            self.server,
            Server::Replica {
                streaming: true,
                ..
            }
        )
    }

    /// The timeline its server is on, when it said.
    pub fn timeline(&self) -> Option<i64> {
        match &self.server {
            Server::Primary { timeline, .. } => Some(*timeline),
            Server::Replica { timeline, .. } => *timeline,
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
    /// Whether the StatefulSet is rolling out a new template (its update
    /// revision differs from its current one): a pod it replaces is a
    /// planned restart.
    pub rolling_out: bool,
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

    /// The replication slots the server `name` keeps, when it answered as
    /// a primary (`None`: not a primary, or not asked).
    pub fn slots_of(&self, name: &str) -> Option<&[String]> {
        match &self.member(name)?.server {
            Server::Primary { slots, .. } => Some(slots),
            _ => None,
        }
    }

    /// Whether the replication role exists on the server `name`, when it
    /// answered as a primary (`None`: not a primary, or not asked).
    pub fn replication_role_on(&self, name: &str) -> Option<bool> {
        match &self.member(name)?.server {
            Server::Primary {
                replication_role, ..
            } => Some(*replication_role),
            _ => None,
        }
    }
}

/// The constant statement each instance is asked (every column text):
/// recovery state, WAL positions, timeline, WAL receiver status, physical
/// slots and whether the replication role exists.
pub const MEMBER_SQL: &str = include_str!("member.sql");

/// The probes: one per pod of the StatefulSet with an IP that runs, logged
/// in as the superuser, answered under [`probe_name`].
pub fn probes(db: &PostgresDB, observed: &Observed) -> Vec<SqlProbe> {
    logins::reachable_pods(db, observed)
        .into_iter()
        .map(|(pod, target)| SqlProbe {
            name: probe_name(&pod.name_any()),
            target,
            statement: MEMBER_SQL,
        })
        .collect()
}

/// The topology from what was listed and answered.
pub fn observe(db: &PostgresDB, observed: &Observed) -> Topology {
    let names = Names::of(db);
    let ha = HaNames::of(db);
    let pods = logins::server_pods(db, observed);
    let from_pods = pods
        .iter()
        .filter_map(|pod| ordinal_of(db, &pod.name_any()))
        .map(|ordinal| ordinal + 1)
        .max()
        .unwrap_or(0);
    let from_sts = observed
        .get::<StatefulSet>(&names.primary)
        .and_then(|sts| sts.spec?.replicas)
        .and_then(|r| u32::try_from(r).ok())
        .unwrap_or(0);
    let from_spec = db
        .spec
        .instances
        .and_then(|i| u32::try_from(i).ok())
        .unwrap_or(1);
    let count = from_pods.max(from_sts).max(from_spec);
    let members = (0..count)
        .map(|ordinal| {
            let name = names.pod(ordinal);
            let pod = pods.iter().find(|p| p.name_any() == name);
            Member {
                pod: pod.map_or(PodView::Absent, view_of),
                server: Server::from_answer(observed.sql(&probe_name(&name))),
                name,
                ordinal,
            }
        })
        .collect();
    let rolling_out = observed
        .get::<StatefulSet>(&names.primary)
        .and_then(|sts| sts.status)
        .is_some_and(|status| {
            status.update_revision.is_some() && status.update_revision != status.current_revision
        });
    let roles = observed.get::<ConfigMap>(&ha.roles).and_then(|cm| cm.data);
    let value = |key: &str| roles.as_ref().and_then(|d| d.get(key)).cloned();
    Topology {
        members,
        recorded_primary: value("primary").filter(|p| !p.is_empty()),
        bootstrapped: value("bootstrapped").as_deref() == Some("true"),
        rolling_out,
    }
}

fn view_of(pod: &Pod) -> PodView {
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    if pod.is_deleting() {
        let until = pod.metadata.deletion_timestamp.as_ref().map(|t| t.0);
        PodView::Deleting { uid, until }
    } else if pod.is_ready() {
        let since = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
            .and_then(|c| c.last_transition_time.as_ref())
            .map(|t| t.0);
        PodView::Ready { uid, since }
    } else {
        PodView::NotReady {
            uid,
            why: not_ready_why(pod),
        }
    }
}

/// Why a pod is not ready, in words: its phase and its containers' waiting
/// or terminated reasons.
fn not_ready_why(pod: &Pod) -> String {
    let phase = pod.phase().unwrap_or("Unknown");
    let containers: Vec<String> = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|c| {
            let state = c.state.as_ref()?;
            let what = if let Some(waiting) = &state.waiting {
                format!(
                    "waiting ({})",
                    waiting.reason.as_deref().unwrap_or("unknown")
                )
            } else if let Some(terminated) = &state.terminated {
                format!(
                    "terminated ({})",
                    terminated.reason.as_deref().unwrap_or("unknown")
                )
            } else {
                "running, not ready".to_string()
            };
            Some(format!(
                "{} {what}, restarted {} times",
                c.name, c.restart_count
            ))
        })
        .collect();
    if containers.is_empty() {
        format!("phase {phase}")
    } else {
        format!("phase {phase}: {}", containers.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::StatefulSet;
    use shared::testing::{DbBuilder, ObservedBuilder, PodBuilder, login_secret, meta};

    fn pod(k: u32, ready: bool, ip: Option<&str>) -> Pod {
        let mut builder = PodBuilder::named(&format!("orders-{k}"))
            .owned_by::<StatefulSet>("orders")
            .phase("Running")
            .ready(ready);
        if let Some(ip) = ip {
            builder = builder.ip(ip);
        }
        let mut pod = builder.build();
        pod.metadata.uid = Some(format!("uid-{k}"));
        pod
    }

    fn roles(primary: &str) -> ConfigMap {
        ConfigMap {
            metadata: meta("orders-roles"),
            data: Some(
                [
                    ("primary".to_string(), primary.to_string()),
                    ("bootstrapped".to_string(), "true".to_string()),
                ]
                .into(),
            ),
            ..Default::default()
        }
    }

    fn row(values: [Option<&str>; 8]) -> SqlAnswer {
        Ok(vec![values.iter().map(|v| v.map(String::from)).collect()])
    }

    #[test]
    fn every_running_pod_with_an_ip_is_asked_the_member_statement_as_the_superuser() {
        let db = DbBuilder::named("orders").instances(3).build();
        let observed = ObservedBuilder::new()
            .with(&login_secret("orders-superuser", "postgres", "pw"))
            .with(&pod(0, true, Some("10.0.0.1")))
            .with(&pod(1, false, Some("10.0.0.2")))
            .with(&pod(2, false, None))
            .build();
        let probes = probes(&db, &observed);
        let names: Vec<&str> = probes.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(
            names,
            ["autopilot/member/orders-0", "autopilot/member/orders-1"]
        );
        assert_eq!(probes[0].statement, MEMBER_SQL);
        assert_eq!(probes[1].target.user, "postgres");
    }

    #[test]
    fn the_topology_reads_pods_answers_and_the_recorded_roles() {
        let db = DbBuilder::named("orders").instances(2).build();
        let mut deleting = pod(3, false, Some("10.0.0.4"));
        deleting.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(shared::testing::at(0)),
        );
        // Ready since its Ready condition's last transition.
        let mut primary = pod(0, true, Some("10.0.0.1"));
        for condition in primary
            .status
            .iter_mut()
            .flat_map(|s| s.conditions.iter_mut().flatten())
        {
            condition.last_transition_time = Some(
                k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(shared::testing::at(100)),
            );
        }
        let observed = ObservedBuilder::new()
            .with(&primary)
            .with(&pod(1, true, Some("10.0.0.2")))
            .with(&deleting)
            .with(&roles("orders-0"))
            .sql(
                &probe_name("orders-0"),
                row([
                    Some("false"),
                    Some("0/3000060"),
                    None,
                    None,
                    Some("2"),
                    None,
                    Some("instance_1,instance_2"),
                    Some("true"),
                ]),
            )
            .sql(
                &probe_name("orders-1"),
                row([
                    Some("true"),
                    None,
                    Some("0/3000000"),
                    Some("0/2FFFFF0"),
                    Some("2"),
                    Some("streaming"),
                    None,
                    Some("false"),
                ]),
            )
            .build();
        let topology = observe(&db, &observed);
        assert_eq!(topology.recorded_primary.as_deref(), Some("orders-0"));
        assert!(topology.bootstrapped);
        assert_eq!(topology.members.len(), 4, "up to the pod being deleted");
        let primary = &topology.members[0];
        assert_eq!(
            primary.pod,
            PodView::Ready {
                uid: "uid-0".into(),
                since: Some(shared::testing::at(100)),
            }
        );
        assert_eq!(
            primary.server,
            Server::Primary {
                lsn: Lsn::parse("0/3000060").unwrap(),
                timeline: 2,
                slots: vec!["instance_1".into(), "instance_2".into()],
                replication_role: true,
            }
        );
        assert_eq!(topology.slots_of("orders-0").map(<[String]>::len), Some(2));
        assert_eq!(topology.replication_role_on("orders-0"), Some(true));
        assert_eq!(topology.replication_role_on("orders-1"), None);
        let replica = &topology.members[1];
        assert!(replica.is_streaming());
        assert_eq!(replica.wal(), Lsn::parse("0/3000000"));
        assert_eq!(replica.timeline(), Some(2));
        assert_eq!(topology.members[2].pod, PodView::Absent);
        assert_eq!(topology.members[2].server, Server::NotAsked);
        assert_eq!(
            topology.members[3].pod,
            PodView::Deleting {
                uid: "uid-3".into(),
                until: Some(shared::testing::at(0)),
            }
        );
    }

    #[test]
    fn a_stateful_set_between_two_revisions_is_rolling_out_and_one_scaling_is_not() {
        let db = DbBuilder::named("orders").instances(2).build();
        let sts = |current: &str, update: &str| {
            let mut sts = StatefulSet {
                metadata: meta("orders"),
                ..Default::default()
            };
            sts.status = Some(k8s_openapi::api::apps::v1::StatefulSetStatus {
                current_revision: Some(current.into()),
                update_revision: Some(update.into()),
                ..Default::default()
            });
            sts
        };
        let rolling = ObservedBuilder::new().with(&sts("r1", "r2")).build();
        assert!(observe(&db, &rolling).rolling_out);
        let settled = ObservedBuilder::new().with(&sts("r2", "r2")).build();
        assert!(!observe(&db, &settled).rolling_out);
    }

    #[test]
    fn a_failed_or_odd_answer_is_an_unreachable_server_never_a_primary() {
        assert!(matches!(
            Server::from_answer(Some(&Err("timed out".into()))),
            Server::Unreachable(e) if e == "timed out"
        ));
        assert!(matches!(
            Server::from_answer(Some(&Ok(vec![]))),
            Server::Unreachable(_)
        ));
        let no_lsn = row([Some("false"), None, None, None, Some("1"), None, None, None]);
        assert!(matches!(
            Server::from_answer(Some(&no_lsn)),
            Server::Unreachable(_)
        ));
        assert_eq!(Server::from_answer(None), Server::NotAsked);
    }

    #[test]
    fn an_lsn_reads_and_prints_as_postgresql_writes_it_and_orders_by_position() {
        let a = Lsn::parse("16/B374D848").unwrap();
        assert_eq!(a.to_string(), "16/B374D848");
        assert!(Lsn::parse("0/3000060").unwrap() < a);
        assert_eq!(Lsn::parse("nonsense"), None);
        assert_eq!(a.bytes_after(Lsn(a.0 - 16)), 16);
        assert_eq!(Lsn(0).bytes_after(a), 0);
    }
}
