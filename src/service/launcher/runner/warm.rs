//! Warm containers: a run's first executions made ahead of the request.
//!
//! Between runs a runner creates containers from the steps of the run it last executed:
//! the same config (image, command, environment, limits, namespaces, seccomp, user),
//! created with their own fresh namespaces and cgroup like any other, their init waiting
//! for `start`. Two things differ from what the request brings, and are put in at claim:
//! - the workspace: `/box` is an empty, read-only placeholder until then; the run's
//!   workspace (its tmpfs) is cloned with `open_tree`, given the mount's flags
//!   (`nosuid`, `nodev`, `ro` for test cases) with `mount_setattr`, and moved over
//!   `/box` in the container's mount namespace with `move_mount`;
//! - stdin: an empty memfd, opened read-only for the container; a test case's input is
//!   copied into it, and it is sealed.
//!
//! The init resolves its cwd (`/box`) and program after `start`
//! (`CreateOptions::resolve_at_start`), so it sees the workspace. A warm container is
//! used only by an execution whose config is the same but for the workspace's source,
//! and only once; one nobody claims is removed when the next run's steps differ. Each is
//! as fresh as one created on the request's path: nothing ran in it before.

use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::fcntl::OFlag;
use nix::sched::{CloneFlags, setns};
use nix::sys::stat::Mode;
use oci_spec::runtime::Spec;

use super::execution::{Execution, Loaded, Refusal, open_input};
use crate::runtime::state::Store;
use crate::service::runs::WARM_PREFIX;

/// How many warm containers a runner keeps: one per step of the last run, up to this.
const WARM_PER_RUNNER: usize = 2;

/// Where a run container's workspace is mounted (see `runs::spec`).
const BOX: &str = "/box";

/// The runner's warm containers and what they are made from.
pub(super) struct Pool {
    /// The store's root: the bundle directory recorded for warm containers.
    root: PathBuf,
    /// An empty directory, bound at `/box` until a workspace is moved over it.
    placeholder: PathBuf,
    /// The runner's own mount namespace, returned to after a move; `None`: warm
    /// containers are off (the placeholder or the namespace could not be had).
    home: Option<OwnedFd>,
    /// The configs to keep warm (the placeholder as `/box`'s source), from the last run.
    wanted: Vec<Loaded>,
    ready: Vec<Warm>,
    made: u64,
}

/// A created container, waiting for an execution that fits.
struct Warm {
    key: Loaded,
    /// The image's root filesystem as it was bound (see [`rootfs_id`]).
    rootfs: Option<RootfsId>,
    x: Execution,
    /// The read-write end of the container's stdin (a memfd).
    stdin: File,
}

/// What an execution brings to a warm container.
struct Fit {
    /// Its step's config with the placeholder as the workspace's source.
    key: Spec,
    workspace: PathBuf,
    writable: bool,
}

impl Pool {
    pub(super) fn new(root: &Path) -> Self {
        let placeholder = root.join(".warm-box");
        let home = make_placeholder(&placeholder)
            .and_then(|()| {
                nix::fcntl::open(
                    "/proc/thread-self/ns/mnt",
                    OFlag::O_RDONLY | OFlag::O_CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| format!("open the runner's mount namespace: {e}"))
            })
            .inspect_err(|e| tracing::warn!("runner: no warm containers: {e}"))
            .ok();
        Pool {
            root: root.to_path_buf(),
            placeholder,
            home,
            wanted: Vec::new(),
            ready: Vec::new(),
            made: 0,
        }
    }

    /// The step config `spec` as a warm container would be made from it: `None` when it
    /// has no workspace bind at `/box`.
    fn fit(&self, spec: &Spec) -> Option<Fit> {
        let mut key = spec.clone();
        let mount =
            key.mounts_mut().as_mut()?.iter_mut().find(|m| {
                m.destination() == Path::new(BOX) && m.typ().as_deref() == Some("bind")
            })?;
        let workspace = mount.source().clone()?;
        let writable = !mount.options().iter().flatten().any(|o| o == "ro");
        mount.set_source(Some(self.placeholder.clone()));
        Some(Fit {
            key,
            workspace,
            writable,
        })
    }

    /// Keeps the configs of the run that just ended warm for the next one.
    pub(super) fn remember(&mut self, steps: &[Loaded]) {
        if self.home.is_none() {
            return;
        }
        let mut wanted: Vec<Loaded> = Vec::new();
        for step in steps {
            let Some(fit) = self.fit(&step.1) else {
                continue;
            };
            if wanted.len() >= WARM_PER_RUNNER || wanted.iter().any(|w| w.1 == fit.key) {
                continue;
            }
            // The same config as before keeps its key, and so its warm containers.
            let known = self
                .wanted
                .iter()
                .chain(self.ready.iter().map(|w| &w.key))
                .find(|k| k.1 == fit.key)
                .cloned();
            wanted.push(known.unwrap_or_else(|| Arc::new((self.root.clone(), fit.key))));
        }
        self.wanted = wanted;
    }

    /// Starts a warm container made from the step config `spec` with the execution's
    /// workspace and `stdin`, if there is one. `None` when there is none, or when it
    /// could not be given them (it is removed then, and the caller creates one).
    pub(super) fn claim(
        &mut self,
        store: &Store,
        spec: &Spec,
        stdin: Option<&Path>,
    ) -> Option<Result<Execution, Refusal>> {
        let home = self.home.as_ref()?;
        if self.ready.is_empty() {
            return None;
        }
        let fit = self.fit(spec)?;
        let i = self.ready.iter().position(|w| w.key.1 == fit.key)?;
        let w = self.ready.swap_remove(i);
        // The same path may hold another image now (deleted and uploaded again): a warm
        // container made before has the old one.
        if w.rootfs.is_none() || w.rootfs != rootfs_id(spec) {
            let mut x = w.x;
            x.remove(store);
            return None;
        }
        match w.claim(store, &fit, stdin, home) {
            Err(Refusal::Internal(e)) => {
                tracing::warn!("runner: a warm container could not be used: {e}");
                None
            }
            claimed => Some(claimed),
        }
    }

    /// One piece of work between runs: removes a warm container that no config wants
    /// any more, or makes one that is wanted. Returns false when there was nothing to do.
    pub(super) fn step(&mut self, store: &Store, runner: u32) -> bool {
        if let Some(i) = self
            .ready
            .iter()
            .position(|w| !self.wanted.iter().any(|k| Arc::ptr_eq(k, &w.key)))
        {
            let mut w = self.ready.swap_remove(i);
            w.x.remove(store);
            return true;
        }
        let Some(key) = self
            .wanted
            .iter()
            .find(|k| !self.ready.iter().any(|w| Arc::ptr_eq(k, &w.key)))
            .cloned()
        else {
            return false;
        };
        self.made += 1;
        let id = format!("{}{}", prefix(runner), self.made);
        match make(store, &id, &key) {
            Ok(w) => self.ready.push(w),
            Err(e) => {
                // Not tried again for this config.
                tracing::warn!("runner: warm container {id}: {e}");
                self.wanted.retain(|k| !Arc::ptr_eq(k, &key));
            }
        }
        true
    }

    pub(super) fn remove_all(&mut self, store: &Store) {
        for mut w in self.ready.drain(..) {
            w.x.remove(store);
        }
        self.wanted.clear();
    }
}

/// The ids of the warm containers of the runner `pid` start with this.
pub(super) fn prefix(pid: u32) -> String {
    format!("{WARM_PREFIX}{pid}-")
}

impl Warm {
    /// Gives the container the execution's workspace and stdin, and starts it. On
    /// failure the container is removed (the caller creates one the usual way).
    fn claim(
        mut self,
        store: &Store,
        fit: &Fit,
        stdin: Option<&Path>,
        home: &OwnedFd,
    ) -> Result<Execution, Refusal> {
        let given = stdin
            .map_or(Ok(()), |p| {
                let mut input = File::from(open_input(p)?);
                std::io::copy(&mut input, &mut self.stdin)
                    .map(drop)
                    .map_err(|e| format!("copy {} to the stdin of the container: {e}", p.display()))
            })
            .and_then(|()| seal(&self.stdin))
            .and_then(|()| {
                let ns = self
                    .x
                    .mount_ns()
                    .ok_or("the container's mount namespace is not open")?;
                mount_workspace(ns, &fit.workspace, fit.writable, home)
            });
        if let Err(e) = given {
            self.x.remove(store);
            return Err(Refusal::Internal(e));
        }
        self.x.start(store)?;
        Ok(self.x)
    }
}

/// Creates a warm container of `key`'s config, its stdin an empty memfd.
fn make(store: &Store, id: &str, key: &Loaded) -> Result<Warm, String> {
    // SAFETY: memfd_create with a NUL-terminated name; the fd is owned below.
    let fd = unsafe {
        libc::memfd_create(
            c"corral-stdin".as_ptr(),
            libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
        )
    };
    if fd < 0 {
        return Err(format!("memfd_create: {}", nix::Error::last()));
    }
    // SAFETY: a new fd that nothing else owns.
    let stdin = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    // A read-only open file of its own (its own offset): the container reads from the
    // start what the runner writes later.
    let input = nix::fcntl::open(
        format!("/proc/self/fd/{fd}").as_str(),
        OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| format!("reopen the stdin memfd read-only: {e}"))?;
    let null = nix::fcntl::open("/dev/null", OFlag::O_RDWR | OFlag::O_CLOEXEC, Mode::empty())
        .map_err(|e| format!("open /dev/null: {e}"))?;
    // Before the create binds it: what a claim compares with.
    let rootfs = rootfs_id(&key.1);
    let x = Execution::prepare(store, id, key, input, &null, None, true).map_err(|r| match r {
        Refusal::Program(m) | Refusal::Internal(m) => m,
    })?;
    Ok(Warm {
        key: key.clone(),
        rootfs,
        x,
        stdin,
    })
}

/// `(st_dev, st_ino, st_ctime, st_ctime_nsec)` of a directory.
type RootfsId = crate::service::launcher::pool::DirId;

/// The identity of the config's root filesystem (see [`dir_id`](crate::service::launcher::pool::dir_id)).
fn rootfs_id(spec: &Spec) -> Option<RootfsId> {
    crate::service::launcher::pool::dir_id(spec.root().as_ref()?.path())
}

/// Makes the stdin memfd immutable: the program could reopen it for writing through
/// `/proc/self/fd/0` (a memfd's mode is 0777) otherwise.
fn seal(memfd: &File) -> Result<(), String> {
    let seals = libc::F_SEAL_WRITE | libc::F_SEAL_GROW | libc::F_SEAL_SHRINK | libc::F_SEAL_SEAL;
    // SAFETY: fcntl(F_ADD_SEALS) on our own fd with an int argument.
    let r = unsafe { libc::fcntl(memfd.as_raw_fd(), libc::F_ADD_SEALS, seals) };
    nix::errno::Errno::result(r)
        .map(drop)
        .map_err(|e| format!("seal the stdin of the container: {e}"))
}

/// An empty directory, `0555`, owned by root.
fn make_placeholder(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| format!("create {}: {e}", parent.display()))?;
    }
    match std::fs::DirBuilder::new().mode(0o555).create(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let meta = std::fs::symlink_metadata(path)
                .map_err(|e| format!("stat {}: {e}", path.display()))?;
            if !meta.is_dir() {
                return Err(format!("{}: not a directory", path.display()));
            }
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o555))
                .map_err(|e| format!("chmod {}: {e}", path.display()))
        }
        Err(e) => Err(format!("create {}: {e}", path.display())),
    }
}

/// Mounts a clone of `workspace` (a mount point) over `/box` in the mount namespace
/// `ns` (a container's), with the flags of the bind mount it stands for. The runner
/// enters that namespace for the move only: should it fail to return to `home` it
/// aborts, as nothing it does may resolve paths in a container.
fn mount_workspace(
    ns: &OwnedFd,
    workspace: &Path,
    writable: bool,
    home: &OwnedFd,
) -> Result<(), String> {
    let sys = |what: String| move |e: nix::Error| format!("{what}: {e}");
    let path = CString::new(workspace.as_os_str().as_bytes())
        .map_err(|_| format!("{}: contains NUL", workspace.display()))?;
    // SAFETY: open_tree with a valid path; the returned fd is owned below.
    let tree = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            path.as_ptr(),
            libc::OPEN_TREE_CLONE | libc::OPEN_TREE_CLOEXEC | libc::AT_SYMLINK_NOFOLLOW as u32,
        )
    };
    let tree = nix::errno::Errno::result(tree)
        .map_err(sys(format!("open_tree {}", workspace.display())))?;
    // SAFETY: a new fd that nothing else owns.
    let tree = unsafe { OwnedFd::from_raw_fd(tree as i32) };
    let mut set = libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NODEV;
    if !writable {
        set |= libc::MOUNT_ATTR_RDONLY;
    }
    let attr = MountAttr {
        attr_set: set,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: mount_setattr on our fd with a mount_attr of the size we pass.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    nix::errno::Errno::result(r).map_err(sys("mount_setattr on the workspace".into()))?;
    setns(ns.as_fd(), CloneFlags::CLONE_NEWNS)
        .map_err(sys("enter the container's mount namespace".into()))?;
    let moved = move_onto_box(&tree);
    if let Err(e) = setns(home.as_fd(), CloneFlags::CLONE_NEWNS) {
        tracing::error!("runner: cannot return to its mount namespace: {e}");
        std::process::abort();
    }
    moved.map_err(sys("move the workspace to /box".into()))
}

/// Moves `tree` over `/box` of the mount namespace the runner is in (a container's,
/// whose root is now the runner's root and cwd). `/box` is resolved as the runtime
/// resolves mount targets: inside that root, no magic link followed.
fn move_onto_box(tree: &OwnedFd) -> nix::Result<()> {
    use nix::fcntl::{OpenHow, ResolveFlag, openat2};
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let target = openat2(nix::fcntl::AT_FDCWD, &BOX[1..], how)?;
    // SAFETY: move_mount of our detached tree onto our O_PATH fd, both valid.
    let moved = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            target.as_raw_fd(),
            c"".as_ptr(),
            libc::MOVE_MOUNT_F_EMPTY_PATH | libc::MOVE_MOUNT_T_EMPTY_PATH,
        )
    };
    nix::errno::Errno::result(moved).map(drop)
}

/// `struct mount_attr` of mount_setattr(2).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}
