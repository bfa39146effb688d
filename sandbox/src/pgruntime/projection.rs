//! ConfigMap and Secret volumes: an object's keys as files, kept current.
//!
//! When a pod starts, each key of the source object (or each entry of the
//! volume's `items`) becomes a file under the volume's host directory, with
//! the item's `mode` (else the volume's `defaultMode`, else 0644), owned by
//! the user processes run as; text files get the container's paths
//! translated ([`rewrite`](super::rewrite)), so a `postgresql.conf` naming
//! its `hba_file` under the mount points at the host file.
//!
//! While the pod runs, changes of the source object reach the files, as
//! the kubelet's volume manager makes them reach a running container:
//! every file whose content or mode differs is written to a temporary file
//! in the same directory and renamed over the old one (a process reading
//! the file sees the old or the new content, never half of each), files of
//! keys that disappeared are removed, and nothing is restarted. That is how
//! a server picks up a changed `postgresql.conf` with `pg_reload_conf()`.
//! The kubelet notices a change at its next sync of the pod, which can be
//! up to its sync period (one minute) plus the ConfigMap cache's TTL after
//! the write, about a minute in all; the sandbox waits
//! [`PostgresConfig::volume_sync_delay`](super::PostgresConfig) (one second)
//! after a change, so a test still sees the update arrive later than the
//! write, but not a minute later.
//!
//! A `subPath` mount of such a volume is, on a node, a bind mount of one
//! file or directory made when the container starts; the kubelet's atomic
//! update swaps the volume's files behind it, so the container keeps what
//! it started with until it restarts. The sandbox gives each such mount a
//! copy made at every start of the container, which updates never touch.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{KeyToPath, Volume};

use super::process::RunAs;

/// Which object a ConfigMap or Secret volume projects, and how.
#[derive(Debug, Clone)]
pub struct Source {
    /// `configmaps` or `secrets`.
    pub plural: &'static str,
    /// `configmap` or `secret`, as messages name it.
    pub kind: &'static str,
    pub name: String,
    pub items: Option<Vec<KeyToPath>>,
    pub default_mode: i32,
    pub optional: bool,
}

impl Source {
    /// The source of a ConfigMap or Secret volume; `None` for other volumes.
    pub fn of(v: &Volume) -> Option<Source> {
        if let Some(cm) = &v.config_map {
            return Some(Source {
                plural: "configmaps",
                kind: "configmap",
                name: cm.name.clone(),
                items: cm.items.clone(),
                default_mode: cm.default_mode.unwrap_or(0o644),
                optional: cm.optional.unwrap_or(false),
            });
        }
        v.secret.as_ref().map(|s| Source {
            plural: "secrets",
            kind: "secret",
            name: s.secret_name.clone().unwrap_or_default(),
            items: s.items.clone(),
            default_mode: s.default_mode.unwrap_or(0o644),
            optional: s.optional.unwrap_or(false),
        })
    }
}

/// One file of a projected volume.
#[derive(Debug, Clone, PartialEq)]
pub struct File {
    /// Relative to the volume's directory.
    pub rel: PathBuf,
    pub content: Vec<u8>,
    pub mode: u32,
}

/// What a volume whose files follow objects holds.
#[derive(Debug, Clone)]
pub enum Contents {
    /// A ConfigMap or Secret volume.
    Object(Source),
    /// A projected or downward API volume (see [`super::projected`]), with
    /// the files of its tokens, issued once when the pod started.
    Projected {
        volume: super::projected::Projected,
        tokens: Vec<File>,
    },
}

/// A ConfigMap, Secret, projected or downward API volume of a running pod,
/// kept current.
#[derive(Debug, Clone)]
pub struct Projection {
    /// The volume's host directory.
    pub dir: PathBuf,
    pub contents: Contents,
    /// The files written last, relative to `dir`.
    pub files: Vec<PathBuf>,
}

/// A name the kubelet would accept as a file name under a volume.
pub fn safe_rel(path: &str) -> Option<PathBuf> {
    let p = Path::new(path);
    p.components()
        .all(|c| matches!(c, std::path::Component::Normal(_)))
        .then(|| p.to_path_buf())
}

/// The files a volume holds for the object's `data` (every key as a
/// file of its name, or the `items`); text files pass through
/// `rewrite_text`. An item naming a key the object lacks is an error.
pub fn files(
    source: &Source,
    data: &BTreeMap<String, Vec<u8>>,
    rewrite_text: &dyn Fn(&str) -> String,
) -> Result<Vec<File>, String> {
    let wanted: Vec<(String, String, i32)> = match &source.items {
        Some(items) => items
            .iter()
            .map(|i| {
                (
                    i.key.clone(),
                    i.path.clone(),
                    i.mode.unwrap_or(source.default_mode),
                )
            })
            .collect(),
        None => data
            .keys()
            .map(|k| (k.clone(), k.clone(), source.default_mode))
            .collect(),
    };
    let mut out = vec![];
    for (key, rel, mode) in wanted {
        let Some(bytes) = data.get(&key) else {
            return Err(format!(
                "{} \"{}\" has no key {key}",
                source.kind, source.name
            ));
        };
        let Some(rel) = safe_rel(&rel) else { continue };
        // Text files get the container's paths and names translated (a
        // postgresql.conf naming its hba_file under the mount, say).
        let content = match std::str::from_utf8(bytes) {
            Ok(text) => rewrite_text(text).into_bytes(),
            Err(_) => bytes.clone(),
        };
        out.push(File {
            rel,
            content,
            mode: mode as u32 & 0o7777,
        });
    }
    Ok(out)
}

/// Writes a file so that readers see the old or the new one whole: a
/// temporary file in the same directory, renamed over the path.
pub fn write_atomically(
    path: &Path,
    content: &[u8],
    mode: u32,
    run_as: &RunAs,
) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{:08x}.tmp", rand::random::<u32>()));
    let written = std::fs::write(&tmp, content)
        .and_then(|()| std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode)))
        .and_then(|()| run_as.own(&tmp))
        .and_then(|()| std::fs::rename(&tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// Writes a volume's files into a fresh directory (at pod start).
pub fn write(dir: &Path, files: &[File], run_as: &RunAs) -> std::io::Result<()> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir)?;
    for f in files {
        let path = dir.join(&f.rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        write_atomically(&path, &f.content, f.mode, run_as)?;
    }
    Ok(())
}

/// Brings a volume's directory from the files `old` (as last written) to
/// `new`: files whose content or mode differ are replaced atomically, new
/// ones added, those no longer projected removed. True when anything
/// changed.
pub fn update(dir: &Path, old: &[PathBuf], new: &[File], run_as: &RunAs) -> std::io::Result<bool> {
    use std::os::unix::fs::PermissionsExt;
    let mut changed = false;
    for f in new {
        let path = dir.join(&f.rel);
        let same = std::fs::read(&path).is_ok_and(|c| c == f.content)
            && std::fs::metadata(&path).is_ok_and(|m| m.permissions().mode() & 0o7777 == f.mode);
        if same {
            continue;
        }
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        write_atomically(&path, &f.content, f.mode, run_as)?;
        changed = true;
    }
    for rel in old.iter().filter(|r| !new.iter().any(|f| &f.rel == *r)) {
        match std::fs::remove_file(dir.join(rel)) {
            Ok(()) => changed = true,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(changed)
}

/// Copies a file or a directory tree (a `subPath` of a projected volume)
/// to `to`, replacing what was there, with modes kept and owned by the
/// run-as user.
pub fn copy_tree(from: &Path, to: &Path, run_as: &RunAs) -> std::io::Result<()> {
    let meta = std::fs::metadata(from)?;
    if to.is_dir() {
        std::fs::remove_dir_all(to)?;
    }
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent)?;
    }
    if meta.is_dir() {
        std::fs::create_dir_all(to)?;
        for e in std::fs::read_dir(from)?.flatten() {
            copy_tree(&e.path(), &to.join(e.file_name()), run_as)?;
        }
    } else {
        // `copy` keeps the mode bits.
        std::fs::copy(from, to)?;
    }
    run_as.own(to)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(items: Option<Vec<KeyToPath>>) -> Source {
        Source {
            plural: "configmaps",
            kind: "configmap",
            name: "conf".into(),
            items,
            default_mode: 0o644,
            optional: false,
        }
    }

    fn data(pairs: &[(&str, &str)]) -> BTreeMap<String, Vec<u8>> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect()
    }

    fn run_as() -> RunAs {
        RunAs {
            name: "test".into(),
            ids: None,
        }
    }

    fn temp_dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("pgdb-projection-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn items_choose_keys_paths_and_modes_and_a_missing_key_is_an_error() {
        let items = vec![KeyToPath {
            key: "a".into(),
            path: "sub/a.conf".into(),
            mode: Some(0o600),
        }];
        let got = files(
            &source(Some(items)),
            &data(&[("a", "x"), ("b", "y")]),
            &|t| t.to_uppercase(),
        )
        .expect("the key exists");
        assert_eq!(
            got,
            vec![File {
                rel: PathBuf::from("sub/a.conf"),
                content: b"X".to_vec(),
                mode: 0o600
            }]
        );
        let missing = vec![KeyToPath {
            key: "c".into(),
            path: "c".into(),
            mode: None,
        }];
        let err = files(&source(Some(missing)), &data(&[("a", "x")]), &|t| t.into())
            .expect_err("no key c");
        assert!(err.contains("has no key c"), "{err}");
    }

    #[test]
    fn an_update_replaces_changed_files_by_rename_and_removes_dropped_keys() {
        use std::os::unix::fs::MetadataExt;
        let dir = temp_dir("update");
        let first = files(&source(None), &data(&[("a", "1"), ("b", "2")]), &|t| {
            t.into()
        })
        .expect("no items");
        write(&dir, &first, &run_as()).expect("written");
        let inode_a = std::fs::metadata(dir.join("a")).expect("a").ino();
        let old: Vec<PathBuf> = first.iter().map(|f| f.rel.clone()).collect();

        let second = files(&source(None), &data(&[("a", "1"), ("c", "3")]), &|t| {
            t.into()
        })
        .expect("no items");
        assert!(update(&dir, &old, &second, &run_as()).expect("updated"));
        assert_eq!(std::fs::read_to_string(dir.join("c")).expect("c"), "3");
        assert!(!dir.join("b").exists(), "a dropped key's file is removed");
        assert_eq!(
            std::fs::metadata(dir.join("a")).expect("a").ino(),
            inode_a,
            "an unchanged file is left alone"
        );

        let third = files(&source(None), &data(&[("a", "9"), ("c", "3")]), &|t| {
            t.into()
        })
        .expect("no items");
        let old: Vec<PathBuf> = second.iter().map(|f| f.rel.clone()).collect();
        assert!(update(&dir, &old, &third, &run_as()).expect("updated"));
        assert_eq!(std::fs::read_to_string(dir.join("a")).expect("a"), "9");
        assert_ne!(
            std::fs::metadata(dir.join("a")).expect("a").ino(),
            inode_a,
            "a changed file is a new file renamed into place, not rewritten in place"
        );
        let leftovers: Vec<_> = std::fs::read_dir(&dir)
            .expect("the directory")
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(
            leftovers.is_empty(),
            "no temporary files stay: {leftovers:?}"
        );
        assert!(!update(&dir, &old[..0], &third, &run_as()).expect("nothing to do"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
