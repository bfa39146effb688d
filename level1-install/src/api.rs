//! What Level 1 offers the levels built on it.
//!
//! A higher level adjusts the objects Level 1 builds (see
//! `shared::capability::Desired::modify`) and reaches the server Level 1
//! runs; it does not rebuild them. This module names everything it may rely
//! on, so the contract between Level 1 and the levels above is read in one
//! place, and everything else in this crate stays free to change:
//!
//! - the children's names ([`Names`]: StatefulSet, Services, Secrets,
//!   ConfigMap, each pod by ordinal and its data volume), the container's
//!   name and port, and where the data directory is;
//! - how many instances Level 1 runs and which one is the primary;
//! - the building blocks of a PostgreSQL pod ([`env()`], [`secret_env`],
//!   [`container_security`], [`pod_security`]), so a level's own pods (a
//!   migration Job) run like the database's;
//! - the configuration Level 1 writes ([`postgresql_conf`], [`config_hash`],
//!   [`RESERVED_PARAMETERS`]), for a level deciding how a change reaches
//!   the server, and the ConfigMap and StatefulSet themselves
//!   ([`config_map`], [`statefulset`]), for a level's tests of what it
//!   adjusts in them;
//! - versions as users write them ([`PgVersion`]) and the spec's
//!   ([`spec_version`]);
//! - Level 1's capability list ([`capabilities`]), which a higher level
//!   extends, and how it makes passwords ([`generate_password`]), for a
//!   level's own logins.
//!
//! Label and annotation keys (the version and configuration-hash
//! annotations of the pod template) are in `shared::keys`, for every level.

pub use crate::capabilities;
pub use crate::install::{Install, generate_password, spec_version};
pub use crate::objects::{
    CONTAINER, DATA_MOUNT, INSTANCES, Names, PGDATA, PORT, PRIMARY_ORDINAL, RESERVED_PARAMETERS,
    config_hash, config_map, container_security, env, pod_security, postgresql_conf, secret_env,
    statefulset,
};
pub use crate::version::PgVersion;
