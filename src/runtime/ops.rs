//! The lifecycle operations on an existing container: start, state, kill, delete, list.

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::fcntl::OFlag;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::Signal;
use nix::sys::stat::Mode;
use serde::Serialize;

use super::error::{Error, Result};
use super::hooks;
use super::linux::cgroups::{Cgroup, CgroupPath, CgroupStats};
use super::linux::error::Context;
use super::linux::process::{pidfd_open, pidfd_send_signal, start_time};
use super::state::{EXEC_ERROR, EXEC_FIFO, Lock, Record, Store};
use super::status::{Status, status};
use super::{OciState, id, oci_state};

/// `state`: the OCI state plus what runc adds (rootfs, created, owner).
#[derive(Debug, Clone, Serialize)]
pub struct StateView {
    #[serde(flatten)]
    pub oci: OciState,
    pub rootfs: String,
    pub created: String,
    pub owner: String,
}

pub fn state(store: &Store, id: &str) -> Result<StateView> {
    id::validate(id)?;
    let rec = store.load(id)?;
    Ok(view(store, &rec))
}

fn view(store: &Store, rec: &Record) -> StateView {
    let st = status(store, rec);
    StateView {
        oci: oci_state(
            &rec.id,
            &st.to_string(),
            rec.pid,
            &rec.bundle,
            &rec.annotations,
        ),
        rootfs: rec.rootfs.to_string_lossy().into_owned(),
        created: rec.created.clone(),
        owner: String::new(),
    }
}

/// Every container under the root, for `list`. Unreadable entries are skipped with a
/// warning rather than failing the whole listing.
pub fn list(store: &Store) -> Result<Vec<StateView>> {
    let mut out = Vec::new();
    for id in store.ids()? {
        match store.load(&id) {
            Ok(rec) => out.push(view(store, &rec)),
            Err(e) => tracing::warn!("{e}"),
        }
    }
    Ok(out)
}

/// `start`: releases the init waiting on the exec fifo, then runs poststart hooks.
pub fn start(store: &Store, id: &str) -> Result<()> {
    started(store, id).map(drop)
}

/// [`start`], returning the container's record (its pid and bundle, for an answer that
/// needs no second read of the state).
pub fn started(store: &Store, id: &str) -> Result<Record> {
    id::validate(id)?;
    let lock = store.lock(id)?;
    let rec = store.load(id)?;
    match status(store, &rec) {
        Status::Created => {}
        Status::Stopped => return Err(Error::status("cannot start a container that has stopped")),
        Status::Running | Status::Paused => {
            return Err(Error::status("cannot start an already running container"));
        }
        Status::Creating => {
            return Err(Error::status(
                "cannot start a container that is still being created",
            ));
        }
    }
    start_created(&lock, &rec)?;
    Ok(rec)
}

/// The second half of [`start`], for a caller that holds the container's lock and
/// knows it is `created` (its own [`create`](super::create::create_with) just
/// returned it): no state to read, no status to derive.
pub fn start_created(lock: &Lock, rec: &Record) -> Result<()> {
    let id = &rec.id;
    let fifo_path = lock.dir().join(EXEC_FIFO);
    // Non-blocking: if the init is gone there is no reader, and open fails with ENXIO
    // instead of hanging.
    let fifo: OwnedFd = nix::fcntl::open(
        &fifo_path,
        OFlag::O_WRONLY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| {
        if e == nix::Error::ENXIO {
            Error::status("cannot start a container whose init has exited")
        } else {
            Error::Sys(super::linux::error::SysError::new(
                format!("open {}", fifo_path.display()),
                e,
            ))
        }
    })?;
    nix::unistd::write(&fifo, b"0").ctx(|| format!("write {}", fifo_path.display()))?;
    // The init holds the fifo's read end (close-on-exec) until it execs or dies: wait for
    // that, so that `start` returns after the program runs (or reports why it did not),
    // and poststart hooks run after the program started, as the spec orders them.
    wait_for_no_readers(&fifo);
    drop(fifo);
    std::fs::remove_file(&fifo_path).ctx(|| format!("remove {}", fifo_path.display()))?;
    let err_path = lock.dir().join(EXEC_ERROR);
    // The init made it empty at create; it holds a reason if what follows `start` failed:
    // the exec of the process, a startContainer hook, a late seccomp filter. Each is the
    // container's own configuration or content, not the host's failure.
    if let Ok(reason) = std::fs::read_to_string(&err_path)
        && !reason.is_empty()
    {
        let _ = std::fs::remove_file(&err_path);
        return Err(Error::InitConfig {
            id: id.to_string(),
            reason,
        });
    }
    run_poststart(rec);
    Ok(())
}

/// Blocks until the fifo has no reader left. `poll` with no requested events still
/// reports `POLLERR`, which a fifo's write end gets once every reader is gone.
fn wait_for_no_readers(fifo: &OwnedFd) {
    let mut fds = [PollFd::new(fifo.as_fd(), PollFlags::empty())];
    loop {
        match poll(&mut fds, PollTimeout::NONE) {
            Err(nix::Error::EINTR) => continue,
            _ => return,
        }
    }
}

/// Poststart hooks: a failure is logged and the lifecycle goes on (runtime spec).
pub fn run_poststart(rec: &Record) {
    let list = rec
        .hooks
        .as_ref()
        .and_then(|h| h.poststart().clone())
        .unwrap_or_default();
    if list.is_empty() {
        return;
    }
    let state = serde_json::to_vec(&oci_state(
        &rec.id,
        "running",
        rec.pid,
        &rec.bundle,
        &rec.annotations,
    ))
    .unwrap_or_default();
    hooks::run_warn("poststart", &list, &state);
}

/// `kill`: a signal to the init, or with `all` to every process of the container.
pub fn kill(store: &Store, id: &str, sig: Signal, all: bool) -> Result<()> {
    id::validate(id)?;
    let _lock = store.lock(id)?;
    let rec = store.load(id)?;
    if all {
        let cg = Cgroup::open(&cgroup_path(&rec)?)?;
        if status(store, &rec) == Status::Stopped && cg.pids()?.is_empty() {
            return Err(Error::status("container not running"));
        }
        cg.kill_all(sig)?;
        return Ok(());
    }
    let pidfd = open_init(&rec).ok_or_else(|| Error::status("container not running"))?;
    pidfd_send_signal(&pidfd, sig as i32)
        .ctx(|| format!("send {sig} to container {id} (pid {})", rec.pid))?;
    Ok(())
}

/// The cgroup usage of a container (cpu, memory, pids), read from the cgroup its record
/// names (`cgroupsPath` of its config, or the default), not one derived from the id.
pub fn stats(store: &Store, id: &str) -> Result<CgroupStats> {
    id::validate(id)?;
    let rec = store.load(id)?;
    Ok(Cgroup::open(&cgroup_path(&rec)?)?.stats()?)
}

pub(super) fn cgroup_path(rec: &Record) -> Result<CgroupPath> {
    Ok(CgroupPath::parse(
        Some(&rec.cgroup_path),
        &rec.id,
        rec.systemd_cgroup,
    )?)
}

/// A pidfd of the recorded init if it is still that process. The pidfd is opened first
/// and the start time checked after, so the pidfd cannot refer to a reused pid.
pub(super) fn open_init(rec: &Record) -> Option<OwnedFd> {
    let fd = pidfd_open(rec.pid).ok()?;
    (start_time(rec.pid) == Some(rec.init_start_time)).then_some(fd)
}

/// `delete`: a stopped container is removed; a created one is killed and removed (as with
/// runc); a running one only with `force`.
pub fn delete(store: &Store, id: &str, force: bool) -> Result<()> {
    id::validate(id)?;
    let lock = match store.lock(id) {
        Ok(l) => l,
        Err(e) if force && matches!(e, super::state::StateError::NotExist(_)) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    let rec = match store.load(id) {
        Ok(r) => r,
        // A directory without state.json: a create that was killed half way.
        Err(super::state::StateError::NotExist(_)) => {
            store.remove(lock)?;
            return if force {
                Ok(())
            } else {
                Err(super::state::StateError::NotExist(id.into()).into())
            };
        }
        Err(e) => return Err(e.into()),
    };
    match status(store, &rec) {
        Status::Stopped | Status::Created => {}
        s if force => tracing::debug!("force-deleting {s} container {id}"),
        s => {
            return Err(Error::status(format!(
                "cannot delete container {id} that is not stopped: {s}"
            )));
        }
    }
    destroy(store, lock, &rec)
}

/// Kills whatever is left of the container, waits for it, removes the cgroup, runs the
/// poststop hooks and removes the state.
pub fn destroy(store: &Store, lock: Lock, rec: &Record) -> Result<()> {
    let cg = Cgroup::open(&cgroup_path(rec)?)?;
    // A frozen (paused) task cannot die: kill everything and thaw first.
    if cg.is_frozen().unwrap_or(false) {
        cg.kill_all(Signal::SIGKILL)?;
    }
    if let Some(pidfd) = open_init(rec) {
        let _ = pidfd_send_signal(&pidfd, libc::SIGKILL);
        wait_exit(&pidfd, Duration::from_secs(10));
    }
    // Without its own pid namespace, the container's other processes outlive the init.
    if !rec.own_pid_ns || !cg.pids()?.is_empty() {
        cg.kill_all(Signal::SIGKILL)?;
    }
    cg.delete()?;
    if rec.host_mount_ns {
        // Its mounts were made in the runtime's namespace and outlive its processes.
        crate::runtime::linux::mount::detach_all_below(&rec.rootfs)?;
    }
    let poststop = poststop_hooks(rec);
    if !poststop.is_empty() {
        let state = serde_json::to_vec(&oci_state(
            &rec.id,
            "stopped",
            0,
            &rec.bundle,
            &rec.annotations,
        ))
        .unwrap_or_default();
        hooks::run_warn("poststop", &poststop, &state);
    }
    store.remove(lock)?;
    Ok(())
}

fn poststop_hooks(rec: &Record) -> Vec<oci_spec::runtime::Hook> {
    rec.hooks
        .as_ref()
        .and_then(|h| h.poststop().clone())
        .unwrap_or_default()
}

/// A stopped container taken out of its store by [`detach`]: its id is free again; its
/// state directory (moved aside) and perhaps its cgroup are still to be removed, by
/// [`Detached::remove`].
#[derive(Debug)]
pub struct Detached {
    rec: Record,
    dir: PathBuf,
    /// Whether the cgroup is still there to remove.
    cgroup: bool,
}

/// `delete` of a stopped container in two halves, for a caller that answers before the
/// cleanup is done (the service). Under the container's lock its state directory is
/// renamed to `aside` (on the same file system), so that the id is free when this
/// returns; [`Detached::remove`] removes the rest, later. The container's cgroup goes
/// now if it is the one a new container of the same id would get (`/corral/<id>`),
/// later otherwise (a cgroup named for this container alone, as warm containers' are).
///
/// `Ok(None)`, with nothing done, unless the container has stopped, had its own pid
/// namespace (nothing of it outlives its init) and has no poststop hook (those run before
/// `delete` returns): [`delete`] it then.
pub fn detach(store: &Store, id: &str, aside: &Path) -> Result<Option<Detached>> {
    id::validate(id)?;
    let lock = store.lock(id)?;
    let rec = store.load(id)?;
    if !rec.own_pid_ns
        || rec.host_mount_ns
        || !poststop_hooks(&rec).is_empty()
        || status(store, &rec) != Status::Stopped
    {
        return Ok(None);
    }
    let shared = has_default_cgroup(&rec)?;
    if shared {
        Cgroup::open(&cgroup_path(&rec)?)?.delete()?;
    }
    std::fs::rename(lock.dir(), aside)
        .ctx(|| format!("move {} to {}", lock.dir().display(), aside.display()))?;
    Ok(Some(Detached {
        rec,
        dir: aside.to_path_buf(),
        cgroup: !shared,
    }))
}

impl Detached {
    /// The container detached as `name` into the store `aside` and not removed (the
    /// process that detached it stopped first).
    pub fn at(aside: &Store, name: &str) -> Result<Detached> {
        let rec = aside.load(name)?;
        Ok(Detached {
            cgroup: !has_default_cgroup(&rec)?,
            rec,
            dir: aside.dir(name),
        })
    }

    /// The rest of `delete`: the cgroup (empty: the container stopped) and the state
    /// directory. Both are tried; the first failure is returned.
    pub fn remove(self) -> Result<()> {
        let cgroup = match self.cgroup {
            true => cgroup_path(&self.rec).and_then(|p| Ok(Cgroup::open(&p)?.delete()?)),
            false => Ok(()),
        };
        let dir = match std::fs::remove_dir_all(&self.dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(e).ctx(|| format!("remove {}", self.dir.display()))
            }
            _ => Ok(()),
        };
        cgroup.and(dir.map_err(Into::into))
    }
}

/// Whether the container's cgroup is the one a container of its id gets by default
/// (`/corral/<id>`), and so the one a new container of that id would get.
fn has_default_cgroup(rec: &Record) -> Result<bool> {
    Ok(cgroup_path(rec)? == CgroupPath::parse(None, &rec.id, false)?)
}

/// Waits until the process behind `pidfd` exits, at most `limit`.
pub fn wait_exit(pidfd: &OwnedFd, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let ms = left.as_millis().min(i32::MAX as u128) as i32;
        let mut fds = [PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
        match poll(
            &mut fds,
            PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX),
        ) {
            Ok(0) => return false,
            Ok(_) => return true,
            Err(nix::Error::EINTR) => continue,
            Err(_) => return false,
        }
    }
}
