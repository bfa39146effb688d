//! Which PostgreSQL binaries an image tag runs.
//!
//! `postgres:<tag>` names a major version by the tag's leading number
//! (`15`, `16.4`, `17-bookworm`) and, when a dot follows, a minor (`16.4`
//! names 16.4). The server binaries (initdb, pg_ctl, postgres) come from
//! Debian's packages (`/usr/lib/postgresql/<major>/bin`) or from the cache
//! that `scripts/install-postgres.sh` fills
//! (`${PGDB_POSTGRES_CACHE:-$HOME/.cache/pgdb-operator/postgres}`). A tag
//! runs only binaries whose `postgres --version` reports its version: a
//! tag naming a minor runs exactly that minor (`<cache>/16.4/bin`, or the
//! major's directory when it happens to be that minor), so `postgres:16.2`
//! and `postgres:16.4` report different `server_version`s, as on a
//! cluster; a tag naming only a major runs any minor of it (Debian's, then
//! `<cache>/<major>/bin`). A version with no such binaries is an image that
//! cannot be pulled: never silently replaced by another version.
//! The client tools (psql, pg_dump, pg_isready, ...) come from the newest
//! Debian major installed.
//!
//! Binaries under a home the unprivileged run-as user cannot enter are
//! staged into a directory shared by every sandbox on the machine
//! ([`stage`]); a staged tree appears there whole, or not at all.

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

    /// The `bin` directory for a version: one whose `postgres --version`
    /// reports exactly `major.minor` when the tag names a minor
    /// (`<cache>/16.4/bin`, else Debian's or `<cache>/<major>/bin` if they
    /// happen to be that minor), any minor of the major otherwise (Debian's,
    /// then `<cache>/<major>/bin`); or a message naming where it looked,
    /// what it found there and how to install the version.
    pub fn server_for(&self, major: u32, minor: Option<u32>) -> Result<PathBuf, String> {
        let exact = minor.map(|m| self.cache.join(format!("{major}.{m}")).join("bin"));
        let candidates: Vec<PathBuf> = exact
            .into_iter()
            .chain([
                self.debian.join(major.to_string()).join("bin"),
                self.cache.join(major.to_string()).join("bin"),
            ])
            .collect();
        let wanted = match minor {
            Some(m) => format!("{major}.{m}"),
            None => major.to_string(),
        };
        let mut other = vec![];
        for dir in &candidates {
            if !(dir.join("postgres").is_file() && dir.join("initdb").is_file()) {
                continue;
            }
            match reported_version(&dir.join("postgres"), None) {
                Ok((ma, mi)) if ma == major && minor.is_none_or(|m| m == mi) => {
                    return Ok(dir.clone());
                }
                Ok((ma, mi)) => other.push(format!("{} is PostgreSQL {ma}.{mi}", dir.display())),
                Err(e) => other.push(e),
            }
        }
        let looked: Vec<String> = candidates.iter().map(|d| d.display().to_string()).collect();
        let found = if other.is_empty() {
            String::new()
        } else {
            format!("; {}", other.join("; "))
        };
        Err(format!(
            "PostgreSQL {wanted} server binaries not found (looked for postgres and initdb in {}{found}); install them with scripts/install-postgres.sh {wanted}",
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

/// The version a `postgres` binary reports (`postgres --version`:
/// `postgres (PostgreSQL) 16.4`) as (major, minor), run as `user` (uid,
/// gid) when given, which also shows that user can run it.
pub fn reported_version(postgres: &Path, user: Option<(u32, u32)>) -> Result<(u32, u32), String> {
    use std::os::unix::process::CommandExt;
    let mut cmd = std::process::Command::new(postgres);
    cmd.arg("--version")
        .current_dir("/")
        .stdin(std::process::Stdio::null());
    if let Some((uid, gid)) = user {
        cmd.uid(uid).gid(gid);
    }
    // A binary being written as it is run ("text file busy") is retried.
    let mut attempts = 0;
    let out = loop {
        match cmd.output() {
            Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy && attempts < 5 => {
                attempts += 1;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            r => break r.map_err(|e| format!("cannot run {}: {e}", postgres.display()))?,
        }
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let version = text.split("(PostgreSQL)").nth(1).and_then(|v| {
        let mut numbers = v.trim_start().split(|c: char| !c.is_ascii_digit());
        Some((numbers.next()?.parse().ok()?, numbers.next()?.parse().ok()?))
    });
    match version {
        Some(v) if out.status.success() => Ok(v),
        _ => Err(format!(
            "{} --version printed no version ({}): {}",
            postgres.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )),
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

/// Whether `bin` holds server binaries an unprivileged user can run: every
/// directory above them searchable by others, `postgres` and `initdb`
/// executable by others. What a staged tree must be before it is used.
fn usable_by_others(bin: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    ["postgres", "initdb"].iter().all(|f| {
        let file = bin.join(f);
        std::fs::metadata(&file).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o001 != 0)
            && reachable_by_others(&file)
    })
}

/// Makes the binaries of `bin` (a `<root>/bin` tree with `lib` and `share`
/// beside it) reachable by an unprivileged user: a root-owned home such as
/// `/root/.cache` is not, so the tree is linked (hard links, else copied)
/// under `stage/<version>` (`16`, `16.4`: the tree's directory name) once
/// and reused.
///
/// `stage` is shared by every sandbox on the machine, so a tree appears
/// there only whole: it is copied into a directory of this call's own and
/// renamed into place. When several sandboxes stage one version at once,
/// the first rename wins and the others use the winner's tree. A tree
/// there that an unprivileged user cannot use (left by an older sandbox)
/// is moved aside and replaced.
pub fn stage(bin: &Path, stage: &Path) -> Result<PathBuf, String> {
    use std::os::unix::fs::PermissionsExt;
    if reachable_by_others(bin) {
        return Ok(bin.to_path_buf());
    }
    let tree = bin.parent().unwrap_or(bin);
    let version = tree
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let target = stage.join(&version);
    let staged = target.join("bin");
    if usable_by_others(&staged) {
        return Ok(staged);
    }
    std::fs::create_dir_all(stage)
        .map_err(|e| format!("cannot create {}: {e}", stage.display()))?;
    // This call's own directory: nobody else writes into it.
    let own = loop {
        let dir = stage.join(format!(
            ".{version}.{}.{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        match std::fs::create_dir(&dir) {
            Ok(()) => break dir,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(format!("cannot create {}: {e}", dir.display())),
        }
    };
    let result = stage_through(tree, &own, &target);
    let _ = std::fs::remove_dir_all(&own);
    result?;
    if usable_by_others(&staged) {
        Ok(staged)
    } else {
        let mode = std::fs::metadata(&target)
            .map(|m| format!("{:o}", m.permissions().mode() & 0o7777))
            .unwrap_or_else(|e| e.to_string());
        Err(format!(
            "the staged PostgreSQL binaries in {} cannot be run by an unprivileged user (mode {mode}): make {} readable by others (chmod -R a+rX)",
            staged.display(),
            tree.display()
        ))
    }
}

/// Copies `tree` into `own/<name>` and renames it to `target`, unless a
/// usable tree got there first.
fn stage_through(tree: &Path, own: &Path, target: &Path) -> Result<(), String> {
    let copy = own.join(target.file_name().unwrap_or_default());
    let cp = |flags: &str| {
        std::process::Command::new("cp")
            .arg(flags)
            .arg(tree)
            .arg(&copy)
            .status()
            .is_ok_and(|s| s.success())
    };
    if !cp("-al") {
        let _ = std::fs::remove_dir_all(&copy);
        if !cp("-a") {
            return Err(format!(
                "cannot copy {} to {} for the postgres user",
                tree.display(),
                copy.display()
            ));
        }
    }
    // A few rounds: a stale tree moved aside may be replaced by another
    // sandbox's before this one's rename.
    for round in 0..3 {
        match std::fs::rename(&copy, target) {
            Ok(()) => return Ok(()),
            Err(_) if usable_by_others(&target.join("bin")) => return Ok(()),
            Err(e) if round == 2 => {
                return Err(format!(
                    "cannot move {} to {}: {e}",
                    copy.display(),
                    target.display()
                ));
            }
            Err(_) => {
                // Unusable leftovers: set aside inside our own directory,
                // removed with it.
                let _ = std::fs::rename(target, own.join(format!("stale-{round}")));
            }
        }
    }
    Ok(())
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

    /// A fake install: `<root>/<dir>/bin` with an initdb and a postgres
    /// whose `--version` reports `version`.
    fn install(root: &Path, dir: &str, version: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let bin = root.join(dir).join("bin");
        std::fs::create_dir_all(&bin).expect("a temporary directory");
        let script = format!("#!/bin/sh\necho 'postgres (PostgreSQL) {version}'\n");
        for (f, text) in [("postgres", script.as_str()), ("initdb", "#!/bin/sh\n")] {
            std::fs::write(bin.join(f), text).expect("a temporary file");
            std::fs::set_permissions(bin.join(f), std::fs::Permissions::from_mode(0o755))
                .expect("a temporary file");
        }
        bin
    }

    fn temp_root(what: &str) -> PathBuf {
        std::env::temp_dir().join(format!(
            "pgdb-{what}-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ))
    }

    #[test]
    fn a_tag_naming_a_minor_runs_exactly_that_minor_and_never_another() {
        let root = temp_root("binaries");
        let b = Binaries {
            debian: root.join("debian"),
            cache: root.join("cache"),
        };
        let major = install(&b.cache, "16", "16.14");
        let exact = install(&b.cache, "16.4", "16.4");
        assert_eq!(b.server_for(16, Some(4)), Ok(exact));
        assert_eq!(b.server_for(16, Some(14)), Ok(major.clone()));
        assert_eq!(b.server_for(16, None), Ok(major));
        let message = b
            .server_for(16, Some(2))
            .expect_err("16.2 is not installed");
        assert!(
            message.contains("PostgreSQL 16.2 server binaries not found"),
            "{message}"
        );
        assert!(
            message.contains("cache/16/bin is PostgreSQL 16.14"),
            "{message}"
        );
        assert!(message.contains("install-postgres.sh 16.2"), "{message}");
        let message = b.server_for(17, Some(1)).expect_err("17 is not installed");
        assert!(message.contains("17.1/bin"), "{message}");
        assert!(message.contains("install-postgres.sh 17.1"), "{message}");
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn binaries_that_report_another_major_are_not_run_for_a_major_tag() {
        let root = temp_root("binaries");
        let b = Binaries {
            debian: root.join("debian"),
            cache: root.join("cache"),
        };
        install(&b.debian, "16", "15.18");
        let message = b.server_for(16, None).expect_err("no 16 installed");
        assert!(
            message.contains("debian/16/bin is PostgreSQL 15.18"),
            "{message}"
        );
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn a_staged_tree_no_unprivileged_user_can_use_is_replaced() {
        use std::os::unix::fs::PermissionsExt;
        let root = temp_root("stage-stale");
        let bin = private_tree(&root, "16.4");
        let stage_dir = root.join("stage");
        // What two racing sandboxes once left: a 700 directory holding a nested copy.
        let stale = stage_dir.join("16.4");
        std::fs::create_dir_all(stale.join("16.4/bin")).expect("a temporary directory");
        std::fs::write(stale.join("16.4/bin/postgres"), "").expect("a temporary file");
        std::fs::set_permissions(&stale, std::fs::Permissions::from_mode(0o700))
            .expect("a temporary directory");
        assert_eq!(stage(&bin, &stage_dir), Ok(stale.join("bin")));
        assert!(usable_by_others(&stale.join("bin")));
        assert!(!stale.join("16.4").exists());
        let _ = std::fs::remove_dir_all(&root);
    }

    /// A cache tree only root can reach: `<root>/private` (mode 700) holds
    /// `<version>/{bin,lib,share}` with enough files that copying it takes a while.
    fn private_tree(root: &Path, version: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let private = root.join("private");
        let tree = private.join(version);
        for sub in ["bin", "lib", "share/extension"] {
            std::fs::create_dir_all(tree.join(sub)).expect("a temporary directory");
        }
        for f in ["postgres", "initdb", "pg_ctl"] {
            let file = tree.join("bin").join(f);
            std::fs::write(&file, "#!/bin/sh\n").expect("a temporary file");
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o755))
                .expect("a temporary file");
        }
        for i in 0..300 {
            std::fs::write(
                tree.join("share/extension").join(format!("e{i}.sql")),
                "-- sql\n",
            )
            .expect("a temporary file");
        }
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700))
            .expect("a temporary directory");
        tree.join("bin")
    }

    #[test]
    fn sandboxes_staging_one_version_at_once_all_get_one_complete_readable_tree() {
        use std::os::unix::fs::PermissionsExt;
        let root = temp_root("stage-race");
        let bin = private_tree(&root, "16.4");
        let stage_dir = root.join("stage");
        for round in 0..5 {
            let _ = std::fs::remove_dir_all(&stage_dir);
            let start = std::sync::Barrier::new(6);
            let results: Vec<Result<PathBuf, String>> = std::thread::scope(|s| {
                let handles: Vec<_> = (0..6)
                    .map(|_| {
                        s.spawn(|| {
                            start.wait();
                            stage(&bin, &stage_dir)
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().expect("a staging thread"))
                    .collect()
            });
            let target = stage_dir.join("16.4");
            for r in &results {
                assert_eq!(r.as_ref(), Ok(&target.join("bin")), "round {round}");
            }
            let mode = std::fs::metadata(&target)
                .expect("staged")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o755, "round {round}: {:o}", mode);
            let mut entries: Vec<String> = std::fs::read_dir(&target)
                .expect("staged")
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            entries.sort();
            assert_eq!(entries, ["bin", "lib", "share"], "round {round}");
            assert!(
                reachable_by_others(&target.join("bin/postgres")),
                "round {round}"
            );
            let extensions = std::fs::read_dir(target.join("share/extension"))
                .expect("staged")
                .count();
            assert_eq!(extensions, 300, "round {round}");
            let left: Vec<_> = std::fs::read_dir(&stage_dir)
                .expect("staged")
                .flatten()
                .map(|e| e.file_name())
                .collect();
            assert_eq!(
                left,
                [std::ffi::OsString::from("16.4")],
                "round {round}: leftovers"
            );
        }
        let _ = std::fs::remove_dir_all(&root);
    }
}
