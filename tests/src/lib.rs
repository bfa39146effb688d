//! The behaviour suite: one set of scenarios run against every level, on
//! the sandbox or on a real cluster, and the tour a learner starts with.
//!
//! - [`harness`]: a cluster (sandbox or `PGDB_TEST_KUBECONFIG`), the CRD,
//!   the operator in-process or as its binary; one bounded wait
//!   (`eventually`) whose failure shows the databases' status and recent
//!   Events, and a synchronisation point (`settle`) for "nothing happened".
//! - [`scenarios`]: one file per scenario: what is done to a database, what
//!   it observes, and the observation each level is expected to make.
//! - [`connect`]: logging in to a database the operator made.
//! - [`matrix`]: the observations as `docs/behaviour-matrix.md`.
//! - [`leaks`]: generated passwords looked for in logs.
//! - [`rbac`]: whether `deploy/base/rbac.yaml` grants what a level did.
//! - [`deploy`]: `deploy/` rendered as `kubectl apply -k` applies it.
//! - [`tools`]: kubectl and the other programs the tests drive.
//! - [`course`]: what the chapters and the tour share: the clone's own
//!   files, and the chapters' runnable blocks.

pub mod builders;
pub mod connect;
pub mod course;
pub mod deploy;
pub mod harness;
pub mod leaks;
pub mod levels;
pub mod matrix;
pub mod rbac;
pub mod scenarios;
pub mod tools;
