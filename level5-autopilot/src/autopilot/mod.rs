//! Auto pilot, part one: high availability. A database runs one primary
//! and streaming replicas, and stays available without a human when the
//! primary is lost.
//!
//! - [`names`]: the names Level 5 adds (Services, the roles ConfigMap, the
//!   replication login, replication slots);
//! - [`topology`]: what each instance is doing, read from its pod and
//!   asked of its server, as data;
//! - [`failover`]: who should be the primary and the steps to get there
//!   (fence, promote, rejoin), a pure `progress` over the topology;
//! - [`instances`]: the objects that carry the decision out (StatefulSet
//!   replicas and the instance script, the Services by role, the pods'
//!   role labels, the roles ConfigMap, the replication login and slots,
//!   synchronous replication);
//! - [`capability`]: the one capability that reads, decides and asks the
//!   core to act, in that order.

pub mod capability;
pub mod failover;
pub mod instances;
pub mod names;
pub mod topology;

pub use capability::Autopilot;
