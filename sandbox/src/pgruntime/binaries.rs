//! Which PostgreSQL binaries an image tag runs.
//!
//! `postgres:<tag>` names a major version by the tag's leading number
//! (`15`, `16.4`, `17-bookworm`). The server binaries (initdb, pg_ctl,
//! postgres) of a major come from Debian's packages
//! (`/usr/lib/postgresql/<major>/bin`) or from the cache that
//! `scripts/install-postgres.sh` fills
//! (`${PGDB_POSTGRES_CACHE:-$HOME/.cache/pgdb-operator/postgres}/<major>/bin`).
//! The client tools (psql, pg_dump, pg_isready, ...) come from the newest
//! Debian major installed. A major with no server binaries is an image that
//! cannot be pulled: never silently replaced by another version.

use std::path::{Path, PathBuf};

/// Where binaries are looked for.
#[derive(Debug, Clone)]
pub struct Binaries {
    /// Debian's per-major directories (`/usr/lib/postgresql`).
    pub debian: PathBuf,
    /// The install script's cache (`<cache>/<major>/bin`).
    pub cache: PathBuf,
}

impl Default for Binaries {
    fn default() -> Self {
        let cache = std::env::var_os("PGDB_POSTGRES_CACHE")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                let home = std::env::var_os("HOME").map(PathBuf::from);
                home.unwrap_or_else(|| PathBuf::from("/nonexistent"))
                    .join(".cache/pgdb-operator/postgres")
            });
        Binaries {
            debian: PathBuf::from("/usr/lib/postgresql"),
            cache,
        }
    }
}

/// Whether an image is the official PostgreSQL image (any registry prefix).
pub fn is_postgres_image(image: &str) -> bool {
    let name = image.split('@').next().unwrap_or(image);
    let repo = match name.rsplit_once(':') {
        Some((r, tag)) if !tag.contains('/') => r,
        _ => name,
    };
    repo == "postgres" || repo.ends_with("/postgres")
}

/// The major version an image's tag names (`postgres:16.4` → 16).
pub fn major_of(image: &str) -> Option<u32> {
    let name = image.split('@').next().unwrap_or(image);
    let (_, tag) = name.rsplit_once(':')?;
    let digits: String = tag.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

impl Binaries {
    /// The `bin` directory with `postgres` and `initdb` for a major, or a
    /// message naming what is missing.
    pub fn server(&self, major: u32) -> Result<PathBuf, String> {
        let candidates = [
            self.debian.join(major.to_string()).join("bin"),
            self.cache.join(major.to_string()).join("bin"),
        ];
        for dir in &candidates {
            if dir.join("postgres").is_file() && dir.join("initdb").is_file() {
                return Ok(dir.clone());
            }
        }
        Err(format!(
            "PostgreSQL {major} server binaries not found (looked for postgres and initdb in {} and {}); install them with scripts/install-postgres.sh {major}",
            candidates[0].display(),
            candidates[1].display()
        ))
    }

    /// The directory of the client tools: the newest Debian major with psql
    /// and pg_dump.
    pub fn client(&self) -> Option<PathBuf> {
        let mut majors: Vec<(u32, PathBuf)> = std::fs::read_dir(&self.debian)
            .ok()?
            .flatten()
            .filter_map(|e| {
                let major = e.file_name().to_str()?.parse::<u32>().ok()?;
                let bin = e.path().join("bin");
                (bin.join("psql").is_file() && bin.join("pg_dump").is_file())
                    .then_some((major, bin))
            })
            .collect();
        majors.sort();
        majors.pop().map(|(_, bin)| bin)
    }

    /// Whether any server binaries are installed (what `auto` looks for).
    pub fn any_server(&self) -> bool {
        let has = |root: &Path| {
            std::fs::read_dir(root).is_ok_and(|entries| {
                entries
                    .flatten()
                    .any(|e| e.path().join("bin/postgres").is_file())
            })
        };
        has(&self.debian) || has(&self.cache)
    }
}

/// Whether every directory above `path` can be searched by "other" users,
/// i.e. whether an unprivileged user can reach it.
pub fn reachable_by_others(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.ancestors()
        .skip(1)
        .all(|dir| std::fs::metadata(dir).is_ok_and(|m| m.permissions().mode() & 0o001 != 0))
}

/// Makes the binaries of `bin` (a `<root>/bin` tree with `lib` and `share`
/// beside it) reachable by an unprivileged user: a root-owned home such as
/// `/root/.cache` is not, so the tree is linked (hard links, else copied)
/// under `stage/<major>` once and reused.
pub fn stage(bin: &Path, stage: &Path, major: u32) -> Result<PathBuf, String> {
    if reachable_by_others(bin) {
        return Ok(bin.to_path_buf());
    }
    let tree = bin.parent().unwrap_or(bin);
    let target = stage.join(major.to_string());
    if target.join("bin/postgres").is_file() {
        return Ok(target.join("bin"));
    }
    let tmp = stage.join(format!(".{major}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(stage)
        .map_err(|e| format!("cannot create {}: {e}", stage.display()))?;
    let copy = |flags: &str| {
        std::process::Command::new("cp")
            .arg(flags)
            .arg(tree)
            .arg(&tmp)
            .status()
            .is_ok_and(|s| s.success())
    };
    if !copy("-al") {
        let _ = std::fs::remove_dir_all(&tmp);
        if !copy("-a") {
            return Err(format!(
                "cannot copy {} to {} for the postgres user",
                tree.display(),
                tmp.display()
            ));
        }
    }
    // Another sandbox may have staged the same major meanwhile: either copy will do.
    if std::fs::rename(&tmp, &target).is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    Ok(target.join("bin"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tag_names_the_major_and_the_repository_the_image() {
        assert_eq!(major_of("postgres:16.4"), Some(16));
        assert_eq!(major_of("docker.io/library/postgres:17-bookworm"), Some(17));
        assert_eq!(major_of("postgres"), None);
        assert_eq!(major_of("postgres:latest"), None);
        assert!(is_postgres_image("postgres:15"));
        assert!(is_postgres_image("docker.io/library/postgres:15"));
        assert!(is_postgres_image("localhost:5000/postgres:15"));
        assert!(!is_postgres_image("busybox:1.36"));
        assert!(!is_postgres_image("example.com/postgres-exporter:1"));
    }

    #[test]
    fn a_missing_major_is_reported_with_the_paths_looked_at() {
        let b = Binaries {
            debian: PathBuf::from("/nonexistent/debian"),
            cache: PathBuf::from("/nonexistent/cache"),
        };
        let message = b.server(14).expect_err("nothing installed");
        assert!(message.contains("PostgreSQL 14"), "{message}");
        assert!(message.contains("/nonexistent/cache/14/bin"), "{message}");
        assert!(message.contains("install-postgres.sh 14"), "{message}");
    }
}
