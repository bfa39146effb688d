//! The programs the tests drive besides the operator: kubectl, moto's S3
//! server, rclone, Prometheus. Each is found on `PATH`, else in the
//! directory `scripts/install-tools.sh` links what it installs into
//! (`${PGDB_TOOLS_DIR:-$HOME/.cache/pgdb-operator/tools}/bin`).

use std::path::PathBuf;

/// The directory `scripts/install-tools.sh` links its tools into.
pub fn tools_bin() -> PathBuf {
    let tools = std::env::var("PGDB_TOOLS_DIR").unwrap_or_else(|_| {
        format!(
            "{}/.cache/pgdb-operator/tools",
            std::env::var("HOME").unwrap_or_default()
        )
    });
    PathBuf::from(tools).join("bin")
}

/// `program` on `PATH`, else in [`tools_bin`].
pub fn find(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(std::iter::once(tools_bin()))
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// `PATH` with [`tools_bin`] after it, for a shell that runs kubectl.
pub fn search_path() -> String {
    format!(
        "{}:{}",
        std::env::var("PATH").unwrap_or_default(),
        tools_bin().display()
    )
}

/// kubectl, or a panic that says how to install it (a test that needs it
/// fails rather than passing silently).
pub fn kubectl() -> PathBuf {
    find("kubectl").unwrap_or_else(|| {
        panic!(
            "this test runs kubectl, which is neither on PATH nor in {}; install it with scripts/install-tools.sh",
            tools_bin().display()
        )
    })
}
