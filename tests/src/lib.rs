//! The behaviour suite: one set of scenarios run against every level, on
//! the sandbox or on a real cluster, and the tour a learner starts with.
//!
//! - [`harness`]: a cluster (sandbox or `PGDB_TEST_KUBECONFIG`), the CRD,
//!   the operator in-process or as its binary, bounded waits.
//! - [`scenarios`]: what is done to a database, and what each level is
//!   expected to do about it.
//! - [`connect`]: logging in to a database the operator made.
//! - [`matrix`]: those outcomes as `docs/behaviour-matrix.md`.
//! - [`rbac`]: whether `deploy/rbac.yaml` grants what a level did.

pub mod builders;
pub mod connect;
pub mod harness;
pub mod levels;
pub mod matrix;
pub mod rbac;
pub mod scenarios;
