//! The reconciliation core shared by every level of the PostgresDB operator.
//!
//! A level is a list of [`capability::Capability`] values; everything else, the
//! API types, the controller runner, server-side apply, status, Events,
//! errors, logging, health and the command line, lives here once. So do the
//! building blocks more than one level uses: label and annotation keys
//! ([`keys`]), readings of observed objects ([`ext`]), Job outcomes
//! ([`job`]), the volume claims that hold data ([`volumes`]) and their
//! retention ([`retention`]).

pub mod api;
pub mod apply;
pub mod autopilot;
pub mod backup;
pub mod capability;
pub mod cli;
pub mod conditions;
pub mod crd;
pub mod error;
pub mod ext;
pub mod finalizer;
pub mod ha;
pub mod health;
pub mod job;
pub mod keys;
pub mod metrics;
pub mod names;
pub mod parameters;
pub mod process;
pub mod prune;
pub mod quantity;
pub mod readings;
pub mod reconcile;
pub mod retention;
pub mod runner;
pub mod sql;
pub mod telemetry;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod volumes;

pub use api::{PostgresDB, PostgresDBSpec, PostgresDBStatus};
pub use capability::{Capability, Level};
pub use error::Error;
