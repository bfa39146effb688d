//! Auto pilot: the operator runs the database without a human.
//!
//! High availability: a database runs one primary and streaming replicas,
//! and stays available when the primary is lost.
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
//!
//! The decisions: the operator acts on what it measures, and says in
//! `status.autopilot` and Events what it measured, what it decided and why.
//! Each is a capability of its own:
//! - [`autoscaling`]: replicas added under read load, removed after it;
//! - [`autogrow`]: volumes grown before they fill;
//! - [`tuning`]: parameters derived from the resources;
//! - [`guard`]: a configuration that does not run rolled back;
//! - [`anomaly`]: a learned baseline, and the deviations from it;
//! - [`effective`]: the decisions put in the spec the capabilities act on.

pub mod anomaly;
pub mod autogrow;
pub mod autoscaling;
pub mod capability;
pub mod effective;
pub mod failover;
pub mod guard;
pub mod instances;
pub mod names;
pub mod topology;
pub mod tuning;

pub use capability::Autopilot;
