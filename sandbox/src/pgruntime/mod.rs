//! A pod runtime that runs real PostgreSQL: a pod of the `postgres` image is
//! a real server, a Job running `pg_dump` is a real pg_dump.
//!
//! Containers are host processes, one process group each, run as the
//! `postgres` user when the sandbox runs as root. There are no network
//! namespaces: instead each pod gets its own loopback address ([`net`]),
//! each volume a host directory, and what a container sees (mount paths,
//! Service names, `localhost`) is rewritten into host terms before it
//! starts ([`rewrite`]). Containers of the `postgres` image run the image's
//! entrypoint (`docker-entrypoint.sh`, reproduced) with the binaries of the
//! tag's major version ([`binaries`]); containers of the operator's image
//! (`pgdb-operator:<level crate>`) run that level's workspace binary
//! ([`operator_image`]) in a mount namespace of their own, where their
//! volumes are at their literal paths ([`mount_ns`]: the ServiceAccount
//! token at `/var/run/secrets/kubernetes.io/serviceaccount`), with
//! `KUBERNETES_SERVICE_HOST`/`_PORT` naming the API server's HTTPS
//! listener; containers whose command is a PostgreSQL client tool or a
//! shell run that command; any other container is simulated (runs, is
//! ready, and a run-to-completion one exits 0). `0.0.0.0:<port>` in a
//! container's arguments means its pod's address ([`rewrite`]). Probes,
//! restarts with back-off, logs, termination messages ([`termination`]),
//! ConfigMap, Secret, projected and downward API volumes that follow their
//! objects ([`projection`], [`projected`]), `runAsNonRoot` ([`security`])
//! and faults behave as the kubelet's.
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
pub mod mount_ns;
pub mod net;
pub mod operator_image;
pub mod pod_volumes;
pub mod probes;
pub mod process;
pub mod projected;
pub mod projection;
pub mod rewrite;
pub mod security;
pub mod state;
pub mod termination;
pub mod volume;
pub mod workdir;

pub use config::PostgresConfig;
pub use faults::KillKind;
pub use state::PostgresRuntime;
pub use volume::VolumeFull;
