//! The sandbox's integration tests, in one test binary: each binary links
//! kube, tokio-postgres and the whole sandbox, so one binary instead of
//! three saves link time and disk. The suites are modules:
//!
//! - [`conformance`]: the sandbox driven through kube-rs as a real client,
//!   each test naming the upstream Kubernetes behaviour it pins;
//! - [`kubectl`]: the real kubectl binary against the sandbox (failing,
//!   with how to install it, without kubectl: `scripts/install-tools.sh`);
//! - [`real_postgres`]: the real-PostgreSQL runtime at the level of pods
//!   (failing without PostgreSQL server binaries:
//!   `scripts/install-postgres.sh`).
//!
//! Run one suite with a filter, e.g.
//! `cargo test -p sandbox --test integration real_postgres::`.

mod common;
mod conformance;
mod kubectl;
mod real_postgres;
