//! How the real runtime behaves: back-offs, probe periods, grace periods,
//! where it keeps its files and where it finds PostgreSQL binaries. The
//! settings only; the runtime reads them ([`super::PostgresRuntime::new`]).

use std::path::PathBuf;
use std::time::Duration;

use super::binaries::Binaries;
use crate::backoff::BackOffConfig;

/// How the real runtime behaves.
#[derive(Debug, Clone)]
pub struct PostgresConfig {
    /// Where sandboxes keep pods, volumes and logs (`<root>/127.X`);
    /// default `$TMPDIR/pgdb-sandbox`.
    pub work_root: Option<PathBuf>,
    /// Where binaries are looked for.
    pub binaries: Binaries,
    /// Where the operator image's binaries are (`pgdb-operator:<crate>`
    /// runs `<dir>/<crate>`, see [`super::operator_image`]); `None`: the
    /// directory `PGDB_OPERATOR_BIN_DIR` names, else the current
    /// executable's directory or its parent (a test binary in
    /// `target/debug/deps` finds `target/debug`).
    pub operator_bin_dir: Option<PathBuf>,
    /// The crash-loop and image-pull back-offs (the kubelet's: 10 s
    /// doubling to five minutes).
    pub backoff: BackOffConfig,
    /// Probes run at most this far apart whatever their `periodSeconds`,
    /// so readiness follows a server within a second (`None`: as written).
    pub max_probe_period: Option<Duration>,
    /// Longest wait between the stop signal and SIGKILL when a pod is
    /// deleted (the pod's `terminationGracePeriodSeconds` if shorter).
    pub max_grace: Duration,
    /// How long after a ConfigMap or Secret changes the files of running
    /// pods' volumes follow (one second; a kubelet takes up to its sync
    /// period plus its cache's TTL, about a minute).
    pub volume_sync_delay: Duration,
}

impl Default for PostgresConfig {
    fn default() -> Self {
        PostgresConfig {
            work_root: None,
            binaries: Binaries::default(),
            operator_bin_dir: None,
            backoff: BackOffConfig::default(),
            max_probe_period: Some(Duration::from_secs(1)),
            max_grace: Duration::from_secs(10),
            volume_sync_delay: Duration::from_secs(1),
        }
    }
}
