//! Thin wrappers over `mount(2)` that report what they mounted where.

use std::path::Path;

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sys::statvfs::{FsFlags, statvfs};

use super::error::{Context, SysResult};

/// `mount(2)`; `shown` is how `target` appears in errors (for `/proc/self/fd/N` targets,
/// the path inside the container).
pub fn mount_fs(
    source: Option<&str>,
    target: &str,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
    shown: &Path,
) -> SysResult<()> {
    mount(
        source,
        target,
        fstype,
        flags,
        data.filter(|d| !d.is_empty()),
    )
    .ctx(|| {
        format!(
            "mount {} ({}) on {}",
            source.unwrap_or("none"),
            fstype.unwrap_or("bind"),
            shown.display()
        )
    })
}

/// Changes the propagation of the mount at `target` (`MS_SLAVE | MS_REC`, ...).
pub fn set_propagation(target: &str, flags: MsFlags, shown: &Path) -> SysResult<()> {
    mount(None::<&str>, target, None::<&str>, flags, None::<&str>)
        .ctx(|| format!("set propagation {flags:?} on {}", shown.display()))
}

/// Remounts the bind mount at `target` with `flags` added, keeping the flags the kernel
/// locks in a user namespace (nosuid, nodev, noexec, atime flags), which a remount that
/// drops them would fail on with EPERM.
pub fn remount_bind(target: &str, flags: MsFlags, shown: &Path) -> SysResult<()> {
    let current = statvfs(target).ctx(|| format!("statvfs {}", shown.display()))?;
    let mut keep = MsFlags::empty();
    let f = current.flags();
    for (st, ms) in [
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
    ] {
        if f.contains(st) {
            keep |= ms;
        }
    }
    mount(
        None::<&str>,
        target,
        None::<&str>,
        MsFlags::MS_REMOUNT | MsFlags::MS_BIND | keep | flags,
        None::<&str>,
    )
    .ctx(|| format!("remount {} with {flags:?}", shown.display()))
}

/// Lazily unmounts `target`.
pub fn detach(target: &str, shown: &Path) -> SysResult<()> {
    umount2(target, MntFlags::MNT_DETACH).ctx(|| format!("unmount {}", shown.display()))
}
