//! Which PostgreSQL binaries an image tag runs.
//!
//! `postgres:<tag>` names a major version by the tag's leading number
//! (`15`, `16.4`, `17-bookworm`) and, when a dot follows, a minor (`16.4`
//! names 16.4). The server binaries (initdb, pg_ctl, postgres) come from
//! Debian's packages (`/usr/lib/postgresql/<major>/bin`) or from the cache
//! that `scripts/install-postgres.sh` fills
//! (`${PGDB_POSTGRES_CACHE:-$HOME/.cache/pgdb-operator/postgres}`): a tag
//! naming a minor runs `<cache>/<major>.<minor>/bin` when exactly that
//! minor is installed, so `postgres:16.2` and `postgres:16.4` report
//! different `server_version`s, as on a cluster; otherwise (and for a tag
//! naming only a major) it runs the major's binaries, Debian's or
//! `<cache>/<major>/bin`, whatever minor they are. That fallback keeps
//! every 16.x tag running with one install of 16, at the price of running
//! another minor than the tag says.
//! The client tools (psql, pg_dump, pg_isready, ...) come from the newest
//! Debian major installed. A major with no server binaries is an image that
//! cannot be pulled: never silently replaced by another major.

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
    version_of(image).map(|(major, _)| major)
}

/// The major and, when the tag names one, the minor version of an image
/// (`postgres:16.4-bookworm` → (16, Some(4)), `postgres:17` → (17, None)).
pub fn version_of(image: &str) -> Option<(u32, Option<u32>)> {
    let name = image.split('@').next().unwrap_or(image);
    let (_, tag) = name.rsplit_once(':')?;
    let number = |s: &str| -> Option<u32> {
        let digits: String = s.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().ok()
    };
    let major = number(tag)?;
    let rest = &tag[major.to_string().len()..];
    let minor = rest.strip_prefix('.').and_then(number);
    Some((major, minor))
}

impl Binaries {
    /// The `bin` directory with `postgres` and `initdb` for a major, or a
    /// message naming what is missing.
    pub fn server(&self, major: u32) -> Result<PathBuf, String> {
        self.server_for(major, None)
    }

    /// The `bin` directory for a version: exactly `major.minor` when a
    /// minor is given and installed (`<cache>/16.4/bin`), else the major's
    /// (Debian's, then `<cache>/<major>/bin`); or a message naming what is
    /// missing.
    pub fn server_for(&self, major: u32, minor: Option<u32>) -> Result<PathBuf, String> {
        let exact = minor.map(|m| self.cache.join(format!("{major}.{m}")).join("bin"));
        let candidates: Vec<PathBuf> = exact
            .into_iter()
            .chain([
                self.debian.join(major.to_string()).join("bin"),
                self.cache.join(major.to_string()).join("bin"),
            ])
            .collect();
        for dir in &candidates {
            if dir.join("postgres").is_file() && dir.join("initdb").is_file() {
                return Ok(dir.clone());
            }
        }
        let looked: Vec<String> = candidates.iter().map(|d| d.display().to_string()).collect();
        let install = match minor {
            Some(m) => format!("{major}.{m}"),
            None => major.to_string(),
        };
        Err(format!(
            "PostgreSQL {major} server binaries not found (looked for postgres and initdb in {}); install them with scripts/install-postgres.sh {install}",
            looked.join(" and ")
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
/// under `stage/<version>` (`16`, `16.4`: the tree's directory name) once
/// and reused.
pub fn stage(bin: &Path, stage: &Path) -> Result<PathBuf, String> {
    if reachable_by_others(bin) {
        return Ok(bin.to_path_buf());
    }
    let tree = bin.parent().unwrap_or(bin);
    let version = tree
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let target = stage.join(&version);
    if target.join("bin/postgres").is_file() {
        return Ok(target.join("bin"));
    }
    let tmp = stage.join(format!(".{version}-{}", std::process::id()));
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
    // Another sandbox may have staged the same version meanwhile: either copy will do.
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

    #[test]
    fn a_tag_naming_a_minor_names_it_and_one_naming_a_major_does_not() {
        assert_eq!(version_of("postgres:16.4"), Some((16, Some(4))));
        assert_eq!(version_of("postgres:16.4-bookworm"), Some((16, Some(4))));
        assert_eq!(version_of("postgres:17-bookworm"), Some((17, None)));
        assert_eq!(version_of("postgres:16"), Some((16, None)));
        assert_eq!(version_of("postgres:16."), Some((16, None)));
        assert_eq!(version_of("postgres:latest"), None);
    }

    /// A fake install: `<root>/<version>/bin` with empty postgres and initdb.
    fn install(root: &Path, version: &str) -> PathBuf {
        let bin = root.join(version).join("bin");
        std::fs::create_dir_all(&bin).expect("a temporary directory");
        for f in ["postgres", "initdb"] {
            std::fs::write(bin.join(f), "").expect("a temporary file");
        }
        bin
    }

    #[test]
    fn a_minor_runs_its_own_binaries_when_installed_and_the_major_s_otherwise() {
        let root = std::env::temp_dir().join(format!("pgdb-binaries-{}", std::process::id()));
        let b = Binaries {
            debian: root.join("debian"),
            cache: root.join("cache"),
        };
        let major = install(&b.cache, "16");
        let exact = install(&b.cache, "16.4");
        assert_eq!(b.server_for(16, Some(4)), Ok(exact));
        assert_eq!(b.server_for(16, Some(2)), Ok(major.clone()));
        assert_eq!(b.server_for(16, None), Ok(major));
        let message = b.server_for(17, Some(1)).expect_err("17 is not installed");
        assert!(message.contains("17.1/bin"), "{message}");
        assert!(message.contains("install-postgres.sh 17.1"), "{message}");
        let _ = std::fs::remove_dir_all(&root);
    }
}
