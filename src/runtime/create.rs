//! `create`: everything up to an init that waits for `start`.
//!
//! The runtime process (single-threaded) validates the bundle into a [`Plan`], creates
//! the state directory, the exec fifo and the cgroup, then `clone3`s the init into its new
//! namespaces. It writes the id maps, places the init in the cgroup, runs the
//! createRuntime hooks when the init asks, and records the state once the init reports
//! ready. Any failure undoes all of it: no state dir, cgroup, mount or process remains.

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;
use nix::sched::{CloneFlags, setns, unshare};
use nix::sys::signal::Signal;
use nix::sys::stat::Mode;
use nix::unistd::Pid;
use oci_spec::runtime::{Hook, Spec};

use super::error::{Error, Result};
use super::hooks;
use super::init::{self, InitContext};
use super::linux::cgroups::Cgroup;
use super::linux::error::{Context, SysError};
use super::linux::process::{Forked, clone_process, pidfd_send_signal, start_time};
use super::linux::sync::{self, Message};
use super::plan::{self, Plan};
use super::state::{EXEC_ERROR, EXEC_FIFO, Lock, Record, Store, now_rfc3339};
use super::{OCI_VERSION, id, oci_state};

/// The options of `create` (and of the create half of `run`).
#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    pub id: String,
    pub bundle: PathBuf,
    pub pid_file: Option<PathBuf>,
    pub console_socket: Option<PathBuf>,
    pub no_pivot: bool,
    pub preserve_fds: i32,
    pub systemd_cgroup: bool,
    /// Make the cgroup only in the v1 hierarchies of these controllers (see
    /// [`Cgroup::create_only`]); `None`: in every hierarchy, as runc does.
    pub cgroup_controllers: Option<&'static [&'static str]>,
    /// The bundle as [`load_bundle`](super::spec::load_bundle) returned it for an
    /// earlier create of the same `bundle` (a runner creates one container per test
    /// case from one bundle): not read and parsed again. `None`: loaded here.
    pub loaded: Option<std::sync::Arc<(PathBuf, oci_spec::runtime::Spec)>>,
    /// A fresh network namespace (`/proc/<pid>/fd/<n>` of the caller, or an nsfs bind
    /// mount) that the init joins in place of creating one, when the bundle asks for a
    /// new one: a runner makes it between runs, off the request's path.
    pub fresh_netns: Option<PathBuf>,
    /// Resolve the process's `cwd` and program when `start` comes, not during create:
    /// the init changes to the directory and looks the program up after the exec fifo
    /// opens, so that what is mounted in the container between create and start (a
    /// runner's warm containers get their workspace then) is what the program sees. A
    /// failure is then reported by `start`. Off: both are resolved during create, as
    /// runc does.
    pub resolve_at_start: bool,
    /// Create a warm container: the init does every step of setup that does not depend
    /// on the process (namespaces, mounts, pivot_root, masked paths), then waits for
    /// [`Created::send_process`] before the rest (hostname, identity, rlimits, cwd and
    /// program lookup). The process in the bundle stands in until then; its
    /// capabilities, rlimits and no_new_privs are kept.
    pub late_process: bool,
}

/// A created container, as seen by the process that created it.
pub struct Created {
    pub record: Record,
    pub pid: Pid,
    /// A pidfd of the init: waiting and signalling through it is immune to pid reuse.
    pub pidfd: OwnedFd,
    /// The channel to an init that waits for its process
    /// ([`CreateOptions::late_process`]), until it is given one.
    sync: Option<sync::Channel>,
}

impl Created {
    /// An fd of the init's mount namespace. While it is held, the namespace outlives the
    /// init: the release of the container's mounts (which waits for an expedited RCU
    /// grace period, a millisecond or more) moves from the init's exit, which its
    /// parent waits for, to the drop of the fd. `None` if the init is already gone.
    pub fn hold_mount_namespace(&self) -> Option<OwnedFd> {
        nix::fcntl::open(
            format!("/proc/{}/ns/mnt", self.pid).as_str(),
            OFlag::O_RDONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .ok()
    }

    /// Gives a warm container ([`CreateOptions::late_process`]) its process, without
    /// waiting for the init to take it on (the caller may do other work meanwhile, then
    /// calls [`Created::process_taken`]). The record's `process` is updated to match
    /// (the caller saves it).
    pub fn send_process(&mut self, late: &sync::LateProcess) -> Result<()> {
        let channel = self.sync.as_ref().ok_or_else(|| Error::Init {
            id: self.record.id.clone(),
            reason: "it was not created to wait for its process".into(),
        })?;
        channel.send(&Message::Process(late.clone()))?;
        if let Some(p) = self.record.process.as_mut() {
            let user = p
                .user()
                .clone()
                .set_uid(late.uid)
                .set_gid(late.gid)
                .set_additional_gids(
                    (!late.additional_gids.is_empty()).then(|| late.additional_gids.clone()),
                )
                .clone();
            p.set_args(Some(late.args.clone()))
                .set_env(Some(late.env.clone()))
                .set_cwd(late.cwd.clone())
                .set_user(user);
        }
        Ok(())
    }

    /// Waits for the init to take on the process [`Created::send_process`] sent
    /// (hostname, identity, cwd, program found); it then waits for `start`. A failure on
    /// the process itself (no such program or cwd) is [`Error::InitConfig`]; the init
    /// has exited then.
    pub fn process_taken(&mut self) -> Result<()> {
        let id = self.record.id.clone();
        let init_error = |reason: String| Error::Init {
            id: id.clone(),
            reason,
        };
        let channel = self
            .sync
            .take()
            .ok_or_else(|| init_error("it was not created to wait for its process".into()))?;
        match channel.recv()? {
            Some(Message::Ready) => Ok(()),
            Some(Message::Error(reason)) => Err(init_error(reason)),
            Some(Message::ConfigError(reason)) => Err(Error::InitConfig {
                id: id.clone(),
                reason,
            }),
            Some(other) => Err(init_error(format!("unexpected message {other:?}"))),
            None => Err(init_error("exited while taking its process".into())),
        }
    }
}

/// Creates the container; on return its init waits for `start`.
pub fn create(store: &Store, opts: &CreateOptions) -> Result<Created> {
    create_with(store, opts, None)
}

/// Whether the bundle asks for a terminal (`process.terminal`), for `run` to decide
/// whether it relays one itself.
pub fn wants_terminal(bundle: &Path) -> Result<bool> {
    let (_, spec) = super::spec::load_bundle(bundle)?;
    Ok(spec
        .process()
        .as_ref()
        .and_then(|p| p.terminal())
        .unwrap_or(false))
}

/// [`create`], with `console` (a connected unix socket) standing in for
/// `--console-socket`: `run` passes one end of a socketpair to relay the terminal.
pub fn create_with(
    store: &Store,
    opts: &CreateOptions,
    console: Option<OwnedFd>,
) -> Result<Created> {
    id::validate(&opts.id)?;
    let fresh;
    let (bundle, spec) = match &opts.loaded {
        Some(loaded) => (&loaded.0, &loaded.1),
        None => {
            fresh = super::spec::load_bundle(&opts.bundle)?;
            (&fresh.0, &fresh.1)
        }
    };
    let mut plan = plan::build(spec, bundle, &opts.id, opts.systemd_cgroup)?;
    if let Some(netns) = &opts.fresh_netns {
        plan.use_fresh_netns(netns.clone());
    }
    plan.resolve_at_start = opts.resolve_at_start;
    plan.late_process = opts.late_process;
    if let Some(fd) = plan.reaper_status_fd
        && fd >= 3 + opts.preserve_fds
    {
        return Err(Error::Usage(format!(
            "{}: fd {fd} is not among the preserved fds (--preserve-fds {})",
            plan::REAPER_ANNOTATION,
            opts.preserve_fds
        )));
    }
    let has_console = console.is_some() || opts.console_socket.is_some();
    if plan.process.terminal && !has_console {
        return Err(Error::Usage(
            "process.terminal is true: --console-socket is required".into(),
        ));
    }
    if !plan.process.terminal && has_console {
        return Err(Error::Usage(
            "--console-socket given but process.terminal is false".into(),
        ));
    }
    let console = match (&opts.console_socket, console) {
        (_, Some(fd)) => Some(fd),
        (Some(p), None) => Some(
            UnixStream::connect(p)
                .map(OwnedFd::from)
                .ctx(|| format!("connect to console socket {}", p.display()))?,
        ),
        (None, None) => None,
    };
    let lock = store.create(&opts.id)?;
    let mut undo = Undo {
        store,
        lock: Some(lock),
        cgroup: None,
        child: None,
        mounts_below: plan.host_mount_ns.then(|| plan.rootfs.clone()),
    };
    let created = launch(store, opts, bundle, spec, &plan, console, &mut undo)?;
    undo.disarm();
    Ok(created)
}

/// Removes what a failed create made, in reverse order.
struct Undo<'a> {
    store: &'a Store,
    lock: Option<Lock>,
    cgroup: Option<Cgroup>,
    child: Option<(Pid, OwnedFd)>,
    /// A rootfs in the runtime's mount namespace, beneath which the init mounted.
    mounts_below: Option<PathBuf>,
}

impl Undo<'_> {
    fn disarm(&mut self) {
        self.lock = None;
        self.cgroup = None;
        self.child = None;
        self.mounts_below = None;
    }
}

impl Drop for Undo<'_> {
    fn drop(&mut self) {
        if let Some((pid, pidfd)) = self.child.take() {
            let _ = pidfd_send_signal(&pidfd, libc::SIGKILL);
            let _ = nix::sys::wait::waitpid(pid, None);
        }
        if let Some(rootfs) = self.mounts_below.take()
            && let Err(e) = crate::runtime::linux::mount::detach_all_below(&rootfs)
        {
            tracing::warn!("cleanup after failed create: {e}");
        }
        if let Some(cg) = self.cgroup.take() {
            let _ = cg.kill_all(Signal::SIGKILL);
            if let Err(e) = cg.delete() {
                tracing::warn!("cleanup after failed create: {e}");
            }
        }
        if let Some(lock) = self.lock.take()
            && let Err(e) = self.store.remove(lock)
        {
            tracing::warn!("cleanup after failed create: {e}");
        }
    }
}

fn hook_list(
    spec: &Spec,
    pick: impl Fn(&oci_spec::runtime::Hooks) -> &Option<Vec<Hook>>,
) -> Vec<Hook> {
    spec.hooks()
        .as_ref()
        .and_then(|h| pick(h).clone())
        .unwrap_or_default()
}

#[allow(deprecated)] // prestart hooks are deprecated by the spec but still run, as runc does
fn prestart_hooks(spec: &Spec) -> Vec<Hook> {
    hook_list(spec, |h| h.prestart())
}

fn launch(
    store: &Store,
    opts: &CreateOptions,
    bundle: &Path,
    spec: &Spec,
    plan: &Plan,
    console: Option<OwnedFd>,
    undo: &mut Undo<'_>,
) -> Result<Created> {
    let dir = store.dir(&opts.id);
    let fifo_path = dir.join(EXEC_FIFO);
    nix::unistd::mkfifo(&fifo_path, Mode::from_bits_truncate(0o600))
        .ctx(|| format!("mkfifo {}", fifo_path.display()))?;
    // Opened read-only and non-blocking before any writer: see init::wait_for_start.
    let fifo: OwnedFd = nix::fcntl::open(
        &fifo_path,
        OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .ctx(|| format!("open {}", fifo_path.display()))?;

    let cgroup = match opts.cgroup_controllers {
        None => Cgroup::create(&plan.cgroup_path, plan.resources.as_ref())?,
        Some(c) => Cgroup::create_only(&plan.cgroup_path, plan.resources.as_ref(), c)?,
    };
    let cgroup_dirs = cgroup.host_dirs();
    undo.cgroup = Some(cgroup);

    let prestart = prestart_hooks(spec);
    let create_runtime = hook_list(spec, |h| h.create_runtime());
    let ctx_hooks = (
        hook_list(spec, |h| h.create_container()),
        hook_list(spec, |h| h.start_container()),
    );
    let (parent, child) = sync::channel()?;

    // Where the init reports a failure after `start` (see init::launch): a file opened
    // here, while the host's paths are reachable. Never the state directory itself: a
    // directory fd would lead out of the root from /proc/self/fd (CVE-2024-21626).
    let error_path = dir.join(EXEC_ERROR);
    let exec_error: OwnedFd = nix::fcntl::open(
        &error_path,
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o600),
    )
    .ctx(|| format!("open {}", error_path.display()))?;
    // Read here, so that the init (a copy of this process) need not read it.
    let argv_area = super::linux::process::argv_area();
    let restore = enter_for_children(plan)?;
    let forked = clone_process(plan.clone_flags);
    if !matches!(forked, Ok(Forked::Child)) {
        // Only the runtime goes back: the init stays in the namespaces it was made for.
        restore.restore()?;
    }
    let (pid, pidfd) = match forked? {
        Forked::Child => {
            drop(parent);
            let ctx = InitContext {
                plan,
                sync: child,
                fifo: Some(fifo),
                exec_error: Some(exec_error),
                argv_area,
                console_socket: console,
                preserve_fds: opts.preserve_fds,
                no_pivot: opts.no_pivot,
                cgroup_dirs,
                config_error: std::cell::Cell::new(false),
                runtime_hooks: !prestart.is_empty() || !create_runtime.is_empty(),
                create_container_hooks: ctx_hooks.0,
                start_container_hooks: ctx_hooks.1,
            };
            init::run(ctx)
        }
        Forked::Parent { pid, pidfd } => (pid, pidfd),
    };
    drop(child);
    drop(fifo);
    drop(exec_error);
    drop(console);
    let pidfd_copy = pidfd.try_clone().ctx(|| "dup pidfd".into())?;
    undo.child = Some((pid, pidfd_copy));

    if plan.has_new(CloneFlags::CLONE_NEWUSER) {
        write_id_maps(pid, plan)?;
    }
    if let Some(cg) = &undo.cgroup {
        cg.add_process(pid.as_raw())?;
    }
    let state_for_hooks = |status: &str| {
        serde_json::to_vec(&oci_state(
            &opts.id,
            status,
            pid.as_raw(),
            bundle,
            &plan.annotations,
        ))
        .unwrap_or_default()
    };
    parent.send(&Message::Continue {
        state: String::from_utf8(state_for_hooks("creating")).unwrap_or_default(),
    })?;
    loop {
        match parent.recv()? {
            Some(Message::RunCreateRuntimeHooks) => {
                let state = state_for_hooks("creating");
                let result = hooks::run("prestart", &prestart, &state)
                    .and_then(|()| hooks::run("createRuntime", &create_runtime, &state));
                if let Err(e) = result {
                    let _ = parent.send(&Message::Error(e.to_string()));
                    return Err(e.into());
                }
                parent.send(&Message::HooksDone)?;
            }
            Some(Message::Ready) => break,
            Some(Message::Error(reason)) => {
                return Err(Error::Init {
                    id: opts.id.clone(),
                    reason,
                });
            }
            Some(Message::ConfigError(reason)) => {
                return Err(Error::InitConfig {
                    id: opts.id.clone(),
                    reason,
                });
            }
            Some(other) => {
                return Err(Error::Init {
                    id: opts.id.clone(),
                    reason: format!("unexpected message {other:?}"),
                });
            }
            None => {
                return Err(Error::Init {
                    id: opts.id.clone(),
                    reason: "exited during setup".into(),
                });
            }
        }
    }
    let init_start_time = start_time(pid.as_raw()).ok_or_else(|| Error::Init {
        id: opts.id.clone(),
        reason: "exited right after setup".into(),
    })?;
    let record = Record {
        oci_version: OCI_VERSION.into(),
        id: opts.id.clone(),
        pid: pid.as_raw(),
        init_start_time,
        bundle: bundle.to_path_buf(),
        rootfs: plan.rootfs.clone(),
        created: now_rfc3339(),
        annotations: plan.annotations.clone(),
        cgroup_path: plan.cgroup_path.to_string(),
        systemd_cgroup: opts.systemd_cgroup,
        hooks: spec.hooks().clone(),
        own_pid_ns: plan.has_new(CloneFlags::CLONE_NEWPID),
        host_mount_ns: plan.host_mount_ns,
        process: spec.process().clone(),
        seccomp: spec.linux().as_ref().and_then(|l| l.seccomp().clone()),
    };
    let lock = undo
        .lock
        .as_ref()
        .ok_or_else(|| SysError::invalid("state lock lost"))?;
    store.save(lock, &record)?;
    if let Some(pf) = &opts.pid_file {
        write_pid_file(pf, pid.as_raw())?;
    }
    Ok(Created {
        record,
        pid,
        pidfd,
        sync: opts.late_process.then_some(parent),
    })
}

/// The runtime's own pid and time namespaces, to return to after the clone.
struct ForChildren {
    saved: Vec<(CloneFlags, File)>,
}

impl ForChildren {
    fn restore(self) -> Result<()> {
        for (kind, f) in self.saved {
            setns(f.as_fd(), kind).ctx(|| format!("return to the runtime's {kind:?} namespace"))?;
        }
        Ok(())
    }
}

/// Pid and time namespaces apply to children only: join them (or make a new time
/// namespace and set its offsets) in the runtime just for the clone.
fn enter_for_children(plan: &Plan) -> Result<ForChildren> {
    let mut saved = Vec::new();
    let time = CloneFlags::from_bits_retain(libc::CLONE_NEWTIME);
    let mut save = |kind: CloneFlags, name: &str| -> Result<()> {
        let path = format!("/proc/self/ns/{name}");
        let f = File::open(&path).ctx(|| format!("open {path}"))?;
        saved.push((kind, f));
        Ok(())
    };
    for j in &plan.join_for_children {
        save(j.kind, if j.kind == time { "time" } else { "pid" })?;
        let f = File::open(&j.path).ctx(|| format!("open namespace {}", j.path.display()))?;
        setns(f.as_fd(), j.kind).ctx(|| format!("setns {}", j.path.display()))?;
    }
    if let Some(offsets) = &plan.new_time_ns {
        save(time, "time")?;
        unshare(time).ctx(|| "unshare time namespace".into())?;
        let text: String = offsets
            .iter()
            .map(|(clock, s, ns)| format!("{clock} {s} {ns}\n"))
            .collect();
        if !text.is_empty() {
            std::fs::write("/proc/self/timens_offsets", text)
                .ctx(|| "write /proc/self/timens_offsets".into())?;
        }
    }
    Ok(ForChildren { saved })
}

fn write_id_maps(pid: Pid, plan: &Plan) -> Result<()> {
    let fmt = |maps: &[oci_spec::runtime::LinuxIdMapping]| -> String {
        maps.iter()
            .map(|m| format!("{} {} {}\n", m.container_id(), m.host_id(), m.size()))
            .collect()
    };
    for (file, text) in [
        ("uid_map", fmt(&plan.uid_mappings)),
        ("gid_map", fmt(&plan.gid_mappings)),
    ] {
        let path = format!("/proc/{pid}/{file}");
        std::fs::write(&path, text.as_bytes())
            .ctx(|| format!("write {path} ({})", text.trim().replace('\n', ", ")))?;
    }
    Ok(())
}

/// Writes the pid file atomically, as runc does (containerd's shim reads it).
pub(super) fn write_pid_file(path: &Path, pid: i32) -> Result<()> {
    // 0644 as runc: engines read the pid file without privileges.
    super::atomic::write_atomic(path, pid.to_string().as_bytes(), 0o644)
        .ctx(|| format!("write pid file {}", path.display()))?;
    Ok(())
}
