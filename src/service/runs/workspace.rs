//! A run's directory on the host: `<data>/runs/<id>/` holds the plan, the stdin files,
//! a bundle per step, the result, and `box/`, a size-limited tmpfs mounted here that the
//! containers see as their workspace `/box`.
//!
//! The service writes into `box/` only before the first step, while nothing else can
//! have written there, and still never follows a symlink: every file is created with
//! `openat(O_CREAT | O_EXCL | O_NOFOLLOW)` beneath directory fds opened `O_NOFOLLOW`.
//! Nothing is ever read back from `box/`; removal unmounts it first.
//!
//! The runs directory itself is a tmpfs the service mounts at start ([`in_memory`]):
//! everything a run writes there (its directory, and the runtime state of its
//! containers in [`CONTAINERS`]) is created and deleted within milliseconds, and a
//! disk filesystem charges a run several inode allocations for it (ext4 scans for an
//! inode that was not recently deleted: with hundreds of runs a second, that scan was a
//! tenth of the machine's CPU).

use std::io::Write;
use std::os::fd::OwnedFd;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{OFlag, openat};
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sys::stat::{Mode, fchmod, mkdirat};
use nix::unistd::{Gid, Uid, fchown};

use super::request::WorkspaceFile;
use crate::service::ServiceError;

/// The name of the workspace inside the run's directory.
pub const BOX: &str = "box";

/// The runtime state root of run containers, inside the runs directory (run ids are
/// hex, so no run directory has this name).
pub const CONTAINERS: &str = ".containers";

/// Run containers made ahead of a request (a runner's warm containers) have ids that
/// start with this; the others are `run-<run id>-<step>[-<test>]`.
pub const WARM_PREFIX: &str = "run-warm-";

/// The state store of the run containers of the runs directory `runs`.
pub fn container_store(runs: &Path) -> crate::runtime::state::Store {
    crate::runtime::state::Store::new(runs.join(CONTAINERS))
}

/// How the runs directory came to be in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InMemory {
    /// Mounted now: this service unmounts it when it stops.
    Mounted,
    /// A tmpfs already (a service stopped without unmounting it, or the operator's).
    Already,
}

/// Mounts a tmpfs on `runs` unless it is one already. Its size is the kernel's default
/// (half the RAM) as an upper bound: what runs put there is bounded by the request
/// limits (bodies of the runs admitted, executing or queued); each workspace is a
/// tmpfs of its own with the run's disk limit.
pub fn in_memory(runs: &Path) -> Result<InMemory, Errno> {
    use nix::sys::statfs::{TMPFS_MAGIC, statfs};
    if statfs(runs)?.filesystem_type() == TMPFS_MAGIC {
        return Ok(InMemory::Already);
    }
    mount(
        Some("corral-runs"),
        runs,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("mode=0700"),
    )?;
    Ok(InMemory::Mounted)
}

/// Unmounts the runs tmpfs mounted by [`in_memory`].
pub fn unmount(runs: &Path) -> Result<(), Errno> {
    umount2(runs, MntFlags::MNT_DETACH)
}

/// A run's directory; removed (the tmpfs unmounted first) when dropped.
pub struct RunDir {
    path: PathBuf,
    mounted: bool,
}

impl RunDir {
    /// Creates `<runs>/<id>` and mounts the workspace tmpfs of `size` bytes, owned by
    /// `uid:gid`.
    pub fn create(
        runs: &Path,
        id: &str,
        size: u64,
        uid: u32,
        gid: u32,
    ) -> Result<Self, ServiceError> {
        let path = runs.join(id);
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .map_err(|e| ServiceError::io(format!("create {}", path.display()), e))?;
        let mut dir = RunDir {
            path,
            mounted: false,
        };
        let target = dir.path.join(BOX);
        std::fs::DirBuilder::new()
            .mode(0o755)
            .create(&target)
            .map_err(|e| ServiceError::io(format!("create {}", target.display()), e))?;
        let opts = format!("size={size},mode=0755,uid={uid},gid={gid},nr_inodes=65536");
        mount(
            Some("corral-box"),
            &target,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some(opts.as_str()),
        )
        .map_err(|e| {
            ServiceError::internal(format!("mount the workspace on {}: {e}", target.display()))
        })?;
        dir.mounted = true;
        Ok(dir)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn workspace(&self) -> PathBuf {
        self.path.join(BOX)
    }

    /// Writes a file of the service's (plan, bundle, stdin) outside the workspace.
    pub fn write(&self, rel: &str, data: &[u8], mode: u32) -> Result<PathBuf, ServiceError> {
        let path = self.path.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .map_err(|e| ServiceError::io(format!("create {}", parent.display()), e))?;
        }
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path)
            .map_err(|e| ServiceError::io(format!("create {}", path.display()), e))?;
        f.write_all(data)
            .map_err(|e| ServiceError::io(format!("write {}", path.display()), e))?;
        Ok(path)
    }

    /// Places the request's files in the workspace, owned by `uid:gid`.
    pub fn place(&self, files: &[WorkspaceFile], uid: u32, gid: u32) -> Result<(), ServiceError> {
        let ws = self.workspace();
        let root = nix::fcntl::open(
            &ws,
            OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| ServiceError::internal(format!("open {}: {e}", ws.display())))?;
        let owner = (Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)));
        for f in files {
            place_one(&root, f, owner).map_err(|e| {
                // ENOSPC and EDQUOT are the request's: its files do not fit the disk limit.
                let msg = format!("write {} in the workspace: {e}", f.path.display());
                if matches!(e, Errno::ENOSPC | Errno::EDQUOT) {
                    ServiceError::bad(format!("{msg} (files exceed disk_bytes)"))
                } else {
                    ServiceError::internal(msg)
                }
            })?;
        }
        Ok(())
    }
}

type Owner = (Option<Uid>, Option<Gid>);

fn place_one(root: &OwnedFd, f: &WorkspaceFile, owner: Owner) -> Result<(), Errno> {
    let nofollow_dir = OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let mut dir: Option<OwnedFd> = None;
    let names: Vec<_> = f
        .path
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n),
            _ => None,
        })
        .collect();
    let Some((file, parents)) = names.split_last() else {
        return Err(Errno::EINVAL);
    };
    for name in parents {
        let cur = dir.as_ref().unwrap_or(root);
        match mkdirat(cur, *name, Mode::from_bits_truncate(0o755)) {
            Ok(()) => {
                let d = openat(cur, *name, nofollow_dir, Mode::empty())?;
                fchown(&d, owner.0, owner.1)?;
                dir = Some(d);
            }
            Err(Errno::EEXIST) => dir = Some(openat(cur, *name, nofollow_dir, Mode::empty())?),
            Err(e) => return Err(e),
        }
    }
    let cur = dir.as_ref().unwrap_or(root);
    let fd = openat(
        cur,
        *file,
        OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o600),
    )?;
    fchown(&fd, owner.0, owner.1)?;
    fchmod(&fd, Mode::from_bits_truncate(f.mode as libc::mode_t))?;
    let mut file = std::fs::File::from(fd);
    file.write_all(&f.content)
        .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))?;
    Ok(())
}

impl Drop for RunDir {
    fn drop(&mut self) {
        if self.mounted {
            let ws = self.workspace();
            match umount2(&ws, MntFlags::MNT_DETACH) {
                // EINVAL: not a mount point (a stale dir whose tmpfs is gone already).
                Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => {}
                Err(e) => {
                    tracing::error!("unmount {}: {e}", ws.display());
                    return;
                }
            }
        }
        // std's remove_dir_all does not follow symlinks (and is safe against races).
        if let Err(e) = std::fs::remove_dir_all(&self.path) {
            tracing::error!("remove {}: {e}", self.path.display());
        }
    }
}

/// Removes what runs of an earlier service left (a service stopped mid-run): their
/// containers (killed), then their directories.
pub fn clean_stale(runs: &Path) {
    let store = container_store(runs);
    for id in store.ids().unwrap_or_default() {
        tracing::info!("removing the stale run container {id}");
        if let Err(e) = crate::runtime::ops::delete(&store, &id, true) {
            tracing::error!("remove the stale run container {id}: {e}");
        }
    }
    let Ok(entries) = std::fs::read_dir(runs) else {
        return;
    };
    for e in entries.flatten() {
        if e.file_name() == CONTAINERS {
            continue;
        }
        let stale = RunDir {
            path: e.path(),
            mounted: e.path().join(BOX).exists(),
        };
        tracing::info!("removing the stale run dir {}", stale.path.display());
        drop(stale);
    }
}
