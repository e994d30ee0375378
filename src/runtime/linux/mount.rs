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

/// Detaches every mount strictly beneath `dir` in the caller's mount namespace, deepest
/// first: what a container that shares the runtime's mount namespace mounted in its
/// rootfs. A mount already gone with its parent is not an error. Returns how many were
/// detached.
pub fn detach_all_below(dir: &Path) -> SysResult<usize> {
    let info = std::fs::read_to_string("/proc/self/mountinfo")
        .ctx(|| "read /proc/self/mountinfo".into())?;
    let mut below = mount_points_below(&info, dir);
    // Deepest first, so that no detach has to take submounts along.
    below.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    let mut n = 0;
    for p in below {
        match umount2(&p, MntFlags::MNT_DETACH) {
            Ok(()) => n += 1,
            Err(nix::Error::EINVAL | nix::Error::ENOENT) => {}
            Err(e) => {
                return Err(super::error::SysError::new(
                    format!("unmount {}", p.display()),
                    e,
                ));
            }
        }
    }
    Ok(n)
}

/// The mount points in `mountinfo` (its text) strictly beneath `dir`, unescaped.
fn mount_points_below(mountinfo: &str, dir: &Path) -> Vec<std::path::PathBuf> {
    mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| std::path::PathBuf::from(unescape_mountinfo(p)))
        .filter(|p| p.starts_with(dir) && p != dir)
        .collect()
}

/// mountinfo writes space, tab, newline and backslash in paths as `\ooo` octal escapes.
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_points_below_a_dir_unescaped() {
        let info = "\
22 1 8:1 / / rw - ext4 /dev/sda1 rw
30 22 0:5 / /r/root rw - tmpfs t rw
31 30 0:6 / /r/root/tmp rw - tmpfs t rw
32 30 0:7 / /r/root/a\\040b rw - tmpfs t rw
33 22 0:8 / /r/rootx rw - tmpfs t rw
";
        let got = mount_points_below(info, Path::new("/r/root"));
        assert_eq!(got, [Path::new("/r/root/tmp"), Path::new("/r/root/a b")]);
        assert_eq!(unescape_mountinfo("a\\134b\\011"), "a\\b\t");
        assert_eq!(unescape_mountinfo("end\\04"), "end\\04");
    }
}
