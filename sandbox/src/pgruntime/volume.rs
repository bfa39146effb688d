//! Claim volumes: host directories, each its own tmpfs when the sandbox
//! runs as root, so that a full disk is a real one.
//!
//! As root, a claim's directory gets a tmpfs mounted on it when it is first
//! created (no size limit beyond tmpfs's default of half the memory: like
//! kind's local-path volumes, a claim's size is not enforced). Filling the
//! volume shrinks the tmpfs to exactly what it holds (`mount -o remount`),
//! so the next block any process allocates fails with ENOSPC, and emptying
//! it grows the tmpfs back. Mounting over a directory that already holds a
//! database would hide the data, and a running server (whose working
//! directory is its data directory) would not even see the mount, which is
//! why the mount is made when the directory is created, never later.
//! Without root (or when `mount` fails) the directory is a plain directory
//! and a full disk is approximated by permissions.
//!
//! Growing a claim raises its volume's quota with it ([`grow`]): a tmpfs
//! smaller than the claim's new capacity (one a fill shrank) is remounted
//! with that size, and a directory filled by permissions is given its
//! write permission back, so a full volume is relieved the way growing a
//! full disk relieves it.
//!
//! What a volume uses (the kubelet's volume stats, `stats/summary`) is
//! `statvfs` of its tmpfs, or, for a plain directory, a walk of its files
//! reused for [`WALK_PERIOD`]; a full volume says so.
//!
//! Every mount is removed where its directory is (and a volume filled by
//! permissions is made writable again, so that a normal user can delete
//! it): when the claim's volume is reclaimed, when the sandbox shuts down
//! or is dropped, by the watchdog when the test process dies, and by the
//! sweep of a later sandbox.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::cluster::VolumeUsage;

/// The source name the sandbox's mounts carry (shown by `mount`/`df`).
const SOURCE: &str = "pgdb-sandbox";
/// The size of a volume that is not full: tmpfs's own default.
const UNLIMITED: &str = "size=50%";

/// How a volume was made full (see [`super::PostgresRuntime::fill_volume`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VolumeFull {
    /// The volume is a tmpfs shrunk to what it holds: allocating a block
    /// fails with ENOSPC ("No space left on device"), as on a full disk.
    NoSpace,
    /// The volume is a plain directory whose write permissions were
    /// removed: creating or opening a file for writing fails with EACCES
    /// ("Permission denied"); files already open stay writable.
    NoWritePermission,
}

fn run(cmd: &mut Command) -> bool {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Mounts a tmpfs on the (new, empty) directory `dir` when running as
/// root; false when it was not mounted (not root, or `mount` failed).
pub fn mount(dir: &Path) -> bool {
    if !nix::unistd::geteuid().is_root() {
        return false;
    }
    let ok = run(Command::new("mount")
        .args([
            "-t",
            "tmpfs",
            "-o",
            &format!("{UNLIMITED},mode=0755"),
            SOURCE,
        ])
        .arg(dir));
    if !ok {
        tracing::debug!(dir = %dir.display(), "no tmpfs for the volume; a full disk will be approximated by permissions");
    }
    ok
}

/// Whether something is mounted on `dir` (its device differs from its
/// parent's).
pub fn is_mount_point(dir: &Path) -> bool {
    let (Ok(me), Some(Ok(parent))) = (
        std::fs::symlink_metadata(dir),
        dir.parent().map(std::fs::symlink_metadata),
    ) else {
        return false;
    };
    me.is_dir() && me.dev() != parent.dev()
}

/// Unmounts what is mounted on `dir`, if anything; lazily if it is busy
/// (a process that has not exited yet), so the mount is gone either way.
pub fn unmount(dir: &Path) {
    if is_mount_point(dir) && !run(Command::new("umount").arg(dir)) {
        run(Command::new("umount").arg("-l").arg(dir));
    }
}

/// Makes a volume removable: unmounts its tmpfs, or gives its directories
/// back the write permission a fill took (without which a normal user
/// cannot delete what they hold).
pub fn release(dir: &Path) {
    if is_mount_point(dir) {
        unmount(dir);
    } else {
        writable_dirs(dir);
    }
}

/// [`release`]s every volume directly under `volumes`.
pub fn release_all(volumes: &Path) {
    for e in std::fs::read_dir(volumes).into_iter().flatten().flatten() {
        release(&e.path());
    }
}

/// Gives the owner write permission on `dir` and every directory below.
fn writable_dirs(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let Ok(meta) = std::fs::symlink_metadata(dir) else {
        return;
    };
    if !meta.is_dir() {
        return;
    }
    let mode = meta.permissions().mode();
    if mode & 0o200 == 0 {
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode | 0o200));
    }
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        writable_dirs(&e.path());
    }
}

/// (block size, total blocks, free blocks) of the filesystem of `dir`.
fn usage(dir: &Path) -> Option<(u64, u64, u64)> {
    let out = Command::new("stat")
        .args(["-f", "-c", "%S %b %f"])
        .arg(dir)
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut f = text.split_whitespace().map(|n| n.parse::<u64>().ok());
    Some((f.next()??, f.next()??, f.next()??))
}

fn remount(dir: &Path, size: &str) -> bool {
    run(Command::new("mount")
        .args(["-o", &format!("remount,{size}")])
        .arg(dir))
}

/// Makes the volume at `dir` full, or not full again.
pub fn fill(dir: &Path, full: bool) -> std::io::Result<VolumeFull> {
    if is_mount_point(dir) {
        if !full {
            if remount(dir, UNLIMITED) {
                return Ok(VolumeFull::NoSpace);
            }
            return Err(std::io::Error::other("cannot grow the volume's tmpfs"));
        }
        // Shrinking below what the tmpfs holds is refused, and a server may
        // allocate or free blocks meanwhile: measure, shrink, check, again.
        for _ in 0..20 {
            let Some((block, total, free)) = usage(dir) else {
                break;
            };
            let used = total - free;
            if free == 0 || (used == 0 && total == 1) {
                // Full (an empty volume keeps one block: size 0 is unlimited).
                return Ok(VolumeFull::NoSpace);
            }
            remount(dir, &format!("size={}", used.max(1) * block));
        }
        return Err(std::io::Error::other(
            "cannot shrink the volume's tmpfs to what it holds",
        ));
    }
    permissions(dir, full)?;
    Ok(VolumeFull::NoWritePermission)
}

/// Raises the quota of the volume at `dir` to at least `capacity_bytes`,
/// its claim's new capacity: a tmpfs smaller than that (one the fill
/// shrank to what it held) is remounted with that size, and a plain
/// directory filled by permissions is made writable again. A tmpfs
/// already larger (tmpfs's default) is left as it is: the claim's size is
/// not enforced until a fill shrank the volume. True when the quota grew.
pub fn grow(dir: &Path, capacity_bytes: u64) -> bool {
    if is_mount_point(dir) {
        let Ok(st) = nix::sys::statvfs::statvfs(dir) else {
            return false;
        };
        let size = st.blocks().saturating_mul(st.fragment_size());
        return size < capacity_bytes && remount(dir, &format!("size={capacity_bytes}"));
    }
    if filled_by_permissions(dir) {
        return permissions(dir, false).is_ok();
    }
    false
}

/// How long a plain directory's measured size is reused: measuring it walks
/// every file, so, like the kubelet (which runs `du` on volumes about once
/// a minute), the walk is not repeated for every stats request. A tmpfs
/// volume is measured afresh each time: one `statvfs`.
pub const WALK_PERIOD: std::time::Duration = std::time::Duration::from_secs(5);

/// What the volume at `dir` uses now, when its size can be had without a
/// walk: a tmpfs (the sandbox's volumes as root) answers `statvfs` for
/// itself alone. `None` for a plain directory (see [`walk`]) or a
/// directory that is gone.
pub fn usage_of_mount(dir: &Path) -> Option<VolumeUsage> {
    if !is_mount_point(dir) {
        return None;
    }
    let st = nix::sys::statvfs::statvfs(dir).ok()?;
    let (total, free) = (st.blocks(), st.blocks_free());
    let used = total.saturating_sub(free);
    Some(VolumeUsage {
        used_bytes: used * st.fragment_size(),
        inodes_used: st.files().saturating_sub(st.files_free()),
        // As `fill` decides: no free block (an empty volume keeps one).
        full: free == 0 || (used == 0 && total == 1),
    })
}

/// Whether a plain directory was filled by permissions (see [`fill`]).
pub fn filled_by_permissions(dir: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::symlink_metadata(dir).is_ok_and(|m| m.is_dir() && m.permissions().mode() & 0o200 == 0)
}

/// The bytes (allocated blocks, as `du` counts them) and entries below
/// `dir`, by walking it; symlinks are not followed.
pub fn walk(dir: &Path) -> Option<VolumeUsage> {
    let meta = std::fs::symlink_metadata(dir).ok()?;
    let mut usage = VolumeUsage {
        used_bytes: meta.blocks() * 512,
        inodes_used: 1,
        full: false,
    };
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let Ok(m) = e.metadata() else { continue };
            usage.used_bytes += m.blocks() * 512;
            usage.inodes_used += 1;
            if m.is_dir() {
                todo.push(e.path());
            }
        }
    }
    Some(usage)
}

/// Removes (or gives back) the owner's write permission on everything in
/// `p`, symlinks excepted.
fn permissions(p: &Path, full: bool) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::symlink_metadata(p)?;
    if meta.file_type().is_symlink() {
        return Ok(());
    }
    let mode = meta.permissions().mode();
    let new = if full { mode & !0o222 } else { mode | 0o200 };
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(new))?;
    if meta.is_dir() {
        for e in std::fs::read_dir(p)?.flatten() {
            permissions(&e.path(), full)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_directory_is_measured_by_walking_it_and_full_when_filled() {
        let dir = std::env::temp_dir().join(format!("pgdb-volume-walk-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("base/1")).expect("a directory");
        std::fs::write(dir.join("base/1/rel"), vec![7u8; 64 * 1024]).expect("a file");
        let u = walk(&dir).expect("measured");
        assert!(u.used_bytes >= 64 * 1024, "{u:?}");
        assert_eq!(u.inodes_used, 4, "the directory, base, base/1 and the file");
        assert!(!filled_by_permissions(&dir));
        assert!(
            usage_of_mount(&dir).is_none(),
            "a plain directory is no mount"
        );
        fill(&dir, true).expect("filled");
        assert!(filled_by_permissions(&dir));
        release(&dir);
        std::fs::remove_dir_all(&dir).expect("removed");
    }

    #[test]
    fn a_full_tmpfs_has_room_again_once_its_claim_grows() {
        if !nix::unistd::geteuid().is_root() {
            return; // Mounting needs root; the plain directory case is below.
        }
        /// Unmounts and removes the directory however the test ends.
        struct Cleanup(std::path::PathBuf);
        impl Drop for Cleanup {
            fn drop(&mut self) {
                release(&self.0);
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
        let dir = std::env::temp_dir().join(format!("pgdb-volume-grow-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a directory");
        let _cleanup = Cleanup(dir.clone());
        assert!(mount(&dir), "a tmpfs is mounted as root");
        std::fs::write(dir.join("data"), vec![7u8; 256 * 1024]).expect("a file");
        assert_eq!(fill(&dir, true).expect("filled"), VolumeFull::NoSpace);
        let write = || std::fs::write(dir.join("more"), vec![1u8; 1024 * 1024]);
        let refused = write().expect_err("a full volume refuses a write");
        assert_eq!(refused.raw_os_error(), Some(nix::libc::ENOSPC), "{refused}");
        assert!(usage_of_mount(&dir).expect("measured").full);

        assert!(grow(&dir, 64 << 20), "the quota grows to the claim's 64Mi");
        write().expect("a write fits again");
        let usage = usage_of_mount(&dir).expect("measured");
        assert!(!usage.full, "{usage:?}");
        let (block, total, _) = usage_of(&dir);
        assert_eq!(block * total, 64 << 20, "the tmpfs is the claim's size");
        assert!(!grow(&dir, 32 << 20), "a smaller claim changes nothing");
    }

    fn usage_of(dir: &Path) -> (u64, u64, u64) {
        usage(dir).expect("statfs answers")
    }

    #[test]
    fn a_directory_filled_by_permissions_is_writable_again_once_its_claim_grows() {
        let dir = std::env::temp_dir().join(format!("pgdb-volume-regrow-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("sub")).expect("a directory");
        fill(&dir, true).expect("filled");
        assert!(grow(&dir, 1 << 30), "the permission comes back");
        assert!(!filled_by_permissions(&dir));
        assert!(
            !grow(&dir, 1 << 30),
            "nothing to raise on a plain directory"
        );
        std::fs::remove_dir_all(&dir).expect("removed");
    }

    #[test]
    fn a_plain_directory_is_filled_by_permissions_and_given_back() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("pgdb-volume-test-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("sub")).expect("a directory");
        std::fs::write(dir.join("sub/file"), "x").expect("a file");
        let mode = |p: &Path| std::fs::metadata(p).expect("exists").permissions().mode() & 0o777;
        assert_eq!(
            fill(&dir, true).expect("filled"),
            VolumeFull::NoWritePermission
        );
        assert_eq!(mode(&dir.join("sub")) & 0o222, 0);
        assert_eq!(mode(&dir.join("sub/file")) & 0o222, 0);
        fill(&dir, false).expect("emptied");
        assert_ne!(mode(&dir.join("sub/file")) & 0o200, 0);
        // A volume still full is made removable.
        fill(&dir, true).expect("filled again");
        release(&dir);
        assert_ne!(mode(&dir.join("sub")) & 0o200, 0);
        std::fs::remove_dir_all(&dir).expect("removed");
    }
}
