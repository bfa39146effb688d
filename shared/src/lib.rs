//! The reconciliation core shared by every level of the PostgresDB operator.
//!
//! A level is a list of [`capability::Capability`] values; everything else, the
//! API types, the controller runner, server-side apply, status, Events,
//! errors, logging, health and the command line, lives here once.

pub mod api;
pub mod apply;
pub mod capability;
pub mod cli;
pub mod conditions;
pub mod crd;
pub mod error;
pub mod health;
pub mod names;
pub mod prune;
pub mod quantity;
pub mod reconcile;
pub mod runner;
pub mod sql;
pub mod telemetry;

pub use api::{PostgresDB, PostgresDBSpec, PostgresDBStatus};
pub use capability::{Capability, Level};
pub use error::Error;
