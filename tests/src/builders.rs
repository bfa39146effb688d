//! Builders for the objects tests create: the fixtures every crate's tests
//! share (`shared::testing`), as manifests (`DbBuilder::manifest`).

pub use shared::testing::DbBuilder;
