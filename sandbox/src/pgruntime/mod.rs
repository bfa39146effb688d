//! A pod runtime that runs real PostgreSQL: a pod of the `postgres` image is
//! a real server, a Job running `pg_dump` is a real pg_dump.
//!
//! Containers are host processes, one process group each, run as the
//! `postgres` user when the sandbox runs as root. There are no namespaces:
//! instead each pod gets its own loopback address ([`net`]), each volume a
//! host directory, and what a container sees (mount paths, Service names,
//! `localhost`) is rewritten into host terms before it starts
//! ([`rewrite`]). Containers of the `postgres` image run the image's
//! entrypoint (`docker-entrypoint.sh`, reproduced) with the binaries of the
//! tag's major version ([`binaries`]); containers whose command is a
//! PostgreSQL client tool or a shell run that command; any other container
//! is simulated (runs, is ready, and a run-to-completion one exits 0).
//! Probes, restarts with back-off, logs, termination messages
//! ([`termination`]), ConfigMap and Secret volumes that follow their
//! objects ([`projection`]) and faults behave as the kubelet's.
//!
//! The runtime's own parts: [`config`] (its settings), [`state`] (what it
//! keeps per pod and container), [`workdir`] (creating and shutting it
//! down), [`lifecycle`] (the kubelet-facing [`crate::runtime::PodRuntime`]
//! and each container's restart loop), [`launch`] (what a container runs,
//! and one run of it), [`env`](mod@env) (its environment), [`pod_volumes`] (the
//! directories behind its volumes), [`probes`], [`exec`] (running a
//! command in a container's context, for `kubectl exec`) and [`faults`] (the
//! controls tests use). The modules above them are the host-side tools
//! these use.

pub mod binaries;
pub mod config;
pub mod env;
mod events;
pub mod exec;
pub mod faults;
pub mod launch;
pub mod lifecycle;
pub mod net;
pub mod pod_volumes;
pub mod probes;
pub mod process;
pub mod projection;
pub mod rewrite;
pub mod state;
pub mod termination;
pub mod volume;
pub mod workdir;

pub use config::PostgresConfig;
pub use faults::KillKind;
pub use state::PostgresRuntime;
pub use volume::VolumeFull;
