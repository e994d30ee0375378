//! `favordynmods`: cgroup migrations without an RCU grace period.
//!
//! Moving a process into a cgroup (a write to `cgroup.procs`) takes the kernel's global
//! `cgroup_threadgroup_rwsem` for writing. That is a per-CPU rwsem: each write lock
//! waits for an RCU grace period first, 5 to 25 ms on a busy 2-CPU machine, and every
//! container's create pays it once. The cgroup2 mount option `favordynmods` (Linux 6.1)
//! keeps the rwsem in its slow-reader mode for good, so migrations no longer wait, at
//! the cost of a slightly dearer fork and exit. The setting is global (the rwsem is
//! shared by every hierarchy), so reconfiguring the one cgroup2 mount serves v1
//! hierarchies too (hybrid hosts); a v1 hierarchy cannot change it after it is mounted.
//!
//! The superblock is reconfigured with `fspick` + `fsconfig`, which leaves the mount's
//! own flags (nosuid, nodev, ...) alone. cgroup2 rebuilds its root flags from the
//! options given on every reconfiguration, so the options the mount already has
//! (`nsdelegate`, `memory_recursiveprot`, ...) are given again with the new one.

use std::ffi::CString;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;

use super::error::CgroupError;
use super::layout::Layout;

const OPTION: &str = "favordynmods";

/// What [`favor_dynmods`] found or did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DynMods {
    /// The cgroup2 mount at this path already had the option.
    AlreadySet(PathBuf),
    /// The cgroup2 mount at this path was reconfigured with the option.
    Enabled(PathBuf),
    /// The host has no cgroup2 mount (v1 only): nothing was changed.
    NoCgroup2,
}

/// Sets `favordynmods` on the host's cgroup2 mount, keeping its other options.
pub fn favor_dynmods() -> Result<DynMods, CgroupError> {
    let Some(mount) = Layout::host()?.unified.clone() else {
        return Ok(DynMods::NoCgroup2);
    };
    let info = std::fs::read_to_string("/proc/self/mountinfo").map_err(|e| CgroupError::Read {
        path: PathBuf::from("/proc/self/mountinfo"),
        errno: Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
    })?;
    let Some(options) = cgroup2_options(&info, &mount) else {
        return Err(CgroupError::NoHierarchy(format!(
            "no cgroup2 mount at {} in /proc/self/mountinfo",
            mount.display()
        )));
    };
    if options.iter().any(|o| o == OPTION) {
        return Ok(DynMods::AlreadySet(mount));
    }
    let mut options = options;
    options.push(OPTION.to_string());
    reconfigure(&mount, &options).map_err(|errno| CgroupError::Write {
        path: mount.clone(),
        value: format!("the mount option {OPTION} (fsconfig)"),
        errno,
    })?;
    Ok(DynMods::Enabled(mount))
}

/// The superblock options of the cgroup2 mount at `mount_point`, from mountinfo text
/// (`... <mount point> <mount options> [optional fields] - cgroup2 <source> <options>`),
/// without `rw`/`ro` (the mount's read-only state is not the superblock's to change).
fn cgroup2_options(mountinfo: &str, mount_point: &Path) -> Option<Vec<String>> {
    let wanted = mount_point.to_str()?;
    mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let point = left.split(' ').nth(4)?;
        let mut right = right.split(' ');
        let (fs, _source, opts) = (right.next()?, right.next()?, right.next()?);
        (fs == "cgroup2" && point == wanted).then(|| {
            opts.split(',')
                .filter(|o| !o.is_empty() && *o != "rw" && *o != "ro")
                .map(String::from)
                .collect()
        })
    })
}

/// `fspick(mount)`, one `fsconfig` per option (`key` or `key=value`), then reconfigure
/// the superblock.
fn reconfigure(mount: &Path, options: &[String]) -> Result<(), Errno> {
    let path = CString::new(mount.as_os_str().as_encoded_bytes()).map_err(|_| Errno::EINVAL)?;
    // SAFETY: fspick with a valid NUL-terminated path; the fd returned is ours.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_fspick,
            libc::AT_FDCWD,
            path.as_ptr(),
            FSPICK_CLOEXEC | FSPICK_NO_AUTOMOUNT,
        )
    };
    if fd < 0 {
        return Err(Errno::last());
    }
    // SAFETY: fspick returned a new fd that nothing else owns.
    let fs = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let set = |key: &str, value: Option<&str>| -> Result<(), Errno> {
        let key = CString::new(key).map_err(|_| Errno::EINVAL)?;
        let value = value
            .map(|v| CString::new(v).map_err(|_| Errno::EINVAL))
            .transpose()?;
        let (cmd, ptr) = match &value {
            Some(v) => (FSCONFIG_SET_STRING, v.as_ptr()),
            None => (FSCONFIG_SET_FLAG, std::ptr::null()),
        };
        fsconfig(&fs, cmd, key.as_ptr(), ptr)
    };
    for o in options {
        match o.split_once('=') {
            Some((k, v)) => set(k, Some(v))?,
            None => set(o, None)?,
        }
    }
    fsconfig(
        &fs,
        FSCONFIG_CMD_RECONFIGURE,
        std::ptr::null(),
        std::ptr::null(),
    )
}

const FSPICK_CLOEXEC: libc::c_uint = 0x1;
const FSPICK_NO_AUTOMOUNT: libc::c_uint = 0x4;
const FSCONFIG_SET_FLAG: libc::c_uint = 0;
const FSCONFIG_SET_STRING: libc::c_uint = 1;
const FSCONFIG_CMD_RECONFIGURE: libc::c_uint = 7;

fn fsconfig(
    fs: &OwnedFd,
    cmd: libc::c_uint,
    key: *const libc::c_char,
    value: *const libc::c_char,
) -> Result<(), Errno> {
    use std::os::fd::AsRawFd;
    // SAFETY: fsconfig on our fs context fd; key and value are NUL-terminated or null as
    // `cmd` requires, and outlive the call.
    let r = unsafe { libc::syscall(libc::SYS_fsconfig, fs.as_raw_fd(), cmd, key, value, 0) };
    if r < 0 { Err(Errno::last()) } else { Ok(()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INFO: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";

    #[test]
    fn options_of_the_cgroup2_mount_only() {
        assert_eq!(
            cgroup2_options(INFO, Path::new("/sys/fs/cgroup/unified")),
            Some(vec!["nsdelegate".into(), "memory_recursiveprot".into()])
        );
        // A tmpfs or v1 mount point is not a cgroup2 mount.
        assert_eq!(cgroup2_options(INFO, Path::new("/sys/fs/cgroup")), None);
        assert_eq!(
            cgroup2_options(INFO, Path::new("/sys/fs/cgroup/memory")),
            None
        );
    }

    /// The fspick/fsconfig mechanics, on a tmpfs of our own: a string and a flag option
    /// reach the superblock, and the mount's flags stay.
    #[test]
    fn reconfigure_sets_string_and_flag_options_and_keeps_mount_flags() {
        use nix::mount::{MntFlags, MsFlags, mount, umount2};
        let dir = tempfile::tempdir().unwrap();
        mount(
            Some("tmpfs"),
            dir.path(),
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some("size=1m"),
        )
        .expect("mount a tmpfs (root needed)");
        let line = || {
            std::fs::read_to_string("/proc/self/mountinfo")
                .unwrap()
                .lines()
                .find(|l| l.split(' ').nth(4) == dir.path().to_str())
                .map(String::from)
                .unwrap()
        };
        let result = reconfigure(dir.path(), &["size=2m".into(), "inode64".into()]);
        let after = line();
        umount2(dir.path(), MntFlags::MNT_DETACH).unwrap();
        result.expect("reconfigure");
        let mount_flags = after.split(' ').nth(5).unwrap();
        assert!(
            mount_flags.contains("nosuid") && mount_flags.contains("nodev"),
            "{after}"
        );
        let (_, sb) = after.split_once(" - ").unwrap();
        assert!(
            sb.contains("size=2048k") && sb.contains("inode64"),
            "{after}"
        );
    }

    /// On this host (root, cgroup2 mounted): the option is on afterwards, the other
    /// superblock options and the mount flags are what they were, and a second call
    /// changes nothing.
    #[test]
    fn favor_dynmods_keeps_the_other_options() {
        let Ok(Some(mount)) = Layout::host().map(|l| l.unified.clone()) else {
            panic!("this test needs a cgroup2 mount (v2 or hybrid host)");
        };
        let line = |info: &str| {
            info.lines()
                .find(|l| l.split(' ').nth(4) == mount.to_str() && l.contains(" - cgroup2 "))
                .map(String::from)
                .expect("cgroup2 mount in mountinfo")
        };
        let mount_flags = |l: &str| l.split(' ').nth(5).map(String::from);
        let before = line(&std::fs::read_to_string("/proc/self/mountinfo").unwrap());
        favor_dynmods().expect("favordynmods");
        let after = line(&std::fs::read_to_string("/proc/self/mountinfo").unwrap());
        assert_eq!(mount_flags(&before), mount_flags(&after));
        let opts = |l: &str| cgroup2_options(l, &mount).unwrap();
        let mut expected = opts(&before);
        if !expected.iter().any(|o| o == OPTION) {
            expected.push(OPTION.into());
        }
        let mut got = opts(&after);
        expected.sort();
        got.sort();
        assert_eq!(got, expected);
        assert_eq!(favor_dynmods().unwrap(), DynMods::AlreadySet(mount));
    }
}
