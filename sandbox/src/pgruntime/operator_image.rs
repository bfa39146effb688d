//! The operator's own image: `pgdb-operator:<level crate>` runs the
//! workspace binary `<level crate>`, as the image deploy/Dockerfile builds
//! (`ENTRYPOINT ["/operator"]`, `USER 65532`) would.
//!
//! The binary is looked for where cargo puts it (see
//! [`PostgresConfig::operator_bin_dir`](super::PostgresConfig)) at every
//! start of the container, so a binary built while the sandbox runs is
//! picked up, as a freshly pushed image would be. A tag whose binary is
//! missing is an image that cannot be pulled (`ErrImagePull`), with the
//! command that builds it. A binary under a directory the unprivileged
//! run-as user cannot enter is linked (or copied) into the runtime's
//! staging directory first, as the PostgreSQL binaries are.
//!
//! Where it stops: the image has no shell (distroless), so a `command`
//! other than the entrypoint `/operator` cannot run; and the process runs
//! as the runtime's run-as user, not the image's uid 65532 (the sandbox
//! has no such user), which is non-root all the same.

use std::path::{Path, PathBuf};

/// The repository of the operator's image.
pub const OPERATOR_REPOSITORY: &str = "pgdb-operator";
/// The image's entrypoint (deploy/Dockerfile's `ENTRYPOINT`).
pub const ENTRYPOINT: &str = "/operator";
/// The uid the image runs as (deploy/Dockerfile's `USER`): not root, so
/// `runAsNonRoot` holds without a `runAsUser`.
pub const IMAGE_UID: i64 = 65532;
/// The environment variable naming the directory of the binaries.
pub const BIN_DIR_ENV: &str = "PGDB_OPERATOR_BIN_DIR";

/// The level crate an operator image runs (`pgdb-operator:level1-install`
/// → `level1-install`, any registry prefix); `None` for other images.
pub fn crate_of(image: &str) -> Option<&str> {
    let name = image.split('@').next().unwrap_or(image);
    let (repo, tag) = name.rsplit_once(':').filter(|(_, t)| !t.contains('/'))?;
    let is_operator = repo == OPERATOR_REPOSITORY || repo.ends_with("/pgdb-operator");
    (is_operator && !tag.is_empty()).then_some(tag)
}

/// The directories searched for binaries, in order.
pub fn bin_dirs(configured: Option<&Path>) -> Vec<PathBuf> {
    if let Some(dir) = configured {
        return vec![dir.to_path_buf()];
    }
    if let Some(dir) = std::env::var_os(BIN_DIR_ENV).filter(|d| !d.is_empty()) {
        return vec![PathBuf::from(dir)];
    }
    let exe_dir = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf));
    exe_dir
        .into_iter()
        .flat_map(|d| {
            let parent = d.parent().map(Path::to_path_buf);
            std::iter::once(d).chain(parent)
        })
        .collect()
}

/// The binary of a level crate, or the message of an image that cannot be
/// pulled: which binary was looked for where, and how to build it.
pub fn find(image: &str, krate: &str, dirs: &[PathBuf]) -> Result<PathBuf, String> {
    let safe = krate
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !krate.starts_with('.');
    if !safe {
        return Err(format!(
            "image {image:?}: the tag names no workspace binary (use {OPERATOR_REPOSITORY}:<level crate>, e.g. {OPERATOR_REPOSITORY}:level1-install)"
        ));
    }
    if let Some(found) = dirs.iter().map(|d| d.join(krate)).find(|p| p.is_file()) {
        return Ok(found);
    }
    let looked: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
    Err(format!(
        "image {image:?}: the workspace binary {krate:?} is not built (looked in {}); build it with `cargo build -p {krate}`, or set {BIN_DIR_ENV} to the directory holding it",
        if looked.is_empty() {
            "no directory".to_string()
        } else {
            looked.join(" and ")
        }
    ))
}

/// The binary as the unprivileged run-as user can run it: itself when
/// every directory above it is searchable by others, else a link (or copy)
/// under `stage/operator/`, named after its size and modification time so
/// a rebuilt binary gets a fresh one.
pub fn stage(binary: &Path, stage: &Path) -> Result<PathBuf, String> {
    use std::os::unix::fs::PermissionsExt;
    if super::binaries::reachable_by_others(binary) {
        return Ok(binary.to_path_buf());
    }
    let meta =
        std::fs::metadata(binary).map_err(|e| format!("cannot read {}: {e}", binary.display()))?;
    let stamp = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    let name = binary
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let dir = stage.join("operator");
    let target = dir.join(format!("{name}.{}.{stamp}", meta.len()));
    if target.is_file() {
        return Ok(target);
    }
    let fail =
        |e: std::io::Error| format!("cannot stage {} for the run-as user: {e}", binary.display());
    std::fs::create_dir_all(&dir).map_err(fail)?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).map_err(fail)?;
    // Linked or copied under a name of this call's own, then renamed: the
    // staged file appears whole or not at all.
    let tmp = dir.join(format!(".{name}.{:08x}", rand::random::<u32>()));
    if std::fs::hard_link(binary, &tmp).is_err() {
        std::fs::copy(binary, &tmp).map_err(fail)?;
    }
    let placed = std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))
        .and_then(|()| std::fs::rename(&tmp, &target));
    if let Err(e) = placed {
        let _ = std::fs::remove_file(&tmp);
        return Err(fail(e));
    }
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_operator_image_s_tag_names_the_level_crate() {
        assert_eq!(
            crate_of("pgdb-operator:level1-install"),
            Some("level1-install")
        );
        assert_eq!(
            crate_of("localhost:5000/pgdb-operator:level2-upgrade"),
            Some("level2-upgrade")
        );
        assert_eq!(crate_of("pgdb-operator"), None);
        assert_eq!(crate_of("postgres:16"), None);
        assert_eq!(crate_of("example.com/pgdb-operator-x:1"), None);
    }

    #[test]
    fn a_missing_binary_is_reported_with_where_it_was_looked_for_and_how_to_build_it() {
        let dirs = [PathBuf::from("/nonexistent/target/debug")];
        let message = find("pgdb-operator:level9-x", "level9-x", &dirs).expect_err("not built");
        assert!(message.contains("/nonexistent/target/debug"), "{message}");
        assert!(message.contains("cargo build -p level9-x"), "{message}");
        let message = find("pgdb-operator:../sh", "../sh", &dirs).expect_err("not a crate");
        assert!(message.contains("names no workspace binary"), "{message}");
    }

    #[test]
    fn without_a_configured_directory_the_executable_s_directory_and_its_parent_are_searched() {
        let configured = PathBuf::from("/opt/bins");
        assert_eq!(bin_dirs(Some(&configured)), vec![configured]);
        if std::env::var_os(BIN_DIR_ENV).is_none() {
            let exe = std::env::current_exe().expect("the test binary");
            let dirs = bin_dirs(None);
            assert_eq!(dirs.first().map(PathBuf::as_path), exe.parent());
            assert_eq!(
                dirs.get(1).map(PathBuf::as_path),
                exe.parent().and_then(Path::parent)
            );
        }
    }

    #[test]
    fn a_binary_the_run_as_user_cannot_reach_is_staged_once_per_build() {
        use std::os::unix::fs::PermissionsExt;
        let root = std::env::temp_dir().join(format!("pgdb-operator-stage-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let private = root.join("private");
        std::fs::create_dir_all(&private).expect("a temporary directory");
        let binary = private.join("level1-install");
        std::fs::write(&binary, "#!/bin/sh\n").expect("a temporary file");
        std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o755))
            .expect("a temporary file");
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700))
            .expect("a temporary directory");
        let staged = stage(&binary, &root.join("stage")).expect("staged");
        assert_ne!(staged, binary);
        assert!(super::super::binaries::reachable_by_others(&staged));
        assert_eq!(
            std::fs::read(&staged).expect("the staged binary"),
            b"#!/bin/sh\n"
        );
        assert_eq!(stage(&binary, &root.join("stage")), Ok(staged));
        let _ = std::fs::remove_dir_all(&root);
    }
}
