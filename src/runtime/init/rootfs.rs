//! Building the container's filesystem view inside its mount namespace: the rootfs bind,
//! the spec's mounts, /dev, and `pivot_root`.
//!
//! Every target inside the rootfs is resolved with `openat2(RESOLVE_IN_ROOT)` and reached
//! through `/proc/self/fd/N`, so no symlink in the image can aim a mount at the host.

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;
use nix::mount::MsFlags;
use nix::sys::stat::{Mode, SFlag};
use nix::unistd::{Gid, Uid};

use crate::runtime::linux::error::{Context, SysError, SysResult};
use crate::runtime::linux::fs::{
    Kind, is_plain_dir_in_root, mkdir_all_in_root, open_in_root, proc_fd_path,
};
use crate::runtime::linux::mount::{detach, mount_fs, remount_bind, set_propagation};
use crate::runtime::plan::{DevicePlan, MountPlan, Plan};

/// The rootfs as an open directory, bound onto itself so that it is a mount point.
pub struct Rootfs {
    pub path: PathBuf,
    pub fd: File,
    /// In the runtime's mount namespace (the config lists none): nothing is bound, and
    /// the root is entered with `chroot`.
    pub in_host_mount_ns: bool,
}

/// Makes the mount namespace private to the container and turns the rootfs into a mount.
/// In the runtime's own mount namespace (see [`Plan::host_mount_ns`]) neither is done:
/// both would change the host's mounts; the rootfs is only opened, and the mounts of the
/// config go beneath it.
pub fn prepare(plan: &Plan) -> SysResult<Rootfs> {
    if plan.host_mount_ns {
        let path = plan.rootfs.clone();
        let fd = File::open(&path).ctx(|| format!("open rootfs {}", path.display()))?;
        return Ok(Rootfs {
            path,
            fd,
            in_host_mount_ns: true,
        });
    }
    // Nothing the container mounts may propagate back to the host. Propagation back to
    // the container, when asked for (rootfsPropagation), is applied after pivot_root.
    set_propagation("/", MsFlags::MS_SLAVE | MsFlags::MS_REC, Path::new("/"))?;
    let path = plan.rootfs.clone();
    let p = path.to_string_lossy();
    mount_fs(
        Some(&p),
        &p,
        None,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None,
        &path,
    )?;
    let fd = File::open(&path).ctx(|| format!("open rootfs {}", path.display()))?;
    Ok(Rootfs {
        path,
        fd,
        in_host_mount_ns: false,
    })
}

/// A proc or sysfs mount goes on an ordinary directory of the image (or one that the
/// runtime creates), never through a symlink: the image's `/proc -> somewhere` would
/// otherwise decide where the kernel's most sensitive files appear, and what the masked
/// and read-only paths cover (runc refuses it the same way, after CVE-2019-19921).
fn ordinary_dir(root: &Rootfs, typ: &str, dest: &Path) -> SysResult<()> {
    let (why, errno) = match is_plain_dir_in_root(root.fd.as_fd(), dest) {
        Ok(_) => return Ok(()),
        Err(e @ nix::Error::ELOOP) => ("it, or a directory on the way, is a symlink", e),
        Err(e @ nix::Error::ENOTDIR) => ("it, or a directory on the way, is not a directory", e),
        Err(e) => return Err(SysError::new(format!("resolve {}", dest.display()), e)),
    };
    let what = format!(
        "filesystem {typ} must be mounted on an ordinary directory: {}: {why}",
        dest.display()
    );
    // The rootfs's content: a 4xx in the service.
    Err(SysError::new(what, errno).as_content())
}

/// Mounts one entry of the spec's `mounts` inside the rootfs. A failure that the rootfs
/// content or the mount's own fields explain (a file where the destination needs a
/// directory, a missing bind source, ...) is marked as the container's own
/// ([`SysError::in_content`]).
pub fn mount_one(root: &Rootfs, m: &MountPlan, cgroup_dirs: &[(String, PathBuf)]) -> SysResult<()> {
    mount_one_inner(root, m, cgroup_dirs).map_err(SysError::in_content)
}

fn mount_one_inner(
    root: &Rootfs,
    m: &MountPlan,
    cgroup_dirs: &[(String, PathBuf)],
) -> SysResult<()> {
    let dest = &m.destination;
    let opts = &m.options;
    if m.typ == "cgroup" || m.typ == "cgroup2" {
        return mount_cgroupfs(root, m, cgroup_dirs);
    }
    let source_is_dir = match &m.source {
        Some(s) if m.typ == "bind" => std::fs::metadata(s)
            .ctx(|| format!("bind mount source {}", s.display()))
            .map_err(|e| match e.errno() {
                nix::Error::ENOENT => e.as_content(),
                _ => e,
            })?
            .is_dir(),
        _ => true,
    };
    if m.typ == "proc" || m.typ == "sysfs" {
        ordinary_dir(root, &m.typ, dest)?;
    }
    let kind = if source_is_dir { Kind::Dir } else { Kind::File };
    let target_fd = mkdir_all_in_root(root.fd.as_fd(), dest, kind, dest)?;
    let target = proc_fd_path(&target_fd);
    let flags = opts.flags & !MsFlags::MS_REMOUNT;
    if m.typ == "bind" {
        let src = m.source.as_ref().map(|s| s.to_string_lossy().into_owned());
        mount_fs(
            src.as_deref(),
            &target,
            None,
            flags & (MsFlags::MS_BIND | MsFlags::MS_REC),
            None,
            dest,
        )?;
        // The bind is now on top of the O_PATH target: reopen to reach the new mount.
        let bound = reopen(root, dest)?;
        let extra = flags & !(MsFlags::MS_BIND | MsFlags::MS_REC);
        if !extra.is_empty() {
            remount_bind(&proc_fd_path(&bound), extra, dest)?;
        }
        for p in &opts.propagation {
            set_propagation(&proc_fd_path(&bound), *p, dest)?;
        }
        return Ok(());
    }
    let source = m.source.as_ref().map(|s| s.to_string_lossy().into_owned());
    let source = source.as_deref().unwrap_or(m.typ.as_str());
    let mut data = opts.data.clone();
    if m.typ == "mqueue" || m.typ == "sysfs" || m.typ == "proc" {
        // These filesystems take no data; never hand them one.
        data.clear();
    }
    let result = mount_fs(
        Some(source),
        &target,
        Some(&m.typ),
        flags,
        Some(&data),
        dest,
    );
    match result {
        // sysfs cannot be mounted in a user namespace that does not own the network
        // namespace: fall back to a read-only recursive bind of the host's, as runc does.
        Err(e) if m.typ == "sysfs" && e.errno() == nix::Error::EPERM => {
            mount_fs(
                Some("/sys"),
                &target,
                None,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None,
                dest,
            )?;
            let bound = reopen(root, dest)?;
            remount_bind(
                &proc_fd_path(&bound),
                MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                dest,
            )?;
        }
        other => other?,
    }
    if opts.tmpcopyup {
        return Err(SysError::invalid(format!(
            "mount option tmpcopyup on {}",
            dest.display()
        )));
    }
    if !opts.propagation.is_empty() {
        let mounted = reopen(root, dest)?;
        for p in &opts.propagation {
            set_propagation(&proc_fd_path(&mounted), *p, dest)?;
        }
    }
    Ok(())
}

fn reopen(root: &Rootfs, dest: &Path) -> SysResult<OwnedFd> {
    open_in_root(root.fd.as_fd(), dest, OFlag::O_PATH).ctx(|| format!("reopen {}", dest.display()))
}

/// A `cgroup` mount: a tmpfs holding one bind mount of the container's own cgroup per
/// hierarchy (v1 and hybrid), or the container's cgroup2 directory (v2). The container
/// sees its cgroup as the root of each hierarchy, as with runc.
fn mount_cgroupfs(
    root: &Rootfs,
    m: &MountPlan,
    cgroup_dirs: &[(String, PathBuf)],
) -> SysResult<()> {
    let dest = &m.destination;
    let ro = m.options.flags.contains(MsFlags::MS_RDONLY);
    let base = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let flags = if ro { base | MsFlags::MS_RDONLY } else { base };
    if let [(name, dir)] = cgroup_dirs
        && name.is_empty()
    {
        // Unified hierarchy: bind the container's cgroup directory itself.
        return bind_dir(root, dir, dest, flags);
    }
    let fd = mkdir_all_in_root(root.fd.as_fd(), dest, Kind::Dir, dest)?;
    mount_fs(
        Some("tmpfs"),
        &proc_fd_path(&fd),
        Some("tmpfs"),
        base,
        Some("mode=755"),
        dest,
    )?;
    for (name, dir) in cgroup_dirs {
        bind_dir(root, dir, &dest.join(name), flags)?;
    }
    if ro {
        let top = reopen(root, dest)?;
        mount_fs(
            None,
            &proc_fd_path(&top),
            None,
            MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | base,
            Some("mode=755"),
            dest,
        )?;
    }
    Ok(())
}

/// Binds the host directory `src` at `dest` inside the rootfs, then remounts the bind
/// with `flags`.
fn bind_dir(root: &Rootfs, src: &Path, dest: &Path, flags: MsFlags) -> SysResult<()> {
    let fd = mkdir_all_in_root(root.fd.as_fd(), dest, Kind::Dir, dest)?;
    mount_fs(
        Some(&src.to_string_lossy()),
        &proc_fd_path(&fd),
        None,
        MsFlags::MS_BIND,
        None,
        dest,
    )?;
    let bound = reopen(root, dest)?;
    remount_bind(&proc_fd_path(&bound), flags, dest)
}

/// Creates the devices (mknod, or a bind of the host's node inside a user namespace,
/// where mknod is not allowed) and the standard /dev symlinks. A rootfs whose /dev holds
/// something else where a device goes (a symlink, a file, another device) fails as the
/// container's own fault ([`SysError::in_content`]).
pub fn create_devices(root: &Rootfs, devices: &[DevicePlan], bind: bool) -> SysResult<()> {
    create_devices_inner(root, devices, bind).map_err(SysError::in_content)
}

fn create_devices_inner(root: &Rootfs, devices: &[DevicePlan], bind: bool) -> SysResult<()> {
    for d in devices {
        let parent = d.path.parent().unwrap_or(Path::new("/dev"));
        let name = d
            .path
            .file_name()
            .ok_or_else(|| SysError::invalid(format!("device path {}", d.path.display())))?;
        let dir = mkdir_all_in_root(root.fd.as_fd(), parent, Kind::Dir, parent)?;
        let dir = File::open(proc_fd_path(&dir)).ctx(|| format!("open {}", parent.display()))?;
        if bind {
            let target = mkdir_all_in_root(root.fd.as_fd(), &d.path, Kind::File, &d.path)?;
            mount_fs(
                Some(&d.path.to_string_lossy()),
                &proc_fd_path(&target),
                None,
                MsFlags::MS_BIND,
                None,
                &d.path,
            )?;
            continue;
        }
        let dev = nix::sys::stat::makedev(d.major, d.minor);
        let kind = SFlag::from_bits_truncate(d.kind);
        match nix::sys::stat::mknodat(&dir, name, kind, Mode::from_bits_truncate(d.mode), dev) {
            Ok(()) => {}
            Err(nix::Error::EEXIST) => {
                // Already there (a bundle reused, or an image with device nodes): accept
                // it only if it is the same device.
                let st =
                    nix::sys::stat::fstatat(&dir, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)
                        .ctx(|| format!("stat {}", d.path.display()))?;
                if st.st_mode & libc::S_IFMT != d.kind || st.st_rdev != dev {
                    return Err(SysError::new(
                        format!(
                            "create device {}: the rootfs holds another file there",
                            d.path.display()
                        ),
                        nix::Error::EEXIST,
                    ));
                }
            }
            Err(e) => return Err(SysError::new(format!("mknod {}", d.path.display()), e)),
        }
        // mknod applies the umask: set the exact mode and the owner.
        nix::sys::stat::fchmodat(
            &dir,
            name,
            Mode::from_bits_truncate(d.mode),
            nix::sys::stat::FchmodatFlags::NoFollowSymlink,
        )
        .or_else(|e| {
            if e == nix::Error::EOPNOTSUPP {
                Ok(())
            } else {
                Err(e)
            }
        })
        .ctx(|| format!("chmod {}", d.path.display()))?;
        nix::unistd::fchownat(
            &dir,
            name,
            Some(Uid::from_raw(d.uid)),
            Some(Gid::from_raw(d.gid)),
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .ctx(|| format!("chown {}", d.path.display()))?;
    }
    let dev = mkdir_all_in_root(
        root.fd.as_fd(),
        Path::new("/dev"),
        Kind::Dir,
        Path::new("/dev"),
    )?;
    let dev = File::open(proc_fd_path(&dev)).ctx(|| "open /dev".into())?;
    let mut links = vec![
        ("/proc/self/fd", "fd"),
        ("/proc/self/fd/0", "stdin"),
        ("/proc/self/fd/1", "stdout"),
        ("/proc/self/fd/2", "stderr"),
    ];
    if Path::new("/proc/kcore").exists() {
        links.push(("/proc/kcore", "core"));
    }
    if open_in_root(root.fd.as_fd(), Path::new("/dev/pts/ptmx"), OFlag::O_PATH).is_ok() {
        // /dev/ptmx of the container's own devpts (newinstance).
        nix::unistd::unlinkat(&dev, "ptmx", nix::unistd::UnlinkatFlags::NoRemoveDir).ok();
        links.push(("pts/ptmx", "ptmx"));
    }
    for (target, name) in links {
        match nix::unistd::symlinkat(target, &dev, name) {
            Ok(()) | Err(nix::Error::EEXIST) => {}
            Err(e) => return Err(SysError::new(format!("symlink /dev/{name} -> {target}"), e)),
        }
    }
    Ok(())
}

/// Moves the process into the rootfs: `pivot_root(".", ".")` and a lazy unmount of the
/// old root, which leaves no path back to the host's filesystem. With `no_pivot`
/// (`--no-pivot`, for ramdisk roots), `MS_MOVE` and `chroot` instead.
pub fn enter(root: &Rootfs, no_pivot: bool) -> SysResult<()> {
    nix::unistd::fchdir(&root.fd).ctx(|| format!("chdir {}", root.path.display()))?;
    if root.in_host_mount_ns {
        // pivot_root or MS_MOVE here would change the root of every process of the host.
        nix::unistd::chroot(".").ctx(|| format!("chroot {}", root.path.display()))?;
    } else if no_pivot {
        mount_fs(Some("."), "/", None, MsFlags::MS_MOVE, None, &root.path)?;
        nix::unistd::chroot(".").ctx(|| format!("chroot {}", root.path.display()))?;
    } else {
        nix::unistd::pivot_root(".", ".").ctx(|| format!("pivot_root {}", root.path.display()))?;
        // The old root is stacked on "."; keep its unmount from reaching the host.
        set_propagation(
            ".",
            MsFlags::MS_SLAVE | MsFlags::MS_REC,
            Path::new("old root"),
        )?;
        detach(".", Path::new("old root"))?;
    }
    nix::unistd::chdir("/").ctx(|| "chdir / in the new root".into())
}

/// After pivot_root: masked paths are covered (a read-only tmpfs for a directory,
/// /dev/null for a file); read-only paths are rebound read-only. Missing paths are skipped.
/// Failures that the rootfs content explains are the container's own
/// ([`SysError::in_content`]).
pub fn mask_and_protect(plan: &Plan) -> SysResult<()> {
    mask_and_protect_inner(plan).map_err(SysError::in_content)
}

fn mask_and_protect_inner(plan: &Plan) -> SysResult<()> {
    for p in &plan.masked_paths {
        let Some(fd) = open_existing(p)? else {
            continue;
        };
        let target = proc_fd_path(&fd);
        let st = nix::sys::stat::fstat(&fd).ctx(|| format!("stat {}", p.display()))?;
        if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
            mount_fs(
                Some("tmpfs"),
                &target,
                Some("tmpfs"),
                MsFlags::MS_RDONLY,
                Some("size=0k"),
                p,
            )?;
        } else {
            mount_fs(Some("/dev/null"), &target, None, MsFlags::MS_BIND, None, p)?;
        }
    }
    for p in &plan.readonly_paths {
        let Some(fd) = open_existing(p)? else {
            continue;
        };
        mount_fs(
            Some(&proc_fd_path(&fd)),
            &proc_fd_path(&fd),
            None,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None,
            p,
        )?;
        let Some(bound) = open_existing(p)? else {
            continue;
        };
        remount_bind(
            &proc_fd_path(&bound),
            MsFlags::MS_RDONLY
                | MsFlags::MS_NOSUID
                | MsFlags::MS_NODEV
                | MsFlags::MS_NOEXEC
                | MsFlags::MS_REC,
            p,
        )?;
    }
    Ok(())
}

fn open_existing(p: &Path) -> SysResult<Option<OwnedFd>> {
    match nix::fcntl::open(
        p,
        OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => Ok(Some(fd)),
        Err(nix::Error::ENOENT) => Ok(None),
        Err(e) => Err(SysError::new(format!("open {}", p.display()), e)),
    }
}

/// Makes `/` read-only (root.readonly), after every other mount is in place.
pub fn make_root_readonly() -> SysResult<()> {
    remount_bind("/", MsFlags::MS_RDONLY, Path::new("/"))
}
